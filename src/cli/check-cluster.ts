// `vxedge check`'s `cluster` line: what the running gateway's cluster check would find, asked
// before start and without writing anything. The configured source (cluster/live.ts) is
// started with registration off, so it only lists (and, for etcd, reads {prefix}/config); its
// first view is merged with the static peers by the gateway's own rules (cluster/membership.ts).
// The answer is the first of: a view, the source's first error (with the sentence the
// running gateway would log), or nothing within the wait. Several etcd members are each asked
// through a source of their own, at once; the first in the list with a view answers, and the
// others' failures are named beside it.
import { leaseName } from '../cluster/flannel-lease.js';
import { ANNOTATIONS, dualStackProblem } from '../cluster/flannel-node.js';
import { clusterAnnotations, everyNodeLeftOutFix, loadClusterSource, siteNodeName } from '../cluster/live.js';
import { mergePeers } from '../cluster/membership.js';
import { LIST_EVERY_MEMBER } from '../cluster/etcd-connection.js';
import type { ClusterSource, ClusterView, SkippedNode } from '../cluster/types.js';
import type { SiteCertificate } from '../util/tls-failure.js';
import type { Config, PeerConfig } from '../config/types.js';
import { readVtepMac } from '../control/state.js';
import type { CheckResult } from '../health/document.js';
import { systemClock, type Clock } from '../util/clock.js';
import { Logger } from '../util/log.js';
import { SKIPPED_SHOWN } from './render.js';

/** How long `vxedge check` waits for the cluster's first answer. */
export const CLUSTER_CHECK_WAIT_MS = 10_000;
/** How often the source's status is looked at for its first error. */
const ERROR_POLL_MS = 100;
/** How long the source may take to stop after the answer. */
const STOP_WAIT_MS = 2_000;

export interface ClusterPreflight {
  check: CheckResult;
  /** The peers a start would use now (static and cluster, merged); null when the cluster could not be read. */
  peers: PeerConfig[] | null;
  /** The certificates the cluster's servers presented (the API server's, etcd's members'), for the certificates line. */
  presented?: SiteCertificate[];
}

export interface ClusterPreflightOptions {
  clock?: Clock;
  waitMs?: number;
  /** Makes the source (tests hand in one over an in-memory cluster); default: the configured one. */
  load?: (cfg: Config, o: { clock: Clock; register: boolean; requestTimeoutMs: number }) => Promise<ClusterSource | null>;
}

/** The `cluster` check for cluster.source kubernetes or etcd; null for a static site. */
export async function clusterPreflight(cfg: Config, o: ClusterPreflightOptions = {}): Promise<ClusterPreflight | null> {
  if (cfg.cluster.source === 'static') return null;
  const clock = o.clock ?? systemClock;
  const waitMs = o.waitMs ?? CLUSTER_CHECK_WAIT_MS;
  const where = sourceName(cfg);
  const failed = (detail: string, fix?: string): ClusterPreflight => ({ check: { name: 'cluster', ok: false, detail: `${where}: ${detail}`, ...(fix ? { fix } : {}) }, peers: null });
  const noAnswer = `no answer within ${waitMs / 1000} s`;
  const mac = await siteMac(cfg);
  // etcd's members are asked each on its own, at once: the running gateway leaves a member
  // that cannot serve for the next (cluster/grpc-h2.ts), so one cut off is no reason to fail
  // the line, but it is worth naming. The source's own connection would wait out its deadline
  // twice on such a member before it moved on, longer than the check waits.
  const members = cfg.cluster.source === 'etcd' && cfg.cluster.etcd.endpoints.length > 1
    ? cfg.cluster.etcd.endpoints.map((e) => ({ ...cfg, cluster: { ...cfg.cluster, etcd: { ...cfg.cluster.etcd, endpoints: [e] } } }))
    : [cfg];
  const answers = await Promise.all(members.map((m) => askSource(m, o, clock, waitMs, mac)));
  const presented = answers.flatMap((a) => a.presented);
  const isView = (a: SourceAnswer) => typeof a.answer === 'object' && a.answer !== null;
  const read = answers.findIndex(isView);
  // A source that could not be made (a file, a URL) is the configuration's fault, the same for every member.
  const unmade = answers.find((a) => a.loadError !== undefined);
  if (unmade) return failed(unmade.loadError!);
  // What each member that gave no view said, naming it (the source's sentences name the endpoint).
  const silent = [...new Set(answers.flatMap((a, i) => (isView(a) ? [] : [
    a.answer === null ? (answers.length > 1 ? `${members[i].cluster.etcd.endpoints[0]}: ${noAnswer}` : noAnswer) : memberSaid(a.answer as string, answers.length),
  ])))];
  if (read < 0) {
    const fix = answers.some((a) => a.answer === null) ? reachFix(cfg) : undefined;
    return { ...failed(silent.join('; '), fix), presented };
  }
  const r = judged(cfg, where, answers[read].answer as ClusterView, mac, answers[read].refusal);
  const failing = answers.filter((a) => !isView(a)).length;
  if (failing) {
    r.check.detail += `; ${failing} of ${members.length} members did not serve (the gateway goes on with the others): ${silent.join('; ')}`;
  }
  return { ...r, presented };
}

