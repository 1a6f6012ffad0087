// The certificate a TLS server presents, read by a handshake of our own: for every member of a
// cluster whose client talks to one at a time (etcd). Nothing is sent after the handshake;
// the connection is closed as soon as the certificate is in, with a close_notify and a FIN:
// destroyed at once instead, it ended before the server had read our Finished (TLS 1.3), and
// etcd logged each such probe as a rejected connection ("EOF"). The server's certificate is read
// whatever it is (an expired one too: that is what the caller wants to know), so the
// handshake does not verify it; our client certificate is offered when there is one, since
// a server that requires one may end the handshake without it.
import { isIP } from 'node:net';
import tls from 'node:tls';
import type { Clock } from './clock.js';
import { connectTarget, tlsThrough, type HttpProxy } from './http-proxy.js';
import { peerCertValidity, type CertValidity } from './tls-failure.js';

export interface TlsProbeOptions {
  host: string;
  port: number;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** ALPN to offer (etcd serves gRPC over h2). */
  alpn?: string[];
  clock: Clock;
  timeoutMs: number;
  /** The HTTP CONNECT proxy the server is reached through (as the client's own connection is). */
  proxy?: HttpProxy | null;
}

/**
 * The server's certificate dates; null when no handshake completed within the timeout, or the
 * TLS files cannot be used (a key that is not the certificate's: the client's own error says so).
 * Never rejects.
 */
export function probePeerCertificate(o: TlsProbeOptions): Promise<CertValidity | null> {
  return new Promise((resolve) => {
    let done = false;
    let socket: tls.TLSSocket;
    try {
      const options: tls.ConnectionOptions = {
        host: o.host, port: o.port, ca: o.ca, cert: o.cert, key: o.key, ALPNProtocols: o.alpn,
        // SNI takes a host name, never an address (RFC 6066).
        servername: isIP(o.host) ? undefined : o.host,
        rejectUnauthorized: false,
      };
      socket = o.proxy ? tlsThrough(o.proxy, connectTarget(o.host, o.port), options) : tls.connect(options);
    } catch {
      return resolve(null); // the secure context refused the files
    }
    let timer = o.clock.after(o.timeoutMs, () => end(null));
    const end = (v: CertValidity | null) => {
      if (done) return;
      done = true;
      timer.cancel();
      resolve(v);
      if (v === null) return void socket.destroy();
      socket.end();
      timer = o.clock.after(o.timeoutMs, () => socket.destroy()); // a server that never closes its side
    };
    socket.once('secureConnect', () => end(peerCertValidity(socket)));
    socket.on('error', () => end(null)); // every one: a reset after the handshake too
    socket.once('close', () => {
      end(null);
      timer.cancel();
    });
    socket.resume(); // what the server sends after the handshake (session tickets) is read and dropped
  });
}
