// The part of a gRPC client the etcd adapter needs, over Node's own http2: unary calls and
// bidirectional streams to one of several endpoints, with deadlines, metadata, keepalive
// pings and reconnection. The protocol is gRPC's "over HTTP2" (grpc/doc/PROTOCOL-HTTP2.md): a
// POST to /package.Service/Method with content-type application/grpc, each message framed as
// one byte (compressed or not; we never ask for compression) and a 4-byte big-endian length,
// the status in the trailers (grpc-status, grpc-message), or in the headers of a response that
// has no body ("Trailers-Only").
//
// Why not grpc-js: etcd-proto.ts says why the etcd3 client and its libraries went; grpc-js is
// the larger part of what a cluster-following gateway loaded beyond its static peers (1.9 MB
// of live heap, 3.5 MB of anonymous memory at load), and its channel machinery (resolvers,
// balancers, subchannel pools, channelz) serves clusters of services, not one etcd.
import http2 from 'node:http2';
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { Clock, Timer } from '../util/clock.js';
import { ConnectTunnel, connectTarget, proxyFor, tlsThrough, type HttpProxy } from '../util/http-proxy.js';

/** gRPC status codes (google.golang.org/grpc/codes) by number, for messages. */
const CODE_NAMES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED',
];
export const GrpcCode = {
  CANCELLED: 1, DEADLINE_EXCEEDED: 4, PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, UNAUTHENTICATED: 16,
} as const;

