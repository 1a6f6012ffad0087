// UPnP IGD port mapping: SSDP discovery, the device description, and the four SOAP actions
// we need on a WANIPConnection:2/:1 or WANPPPConnection:1 service (AddPortMapping,
// DeletePortMapping, GetSpecificPortMappingEntry, GetExternalIPAddress).
//
//   1. SSDP: M-SEARCH (ST InternetGatewayDevice:1, which IGD:2 devices answer too, and
//      ssdp:all for routers that answer nothing else) to 239.255.255.250:1900 and, as
//      Tailscale does, unicast to the router's own port 1900 (some routers answer only one of
//      the two), twice 500 ms apart. Only answers from the router's address count; we stop at
//      the first that names an IGD or a WAN connection service, at 64 datagrams from the
//      router, or after 2 s.
//   2. GET the LOCATION's description (2 s, 64 KiB), always from the router's address: a
//      LOCATION or controlURL naming another host is repointed at the router (Tailscale does the
//      same for routers that advertise a stale address), so nothing on the LAN but the router
//      is ever contacted.
//   3. SOAP POSTs to the control URL (3 s, 16 KiB each). Faults carry a UPnPError code, kept
//      with its name from the WANIPConnection:2 specification.
//
// The mapping: NewRemoteHost empty (any sender), external port = internal port = `port`,
// protocol "UDP" in capitals (some routers refuse "udp", Tailscale issue 7377), lease
// `lifetimeS`. Unlike PCP and NAT-PMP, AddPortMapping maps the exact port or fails (718
// ConflictInMappingEntry, 606 Action not authorized). 725 OnlyPermanentLeasesSupported is
// retried with lease 0 (permanent: it is deleted on stop and checked while we run). A 718 for
// an entry that already points at us (routers that will not overwrite any entry) is deleted
// and added again.
// AddPortMapping's answer says nothing about the lease the router really gave, so
// GetSpecificPortMappingEntry is asked right after (miniupnpd turns 0 and anything above a
// week into 604800 s on IGD:2), which also proves the entry points at us.
//
// A router restart shows as our entry missing from GetSpecificPortMappingEntry (714
// NoSuchEntryInArray), or as the control URL no longer answering (miniupnpd listens on a new
// random port each start): then the service is rediscovered and check() reports the
// mapping lost, so the manager maps again.
import { isIPv4 } from '../../util/ipv4.js';
import { fail, ok, type ClientContext, type Grant, type MappingClient, type MappingHealth, type Outcome, type Phase } from './client.js';
import type { HttpResponse, UdpEndpoint } from './transport.js';
import { child, childText, descendants, parseXml } from './xml.js';

export const SSDP_ADDRESS = '239.255.255.250';
export const SSDP_PORT = 1900;
export const SSDP_SEARCH_TARGETS = ['urn:schemas-upnp-org:device:InternetGatewayDevice:1', 'ssdp:all'] as const;
/** The SSDP search: resend after, wait for answers this long, and bounds on the untrusted answers. */
const SSDP = { resendMs: 500, waitMs: 2000, maxDatagrams: 64, maxBytes: 2048, maxLines: 32, maxLocations: 3 } as const;
/** HTTP to the router: the device description, and SOAP calls (bounded in values read too). */
const DESCRIPTION = { timeoutMs: 2000, maxBytes: 64 * 1024 } as const;
const SOAP = { timeoutMs: 3000, maxBytes: 16 * 1024, maxValues: 32 } as const;
const MAPPING_DESCRIPTION = 'vxedge';

/** The connection services that can map ports, best first (Tailscale's order). */
export const WAN_SERVICE_TYPES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
] as const;

