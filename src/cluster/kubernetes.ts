// Live cluster membership from the Kubernetes Node API, as flannel's kube subnet manager
// does it (--kube-subnet-mgr): every Node is a potential lease, read with the rules of
// flannel-node.ts; and, with `register`, the site keeps a Node of its own so that every
// flannel node programs a route to the site.
//
// Following Nodes (a reflector, as client-go's):
//   1. LIST /api/v1/nodes -> the whole set and its resourceVersion -> a view at once; the
//      first list asks for any version (resourceVersion=0), which the API server answers from
//      its watch cache instead of etcd, as every client-go informer (flanneld's too) does;
//   2. WATCH from that version, with bookmarks (which move the version on while nothing
//      changes, so a resume after a quiet hour does not fall out of the server's history)
//      and timeoutSeconds (5-10 min at random; the server ends the stream; we end it ourselves
//      `watchGraceMs` later, so a connection that died silently is noticed);
//   3. a watch that ends is resumed from the last version seen; one that reports 410 Expired
//      (the version left the server's history) starts over with a list not older than that
//      version (the watch cache again), and one whose server is behind us (504 Too large
//      resource version) with a list of the latest (etcd); any other failure retries
//      after an exponential backoff with jitter (up to `maxMs`), keeping the version.
// Changes are applied to a cache of slimmed Nodes and coalesced (`coalesceMs`): a burst of
// events, or a resumed watch replaying a thousand of them, makes one view, and a view is
// only handed on when it differs from the last (node heartbeats change nothing we use).
// Through an outage the last view stays in force: the data plane keeps forwarding.
//
// Registration keeps exactly one Node, `nodeName`, equal to `vxedge manifest`'s object:
// created when absent (409 AlreadyExists: it is there, read it and go on), created again
// when the watch sees it deleted (a cloud controller may delete a Node without an
// instance), its flannel annotations merge-patched when our public IP or VTEP MAC changes.
// podCIDR cannot change on a Node, so our Node with another subnet (overlay.subnet changed)
// is deleted and created again. Nothing is written while the public IP is unknown, and no
// request ever names another Node.
//
// Nothing here throws into the gateway: every failure becomes status().error, in words
// that name the fix (kube-errors.ts), and a retry.
import type { Cidr, PeerConfig } from '../config/types.js';
import { cidrOverlaps } from '../util/ipv4.js';
import type { Clock, Timer } from '../util/clock.js';
import { fileStamp } from '../util/file-stamp.js';
import { RateWindow } from '../util/rate-window.js';
import type { Logger } from '../util/log.js';
import type { SiteCertificate } from '../util/tls-failure.js';
import { ANNOTATIONS, EXCLUDE_FROM_LB_LABEL, GATEWAY_LABEL, KUBE_SUBNET_MANAGER, SITE_LABEL, annotationsUnder, nodeManifest, otherPrefixes, nodePodCidr, viewFromNodes, type FlannelAnnotations, type FlannelContext } from './flannel-node.js';
import { connectNodeApi, type ListFrom, type NodeApi, type NodeJson } from './kube-client.js';
import { chooseKubeconfig, type KubeconfigChoice } from './kubeconfig.js';
import { MAX_RETRY_AFTER_MS, describeKubeError, httpStatusOf, isTooLargeResourceVersion, kubeErrorContext, retryAfterOf } from './kube-errors.js';
import { CREATE_VERBS, OWN_NODE_VERBS } from './rbac.js';
import type { ClusterSource, ClusterStatus, ClusterView, OwnLease } from './types.js';

export interface BackoffOptions {
  /** First retry delay (default 500 ms); doubles per failure. */
  initialMs?: number;
  /** Cap (default 30 s). */
  maxMs?: number;
  /** [0, 1) source for the jitter, the backoff's and the watch timeout's (default Math.random). */
  random?: () => number;
}