interface SourceAnswer {
  /** A view, the source's first error, or null when nothing came within the wait. */
  answer: ClusterView | string | null;
  /** Why registering would be refused (asked only of a source that gave a view). */
  refusal: string | null;
  presented: SiteCertificate[];
  /** The source could not be made (a file, a URL): said as it is. */
  loadError?: string;
}

/** Starts the configured source with registration off, takes its first answer, and stops it. */
async function askSource(cfg: Config, o: ClusterPreflightOptions, clock: Clock, waitMs: number, mac: string | null): Promise<SourceAnswer> {
  let source: ClusterSource | null;
  try {
    // A request bound below the wait, so that an endpoint that never answers ends in the
    // source's own sentence (which names it) rather than in "no answer".
    const opts = { clock, register: false, requestTimeoutMs: Math.max(1_000, Math.floor(waitMs * 0.8)) };
    source = o.load ? await o.load(cfg, opts) : await loadClusterSource(cfg, { ...opts, log: new Logger('error') });
    if (!source) throw new Error(`no source for cluster.source ${cfg.cluster.source}`); // static is answered before
  } catch (e) {
    return { answer: null, refusal: null, presented: [], loadError: (e as Error).message };
  }
  let answer: ClusterView | string | null;
  let refusal: string | null = null;
  try {
    answer = await firstAnswer(source, clock, waitMs);
    // Registration is asked about only now: a cluster that cannot be read says that first.
    if (typeof answer === 'object' && answer !== null && cfg.cluster.register && source.registrationRefusal) {
      refusal = await within(source.registrationRefusal(mac), clock, waitMs, null);
    }
    // The servers' certificates, as the running gateway's check dates them (etcd's: a handshake
    // of their own, bounded; the API server's: read from its answers).
    await within(source.serverCertificatesRead?.() ?? Promise.resolve(), clock, waitMs, undefined);
    return { answer, refusal, presented: source.serverCertificates?.() ?? [] };
  } finally {
    // A source whose connection never completed may never stop: not waited for beyond STOP_WAIT_MS.
    await within(source.stop().catch(() => undefined), clock, STOP_WAIT_MS, undefined);
  }
}

/**
 * The view merged with the static peers, as the gateway's start would merge them; `refusal`:
 * why registering would be refused (it fails the line, and speaks for the site's own entry).
 */
