// The HTTP proxy a connection to the cluster goes through, taken from the environment as the
// cluster's own clients take it, so that a site whose only way out for TCP is a proxy reaches
// etcd and the Kubernetes API as flanneld and kubectl do there; and the MQTT broker over a
// WebSocket, as an HTTP client would (webSocketProxyFor), or over mqtt:// and mqtts://
// through the SOCKS proxy MQTT.js itself takes from MQTTJS_SOCKS_PROXY (mqttSocksProxy).
// The site file can name the broker's proxy instead, HTTP or SOCKS, for every scheme
// (mqtt.proxy, mqttProxy).
//
// etcd (proxyFor): gRPC's rules. grpc-js (the etcd3 library vxedge used before its own
// client) takes the first of `grpc_proxy`, `https_proxy`, `http_proxy`; grpc-go (flanneld's)
// `HTTPS_PROXY` or `https_proxy`. Both are read here, in that order, lower case first: an
// http:// URL (user and password in it become Basic proxy credentials), reached with HTTP
// CONNECT. Kubernetes (kubeProxyUrl): client-go's (Go's ProxyFromEnvironment), `HTTPS_PROXY`
// for an https:// API server and `HTTP_PROXY` for http://, as the kubeconfig's `proxy-url`
// would name it (http, https or socks5), which the kubeconfig's own proxy-url overrides.
// Either way `no_grpc_proxy` (etcd), `no_proxy`, `NO_PROXY` list the hosts reached directly,
// as Go reads them: `*`, an address, an IPv4 CIDR, a domain (itself and below it), `.domain`
// (below it only); a loopback host is never proxied.
//
// ConnectTunnel (HTTP CONNECT) and SocksTunnel (mqtt.proxy's SOCKS) are the connection
// through it: a Duplex handed to http2.connect, ws or MQTT.js (or to tls.connect for TLS)
// before the proxy has answered. It says `connecting` until then, and holds what is written
// meanwhile: the endpoint's connection keeps its synchronous start (grpc-h2.ts).
import { lookup as dnsLookup } from 'node:dns/promises';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { explainTls, TLS_VERIFY_CODES } from './tls-failure.js';

export interface HttpProxy extends ProxyEndpoint {
  /** `Basic …` for Proxy-Authorization, from the URL's user and password. */
  authorization?: string;
  /** An https:// proxy: CONNECT is spoken over TLS to it (its certificate checked against the system's CAs and NODE_EXTRA_CA_CERTS). */
  tls?: true;
  /** The variable it came from and its value without a password, for messages. */
  from: string;
}

/** A proxy variable whose value cannot be used: its name, its value, what to do. */
export class ProxyConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProxyConfigError';
  }
}

/** The proxy for a connection to etcd at `host`, or null for a direct one. Throws ProxyConfigError for a value that cannot be used. */
export function proxyFor(host: string, env: Env = process.env): HttpProxy | null {
  const set = firstSet(env, ['grpc_proxy', 'https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY']);
  if (!set || direct(host, env, ['no_grpc_proxy', 'no_proxy', 'NO_PROXY'])) return null;
  return connectProxy(set, 'etcd is reached through an http:// proxy only (HTTP CONNECT), as by gRPC\'s clients');
}

/**
 * The proxy for a WebSocket to the MQTT broker (`url` ws:// or wss://), as an HTTP client
 * takes it: kubeProxyUrl's variables (HTTPS_PROXY for wss://, HTTP_PROXY for ws://, NO_PROXY),
 * an http:// proxy reached with CONNECT, or an https:// one reached over TLS (as curl goes).
 * Throws ProxyConfigError for a value that cannot be used.
 */
export function webSocketProxyFor(url: string, env: Env = process.env): HttpProxy | null {
  const set = httpClientVariable(new URL(url.replace(/^ws/i, 'http')), env);
  return set && connectProxy(set, 'the MQTT broker over WebSocket is reached through an http:// or https:// proxy only (HTTP CONNECT)', true);
}

/**
 * An http:// proxy from a variable ([name, value]), or an https:// one (reached over TLS, port
 * 443 unless given) where `overTls`; `only`: what to say of another scheme.
 */
