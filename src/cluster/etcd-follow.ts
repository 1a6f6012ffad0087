// Following flannel's subnet leases in etcd the way flanneld does: one "sync", repeated after
// any failure:
//   1. list `{prefix}/subnets/`;
//   2. read `{prefix}/config` and check it against the site (VXLAN backend, a Network that holds
//      overlay.subnet, the same VNI and port); a mismatch is an error that says what to change,
//      and the source stays not-connected and retries; otherwise the list goes into the lease
//      table (a view is emitted);
//   3. watch the prefix from the list's revision + 1 and apply each change to the table; and
//      watch the config key from the same revision: a change syncs again, so it is checked at
//      once (flanneld reads it only at its start, so the nodes take a change as they restart).
// A compacted start revision lists again at once (the events in between are gone). Any other
// failure (endpoints down, connection lost, auth) sets connected=false with an error naming the
// endpoints, keeps the table (the last view, so forwarding goes on), and syncs again after a
// backoff with jitter. Every sync relists instead of resuming the watch: a restarted or wiped
// etcd may have a new history, and a watch on a revision it has not reached yet would silently
// wait.
//
// The lease table is shared with registration (etcd-register.ts), which also records the
// answers of its own writes there; etcdView() turns the table into the ClusterView.
import type { PeerConfig } from '../config/types.js';
import type { Timer } from '../util/clock.js';
import { formatDuration } from '../util/duration.js';
import type { ClusterView, SkippedNode } from './types.js';
import { checkNetConfig, leaseToPeer, type LeaseContext, type SkipCode } from './flannel-lease.js';
import { keepLastGood } from './last-good.js';
import { EtcdKvError, type EtcdKv, type KvEntry, type WatchEvent, type WatchHandle } from './etcd-kv.js';
import { ConfigMismatch, OpError, type EtcdConnection } from './etcd-connection.js';

/**
 * What etcd holds under {prefix}/subnets/, key -> entry, and the revision each key was last
 * seen at, so that an older event never undoes a newer one.
 */
export class LeaseTable {
  private leases = new Map<string, KvEntry>();
  private seenAt = new Map<string, bigint>();

  /** `ownKey`: our lease's key, whose deletions are remembered (see apply()). */
  constructor(private readonly ownKey: string) {}

  get size(): number {
    return this.leases.size;
  }

  get(key: string): KvEntry | undefined {
    return this.leases.get(key);
  }

  keys(): string[] {
    return [...this.leases.keys()];
  }

  /** Replaces everything with a fresh list. */
  reset(entries: KvEntry[]): void {
    this.leases = new Map();
    this.seenAt = new Map();
    for (const e of entries) {
      this.leases.set(e.key, e);
      this.seenAt.set(e.key, e.modRevision);
    }
  }

  /**
   * Records key = entry (null: deleted) as of revision `at`, unless something newer is known;
   * true when the table changed. The watch delivers in revision order; only our own key is
   * also written from our transactions' answers, which may overtake the watch, so only its
   * deletions are remembered.
   */
  apply(key: string, entry: KvEntry | null, at: bigint): boolean {
    const seen = this.seenAt.get(key);
    if (seen !== undefined && at <= seen) return false;
    if (entry) {
      this.seenAt.set(key, at);
      this.leases.set(key, entry);
      return true;
    }
    if (key === this.ownKey) this.seenAt.set(key, at);
    else this.seenAt.delete(key);
    return this.leases.delete(key);
  }
}

/** Leases flanneld's watch or VXLAN backend cannot use either, and keeps what it knew instead (cluster/last-good.ts). */
const KEPT_CODES: ReadonlySet<SkipCode> = new Set(['malformed', 'backend', 'public-ip', 'mac']);

/**
 * The view of the table: every valid lease but ours is a peer, the rest is skipped with a
 * reason. `isOurs` tells our own lease from one that merely claims our subnet. `last`: the
 * peers of the view before, whose last good lease a key keeps when it turns into one flannel
 * cannot use either.
 */
