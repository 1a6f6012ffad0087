// From the `mqtt` config section to MQTT.js client options: broker URL, TLS (CA, mutual
// TLS as AWS IoT Core requires, SNI, AWS's ALPN on port 443), credentials (password or
// passwordFile) and the MQTT 5 extras. Pure except loadSecrets, which reads the files
// (through an injectable reader) at every connection attempt, so that a certificate or
// password rotated on disk is picked up without a restart. closeClient, the end of every
// client the publisher and `vxedge fleet` open, is here too: both already build theirs here.
import { X509Certificate, createHash } from 'node:crypto';
import { readFile as fsReadFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { checkServerIdentity, connect as tlsConnect, createSecureContext, type ConnectionOptions, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { IClientOptions, MqttClient } from 'mqtt';
import { maskUrl } from '../config/formats.js';
import type { Config } from '../config/types.js';
import { peerCertValidity, type SiteCertificate } from '../util/tls-failure.js';
import { ConnectTunnel, MQTT_SOCKS_VARIABLE, ProxyConfigError, SocksTunnel, connectTarget, mqttProxy, mqttSocksProxy, proxyNamedBy, proxyUrl, tlsOver, webSocketProxyFor, type MqttProxy } from '../util/http-proxy.js';
import { whyUnreadable } from '../util/why-unreadable.js';

export type MqttConfig = Config['mqtt'];
export type MqttScheme = 'mqtt' | 'mqtts' | 'ws' | 'wss';
export type ProtocolVersion = 4 | 5;

export interface BrokerUrl {
  scheme: MqttScheme;
  host: string;
  port: number;
  /** TLS (mqtts, wss). */
  secure: boolean;
}

const DEFAULT_PORTS: Record<MqttScheme, number> = { mqtt: 1883, mqtts: 8883, ws: 80, wss: 443 };

/** The scheme, host and port of a broker URL (the config loader has validated it). */
export function parseBrokerUrl(url: string): BrokerUrl {
  const u = new URL(url);
  const scheme = u.protocol.replace(/:$/, '') as MqttScheme;
  if (!(scheme in DEFAULT_PORTS)) throw new MqttSetupError(`mqtt.url has scheme "${scheme}"; use mqtt://, mqtts://, ws:// or wss://`);
  // URL keeps the brackets of an IPv6 literal.
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  return { scheme, host, port: u.port ? Number(u.port) : DEFAULT_PORTS[scheme], secure: scheme === 'mqtts' || scheme === 'wss' };
}

/**
 * AWS IoT Core takes MQTT with an X.509 client certificate on port 443 only with the TLS ALPN
 * protocol "x-amzn-mqtt-ca" (docs/health.md "TLS and AWS IoT Core"). Only for mqtts (MQTT
 * over TLS), port 443, and an amazonaws.com host: anywhere else that ALPN would make the
 * handshake fail.
 */
export function wantsAwsAlpn(b: BrokerUrl): boolean {
  const host = b.host.toLowerCase().replace(/\.$/, '');
  return b.scheme === 'mqtts' && b.port === 443 && (host === 'amazonaws.com' || host.endsWith('.amazonaws.com'));
}

/** Thrown for a problem with the config or the files it names, not with the broker. */
export class MqttSetupError extends Error {
  override name = 'MqttSetupError';
}

export interface MqttSecrets {
  password: string | null;
  ca: Buffer | null;
  cert: Buffer | null;
  key: Buffer | null;
}

export type FileReader = (path: string) => Promise<Buffer>;

/** The TLS keys that are set but unused because the URL is not mqtts:// or wss://. */
export function ignoredTlsKeys(m: MqttConfig): string[] {
  if (!m.url || parseBrokerUrl(m.url).secure) return [];
  return (['ca', 'cert', 'key'] as const).filter((k) => m[k] !== null).map((k) => `mqtt.${k}`);
}

/**
 * Reads mqtt.passwordFile and (for mqtts/wss) mqtt.ca, mqtt.cert, mqtt.key. A missing, unreadable
 * or malformed file is an MqttSetupError naming the key, the path and what to do.
 */
export async function loadSecrets(m: MqttConfig, readFile: FileReader = fsReadFile): Promise<MqttSecrets> {
  const read = async (key: string, path: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new MqttSetupError(`cannot read ${key} ${path}: ${whyUnreadable(e)}`);
    }
  };
  let password = m.password;
  if (m.passwordFile) {
    // A trailing newline is what editors and `echo` leave; it is not part of the password.
    password = (await read('mqtt.passwordFile', m.passwordFile)).toString('utf8').replace(/\r?\n$/, '');
    if (password === '') throw new MqttSetupError(`mqtt.passwordFile ${m.passwordFile} is empty`);
  }
  const secure = m.url !== null && parseBrokerUrl(m.url).secure;
  const ca = secure && m.ca ? await read('mqtt.ca', m.ca) : null;
  const cert = secure && m.cert ? await read('mqtt.cert', m.cert) : null;
  const key = secure && m.key ? await read('mqtt.key', m.key) : null;
  if (ca) {
    try {
      // Node ignores a CA "bundle" without any certificate, and would then trust nothing.
      new X509Certificate(ca);
    } catch {
      throw new MqttSetupError(`mqtt.ca ${m.ca} holds no PEM certificate; check mqtt.ca/cert/key`);
    }
  }
  if (ca || cert || key) {
    try {
      // The same parsing tls.connect does: catches a non-PEM file or a key that does not match the certificate.
      createSecureContext({ ca: ca ?? undefined, cert: cert ?? undefined, key: key ?? undefined });
    } catch (e) {
      throw new MqttSetupError(`invalid TLS material (${(e as Error).message}); check mqtt.ca/cert/key`);
    }
  }
  return { password, ca, cert, key };
}

/** MQTT client id: vxedge-{site}-{node}, shortened with a hash beyond AWS IoT Core's 128 bytes. */
export function clientIdFor(site: string, node: string): string {
  const id = `vxedge-${site}-${node}`;
  if (Buffer.byteLength(id) <= 128) return id;
  return `${id.slice(0, 115)}-${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/**
 * The gateway's client id marked for a command of the CLI (`vxedge-lab-edge-1-check`), within
 * the same 128: a broker then takes none of the gateway's sessions over.
 */
export function markedClientId(site: string, node: string, mark: string): string {
  return `${clientIdFor(site, node).slice(0, 127 - mark.length)}-${mark}`;
}

/** A gateway's two topics: {prefix}/{site}/{node}/status and …/health. */
export function topics(prefix: string, site: string, node: string): { status: string; health: string } {
  const base = `${prefix}/${site}/${node}`;
  return { status: `${base}/status`, health: `${base}/health` };
}

export interface ClientOptionsInput {
  mqtt: MqttConfig;
  clientId: string;
  /** Where the last will (a retained "offline") goes; null: no will (a reader, a connection test). */
  statusTopic: string | null;
  protocolVersion: ProtocolVersion;
  secrets: MqttSecrets;
  /** Seconds of MQTT keepalive (AWS IoT Core treats < 30 as 30). */
  keepaliveS?: number;
  connectTimeoutMs?: number;
  /**
   * wss:// only: called with the TLS socket under the WebSocket, whose certificate the broker
   * presented. MQTT.js's stream is then the WebSocket's, and hides that socket.
   */
  onTlsSocket?: (socket: TLSSocket) => void;
}

/** Seconds a retained health document stays valid: 3 × mqtt.interval (at least 10 s). */
export function healthExpiryS(intervalMs: number): number {
  return Math.max(10, Math.ceil((3 * intervalMs) / 1000));
}

/**
 * Options for one connection attempt. Reconnecting is the publisher's job (reconnectPeriod 0:
 * MQTT.js's own period is constant), and nothing is queued while offline (queueQoSZero false;
 * the publisher keeps just the latest health document).
 */
export function buildClientOptions(i: ClientOptionsInput): IClientOptions {
  const m = i.mqtt;
  const broker = parseBrokerUrl(m.url!);
  const o: IClientOptions = {
    clientId: i.clientId,
    protocolVersion: i.protocolVersion,
    clean: true,
    keepalive: i.keepaliveS ?? 60,
    connectTimeout: i.connectTimeoutMs ?? 10_000,
    reconnectPeriod: 0,
    queueQoSZero: false,
    // MQTT.js otherwise pre-builds a Buffer for every 16-bit number (65 536 of them, 6 MB of
    // heap) to save an allocation per packet: a poor trade for a health document every 30 s.
    writeCache: false,
    resubscribe: false,
  };
  if (i.statusTopic !== null) o.will = { topic: i.statusTopic, payload: Buffer.from('offline'), qos: 1, retain: true };
  if (i.protocolVersion === 5) {
    // No session to keep: every (re)connect republishes the retained state.
    o.properties = { sessionExpiryInterval: 0 };
  }
  if (m.username !== null) o.username = m.username;
  if (i.secrets.password !== null) o.password = i.secrets.password;
  if (broker.secure) {
    o.rejectUnauthorized = true;
    if (i.secrets.ca) o.ca = i.secrets.ca;
    if (i.secrets.cert) o.cert = i.secrets.cert;
    if (i.secrets.key) o.key = i.secrets.key;
    // SNI (AWS IoT Core refuses connections without it); RFC 6066 forbids an IP address there.
    if (isIP(broker.host) === 0) o.servername = broker.host;
    if (wantsAwsAlpn(broker)) o.ALPNProtocols = ['x-amzn-mqtt-ca'];
  }
  const onTlsSocket = i.onTlsSocket;
  // Through the proxy mqtt.proxy names (HTTP or SOCKS), whatever the scheme. Else over a WebSocket,
  // through the proxy HTTPS_PROXY (wss://) or HTTP_PROXY (ws://) names, as an HTTP client goes
  // (util/http-proxy.ts); mqtt:// and mqtts:// direct, or through the SOCKS proxy
  // MQTTJS_SOCKS_PROXY names (MQTT.js's own, checked here, within the connect timeout).
  const overWs = broker.scheme === 'wss' || broker.scheme === 'ws';
  const own = m.proxy ? proxyOf(() => mqttProxy(m.proxy!)) : null;
  const fromEnv = !own && overWs ? proxyOf(() => webSocketProxyFor(m.url!)) : null;
  const via: MqttProxy | null = own ?? (fromEnv && { kind: 'HTTP', proxy: fromEnv });
  const socks = own || overWs ? null : proxyOf(() => mqttSocksProxy());
  const target = connectTarget(broker.host, broker.port);
  // A connection to the broker through `via`, the proxy's handshake done by the tunnel.
  const tunnel = via && ((): Duplex => (via.kind === 'HTTP' ? new ConnectTunnel(via.proxy, target) : new SocksTunnel(via.proxy, broker.host, broker.port)));
  const extra = o as Extra;
  if (via) {
    extra[THROUGH] = { kind: via.kind, url: proxyUrl(via.proxy), from: proxyNamedBy(via.proxy) };
  }
  if (socks) {
    extra[THROUGH] = { kind: 'SOCKS', url: socks.url, from: MQTT_SOCKS_VARIABLE };
    o.socksProxy = socks.url;
    o.socksTimeout = o.connectTimeout;
    // MQTT.js's TLS transport hands tls.connect the proxy's socket without the broker's host, so
    // Node would check the certificate against "localhost" wherever no SNI name stands in (an
    // address in the URL): check it against the broker's host, as a direct connection does.
    if (broker.secure) Object.assign(o, { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(broker.host, cert) });
  }
  if (broker.scheme === 'wss' && (onTlsSocket || tunnel)) {
    // ws opens the connection with this when given one, as its own does: tls.connect without
    // the options' `path` (the URL's, which net would take for a Unix socket), SNI unless the
    // host is an address. MQTT.js still copies ca, cert, key and rejectUnauthorized into them.
    const createConnection = (opts: ConnectionOptions & { host?: string }) => {
      const options = { ...opts, path: undefined, servername: opts.servername ?? (isIP(opts.host ?? '') ? '' : opts.host) };
      const socket = tunnel ? tlsOver(tunnel(), options) : tlsConnect(options);
      onTlsSocket?.(socket);
      return socket;
    };
    o.wsOptions = { createConnection } as unknown as IClientOptions['wsOptions'];
  } else if (broker.scheme === 'ws' && tunnel) {
    o.wsOptions = { createConnection: tunnel } as unknown as IClientOptions['wsOptions'];
  } else if (tunnel) {
    // mqtt:// and mqtts://: MQTT.js's own transports go direct or through SOCKS only, so
    // connectClient builds the client over this stream instead, with the TLS options a direct
    // connection takes (the broker's host for the certificate's name, as tls.connect checks it).
    const tlsOptions: ConnectionOptions = {
      host: broker.host, servername: o.servername, rejectUnauthorized: true, ca: o.ca, cert: o.cert, key: o.key, ALPNProtocols: o.ALPNProtocols as string[] | undefined,
    };
    extra[OWN_STREAM] = (client) => {
      const stream = broker.secure ? tlsOver(tunnel(), tlsOptions) : tunnel();
      // MqttClient passes on only errors with a code (a socket's, TLS's); the proxy's refusals
      // have none, and would otherwise leave a bare 'close'.
      stream.on('error', (e: Error & { code?: unknown }) => {
        if (e.code === undefined) client.emit('error', e);
      });
      return stream;
    };
  }
  return o;
}

/** What buildClientOptions adds to MQTT.js's options for its own use (MQTT.js ignores symbol keys). */
const OWN_STREAM = Symbol('vxedge.mqtt.ownStream');
const THROUGH = Symbol('vxedge.mqtt.through');
interface Extra {
  [OWN_STREAM]?: (client: MqttClient) => Duplex;
  [THROUGH]?: ProxyUsed;
}

/** The proxy a connection goes through: its kind, URL (no credentials) and the key or variable that named it. */
export interface ProxyUsed {
  kind: 'HTTP' | 'SOCKS';
  url: string;
  from: string;
}

/** The proxy a client with these options goes through; null: direct. */
export function proxyUsed(o: IClientOptions): ProxyUsed | null {
  return (o as Extra)[THROUGH] ?? null;
}

/** The mqtt module's parts connectClient uses (the gateway imports it at its first connection). */
export interface MqttLib {
  connect(url: string, opts: IClientOptions): MqttClient;
  MqttClient: new (streamBuilder: (client: MqttClient) => Duplex, opts: IClientOptions) => MqttClient;
}

/**
 * A client for `url` with options from buildClientOptions: MQTT.js's connect, or, where the
 * options carry a stream of their own (mqtt:// and mqtts:// through mqtt.proxy), a client
 * over it. MqttClient needs no URL: the stream is the connection.
 */
export function connectClient(lib: MqttLib, url: string, opts: IClientOptions): MqttClient {
  const own = (opts as Extra)[OWN_STREAM];
  return own ? new lib.MqttClient(own, opts) : lib.connect(url, opts);
}

/** A proxy variable that cannot be used, said as the other setup errors are (its callers tell those in words). */
function proxyOf<T>(read: () => T): T {
  try {
    return read();
  } catch (e) {
    if (e instanceof ProxyConfigError) throw new MqttSetupError(e.message);
    throw e;
  }
}

/**
 * The certificate the broker presented, for the certificates check: on `client`'s stream over
 * mqtts://, on `wsSocket` (ClientOptionsInput.onTlsSocket's) over wss://; null over plain MQTT.
 */
export function brokerCertificate(url: string, client: MqttClient, wsSocket: TLSSocket | null = null): SiteCertificate | null {
  const validity = peerCertValidity(client.stream) ?? peerCertValidity(wsSocket);
  return validity && { what: `the broker's certificate (${maskUrl(url)})`, validity, presented: true };
}

/** Closes a client at once (no DISCONNECT), whatever state it is in. Never throws. */
export function closeClient(c: MqttClient): void {
  try {
    // Keep a listener: an error emitted while closing must not become an uncaught exception.
    c.removeAllListeners('error');
    c.on('error', () => {});
    c.end(true);
    c.stream?.destroy();
  } catch {
    /* already closed */
  }
}