function connectProxy([name, value]: [string, string], only: string, overTls = false): HttpProxy {
  const u = parsed(name, value);
  const secure = u.protocol === 'https:' && overTls;
  if (u.protocol !== 'http:' && !secure) throw new ProxyConfigError(`${name}=${redacted(u)}: ${only}; set it to http://HOST:PORT, or unset it`);
  const user = decodeURIComponent(u.username);
  const authorization = user ? `Basic ${Buffer.from(`${user}:${decodeURIComponent(u.password)}`).toString('base64')}` : undefined;
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (secure ? 443 : 80)), ...(authorization ? { authorization } : {}),
    ...(secure ? { tls: true as const } : {}), from: `${name}=${redacted(u)}`,
  };
}

/** Where a proxy is and what named it (a variable, or mqtt.proxy), for messages. */
export interface ProxyEndpoint {
  host: string;
  port: number;
  from: string;
}

/** A SOCKS proxy from mqtt.proxy. */
export interface SocksProxy extends ProxyEndpoint {
  /** As its URL names it: socks5, socks5h, socks4 or socks4a. */
  scheme: string;
  type: 4 | 5;
  /** socks5h://, socks4a://: the proxy resolves the broker's name. */
  remoteDns: boolean;
  userId?: string;
  password?: string;
}

/**
 * A tunnel the proxy did not open: it could not be reached, it refused our credentials (or
 * wanted some; the message then says what to put where), or it refused otherwise (an HTTP
 * proxy's CONNECT answered with `status`; a SOCKS proxy's refusal has none). The message says
 * which, naming the proxy and what set it.
 */
export class ProxyTunnelError extends Error {
  override name = 'ProxyTunnelError';
  constructor(
    message: string,
    readonly proxy: ProxyEndpoint,
    readonly failure: 'unreachable' | 'untrusted' | 'credentials' | 'refused',
    readonly status: number | null = null,
    /** For `untrusted`: what to do (the proxy's certificate, as util/tls-failure.ts words it). */
    readonly fix: string | null = null,
  ) {
    super(message);
  }
}

/** The URL a proxy is named by, without credentials: "https://proxy.example:443". */
export function proxyUrl(p: HttpProxy | SocksProxy): string {
  const scheme = 'scheme' in p ? p.scheme : p.tls ? 'https' : 'http';
  return `${scheme}://${connectTarget(p.host, p.port)}`;
}

/** The key or variable that named a proxy, without its value ("mqtt.proxy", "HTTPS_PROXY"). */
export function proxyNamedBy(p: ProxyEndpoint): string {
  return p.from.replace(/=.*/, '');
}

/** The config key that names the MQTT broker's proxy itself (an extension: MQTT.js has no HTTP proxy of its own). */
export const MQTT_PROXY_KEY = 'mqtt.proxy';

/** The proxy mqtt.proxy names. */
export type MqttProxy = { kind: 'HTTP'; proxy: HttpProxy } | { kind: 'SOCKS'; proxy: SocksProxy };

const SOCKS_SCHEMES: Record<string, { type: 4 | 5; remoteDns: boolean }> = {
  'socks5:': { type: 5, remoteDns: false },
  'socks5h:': { type: 5, remoteDns: true },
  'socks4:': { type: 4, remoteDns: false },
  'socks4a:': { type: 4, remoteDns: true },
};

/**
 * The proxy `mqtt.proxy` names, for every scheme of the broker's URL, so that MQTT over TLS
 * (an AWS IoT Core client certificate on port 443, which a WebSocket cannot carry) leaves a
 * site whose only way out is a proxy: http://[USER:PASSWORD@]HOST[:PORT] (port 80 by default,
 * as for HTTP_PROXY), reached with HTTP CONNECT; https://… the same over TLS to the proxy (port
 * 443 by default; the broker's own TLS then runs inside it); or socks5://, socks5h://, socks4://,
 * socks4a:// [USER[:PASSWORD]@]HOST[:PORT] (port 1080 by default), with the user and
 * password MQTT.js's own SOCKS transport leaves out. Throws an Error saying what is wrong with
 * the value, without the key (the config loader names it).
 */