export interface KubernetesSourceOptions {
  /** cluster.kubernetes.kubeconfig; null: $KUBECONFIG, else the in-cluster service account. */
  kubeconfig: string | null;
  /** The site's Node (cluster.kubernetes.nodeName or vxedge-{site}-{node}). */
  nodeName: string;
  /** The site id, for the Node's vxedge.io/site label. */
  site: string;
  /** cluster.kubernetes.annotationPrefix, flanneld's --kube-annotation-prefix (default: flannel's default). */
  annotationPrefix?: string;
  /** overlay.network: nodes outside are left out. */
  network: Cidr;
  /** overlay.subnet: no node may claim it. */
  subnet: Cidr;
  /** vxlan.vni. */
  vni: number;
  /** The peers' UDP port (vxlan.port; default 8472). */
  port?: number;
  /** cluster.register: keep our Node object. */
  register: boolean;
  clock: Clock;
  log: Logger;
  backoff?: BackoffOptions;
  /**
   * Server-side watch timeout: each watch asks for a random time between this and twice this
   * (default 300 s: 5-10 min, as client-go's reflector, so that watches opened together, a
   * fleet's after an API server restart, do not end together every time).
   */
  watchTimeoutS?: number;
  /** How long after the server's timeout we give up on a silent watch (default 30 s). */
  watchGraceMs?: number;
  /** Timeout of list/get/create/patch/delete (default 30 s). */
  requestTimeoutMs?: number;
  /** Events within this window make one view (default 100 ms). */
  coalesceMs?: number;
  /** Environment for $KUBECONFIG and the in-cluster variables (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Exponential backoff with jitter: attempt n waits between half and all of min(max, initial·2ⁿ). */
export function backoffDelay(attempt: number, o: BackoffOptions = {}): number {
  const base = Math.min(o.maxMs ?? 30_000, (o.initialMs ?? 500) * 2 ** Math.min(attempt, 30));
  return Math.round(base / 2 + (o.random ?? Math.random)() * (base / 2));
}

/**
 * The wait before retrying after `err`: the backoff, or longer when the server asked for more
 * (a 429's or 5xx's Retry-After, at most MAX_RETRY_AFTER_MS), as client-go waits before it
 * tries again. Under API Priority and Fairness that ask grows while the server keeps shedding.
 */
export function retryDelay(attempt: number, o: BackoffOptions | undefined, err: unknown): number {
  return Math.max(backoffDelay(attempt, o), Math.min(retryAfterOf(err) ?? 0, MAX_RETRY_AFTER_MS));
}

/** What registration must do to make `have` (our Node as last seen, or absent) into `want`. */
export type RegistrationStep =
  | { do: 'none' }
  | { do: 'create' }
  | { do: 'patch'; patch: NodeJson }
  | { do: 'recreate'; why: string }
  | { do: 'refuse'; why: string };

/** `keys`: flannel's annotations as `want` carries them (cluster.kubernetes.annotationPrefix). */
export function registrationStep(have: NodeJson | undefined, want: NodeJson, keys: FlannelAnnotations = ANNOTATIONS): RegistrationStep {
  if (!have) return { do: 'create' };
  const meta = (o: NodeJson) => (o.metadata ?? {}) as { name?: string; labels?: Record<string, unknown>; annotations?: Record<string, unknown> };
  const spec = (o: NodeJson) => (o.spec ?? {}) as { podCIDR?: unknown; providerID?: unknown };
  const cidrOf = (o: NodeJson) => spec(o).podCIDR;
  const name = meta(want).name;
  if (cidrOf(have) !== cidrOf(want)) {
    const why = `Node ${name} exists with podCIDR ${String(cidrOf(have) ?? 'none')}, not the site's subnet ${String(cidrOf(want))}`;
    if (meta(have).labels?.[GATEWAY_LABEL] === 'true') return { do: 'recreate', why };
    return { do: 'refuse', why: `${why}, and it is not labelled ${GATEWAY_LABEL}=true: it is not ours; set cluster.kubernetes.nodeName to a free name, or delete that Node` };
  }
  const patch: { labels?: Record<string, unknown>; annotations?: Record<string, unknown> } = {};
  for (const part of ['labels', 'annotations'] as const) {
    for (const [k, v] of Object.entries(meta(want)[part] ?? {})) {
      if (meta(have)[part]?.[k] !== v) (patch[part] ??= {})[k] = v;
    }
  }
  // Our Node written under another --kube-annotation-prefix before (cluster.kubernetes.
  // annotationPrefix changed): a flannel network under that prefix still routes the site's
  // subnet to its own device, beside the one now configured. Those keys go (null in a merge patch).
  if (meta(have).labels?.[GATEWAY_LABEL] === 'true') {
    const written = Object.keys(meta(want).annotations ?? {}).filter((k) => k.startsWith(keys.prefix));
    for (const { prefix } of otherPrefixes(meta(have).annotations, keys)) {
      for (const k of written) (patch.annotations ??= {})[prefix + k.slice(keys.prefix.length)] = null;
    }
  }
  // spec.providerID may only be set from "" (the API server's rule): a Node registered before
  // we set one gets ours; one that has another keeps it.
  const providerID = spec(want).providerID && !spec(have).providerID ? { providerID: spec(want).providerID } : null;
  if (!patch.labels && !patch.annotations && !providerID) return { do: 'none' };
  return { do: 'patch', patch: { ...(patch.labels || patch.annotations ? { metadata: patch } : {}), ...(providerID ? { spec: providerID } : {}) } };
}

const OUR_LABELS = [SITE_LABEL, GATEWAY_LABEL, EXCLUDE_FROM_LB_LABEL];

/**
 * What we keep of a Node: what the view and registration read (real Nodes carry tens of KB of
 * status); of its annotations, flannel's under `keys`, and a kube-subnet-manager under any
 * other prefix, which names the prefix of a node left out for it.
 */
export function slimNode(n: unknown, keys: FlannelAnnotations = ANNOTATIONS): NodeJson | null {
  if (typeof n !== 'object' || n === null) return null;
  const { metadata, spec, status } = n as { metadata?: Record<string, unknown>; spec?: Record<string, unknown>; status?: Record<string, unknown> };
  const name = metadata?.name;
  if (typeof name !== 'string' || name === '') return null;
  const pick = (o: unknown, keys: string[]) => {
    if (typeof o !== 'object' || o === null) return undefined;
    const out: Record<string, unknown> = {};
    for (const k of keys) if (Object.hasOwn(o, k)) out[k] = (o as Record<string, unknown>)[k];
    return out;
  };
  return {
    metadata: { name, annotations: pickAnnotations(metadata?.annotations, keys), labels: pick(metadata?.labels, OUR_LABELS) },
    spec: pick(spec, ['podCIDR', 'podCIDRs', 'providerID']),
    status: pick(status, ['addresses']),
  };
}

/** flannel's annotations under `keys`, and a kube-subnet-manager under any other prefix. */
function pickAnnotations(o: unknown, keys: FlannelAnnotations): Record<string, unknown> | undefined {
  if (typeof o !== 'object' || o === null) return undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (keys.all.includes(k) || k.endsWith(KUBE_SUBNET_MANAGER)) out[k] = v;
  return out;
}

const rvOf = (o: unknown): string | null => {
  const rv = (o as { metadata?: { resourceVersion?: unknown } } | null)?.metadata?.resourceVersion;
  return typeof rv === 'string' && rv !== '' ? rv : null;
};

type WatchEnd = 'closed' | 'expired' | 'behind' | 'silent';

const DEFAULTS = { port: 8472, watchTimeoutS: 300, watchGraceMs: 30_000, requestTimeoutMs: 30_000, coalesceMs: 100 };

/** A watch that the server closes this soon without sending anything counts as a failure (no busy loop). */
const MIN_QUIET_WATCH_MS = 1_000;

/** Our Node deleted within this long after we created it counts as a quick deletion (backoff). */
const QUICK_DELETION_MS = 5 * 60_000;

/** Registration steps in one go before we back off (a Node that changes under every step). */
const MAX_REGISTRATION_STEPS = 5;
/**
 * Our Node changed back by someone else this many times within the window after we wrote it
 * as we still want it: another writer wants it otherwise (two gateways with one Node name,
 * e.g. boxes cloned from one image, whose `node` defaults to the shared hostname). Without a
 * bound each one's write is the other's watch event, a write war at the API's speed.
 */
const MAX_UNDONE_WRITES = 3;
const UNDONE_WINDOW_MS = 60_000;

export class KubernetesSource implements ClusterSource {
  readonly kind = 'kubernetes' as const;
  private readonly o: KubernetesSourceOptions & typeof DEFAULTS;
  private readonly ctx: FlannelContext;
  /** flannel's annotations under cluster.kubernetes.annotationPrefix. */
  private readonly annotations: FlannelAnnotations;
  private readonly slim: (n: unknown) => NodeJson | null;
  private readonly viewCbs: ((v: ClusterView) => void)[] = [];
  /** Slimmed Nodes by name, as of resourceVersion `rv`. */
  private readonly cache = new Map<string, NodeJson>();
  private choice: KubeconfigChoice | null = null;
  private api: NodeApi | null = null;
  /** The client replaced last (a registration request may still be in flight on it): stop() aborts it too. */
  private oldApi: NodeApi | null = null;
  /** The kubeconfig file as it was when the client was made (inode, size, mtime); null: in-cluster. */
  private kubeconfigStamp: string | null = null;
  /** The last resourceVersion seen (a list's, an event's, a bookmark's). */
  private rv: string | null = null;
  /** What the next list asks for (ListFrom), before the next watch; null: no list, the watch resumes from `rv`. */
  private listFrom: ListFrom | null = '0';
  /** A list of any version ('0') came in pages: the API server has no watch cache, and a relist asks for the latest. */
  private noWatchCache = false;
  private synced = false;
  private lastView: ClusterView | null = null;
  /** The last view's peers by name: a node keeps its last good lease where flannel's nodes do (cluster/last-good.ts). */
  private lastPeers = new Map<string, PeerConfig>();
  private lastViewKey = '';
  private connected = false;
  private everConnected = false;
  private lastSync: string | null = null;
  private syncError: string | null = null;
  private registerError: string | null = null;
  private registered = false;
  /** What we last wrote our Node as (nodeManifest's JSON), and the writes of it that were undone. */
  private lastWritten: string | null = null;
  private regRetry: Timer | null = null;
  private readonly undone = new RateWindow(MAX_UNDONE_WRITES, UNDONE_WINDOW_MS);
  private lease: OwnLease | null = null;
  private failures = 0;
  private regFailures = 0;
  private createdAt = -Infinity;
  /** Deletions of our Node in a row, each soon after we had created it. */
  private quickDeletions = 0;
  private started = false;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private regBusy = false;
  private regAgain = false;
  private regDone: Promise<void> = Promise.resolve();
  private readonly timers = new Set<Timer>();
  private viewTimer: Timer | null = null;
  /** Ends the current wait of the loop (a watch or a backoff sleep); stop() calls it. */
  private wake: (() => void) | null = null;
  /** The loop's current wait is our own backoff after a failure: not a watch, nor a wait the server asked for. */
  private backingOff = false;
  /** The registration retry pending waits our own backoff, not a Retry-After. */
  private regBackingOff = false;

