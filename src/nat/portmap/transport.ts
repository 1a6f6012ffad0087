// The I/O edges of the port mapper, as small interfaces with a Node implementation each,
// so that tests put an in-memory router behind them (as wireguard-go's conn/bindtest does):
//
//   UdpFactory  a UDP socket bound to our LAN address, optionally connected to one server
//               (PCP and NAT-PMP to the router's port 5351) or able to send multicast (SSDP);
//   HttpFn      one HTTP/1.1 request with a body-size bound and an AbortSignal (UPnP
//               descriptions and SOAP calls); the caller owns the deadline, on its Clock.
//
// exchange() is the request/response loop PCP and NAT-PMP share: send, wait, resend on a
// schedule, take the first datagram the protocol's parser accepts. The socket is connected,
// so the kernel drops datagrams from anyone but the router's port 5351 and reports an ICMP
// port unreachable as ECONNREFUSED: a router that does not speak the protocol at all is
// known at once instead of after the whole schedule.
import dgram from 'node:dgram';
import http from 'node:http';
import type { Clock, Timer } from '../../util/clock.js';

export interface UdpPeer {
  address: string;
  port: number;
}

export interface UdpHandlers {
  message(msg: Buffer, from: UdpPeer): void;
  /** An error after the socket was set up (ECONNREFUSED from an ICMP unreachable, a failed send). */
  error(err: Error): void;
}

export interface UdpSocketOptions {
  /** Bind to this address (port 0: the kernel picks one). */
  localAddress: string;
  /** Connect to this peer: only its datagrams arrive, and ICMP errors become ECONNREFUSED. */
  connect?: UdpPeer;
  /** Send multicast out of localAddress's interface (TTL 2, as SSDP asks). */
  multicast?: boolean;
}

export interface UdpEndpoint {
  /** Best effort: never throws (a failure arrives through handlers.error, or not at all). */
  send(buf: Buffer, to: UdpPeer): void;
  /** Idempotent. */
  close(): void;
}

/** Opens a socket; rejects when it cannot be bound (e.g. localAddress is not ours). */
export type UdpFactory = (opts: UdpSocketOptions, handlers: UdpHandlers) => Promise<UdpEndpoint>;

export interface HttpRequest {
  host: string;
  port: number;
  path: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  /** Bind the connection to this address (our LAN address). */
  localAddress?: string;
  /** Responses with a larger body are an error (the connection is dropped at the limit). */
  maxBytes: number;
}

export interface HttpResponse {
  status: number;
  body: string;
}

/** One request; rejects on a connection error, a body over maxBytes, or when signal aborts. */
export type HttpFn = (req: HttpRequest, signal: AbortSignal) => Promise<HttpResponse>;

// --------------------------------------------------------------------- Node implementations

export const nodeUdp: UdpFactory = (opts, handlers) =>
  new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: 'udp4' });
    let open = false;
    let closed = false;
    const endpoint: UdpEndpoint = {
      send(buf, to) {
        if (closed) return;
        const done = (err: Error | null) => {
          if (err && !closed) handlers.error(err);
        };
        try {
          if (opts.connect) s.send(buf, done);
          else s.send(buf, to.port, to.address, done);
        } catch (e) {
          done(e as Error);
        }
      },
      close() {
        if (closed) return;
        closed = true;
        try {
          s.close();
        } catch {
          /* never opened */
        }
      },
    };
    s.on('error', (err) => {
      if (open) {
        if (!closed) handlers.error(err);
      } else {
        endpoint.close();
        reject(err);
      }
    });
    s.on('message', (msg, rinfo) => {
      if (!closed) handlers.message(msg, { address: rinfo.address, port: rinfo.port });
    });
    s.bind({ address: opts.localAddress, port: 0 }, () => {
      try {
        if (opts.multicast) {
          try {
            s.setMulticastInterface(opts.localAddress);
          } catch {
            // Not translated by qemu-user (IP_MULTICAST_IF: ENOPROTOOPT): the route to the
            // group picks the interface then, the underlay on a one-NIC box.
          }
          s.setMulticastTTL(2);
        }
      } catch (e) {
        endpoint.close();
        return reject(e as Error);
      }
      if (!opts.connect) {
        open = true;
        return resolve(endpoint);
      }
      s.connect(opts.connect.port, opts.connect.address, () => {
        open = true;
        resolve(endpoint);
      });
    });
  });

/** Header block bound for router HTTP answers (Node's default is 16 KiB). */
const MAX_HEADER_BYTES = 8192;