export function mqttProxy(value: string): MqttProxy {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new Error('is not a URL (expected http://HOST:PORT or socks5://HOST:PORT)'); // the value may hold a password
  }
  const shown = redacted(u);
  const socks = SOCKS_SCHEMES[u.protocol];
  if (u.protocol !== 'http:' && u.protocol !== 'https:' && !socks) {
    throw new Error(`${shown}: the broker is reached through an http:// or https:// proxy (HTTP CONNECT) or a socks5://, socks5h://, socks4:// or socks4a:// one`);
  }
  if (u.hostname === '') throw new Error(`${shown} names no proxy host`);
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new Error(`${shown}: a proxy is named by host and port alone; set it to ${u.protocol}//${u.host}`);
  if (!socks) return { kind: 'HTTP', proxy: { ...connectProxy([MQTT_PROXY_KEY, value], '', true), from: MQTT_PROXY_KEY } };
  const userId = u.username ? decodeURIComponent(u.username) : undefined;
  const password = u.password ? decodeURIComponent(u.password) : undefined;
  if (socks.type === 4 && password !== undefined) throw new Error(`${shown}: SOCKS4 carries a user id and no password; use socks5:// for a user and password`);
  return {
    kind: 'SOCKS',
    proxy: { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 1080), from: MQTT_PROXY_KEY, scheme: u.protocol.slice(0, -1), ...socks, ...(userId !== undefined ? { userId } : {}), ...(password !== undefined ? { password } : {}) },
  };
}

/** MQTT.js's own variable for a SOCKS proxy (connect/index.js), read for mqtt:// and mqtts://. */
export const MQTT_SOCKS_VARIABLE = 'MQTTJS_SOCKS_PROXY';

/**
 * The SOCKS proxy MQTT.js goes through for mqtt:// and mqtts:// (not ws:// or wss://, which
 * take the HTTP proxy variables), from MQTTJS_SOCKS_PROXY, which MQTT.js reads by itself
 * whenever its socksProxy option is unset. Checked here so that a value it cannot use is said
 * once, naming the variable, instead of at every attempt: MQTT.js wants socks4(a):// or
 * socks5(h):// with a port and nothing after it, and sends no user name or password. `url`:
 * what to hand MQTT.js; null: unset.
 */
export function mqttSocksProxy(env: Env = process.env): { url: string; from: string } | null {
  const name = MQTT_SOCKS_VARIABLE;
  const value = env[name];
  if (!value) return null;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ProxyConfigError(`${name}=${value} is not a URL: set it to socks5://HOST:PORT, or unset it for a direct connection`);
  }
  const shown = `${name}=${redacted(u)}`;
  if (!(u.protocol in SOCKS_SCHEMES)) {
    throw new ProxyConfigError(`${shown}: MQTT.js goes through a SOCKS proxy only (socks5://, socks5h://, socks4://, socks4a://); set it to socks5://HOST:PORT, or unset it`);
  }
  if (!u.port) throw new ProxyConfigError(`${shown}: no port (MQTT.js has no default); set it to ${u.protocol}//${u.hostname}:1080 or the proxy's port`);
  if (u.username || u.password) {
    throw new ProxyConfigError(`${shown}: MQTT.js sends no SOCKS user name or password; name the proxy in mqtt.proxy instead, which sends them, and unset ${name}`);
  }
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new ProxyConfigError(`${shown}: a SOCKS proxy is named by host and port alone; set it to ${u.protocol}//${u.host}`);
  return { url: `${u.protocol}//${u.host}`, from: shown };
}

/** host:port as CONNECT names it: an IPv6 address in brackets. */
export function connectTarget(host: string, port: number): string {
  const h = host.replace(/^\[|\]$/g, '');
  return `${net.isIP(h) === 6 ? `[${h}]` : h}:${port}`;
}

/**
 * The proxy URL for the Kubernetes API server at `server`, as client-go takes it from the
 * environment, and the variable that named it; null for a direct connection. Throws
 * ProxyConfigError for a value that cannot be used.
 */