export function etcdView(leases: LeaseTable, subnetsPrefix: string, ctx: LeaseContext, isOurs: (e: KvEntry) => boolean, last?: ReadonlyMap<string, PeerConfig>): ClusterView {
  const peers: PeerConfig[] = [];
  const skipped: SkippedNode[] = [];
  const keepable = new Set<SkippedNode>();
  const names = new Set<string>();
  for (const key of leases.keys().sort()) {
    const e = leases.get(key)!;
    const v = leaseToPeer(key.slice(subnetsPrefix.length), e.value, ctx);
    if (v.kind === 'peer') {
      if (names.has(v.peer.name)) {
        skipped.push({ name: `${v.peer.name} (${key})`, why: `another lease holds the same IPv4 subnet ${v.peer.subnet.text}: delete the stale key` });
        continue;
      }
      names.add(v.peer.name);
      peers.push(v.peer);
    } else if (v.code === 'own' && isOurs(e)) {
      continue; // our own lease: neither a peer nor worth a line in health
    } else {
      const s = { name: v.name, why: v.why };
      skipped.push(s);
      if (KEPT_CODES.has(v.code)) keepable.add(s);
    }
  }
  return { nodes: leases.size, ...keepLastGood(peers, skipped, keepable, last) };
}

export interface FollowerOptions {
  conn: EtcdConnection;
  leases: LeaseTable;
  /** `{prefix}/config` and `{prefix}/subnets/`. */
  configKey: string;
  subnetsPrefix: string;
  /** Our lease's key: a change to it may need registration to act. */
  ownKey: string;
  /** What the config must fit. */
  site: LeaseContext;
  endpoints: string[];
  /** The table was listed afresh: emit a view now (a listener may stop the source). */
  listed(): void;
  /** The watch changed the table (`ownKey`: our key among the changes). */
  changed(ownKey: boolean): void;
  /** Following runs (listed, watch set up): registration may act. */
  following(): void;
}

export class EtcdFollower {
  connected = false;
  /** Wall ms of the last list or watch event. */
  lastSync: number | null = null;
  /** A list succeeded in the current sync and the config fits: we may register. */
  synced = false;
  /** What is wrong with following, for status().error (with the retry). */
  syncError: string | null = null;
  /** The same without the retry, to log each problem once. */
  private syncProblem: string | null = null;

  /** Bumped by every sync and by stop(): callbacks of an older one are ignored. */
  private gen = 0;
  /** The watches of the current sync: the leases, and the config. */
  private readonly watches: WatchHandle[] = [];
  private syncTimer: Timer | null = null;
  private syncFailures = 0;

  constructor(private readonly o: FollowerOptions) {}

  /** Starts a sync now. */
  run(): void {
    this.sync().catch((e: unknown) => this.o.conn.log.error('internal error in the etcd sync', { err: (e as Error).stack }));
  }

  stop(): void {
    this.gen++;
    this.syncTimer?.cancel();
    this.syncTimer = null;
    this.endWatches();
  }

  /** Waiting out the backoff after a failed sync: sync now, the backoff started afresh. True when it will. */
  retryNow(): boolean {
    if (this.syncTimer === null || this.syncFailures === 0) return false;
    this.syncFailures = 0;
    this.scheduleSync(0);
    return true;
  }

  private scheduleSync(ms: number): void {
    this.syncTimer?.cancel();
    this.syncTimer = this.o.conn.clock.after(ms, () => {
      this.syncTimer = null;
      this.run();
    });
  }

