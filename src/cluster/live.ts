// Live membership: the peers in force follow the static `peers` list (config, SIGHUP) and,
// with cluster.source kubernetes or etcd, the cluster's view, merged (membership.ts) and
// applied as the smallest change (peer-sync.ts). Our own lease follows the public endpoint
// and the VTEP MAC. A cluster source is loaded only when configured: the Kubernetes client
// alone costs some 70 MB and half a second, which a static site never pays.
import type { SiteCertificate } from '../util/tls-failure.js';
import type { Config, PeerConfig } from '../config/types.js';
import type { CheckResult } from '../health/document.js';
import type { Clock, Timer } from '../util/clock.js';
import type { Logger } from '../util/log.js';
import { annotationsUnder, defaultNodeName, dualStackProblem, SELF_WHY, type FlannelAnnotations } from './flannel-node.js';
import { diffIsEmpty, mergePeers, type PeerDiff } from './membership.js';
import type { ClusterSource, ClusterStatus, ClusterView, SkippedNode } from './types.js';
import type { EtcdAuth, EtcdTlsFiles } from './etcd-kv.js';

export interface LiveMembershipOptions {
  cfg: Config;
  /** Makes the configured cluster source (default: loadClusterSource; tests: one over an in-memory etcd). */
  load?: (cfg: Config, o: SourceOptions) => Promise<ClusterSource | null>;
  siteMac: string;
  /** Makes a desired peer set the one in force (PeerSync.apply). */
  apply(peers: readonly PeerConfig[]): Promise<PeerDiff>;
  /** Something other parts show changed (health). */
  changed(): void;
  /**
   * The cluster's servers present certificates other than those last seen (the first
   * connection, a renewed one): the certificates check dates them now, not a period later.
   */
  certificatesSeen?(): void;
  clock: Clock;
  log: Logger;
  /**
   * What the membership this one replaces (a reload of cluster.*) knew: its cluster's peers
   * stay in force until this one's source has a view of its own, as they do while a source
   * cannot reach its cluster (handover()).
   */
  handover?: MembershipHandover;
}

/** The cluster's last view and the peers in force, handed from one membership to the next. */
export interface MembershipHandover {
  view: ClusterView | null;
  inForce: readonly PeerConfig[];
}

/** A failed apply is tried again after 2 s, doubling up to a minute. */
const RETRY_FIRST_MS = 2_000;
const RETRY_MAX_MS = 60_000;
/** Peers or nodes named in one log line (the health document lists every one). */
const LOGGED_NODES = 20;

/** The site's Node name in the cluster. */
export function siteNodeName(cfg: Config): string {
  return cfg.cluster.kubernetes.nodeName ?? defaultNodeName(cfg.site, cfg.node);
}

/** flannel's annotations in the site's cluster (cluster.kubernetes.annotationPrefix). */
export function clusterAnnotations(cfg: Config): FlannelAnnotations {
  return annotationsUnder(cfg.cluster.kubernetes.annotationPrefix);
}

/**
 * What to do when the cluster has nodes and every one is left out, each with its reason: the
 * keys that must be the cluster's, which those reasons most often come down to.
 */
export function everyNodeLeftOutFix(cfg: Config): string {
  return 'every node was left out, each for the reason named: overlay.network and vxlan.vni must be the cluster\'s (flannel\'s net-conf.json)' +
    (cfg.cluster.source === 'kubernetes' ? ', and cluster.kubernetes.annotationPrefix its flanneld\'s --kube-annotation-prefix' : '');
}

/** Nodes named, with their reasons, in one line of a check. */
const LEFT_OUT_NAMED = 3;

/** What a cluster source is made with beyond the config. */
export interface SourceOptions {
  clock: Clock;
  log: Logger;
  /** cluster.register unless said otherwise: `vxedge check` asks without writing anything. */
  register?: boolean;
  /** Bound on each request to the API server or etcd (default: the source's own). */
  requestTimeoutMs?: number;
}