export function kubeProxyUrl(server: string, env: Env = process.env): { url: string; variable: string } | null {
  const set = httpClientVariable(new URL(server), env);
  if (!set) return null;
  const [name, value] = set;
  const p = parsed(name, value);
  if (!['http:', 'https:', 'socks5:', 'socks5h:', 'socks:'].includes(p.protocol)) {
    throw new ProxyConfigError(`${name}=${redacted(p)}: the Kubernetes API is reached through an http://, https:// or socks5:// proxy; set it to one, or unset it`);
  }
  return { url: p.href.replace(/\/$/, ''), variable: name };
}

/**
 * The variable an HTTP client takes its proxy for `u` from, as Go's ProxyFromEnvironment reads
 * them ([name, value]): HTTPS_PROXY for https://, HTTP_PROXY for http://; null when none is
 * set or NO_PROXY names the host.
 */
function httpClientVariable(u: URL, env: Env): [string, string] | null {
  const set = firstSet(env, u.protocol === 'https:' ? ['HTTPS_PROXY', 'https_proxy'] : ['HTTP_PROXY', 'http_proxy']);
  return set && !direct(u.hostname, env, ['NO_PROXY', 'no_proxy']) ? set : null;
}

type Env = Record<string, string | undefined>;

function firstSet(env: Env, names: string[]): [string, string] | null {
  const name = names.find((n) => env[n]);
  return name ? [name, env[name]!] : null;
}

function parsed(name: string, value: string): URL {
  try {
    // Go takes a bare host:port as http://host:port.
    return new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`);
  } catch {
    throw new ProxyConfigError(`${name}=${value} is not a URL: set it to http://HOST:PORT of an HTTP proxy, or unset it for a direct connection`);
  }
}

/** A proxy URL as it may be logged: its password, if any, as ***. */
export function loggable(url: string): string {
  try {
    return redacted(new URL(url));
  } catch {
    return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  }
}

function redacted(u: URL): string {
  return u.password ? `${u.protocol}//${u.username}:***@${u.host}${u.pathname === '/' ? '' : u.pathname}` : u.href.replace(/\/$/, '');
}

/** Whether `host` is reached directly: loopback, or named by the first of `lists` that is set (see the head of this file). */
function direct(host: string, env: Env, lists: string[]): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || (net.isIPv4(h) && h.startsWith('127.'))) return true;
  const list = (firstSet(env, lists)?.[1] ?? '').split(',').map((e) => e.trim().toLowerCase()).filter(Boolean);
  return list.some((entry) => {
    if (entry === '*') return true;
    const cidr = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(entry);
    if (cidr) return net.isIPv4(h) && inCidr(h, cidr[1], Number(cidr[2]));
    const name = entry.replace(/:\d+$/, '').replace(/^\[|\]$/g, ''); // a port is not looked at
    if (net.isIP(name) || net.isIP(h)) return name === h;
    if (name.startsWith('*.')) return h.endsWith(name.slice(1));
    if (name.startsWith('.')) return h.endsWith(name);
    return h === name || h.endsWith(`.${name}`);
  });
}

function inCidr(ip: string, base: string, len: number): boolean {
  if (len > 32 || !net.isIPv4(base)) return false;
  const n = (a: string) => a.split('.').reduce((acc, o) => (acc << 8) | Number(o), 0);
  const mask = len === 0 ? 0 : -1 << (32 - len);
  return (n(ip) & mask) === (n(base) & mask);
}

/** The proxy's answer to CONNECT is its status line and headers: anything longer is not a proxy. */
const MAX_ANSWER_BYTES = 16 * 1024;

/**
 * A TCP connection to `target` (host:port) through a proxy, usable at once (see the head of
 * this file): the socket to the proxy, the proxy's handshake on it (a subclass's), then bytes
 * both ways. Until the way is open it says `connecting` and holds what is written; a proxy
 * that cannot be reached or will not open the way destroys it with a ProxyTunnelError.
 */
abstract class ProxyTunnel extends Duplex {
  /** True until the proxy has opened the way; http2 starts its session at 'connect'. */
  connecting = true;
  protected readonly socket: net.Socket;
  private held: { chunk: Buffer; cb: (e?: Error | null) => void }[] = [];

