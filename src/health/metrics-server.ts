// `metrics.listen`: the latest health document as Prometheus metrics (metrics.ts) over
// HTTP, GET /metrics. A scrape reads the document the gateway made last (every 2 s) and
// renders it a family at a time, so the packet path, on the same event loop, waits for a
// piece (2-3 ms for 500 peers here) and never for the whole page.
//
// An address that cannot be had (in use, not this machine's) does not stop the gateway:
// forwarding matters more than its numbers. The `metrics` check says why, the gateway is
// degraded, and listening is tried again at each refresh of the checks.
//
// metrics.webConfig (web-config.ts) adds TLS, client certificates, basic auth, response
// headers and a rate limit, read again at each refresh: a renewed certificate is served from
// the next connection on. A web configuration that cannot be used is never served without:
// at start nothing is served, later the last good one stays, and the check says why.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream';
import { setImmediate } from 'node:timers/promises';
import { createGzip } from 'node:zlib';
import type { ListenAddress } from '../config/formats.js';
import { connectTarget } from '../util/http-proxy.js';
import type { Logger } from '../util/log.js';
import { BasicAuth, RateLimit, type PasswordCheck } from './basic-auth.js';
import type { CheckResult, HealthDocument } from './document.js';
import { metricChunks } from './metrics.js';
import { filesStamp, loadWebConfig, protectionWords, webConfigFiles, WebConfigError, type LoadedWebConfig, type WebConfig, type WebTls } from './web-config.js';

/** Prometheus's text format (what every scraper takes). */
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
/** A scraper or two and someone's curl; more at once is not a scrape. */
const MAX_CONNECTIONS = 16;

/** Resolves when `w` can take more, or is gone (a scraper that hung up never drains it). */
function drainedOrClosed(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done);
      w.off('close', done);
      resolve();
    };
    w.on('drain', done);
    w.on('close', done);
  });
}

/** Where the metrics of `listen` are scraped (https:// when `web` has TLS). */
export function metricsUrl(listen: ListenAddress, web: WebConfig | null = null): string {
  return `${web?.tls ? 'https' : 'http'}://${connectTarget(listen.host, listen.port)}/metrics`;
}

/** The URL of `listen` with how `web` protects it: "https://…/metrics (TLS, basic auth (1 user))". */
export function protectedUrl(listen: ListenAddress, web: WebConfig | null = null): string {
  const words = protectionWords(web);
  return `${metricsUrl(listen, web)}${words ? ` (${words})` : ''}`;
}

/** The `metrics` check's detail while `listen` is served with `web` (`vxedge check` knows the running gateway's port by it). */
export function servingDetail(listen: ListenAddress, web: WebConfig | null = null): string {
  return `serving Prometheus metrics at ${protectedUrl(listen, web)}`;
}

/** The SAN values of a peer certificate's `subjectaltname` ("DNS:a, IP Address:192.0.2.1" -> a, 192.0.2.1). */
export function sanValues(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  return subjectaltname.split(', ').map((s) => s.slice(s.indexOf(':') + 1).replace(/^"(.*)"$/, '$1'));
}

/** Why a TLS client that finished its handshake may not scrape, or null when it may (what Go's handshake would refuse besides RequireAndVerifyClientCert, which Node's does). */
export function clientRefusal(t: WebTls, socket: Pick<TLSSocket, 'getPeerCertificate' | 'authorized' | 'authorizationError'>): string | null {
  if (t.clientAuth === 'NoClientCert' || t.clientAuth === 'RequestClientCert') return null;
  const cert = socket.getPeerCertificate();
  const has = !!cert && Object.keys(cert).length > 0;
  if (!has) return t.clientAuth === 'VerifyClientCertIfGiven' ? null : 'no client certificate';
  if (t.clientAuth === 'VerifyClientCertIfGiven' && !socket.authorized) return `client certificate not verified (${String(socket.authorizationError)})`;
  if (t.allowedSans && !sanValues(cert.subjectaltname).some((v) => t.allowedSans!.includes(v))) {
    return `client certificate has none of the allowed SANs (it has ${sanValues(cert.subjectaltname).join(', ') || 'none'})`;
  }
  return null;
}

/** Why `listen` cannot be had, in words with the fix; `e` is what listen() failed with. */
export function listenFailure(e: Error, listen: ListenAddress): { detail: string; fix: string } {
  const at = connectTarget(listen.host, listen.port);
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'EADDRINUSE':
      return {
        detail: `cannot serve metrics on ${at}: the port is in use`,
        fix: `another program listens on TCP ${listen.port} (\`ss -ltnp 'sport = :${listen.port}'\` names it): stop it, or choose another port in metrics.listen`,
      };
    case 'EADDRNOTAVAIL':
      return {
        detail: `cannot serve metrics on ${at}: this machine has no address ${listen.host}`,
        fix: 'use an address of this machine in metrics.listen (`ip -br addr`), 0.0.0.0 for all of them, or 127.0.0.1',
      };
    case 'EACCES':
      return {
        detail: `cannot serve metrics on ${at}: port ${listen.port} needs privilege the gateway does not have`,
        fix: 'use a port of 1024 or above in metrics.listen (9474, say)',
      };
    default:
      return { detail: `cannot serve metrics on ${at}: ${e.message}`, fix: 'check metrics.listen' };
  }
}

