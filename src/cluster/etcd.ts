// The etcd cluster source: follows flannel's etcd subnet manager (`--etcd-endpoints`,
// `--etcd-prefix`, v3 API) the way flanneld does, and keeps the site's own subnet lease there.
//
// Following (one "sync", repeated after any failure):
//   1. read `{prefix}/config` and check it against the site (VXLAN backend, a Network that holds
//      overlay.subnet, the same VNI and port); a mismatch is an error that says what to change,
//      and the source stays not-connected and retries;
//   2. list `{prefix}/subnets/` and emit a ClusterView;
//   3. watch the prefix from the list's revision + 1 and emit a view after each change, bursts
//      coalesced (coalesceMs).
// A compacted start revision lists again at once (the events in between are gone). Any other
// failure (endpoints down, connection lost, auth) sets connected=false with an error naming the
// endpoints, keeps the last view (forwarding goes on), and syncs again after a backoff with
// jitter. Every sync relists instead of resuming the watch: a restarted or wiped etcd may have
// a new history, and a watch on a revision it has not reached yet would silently wait.
//
// Registration (cluster.register): our lease `{prefix}/subnets/<our subnet>` carries exactly
// what flanneld writes (flannel-lease.ts encodeLease), on an etcd lease with a TTL (flannel:
// 24 h) renewed renewMarginS before expiry. It is written only when the key is absent or
// already ours, in one transaction (compare the mod revision we saw, or version 0, then put),
// so two writers cannot both win; when someone else holds it we never overwrite it, and
// status().error names the holder and what to do. If our key disappears (lease expired during
// an outage, etcd restarted without its data, someone deleted it) or our lease is gone, we
// write it again; setOwnLease() with a new public IP or MAC rewrites our value by the same
// rules. stop() stops watching and renewing but leaves the key: the TTL frees it if we never
// come back, and a restarting gateway finds it and keeps its subnet.
//
// "Ours" means: the value's VtepMAC is our VTEP MAC (or one we wrote earlier in this run), or
// the key is attached to our etcd lease. The MAC is the one identity that survives a restart
// (it is generated once and kept in stateDir, or set in vxlan.vtepMac), while the public IP
// behind a NAT may change at any time; a different gateway, or a flannel node, has another
// MAC. (Two gateways configured with the same vxlan.vtepMac and overlay.subnet would both
// count as the owner: that configuration is broken anyway, as their traffic would mix.)
import type { Cidr, PeerConfig } from '../config/types.js';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { formatDuration } from '../util/duration.js';
import type { ClusterSource, ClusterStatus, ClusterView, OwnLease, SkippedNode } from './types.js';
import {
  checkNetConfig,
  configKey,
  describeHolder,
  encodeLease,
  FLANNEL_DEFAULT_PORT,
  leaseToPeer,
  parseLeaseAttrs,
  subnetKey,
  subnetsPrefix,
  type LeaseContext,
} from './flannel-lease.js';
import {
  EtcdKvError,
  type EtcdAuth,
  type EtcdConnect,
  type EtcdKv,
  type EtcdTlsFiles,
  type KvEntry,
  type WatchEvent,
  type WatchHandle,
} from './etcd-kv.js';

export interface EtcdSourceOptions {
  /** cluster.etcd.endpoints */
  endpoints: string[];
  /** cluster.etcd.prefix (flannel's --etcd-prefix) */
  prefix: string;
  /** cluster.etcd.ca/cert/key; omit for plain http:// */
  tls?: EtcdTlsFiles;
  /** cluster.etcd.username/passwordFile */
  auth?: EtcdAuth;
  /** overlay.network */
  network: Cidr;
  /** vxlan.vni */
  vni: number;
  /** vxlan.port (default 8472): the port of every peer; flannel's Backend.Port must match it. */
  port?: number;
  /** overlay.subnet: our lease's key; never a peer. */
  subnet: Cidr;
  /** cluster.register */
  register: boolean;
  /** TTL of our etcd lease (default 86400, flannel's). */
  leaseTtlS?: number;
  /** Renew this long before expiry (default: flannel's 3600, at most half the TTL). */
  renewMarginS?: number;
  clock: Clock;
  log: Logger;
  /** Opens the client; default: the etcd3 adapter, imported on first use. */
  connect?: EtcdConnect;
  /** Retries after failures: attempt n waits between half and all of min(maxMs, initialMs·2ⁿ). */
  backoff?: { initialMs?: number; maxMs?: number; random?: () => number };
  /** Bound on every call to etcd (default 15 s). */
  callTimeoutMs?: number;
  /** A view is emitted this long after the first change of a burst (default 100 ms). */
  coalesceMs?: number;
}