/** The configured cluster source, its module loaded now; null for a static site. */
export async function loadClusterSource(cfg: Config, o: SourceOptions): Promise<ClusterSource | null> {
  const log = o.log.child({ part: 'cluster' });
  const common = {
    network: cfg.overlay.network, subnet: cfg.overlay.subnet, vni: cfg.vxlan.vni, port: cfg.vxlan.port, register: o.register ?? cfg.cluster.register, clock: o.clock, log,
  };
  if (cfg.cluster.source === 'kubernetes') {
    const { KubernetesSource } = await import('./kubernetes.js');
    return new KubernetesSource({
      ...common, kubeconfig: cfg.cluster.kubernetes.kubeconfig, nodeName: siteNodeName(cfg), site: cfg.site,
      annotationPrefix: cfg.cluster.kubernetes.annotationPrefix,
      ...(o.requestTimeoutMs ? { requestTimeoutMs: o.requestTimeoutMs } : {}),
    });
  }
  if (cfg.cluster.source === 'etcd') {
    const { EtcdSource } = await import('./etcd.js');
    return new EtcdSource({
      ...common, ...etcdAccess(cfg), prefix: cfg.cluster.etcd.prefix,
      ...(o.requestTimeoutMs ? { callTimeoutMs: o.requestTimeoutMs } : {}),
    });
  }
  return null;
}

/** How the site reaches etcd: cluster.etcd's endpoints, TLS files and user. */
export function etcdAccess(cfg: Config): { endpoints: string[]; tls?: EtcdTlsFiles; auth?: EtcdAuth } {
  const e = cfg.cluster.etcd;
  return {
    endpoints: e.endpoints,
    ...(e.ca || e.cert || e.key ? { tls: { ca: e.ca, cert: e.cert, key: e.key } } : {}),
    ...(e.username && e.passwordFile ? { auth: { username: e.username, passwordFile: e.passwordFile } } : {}),
  };
}

export class LiveMembership {
  private statics: readonly PeerConfig[];
  private view: ClusterView | null = null;
  private skipped: SkippedNode[] = [];
  private publicIp: string | null = null;
  /** The peers of the last merge applied: a node in force keeps its subnet against a newcomer. */
  private inForce: readonly PeerConfig[] = [];
  /** After a failed apply (a route the kernel refused): the next try, and how many failed in a row. */
  private retry: Timer | null = null;
  private failures = 0;
  private stopped = false;
  /** The dual-stack problem's words name flannel's annotations as the cluster spells them. */
  private readonly annotations: FlannelAnnotations;
  /** serverCertificates() as last told (certificatesSeen), by what and end. */
  private presented = '';

  private constructor(
    private readonly o: LiveMembershipOptions,
    private readonly source: ClusterSource | null,
  ) {
    this.statics = o.cfg.peers;
    this.annotations = clusterAnnotations(o.cfg);
    if (o.handover && source) {
      this.view = o.handover.view;
      this.inForce = o.handover.inForce;
    }
  }

  /**
   * For the membership that replaces this one (after stop()): the view, when the next follows
   * the same kind of source; null else (a static site keeps no cluster's peers, and another
   * source names the nodes otherwise: Kubernetes by Node, etcd by lease).
   */
  handover(next: Config): MembershipHandover | null {
    if (next.cluster.source === 'static' || next.cluster.source !== this.o.cfg.cluster.source) return null;
    return { view: this.view, inForce: this.inForce };
  }

  /**
   * Starts loading a Kubernetes source's client (0.5-2 s of module loading on a small box)
   * while the tunnel is being set up, instead of after it. Never rejects: a failure shows
   * again, with its message, when the source starts.
   */
  static preload(cfg: Config): void {
    if (cfg.cluster.source === 'kubernetes') import('./kubeconfig.js').then((k) => k.loadClientModule()).catch(() => undefined);
  }

  static async create(o: LiveMembershipOptions): Promise<LiveMembership> {
    return new LiveMembership(o, await (o.load ?? loadClusterSource)(o.cfg, { clock: o.clock, log: o.log }));
  }

