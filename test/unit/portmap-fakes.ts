// An in-memory site router for the port mapper's unit tests: it sits behind the UdpFactory and
// HttpFn seams of src/nat/portmap/transport.ts and speaks PCP, NAT-PMP (UDP 5351), SSDP (UDP
// 1900) and UPnP IGD SOAP (HTTP) the way miniupnpd 2.3.1 does, on a ManualClock:
//
//   - its epoch is the time since its last (re)start; restart() also forgets every mapping
//     and moves the UPnP control URL to a new port, as a rebooted miniupnpd does;
//   - knobs make it misbehave: a protocol off (5351 closed: ECONNREFUSED, or silent), another
//     external port granted, a forced result code or SOAP fault, garbage before each answer,
//     an HTTP server that never finishes, an SSDP flood.
//
// Everything the client sent is recorded, so a test can assert that nothing was sent at all.
// Replies are delivered on the microtask queue, never synchronously, like a real socket.
import type { HttpFn, HttpRequest, UdpFactory, UdpHandlers, UdpPeer } from '../../src/nat/portmap/transport.js';
import type { ManualClock } from '../support/clock.js';

export const GW = '192.0.2.1';
export const ME = '192.0.2.10';
export const WAN = '11.22.33.7';

interface Mapping {
  client: string;
  internalPort: number;
  /** Monotonic ms; Infinity for a permanent UPnP lease. */
  expiresAt: number;
  via: 'pcp' | 'natpmp' | 'upnp';
  description: string;
}

export interface Sent {
  to: UdpPeer;
  data: Buffer;
}

export class FakeRouter {
  /** Every datagram any socket sent, and every HTTP request. */
  readonly sent: Sent[] = [];
  readonly httpLog: HttpRequest[] = [];
  readonly mappings = new Map<number, Mapping>();

  pcp = true;
  natpmp = true;
  upnp = true;
  /** With neither PCP nor NAT-PMP: 'closed' answers ICMP port unreachable, 'silent' drops. */
  port5351: 'closed' | 'silent' = 'closed';
  /** PCP/NAT-PMP give this external port instead of the one asked for. */
  grantPort: number | null = null;
  /** Forced PCP result code (with this error lifetime), NAT-PMP result code. */
  pcpResult: { code: number; lifetimeS: number } | null = null;
  natpmpResult: number | null = null;
  /** NAT-PMP public-address requests go unanswered (mapping requests are still answered). */
  natpmpAddressSilent = false;
  /** PCP/NAT-PMP clamp lifetimes to this range (miniupnpd's min_lifetime/max_lifetime). */
  lifetimeRange: [number, number] = [120, 86400];
  /** UPnP AddPortMapping answers this fault; 725 = only permanent leases. */
  upnpAddFault: number | null = null;
  onlyPermanentLeases = false;
  /** AddPortMapping of a port that has an entry answers 718 even when the entry is the caller's own (some routers do). */
  upnpConflictOnOwn = false;
  /** Garbage datagrams sent before every real UDP answer. */
  garbageBefore = 0;
  /** Answer PCP MAP with this nonce instead of the request's. */
  pcpNonceOverride: Buffer | null = null;
  /** HTTP requests never complete (a router that hangs). */
  httpHangs = false;
  /** Every SSDP search is answered by this many junk datagrams from the router first. */
  ssdpFlood = 0;
  /** The router answers unicast SSDP searches (some answer only the multicast one). */
  ssdpUnicast = true;
  /** Other LAN devices (media servers, printers) answer each multicast search with this many datagrams first. */
  lanChatter = 0;
  /** SOAP answers are replaced by this body (status 200). */
  soapBody: string | null = null;
  externalIp = WAN;
  /** The router's LAN address (a replaced router answers at another one). */
  address = GW;

  private epochStart: number;
  private httpPort = 40001;
  private restarts = 0;

  constructor(readonly clock: ManualClock) {
    this.epochStart = clock.monotonic();
  }

  epochS(): number {
    return Math.floor((this.clock.monotonic() - this.epochStart) / 1000);
  }

  /** A reboot: epoch from 0, mappings gone, UPnP HTTP on a new port. */
  restart(): void {
    this.epochStart = this.clock.monotonic();
    this.mappings.clear();
    this.httpPort = 40001 + ++this.restarts;
  }

