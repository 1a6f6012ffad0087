// The etcd cluster source: follows flannel's etcd subnet manager (`--etcd-endpoints`,
// `--etcd-prefix`, v3 API) the way flanneld does, and keeps the site's own subnet lease there.
//
// This file is the ClusterSource the gateway sees; it puts together the three parts that do
// the work and emits the views:
//   etcd-connection.ts  the client, bounded calls, retry delays, operators' error sentences;
//   etcd-follow.ts      config check, list and watch of {prefix}/subnets/ into a lease table
//                       (relisted after any failure, with backoff);
//   etcd-register.ts    our own lease: written only when absent or ours, renewed, never taken
//                       over from another holder.
// A view is emitted after each list, and after a burst of watch events or a registration
// (coalesced, coalesceMs), only when it differs from the last one. stop() stops following and
// renewing but leaves our key in etcd: its lease TTL bounds it, and a restart keeps the subnet.
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import type { Cidr, PeerConfig } from '../config/types.js';
import type { ClusterSource, ClusterStatus, ClusterView, OwnLease } from './types.js';
import { configKey, FLANNEL_DEFAULT_PORT, subnetKey, subnetsPrefix, type LeaseContext } from './flannel-lease.js';
import type { EtcdAuth, EtcdConnect, EtcdTlsFiles } from './etcd-kv.js';
import { EtcdCertificates, type EtcdCertificatesOptions } from './etcd-certificates.js';
import { EtcdConnection } from './etcd-connection.js';
import type { SiteCertificate } from '../util/tls-failure.js';
import { proxyFor } from '../util/http-proxy.js';
import { EtcdFollower, etcdView, LeaseTable } from './etcd-follow.js';
import { EtcdRegistrar, freeTheSubnet, heldByAnother } from './etcd-register.js';
import { leaseVtepMac } from './flannel-lease.js';

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
  /** Reads the members' certificates with a handshake (tests: a stand-in, or none). */
  probeCertificate?: EtcdCertificatesOptions['probe'];
}

export const ETCD_DEFAULTS = {
  leaseTtlS: 86_400,
  renewMarginS: 3_600,
  backoff: { initialMs: 1_000, maxMs: 30_000 },
  callTimeoutMs: 15_000,
  coalesceMs: 100,
} as const;

export class EtcdSource implements ClusterSource {
  readonly kind = 'etcd' as const;

  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly coalesceMs: number;
  private readonly subnetsPrefix: string;
  private readonly ownKey: string;
  private readonly ctx: LeaseContext;
  private readonly conn: EtcdConnection;
  private readonly leases: LeaseTable;
  private readonly follower: EtcdFollower;
  private readonly registrar: EtcdRegistrar;
  private readonly certificates: EtcdCertificates;
  private readonly endpoints: readonly string[];

  private started = false;
  private readonly listeners: ((v: ClusterView) => void)[] = [];
  private lastViewJson: string | null = null;
  private lastView: ClusterView | null = null;
  /** The last view's peers by name: a node keeps its last good lease where flannel's nodes do (cluster/last-good.ts). */
  private lastPeers = new Map<string, PeerConfig>();
  private emitTimer: Timer | null = null;

  constructor(opts: EtcdSourceOptions) {
    this.clock = opts.clock;
    this.log = opts.log.child({ part: 'cluster-etcd' });
    this.endpoints = opts.endpoints;
    const ttlS = opts.leaseTtlS ?? ETCD_DEFAULTS.leaseTtlS;
    if (!Number.isInteger(ttlS) || ttlS < 2) throw new Error(`leaseTtlS ${ttlS} is not a whole number of seconds >= 2`);
    const marginMs = 1000 * Math.min(opts.renewMarginS ?? ETCD_DEFAULTS.renewMarginS, ttlS / 2);
    const port = opts.port ?? FLANNEL_DEFAULT_PORT;
    this.coalesceMs = opts.coalesceMs ?? ETCD_DEFAULTS.coalesceMs;
    if (opts.endpoints.length === 0) throw new Error('cluster.etcd.endpoints is empty: list the etcd URLs flanneld uses (--etcd-endpoints)');
    this.subnetsPrefix = subnetsPrefix(opts.prefix);
    const ownKey = subnetKey(opts.prefix, opts.subnet);
    this.ownKey = ownKey;
    this.ctx = { network: opts.network, ownSubnet: opts.subnet, vni: opts.vni, port };

    this.conn = new EtcdConnection({
      endpoints: opts.endpoints, tls: opts.tls, auth: opts.auth, prefix: opts.prefix, subnetsPrefix: this.subnetsPrefix, ownKey,
      register: opts.register, clock: this.clock, log: this.log, connect: opts.connect,
      callTimeoutMs: opts.callTimeoutMs ?? ETCD_DEFAULTS.callTimeoutMs,
      retry: {
        initialMs: opts.backoff?.initialMs ?? ETCD_DEFAULTS.backoff.initialMs,
        maxMs: opts.backoff?.maxMs ?? ETCD_DEFAULTS.backoff.maxMs,
      },
      random: opts.backoff?.random ?? Math.random,
    });
    this.certificates = new EtcdCertificates({ endpoints: opts.endpoints, tls: opts.tls, clock: this.clock, probe: opts.probeCertificate });
    this.leases = new LeaseTable(ownKey);
    this.registrar = new EtcdRegistrar({
      conn: this.conn, leases: this.leases, ownKey, subnet: opts.subnet, vni: opts.vni, register: opts.register, ttlS, marginMs,
      synced: () => this.follower.synced,
      changed: () => this.scheduleEmit(),
    });
    this.follower = new EtcdFollower({
      conn: this.conn, leases: this.leases, configKey: configKey(opts.prefix), subnetsPrefix: this.subnetsPrefix, ownKey,
      site: this.ctx, endpoints: opts.endpoints,
      listed: () => this.emitNow(),
      changed: (own) => {
        this.scheduleEmit();
        // Our key changed, or someone else's lease on our subnet (under another key) may have gone.
        if (own || this.registrar.isBlocked()) this.registrar.reconcile();
      },
      following: () => this.registrar.reconcile(),
    });
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.sayProxy();
    this.follower.run();
    this.certificates.start();
  }

