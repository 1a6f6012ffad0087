// The few etcd v3 operations the etcd cluster source needs, as a narrow interface: the source
// (etcd.ts and its parts, etcd-*.ts) is written against it and tested with an in-memory fake,
// and the production adapter over the `etcd3` client (etcd3-kv.ts) is loaded only when
// `cluster.source` is etcd, so that a gateway without etcd never loads gRPC.
//
// Revisions and lease ids are etcd int64s: bigint here (lease ids routinely exceed 2^53).
import type { Clock } from '../util/clock.js';

/** A lease id as etcdctl shows it (hex, no 0x): `etcdctl lease timetolive 694d7d8e6a8f1c00`. */
export function leaseHex(id: bigint): string {
  return id.toString(16);
}

export interface KvEntry {
  key: string;
  value: string;
  /** Revision of the key's last change. */
  modRevision: bigint;
  /** The etcd lease the key is attached to; 0n: none (a permanent key). */
  lease: bigint;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  key: string;
  /** '' for a delete. */
  value: string;
  /** For a put the key's new mod revision, for a delete the revision of the delete. */
  modRevision: bigint;
  lease: bigint;
}

export interface WatchHandler {
  /** etcd confirmed the watch. */
  onStarted(): void;
  /** Changes (in revision order), or none for a progress notification; `revision` is the store's. */
  onEvents(events: WatchEvent[], revision: bigint): void;
  /** The start revision was compacted away: list again and watch from the new revision. The watch is over. */
  onCompacted(compactRevision: bigint): void;
  /** The watch failed (connection lost, canceled by etcd). The watch is over. */
  onError(err: EtcdKvError): void;
}

export interface WatchHandle {
  /** Stops the watch; no handler is called afterwards. Idempotent. */
  cancel(): void;
}

export type PutIfResult =
  | { ok: true; revision: bigint }
  | { ok: false; current: KvEntry | null; revision: bigint };

export interface EtcdKv {
  get(key: string): Promise<KvEntry | null>;
  /** Every key starting with `prefix`, and the store revision the answer reflects. */
  range(prefix: string): Promise<{ entries: KvEntry[]; revision: bigint }>;
  /**
   * Watches keys starting with `prefix` (with `exact`, that one key only: it needs read access to
   * no more than the key) from `fromRevision` (inclusive). Handlers are called asynchronously.
   */
  watch(prefix: string, fromRevision: bigint, handler: WatchHandler, opts?: { exact?: boolean }): WatchHandle;
  grant(ttlS: number): Promise<{ id: bigint; ttlS: number }>;
  /** Renews a lease once; resolves to its remaining TTL in seconds, 0 when the lease no longer exists. */
  keepAliveOnce(id: bigint): Promise<number>;
  revoke(id: bigint): Promise<void>;
  /** The keys attached to a lease; null when there is no such lease (expired or revoked). */
  leaseKeys(id: bigint): Promise<string[] | null>;
  /**
   * One transaction: put key=value on `lease` (0n: none) if the key's mod revision is
   * `expectModRevision` (0n: the key must be absent); otherwise nothing changes and the key's
   * current entry comes back. Two writers cannot both win.
   */
  putIf(key: string, value: string, lease: bigint, expectModRevision: bigint): Promise<PutIfResult>;
  /**
   * One transaction: delete key if its mod revision is `expectModRevision`; otherwise nothing
   * changes and the key's current entry (null: absent) comes back.
   */
  deleteIf(key: string, expectModRevision: bigint): Promise<PutIfResult>;
  /**
   * Whether this client may write `key`, asked without writing it: false when etcd's
   * authorization refuses (the 'permission' error), true otherwise; other errors are thrown.
   */
  mayPut(key: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * What went wrong, sorted so the source can say what to do:
 *  unavailable      no endpoint answered (down, unreachable, connection lost)
 *  timeout          no answer in time
 *  auth             user/password refused, or authentication required
 *  permission       the user lacks a role for the key
 *  tls              certificate or TLS handshake trouble
 *  lease-not-found  the lease named in a put does not exist (expired, revoked, etcd wiped)
 *  nospace          etcd's NOSPACE alarm: no write until an admin frees space and disarms it
 *  busy             etcd has not applied what it committed (too many requests): load
 *  setup            a local problem before talking to etcd (a file cannot be read)
 *  other            anything else etcd said
 */
export type EtcdErrorKind = 'unavailable' | 'timeout' | 'auth' | 'permission' | 'tls' | 'lease-not-found' | 'nospace' | 'busy' | 'setup' | 'other';

export class EtcdKvError extends Error {
  constructor(
    readonly kind: EtcdErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'EtcdKvError';
  }
}

export interface EtcdTlsFiles {
  /** CA bundle that signed etcd's certificate; null: the system's CAs. */
  ca: string | null;
  /** Client certificate and key (etcd --client-cert-auth); both or neither. */
  cert: string | null;
  key: string | null;
}

export interface EtcdAuth {
  username: string;
  /** The password is the file's content without a trailing newline. */
  passwordFile: string;
}

export interface EtcdConnectOptions {
  /** http:// or https:// URLs. */
  endpoints: string[];
  tls?: EtcdTlsFiles;
  auth?: EtcdAuth;
  /** Deadlines are computed from this clock's wall time. */
  clock: Clock;
  /** Deadline of each unary call and keepalive. */
  callTimeoutMs: number;
  /** Told when calls leave a member that cannot serve (no leader, calls unanswered) for the next endpoint. */
  memberLeft?: (from: string, to: string, why: string) => void;
}

export type EtcdConnect = (o: EtcdConnectOptions) => Promise<EtcdKv>;

/** The end of the key range that holds exactly the keys starting with `prefix` (etcd's prefix range). */
export function prefixRangeEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]); // all 0xff (or empty): to the end of the key space
}