export function judged(cfg: Config, where: string, view: ClusterView, mac: string | null, refusal: string | null = null): ClusterPreflight {
  // No MAC made yet (mac null): no node can be told to have it, so none is left out for it.
  const merged = mergePeers(cfg.peers, view, { network: cfg.overlay.network, siteSubnet: cfg.overlay.subnet, siteMac: mac ?? '' });
  // The site's own lease or Node (registered by an earlier start) is no node left out: it is
  // named on its own, with what it holds, so that a stale or foreign one shows.
  const ownName = cfg.cluster.source === 'etcd' ? leaseName(cfg.overlay.subnet) : siteNodeName(cfg);
  const all: SkippedNode[] = [...view.skipped, ...merged.skipped];
  const own = all.find((s) => s.name === ownName);
  const skipped = all.filter((s) => s !== own);
  const fromCluster = merged.peers.length - cfg.peers.length;
  const unit = cfg.cluster.source === 'etcd' ? 'lease(s)' : 'Node(s)';
  const counts = `${view.nodes} ${unit}, ${fromCluster} peer(s) from the cluster${cfg.peers.length ? ` and ${cfg.peers.length} static` : ''}`;
  const left = skipped.length
    ? `; left out: ${skipped.slice(0, SKIPPED_SHOWN).map((s) => `${s.name} (${s.why})`).join('; ')}${skipped.length > SKIPPED_SHOWN ? `; and ${skipped.length - SKIPPED_SHOWN} more (vxedge status lists them once running)` : ''}`
    : '';
  if (refusal) return { check: { name: 'cluster', ok: false, detail: `${where}: ${counts}${left}; ${refusal}` }, peers: merged.peers };
  const dual = dualStackProblem(view, clusterAnnotations(cfg));
  if (dual) return { check: { name: 'cluster', ok: false, detail: `${where}: ${counts}${left}; ${dual.detail}`, fix: dual.fix }, peers: merged.peers };
  const mine = own ? `; this site's own ${cfg.cluster.source === 'etcd' ? 'lease' : 'Node'} is there: ${own.name} (${own.why})` : '';
  if (fromCluster > 0) return { check: { name: 'cluster', ok: true, detail: `${where}: ${counts}${left}${mine}` }, peers: merged.peers };
  const fix = skipped.length
    ? everyNodeLeftOutFix(cfg)
    : cfg.cluster.source === 'etcd'
      ? 'no lease but this site\'s: is cluster.etcd.prefix flanneld\'s --etcd-prefix, and does flanneld run on the nodes?'
      : 'no Node but this site\'s: is the kubeconfig that of the cluster flannel runs in?';
  return { check: { name: 'cluster', ok: false, detail: `${where}: ${counts}: no peer to reach${left}${mine}`, fix }, peers: merged.peers };
}

/** A member's sentence; asked alone among several, it does not need telling to list the others. */
function memberSaid(error: string, members: number): string {
  const said = beforeStart(error);
  return members > 1 ? said.replaceAll(`; ${LIST_EVERY_MEMBER}`, '') : said;
}

/**
 * A running source's error without what it says about the running gateway (its peers kept,
 * its next retry): `vxedge check` neither has peers yet nor retries.
 */
export function beforeStart(error: string): string {
  return error.replace(/; the last known peers stay in use/g, '').replace(/; peers are still followed/g, '').replace(/; retrying( in [^;]*| later)?$/, '');
}

/** The first view, the first error (a string), or null after waitMs; the source is started here, and left running. */
async function firstAnswer(source: ClusterSource, clock: Clock, waitMs: number): Promise<ClusterView | string | null> {
  let poll: { cancel(): void } | undefined;
  try {
    return await within(new Promise<ClusterView | string>((resolve) => {
      source.onView(resolve);
      poll = clock.every(ERROR_POLL_MS, () => {
        const e = source.status().error;
        if (e) resolve(e);
      });
      source.start();
    }), clock, waitMs, null);
  } finally {
    poll?.cancel();
  }
}

/** `p`, or `otherwise` once ms have passed on `clock`. */
async function within<T, U>(p: Promise<T>, clock: Clock, ms: number, otherwise: U): Promise<T | U> {
  let timer: { cancel(): void } | undefined;
  try {
    return await Promise.race([p, new Promise<U>((r) => (timer = clock.after(ms, () => r(otherwise))))]);
  } finally {
    timer?.cancel();
  }
}

/** The site's VTEP MAC where known (config, stateDir); null before the first start makes one. */
async function siteMac(cfg: Config): Promise<string | null> {
  return (await readVtepMac(cfg.stateDir, cfg.vxlan.vtepMac).catch(() => null))?.mac ?? null;
}

/** The configured source in a line's words: `etcd ENDPOINTS (prefix P)`, `kubernetes (kubeconfig FILE)`. */
export function sourceName(cfg: Config): string {
  if (cfg.cluster.source === 'etcd') return `etcd ${cfg.cluster.etcd.endpoints.join(',')} (prefix ${cfg.cluster.etcd.prefix})`;
  const k = cfg.cluster.kubernetes.kubeconfig;
  // Another prefix than flannel's default is named: a line about nodes left out reads otherwise.
  const keys = clusterAnnotations(cfg);
  const prefix = keys.prefix === ANNOTATIONS.prefix ? '' : `, annotations under ${keys.prefix}`;
  return `kubernetes (${k ? `kubeconfig ${k}` : '$KUBECONFIG or the in-cluster service account'}${prefix})`;
}

function reachFix(cfg: Config): string {
  const target = cfg.cluster.source === 'etcd' ? cfg.cluster.etcd.endpoints.join(', ') : 'the API server the kubeconfig names';
  return `check that this box reaches ${target} (firewall, DNS, the site's router); the gateway keeps trying, and its log names each failure`;
}