  /** Applies the static peers at once, then starts following the cluster (if any). */
  async start(): Promise<void> {
    await this.sync('start');
    if (!this.source) return;
    this.source.onView((v) => {
      this.tellDualStack(this.view, v);
      this.view = v;
      this.sync('cluster').catch(() => undefined); // logged in sync(); the last peers stay in force
      this.notePresented(); // the API server's comes with its answers
    });
    this.source.start();
    // etcd's members are asked with handshakes of their own, which end after start.
    this.source.serverCertificatesRead?.().then(() => this.notePresented(), () => undefined);
  }

  private notePresented(): void {
    if (this.stopped) return;
    const now = this.serverCertificates().map((c) => `${c.what} ${c.validity.to.getTime()}`).join('\n');
    if (now === this.presented) return;
    this.presented = now;
    this.o.certificatesSeen?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.retry?.cancel();
    this.retry = null;
    await this.source?.stop();
  }

  /** A reload's new static peers. */
  setStatics(peers: readonly PeerConfig[]): Promise<PeerDiff> {
    this.statics = peers;
    return this.sync('reload');
  }

  /** The public endpoint's IP (null while unknown): the cluster is told where the site is. */
  setPublicIp(ip: string | null): void {
    if (ip === this.publicIp || !this.source) return;
    this.publicIp = ip;
    const { cfg } = this.o;
    this.source.setOwnLease({ name: siteNodeName(cfg), subnet: cfg.overlay.subnet, vni: cfg.vxlan.vni, vtepMac: this.o.siteMac, publicIp: ip });
  }

  /** The certificates the cluster's servers presented last (the API server's, etcd's members'). */
  serverCertificates(): SiteCertificate[] {
    return this.source?.serverCertificates?.() ?? [];
  }

  /** The wall clock was set: the source retries now what failed and waits out a backoff. */
  clockStepped(): void {
    this.source?.clockStepped?.();
  }

  /**
   * The health document's `cluster` (null for a static site). Dual-stack flannel nodes that
   * skip the site's Node are its `error` while the source has none of its own: the site is
   * registered, and those nodes still route nothing to it.
   */
  status(peers: number): ClusterStatus | null {
    if (!this.source) return null;
    const s = this.source.status();
    const p = s.error ? null : dualStackProblem(this.view, this.annotations);
    return { ...s, ...(p ? { error: `${p.detail}; ${p.fix}` } : {}), peers, skipped: this.skipped };
  }

  /** The `cluster` check: following the cluster, and registered when asked to. */
  check(): CheckResult | null {
    if (!this.source) return null;
    const s = this.source.status();
    const register = this.o.cfg.cluster.register;
    const what = `${s.source}: ${s.nodes} node(s) seen${s.lastSync ? `, last sync ${s.lastSync}` : ''}`;
    if (s.error) return { name: 'cluster', ok: false, detail: `${what}; ${s.error}`, fix: s.error };
    if (!s.connected) return { name: 'cluster', ok: false, detail: `${what}; not connected`, fix: 'see the log for the connection error' };
    if (register && !s.registered) {
      const why = this.publicIp === null ? 'the public IP is not known yet' : 'registration is under way';
      return { name: 'cluster', ok: false, detail: `${what}; this site is not registered: ${why}`, fix: 'set underlay.publicIp, or let port mapping or nat.stun discover it' };
    }
    const dual = dualStackProblem(this.view, this.annotations);
    if (dual) return { name: 'cluster', ok: false, detail: `${what}${register ? '; registered' : ''}; ${dual.detail}`, fix: dual.fix };
    // Nodes there, none of them usable (`vxedge check` fails alike): a setting that is not the
    // cluster's, most likely, rather than nodes that are gone (none but ours: nothing to say).
    if (this.view && this.view.peers.length === 0 && this.skipped.length > 0) {
      const named = this.skipped.slice(0, LEFT_OUT_NAMED).map((n) => `${n.name} (${n.why})`).join('; ');
      const more = this.skipped.length > LEFT_OUT_NAMED ? `; and ${this.skipped.length - LEFT_OUT_NAMED} more (cluster.skipped)` : '';
      return {
        name: 'cluster', ok: false,
        detail: `${what}${register ? '; registered' : ''}; every node is left out, the site reaches no pod: ${named}${more}`,
        fix: everyNodeLeftOutFix(this.o.cfg),
      };
    }
    return { name: 'cluster', ok: true, detail: `${what}${register ? '; registered' : ''}` };
  }