  private async sync(): Promise<void> {
    const { conn, configKey, subnetsPrefix: prefix } = this.o;
    if (conn.stopped) return;
    const gen = ++this.gen;
    this.endWatches();
    this.synced = false;
    try {
      const kv = await conn.client();
      // The leases first, then the config: the config is watched from the list's revision, so a
      // change after the list is seen by the watch, and one before it by this read.
      const listed = await conn.call(kv.range(prefix), `list ${prefix}`);
      if (gen !== this.gen) return;
      const cfg = await conn.call(kv.get(configKey), `read ${configKey}`);
      if (gen !== this.gen) return;
      if (!cfg) {
        throw new ConfigMismatch(`etcd has no flannel config at ${configKey}: is cluster.etcd.prefix flanneld's --etcd-prefix? ` +
          'flannel needs it too, e.g. etcdctl put ' + `${configKey} '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`);
      }
      const { network, ownSubnet: subnet, vni, port } = this.o.site;
      const check = checkNetConfig(cfg.value, { network, subnet, vni, port }, configKey);
      if (!check.ok) throw new ConfigMismatch(check.error);
      for (const w of check.warnings) conn.warnOnce(w);

      this.o.leases.reset(listed.entries.filter((e) => e.key.startsWith(prefix)));
      if (this.syncError !== null) conn.log.info('etcd sync restored', { endpoints: this.o.endpoints, leases: this.o.leases.size });
      this.markSynced();
      this.synced = true;
      this.o.listed();
      if (gen !== this.gen) return; // a listener stopped us
      this.watches.push(this.watchFrom(gen, kv, prefix, listed.revision + 1n, (events) => this.applyEvents(events)));
      // flanneld reads the config only when it starts, so a change (another Backend.Port, VNI or
      // Network) reaches the nodes as they restart; checked again at once, a mismatch is in the
      // health with its fix, rather than unseen until some failure made us read it again. One key:
      // it needs no more access than reading it.
      const changed = (e: WatchEvent) => e.key === configKey && e.modRevision > cfg.modRevision && !(e.type === 'put' && e.value === cfg.value);
      this.watches.push(this.watchFrom(gen, kv, configKey, listed.revision + 1n, (events) => {
        if (!events.some(changed)) return;
        conn.log.info(`${configKey} changed; checking it again`);
        this.run();
      }, true));
      this.o.following();
    } catch (e) {
      if (gen === this.gen && !conn.stopped) this.failSync(e);
    }
  }

  /** One watch of this sync (`gen`); its end (compaction, failure, no confirmation) ends the other too, and syncs again. */
  private watchFrom(gen: number, kv: EtcdKv, key: string, from: bigint, onEvents: (events: WatchEvent[]) => void, exact = false): WatchHandle {
    const { conn } = this.o;
    const over = () => {
      if (gen !== this.gen) return false;
      this.gen++; // nothing more from this sync's watches (nor their confirmation timers)
      this.endWatches();
      return true;
    };
    // etcd confirms a watch at once; one that is not confirmed in time counts as a failure.
    let confirm: Timer | null = conn.clock.after(conn.callTimeoutMs, () => {
      confirm = null;
      if (over()) this.failSync(new OpError(`watch ${key}`, new EtcdKvError('timeout', `not confirmed within ${formatDuration(conn.callTimeoutMs)}`)));
    });
    const confirmed = () => {
      confirm?.cancel();
      confirm = null;
    };
    return kv.watch(key, from, {
      onStarted: () => {
        confirmed();
        if (gen === this.gen) this.syncFailures = 0;
      },
      onEvents: (events) => {
        if (gen === this.gen) onEvents(events);
      },
      onCompacted: (rev) => {
        confirmed();
        if (!over()) return;
        conn.log.warn('the etcd watch fell behind compaction; listing again', { compactRevision: String(rev) });
        this.run();
      },
      onError: (err) => {
        confirmed();
        if (over()) this.failSync(new OpError(`watch ${key}`, err));
      },
    }, { exact });
  }

  private endWatches(): void {
    for (const w of this.watches.splice(0)) w.cancel();
  }

  private failSync(e: unknown): void {
    this.connected = false;
    this.synced = false;
    this.o.conn.refreshIfChanged(); // the operator fixed a certificate or password file: use it
    const delay = this.o.conn.backoff(this.syncFailures++);
    const problem = this.o.conn.describe(e);
    const text = `${problem}; retrying in ${formatDuration(delay)}`;
    if (problem !== this.syncProblem) this.o.conn.log.warn(text); // once per problem, not per retry
    this.syncProblem = problem;
    this.syncError = text;
    this.scheduleSync(delay);
  }

  private markSynced(): void {
    this.connected = true;
    this.syncError = this.syncProblem = null;
    this.lastSync = this.o.conn.clock.now();
  }

  private applyEvents(events: WatchEvent[]): void {
    const { leases, ownKey, subnetsPrefix: prefix } = this.o;
    let changed = false;
    let touchesOwn = false;
    for (const ev of events) {
      if (!ev.key.startsWith(prefix)) continue;
      const entry: KvEntry | null = ev.type === 'put' ? { key: ev.key, value: ev.value, modRevision: ev.modRevision, lease: ev.lease } : null;
      if (leases.apply(ev.key, entry, ev.modRevision)) {
        changed = true;
        if (ev.key === ownKey) touchesOwn = true;
      }
    }
    this.markSynced();
    if (changed) this.o.changed(touchesOwn);
  }
}