  constructor(opts: KubernetesSourceOptions) {
    this.o = { ...DEFAULTS, ...opts } as KubernetesSourceOptions & typeof DEFAULTS;
    this.annotations = annotationsUnder(opts.annotationPrefix);
    this.ctx = { vni: opts.vni, network: opts.network, selfNames: [opts.nodeName], selfSubnet: opts.subnet, annotations: this.annotations };
    this.slim = (n: unknown) => slimNode(n, this.annotations);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.loop = this.run().catch((e) => this.o.log.error('kubernetes: internal error in the watch loop', { error: String(e?.stack ?? e) }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.api?.abortAll();
    this.oldApi?.abortAll();
    for (const t of this.timers) t.cancel();
    this.timers.clear();
    this.viewTimer?.cancel();
    this.wake?.();
    await this.loop;
    await this.regDone;
  }

  onView(cb: (view: ClusterView) => void): void {
    this.viewCbs.push(cb);
  }

  /**
   * The wall clock was set: what failed and waits out our backoff (the list or watch, our
   * Node's write) is tried now, the backoff started afresh. TLS may have failed on the clock
   * (the API server's certificate "not valid yet"; an exec plugin's token signed with a wrong
   * time, a 401), and a retry could be 30 s away. A wait the server asked for (Retry-After) stands.
   */
  clockStepped(): void {
    if (this.stopped) return;
    const follow = this.backingOff && this.wake !== null;
    const register = this.regRetry !== null && this.regBackingOff;
    if (!follow && !register) return;
    this.o.log.info('kubernetes: trying again now: the clock was set');
    if (follow) {
      this.failures = 0;
      this.wake!();
    }
    if (register) {
      this.regRetry!.cancel();
      this.timers.delete(this.regRetry!);
      this.regRetry = null;
      this.regFailures = 0;
      this.kickRegistration();
    }
  }

  setOwnLease(lease: OwnLease): void {
    if (lease.name !== this.o.nodeName && lease.name !== this.lease?.name) {
      this.o.log.warn('kubernetes: the own lease names another Node than cluster.kubernetes.nodeName; registering the configured name', { lease: lease.name, nodeName: this.o.nodeName });
    }
    this.lease = lease;
    this.kickRegistration();
  }

  serverCertificates(): SiteCertificate[] {
    const v = this.api?.serverCert() ?? null;
    return v ? [{ what: `the API server's certificate (${this.api!.server})`, validity: v, presented: true }] : [];
  }

  status(): Omit<ClusterStatus, 'peers' | 'skipped'> {
    return {
      source: 'kubernetes',
      connected: this.connected,
      lastSync: this.lastSync,
      nodes: this.lastView?.nodes ?? 0,
      registered: this.registered,
      error: this.syncError ?? this.registerError,
    };
  }

  /** The last view handed on (null before the first list). */
  view(): ClusterView | null {
    return this.lastView;
  }

  /**
   * What registration needs (rbac.ts: create on Nodes, get/patch/update/delete on the site's
   * own), asked of the API server as SelfSubjectAccessReviews on the connected client. Null
   * when all are allowed, or when the server does not answer the reviews (nothing can be told).
   */
  async registrationRefusal(): Promise<string | null> {
    const api = this.api;
    if (!api) return null;
    const asks: [string, string | null][] = [...CREATE_VERBS.map((v) => [v, null] as [string, null]), ...OWN_NODE_VERBS.map((v) => [v, this.o.nodeName] as [string, string])];
    let answers: boolean[];
    try {
      answers = await Promise.all(asks.map(([verb, name]) => api.mayI(verb, name)));
    } catch {
      return null;
    }
    const refused = asks.filter((_, i) => !answers[i]).map(([verb, name]) => (name ? `${verb} nodes "${name}"` : `${verb} nodes`));
    if (refused.length === 0) return null;
    return `${this.choice?.describe ?? 'these credentials'} may not ${refused.join(', ')}: registering the site (cluster.register) would fail; ` +
      'grant it with `vxedge rbac -c FILE | kubectl apply -f -`, or set cluster.register to false and apply `vxedge manifest` yourself';
  }

  // ---- following Nodes ------------------------------------------------------------------

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        const api = this.api ?? (await this.connect());
        if (this.stopped) break;
        const from = this.listFrom;
        const listed = from !== null;
        if (from !== null) await this.relist(api, from);
        if (this.stopped) break;
        const started = this.o.clock.monotonic();
        const { end, events } = await this.watchOnce(api);
        // As client-go's reflector: a watch that expired lists again not older than what it had
        // seen, from the watch cache; one whose server is behind us lists the latest (from etcd).
        if (end === 'expired') this.listFrom = this.rv === null || this.noWatchCache ? '' : this.rv;
        if (end === 'behind') this.listFrom = '';
        // Behind the very version it just listed: API servers out of step behind a load balancer; not a relist loop.
        if (end === 'behind' && listed) throw new OperatorError(`the API server at ${api.server} is behind the version it listed (Too large resource version); listing again`);
        if (end === 'silent') throw new OperatorError(`the watch on ${api.server} went silent past its timeout; reconnecting`);
        // A server that answers but never lets a watch run must not turn into a busy loop.
        const quick = this.o.clock.monotonic() - started < MIN_QUIET_WATCH_MS;
        if (quick && ((end === 'closed' && events === 0) || (end === 'expired' && listed))) {
          throw new OperatorError(`the API server at ${api.server} ended our watch at once (${end}); retrying`);
        }
        continue;
      } catch (e) {
        this.fail(e, this.listFrom !== null ? 'list nodes' : 'watch nodes');
        await this.sleep(retryDelay(this.failures - 1, this.o.backoff, e), retryAfterOf(e) === null);
      }
    }
  }