export const ETCD_DEFAULTS = {
  leaseTtlS: 86_400,
  renewMarginS: 3_600,
  backoff: { initialMs: 1_000, maxMs: 30_000 },
  callTimeoutMs: 15_000,
  coalesceMs: 100,
} as const;

/** Loads the etcd3 adapter (and with it gRPC) only when an etcd source connects. */
const defaultConnect: EtcdConnect = async (o) => (await import('./etcd3-kv.js')).connectEtcd3(o);

/** An error with the operation it happened in, for messages. */
class OpError extends Error {
  constructor(
    readonly what: string,
    readonly reason: unknown,
  ) {
    super(`${what}: ${reason instanceof Error ? reason.message : String(reason)}`);
  }
}

/** The config in etcd does not fit the site: not a connection problem, but we stay not-connected. */
class ConfigMismatch extends Error {}

function hex(id: bigint): string {
  return id.toString(16);
}

export class EtcdSource implements ClusterSource {
  readonly kind = 'etcd' as const;

  private readonly o: EtcdSourceOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly ttlS: number;
  private readonly marginMs: number;
  private readonly retry: { initialMs: number; maxMs: number };
  private readonly port: number;
  private readonly callTimeoutMs: number;
  private readonly coalesceMs: number;
  private readonly random: () => number;
  private readonly configKey: string;
  private readonly prefix: string;
  private readonly ownKey: string;
  private readonly ctx: LeaseContext;

  private started = false;
  private stopped = false;
  private kv: EtcdKv | null = null;
  private connecting: Promise<EtcdKv> | null = null;
  /** Bumped by every sync and by stop(): callbacks of an older one are ignored. */
  private gen = 0;
  private watch: WatchHandle | null = null;
  private syncTimer: Timer | null = null;
  private syncFailures = 0;
  /** A list succeeded in the current sync and the config fits: we may register. */
  private synced = false;

  // What etcd holds under {prefix}/subnets/, key -> entry, and the revision each key was last
  // seen at (see apply()), so that an older event never undoes a newer one.
  private leases = new Map<string, KvEntry>();
  private seenAt = new Map<string, bigint>();

  private connected = false;
  private lastSync: number | null = null;
  /** What is wrong with following, for status().error (with the retry), and without the retry, for logging once. */
  private syncError: string | null = null;
  private syncProblem: string | null = null;
  private readonly warned = new Set<string>();

  private readonly listeners: ((v: ClusterView) => void)[] = [];
  private lastViewJson: string | null = null;
  private lastView: ClusterView | null = null;
  private emitTimer: Timer | null = null;

  // Registration.
  private own: OwnLease | null = null;
  /** The value we last aimed to write (kept while the public IP is unknown again). */
  private desired: string | null = null;
  private leaseId: bigint | null = null;
  /** Monotonic ms when our lease expires at the latest; 0 when unknown. */
  private leaseExpiresAt = 0;
  private readonly writtenMacs = new Set<string>();
  private registerError: string | null = null;
  private reconciling = false;
  private reconcileAgain = false;
  private regTimer: Timer | null = null;
  private regFailures = 0;
  private renewTimer: Timer | null = null;
  private renewFailures = 0;