/** A call that ended with a gRPC status other than OK; `message` reads as grpc-js's: "14 UNAVAILABLE: details". */
export class GrpcStatusError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${code} ${CODE_NAMES[code] ?? 'UNKNOWN'}: ${details}`);
    this.name = 'GrpcStatusError';
  }
}

/** The connection to the endpoint could not be made (refused, unreachable, TLS): nothing was sent, another endpoint may be tried. */
export class GrpcConnectError extends Error {
  constructor(
    readonly endpoint: string,
    readonly reason: Error,
  ) {
    super(reason.message);
    this.name = 'GrpcConnectError';
  }
}

/** A message larger than this is refused (etcd's own default limit for a request is 1.5 MiB; answers of 500 leases are ~150 KB). */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * Unary calls that a connected endpoint leaves unanswered past their deadlines, with no call
 * answered between them, before calls go to the next one. One may be a slow answer to a large
 * read; two is an endpoint that is not serving (stopped, swapping, or waiting for a quorum it lost).
 */
export const STALLS_TO_LEAVE = 2;

export interface GrpcChannelOptions {
  /** Endpoints as http://host:port (h2c, prior knowledge) or https://host:port; calls go to one at a time. */
  endpoints: string[];
  /** TLS for https:// endpoints: CA bundle (else the system's), client certificate and key. */
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  clock: Clock;
  /** While a call is open, a ping this often; a ping not answered within `keepaliveTimeoutMs` ends the connection. */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  /**
   * Whether a status from a connected endpoint says it cannot serve now while another may
   * (etcd: a member cut off from its leader). With more than one endpoint, calls then go to
   * the next one at once, and those still open on this one end with UNAVAILABLE.
   */
  leaveOn?: (e: GrpcStatusError) => boolean;
  /** Told when calls leave a connected endpoint that cannot serve (leaveOn, STALLS_TO_LEAVE) for the next one. */
  left?: (from: string, to: string, why: string) => void;
  /** Where grpc_proxy, https_proxy, no_proxy… are read (util/http-proxy.ts); default process.env. */
  env?: Record<string, string | undefined>;
}

export interface StreamHandlers {
  onMessage(message: Buffer): void;
  /** The call is over: null with status OK, else why. Called once; nothing is called after it. */
  onEnd(err: Error | null): void;
}

export interface GrpcStream {
  write(message: Buffer): void;
  /** Half-closes: no more messages from us. */
  end(): void;
  /** Ends the call at once (RST_STREAM CANCEL); no handler is called afterwards. */
  cancel(): void;
}

/** gRPC's length-prefixed messages out of a stream of chunks. */
class Deframer {
  private held: Buffer = Buffer.alloc(0);

  constructor(private readonly each: (message: Buffer) => void) {}

  push(chunk: Buffer): void {
    let buf = this.held.length > 0 ? Buffer.concat([this.held, chunk]) : chunk;
    while (buf.length >= 5) {
      if (buf[0] !== 0) throw new GrpcStatusError(GrpcCode.INTERNAL, 'the server sent a compressed message, which was not asked for');
      const n = buf.readUInt32BE(1);
      if (n > MAX_MESSAGE_BYTES) throw new GrpcStatusError(GrpcCode.RESOURCE_EXHAUSTED, `a message of ${n} bytes is over the limit of ${MAX_MESSAGE_BYTES}`);
      if (buf.length < 5 + n) break;
      this.each(buf.subarray(5, 5 + n));
      buf = buf.subarray(5 + n);
    }
    this.held = buf.length > 0 ? Buffer.from(buf) : Buffer.alloc(0);
  }

  /** Bytes of a message that never ended. */
  get pending(): number {
    return this.held.length;
  }
}

/** The frame of one message. */
function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** grpc-message is percent-encoded. */
function statusMessage(v: unknown): string {
  const s = Array.isArray(v) ? String(v[0]) : v === undefined ? '' : String(v);
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export class GrpcChannel {
  private session: http2.ClientHttp2Session | null = null;
  private current = 0;
  /** The calls open, each with how to end it from here (its handler told `err`, then reset). */
  private readonly open = new Map<http2.ClientHttp2Stream, (err: Error) => void>();
  /** Every session not yet closed: the current one, and those going away that still finish calls. */
  private readonly sessions = new Set<http2.ClientHttp2Session>();
  /** Sessions whose connection came up: a call that fails on one may have reached the server. */
  private readonly everConnected = new WeakSet<http2.ClientHttp2Session>();
  private keepalive: Timer | null = null;
  /** Unary calls in a row on the current session that ran past their deadline (STALLS_TO_LEAVE). */
  private stalls = 0;
  private closed = false;
  private readonly keepaliveMs: number;
  private readonly keepaliveTimeoutMs: number;

  constructor(private readonly o: GrpcChannelOptions) {
    this.keepaliveMs = o.keepaliveMs ?? 30_000;
    this.keepaliveTimeoutMs = o.keepaliveTimeoutMs ?? 10_000;
  }

  /** The endpoint calls go to now. */
  get endpoint(): string {
    return this.o.endpoints[this.current];
  }

  /**
   * One request, one answer, within `timeoutMs`. When the connection to an endpoint cannot be
   * made (nothing was sent), the next endpoints are tried in turn within the same time.
   */
  async unary(path: string, request: Buffer, metadata: Record<string, string>, timeoutMs: number): Promise<Buffer> {
    const deadline = this.o.clock.monotonic() + timeoutMs;
    for (let tried = 1; ; tried++) {
      try {
        return await this.unaryOnce(path, request, metadata, Math.max(1, deadline - this.o.clock.monotonic()));
      } catch (e) {
        if (!(e instanceof GrpcConnectError) || tried >= this.o.endpoints.length || this.o.clock.monotonic() >= deadline) throw e;
      }
    }
  }

  private unaryOnce(path: string, request: Buffer, metadata: Record<string, string>, timeoutMs: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      let answer: Buffer | null = null;
      let extra = false;
      const s = this.stream(path, { ...metadata, 'grpc-timeout': `${Math.ceil(timeoutMs)}m` }, {
        onMessage: (m) => {
          if (answer === null) answer = Buffer.from(m);
          else extra = true;
        },
        onEnd: (err) => {
          timer.cancel();
          if (err) return reject(err);
          if (answer === null || extra) return reject(new GrpcStatusError(GrpcCode.INTERNAL, `${path} answered with ${answer === null ? 'no message' : 'more than one message'}`));
          resolve(answer);
        },
      });
      const session = this.session;
      const endpoint = this.endpoint;
      const timer = this.o.clock.after(timeoutMs, () => {
        s.cancel();
        // A connection still not up after a whole deadline (an endpoint whose packets are dropped,
        // or that never finishes the TLS handshake): the next call goes to the next endpoint,
        // not to TCP's own minutes of retrying.
        const connecting = session !== null && !this.everConnected.has(session);
        if (connecting) this.giveUp(session);
        else if (session !== null && session === this.session && ++this.stalls >= STALLS_TO_LEAVE) {
          this.leave(session, `${this.stalls} calls in a row unanswered within their deadlines`);
        }
        reject(new GrpcStatusError(GrpcCode.DEADLINE_EXCEEDED, connecting
          ? `no connection to ${endpoint} within ${Math.ceil(timeoutMs)} ms`
          : `no answer from ${endpoint} within ${Math.ceil(timeoutMs)} ms`));
      });
      s.write(request);
      s.end();
    });
  }

  /** Opens a call; messages are written with write(), the answers come to `h`. */
  stream(path: string, metadata: Record<string, string>, h: StreamHandlers): GrpcStream {
    let over = false;
    let session: http2.ClientHttp2Session | null = null; // the connection the call went on, for end()
    const end = (err: Error | null) => {
      if (over) return;
      over = true;
      if (session !== null) this.judge(session, err);
      h.onEnd(err);
    };
    /** A call that never started: its end is told after this returns, as every other end. */
    const endedAtOnce = (err: Error): GrpcStream => {
      queueMicrotask(() => end(err));
      return { write: () => undefined, end: () => undefined, cancel: () => (over = true) };
    };
    try {
      session = this.connect();
    } catch (e) {
      return endedAtOnce(e as Error);
    }
    const s = session;
    const endpoint = this.endpoint;
    // Before the connection was up nothing reached the server: another endpoint may be tried.
    const failed = (e: Error) => (this.everConnected.has(s) ? e : new GrpcConnectError(endpoint, e));
    let req: http2.ClientHttp2Stream;
    try {
      req = s.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        ...metadata,
      });
    } catch (e) {
      // A session that is closing, or out of stream ids.
      this.drop(s);
      return endedAtOnce(new GrpcStatusError(GrpcCode.UNAVAILABLE, (e as Error).message));
    }
    this.open.set(req, (err) => {
      end(err);
      if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
    });
    let status: number | null = null;
    let message = '';
    const takeStatus = (headers: http2.IncomingHttpHeaders) => {
      if (headers['grpc-status'] === undefined) return;
      status = Number(headers['grpc-status']);
      message = statusMessage(headers['grpc-message']);
    };
    const frames = new Deframer((m) => {
      if (!over) h.onMessage(m);
    });
    req.on('response', (headers) => {
      const code = Number(headers[':status']);
      if (code !== 200) {
        // Not gRPC's answer (a proxy, or not etcd's client port): HTTP's status says what.
        end(new GrpcStatusError(code === 404 ? GrpcCode.UNIMPLEMENTED : GrpcCode.UNAVAILABLE, `${endpoint} answered ${path} with HTTP ${code}, not gRPC`));
        req.close(http2.constants.NGHTTP2_CANCEL);
        return;
      }
      takeStatus(headers); // Trailers-Only
    });
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      try {
        frames.push(chunk);
      } catch (e) {
        end(e as Error);
        req.close(http2.constants.NGHTTP2_CANCEL);
      }
    });
    req.on('trailers', takeStatus);
    req.on('error', (e: Error & { code?: string; cause?: unknown }) => {
      // A call queued on a connection that failed is cancelled "caused by" the connection's error: that is the one to tell.
      end(failed(e.code === 'ERR_HTTP2_STREAM_CANCEL' && e.cause instanceof Error ? e.cause : e));
    });
    req.on('close', () => {
      this.open.delete(req);
      if (status === null) {
        const why = req.rstCode && req.rstCode !== http2.constants.NGHTTP2_NO_ERROR
          ? `Received RST_STREAM with code ${req.rstCode}`
          : 'the call ended without a status';
        end(failed(new GrpcStatusError(GrpcCode.UNAVAILABLE, why)));
      } else if (status !== 0) end(new GrpcStatusError(status, message));
      else if (frames.pending > 0) end(new GrpcStatusError(GrpcCode.INTERNAL, 'the call ended inside a message'));
      else end(null);
    });
    return {
      write: (m) => {
        if (!over && !req.closed) req.write(frame(m));
      },
      end: () => {
        if (!req.closed) req.end();
      },
      cancel: () => {
        over = true;
        if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
      },
    };
  }

  /** Ends every call and every connection, also those going away that still finish a call. */
  close(): void {
    this.closed = true;
    for (const req of this.open.keys()) if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
    for (const s of this.sessions) this.drop(s);
  }

  /** The session to the current endpoint, made if there is none (or the last one is going away). */
  private connect(): http2.ClientHttp2Session {
    if (this.closed) throw new GrpcStatusError(GrpcCode.CANCELLED, 'the channel is closed');
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const endpoint = this.endpoint;
    const secure = endpoint.startsWith('https:') ? { ca: this.o.tls.ca, cert: this.o.tls.cert, key: this.o.tls.key } : {};
    const u = new URL(endpoint);
    const proxy = proxyFor(u.hostname, this.o.env); // a variable that cannot be used throws: the call's error says which
    let via: ConnectTunnel | tls.TLSSocket | null = null;
    const s = http2.connect(endpoint, {
      ...secure, settings: { enablePush: false },
      ...(proxy ? { createConnection: () => (via = tunnel(proxy, u, secure)) } : {}),
    });
    this.session = s;
    this.sessions.add(s);
    s.on('connect', () => {
      // http2 wraps a stream that is not a socket of its own and starts at once (its
      // 'connect'), writing into the tunnel before the proxy answered: the connection is up
      // when the tunnel is. TLS over the tunnel is waited for by http2 itself (secureConnect).
      if (via instanceof ConnectTunnel && via.connecting) via.once('connect', () => this.connected(s));
      else this.connected(s);
    });
    s.on('error', () => {
      // The streams get their own error; a failed connection sends the next call elsewhere.
      if (!this.everConnected.has(s)) this.giveUp(s);
      else this.drop(s);
    });
    // A server going away (etcd stopping) finishes what it took; new calls get a new connection.
    s.on('goaway', () => {
      if (s === this.session) this.detach();
    });
    s.on('close', () => {
      this.sessions.delete(s);
      if (s === this.session) this.detach();
    });
    return s;
  }

  /** The connection of `s` is up: a call that fails on it now may have reached the server; pings while calls are open. */
  private connected(s: http2.ClientHttp2Session): void {
    this.everConnected.add(s);
    if (s !== this.session) return;
    this.keepalive?.cancel();
    this.keepalive = this.o.clock.every(this.keepaliveMs, () => this.ping(s));
  }

  /**
   * A ping while a call is open on this connection (etcd answers pings on one without a call
   * with GOAWAY too_many_pings, and a call still finishing on a connection going away does not
   * count); no answer in time ends the connection.
   */
  private ping(s: http2.ClientHttp2Session): void {
    if (s !== this.session || s.destroyed || ![...this.open.keys()].some((req) => req.session === s)) return;
    const timeout = this.o.clock.after(this.keepaliveTimeoutMs, () => {
      s.destroy(new Error(`keepalive ping to ${this.endpoint} not answered within ${this.keepaliveTimeoutMs / 1000} s`));
    });
    const sent = s.ping((err) => {
      timeout.cancel();
      if (err && !s.destroyed) s.destroy(err);
    });
    if (!sent) timeout.cancel();
  }

  /** A connection that did not come up: ended, and the next endpoint is the one calls go to. */
  private giveUp(s: http2.ClientHttp2Session): void {
    if (s === this.session) this.nextEndpoint();
    this.drop(s);
  }

  /** How a call on `s` ended: an answer clears the stalls; a status that says the endpoint cannot serve leaves it. */
  private judge(s: http2.ClientHttp2Session, err: Error | null): void {
    if (s !== this.session || !this.everConnected.has(s)) return;
    if (err === null) this.stalls = 0;
    else if (err instanceof GrpcStatusError && this.o.leaveOn?.(err)) this.leave(s, err.details);
  }

  /**
   * The connected endpoint of `s` is not serving: calls go to the next endpoint, and those still
   * open on `s` (a watch) end with UNAVAILABLE naming both, so that they are made again there.
   * With one endpoint there is nowhere to go (a load balancer's address): it stays.
   */
  private leave(s: http2.ClientHttp2Session, why: string): void {
    if (s !== this.session || this.o.endpoints.length < 2) return;
    const from = this.endpoint;
    this.nextEndpoint();
    this.detach();
    const err = new GrpcStatusError(GrpcCode.UNAVAILABLE, `left ${from} for ${this.endpoint}: ${why}`);
    for (const [req, abort] of this.open) if (req.session === s) abort(err);
    s.close(); // no call left on it: a GOAWAY without an error, as a client that is done says
    this.o.left?.(from, this.endpoint, why);
  }

  private nextEndpoint(): void {
    this.current = (this.current + 1) % this.o.endpoints.length;
  }

  /** Forgets the session as the one calls go to (it may still finish its calls). */
  private detach(): void {
    this.keepalive?.cancel();
    this.keepalive = null;
    this.session = null;
    this.stalls = 0;
  }

  private drop(s: http2.ClientHttp2Session | null): void {
    if (!s) return;
    if (s === this.session) this.detach();
    if (!s.destroyed) s.destroy();
  }
}

/**
 * The connection to `u` through an HTTP CONNECT proxy, with TLS over it for https:// (what
 * http2.connect does itself without a proxy: ALPN h2, SNI for a name, the certificate checked
 * against the endpoint's host).
 */
function tunnel(proxy: HttpProxy, u: URL, secure: { ca?: Buffer; cert?: Buffer; key?: Buffer }): ConnectTunnel | tls.TLSSocket {
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const https = u.protocol === 'https:';
  const target = connectTarget(host, Number(u.port || (https ? 443 : 80)));
  if (!https) return new ConnectTunnel(proxy, target);
  return tlsThrough(proxy, target, { host, servername: isIP(host) ? undefined : host, ALPNProtocols: ['h2'], ...secure });
}