  private async connect(): Promise<NodeApi> {
    this.choice = chooseKubeconfig(this.o.kubeconfig, this.o.env);
    if (!this.choice) {
      throw new OperatorError('no kubeconfig: set cluster.kubernetes.kubeconfig (or $KUBECONFIG), or run inside the cluster with a service account');
    }
    this.kubeconfigStamp = this.choice.file === null ? null : fileStamp(this.choice.file);
    try {
      this.api = await connectNodeApi(this.choice, this.o.clock, this.o.requestTimeoutMs);
    } catch (e) {
      throw new OperatorError(`cannot use ${this.choice.describe}: ${(e as Error)?.message ?? e}`);
    }
    if (!this.everConnected) {
      this.o.log.info('kubernetes: following Nodes', { server: this.api.server, credentials: this.choice.describe, ...(this.api.proxy ? { proxy: this.api.proxy } : {}) });
    }
    // A registration pass that ran while we had no client (after a 401) did nothing, and a
    // resumed watch brings no list to kick it: kick it here (a no-op when all is in place).
    if (this.synced) this.kickRegistration();
    return this.api;
  }

  private async relist(api: NodeApi, from: ListFrom): Promise<void> {
    const list = await api.list(this.slim, from);
    if (this.stopped) return;
    if (from === '0' && list.paged) this.noWatchCache = true;
    this.listFrom = null;
    this.cache.clear();
    for (const n of list.items) this.cache.set(nameOf(n), n);
    this.rv = list.resourceVersion || null;
    this.synced = true;
    // Not the end of the backoff: a server that lists but never lets a watch run would be
    // listed again after the shortest delay each time, all Nodes every half second.
    this.healthy(false);
    this.viewTimer?.cancel();
    this.viewTimer = null;
    this.publishView();
    this.kickRegistration();
  }

