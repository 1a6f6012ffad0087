// The HTTP proxy a connection to the cluster goes through, taken from the environment as the
// cluster's own clients take it, so that a site whose only way out for TCP is a proxy reaches
// etcd and the Kubernetes API as flanneld and kubectl do there; and the MQTT broker over a
// WebSocket, as an HTTP client would (webSocketProxyFor), or over mqtt:// and mqtts://
// through the SOCKS proxy MQTT.js itself takes from MQTTJS_SOCKS_PROXY (mqttSocksProxy).
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
// ConnectTunnel is the connection through it: a Duplex handed to http2.connect (or to
// tls.connect for https://) before the proxy has answered. It says `connecting` until then,
// and holds what is written meanwhile: the endpoint's connection keeps its synchronous start
// (grpc-h2.ts).
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';

export interface HttpProxy {
  /** host:port of the proxy. */
  host: string;
  port: number;
  /** `Basic …` for Proxy-Authorization, from the URL's user and password. */
  authorization?: string;
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
 * an http:// proxy reached with CONNECT. Throws ProxyConfigError for a value that cannot be used.
 */
export function webSocketProxyFor(url: string, env: Env = process.env): HttpProxy | null {
  const set = httpClientVariable(new URL(url.replace(/^ws/i, 'http')), env);
  return set && connectProxy(set, 'the MQTT broker over WebSocket is reached through an http:// proxy only (HTTP CONNECT)');
}

/** An http:// proxy from a variable ([name, value]); `only`: what to say of another scheme. */
function connectProxy([name, value]: [string, string], only: string): HttpProxy {
  const u = parsed(name, value);
  if (u.protocol !== 'http:') throw new ProxyConfigError(`${name}=${redacted(u)}: ${only}; set it to http://HOST:PORT, or unset it`);
  const user = decodeURIComponent(u.username);
  const authorization = user ? `Basic ${Buffer.from(`${user}:${decodeURIComponent(u.password)}`).toString('base64')}` : undefined;
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80), ...(authorization ? { authorization } : {}), from: `${name}=${redacted(u)}` };
}

/**
 * A tunnel the proxy did not open: it could not be reached (`status` null) or answered CONNECT
 * with `status`. The message says which, naming the proxy and what set it.
 */
export class ProxyTunnelError extends Error {
  override name = 'ProxyTunnelError';
  constructor(message: string, readonly proxy: HttpProxy, readonly status: number | null) {
    super(message);
  }
}

/** The config key that names the MQTT broker's proxy itself (an extension: MQTT.js has no HTTP proxy of its own). */
export const MQTT_PROXY_KEY = 'mqtt.proxy';

/**
 * The HTTP proxy `mqtt.proxy` names (http://[USER:PASSWORD@]HOST[:PORT], port 80 by default
 * as for HTTP_PROXY): reached with HTTP CONNECT whatever the broker's scheme, so that MQTT
 * over TLS (an AWS IoT Core client certificate on port 443, which a WebSocket cannot carry)
 * leaves a site whose only way out is a proxy. Throws an Error saying what is wrong with the
 * value, without the key (the config loader names it).
 */