/** UPnPError codes (UPnP Device Architecture and WANIPConnection:2, §2.5) by name. */
export const UPNP_ERRORS: Readonly<Record<number, string>> = {
  401: 'Invalid Action',
  402: 'Invalid Args',
  501: 'Action Failed',
  600: 'Argument Value Invalid',
  601: 'Argument Value Out of Range',
  602: 'Optional Action Not Implemented',
  603: 'Out of Memory',
  604: 'Human Intervention Required',
  605: 'String Argument Too Long',
  606: 'Action not authorized',
  713: 'SpecifiedArrayIndexInvalid',
  714: 'NoSuchEntryInArray',
  715: 'WildCardNotPermittedInSrcIP',
  716: 'WildCardNotPermittedInExtPort',
  718: 'ConflictInMappingEntry',
  724: 'SamePortValuesRequired',
  725: 'OnlyPermanentLeasesSupported',
  726: 'RemoteHostOnlySupportsWildcard',
  727: 'ExternalPortOnlySupportsWildcard',
  728: 'NoPortMapsAvailable',
  729: 'ConflictWithOtherMechanisms',
  730: 'PortMappingNotFound',
  732: 'WildCardNotPermittedInIntPort',
  733: 'InconsistentParameters',
};

const NO_SUCH_ENTRY = 714;
const CONFLICT = 718;
const NOT_FOUND = 730;
const ONLY_PERMANENT = 725;
const INVALID_ACTION = 401;
/** unmap()'s failure code when the port's forward belongs to another host. */
export const NOT_OURS = 'not-ours';

// --------------------------------------------------------------------- SSDP

/** An M-SEARCH request. MX only for multicast (UDA 1.1 §1.3.2: a unicast search has none). */
export function encodeMSearch(host: string, st: string, mxS?: number): Buffer {
  const mx = mxS === undefined ? '' : `MX: ${mxS}\r\n`;
  return Buffer.from(`M-SEARCH * HTTP/1.1\r\nHOST: ${host}\r\nMAN: "ssdp:discover"\r\n${mx}ST: ${st}\r\n\r\n`, 'latin1');
}

export interface SsdpAnswer {
  location: string;
  st: string;
  server: string;
}

/** A search response ("HTTP/1.1 200 OK" + headers with an http LOCATION). Null otherwise. Never throws. */
export function parseSsdpResponse(buf: Buffer): SsdpAnswer | null {
  if (buf.length > SSDP.maxBytes) return null;
  const lines = buf.toString('latin1').split(/\r?\n/);
  if (!/^HTTP\/1\.[01] 200( |$)/i.test(lines[0] ?? '')) return null;
  const h: Record<string, string> = {};
  let count = 0;
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    if (++count > SSDP.maxLines) return null;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    if (!(name in h)) h[name] = line.slice(colon + 1).trim();
  }
  const location = h.location;
  if (!location || location.length > 512 || !parseHttpUrl(location)) return null;
  return { location, st: h.st ?? '', server: h.server ?? '' };
}

function isGatewayType(st: string): boolean {
  return /InternetGatewayDevice|WANIPConnection|WANPPPConnection/.test(st);
}

// --------------------------------------------------------------------- description

export interface UpnpService {
  serviceType: string;
  /** Absolute http URL of the control endpoint, on the router's address. */
  controlUrl: string;
}

function parseHttpUrl(s: string, base?: string): URL | null {
  try {
    const u = new URL(s, base);
    return u.protocol === 'http:' ? u : null;
  } catch {
    return null;
  }
}

/** The URL with its host replaced by the router's address (port and path kept). */
export function repoint(u: URL, gateway: string): URL {
  const r = new URL(u.href);
  r.hostname = gateway;
  return r;
}

/**
 * The WAN connection services of a device description, best first, with control URLs made
 * absolute (URLBase, else the LOCATION) and pointed at the router. Null when the document is
 * not a UPnP description. Never throws.
 */
