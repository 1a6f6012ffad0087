// `metrics.listen`: the latest health document as Prometheus metrics (metrics.ts) over
// HTTP, GET /metrics. A scrape reads the document the gateway made last (every 2 s) and
// renders it a family at a time, so the packet path, on the same event loop, waits for a
// piece (2-3 ms for 500 peers here) and never for the whole page.
//
// An address that cannot be had (in use, not this machine's) does not stop the gateway:
// forwarding matters more than its numbers. The `metrics` check says why, the gateway is
// degraded, and listening is tried again at each refresh of the checks.
import http from 'node:http';
import net from 'node:net';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream';
import { setImmediate } from 'node:timers/promises';
import { createGzip } from 'node:zlib';
import type { ListenAddress } from '../config/formats.js';
import { connectTarget } from '../util/http-proxy.js';
import type { Logger } from '../util/log.js';
import type { CheckResult, HealthDocument } from './document.js';
import { metricChunks } from './metrics.js';

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

/** Where the metrics of `listen` are scraped. */
export function metricsUrl(listen: ListenAddress): string {
  return `http://${connectTarget(listen.host, listen.port)}/metrics`;
}

/** The `metrics` check's detail while `listen` is served (`vxedge check` knows the running gateway's port by it). */
export function servingDetail(listen: ListenAddress): string {
  return `serving Prometheus metrics at ${metricsUrl(listen)}`;
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

  constructor(
    private readonly listen: ListenAddress,
    private readonly log: Logger,
  ) {}

  /** The document the next scrape renders. */
  update(doc: HealthDocument): void {
    this.doc = doc;
  }

  /** Listens, unless it does already; a failure is kept for check() and said once. Never rejects. */
  start(): Promise<void> {
    if (this.server || this.closed) return Promise.resolve();
    this.starting ??= this.tryStart().finally(() => (this.starting = null));
    return this.starting;
  }

  /** The `metrics` check: where the metrics are served, or why they are not. */
  check(): CheckResult {
    if (this.failure) return { name: 'metrics', ok: false, ...this.failure };
    const detail = this.server ? servingDetail(this.listen) : `about to serve Prometheus metrics at ${this.url()}`;
    return { name: 'metrics', ok: true, detail };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.starting;
    const s = this.server;
    this.server = null;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
    await Promise.all(this.writing);
  }

  private url(): string {
    return metricsUrl(this.listen);
  }

  private async tryStart(): Promise<void> {
    const server = http.createServer((req, res) => {
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
    });
    server.maxConnections = MAX_CONNECTIONS;
    try {
      await listenOn(server, this.listen);
    } catch (e) {
      const failure = listenFailure(e as Error, this.listen);
      if (failure.detail !== this.failure?.detail) this.log.warn(failure.detail, { fix: failure.fix });
      this.failure = failure;
      return;
    }
    if (this.closed) {
      server.close();
      return;
    }
    this.server = server;
    if (this.failure) this.log.info('metrics served again', { url: this.url() });
    else this.log.info('serving metrics', { url: this.url() });
    this.failure = null;
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
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