export const nodeHttp: HttpFn = (req, signal) =>
  new Promise((resolve, reject) => {
    if (signal.aborted) return reject(abortError(signal));
    let settled = false;
    const finish = (err: Error | null, res?: HttpResponse) => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(res!);
    };
    const headers: Record<string, string> = { ...req.headers, Connection: 'close' };
    if (req.body !== undefined) headers['Content-Length'] = String(Buffer.byteLength(req.body));
    const r = http.request({
      host: req.host,
      port: req.port,
      path: req.path,
      method: req.method,
      headers,
      localAddress: req.localAddress,
      agent: false,
      maxHeaderSize: MAX_HEADER_BYTES,
    });
    const onAbort = () => {
      r.destroy();
      finish(abortError(signal));
    };
    signal.addEventListener('abort', onAbort);
    r.on('error', (e) => finish(e));
    r.on('response', (res) => {
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > req.maxBytes) {
        r.destroy();
        return finish(new Error(`answered with a ${declared}-byte body (more than the ${req.maxBytes} allowed)`));
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        size += b.length;
        if (size > req.maxBytes) {
          r.destroy();
          finish(new Error(`sent more than ${req.maxBytes} bytes`));
        } else chunks.push(b);
      });
      res.on('error', (e) => finish(e));
      res.on('end', () => finish(null, { status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    r.end(req.body);
  });

function abortError(signal: AbortSignal): Error {
  const why = signal.reason;
  return why instanceof Error ? why : new Error('aborted');
}

// --------------------------------------------------------------------- request/response over UDP

export interface ExchangeOptions<T> {
  udp: UdpFactory;
  clock: Clock;
  localAddress: string;
  server: UdpPeer;
  request: Buffer;
  /** How long to wait after each send (ms); its length is the number of sends. */
  waitsMs: readonly number[];
  /**
   * Reads a datagram from the server: a value ends the exchange; null means "not an
   * answer to this request" (malformed, another opcode, a stale nonce), counted and ignored.
   */
  accept: (msg: Buffer) => T | null;
  signal?: AbortSignal;
}

export type ExchangeResult<T> =
  | { kind: 'answer'; value: T; sends: number; ignored: number }
  | { kind: 'timeout'; sends: number; waitedMs: number; ignored: number }
  | { kind: 'unreachable'; sends: number; ignored: number }
  | { kind: 'error'; message: string; ignored: number }
  | { kind: 'aborted'; ignored: number };

/** Sends `request` on the schedule until `accept` takes an answer. Never throws, never rejects. */
export function exchange<T>(o: ExchangeOptions<T>): Promise<ExchangeResult<T>> {
  return new Promise((resolve) => {
    let sock: UdpEndpoint | null = null;
    let timer: Timer | null = null;
    let done = false;
    let sends = 0;
    let ignored = 0;
    const waited = o.waitsMs.reduce((a, b) => a + b, 0);

    const finish = (r: ExchangeResult<T>) => {
      if (done) return;
      done = true;
      timer?.cancel();
      sock?.close();
      o.signal?.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const onAbort = () => finish({ kind: 'aborted', ignored });
    if (o.signal?.aborted) return finish({ kind: 'aborted', ignored });
    o.signal?.addEventListener('abort', onAbort);

    const transmit = () => {
      if (done || !sock) return;
      if (sends >= o.waitsMs.length) return finish({ kind: 'timeout', sends, waitedMs: waited, ignored });
      sock.send(o.request, o.server);
      timer = o.clock.after(o.waitsMs[sends++], transmit);
    };

    o.udp(
      { localAddress: o.localAddress, connect: o.server },
      {
        message(msg, from) {
          if (done) return;
          if (from.address !== o.server.address || from.port !== o.server.port) {
            ignored++;
            return;
          }
          let value: T | null = null;
          try {
            value = o.accept(msg);
          } catch {
            value = null; // a parser bug must not take the process down; count it as a bad answer
          }
          if (value === null) ignored++;
          else finish({ kind: 'answer', value, sends, ignored });
        },
        error(err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
            finish(code === 'ECONNREFUSED' ? { kind: 'unreachable', sends, ignored } : { kind: 'error', message: `${code}: no route to ${o.server.address}`, ignored });
          }
          // Other errors (a transient ENOBUFS on send) leave the schedule to retry.
        },
      },
    ).then(
      (s) => {
        if (done) return s.close();
        sock = s;
        transmit();
      },
      (e: unknown) => {
        const err = e as NodeJS.ErrnoException;
        finish({ kind: 'error', message: `cannot open a UDP socket on ${o.localAddress}: ${err.code ?? err.message}`, ignored });
      },
    );
  });
}

/** "no answer to 3 requests in 1.75 s" and the like, for operators. */
export function describeSilence(r: ExchangeResult<unknown>, server: UdpPeer): string {
  switch (r.kind) {
    case 'timeout':
      return `no answer from ${server.address}:${server.port} to ${r.sends} requests in ${r.waitedMs / 1000} s`;
    case 'unreachable':
      return `${server.address}:${server.port} is closed (ICMP port unreachable)`;
    case 'error':
      return r.message;
    case 'aborted':
      return 'stopped';
    case 'answer':
      return 'answered';
  }
}