/** Listens on `listen`, or rejects with listen()'s error. */
function listenOn(server: net.Server, listen: ListenAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (e: Error) => reject(e);
    server.once('error', failed);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

/**
 * Whether `listen` could be had now, for `vxedge check`: null when it could (nothing kept),
 * else listen()'s error.
 */
export async function tryListen(listen: ListenAddress): Promise<Error | null> {
  const s = net.createServer();
  try {
    await listenOn(s, listen);
    return null;
  } catch (e) {
    return e as Error;
  } finally {
    await new Promise((r) => s.close(r));
  }
}

export interface MetricsServerOptions {
  listen: ListenAddress;
  log: Logger;
  /** metrics.webConfig: TLS and basic auth; null: plain HTTP, open. */
  webConfig?: string | null;
  /** bcrypt, off the event loop (the addon's passwordCheck). */
  passwordCheck?: PasswordCheck;
  /** For the rate limit: milliseconds, monotonic. */
  now?: () => number;
}

export class MetricsServer {
  private doc: HealthDocument | null = null;
  private server: http.Server | null = null;
  private failure: { detail: string; fix: string } | null = null;
  private starting: Promise<void> | null = null;
  private closed = false;
  /** Scrapes served since start (the log says when the first one came). */
  private scrapes = 0;
  /** Pages being written: a stop waits for them to end (their connections are cut first). */
  private readonly writing = new Set<Promise<void>>();
  private readonly listen: ListenAddress;
  private readonly log: Logger;
  private readonly webFile: string | null;
  /** The web configuration in force (loaded last without an error). */
  private web: LoadedWebConfig | null = null;
  private readonly auth: BasicAuth;
  private limit: RateLimit | null = null;
  private readonly now: () => number;
  /** Refusals said in the log already (one line each, not one per attempt). */
  private readonly said = new Set<string>();

  constructor(o: MetricsServerOptions) {
    this.listen = o.listen;
    this.log = o.log;
    this.webFile = o.webConfig ?? null;
    this.now = o.now ?? (() => performance.now());
    this.auth = new BasicAuth(o.passwordCheck ?? (() => Promise.reject(new Error('no password check given'))));
  }

  /** The document the next scrape renders. */
  update(doc: HealthDocument): void {
    this.doc = doc;
  }

  /**
   * Listens, unless it does already; reads metrics.webConfig again and applies what changed.
   * A failure is kept for check() and said once. Never rejects.
   */
  start(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.starting ??= this.refresh().finally(() => (this.starting = null));
    return this.starting;
  }

  /** The `metrics` check: where the metrics are served, or why they are not. */
  check(): CheckResult {
    if (this.failure) return { name: 'metrics', ok: false, ...this.failure };
    const web = this.web?.config ?? null;
    const detail = this.server ? servingDetail(this.listen, web) : `about to serve Prometheus metrics at ${metricsUrl(this.listen, web)}`;
    return { name: 'metrics', ok: true, detail };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.starting;
    await this.stopServer();
  }

  private async stopServer(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
    await Promise.all(this.writing);
  }

  private fail(failure: { detail: string; fix: string }): void {
    if (failure.detail !== this.failure?.detail) this.log.warn(failure.detail, { fix: failure.fix });
    this.failure = failure;
  }

  private async refresh(): Promise<void> {
    const before = this.web;
    // Served, and none of the files changed (inode, size, mtime): nothing to read or build again.
    if (this.server && before && !this.failure && filesStamp(webConfigFiles(before.config)) === before.stamp) return;
    let next: LoadedWebConfig | null = null;
    if (this.webFile !== null) {
      try {
        next = loadWebConfig(this.webFile);
      } catch (e) {
        if (!(e instanceof WebConfigError)) throw e;
        // Never served without the protection asked for: before the first good file nothing is served.
        const kept = before ? '; the metrics are still served as the file was when last read without an error' : '; the metrics are not served until it is fixed';
        this.fail({ detail: e.message + kept, fix: e.fix });
        return;
      }
    }
    if (this.server && before && next && next.stamp === before.stamp) {
      this.failure = null; // the file is back as it was
      return;
    }
    if (this.server && before && next) {
      this.log.info('metrics.webConfig read again', { file: next.config.file, protection: protectionWords(next.config) });
      this.apply(next);
      const t0 = before.config.tls;
      const t1 = next.config.tls;
      if (t0 && t1 && t0.clientAuth === t1.clientAuth) {
        // Certificates, CAs, versions, suites: the next connection gets them; open ones keep theirs.
        (this.server as https.Server).setSecureContext(next.tlsOptions!);
        this.failure = null;
        return;
      }
      await this.stopServer(); // TLS on or off, or another client policy: a new server
    } else {
      this.apply(next);
    }
    if (!this.server) await this.tryStart();
  }

  private apply(next: LoadedWebConfig | null): void {
    const users0 = this.web?.config.users;
    this.web = next;
    const c = next?.config;
    if (JSON.stringify([...(users0 ?? [])]) !== JSON.stringify([...(c?.users ?? [])])) this.auth.clear();
    this.limit = c?.rateLimit ? new RateLimit(c.rateLimit.intervalMs, c.rateLimit.burst, this.now) : null;
  }

  private url(): string {
    return metricsUrl(this.listen, this.web?.config ?? null);
  }

  private async tryStart(): Promise<void> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      // A scrape never takes the gateway down: whatever fails is the scraper's 500 and a log line.
      const page = this.serve(req, res).catch((e: Error) => {
        this.log.warn('metrics scrape failed', { err: e.message });
        // Halfway through a page the scraper can only be told by a cut: it then counts the scrape failed.
        if (res.headersSent) {
          res.destroy();
          return;
        }
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('the metrics could not be made; see the gateway\'s log\n');
      }).finally(() => this.writing.delete(page));
      this.writing.add(page);
    };
    const tlsOptions = this.web?.tlsOptions ?? null;
    const server = tlsOptions ? https.createServer(tlsOptions, handler) : http.createServer(handler);
    if (tlsOptions) {
      server.on('secureConnection', (socket: TLSSocket) => this.admit(socket));
      server.on('tlsClientError', (e: Error, socket: net.Socket) => this.refused(`TLS handshake: ${e.message}`, socket.remoteAddress));
    }
    server.maxConnections = MAX_CONNECTIONS;
    try {
      await listenOn(server, this.listen);
    } catch (e) {
      this.fail(listenFailure(e as Error, this.listen));
      return;
    }
    if (this.closed) {
      server.close();
      return;
    }
    this.server = server;
    const protection = protectionWords(this.web?.config ?? null) || 'none';
    if (this.failure) this.log.info('metrics served again', { url: this.url(), protection });
    else this.log.info('serving metrics', { url: this.url(), protection });
    this.failure = null;
  }

  /** A TLS client past its handshake: cut when the client policy refuses it. */
  private admit(socket: TLSSocket): void {
    const t = this.web?.config.tls;
    const why = t ? clientRefusal(t, socket) : null;
    if (why === null) return;
    this.refused(why, socket.remoteAddress);
    socket.destroy();
  }

  /** Says a refusal once per reason (a scraper misconfigured tries every 15 s). */
  private refused(why: string, from: string | undefined): void {
    if (this.said.has(why)) return;
    if (this.said.size >= 32) this.said.clear();
    this.said.add(why);
    this.log.warn('metrics client refused (said once per reason)', { why, from });
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const web = this.web?.config ?? null;
    if (this.limit && !this.limit.allow()) {
      res.writeHead(429, { 'Content-Type': 'text/plain' }).end('too many requests (metrics.webConfig rate_limit)\n');
      return;
    }
    for (const [k, v] of Object.entries(web?.headers ?? {})) res.setHeader(k, v);
    if (web && web.users.size > 0 && !(await this.auth.allows(req.headers.authorization, web.users, () => req.socket.destroyed))) {
      this.refused(`basic auth: ${req.headers.authorization ? 'a wrong user or password' : 'no credentials'}`, req.socket.remoteAddress);
      res.writeHead(401, { 'Content-Type': 'text/plain', 'WWW-Authenticate': 'Basic realm="vxedge"' }).end('unauthorized: metrics.webConfig asks for basic auth\n');
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('GET /metrics\n');
      return;
    }
    if (path === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('vxedge: Prometheus metrics at /metrics\n');
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    if (!this.doc) {
      // Before the first round of checks: a few seconds after start.
      res.writeHead(503, { 'Content-Type': 'text/plain', 'Retry-After': '2' }).end('the gateway is starting: no numbers yet\n');
      return;
    }
    if (this.scrapes++ === 0) this.log.info('metrics scraped', { from: req.socket.remoteAddress });
    // Prometheus asks for gzip: 500 peers make 530 kB of text, 32 kB gzipped, which a site's uplink prefers.
    const gzip = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
    res.writeHead(200, { 'Content-Type': CONTENT_TYPE, Vary: 'Accept-Encoding', ...(gzip ? { 'Content-Encoding': 'gzip' } : {}) });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    const gz = gzip ? createGzip() : null;
    if (gz) pipeline(gz, res, () => undefined); // a scraper that goes away ends both
    const out: Writable = gz ?? res;
    // A family at a time, the event loop free between them: the packet path waits for one
    // family's lines (500 of them), not for the whole page.
    for (const chunk of metricChunks(this.doc)) {
      if (out.destroyed) return;
      if (chunk === '') continue;
      if (!out.write(chunk)) await drainedOrClosed(out);
      else await setImmediate();
    }
    out.end();
  }
}
