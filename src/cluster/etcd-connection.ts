// The etcd source's connection, shared by its two jobs, following (etcd-follow.ts) and
// registration (etcd-register.ts): the client opened once and kept, every call bounded by a
// timeout on our clock and labelled with what it was for, the delays between retries, and the
// one place that turns a failure into an operator's sentence (what is wrong, what to do).
//
// The adapter (etcd-grpc-kv.ts, with its gRPC client and protobuf codec) is imported on the
// first connect only, so a gateway that follows Kubernetes or static peers never loads it. Once
// stop() is called no new client is kept and the open one is closed; the jobs read `stopped` to
// drop what their pending calls return.
import { readFileSync } from 'node:fs';
import { fileStamp } from '../util/file-stamp.js';
import { certValidity, explainTls, opensslReason, type CertValidity, type TlsWords } from '../util/tls-failure.js';
import type { Clock } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { formatDuration } from '../util/duration.js';
import { EtcdKvError, type EtcdAuth, type EtcdConnect, type EtcdKv, type EtcdTlsFiles } from './etcd-kv.js';
import { configKey } from './flannel-lease.js';

/** Loads the adapter only when an etcd source connects. */
const defaultConnect: EtcdConnect = async (o) => (await import('./etcd-grpc-kv.js')).connectEtcdGrpc(o);

const ETCD_TLS_WORDS: TlsWords = {
  peer: 'etcd', ca: 'cluster.etcd.ca', cert: 'cluster.etcd.cert', key: 'cluster.etcd.key', host: 'cluster.etcd.endpoints',
  files: "check cluster.etcd.ca (the CA that signed etcd's certificate), cluster.etcd.cert and cluster.etcd.key, and that the endpoints use https://",
};

/** The advice after a member that cannot serve, when it is the only one the source knows. */
export const LIST_EVERY_MEMBER = 'list every member in cluster.etcd.endpoints';

/** An error with the operation it happened in, for messages. */
export class OpError extends Error {
  constructor(
    readonly what: string,
    readonly reason: unknown,
  ) {
    super(`${what}: ${reason instanceof Error ? reason.message : String(reason)}`);
  }
}

/** The config in etcd does not fit the site: not a connection problem, but we stay not-connected. */
export class ConfigMismatch extends Error {}

export interface EtcdConnectionOptions {
  endpoints: string[];
  tls?: EtcdTlsFiles;
  auth?: EtcdAuth;
  /** flannel's --etcd-prefix, the subnets below it we read, and the one key we write (for permission messages). */
  prefix: string;
  subnetsPrefix: string;
  ownKey: string;
  /** Whether we write our lease (for permission messages). */
  register: boolean;
  clock: Clock;
  log: Logger;
  connect?: EtcdConnect;
  callTimeoutMs: number;
  retry: { initialMs: number; maxMs: number };
  random: () => number;
}

export class EtcdConnection {
  readonly clock: Clock;
  readonly log: Logger;
  readonly callTimeoutMs: number;
  /** cluster.etcd.username; null: none (a client certificate, or no authentication). */
  readonly username: string | null;
  /** The open client, once connected; null before and after stop(). */
  kv: EtcdKv | null = null;
  stopped = false;

  private connecting: Promise<EtcdKv> | null = null;
  /** The TLS and password files as they were when the open client was made. */
  private filesStamp = '';
  private readonly warned = new Set<string>();

  constructor(private readonly o: EtcdConnectionOptions) {
    this.clock = o.clock;
    this.log = o.log;
    this.callTimeoutMs = o.callTimeoutMs;
    this.username = o.auth?.username ?? null;
  }

  /** The client, connecting first if there is none. */
  async client(): Promise<EtcdKv> {
    if (this.kv) return this.kv;
    if (!this.connecting) this.filesStamp = this.stampFiles();
    this.connecting ??= (this.o.connect ?? defaultConnect)({
      endpoints: this.o.endpoints,
      tls: this.o.tls,
      auth: this.o.auth,
      clock: this.clock,
      callTimeoutMs: Math.min(5_000, this.callTimeoutMs),
      // Said each time: the calls' own errors name the member they failed on, not where they go next.
      memberLeft: (from, to, why) => this.log.warn('etcd: left a member that cannot serve; calls go to the next', { from, to, why }),
    });
    try {
      const kv = await this.connecting;
      if (this.stopped) throw new EtcdKvError('other', 'stopped');
      this.kv = kv;
      return kv;
    } finally {
      this.connecting = null;
    }
  }

  /**
   * After a failure: when cluster.etcd.ca, cert, key or passwordFile changed since the client
   * was made (the operator fixed what the error named, or a certificate was rotated), closes it,
   * so that the next call connects anew and reads them. The client keeps what it read at first.
   */
  refreshIfChanged(): boolean {
    if (!this.kv || this.stopped || this.stampFiles() === this.filesStamp) return false;
    const kv = this.kv;
    this.kv = null;
    void kv.close().catch(() => undefined);
    this.log.info('the etcd TLS or password files changed; connecting again with them', { endpoints: this.o.endpoints });
    return true;
  }

  private stampFiles(): string {
    const files = [this.o.tls?.ca, this.o.tls?.cert, this.o.tls?.key, this.o.auth?.passwordFile];
    return files.map((f) => (f ? (fileStamp(f) ?? 'unreadable') : '-')).join('|');
  }