  constructor(opts: EtcdSourceOptions) {
    this.o = opts;
    this.clock = opts.clock;
    this.log = opts.log.child({ part: 'cluster-etcd' });
    this.ttlS = opts.leaseTtlS ?? ETCD_DEFAULTS.leaseTtlS;
    if (!Number.isInteger(this.ttlS) || this.ttlS < 2) throw new Error(`leaseTtlS ${this.ttlS} is not a whole number of seconds >= 2`);
    this.marginMs = 1000 * Math.min(opts.renewMarginS ?? ETCD_DEFAULTS.renewMarginS, this.ttlS / 2);
    this.retry = {
      initialMs: opts.backoff?.initialMs ?? ETCD_DEFAULTS.backoff.initialMs,
      maxMs: opts.backoff?.maxMs ?? ETCD_DEFAULTS.backoff.maxMs,
    };
    this.random = opts.backoff?.random ?? Math.random;
    this.port = opts.port ?? FLANNEL_DEFAULT_PORT;
    this.callTimeoutMs = opts.callTimeoutMs ?? ETCD_DEFAULTS.callTimeoutMs;
    this.coalesceMs = opts.coalesceMs ?? ETCD_DEFAULTS.coalesceMs;
    if (opts.endpoints.length === 0) throw new Error('cluster.etcd.endpoints is empty: list the etcd URLs flanneld uses (--etcd-endpoints)');
    this.configKey = configKey(opts.prefix);
    this.prefix = subnetsPrefix(opts.prefix);
    this.ownKey = subnetKey(opts.prefix, opts.subnet);
    this.ctx = { network: opts.network, ownSubnet: opts.subnet, vni: opts.vni, port: this.port };
  }

  // ------------------------------------------------------------------ ClusterSource

  start(): void {
    if (this.started) return;
    this.started = true;
    this.runSync();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.gen++;
    for (const t of [this.syncTimer, this.emitTimer, this.regTimer, this.renewTimer]) t?.cancel();
    this.syncTimer = this.emitTimer = this.regTimer = this.renewTimer = null;
    this.watch?.cancel();
    this.watch = null;
    const kv = this.kv ?? (await this.connecting?.catch(() => null)) ?? null;
    this.kv = null;
    this.connecting = null;
    // Our key stays: its etcd lease TTL bounds it, and a restart finds it and keeps the subnet.
    if (kv) await kv.close().catch(() => undefined);
  }

  onView(cb: (view: ClusterView) => void): void {
    this.listeners.push(cb);
  }

  setOwnLease(lease: OwnLease): void {
    if (lease.subnet.text !== this.o.subnet.text || lease.vni !== this.o.vni) {
      this.registerError = `our lease changed to subnet ${lease.subnet.text} VNI ${lease.vni}, but this etcd source follows ` +
        `${this.o.subnet.text} VNI ${this.o.vni}: restart the gateway to move the site to another subnet or VNI`;
      this.log.error(this.registerError);
      return;
    }
    const o = this.own;
    if (o && o.publicIp === lease.publicIp && o.vtepMac === lease.vtepMac && o.name === lease.name) return; // nothing new
    this.own = { ...lease };
    this.registerError = null; // the next pass says again what is wrong, if anything
    if (lease.publicIp !== null) {
      try {
        this.desired = encodeLease({ publicIp: lease.publicIp, vni: lease.vni, vtepMac: lease.vtepMac });
      } catch (e) {
        this.registerError = `cannot announce our lease: ${(e as Error).message}`;
        this.log.error(this.registerError);
        return;
      }
    }
    this.reconcile();
  }

  status(): Omit<ClusterStatus, 'peers' | 'skipped'> {
    return {
      source: 'etcd',
      connected: this.connected,
      lastSync: this.lastSync === null ? null : new Date(this.lastSync).toISOString(),
      nodes: this.leases.size,
      registered: this.isRegistered(),
      error: this.syncError ?? this.registerError,
    };
  }

  /** The last view emitted (null before the first list). */
  view(): ClusterView | null {
    return this.lastView;
  }

  // ------------------------------------------------------------------ following

  private runSync(): void {
    this.sync().catch((e: unknown) => this.log.error('internal error in the etcd sync', { err: (e as Error).stack }));
  }

  private scheduleSync(ms: number): void {
    this.syncTimer?.cancel();
    this.syncTimer = this.clock.after(ms, () => {
      this.syncTimer = null;
      this.runSync();
    });
  }