  /** One watch, until the server ends it, it reports 410, it goes silent or stop(). Rejects on failure. */
  private watchOnce(api: NodeApi): Promise<{ end: WatchEnd; events: number }> {
    return new Promise((resolve, reject) => {
      let over = false;
      let events = 0;
      let cancel = () => {};
      const end = (how: 'resolve' | 'reject', value: WatchEnd | unknown) => {
        if (over) return;
        over = true;
        watchdog.cancel();
        this.timers.delete(watchdog);
        cancel();
        if (this.wake === wake) this.wake = null;
        if (how === 'resolve') resolve({ end: value as WatchEnd, events });
        else reject(value);
      };
      const timeoutS = Math.floor(this.o.watchTimeoutS * (1 + (this.o.backoff?.random ?? Math.random)()));
      const watchdog = this.o.clock.after(timeoutS * 1000 + this.o.watchGraceMs, () => end('resolve', 'silent'));
      this.timers.add(watchdog);
      const wake = () => end('resolve', 'closed');
      this.wake = wake;
      cancel = api.watch(this.rv ?? '', timeoutS, {
        onOpen: () => this.healthy(false),
        onEvent: (type, obj) => {
          if (over) return;
          events++;
          if (type !== 'ERROR') return this.onEvent(type, obj);
          if (httpStatusOf(obj) === 410) {
            this.o.log.info('kubernetes: our resourceVersion left the server\'s history (410 Expired); listing again', { resourceVersion: this.rv });
            return end('resolve', 'expired');
          }
          // Our version is ahead of the server's: etcd was restored from a backup (or we talk to
          // an API server far behind). Its history will never reach ours; list again, as
          // client-go's reflector does.
          if (isTooLargeResourceVersion(obj)) {
            this.o.log.warn('kubernetes: the API server is behind our resourceVersion (Too large resource version: etcd restored from a backup?); listing again', { resourceVersion: this.rv });
            return end('resolve', 'behind');
          }
          end('reject', Object.assign(new Error('watch error'), { code: httpStatusOf(obj) ?? 500, body: obj }));
        },
        // Some servers refuse a too-old version with an HTTP 410 instead of an ERROR event.
        onDone: (err) => (!err ? end('resolve', 'closed') : httpStatusOf(err) === 410 ? end('resolve', 'expired') : end('reject', err)),
      });
    });
  }