export function mqttProxy(value: string): HttpProxy {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new Error('is not a URL (expected http://HOST:PORT, e.g. http://proxy.example:3128)'); // the value may hold a password
  }
  const shown = redacted(u);
  if (u.protocol === 'https:') throw new Error(`${shown}: a proxy reached over TLS is not supported; name it by http://HOST:PORT (the broker's own TLS goes through it end to end)`);
  if (u.protocol !== 'http:') {
    const socks = /^socks/.test(u.protocol) ? `; for a SOCKS proxy, set ${MQTT_SOCKS_VARIABLE} instead (mqtt:// and mqtts:// only)` : '';
    throw new Error(`${shown}: the broker is reached through an http:// proxy (HTTP CONNECT)${socks}`);
  }
  if (u.hostname === '') throw new Error(`${shown} names no proxy host`);
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) throw new Error(`${shown}: a proxy is named by host and port alone; set it to http://${u.host}`);
  const proxy = connectProxy(['mqtt.proxy', value], '');
  return { ...proxy, from: MQTT_PROXY_KEY };
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
  if (!['socks5:', 'socks5h:', 'socks4:', 'socks4a:'].includes(u.protocol)) {
    throw new ProxyConfigError(`${shown}: MQTT.js goes through a SOCKS proxy only (socks5://, socks5h://, socks4://, socks4a://); set it to socks5://HOST:PORT, or unset it`);
  }
  if (!u.port) throw new ProxyConfigError(`${shown}: no port (MQTT.js has no default); set it to ${u.protocol}//${u.hostname}:1080 or the proxy's port`);
  if (u.username || u.password) {
    throw new ProxyConfigError(`${shown}: MQTT.js sends no SOCKS user name or password; let the proxy admit this host without them and drop them from the URL, or reach the broker over wss:// through an HTTP proxy (HTTPS_PROXY)`);
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

/** A TCP connection to `target` (host:port) through `proxy`, usable at once (see the head of this file). */
export class ConnectTunnel extends Duplex {
  /** True until the proxy has answered 200; http2 starts its session at 'connect'. */
  connecting = true;
  private readonly socket: net.Socket;
  private held: { chunk: Buffer; cb: (e?: Error | null) => void }[] = [];

  constructor(
    private readonly proxy: HttpProxy,
    private readonly target: string,
  ) {
    super();
    const s = (this.socket = net.connect({ host: proxy.host, port: proxy.port }));
    s.setNoDelay(true);
    s.once('connect', () => {
      const auth = proxy.authorization ? `Proxy-Authorization: ${proxy.authorization}\r\n` : '';
      s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
    });
    let answer = Buffer.alloc(0);
    const onAnswer = (b: Buffer) => {
      answer = Buffer.concat([answer, b]);
      const end = answer.indexOf('\r\n\r\n');
      if (end < 0) {
        if (answer.length > MAX_ANSWER_BYTES) this.destroy(this.failure('an answer to CONNECT that does not end'));
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
        this.destroy(this.failure(`"${status.slice(0, 200)}"${hint}`, code ? Number(code) : null));
        return;
      }
      this.connecting = false;
      const rest = answer.subarray(end + 4);
      if (rest.length) this.push(rest);
      s.on('data', (d: Buffer) => {
        if (!this.push(d)) s.pause();
      });
      s.on('end', () => this.push(null));
      const held = this.held;
      this.held = [];
      for (const h of held) s.write(h.chunk, h.cb);
      this.emit('connect');
    };
    s.on('data', onAnswer);
    s.on('error', (e) => this.destroy(this.connecting ? new ProxyTunnelError(`cannot reach the proxy ${proxy.host}:${proxy.port} (${proxy.from}): ${e.message}`, proxy, null) : e));
    s.on('close', () => {
      if (this.connecting) this.destroy(this.failure('the proxy closed the connection before it answered'));
      else if (!this.destroyed) this.destroy();
    });
  }

  private failure(what: string, status: number | null = null): ProxyTunnelError {
    return new ProxyTunnelError(`the proxy ${this.proxy.host}:${this.proxy.port} (${this.proxy.from}) answered CONNECT ${this.target} with ${what}`, this.proxy, status);
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

/**
 * TLS to `target` (host:port) through `proxy`: tls.connect over a tunnel. Files the secure
 * context refuses throw, as tls.connect's own do, and the tunnel is closed, not left open to
 * the proxy.
 */
export function tlsThrough(proxy: HttpProxy, target: string, options: tls.ConnectionOptions): tls.TLSSocket {
  const t = new ConnectTunnel(proxy, target);
  try {
    return tls.connect({ ...options, socket: t });
  } catch (e) {
    t.destroy();
    throw e;
  }
}