  private async sync(): Promise<void> {
    if (this.stopped) return;
    const gen = ++this.gen;
    this.watch?.cancel();
    this.watch = null;
    this.synced = false;
    try {
      const kv = await this.client();
      const cfg = await this.call(kv.get(this.configKey), `read ${this.configKey}`);
      if (gen !== this.gen) return;
      if (!cfg) {
        throw new ConfigMismatch(`etcd has no flannel config at ${this.configKey}: is cluster.etcd.prefix flanneld's --etcd-prefix? ` +
          'flannel needs it too, e.g. etcdctl put ' + `${this.configKey} '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'`);
      }
      const check = checkNetConfig(cfg.value, { network: this.o.network, subnet: this.o.subnet, vni: this.o.vni, port: this.port }, this.configKey);
      if (!check.ok) throw new ConfigMismatch(check.error);
      for (const w of check.warnings) this.warnOnce(w);

      const listed = await this.call(kv.range(this.prefix), `list ${this.prefix}`);
      if (gen !== this.gen) return;
      this.leases = new Map();
      this.seenAt = new Map();
      for (const e of listed.entries) {
        if (!e.key.startsWith(this.prefix)) continue;
        this.leases.set(e.key, e);
        this.seenAt.set(e.key, e.modRevision);
      }
      if (this.syncError !== null) this.log.info('etcd sync restored', { endpoints: this.o.endpoints, leases: this.leases.size });
      this.markSynced();
      this.synced = true;
      this.emitNow();
      if (gen !== this.gen) return; // a listener stopped us
      // etcd confirms a watch at once; one that is not confirmed in time counts as a failure.
      let confirm: Timer | null = this.clock.after(this.callTimeoutMs, () => {
        confirm = null;
        if (gen !== this.gen) return;
        this.watch?.cancel();
        this.watch = null;
        this.failSync(new OpError(`watch ${this.prefix}`, new EtcdKvError('timeout', `not confirmed within ${formatDuration(this.callTimeoutMs)}`)));
      });
      const confirmed = () => {
        confirm?.cancel();
        confirm = null;
      };
      this.watch = kv.watch(this.prefix, listed.revision + 1n, {
        onStarted: () => {
          confirmed();
          if (gen === this.gen) this.syncFailures = 0;
        },
        onEvents: (events) => {
          if (gen === this.gen) this.applyEvents(events);
        },
        onCompacted: (rev) => {
          confirmed();
          if (gen !== this.gen) return;
          this.watch = null;
          this.log.warn('the etcd watch fell behind compaction; listing again', { compactRevision: String(rev) });
          this.runSync();
        },
        onError: (err) => {
          confirmed();
          if (gen !== this.gen) return;
          this.watch = null;
          this.failSync(new OpError(`watch ${this.prefix}`, err));
        },
      });
      this.reconcile();
    } catch (e) {
      if (gen === this.gen && !this.stopped) this.failSync(e);
    }
  }

  private failSync(e: unknown): void {
    this.connected = false;
    this.synced = false;
    const delay = this.backoff(this.syncFailures++);
    const problem = this.describe(e);
    const text = `${problem}; retrying in ${formatDuration(delay)}`;
    if (problem !== this.syncProblem) this.log.warn(text); // once per problem, not per retry
    this.syncProblem = problem;
    this.syncError = text;
    this.scheduleSync(delay);
  }

  private markSynced(): void {
    this.connected = true;
    this.syncError = this.syncProblem = null;
    this.lastSync = this.clock.now();
  }

  private applyEvents(events: WatchEvent[]): void {
    let changed = false;
    let touchesOwn = false;
    for (const ev of events) {
      if (!ev.key.startsWith(this.prefix)) continue;
      const entry: KvEntry | null = ev.type === 'put' ? { key: ev.key, value: ev.value, modRevision: ev.modRevision, lease: ev.lease } : null;
      if (this.apply(ev.key, entry, ev.modRevision)) {
        changed = true;
        if (ev.key === this.ownKey) touchesOwn = true;
      }
    }
    this.markSynced();
    if (changed) this.scheduleEmit();
    if (touchesOwn) this.reconcile();
  }