  private onEvent(type: unknown, obj: unknown): void {
    const rv = rvOf(obj);
    if (rv) this.rv = rv;
    this.healthy();
    const node = type === 'BOOKMARK' ? null : this.slim(obj);
    if (!node) return;
    const name = nameOf(node);
    const before = this.cache.get(name);
    if (type === 'DELETED') this.cache.delete(name);
    else if (type === 'ADDED' || type === 'MODIFIED') this.cache.set(name, node);
    else return;
    if (name === this.o.nodeName) {
      if (type === 'DELETED') this.ownNodeDeleted();
      else this.kickRegistration();
    }
    // Kubelet rewrites its Node's status every few minutes (heartbeats, conditions, images),
    // none of which a view reads: the same slim Node again is no change. Without this, 500
    // Nodes rebuilt the whole view (1.7 ms here) more than once a second. Not for our own
    // Node, which registration puts in the cache from its writes' answers (remember()) without
    // a view: the watch's event for it is what brings it into one.
    const same = before !== undefined && type !== 'DELETED' && name !== this.o.nodeName && JSON.stringify(before) === JSON.stringify(node);
    if (same) return;
    this.viewTimer ??= this.o.clock.after(this.o.coalesceMs, () => {
      this.viewTimer = null;
      this.publishView();
    });
  }

  private publishView(): void {
    if (this.stopped) return;
    const view = viewFromNodes(this.cache.values(), this.ctx, this.o.port, this.lastPeers);
    this.lastPeers = new Map(view.peers.map((p) => [p.name, p]));
    const key = JSON.stringify(view);
    if (key === this.lastViewKey) return;
    this.lastViewKey = key;
    this.lastView = view;
    for (const cb of this.viewCbs) {
      try {
        cb(view);
      } catch (e) {
        this.o.log.error('kubernetes: view handler failed', { error: String((e as Error)?.stack ?? e) });
      }
    }
  }

  /** The API answered; `data`: a watch event or bookmark (not a list, not just an open watch), which ends the backoff. */
  private healthy(data = true): void {
    if (!this.connected) this.o.log.info('kubernetes: connected', { server: this.api?.server, nodes: this.cache.size });
    this.connected = this.everConnected = true;
    if (data) this.failures = 0;
    this.syncError = null;
    this.lastSync = new Date(this.o.clock.now()).toISOString();
  }