  /** The live mapping of an external port, after expiring what has run out. */
  mapping(port: number): Mapping | undefined {
    const m = this.mappings.get(port);
    if (m && m.expiresAt <= this.clock.monotonic()) {
      this.mappings.delete(port);
      return undefined;
    }
    return m;
  }

  /** PCP MAP requests, NAT-PMP map requests, SOAP actions, in order. */
  requests(kind: 'pcp-map' | 'pcp-announce' | 'natpmp-map' | 'natpmp-address' | 'ssdp'): Sent[] {
    return this.sent.filter((s) => {
      const d = s.data;
      if (kind === 'ssdp') return s.to.port === 1900;
      if (s.to.port !== 5351) return false;
      if (kind === 'pcp-map') return d[0] === 2 && d[1] === 1;
      if (kind === 'pcp-announce') return d[0] === 2 && d[1] === 0;
      if (kind === 'natpmp-map') return d[0] === 0 && d[1] === 1;
      return d[0] === 0 && d[1] === 0;
    });
  }

  soapActions(): string[] {
    return this.httpLog.filter((r) => r.method === 'POST').map((r) => /#(\w+)"$/.exec(r.headers.SOAPAction ?? '')?.[1] ?? '?');
  }

  // ------------------------------------------------------------------ UDP

  readonly udp: UdpFactory = async (opts, h) => {
    let closed = false;
    const deliver = (fn: () => void) =>
      queueMicrotask(() => {
        if (!closed) fn();
      });
    return {
      send: (buf, to) => {
        if (closed) return;
        this.sent.push({ to, data: Buffer.from(buf) });
        if (to.port === 5351 && to.address === this.address) this.on5351(buf, opts.localAddress, h, deliver);
        else if (to.port === 1900 && ((to.address === this.address && this.ssdpUnicast) || to.address === '239.255.255.250')) this.onSsdp(buf, h, deliver, to.address !== this.address);
      },
      close: () => {
        closed = true;
      },
    };
  };

  private on5351(req: Buffer, from: string, h: UdpHandlers, deliver: (fn: () => void) => void): void {
    const src = { address: this.address, port: 5351 };
    const answer = (b: Buffer | null) => {
      for (let i = 0; i < this.garbageBefore; i++) deliver(() => h.message(Buffer.from([req[0], req[1] | 0x80, 0xff, i]), src));
      if (b) deliver(() => h.message(b, src));
    };
    if (!this.pcp && !this.natpmp) {
      if (this.port5351 === 'closed') deliver(() => h.error(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })));
      return;
    }
    if (req[0] === 2) {
      if (!this.pcp) return answer(natPmpHeader(req[1], 1, this.epochS())); // NAT-PMP only: Unsupported Version
      return answer(this.pcpAnswer(req, from));
    }
    if (req[0] === 0 && this.natpmp) return answer(this.natPmpAnswer(req, from));
  }

  private clampLifetime(s: number): number {
    return Math.min(this.lifetimeRange[1], Math.max(this.lifetimeRange[0], s));
  }

  /** Grants (or deletes) a PCP/NAT-PMP mapping; returns the external port or 0. */
  private mapOrDelete(from: string, internalPort: number, wanted: number, lifetimeS: number, via: 'pcp' | 'natpmp'): number {
    if (lifetimeS === 0) {
      for (const [p, m] of this.mappings) if (m.client === from && m.internalPort === internalPort) this.mappings.delete(p);
      return 0;
    }
    let port = this.grantPort ?? wanted;
    const held = this.mapping(port);
    if (held && (held.client !== from || held.internalPort !== internalPort)) port = port + 1;
    this.mappings.set(port, { client: from, internalPort, expiresAt: this.clock.monotonic() + lifetimeS * 1000, via, description: via });
    return port;
  }

  private pcpAnswer(req: Buffer, from: string): Buffer {
    const op = req[1] & 0x7f;
    const out = Buffer.alloc(op === 1 ? 60 : 24);
    out[0] = 2;
    out[1] = 0x80 | op;
    out.writeUInt32BE(this.epochS(), 8);
    if (op === 0) return out;
    req.copy(out, 24, 24, 60);
    if (this.pcpNonceOverride) this.pcpNonceOverride.copy(out, 24);
    if (this.pcpResult) {
      out[3] = this.pcpResult.code;
      out.writeUInt32BE(this.pcpResult.lifetimeS, 4);
      return out;
    }
    const asked = req.readUInt32BE(4);
    const lifetime = asked === 0 ? 0 : this.clampLifetime(asked);
    const port = this.mapOrDelete(from, req.readUInt16BE(40), req.readUInt16BE(42), lifetime, 'pcp');
    out.writeUInt32BE(lifetime, 4);
    out.writeUInt16BE(port === 0 ? req.readUInt16BE(42) : port, 42);
    out.fill(0, 44, 54);
    out.writeUInt16BE(0xffff, 54);
    for (const [i, o] of this.externalIp.split('.').entries()) out[56 + i] = Number(o);
    return out;
  }

  private natPmpAnswer(req: Buffer, from: string): Buffer | null {
    const op = req[1];
    if (op === 0 && this.natpmpAddressSilent) return null;
    if (this.natpmpResult !== null) return natPmpHeader(op, this.natpmpResult, this.epochS());
    if (op === 0) {
      const out = Buffer.alloc(12);
      out[1] = 0x80;
      out.writeUInt32BE(this.epochS(), 4);
      for (const [i, o] of this.externalIp.split('.').entries()) out[8 + i] = Number(o);
      return out;
    }
    if (op !== 1 || req.length !== 12) return natPmpHeader(op, 5, this.epochS());
    const asked = req.readUInt32BE(8);
    const lifetime = asked === 0 ? 0 : this.clampLifetime(asked);
    const port = this.mapOrDelete(from, req.readUInt16BE(4), req.readUInt16BE(6), lifetime, 'natpmp');
    const out = Buffer.alloc(16);
    out[1] = 0x81;
    out.writeUInt32BE(this.epochS(), 4);
    out.writeUInt16BE(req.readUInt16BE(4), 8);
    out.writeUInt16BE(port, 10);
    out.writeUInt32BE(lifetime, 12);
    return out;
  }

  // ------------------------------------------------------------------ SSDP and HTTP

  private onSsdp(req: Buffer, h: UdpHandlers, deliver: (fn: () => void) => void, multicast: boolean): void {
    if (multicast) {
      for (let i = 0; i < this.lanChatter; i++) {
        const answer = `HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:service:ContentDirectory:1\r\nLOCATION: http://192.0.2.${50 + (i % 40)}:8200/desc${i}.xml\r\n\r\n`;
        deliver(() => h.message(Buffer.from(answer), { address: `192.0.2.${50 + (i % 40)}`, port: 1900 }));
      }
    }
    if (!this.upnp || !req.toString('latin1').startsWith('M-SEARCH')) return;
    const src = { address: this.address, port: 1900 };
    for (let i = 0; i < this.ssdpFlood; i++) deliver(() => h.message(Buffer.from(`HTTP/1.1 200 OK\r\nJUNK: ${i}\r\n\r\n`), src));
    // Another LAN device answering the multicast: never to be used.
    deliver(() =>
      h.message(Buffer.from('HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.0.2.99:80/evil.xml\r\n\r\n'), {
        address: '192.0.2.99',
        port: 1900,
      }),
    );
    const answer =
      'HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n' +
      `USN: uuid:fake::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\nSERVER: Fake/1 UPnP/1.1 MiniUPnPd/2.3.1\r\n` +
      `LOCATION: http://${this.address}:${this.httpPort}/rootDesc.xml\r\n\r\n`;
    deliver(() => h.message(Buffer.from(answer), src));
  }

  readonly http: HttpFn = (req, signal) => {
    this.httpLog.push(req);
    return new Promise((resolve, reject) => {
      const abort = () => reject(new Error('aborted'));
      if (signal.aborted) return abort();
      signal.addEventListener('abort', abort);
      if (this.httpHangs) return;
      queueMicrotask(() => {
        signal.removeEventListener('abort', abort);
        if (!this.upnp || req.host !== this.address || req.port !== this.httpPort) {
          return reject(Object.assign(new Error(`connect ECONNREFUSED ${req.host}:${req.port}`), { code: 'ECONNREFUSED' }));
        }
        if (req.method === 'GET') return resolve(req.path === '/rootDesc.xml' ? { status: 200, body: DESCRIPTION } : { status: 404, body: '' });
        if (this.soapBody !== null) return resolve({ status: 200, body: this.soapBody });
        resolve(this.soap(req));
      });
    });
  };

  private soap(req: HttpRequest): { status: number; body: string } {
    const action = /#(\w+)"$/.exec(req.headers.SOAPAction ?? '')?.[1] ?? '';
    const arg = (n: string) => new RegExp(`<${n}>([^<]*)</${n}>`).exec(req.body ?? '')?.[1] ?? '';
    const port = Number(arg('NewExternalPort'));
    switch (action) {
      case 'GetExternalIPAddress':
        return soapOk(action, `<NewExternalIPAddress>${this.externalIp}</NewExternalIPAddress>`);
      case 'AddPortMapping': {
        if (this.upnpAddFault !== null) return soapFault(this.upnpAddFault);
        const lease = Number(arg('NewLeaseDuration'));
        if (this.onlyPermanentLeases && lease !== 0) return soapFault(725);
        const held = this.mapping(port);
        const client = arg('NewInternalClient');
        if (held && (held.client !== client || this.upnpConflictOnOwn)) return soapFault(718);
        this.mappings.set(port, {
          client,
          internalPort: Number(arg('NewInternalPort')),
          expiresAt: lease === 0 ? Infinity : this.clock.monotonic() + lease * 1000,
          via: 'upnp',
          description: arg('NewPortMappingDescription'),
        });
        return soapOk(action, '');
      }
      case 'GetSpecificPortMappingEntry': {
        const m = this.mapping(port);
        if (!m) return soapFault(714);
        const left = m.expiresAt === Infinity ? 0 : Math.ceil((m.expiresAt - this.clock.monotonic()) / 1000);
        return soapOk(
          action,
          `<NewInternalPort>${m.internalPort}</NewInternalPort><NewInternalClient>${m.client}</NewInternalClient><NewEnabled>1</NewEnabled>` +
            `<NewPortMappingDescription>${m.description}</NewPortMappingDescription><NewLeaseDuration>${left}</NewLeaseDuration>`,
        );
      }
      case 'DeletePortMapping':
        this.mappings.delete(port);
        return soapOk(action, '');
      default:
        return soapFault(401);
    }
  }
}