  constructor(
    protected readonly proxy: ProxyEndpoint,
    protected readonly target: string,
  ) {
    super();
    const overTls = (proxy as HttpProxy).tls === true;
    // An https:// proxy: TLS to it first, its name checked as a browser's or curl's would be (SNI but for an address).
    const s = (this.socket = overTls
      ? tls.connect({ host: proxy.host, port: proxy.port, servername: net.isIP(proxy.host) ? undefined : proxy.host, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host: proxy.host, port: proxy.port }));
    s.setNoDelay(true);
    s.once(overTls ? 'secureConnect' : 'connect', () => this.handshake(s));
    s.on('error', (e) => this.destroy(this.connecting ? this.unreached(e, overTls) : e));
    s.on('close', () => {
      if (this.connecting) this.destroy(this.refused('the proxy closed the connection before it answered'));
      else if (!this.destroyed) this.destroy();
    });
  }

  /** Why the proxy could not be reached: its certificate (an https:// proxy), or the connection. */
  private unreached(e: Error, overTls: boolean): ProxyTunnelError {
    const { proxy } = this;
    const at = `${proxy.host}:${proxy.port} (${proxy.from})`;
    // Only the check of the proxy's own certificate (Node's verify codes): vxedge sends the proxy no certificate of its own.
    const code = (e as NodeJS.ErrnoException).code ?? '';
    const cert = overTls && TLS_VERIFY_CODES.has(code)
      ? explainTls(`${code} ${e.message}`, {
        peer: `the proxy ${proxy.host}:${proxy.port}`, ca: 'the system\'s CAs or NODE_EXTRA_CA_CERTS', cert: '', key: '', host: proxyNamedBy(proxy),
        files: 'add the CA that signed the proxy\'s certificate to the PEM file NODE_EXTRA_CA_CERTS names (in /etc/default/vxedge, then restart)',
      })
      : null;
    if (cert) return new ProxyTunnelError(`cannot reach the proxy ${at} over TLS: ${cert.why}`, proxy, 'untrusted', null, cert.fix);
    return new ProxyTunnelError(`cannot reach the proxy ${at}${overTls ? ' over TLS' : ''}: ${e.message}`, proxy, 'unreachable');
  }

  /** Speaks the proxy's handshake on `s`, connected to the proxy; then `opened`, or destroy with `refused`. */
  protected abstract handshake(s: net.Socket): void;

  /** The proxy was reached and did not open the way: `what` it answered. */
  protected abstract refused(what: string): ProxyTunnelError;

  /** The way is open: `rest` came from the far end with the proxy's answer. */
  protected opened(rest: Buffer): void {
    const s = this.socket;
    this.connecting = false;
    if (rest.length) this.push(rest);
    s.on('data', (d: Buffer) => {
      if (!this.push(d)) s.pause();
    });
    s.on('end', () => this.push(null));
    const held = this.held;
    this.held = [];
    for (const h of held) s.write(h.chunk, h.cb);
    this.emit('connect');
  }

  override _read(): void {
    if (!this.connecting) this.socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.connecting) this.held.push({ chunk, cb });
    else this.socket.write(chunk, cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.socket.end(cb);
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    for (const h of this.held) h.cb(err ?? new Error('the tunnel was closed'));
    this.held = [];
    this.socket.destroy();
    cb(err);
  }

  setNoDelay(): this {
    return this; // set on the socket to the proxy; http2 asks
  }
}

/** Through an HTTP proxy: CONNECT (RFC 9110 §9.3.6), Basic credentials from its URL. */
export class ConnectTunnel extends ProxyTunnel {
  constructor(
    protected override readonly proxy: HttpProxy,
    target: string,
  ) {
    super(proxy, target);
  }

  protected handshake(s: net.Socket): void {
    const { proxy, target } = this;
    const auth = proxy.authorization ? `Proxy-Authorization: ${proxy.authorization}\r\n` : '';
    let answer = Buffer.alloc(0);
    const onAnswer = (b: Buffer) => {
      answer = Buffer.concat([answer, b]);
      const end = answer.indexOf('\r\n\r\n');
      if (end < 0) {
        if (answer.length > MAX_ANSWER_BYTES) this.destroy(this.refused('an answer to CONNECT that does not end'));
        return;
      }
      s.off('data', onAnswer);
      const status = answer.subarray(0, answer.indexOf('\r\n')).toString('latin1');
      const code = /^HTTP\/1\.[01] (\d{3})/.exec(status)?.[1];
      if (code !== '200') {
        // 407 asks for credentials; some proxies (tinyproxy) answer wrong ones with 401.
        const where = proxy.from === MQTT_PROXY_KEY ? MQTT_PROXY_KEY : 'the variable';
        const hint = code !== '407' && code !== '401' ? ''
          : proxy.authorization ? `: the proxy refused the user and password in ${where}` : `: the proxy wants credentials, http://USER:PASSWORD@HOST:PORT in ${where}`;
        this.destroy(this.refused(`"${status.slice(0, 200)}"${hint}`, code ? Number(code) : null));
        return;
      }
      this.opened(answer.subarray(end + 4));
    };
    s.on('data', onAnswer);
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
  }

