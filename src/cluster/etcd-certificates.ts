// The certificates etcd's members present, for the gateway's `certificates` check: a
// self-managed etcd's certificates end (kubeadm's after a year), and every site following it
// loses its peers' updates and its lease with them. The adapter's connection reaches one member
// at a time, so each https:// endpoint is asked with a TLS handshake of our own
// (util/tls-probe.ts) when the source starts and every PERIOD_MS after; an endpoint that does
// not answer keeps what it presented last.
import { readFile } from 'node:fs/promises';
import type { Clock, Timer } from '../util/clock.js';
import type { CertValidity, SiteCertificate } from '../util/tls-failure.js';
import { proxyFor } from '../util/http-proxy.js';
import { probePeerCertificate, type TlsProbeOptions } from '../util/tls-probe.js';
import type { EtcdTlsFiles } from './etcd-kv.js';

/** A certificate's end is days or weeks ahead: four reads a day see it in time. */
const PERIOD_MS = 6 * 3_600_000;
const HANDSHAKE_TIMEOUT_MS = 5_000;

export interface EtcdCertificatesOptions {
  endpoints: readonly string[];
  tls?: EtcdTlsFiles;
  clock: Clock;
  /** The handshake (tests: a stand-in). */
  probe?: (o: TlsProbeOptions) => Promise<CertValidity | null>;
}

export class EtcdCertificates {
  private readonly seen = new Map<string, SiteCertificate>();
  private timer: Timer | null = null;
  private stopped = false;
  /** The first round's end (each handshake is bounded); resolved at once without an https:// endpoint. */
  private first: Promise<void> = Promise.resolve();

  constructor(private readonly o: EtcdCertificatesOptions) {}

  /** Reads them now and every PERIOD_MS; nothing to do without an https:// endpoint. */
  start(): void {
    if (this.timer || !this.o.endpoints.some((e) => e.startsWith('https://'))) return;
    const read = () => this.read().catch(() => undefined); // a bad endpoint URL: nothing to read
    this.first = read();
    this.timer = this.o.clock.every(PERIOD_MS, () => void read());
  }

  /** Resolves once the first round after start() has read what each endpoint presents. */
  firstRound(): Promise<void> {
    return this.first;
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
  }

  /** What each endpoint presented last, in the order of cluster.etcd.endpoints. */
  list(): SiteCertificate[] {
    return this.o.endpoints.flatMap((e) => this.seen.get(e) ?? []);
  }

  private async read(): Promise<void> {
    const file = async (f: string | null | undefined) => (f ? readFile(f).catch(() => undefined) : undefined);
    const [ca, cert, key] = await Promise.all([file(this.o.tls?.ca), file(this.o.tls?.cert), file(this.o.tls?.key)]);
    const probe = this.o.probe ?? probePeerCertificate;
    await Promise.all(this.o.endpoints.filter((e) => e.startsWith('https://')).map(async (endpoint) => {
      const u = new URL(endpoint);
      // Through the proxy the client's connection takes (grpc-h2.ts); a variable that cannot be used is the client's error to tell.
      let proxy;
      try {
        proxy = proxyFor(u.hostname);
      } catch {
        return;
      }
      // A URL without a port is 443, as http2 (grpc-h2.ts) and grpc-go connect to it.
      const v = await probe({
        host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 443), ca, cert, key, alpn: ['h2'],
        clock: this.o.clock, timeoutMs: HANDSHAKE_TIMEOUT_MS, proxy,
      });
      if (v && !this.stopped) this.seen.set(endpoint, { what: `etcd's certificate (${endpoint})`, validity: v, presented: true });
    }));
  }
}