  /**
   * Logs what changed among the nodes left out: a node whose pods the site cannot reach
   * (another VNI, no usable public IP, a subnet that conflicts) is a warning, once, with the
   * reason, and again only when the reason changes; a node no longer left out, once.
   */
  private tellLeftOut(next: readonly SkippedNode[], peers: readonly PeerConfig[]): void {
    const was = new Map(this.skipped.map((s) => [s.name, s.why]));
    const newly = next.filter((s) => was.get(s.name) !== s.why);
    const still = new Set(next.map((s) => s.name));
    const ended = [...was.keys()].filter((n) => !still.has(n));
    const some = <T>(l: readonly T[]) => (l.length > LOGGED_NODES ? { first: l.slice(0, LOGGED_NODES), more: l.length - LOGGED_NODES } : { first: l, more: 0 });
    if (newly.length) {
      const { first, more } = some(newly.map((s) => `${s.name}: ${s.why}`));
      this.o.log.warn('cluster nodes left out: the site does not reach their pods', {
        nodes: first, ...(more ? { more } : {}), leftOut: next.length, see: 'cluster.skipped in vxedge status --json',
      });
    }
    if (ended.length) {
      const peerNames = new Set(peers.map((p) => p.name));
      const { first, more } = some(ended);
      this.o.log.info('cluster nodes no longer left out', {
        nowPeers: first.filter((n) => peerNames.has(n)), gone: first.filter((n) => !peerNames.has(n)), ...(more ? { more } : {}), leftOut: next.length,
      });
    }
  }

  /**
   * Logs dual-stack flannel nodes when the first appears (a warning, with the fix) and when
   * none is left; not at every node of a rollout in between (the health document counts them).
   */
  private tellDualStack(was: ClusterView | null, now: ClusterView): void {
    const before = dualStackProblem(was, this.annotations);
    const after = dualStackProblem(now, this.annotations);
    if (after && !before) this.o.log.warn('cluster nodes run flannel dual-stack: they route nothing to this site', { problem: after.detail, fix: after.fix });
    if (before && !after) this.o.log.info('no cluster node runs flannel dual-stack any more', {});
  }

  private async sync(why: string): Promise<PeerDiff> {
    const { cfg } = this.o;
    const merged = mergePeers(this.statics, this.view, {
      network: cfg.overlay.network, siteSubnet: cfg.overlay.subnet, siteMac: this.o.siteMac, inForce: this.inForce,
    });
    // The site's own Node is no node left out (etcd's view leaves our own lease out likewise).
    const skipped = [...(this.view?.skipped ?? []), ...merged.skipped].filter((s) => s.why !== SELF_WHY);
    this.tellLeftOut(skipped, merged.peers);
    this.skipped = skipped;
    try {
      const d = await this.o.apply(merged.peers);
      this.failures = 0;
      this.retry?.cancel();
      this.retry = null;
      this.inForce = merged.peers;
      if (!diffIsEmpty(d) && why !== 'start') {
        const names = (l: { name: string }[]) => l.slice(0, LOGGED_NODES).map((p) => p.name);
        this.o.log.info('peers changed', { why, added: names(d.added), removed: names(d.removed), changed: names(d.changed.map((c) => c.to)) });
      }
      this.o.changed();
      return d;
    } catch (e) {
      // The kernel refused a route (e.g. a conflicting one): the rest stays as it was, and
      // the same merge is tried again after a while (PeerSync routes what it could not),
      // not only at the next change, which a static site may never see.
      const inMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** this.failures++);
      this.o.log.warn('could not apply a peer change', { why, err: (e as Error).message, retryInS: inMs / 1000 });
      if (!this.stopped) {
        this.retry?.cancel();
        this.retry = this.o.clock.after(inMs, () => {
          this.retry = null;
          this.sync('retry').catch(() => undefined); // logged above
        });
      }
      this.o.changed();
      throw e;
    }
  }
}