  protected refused(what: string, status: number | null = null): ProxyTunnelError {
    const failure = status === 401 || status === 407 ? 'credentials' : 'refused';
    return new ProxyTunnelError(`the proxy ${this.proxy.host}:${this.proxy.port} (${this.proxy.from}) answered CONNECT ${this.target} with ${what}`, this.proxy, failure, status);
  }
}

/**
 * Through a SOCKS proxy (RFC 1928; RFC 1929's user and password, which MQTT.js's own SOCKS
 * transport does not send), by the socks package, loaded on first use, on the tunnel's own
 * socket. socks5:// and socks4:// resolve the host here, socks5h:// and socks4a:// let the
 * proxy resolve it, as curl and MQTT.js read those schemes.
 */
export class SocksTunnel extends ProxyTunnel {
  constructor(
    protected override readonly proxy: SocksProxy,
    private readonly host: string,
    private readonly port: number,
  ) {
    super(proxy, connectTarget(host, port));
  }

  protected handshake(s: net.Socket): void {
    // A name that does not resolve here is the broker's host's trouble, not the proxy's: its
    // own error (ENOTFOUND, EAI_AGAIN), worded as for a direct connection.
    void this.socks(s).catch((e: Error & { code?: unknown }) => this.destroy(e.code !== undefined ? e : this.refused(e.message)));
  }

  private async socks(s: net.Socket): Promise<void> {
    const { proxy } = this;
    const host = proxy.remoteDns || net.isIP(this.host) ? this.host : (await dnsLookup(this.host, { family: proxy.type === 4 ? 4 : 0 })).address;
    const { SocksClient } = await import('socks');
    if (this.destroyed) return;
    const client = new SocksClient({
      command: 'connect',
      destination: { host, port: this.port },
      proxy: { host: proxy.host, port: proxy.port, type: proxy.type, userId: proxy.userId, password: proxy.password },
      existing_socket: s,
    });
    client.once('established', () => this.opened(Buffer.alloc(0)));
    client.once('error', (e: Error) => {
      const auth = /authentication failed/i.test(e.message) ? `: the proxy refused the user and password in ${proxy.from}`
        : /no accepted authentication/i.test(e.message) && proxy.userId === undefined ? `: the proxy wants a user name and password, socks5://USER:PASSWORD@HOST:PORT in ${proxy.from}` : '';
      this.destroy(this.refused(`${e.message}${auth}`, auth !== ''));
    });
    client.connect(s);
  }

  protected refused(what: string, credentials = false): ProxyTunnelError {
    return new ProxyTunnelError(`the SOCKS proxy ${this.proxy.host}:${this.proxy.port} (${this.proxy.from}) would not open a way to ${this.target}: ${what}`, this.proxy, credentials ? 'credentials' : 'refused');
  }
}

/** TLS to `target` (host:port) through the HTTP proxy `proxy`: tlsOver a ConnectTunnel. */
export function tlsThrough(proxy: HttpProxy, target: string, options: tls.ConnectionOptions): tls.TLSSocket {
  return tlsOver(new ConnectTunnel(proxy, target), options);
}

/**
 * tls.connect over the tunnel `t`. Files the secure context refuses throw, as tls.connect's
 * own do, and the tunnel is closed, not left open to the proxy.
 */
export function tlsOver(t: Duplex, options: tls.ConnectionOptions): tls.TLSSocket {
  try {
    return tls.connect({ ...options, socket: t });
  } catch (e) {
    t.destroy();
    throw e;
  }
}