  /** Marks the connection stopped and closes the client (also one still connecting). */
  async stop(): Promise<void> {
    this.stopped = true;
    const kv = this.kv ?? (await this.connecting?.catch(() => null)) ?? null;
    this.kv = null;
    this.connecting = null;
    if (kv) await kv.close().catch(() => undefined);
  }

  /** A call to etcd, bounded by callTimeoutMs on our clock and labelled for messages. */
  call<T>(p: Promise<T>, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.clock.after(this.callTimeoutMs, () =>
        reject(new OpError(what, new EtcdKvError('timeout', `no answer within ${formatDuration(this.callTimeoutMs)}`))));
      p.then(
        (v) => {
          timer.cancel();
          resolve(v);
        },
        (e: unknown) => {
          timer.cancel();
          reject(new OpError(what, e));
        },
      );
    });
  }

  /** The wait before retry number `failures` (from 0): between half and all of min(maxMs, initialMs·2ⁿ). */
  backoff(failures: number): number {
    const base = Math.min(this.o.retry.maxMs, this.o.retry.initialMs * 2 ** Math.min(failures, 30));
    return Math.round(base * (0.5 + 0.5 * this.o.random()));
  }

  /** Logs a warning the first time it is seen, not on every retry. */
  warnOnce(msg: string): void {
    if (this.warned.has(msg)) return;
    this.warned.add(msg);
    this.log.warn(msg);
  }

  /** cluster.etcd.cert's dates, for a TLS failure's words; null when none is set or it cannot be read. */
  private clientCert(): CertValidity | null {
    const file = this.o.tls?.cert;
    try {
      return file ? certValidity(readFileSync(file)) : null;
    } catch {
      return null; // the connection's own error names an unreadable file
    }
  }

  /** An operator's sentence for a failure: what is wrong, and what to do. */
  describe(e: unknown): string {
    if (e instanceof ConfigMismatch) return e.message;
    const what = e instanceof OpError ? e.what : 'etcd';
    const cause = e instanceof OpError ? e.reason : e;
    const msg = cause instanceof Error ? cause.message : String(cause);
    const endpoints = this.o.endpoints.join(', ');
    const user = this.username;
    if (!(cause instanceof EtcdKvError)) return `${what}: ${msg}`;
    // With several endpoints the adapter moves on to the next member by itself (grpc-h2.ts leave()).
    const next = this.o.endpoints.length > 1 ? 'the next member in cluster.etcd.endpoints is asked' : LIST_EVERY_MEMBER;
    switch (cause.kind) {
      case 'unavailable':
      case 'timeout':
        // A member cut off from its cluster (or a cluster that lost its quorum): it answers, but
        // cannot serve what the others see.
        if (/\bno leader\b/.test(msg)) {
          return `etcd at ${endpoints} has no leader (${what}: ${msg}): the member is cut off from the rest of its cluster, ` +
            `or the cluster lost its quorum; ${next}; the last known peers stay in use`;
        }
        // A deadline passed, and not one of connecting (grpc-h2's "no connection to …"): the
        // member may have been reached. One cut off from its cluster that has not noticed yet
        // (no leader for an election timeout) holds a linearizable read unanswered.
        if (cause.kind === 'timeout' && !/\bno connection to\b/.test(msg)) {
          return `etcd at ${endpoints} did not answer in time (${what}: ${msg}): it is unreachable, overloaded, or cut off from the rest ` +
            `of its cluster; ${next}; the last known peers stay in use`;
        }
        return `cannot reach etcd at ${endpoints} (${what}: ${msg}); the last known peers stay in use`;
      case 'auth':
        return user
          ? `etcd at ${endpoints} refused user ${JSON.stringify(user)} (${msg}): check cluster.etcd.username and the password in cluster.etcd.passwordFile`
          : `etcd at ${endpoints} requires authentication (${msg}): set cluster.etcd.username and cluster.etcd.passwordFile, or a client certificate (cluster.etcd.cert, cluster.etcd.key)`;
      case 'permission':
        return `etcd denied ${what} to ${user ? `user ${JSON.stringify(user)}` : 'this client'} (${msg}): grant it read access to ` +
          `${configKey(this.o.prefix)} and ${this.o.subnetsPrefix}${this.o.register ? ` and write access to ${this.o.ownKey}` : ''} ` +
          '(vxedge rbac -c FILE prints the etcdctl commands)';
      case 'tls': {
        const tls = explainTls(msg, ETCD_TLS_WORDS, { nowMs: this.clock.now(), synchronised: this.clock.synchronised?.() ?? null, clientCert: this.clientCert() });
        return `TLS to etcd at ${endpoints} failed (${opensslReason(msg) ?? msg}): ${tls ? `${tls.why}; ${tls.fix}` : ETCD_TLS_WORDS.files}`;
      }
      case 'nospace':
        // Reads and lease renewals still work: peers are followed, a lease we hold is kept.
        return `etcd at ${endpoints} is out of space (${what}: ${msg}): its NOSPACE alarm refuses every write, the site's lease included, ` +
          "until the cluster's admin frees space and disarms it (etcdctl compact to the current revision, etcdctl defrag, " +
          'etcdctl alarm disarm; or a larger --quota-backend-bytes); peers are still followed';
      case 'busy':
        return `etcd at ${endpoints} is overloaded (${what}: ${msg}: it has not applied what it committed)`;
      case 'setup':
        return msg;
      default:
        return `etcd at ${endpoints}: ${what}: ${msg}`;
    }
  }
}