  /** Members reached through the proxy the environment names (util/http-proxy.ts), said once. */
  private sayProxy(): void {
    const through = this.endpoints.flatMap((e) => {
      try {
        const p = proxyFor(new URL(e).hostname);
        return p ? [{ endpoint: e, proxy: `${p.host}:${p.port} (${p.from})` }] : [];
      } catch {
        return []; // a variable that cannot be used: each call's error names it
      }
    });
    if (through.length) this.log.info('etcd: members reached through the HTTP proxy the environment names', { proxy: through[0].proxy, endpoints: through.map((t) => t.endpoint) });
  }

  async stop(): Promise<void> {
    this.certificates.stop();
    this.follower.stop();
    this.registrar.stop();
    this.emitTimer?.cancel();
    this.emitTimer = null;
    // Our key stays: its etcd lease TTL bounds it, and a restart finds it and keeps the subnet.
    await this.conn.stop();
  }

  onView(cb: (view: ClusterView) => void): void {
    this.listeners.push(cb);
  }

  /**
   * The wall clock was set: a sync or registration that failed and waits out its backoff is
   * tried now. TLS may have failed on the clock (the members' certificates "not valid yet").
   * The client stays: a call on it after the step connects at once (seen with a real etcd,
   * whose TLS had failed for 25 s: in sync 0.1 s after the step, as with a new client).
   */
  clockStepped(): void {
    const follow = this.follower.retryNow();
    const register = this.registrar.retryNow();
    if (follow || register) this.conn.log.info('etcd: trying again now: the clock was set');
  }

  setOwnLease(lease: OwnLease): void {
    this.registrar.setOwnLease(lease);
  }

  serverCertificates(): SiteCertificate[] {
    return this.certificates.list();
  }

  serverCertificatesRead(): Promise<void> {
    return this.certificates.firstRound();
  }

  status(): Omit<ClusterStatus, 'peers' | 'skipped'> {
    return {
      source: 'etcd',
      connected: this.follower.connected,
      lastSync: this.follower.lastSync === null ? null : new Date(this.follower.lastSync).toISOString(),
      nodes: this.leases.size,
      registered: this.registrar.isRegistered(),
      error: this.follower.syncError ?? this.registrar.registerError,
    };
  }

  /** The last view emitted (null before the first list). */
  view(): ClusterView | null {
    return this.lastView;
  }

  /**
   * Before start (`vxedge check`, after the first list): the site's key held by a lease with
   * another VTEP MAC than the site's (`siteMac`; none known yet: any holder is another), which
   * registration never overwrites; or a key etcd would not let this client write (a role that
   * may only read). Null when registering would go through, or etcd did not answer the question.
   */
  async registrationRefusal(siteMac: string | null): Promise<string | null> {
    const cur = this.leases.get(this.ownKey);
    if (cur) {
      const holder = leaseVtepMac(cur.value);
      if (siteMac === null || holder !== siteMac) {
        return `${heldByAnother(this.ctx.ownSubnet, cur)}: registering the site (cluster.register) would be refused. ${freeTheSubnet(this.ownKey, holder)}`;
      }
    }
    // Asked as etcd authorizes (etcd3-kv.ts mayPut): nothing is written. An etcd that does not
    // answer tells nothing here; the cluster line has said whether it answers.
    let may: boolean;
    try {
      const kv = await this.conn.client();
      may = await this.conn.call(kv.mayPut(this.ownKey), `ask whether ${this.ownKey} may be written`);
    } catch {
      return null;
    }
    if (may) return null;
    const user = this.conn.username;
    const who = user === null ? 'this client (the etcd user its certificate names)' : `etcd user ${JSON.stringify(user)}`;
    return `${who} may not write ${this.ownKey}: registering the site (cluster.register) would fail (permission denied); ` +
      `grant its role write access to that key (etcdctl role grant-permission ROLE readwrite ${this.ownKey}; ` +
      'vxedge rbac -c FILE prints every command), or set cluster.register to false and write the site\'s lease yourself (vxedge manifest -c FILE --etcd prints it)';
  }

  private emitNow(): void {
    this.emitTimer?.cancel();
    this.emitTimer = null;
    const view = etcdView(this.leases, this.subnetsPrefix, this.ctx, (e) => this.registrar.isOurs(e), this.lastPeers);
    this.lastPeers = new Map(view.peers.map((p) => [p.name, p]));
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
    if (this.emitTimer || this.conn.stopped) return;
    this.emitTimer = this.clock.after(this.coalesceMs, () => {
      this.emitTimer = null;
      this.emitNow();
    });
  }
}
