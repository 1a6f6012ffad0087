// An in-memory etcd behind the EtcdKv interface (src/cluster/etcd-kv.ts), with etcd's
// semantics where the etcd source depends on them: one store revision bumped by every
// change; mod revisions; leases that expire on the test's ManualClock and delete their keys;
// watches that replay history from a start revision, report a compacted start revision, and
// deliver later changes in order; transactions that compare a mod revision (or absence).
// Calls answer asynchronously, like the network would.
//
// Faults for tests: down (every call fails 'unavailable', open watches break), hang (calls
// never answer), hangWatch (watches are never confirmed), failNext (the next call of a method fails with a given error), beforeWatch /
// beforePutIf hooks (to slip a change in between two steps of the source), wipe() (etcd comes
// back empty with a new history), readOnly (key prefixes this client may read but not write).
// Other nodes' writes go through put/del/grant/revoke directly.
import type { Clock } from '../../src/util/clock.js';
import {
  EtcdKvError,
  type EtcdErrorKind,
  type EtcdKv,
  type KvEntry,
  type PutIfResult,
  type WatchEvent,
  type WatchHandle,
  type WatchHandler,
} from '../../src/cluster/etcd-kv.js';

interface Stored {
  value: string;
  modRevision: bigint;
  lease: bigint;
}

interface Watcher {
  prefix: string;
  /** That one key only (EtcdKv.watch's `exact`). */
  exact: boolean;
  handler: WatchHandler;
  active: boolean;
}

const watches = (w: Watcher, key: string) => (w.exact ? key === w.prefix : key.startsWith(w.prefix));

type Method = 'get' | 'range' | 'watch' | 'grant' | 'keepAliveOnce' | 'revoke' | 'leaseKeys' | 'putIf' | 'deleteIf' | 'mayPut';

export class FakeEtcd implements EtcdKv {
  revision = 1n;
  compactRevision = 0n;
  readonly store = new Map<string, Stored>();
  readonly leases = new Map<bigint, { ttlS: number; expiresAt: number }>();
  private history: { revision: bigint; events: WatchEvent[] }[] = [];
  private watchers = new Set<Watcher>();
  private nextLease = 0x694d7d8e6a8f1c00n; // lease ids as etcd makes them: beyond 2^53
  /** Every call, by method. */
  readonly calls: Record<Method, number> = { get: 0, range: 0, watch: 0, grant: 0, keepAliveOnce: 0, revoke: 0, leaseKeys: 0, putIf: 0, deleteIf: 0, mayPut: 0 };
  /** Every putIf's arguments. */
  readonly puts: { key: string; value: string; lease: bigint; expect: bigint; ok: boolean }[] = [];
  down = false;
  /** Calls never answer. */
  hang = false;
  /** Watches are never confirmed (nor fail). */
  hangWatch = false;
  closed = false;
  private failures = new Map<Method, EtcdKvError>();
  beforeWatch: (() => void) | null = null;
  beforePutIf: (() => void) | null = null;
  /** Keys starting with one of these may be read but not written (a read-only role). */
  readonly readOnly: string[] = [];

  constructor(private readonly clock: Clock) {
    clock.every(100, () => this.expireLeases());
  }

  // ------------------------------------------------------------------ direct access (other nodes, the operator)

  /** A write by someone else (another flannel node, etcdctl). */
  put(key: string, value: string, lease = 0n): bigint {
    if (lease !== 0n && !this.leases.has(lease)) throw new Error(`fake etcd: lease ${lease} not found`);
    this.revision++;
    this.store.set(key, { value, modRevision: this.revision, lease });
    this.commit([{ type: 'put', key, value, modRevision: this.revision, lease }]);
    return this.revision;
  }

  del(key: string): boolean {
    if (!this.store.has(key)) return false;
    this.revision++;
    this.store.delete(key);
    this.commit([{ type: 'delete', key, value: '', modRevision: this.revision, lease: 0n }]);
    return true;
  }

  grantLease(ttlS: number): bigint {
    const id = this.nextLease++;
    this.leases.set(id, { ttlS, expiresAt: this.clock.monotonic() + ttlS * 1000 });
    return id;
  }

  /** Revokes a lease and deletes its keys (in one revision, as etcd does). */
  revokeLease(id: bigint): void {
    this.leases.delete(id);
    const gone = [...this.store].filter(([, s]) => s.lease === id).map(([k]) => k);
    if (gone.length === 0) return;
    this.revision++;
    for (const k of gone) this.store.delete(k);
    this.commit(gone.map((key) => ({ type: 'delete' as const, key, value: '', modRevision: this.revision, lease: 0n })));
  }

  compact(revision = this.revision): void {
    this.compactRevision = revision;
    this.history = this.history.filter((h) => h.revision > revision);
  }

  /** etcd lost its data: empty store, no leases, a new history; open watches break. */
  wipe(): void {
    this.store.clear();
    this.leases.clear();
    this.history = [];
    this.revision = 1n;
    this.compactRevision = 0n;
    this.breakWatches('etcd restarted');
  }

  setDown(down: boolean): void {
    this.down = down;
    if (down) this.breakWatches('connection refused');
  }

  failNext(method: Method, kind: EtcdErrorKind, message: string): void {
    this.failures.set(method, new EtcdKvError(kind, message));
  }

  get openWatches(): number {
    return [...this.watchers].filter((w) => w.active).length;
  }

  value(key: string): string | undefined {
    return this.store.get(key)?.value;
  }

