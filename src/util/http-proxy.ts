// The HTTP CONNECT proxy a connection to etcd goes through, taken from the environment as
// gRPC's clients take it: flanneld's (grpc-go) and the etcd3 library vxedge used before its
// own client (grpc-js) both honour it, so a site whose only way out for TCP is a proxy kept
// working through them. The rules are grpc-js's (its http_proxy.ts): the first of
// `grpc_proxy`, `https_proxy`, `http_proxy` that is set, an http:// URL (user and password
// in it become Basic proxy credentials); `no_grpc_proxy`, else `no_proxy`, a comma-separated
// list of host suffixes, addresses and IPv4 CIDRs reached directly. As grpc-go's, a loopback
// host and `no_proxy=*` are never proxied.
//
// ConnectTunnel is the connection through it: a Duplex handed to http2.connect (or to
// tls.connect for https://) before the proxy has answered. It says `connecting` until then,
// which http2 waits out (its session starts at 'connect'), and holds what is written
// meanwhile: the endpoint's connection keeps its synchronous start (grpc-h2.ts).
import net from 'node:net';
import { Duplex } from 'node:stream';

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

type Env = Record<string, string | undefined>;

/** The proxy for a connection to `host`, or null for a direct one. Throws ProxyConfigError for a value that cannot be used. */
export function proxyFor(host: string, env: Env = process.env): HttpProxy | null {
  const name = ['grpc_proxy', 'https_proxy', 'http_proxy'].find((n) => env[n]);
  if (!name) return null;
  const bare = host.replace(/^\[|\]$/g, '');
  if (isLoopback(bare) || bypassed(bare, env)) return null;
  const value = env[name]!;
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new ProxyConfigError(`${name}=${value} is not a URL: set it to http://HOST:PORT of an HTTP proxy, or unset it for a direct connection`);
  }
  if (u.protocol !== 'http:') {
    throw new ProxyConfigError(`${name}=${redacted(u)}: only an http:// proxy (HTTP CONNECT) is supported, as by gRPC's clients; set it to http://HOST:PORT, or unset it`);
  }
  const user = decodeURIComponent(u.username);
  const authorization = user ? `Basic ${Buffer.from(`${user}:${decodeURIComponent(u.password)}`).toString('base64')}` : undefined;
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80), ...(authorization ? { authorization } : {}), from: `${name}=${redacted(u)}` };
}

function redacted(u: URL): string {
  return u.password ? `${u.protocol}//${u.username}:***@${u.host}${u.pathname === '/' ? '' : u.pathname}` : u.href.replace(/\/$/, '');
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (net.isIPv4(host) && host.startsWith('127.'));
}

/** Whether no_grpc_proxy (else no_proxy) names `host`: a suffix of it, the address itself, or an IPv4 CIDR holding it. */
function bypassed(host: string, env: Env): boolean {
  const list = (env.no_grpc_proxy || env.no_proxy || '').split(',').map((s) => s.trim()).filter(Boolean);
  return list.some((entry) => {
    if (entry === '*') return true;
    const cidr = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(entry);
    if (cidr) return net.isIPv4(host) && inCidr(host, cidr[1], Number(cidr[2]));
    return host.endsWith(entry);
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
        const hint = code !== '407' && code !== '401' ? ''
          : proxy.authorization ? ': the proxy refused the user and password in the variable' : ': the proxy wants credentials, http://USER:PASSWORD@HOST:PORT in the variable';
        this.destroy(this.failure(`"${status.slice(0, 200)}"${hint}`));
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
    s.on('error', (e) => this.destroy(this.connecting ? new Error(`cannot reach the proxy ${proxy.host}:${proxy.port} (${proxy.from}): ${e.message}`) : e));
    s.on('close', () => {
      if (this.connecting) this.destroy(this.failure('the proxy closed the connection before it answered'));
      else if (!this.destroyed) this.destroy();
    });
  }

  private failure(what: string): Error {
    return new Error(`the proxy ${this.proxy.host}:${this.proxy.port} (${this.proxy.from}) answered CONNECT ${this.target} with ${what}`);
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