  private fail(e: unknown, action: string): void {
    if (this.stopped) return;
    const text = e instanceof OperatorError ? e.message : describeKubeError(e, this.errorContext(action));
    this.failures++;
    if (text !== this.syncError || this.connected) {
      this.o.log.warn(`kubernetes: ${text}`, { retryInMs: retryDelay(this.failures - 1, { ...this.o.backoff, random: () => 1 }, e), keepingPeers: this.lastView?.peers.length ?? 0 });
    } else {
      this.o.log.debug(`kubernetes: still failing: ${text}`, { attempt: this.failures });
    }
    this.connected = false;
    this.syncError = text;
    // Load the kubeconfig again on a 401 (its token may have been renewed), and whenever the file
    // changed since we read it: the operator fixed what the error named (server URL, CA, exec command).
    if (this.api && (httpStatusOf(e) === 401 || this.kubeconfigChanged())) {
      this.oldApi = this.api;
      this.api = null;
    }
  }

  private kubeconfigChanged(): boolean {
    return this.choice?.file != null && fileStamp(this.choice.file) !== this.kubeconfigStamp;
  }

  private errorContext(action: string) {
    return kubeErrorContext(action, this.api, this.choice?.describe ?? null, this.o.clock);
  }

  /** `ours`: a backoff of our own, which a clock step ends (clockStepped); not a Retry-After. */
  private sleep(ms: number, ours = false): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        t.cancel();
        this.timers.delete(t);
        if (this.wake === wake) {
          this.wake = null;
          this.backingOff = false;
        }
        resolve();
      };
      const t = this.o.clock.after(ms, wake);
      this.timers.add(t);
      this.wake = wake;
      this.backingOff = ours;
    });
  }

  // ---- our own Node ---------------------------------------------------------------------

  /**
   * Someone deleted our Node: create it again, at once the first time. A cloud controller
   * manager deletes Nodes it finds no instance for, and would do so again and again: when
   * the Node keeps disappearing soon after we created it, wait longer each time.
   */
  private ownNodeDeleted(): void {
    const wasRegistered = this.registered;
    this.registered = false;
    if (!wasRegistered) return this.kickRegistration();
    const soon = this.o.clock.monotonic() - this.createdAt < QUICK_DELETION_MS;
    this.quickDeletions = soon ? this.quickDeletions + 1 : 1;
    if (this.quickDeletions === 1) {
      this.o.log.warn('kubernetes: our Node was deleted; creating it again', { node: this.o.nodeName });
      return this.kickRegistration();
    }
    const delay = backoffDelay(this.quickDeletions - 2, this.o.backoff);
    this.o.log.warn(
      `kubernetes: our Node was deleted again soon after we created it (${this.quickDeletions} times in a row); ` +
        `creating it again in ${delay} ms. If this goes on, a cloud controller manager may be deleting Nodes that have no instance`,
      { node: this.o.nodeName },
    );
    const t = this.o.clock.after(delay, () => {
      this.timers.delete(t);
      this.kickRegistration();
    });
    this.timers.add(t);
  }

  /** Runs registration now, or once more after the run in progress. */
  private kickRegistration(): void {
    if (this.stopped) return;
    if (this.regBusy) {
      this.regAgain = true;
      return;
    }
    this.regBusy = true;
    this.regDone = this.registerLoop().finally(() => {
      this.regBusy = false;
    });
  }

  private async registerLoop(): Promise<void> {
    let steps = 0;
    let failure: unknown = null;
    do {
      this.regAgain = false;
      try {
        if (++steps > MAX_REGISTRATION_STEPS) throw new Error(`Node ${this.o.nodeName} changed under every step; retrying later`);
        await this.registerOnce();
        failure = null;
      } catch (e) {
        failure = e;
        break;
      }
    } while (this.regAgain && !this.stopped);
    if (this.stopped) return;
    if (failure === null) {
      this.regFailures = 0;
      this.registerError = null;
      return;
    }
    this.registered = false;
    const text = failure instanceof OperatorError ? failure.message : describeKubeError(failure, this.errorContext(`write Node ${this.o.nodeName}`));
    if (text !== this.registerError) this.o.log.warn(`kubernetes: registration: ${text}`);
    this.registerError = text;
    // One retry pending at a time: a failure of a pass that a watch event started (our Node
    // changed) must not start a second chain of retries beside the first.
    if (this.regRetry) {
      this.regRetry.cancel();
      this.timers.delete(this.regRetry);
    }
    const t = this.o.clock.after(retryDelay(this.regFailures++, this.o.backoff, failure), () => {
      this.timers.delete(t);
      this.regRetry = null;
      this.kickRegistration();
    });
    this.regRetry = t;
    this.regBackingOff = retryAfterOf(failure) === null;
    this.timers.add(t);
  }

  /** One step toward our Node as we want it; sets regAgain when another step is due. */
  private async registerOnce(): Promise<void> {
    const lease = this.lease;
    const api = this.api;
    if (!this.o.register || !lease || lease.publicIp === null) {
      this.registered = false;
      return;
    }
    if (!api || !this.synced) return; // the first list kicks us again
    const name = this.o.nodeName;
    const want = nodeManifest({ site: this.o.site, name, subnet: lease.subnet.text, vni: lease.vni, vtepMac: lease.vtepMac, publicIp: lease.publicIp, annotations: this.annotations });
    const wanted = JSON.stringify(want);
    const step = registrationStep(this.cache.get(name), want, this.annotations);
    if (step.do === 'create' || step.do === 'patch') this.refuseTakenSubnet(lease.subnet);
    if (step.do === 'patch' || step.do === 'recreate') this.countUndone(wanted);
    switch (step.do) {
      case 'none':
        break;
      case 'create':
        try {
          this.remember(await api.create(want));
          this.createdAt = this.o.clock.monotonic();
          this.o.log.info('kubernetes: created our Node', { node: name, subnet: lease.subnet.text, publicIp: lease.publicIp });
        } catch (e) {
          if (httpStatusOf(e) !== 409) throw e;
          this.remember(await api.get(name)); // already there: read it, then patch what differs
          this.regAgain = true;
          return;
        }
        break;
      case 'patch':
        this.remember(await api.mergePatch(name, step.patch));
        this.o.log.info('kubernetes: updated our Node', { node: name, patch: step.patch });
        break;
      case 'recreate':
        this.o.log.warn(`kubernetes: ${step.why}: deleting it to create it again`, { node: name });
        try {
          await api.delete(name);
        } catch (e) {
          if (httpStatusOf(e) !== 404) throw e;
        }
        this.cache.delete(name);
        this.regAgain = true;
        return;
      case 'refuse':
        throw new Error(step.why);
    }
    this.lastWritten = wanted;
    this.registered = true;
  }

  /**
   * Before a write that puts back what we last wrote (our wish unchanged, so someone else
   * changed the Node): refuses it, as a registration error retried with the backoff, once
   * that has happened MAX_UNDONE_WRITES times within UNDONE_WINDOW_MS.
   */
  private countUndone(want: string): void {
    if (want !== this.lastWritten) return; // our own change (a new public IP or MAC): not a fight
    const now = this.o.clock.monotonic();
    if (!this.undone.allows(now)) {
      throw new OperatorError(
        `Node ${this.o.nodeName} was changed back by another writer ${MAX_UNDONE_WRITES} times within ${UNDONE_WINDOW_MS / 1000} s ` +
          `of our writing it: two gateways with one Node name? (boxes cloned from one image share a hostname, the default \`node\`; ` +
          `give each box its own \`node\`, or cluster.kubernetes.nodeName)`,
      );
    }
    this.undone.take(now);
  }

  /**
   * Another Node whose podCIDR overlaps our subnet: announcing ours would give every flannel
   * node a second route for that node's pods, and take some of its traffic. Never done (as on
   * etcd): the error names the Node; registration retries with the backoff, and goes ahead
   * once that Node is gone or has another podCIDR.
   */
  private refuseTakenSubnet(subnet: Cidr): void {
    for (const [name, node] of this.cache) {
      if (name === this.o.nodeName) continue;
      const theirs = nodePodCidr(node);
      if (theirs && cidrOverlaps(theirs, subnet)) {
        throw new OperatorError(
          `Node ${name} has podCIDR ${theirs.text}, which overlaps the site's subnet ${subnet.text} (overlay.subnet): vxedge does not ` +
            `announce a subnet another node uses; give the site a free overlay.subnet, or delete that Node if it is gone for good`,
        );
      }
    }
  }

  /** Takes the server's answer as our Node's latest state, until the watch says otherwise. */
  private remember(obj: unknown): void {
    const n = this.slim(obj);
    if (n && nameOf(n) === this.o.nodeName) this.cache.set(this.o.nodeName, n);
  }
}

/** A failure whose message is already written for the operator (a kubeconfig that cannot be used, a dead watch). */
class OperatorError extends Error {
  override name = 'OperatorError';
}

function nameOf(n: NodeJson): string {
  return (n.metadata as { name: string }).name;
}