  // ------------------------------------------------------------------ EtcdKv

  get(key: string): Promise<KvEntry | null> {
    return this.answer('get', () => {
      const s = this.store.get(key);
      return s ? { key, ...s } : null;
    });
  }

  range(prefix: string): Promise<{ entries: KvEntry[]; revision: bigint }> {
    return this.answer('range', () => ({
      entries: [...this.store].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, s]) => ({ key, ...s })),
      revision: this.revision,
    }));
  }

  watch(prefix: string, fromRevision: bigint, handler: WatchHandler, opts: { exact?: boolean } = {}): WatchHandle {
    this.calls.watch++;
    this.beforeWatch?.();
    const w: Watcher = { prefix, exact: opts.exact === true, handler, active: true };
    const fail = this.failures.get('watch');
    this.failures.delete('watch');
    queueMicrotask(() => {
      if (!w.active || this.hang || this.hangWatch) return;
      if (this.down || this.closed || fail) {
        w.active = false;
        return handler.onError(fail ?? new EtcdKvError('unavailable', 'connection refused'));
      }
      if (fromRevision <= this.compactRevision) {
        w.active = false;
        return handler.onCompacted(this.compactRevision);
      }
      this.watchers.add(w);
      handler.onStarted();
      for (const h of this.history) {
        if (h.revision < fromRevision) continue;
        const evs = h.events.filter((e) => watches(w, e.key));
        if (evs.length > 0 && w.active) handler.onEvents(evs, h.revision);
      }
    });
    return {
      cancel: () => {
        w.active = false;
        this.watchers.delete(w);
      },
    };
  }

  grant(ttlS: number): Promise<{ id: bigint; ttlS: number }> {
    return this.answer('grant', () => ({ id: this.grantLease(ttlS), ttlS }));
  }

  keepAliveOnce(id: bigint): Promise<number> {
    return this.answer('keepAliveOnce', () => {
      const l = this.leases.get(id);
      if (!l) return 0;
      l.expiresAt = this.clock.monotonic() + l.ttlS * 1000;
      return l.ttlS;
    });
  }

  revoke(id: bigint): Promise<void> {
    return this.answer('revoke', () => this.revokeLease(id));
  }

  leaseKeys(id: bigint): Promise<string[] | null> {
    return this.answer('leaseKeys', () => (this.leases.has(id) ? [...this.store].filter(([, s]) => s.lease === id).map(([k]) => k).sort() : null));
  }

  putIf(key: string, value: string, lease: bigint, expectModRevision: bigint): Promise<PutIfResult> {
    return this.answer('putIf', () => {
      this.beforePutIf?.();
      if (!this.mayWrite(key)) throw new EtcdKvError('permission', 'etcdserver: permission denied');
      if (lease !== 0n && !this.leases.has(lease)) throw new EtcdKvError('lease-not-found', 'etcdserver: requested lease not found');
      const cur = this.store.get(key);
      const ok = expectModRevision === 0n ? cur === undefined : cur?.modRevision === expectModRevision;
      this.puts.push({ key, value, lease, expect: expectModRevision, ok });
      if (!ok) return { ok: false as const, current: cur ? { key, ...cur } : null, revision: this.revision };
      this.put(key, value, lease);
      return { ok: true as const, revision: this.revision };
    });
  }

  deleteIf(key: string, expectModRevision: bigint): Promise<PutIfResult> {
    return this.answer('deleteIf', () => {
      if (!this.mayWrite(key)) throw new EtcdKvError('permission', 'etcdserver: permission denied');
      const cur = this.store.get(key);
      if (cur?.modRevision !== expectModRevision) return { ok: false as const, current: cur ? { key, ...cur } : null, revision: this.revision };
      this.del(key);
      return { ok: true as const, revision: this.revision };
    });
  }

  mayPut(key: string): Promise<boolean> {
    return this.answer('mayPut', () => this.mayWrite(key));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.breakWatches('client closed');
  }

  // ------------------------------------------------------------------ internals

  private mayWrite(key: string): boolean {
    return !this.readOnly.some((p) => key.startsWith(p));
  }

  private answer<T>(method: Method, f: () => T): Promise<T> {
    this.calls[method]++;
    if (this.hang) return new Promise<T>(() => undefined);
    const fail = this.failures.get(method);
    this.failures.delete(method);
    return new Promise<T>((resolve, reject) => {
      queueMicrotask(() => {
        if (this.closed) return reject(new EtcdKvError('other', 'client closed'));
        if (this.down) return reject(new EtcdKvError('unavailable', '14 UNAVAILABLE: connect ECONNREFUSED'));
        if (fail) return reject(fail);
        try {
          resolve(f());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  private commit(events: WatchEvent[]): void {
    this.history.push({ revision: this.revision, events });
    for (const w of this.watchers) {
      const evs = events.filter((e) => watches(w, e.key));
      if (evs.length === 0) continue;
      const rev = this.revision;
      queueMicrotask(() => {
        if (w.active) w.handler.onEvents(evs, rev);
      });
    }
  }

  private breakWatches(why: string): void {
    for (const w of this.watchers) {
      if (!w.active) continue;
      w.active = false;
      queueMicrotask(() => w.handler.onError(new EtcdKvError('unavailable', why)));
    }
    this.watchers.clear();
  }

  private expireLeases(): void {
    const now = this.clock.monotonic();
    for (const [id, l] of this.leases) if (l.expiresAt <= now) this.revokeLease(id);
  }
}