export function parseDescription(xml: string, location: string, gateway: string): UpnpService[] | null {
  const root = parseXml(xml);
  if (!root || root.name !== 'root' || !child(root, 'device')) return null;
  const base = parseHttpUrl(childText(root, 'URLBase') ?? '') ?? parseHttpUrl(location);
  if (!base) return null;
  const out: UpnpService[] = [];
  for (const s of descendants(root, 'service')) {
    const type = childText(s, 'serviceType') ?? '';
    const ctl = childText(s, 'controlURL');
    if (!(WAN_SERVICE_TYPES as readonly string[]).includes(type) || !ctl) continue;
    const u = parseHttpUrl(ctl, base.href);
    if (u) out.push({ serviceType: type, controlUrl: repoint(u, gateway).href });
  }
  const rank = (t: string) => (WAN_SERVICE_TYPES as readonly string[]).indexOf(t);
  return out.sort((a, b) => rank(a.serviceType) - rank(b.serviceType));
}

// --------------------------------------------------------------------- SOAP

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&${{ '<': 'lt', '>': 'gt', '&': 'amp', '"': 'quot', "'": 'apos' }[c]};`);
}

export function encodeSoapRequest(serviceType: string, action: string, args: [string, string | number][]): string {
  const body = args.map(([k, v]) => `<${k}>${xmlEscape(String(v))}</${k}>`).join('');
  return (
    '<?xml version="1.0"?>\r\n' +
    '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
    `<s:Body><u:${action} xmlns:u="${xmlEscape(serviceType)}">${body}</u:${action}></s:Body></s:Envelope>\r\n`
  );
}

export interface UpnpFault {
  /** The UPnPError code; null when the fault has none. */
  code: number | null;
  /** The code's name from the specification, else the router's errorDescription. */
  name: string;
  description: string;
}

export type SoapOutcome =
  | { kind: 'ok'; values: Record<string, string> }
  | { kind: 'fault'; fault: UpnpFault }
  | { kind: 'malformed'; why: string };

/** Reads a SOAP answer to `action`: its output arguments, or its UPnPError. Never throws. */
export function parseSoapResponse(status: number, body: string, action: string): SoapOutcome {
  const env = parseXml(body);
  const soapBody = env && env.name === 'Envelope' ? child(env, 'Body') : undefined;
  if (!soapBody) return { kind: 'malformed', why: `HTTP ${status} without a SOAP envelope` };
  const fault = child(soapBody, 'Fault');
  if (fault) {
    const err = descendants(fault, 'UPnPError')[0];
    const codeText = err ? childText(err, 'errorCode') : undefined;
    const code = codeText !== undefined && /^[0-9]{1,4}$/.test(codeText) ? Number(codeText) : null;
    const description = (err ? childText(err, 'errorDescription') : undefined) ?? childText(fault, 'faultstring') ?? '';
    return { kind: 'fault', fault: { code, name: (code !== null ? UPNP_ERRORS[code] : undefined) ?? (description || 'unknown fault'), description } };
  }
  if (status !== 200) return { kind: 'malformed', why: `HTTP ${status} without a SOAP fault` };
  const resp = child(soapBody, `${action}Response`);
  if (!resp) return { kind: 'malformed', why: `no ${action}Response in the answer` };
  const values: Record<string, string> = {};
  for (const c of resp.children.slice(0, SOAP.maxValues)) values[c.name] = c.text;
  return { kind: 'ok', values };
}

function faultText(f: UpnpFault): string {
  return f.code === null ? `fault "${f.name}"` : `UPnPError ${f.code} ${f.name}`;
}

function portValue(s: string | undefined): number | null {
  return s !== undefined && /^[0-9]{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535 ? Number(s) : null;
}

// --------------------------------------------------------------------- client

interface Service extends UpnpService {
  location: string;
  server: string;
}

/** No usable answer; `transport`: no HTTP answer at all (as opposed to a garbled one). */
interface Broken {
  kind: 'broken';
  why: string;
  transport: boolean;
}

/** A SOAP call's result as the client uses it: values, a fault, or no usable answer. */
type Call = { kind: 'ok'; values: Record<string, string> } | { kind: 'fault'; fault: UpnpFault } | Broken;

export class UpnpClient implements MappingClient {
  readonly protocol = 'upnp' as const;
  private bad = 0;
  private svc: Service | null = null;

  constructor(private readonly c: ClientContext) {}

  get badAnswers(): number {
    return this.bad;
  }

  async map(lifetimeS: number, _phase: Phase, signal: AbortSignal): Promise<Outcome<Grant>> {
    return this.withService(signal, async (svc) => {
      let lease = lifetimeS;
      const addMapping = async (): Promise<Call> => {
        const r = await this.call(svc, 'AddPortMapping', this.addArgs(lease), signal);
        if (r.kind !== 'fault' || r.fault.code !== ONLY_PERMANENT || lease === 0) return r;
        lease = 0;
        return this.call(svc, 'AddPortMapping', this.addArgs(lease), signal);
      };
      let add = await addMapping();
      if (add.kind === 'fault' && add.fault.code === CONFLICT && (await this.deleteOwnEntry(svc, signal))) add = await addMapping();
      if (add.kind === 'broken') return add;
      if (add.kind === 'fault') return this.addRefused(svc, add.fault, signal);
      const entry = await this.entry(svc, signal);
      let granted: number | null = lease === 0 ? null : lease;
      if (entry.kind === 'ok') {
        const who = `${entry.values.NewInternalClient}:${entry.values.NewInternalPort}`;
        if (who !== `${this.c.localAddress}:${this.c.port}`) {
          this.bad++;
          return fail('bad-answer', `UPnP: AddPortMapping succeeded but the router's entry for UDP ${this.c.port} points to ${who}`);
        }
        const d = entry.values.NewLeaseDuration;
        if (d !== undefined && /^[0-9]{1,10}$/.test(d)) granted = Number(d) === 0 ? null : Number(d);
      }
      return ok({ externalIp: await this.externalIp(svc, signal), externalPort: this.c.port, lifetimeS: granted, restarted: false });
    });
  }

  async check(signal: AbortSignal): Promise<Outcome<MappingHealth>> {
    const before = this.svc;
    return this.withService(signal, async (svc) => {
      const moved = before !== null && before.controlUrl !== svc.controlUrl;
      const e = await this.entry(svc, signal);
      if (e.kind === 'broken') return e;
      let why: string | null = null;
      if (e.kind === 'fault') {
        if (e.fault.code !== NO_SUCH_ENTRY && e.fault.code !== NOT_FOUND) return this.refusal('GetSpecificPortMappingEntry', e.fault);
        why = `the router no longer has the mapping of UDP ${this.c.port} (${faultText(e.fault)}): it restarted or dropped it`;
      } else {
        const who = `${e.values.NewInternalClient}:${e.values.NewInternalPort}`;
        if (who !== `${this.c.localAddress}:${this.c.port}`) why = `the router's mapping of UDP ${this.c.port} now points to ${who}`;
        else if (moved) why = `the router's UPnP service moved to ${svc.controlUrl}: it restarted`;
      }
      return ok({ lost: why !== null, why, externalIp: await this.externalIp(svc, signal) });
    });
  }

  async unmap(externalPort: number, signal: AbortSignal): Promise<Outcome<void>> {
    return this.withService(signal, async (svc) => {
      // DeletePortMapping removes whatever forwards the port, ours or not (miniupnpd checks
      // the owner only in its secure mode): look first, and leave another host's forward alone
      // (a router that restarted may have given the port away before our check noticed).
      if (externalPort === this.c.port) {
        const e = await this.entry(svc, signal);
        if (e.kind === 'broken' && e.transport) return e;
        if (e.kind === 'fault' && (e.fault.code === NO_SUCH_ENTRY || e.fault.code === NOT_FOUND)) return ok(undefined);
        if (e.kind === 'ok') {
          const who = `${e.values.NewInternalClient}:${e.values.NewInternalPort}`;
          if (who !== `${this.c.localAddress}:${this.c.port}`) {
            return fail('refused', `UPnP: the router forwards UDP ${this.c.port} to ${who} now, not to this host; left alone`, { code: NOT_OURS });
          }
        }
        // Other faults or a garbled answer: delete as asked.
      }
      const r = await this.call(svc, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', externalPort], ['NewProtocol', 'UDP']], signal);
      if (r.kind === 'broken') return r;
      if (r.kind === 'fault' && r.fault.code !== NO_SUCH_ENTRY && r.fault.code !== NOT_FOUND) return this.refusal('DeletePortMapping', r.fault);
      return ok(undefined);
    });
  }

  async probe(signal: AbortSignal): Promise<Outcome<string>> {
    return this.withService(signal, async (svc) => {
      const ip = await this.externalIp(svc, signal);
      const type = svc.serviceType.replace('urn:schemas-upnp-org:service:', '');
      return ok(`UPnP IGD answers: ${svc.server || 'unnamed device'}, ${type} at ${svc.controlUrl}, external address ${ip ?? 'unknown'}`);
    });
  }

  // ------------------------------------------------------------------ service

  /**
   * Runs op on the known service, discovering it first if needed. When the known service does
   * not answer at all (a restarted miniupnpd listens on another port), it is rediscovered
   * and op runs once more.
   */
  private async withService<T>(signal: AbortSignal, op: (svc: Service) => Promise<Outcome<T> | Broken>): Promise<Outcome<T>> {
    const known = this.svc !== null;
    for (let attempt = 0; ; attempt++) {
      if (!this.svc) {
        const d = await this.discover(signal);
        if (!d.ok) return d;
        this.svc = d.value;
      }
      const r = await op(this.svc);
      if (!('kind' in r)) return r;
      if (r.transport && known && attempt === 0 && !signal.aborted) {
        this.c.log.debug('upnp service stopped answering; rediscovering', { url: this.svc.controlUrl, why: r.why });
        this.svc = null;
        continue;
      }
      return fail(signal.aborted ? 'local' : 'bad-answer', `UPnP: ${r.why}`);
    }
  }

  private async discover(signal: AbortSignal): Promise<Outcome<Service>> {
    const answers = await this.search(signal);
    if (signal.aborted) return fail('local', 'UPnP: stopped');
    if (answers.length === 0) {
      return fail('absent', `UPnP: no IGD at ${this.c.gateway} answered an SSDP search (unicast to ${this.c.gateway}:${SSDP_PORT} and multicast) within ${SSDP.waitMs / 1000} s`);
    }
    const problems: string[] = [];
    for (const a of answers.slice(0, SSDP.maxLocations)) {
      const loc = repoint(parseHttpUrl(a.location)!, this.c.gateway);
      let res: HttpResponse;
      try {
        res = await this.http(loc, 'GET', {}, undefined, DESCRIPTION.timeoutMs, DESCRIPTION.maxBytes, signal);
      } catch (e) {
        problems.push(`${loc.href}: ${(e as Error).message}`);
        continue;
      }
      const services = res.status === 200 ? parseDescription(res.body, loc.href, this.c.gateway) : null;
      if (services === null) {
        this.bad++;
        problems.push(`${loc.href}: HTTP ${res.status}, not a UPnP device description`);
      } else if (services.length === 0) {
        problems.push(`${loc.href}: no WANIPConnection or WANPPPConnection service`);
      } else {
        return ok({ ...services[0], location: loc.href, server: a.server });
      }
    }
    return fail('absent', `UPnP: ${problems.join('; ')}`);
  }

  /** SSDP answers from the router, gateway-type first, deduplicated by LOCATION. */
  private search(signal: AbortSignal): Promise<SsdpAnswer[]> {
    return new Promise((resolve) => {
      const found: SsdpAnswer[] = [];
      let sock: UdpEndpoint | null = null;
      let datagrams = 0;
      let done = false;
      const timers: { cancel(): void }[] = [];
      const finish = () => {
        if (done) return;
        done = true;
        for (const t of timers) t.cancel();
        sock?.close();
        signal.removeEventListener('abort', finish);
        resolve(found.sort((a, b) => Number(isGatewayType(b.st)) - Number(isGatewayType(a.st))));
      };
      if (signal.aborted) return finish();
      signal.addEventListener('abort', finish);
      const send = () => {
        for (const st of SSDP_SEARCH_TARGETS) {
          sock?.send(encodeMSearch(`${this.c.gateway}:${SSDP_PORT}`, st), { address: this.c.gateway, port: SSDP_PORT });
          sock?.send(encodeMSearch(`${SSDP_ADDRESS}:${SSDP_PORT}`, st, 1), { address: SSDP_ADDRESS, port: SSDP_PORT });
        }
      };
      this.c
        .udp(
          { localAddress: this.c.localAddress, multicast: true },
          {
            message: (msg, from) => {
              if (done) return;
              // Other LAN devices answer the multicast too (a media server or printer sends one
              // datagram per device and service to ssdp:all): dropped unread and not counted, or
              // a busy LAN would use up the bound before a router that answers only the multicast.
              if (from.address !== this.c.gateway) return;
              if (++datagrams > SSDP.maxDatagrams) return finish();
              const a = parseSsdpResponse(msg);
              if (!a) {
                this.bad++;
                return;
              }
              if (!found.some((f) => f.location === a.location)) found.push(a);
              if (isGatewayType(a.st)) finish();
            },
            error: () => {},
          },
        )
        .then(
          (s) => {
            if (done) return s.close();
            sock = s;
            send();
            timers.push(this.c.clock.after(SSDP.resendMs, send), this.c.clock.after(SSDP.waitMs, finish));
          },
          (e: unknown) => {
            this.c.log.debug('upnp: cannot open the SSDP socket', { err: (e as Error).message });
            finish();
          },
        );
    });
  }

  // ------------------------------------------------------------------ SOAP calls

  private addArgs(lease: number): [string, string | number][] {
    return [
      ['NewRemoteHost', ''],
      ['NewExternalPort', this.c.port],
      ['NewProtocol', 'UDP'],
      ['NewInternalPort', this.c.port],
      ['NewInternalClient', this.c.localAddress],
      ['NewEnabled', 1],
      ['NewPortMappingDescription', MAPPING_DESCRIPTION],
      ['NewLeaseDuration', lease],
    ];
  }

  private entry(svc: Service, signal: AbortSignal): Promise<Call> {
    return this.call(svc, 'GetSpecificPortMappingEntry', [['NewRemoteHost', ''], ['NewExternalPort', this.c.port], ['NewProtocol', 'UDP']], signal).then((r) => {
      if (r.kind !== 'ok') return r;
      const client = r.values.NewInternalClient;
      if (!client || portValue(r.values.NewInternalPort) === null) {
        this.bad++;
        return { kind: 'broken', why: 'GetSpecificPortMappingEntry answered without NewInternalClient/NewInternalPort', transport: false };
      }
      return r;
    });
  }

  /**
   * AddPortMapping said 718 ConflictInMappingEntry. Some routers answer that to an entry of the
   * caller's own too (Open.NAT issue 14): a previous run's, left by a crash (for good if its
   * lease was permanent), or ours on every renewal. An entry for our address and port is ours
   * whoever made it: deleted, so that it can be added again. True when it was.
   */
  private async deleteOwnEntry(svc: Service, signal: AbortSignal): Promise<boolean> {
    const e = await this.entry(svc, signal);
    if (e.kind !== 'ok' || `${e.values.NewInternalClient}:${e.values.NewInternalPort}` !== `${this.c.localAddress}:${this.c.port}`) return false;
    const r = await this.call(svc, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', this.c.port], ['NewProtocol', 'UDP']], signal);
    const deleted = r.kind === 'ok' || (r.kind === 'fault' && (r.fault.code === NO_SUCH_ENTRY || r.fault.code === NOT_FOUND));
    this.c.log.info('upnp: the router would not overwrite our own entry; deleting it and adding it again', { deleted, description: e.values.NewPortMappingDescription });
    return deleted;
  }

  /** The router's external address, or null when it does not give a usable one. */
  private async externalIp(svc: Service, signal: AbortSignal): Promise<string | null> {
    const r = await this.call(svc, 'GetExternalIPAddress', [], signal);
    if (r.kind !== 'ok') return null;
    const ip = r.values.NewExternalIPAddress ?? '';
    if (!isIPv4(ip) || ip === '0.0.0.0') {
      if (ip !== '') this.bad++;
      return null;
    }
    return ip;
  }

  /** AddPortMapping said no: say why, and to whom the port belongs when the router tells. */
  private async addRefused(svc: Service, f: UpnpFault, signal: AbortSignal): Promise<Outcome<never>> {
    if (f.code === INVALID_ACTION) return fail('absent', `UPnP: ${svc.serviceType} does not implement AddPortMapping (${faultText(f)})`, { code: faultText(f) });
    let owner = '';
    if (f.code === CONFLICT || f.code === 729) {
      const e = await this.entry(svc, signal);
      if (e.kind === 'ok') owner = ` (the router forwards it to ${e.values.NewInternalClient}:${e.values.NewInternalPort}, "${e.values.NewPortMappingDescription ?? ''}")`;
    }
    return this.refusal('AddPortMapping', f, owner);
  }

  private refusal(action: string, f: UpnpFault, extra = ''): Outcome<never> {
    const hint = f.code !== null ? UPNP_HINT[f.code]?.(this.c.port) ?? '' : '';
    return fail('refused', `UPnP: ${action} of UDP ${this.c.port} answered ${faultText(f)}${extra}${hint}`, { code: faultText(f) });
  }

  private async call(svc: Service, action: string, args: [string, string | number][], signal: AbortSignal): Promise<Call> {
    let res: HttpResponse;
    try {
      res = await this.http(new URL(svc.controlUrl), 'POST', {
        'Content-Type': 'text/xml; charset="utf-8"',
        SOAPAction: `"${svc.serviceType}#${action}"`,
      }, encodeSoapRequest(svc.serviceType, action, args), SOAP.timeoutMs, SOAP.maxBytes, signal);
    } catch (e) {
      return { kind: 'broken', why: `${action} at ${svc.controlUrl}: ${(e as Error).message}`, transport: true };
    }
    const r = parseSoapResponse(res.status, res.body, action);
    if (r.kind === 'malformed') {
      this.bad++;
      return { kind: 'broken', why: `${action} at ${svc.controlUrl}: ${r.why}`, transport: false };
    }
    return r;
  }

  /** One bounded HTTP request to the router: deadline on our clock, body size capped. Rejects with a readable Error. */
  private async http(u: URL, method: 'GET' | 'POST', headers: Record<string, string>, body: string | undefined, timeoutMs: number, maxBytes: number, signal: AbortSignal): Promise<HttpResponse> {
    const ac = new AbortController();
    let onAbort = () => {};
    // The race makes the deadline hold even if an HttpFn ignored its signal.
    const stopped = new Promise<never>((_, reject) => {
      onAbort = () => {
        const why = signal.aborted ? new Error('stopped') : new Error(`no complete answer within ${timeoutMs / 1000} s`);
        reject(why); // first, so that the race reports our reason, not the HttpFn's "aborted"
        ac.abort(why);
      };
    });
    signal.addEventListener('abort', onAbort);
    const timer = this.c.clock.after(timeoutMs, onAbort);
    try {
      if (signal.aborted) onAbort();
      const req = this.c.http(
        { host: this.c.gateway, port: Number(u.port || 80), path: `${u.pathname}${u.search}`, method, headers, body, localAddress: this.c.localAddress, maxBytes },
        ac.signal,
      );
      req.catch(() => {}); // its rejection after the race was lost must not go unhandled
      return await Promise.race([req, stopped]);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new Error(err.code && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message);
    } finally {
      timer.cancel();
      signal.removeEventListener('abort', onAbort);
    }
  }
}

const UPNP_HINT: Record<number, (port: number) => string> = {
  606: () => ': the router\'s UPnP rules do not allow this mapping',
  718: (p) => `: UDP ${p} is already forwarded to another host`,
  728: () => ': the router\'s mapping table is full',
  729: (p) => `: UDP ${p} is already used by another mechanism on the router (a static forward, NAT-PMP/PCP)`,
};