function natPmpHeader(op: number, code: number, epochS: number): Buffer {
  const b = Buffer.alloc(8);
  b[1] = 0x80 | op;
  b.writeUInt16BE(code, 2);
  b.writeUInt32BE(epochS, 4);
  return b;
}

const ENVELOPE_OPEN =
  '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>';
const ENVELOPE_CLOSE = '</s:Body></s:Envelope>';

export function soapOk(action: string, inner: string): { status: number; body: string } {
  return {
    status: 200,
    body: `${ENVELOPE_OPEN}<u:${action}Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">${inner}</u:${action}Response>${ENVELOPE_CLOSE}`,
  };
}

const FAULT_NAMES: Record<number, string> = {
  401: 'Invalid Action', 606: 'Action not authorized', 714: 'NoSuchEntryInArray', 718: 'ConflictInMappingEntry', 725: 'OnlyPermanentLeasesSupported',
};

export function soapFault(code: number): { status: number; body: string } {
  return {
    status: 500,
    body:
      `${ENVELOPE_OPEN}<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>` +
      `<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode><errorDescription>${FAULT_NAMES[code] ?? 'Error'}</errorDescription></UPnPError>` +
      `</detail></s:Fault>${ENVELOPE_CLOSE}`,
  };
}

/** miniupnpd 2.3.1's rootDesc.xml (IGD:2), as captured from the lab router, shortened to the services. */
export const DESCRIPTION =
  '<?xml version="1.0"?>\r\n<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major><minor>1</minor></specVersion>' +
  '<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><friendlyName>Debian router</friendlyName>' +
  '<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>' +
  '<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL></service></serviceList>' +
  '<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><deviceList><device>' +
  '<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><serviceList>' +
  '<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>' +
  '<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service>' +
  '</serviceList></device></deviceList></device></deviceList><presentationURL>http://192.0.2.1/</presentationURL></device></root>';