  /**
   * Records key = entry (null: deleted) as of revision `at`, unless something newer is known.
   * The watch delivers in revision order; only our own key is also written from our
   * transactions' answers, which may overtake the watch, so only its deletions are remembered.
   */
  private apply(key: string, entry: KvEntry | null, at: bigint): boolean {
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

  // ------------------------------------------------------------------ views

  private buildView(): ClusterView {
    const peers: PeerConfig[] = [];
    const skipped: SkippedNode[] = [];
    const names = new Set<string>();
    for (const key of [...this.leases.keys()].sort()) {
      const e = this.leases.get(key)!;
      const v = leaseToPeer(key.slice(this.prefix.length), e.value, this.ctx);
      if (v.kind === 'peer') {
        if (names.has(v.peer.name)) {
          skipped.push({ name: `${v.peer.name} (${key})`, why: `another lease holds the same IPv4 subnet ${v.peer.subnet.text}: delete the stale key` });
          continue;
        }
        names.add(v.peer.name);
        peers.push(v.peer);
      } else if (v.code === 'own' && this.isOurs(e)) {
        continue; // our own lease: neither a peer nor worth a line in health
      } else {
        skipped.push({ name: v.name, why: v.why });
      }
    }
    return { nodes: this.leases.size, peers, skipped };
  }

  private emitNow(): void {
    this.emitTimer?.cancel();
    this.emitTimer = null;
    const view = this.buildView();
    const json = JSON.stringify(view);
    if (json === this.lastViewJson) return;
    this.lastViewJson = json;
    this.lastView = view;
    for (const cb of this.listeners) {
      try {
        cb(view);
      } catch (e) {
        this.log.error('a cluster view listener failed', { err: (e as Error).stack });
      }
    }
  }

  private scheduleEmit(): void {
    if (this.emitTimer || this.stopped) return;
    this.emitTimer = this.clock.after(this.coalesceMs, () => {
      this.emitTimer = null;
      this.emitNow();
    });
  }

  // ------------------------------------------------------------------ registration

  private isOurs(e: KvEntry): boolean {
    if (this.leaseId !== null && e.lease === this.leaseId) return true;
    const p = parseLeaseAttrs(e.value);
    const mac = p.ok ? p.attrs.vtepMac : null;
    return mac !== null && (mac === this.own?.vtepMac || this.writtenMacs.has(mac));
  }

  private isRegistered(): boolean {
    const cur = this.leases.get(this.ownKey);
    if (!cur || this.desired === null || cur.value !== this.desired) return false;
    if (cur.lease === 0n) return true; // an operator's permanent reservation, with our value
    return cur.lease === this.leaseId && this.clock.monotonic() < this.leaseExpiresAt;
  }

  private wantRegistration(): boolean {
    return this.o.register && !this.stopped && this.synced && this.kv !== null && this.own !== null && this.desired !== null;
  }

  /** Brings our key in line (serialised: one pass at a time, another one if asked meanwhile). */
  private reconcile(): void {
    if (this.reconciling) {
      this.reconcileAgain = true;
      return;
    }
    this.reconciling = true;
    void (async () => {
      try {
        do {
          this.reconcileAgain = false;
          await this.reconcileOnce();
        } while (this.reconcileAgain && !this.stopped);
      } catch (e) {
        this.log.error('internal error registering our lease', { err: (e as Error).stack });
      } finally {
        this.reconciling = false;
      }
    })();
  }

  private async reconcileOnce(): Promise<void> {
    if (!this.wantRegistration()) return;
    const kv = this.kv!;
    const desired = this.desired!;
    const key = this.ownKey;
    try {
      // A few rounds: a lost compare (someone wrote in between) shows us the key as it is now.
      for (let round = 0; round < 3; round++) {
        const cur = this.leases.get(key) ?? null;
        if (cur && !this.isOurs(cur)) return this.conflict(cur);
        // A key without an etcd lease is a permanent reservation (flannel's documented way to
        // pin a subnet): keep it permanent. Otherwise adopt the lease of a key we wrote in an
        // earlier run, if it still lives, rather than moving the key to a new one.
        const permanent = cur !== null && cur.lease === 0n;
        if (cur && !permanent && this.leaseId === null) {
          this.leaseId = cur.lease;
          this.leaseExpiresAt = 0;
        }
        if (!permanent) await this.ensureLease(kv);
        if (this.stopped) return;
        if (cur && cur.value === desired && (permanent || cur.lease === this.leaseId)) return this.registeredAs(desired, permanent, false);
        const lease = permanent ? 0n : this.leaseId!;
        const r = await this.call(kv.putIf(key, desired, lease, cur?.modRevision ?? 0n), `write ${key}`);
        if (this.stopped) return;
        if (r.ok) {
          this.apply(key, { key, value: desired, modRevision: r.revision, lease }, r.revision);
          return this.registeredAs(desired, permanent, true);
        }
        this.apply(key, r.current, r.current?.modRevision ?? r.revision);
      }
      this.scheduleReconcile(this.backoff(this.regFailures++));
    } catch (e) {
      const cause = e instanceof OpError ? e.reason : e;
      if (cause instanceof EtcdKvError && cause.kind === 'lease-not-found') {
        this.log.info('our etcd lease is gone (expired, revoked, or etcd lost its data); granting a new one', { lease: this.leaseId === null ? null : hex(this.leaseId) });
        this.leaseId = null;
        this.leaseExpiresAt = 0;
        this.reconcileAgain = true;
        return;
      }
      if (this.stopped) return;
      const delay = this.backoff(this.regFailures++);
      this.registerError = `cannot register ${key}: ${this.describe(e)}; retrying in ${formatDuration(delay)}`;
      this.log.warn(this.registerError);
      this.scheduleReconcile(delay);
    }
  }

  private scheduleReconcile(ms: number): void {
    this.regTimer?.cancel();
    this.regTimer = this.clock.after(ms, () => {
      this.regTimer = null;
      this.reconcile();
    });
  }

  /** Makes sure leaseId names a live etcd lease: renews one of unknown state, grants one when there is none. */
  private async ensureLease(kv: EtcdKv): Promise<void> {
    const now = this.clock.monotonic();
    if (this.leaseId !== null && this.leaseExpiresAt > now + 1_000) return;
    if (this.leaseId !== null) {
      const ttl = await this.call(kv.keepAliveOnce(this.leaseId), `renew lease ${hex(this.leaseId)}`);
      if (ttl > 0) {
        this.leaseExpiresAt = now + ttl * 1000;
        return;
      }
      this.leaseId = null;
    }
    const g = await this.call(kv.grant(this.ttlS), `grant a ${this.ttlS} s lease`);
    this.leaseId = g.id;
    this.leaseExpiresAt = now + g.ttlS * 1000;
  }

  private registeredAs(value: string, permanent: boolean, wrote: boolean): void {
    const mac = this.own?.vtepMac;
    if (mac) this.writtenMacs.add(mac);
    this.regFailures = 0;
    this.regTimer?.cancel();
    this.regTimer = null;
    if (this.registerError !== null || wrote) {
      this.log.info(wrote ? 'our subnet lease is written in etcd' : 'our subnet lease is in place in etcd', {
        key: this.ownKey, value, lease: permanent ? 'none (permanent reservation)' : hex(this.leaseId!),
      });
    }
    this.registerError = null;
    if (permanent) {
      this.renewTimer?.cancel();
      this.renewTimer = null;
    } else {
      this.scheduleRenew();
    }
    this.scheduleEmit();
  }

  private conflict(cur: KvEntry): void {
    this.registerError = `the site's subnet ${this.o.subnet.text} is held in etcd by another node (${describeHolder(cur.value)}; key ` +
      `${this.ownKey}): vxedge does not take it over. If that node is alive, give this site a free overlay.subnet; if it is ` +
      `gone for good, delete the key (etcdctl del ${this.ownKey}) or wait for its lease to expire, and vxedge registers at once`;
    this.warnOnce(this.registerError);
    // A lease we granted for this key holds nothing now: give it back rather than leave it for a day.
    this.renewTimer?.cancel();
    this.renewTimer = null;
    const id = this.leaseId;
    this.leaseId = null;
    this.leaseExpiresAt = 0;
    if (id !== null && this.kv) void this.call(this.kv.revoke(id), 'revoke our unused lease').catch(() => undefined);
  }

  private scheduleRenew(): void {
    this.renewTimer?.cancel();
    const remaining = this.leaseExpiresAt - this.clock.monotonic();
    this.renewTimer = this.clock.after(Math.max(1_000, remaining - this.marginMs), () => {
      this.renewTimer = null;
      void this.renew();
    });
  }

  private async renew(): Promise<void> {
    const kv = this.kv;
    const id = this.leaseId;
    if (this.stopped || !kv || id === null) return;
    const sent = this.clock.monotonic();
    try {
      const ttl = await this.call(kv.keepAliveOnce(id), `renew lease ${hex(id)}`);
      if (this.stopped || this.leaseId !== id) return;
      this.renewFailures = 0;
      if (ttl > 0) {
        this.leaseExpiresAt = sent + ttl * 1000;
        this.scheduleRenew();
        return;
      }
      this.log.info('our etcd lease expired; writing our key on a new one', { lease: hex(id) });
      this.leaseId = null;
      this.leaseExpiresAt = 0;
      this.reconcile();
    } catch (e) {
      if (this.stopped || this.leaseId !== id) return;
      const left = this.leaseExpiresAt - this.clock.monotonic();
      const delay = Math.max(1_000, Math.min(this.backoff(this.renewFailures++), left / 3));
      this.log.warn(`cannot renew our etcd lease: ${this.describe(e)}; ` +
        `${left > 0 ? `it expires in ${formatDuration(Math.round(left))}` : 'it may have expired'}; retrying in ${formatDuration(Math.round(delay))}`);
      this.renewTimer = this.clock.after(delay, () => {
        this.renewTimer = null;
        void this.renew();
      });
    }
  }

  // ------------------------------------------------------------------ plumbing

  private async client(): Promise<EtcdKv> {
    if (this.kv) return this.kv;
    this.connecting ??= (this.o.connect ?? defaultConnect)({
      endpoints: this.o.endpoints,
      tls: this.o.tls,
      auth: this.o.auth,
      clock: this.clock,
      callTimeoutMs: Math.min(5_000, this.callTimeoutMs),
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

  /** A call to etcd, bounded by callTimeoutMs on our clock and labelled for messages. */
  private call<T>(p: Promise<T>, what: string): Promise<T> {
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

  private backoff(failures: number): number {
    const base = Math.min(this.retry.maxMs, this.retry.initialMs * 2 ** Math.min(failures, 30));
    return Math.round(base * (0.5 + 0.5 * this.random()));
  }

  private warnOnce(msg: string): void {
    if (this.warned.has(msg)) return;
    this.warned.add(msg);
    this.log.warn(msg);
  }

  /** An operator's sentence for a failure: what is wrong, and what to do. */
  private describe(e: unknown): string {
    if (e instanceof ConfigMismatch) return e.message;
    const what = e instanceof OpError ? e.what : 'etcd';
    const cause = e instanceof OpError ? e.reason : e;
    const msg = cause instanceof Error ? cause.message : String(cause);
    const endpoints = this.o.endpoints.join(', ');
    const user = this.o.auth?.username;
    if (!(cause instanceof EtcdKvError)) return `${what}: ${msg}`;
    switch (cause.kind) {
      case 'unavailable':
      case 'timeout':
        return `cannot reach etcd at ${endpoints} (${what}: ${msg}); the last known peers stay in use`;
      case 'auth':
        return user
          ? `etcd at ${endpoints} refused user ${JSON.stringify(user)} (${msg}): check cluster.etcd.username and the password in cluster.etcd.passwordFile`
          : `etcd at ${endpoints} requires authentication (${msg}): set cluster.etcd.username and cluster.etcd.passwordFile, or a client certificate (cluster.etcd.cert, cluster.etcd.key)`;
      case 'permission':
        return `etcd denied ${what} to ${user ? `user ${JSON.stringify(user)}` : 'this client'} (${msg}): grant it read access to ` +
          `${this.o.prefix}/${this.o.register ? ` and write access to ${this.prefix}` : ''}`;
      case 'tls':
        return `TLS to etcd at ${endpoints} failed (${msg}): check cluster.etcd.ca (the CA that signed etcd's certificate), ` +
          'cluster.etcd.cert and cluster.etcd.key, and that the endpoints use https://';
      case 'setup':
        return msg;
      default:
        return `etcd at ${endpoints}: ${what}: ${msg}`;
    }
  }
}
