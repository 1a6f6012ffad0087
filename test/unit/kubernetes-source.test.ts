// KubernetesSource against the kube-apiserver stand-in (test/support/kube-apiserver.mjs) on
// 127.0.0.1, through the official client: following Nodes (list, watch, bookmarks, 410,
// outages, silent connections), authentication and authorization failures with their fixes,
// registration of our own Node, and 500 nodes. Time is a ManualClock that `drive` moves on
// while the real sockets work; every wait is bounded by a real-time deadline.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { chmodSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import fc from 'fast-check';
import { KubernetesSource, backoffDelay, registrationStep, retryDelay, slimNode, type KubernetesSourceOptions } from '../../src/cluster/kubernetes.js';
import { annotationsUnder, nodeManifest } from '../../src/cluster/flannel-node.js';
import { KubeHttpError } from '../../src/cluster/kube-client.js';
import { chooseKubeconfig } from '../../src/cluster/kubeconfig.js';
import { certificatesCheck } from '../../src/health/certificates.js';
import { KubeTimeoutError, MAX_RETRY_AFTER_MS, describeKubeError, parseRetryAfter } from '../../src/cluster/kube-errors.js';
import { rbacManifests } from '../../src/cluster/rbac.js';
import type { ClusterView, OwnLease } from '../../src/cluster/types.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { ManualClock } from '../support/clock.js';
import { CaptureLog, drive, flannelNode, kubeconfig, makeKubePki, manyNodes, startApiServer, type ApiUser } from '../support/kube-harness.js';

// Notes when the official client is first loaded (it must be loaded by start() only).
const loads = vi.hoisted(() => ({ count: 0, views: 0 }));
// Counts the views built from the Node cache (each is all Nodes' worth of work).
vi.mock('../../src/cluster/flannel-node.js', async (original) => {
  const m = await original<typeof import('../../src/cluster/flannel-node.js')>();
  return { ...m, viewFromNodes: (...a: Parameters<typeof m.viewFromNodes>) => (loads.views++, m.viewFromNodes(...a)) };
});
vi.mock('@kubernetes/client-node/dist/config.js', async (original) => {
  loads.count++;
  return original();
});

const NODE = 'vxedge-lab-edge-1';
/** MAX_UNDONE_WRITES in kubernetes.ts. */
const MAX_UNDONE = 3;
const SUBNET = parseCidr('10.244.100.0/24');
const NETWORK = parseCidr('10.244.0.0/16');
const LEASE: OwnLease = { name: NODE, subnet: SUBNET, vni: 1, vtepMac: '0e:5c:aa:00:00:64', publicIp: '198.51.100.2' };
const GATEWAY_RULES = (rbacManifests({ nodeName: NODE }).find((o) => o.kind === 'ClusterRole') as unknown as { rules: ApiUser['rules'] }).rules;
const USERS: ApiUser[] = [
  { name: 'admin', token: 'admin-token' },
  { name: 'system:serviceaccount:kube-system:vxedge-lab-edge-1', token: 'gw-token', rules: GATEWAY_RULES },
  { name: 'lister', token: 'list-only', rules: [{ verbs: ['list'] }] },
  { name: 'watcher', token: 'watch-only', rules: [{ verbs: ['watch'] }] },
  { name: 'reader', token: 'read-only', rules: [{ verbs: ['list', 'watch'] }] },
  { name: 'edge-cert', cn: 'edge-cert' },
  { name: 'old-cert', cn: 'old-cert' },
];

/** old-cert's certificate ended long before the test clock's day (ManualClock: 2026-11-24). */
const pki = makeKubePki(['edge-cert', { cn: 'old-cert', notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2020-01-02T00:00:00Z') }]);
let api: Awaited<ReturnType<typeof startApiServer>>;
let clock: ManualClock;
const sources: KubernetesSource[] = [];
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown) => unhandled.push(e);

beforeAll(() => {
  process.on('unhandledRejection', onUnhandled);
});
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
  pki.remove();
});

async function freshServer(retain?: number) {
  await api?.server.stop();
  api = await startApiServer(pki, USERS, { retain });
  clock = new ManualClock();
}

afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.stop()));
  await api?.server.stop();
});

function source(over: Partial<KubernetesSourceOptions> & { token?: string } = {}) {
  const log = new CaptureLog();
  const views: ClusterView[] = [];
  const { token = 'gw-token', ...rest } = over;
  const src = new KubernetesSource({
    kubeconfig: api.kubeconfigFor({ token }),
    nodeName: NODE,
    site: 'lab',
    network: NETWORK,
    subnet: SUBNET,
    vni: 1,
    register: false,
    clock,
    log,
    backoff: { initialMs: 200, maxMs: 2_000 },
    ...rest,
  });
  src.onView((v) => views.push(v));
  sources.push(src);
  return { src, views, log };
}

const peerNames = (v: ClusterView | undefined) => (v?.peers ?? []).map((p) => p.name);
const lists = () => api.server.requests.filter((r: { verb: string }) => r.verb === 'list');
const watches = () => api.server.requests.filter((r: { verb: string }) => r.verb === 'watch');
const writes = () => api.server.requests.filter((r: { method: string }) => r.method !== 'GET');

let barriers = 0;
/** A GET of our own through the stand-in, answered and in its log: what the source sent before
 *  it has reached the server by then (the source's requests go out before this one is made). */
async function barrier(): Promise<void> {
  const at = `/vxedge-test/barrier-${++barriers}`;
  await new Promise<void>((resolve, reject) => {
    const req = https.request(`${api.url}${at}`, { ca: pki.ca, agent: false, timeout: 5_000 }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('timeout', () => req.destroy(new Error('the barrier request got no answer within 5 s')));
    req.on('error', reject);
    req.end();
  });
  await drive(null, () => api.server.requests.some((r: { path: string }) => r.path === at), 'the barrier in the request log');
}

/** The clock time at which `count()` reached 1, 2, … `n`, seen in `stepMs` steps of the clock. */
async function countTimes(count: () => number, n: number, what: string, stepMs = 10): Promise<number[]> {
  const times: number[] = [];
  await drive(clock, () => {
    while (times.length < count()) times.push(clock.monotonic());
    return times.length >= n;
  }, what, { stepMs });
  return times;
}

/** Gives the source every chance to act: `ms` of clock time in 50 ms steps, each after a few ms
 *  of real time for its I/O, then a barrier. A "writes nothing" check after this can fail. */
async function quiet(ms: number): Promise<void> {
  const end = clock.monotonic() + ms;
  await drive(clock, () => clock.monotonic() >= end, `${ms} ms of clock time`, { stepMs: 50 });
  await barrier();
}

describe('following Nodes', () => {
  it('loads the official client in start(), not before', async () => {
    await freshServer();
    const { src, views } = source();
    expect(loads.count).toBe(0);
    src.start();
    await drive(clock, () => views.length === 1, 'first view');
    expect(loads.count).toBe(1);
  });

  it('lists, hands on one view, then watches from the list version with bookmarks and a timeout', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', publicIp: '203.0.113.10' }));
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24', publicIp: '172.31.21.12', externalIp: '203.0.113.20' }));
    api.server.addNode(flannelNode('aws-3', { subnet: '10.244.3.0/24', publicIp: '172.31.22.13' }));
    api.server.addNode(nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && watches().length === 1, 'the first view and a watch');
    expect(views[0].nodes).toBe(4);
    expect(views[0].peers.map((p) => [p.name, p.publicIp, p.subnet.text, p.port])).toEqual([
      ['aws-1', '203.0.113.10', '10.244.1.0/24', 8472],
      ['aws-2', '203.0.113.20', '10.244.2.0/24', 8472],
    ]);
    expect(views[0].skipped.map((s) => s.name)).toEqual(['aws-3', NODE]);
    expect(views[0].skipped[0].why).toContain('public-ip-overwrite');
    const st = src.status();
    expect(st).toMatchObject({ source: 'kubernetes', connected: true, nodes: 4, registered: false, error: null });
    expect(Date.parse(st.lastSync!)).toBeLessThanOrEqual(clock.now());
    // 4 creations after version 1: the list says 5, and the watch starts there.
    expect(watches()[0].query).toMatchObject({ allowWatchBookmarks: 'true', resourceVersion: '5' });
    // 5 to 10 minutes, at random (client-go's reflector): a fleet's watches do not end in step.
    expect(Number(watches()[0].query.timeoutSeconds)).toBeGreaterThanOrEqual(300);
    expect(Number(watches()[0].query.timeoutSeconds)).toBeLessThan(600);
    expect(lists()).toHaveLength(1);
    // Any version, which the API server answers from its watch cache, whole, not from etcd.
    expect(lists()[0]).toMatchObject({ query: { resourceVersion: '0', limit: '500' }, servedFrom: 'cache', status: 200 });
  });

  it('applies a join, a change and a leave as new views, and no view for changes it does not use', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', publicIp: '203.0.113.10' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');

    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24', publicIp: '203.0.113.20' }));
    await drive(clock, () => views.length === 2, 'join');
    expect(peerNames(views[1])).toEqual(['aws-1', 'aws-2']);

    // A kubelet heartbeat and a label change touch nothing flannel reads: no view, and none
    // built (the event seen: lastSync moves; the coalescing window over: no build came).
    clock.advance(1_000);
    const synced = src.status().lastSync;
    const built = loads.views;
    api.server.modifyNode('aws-1', { status: { conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: 'now' }] }, metadata: { labels: { x: 'y' } } });
    await drive(clock, () => src.status().lastSync !== synced, 'the heartbeat event');
    clock.advance(500);
    expect(loads.views).toBe(built);
    expect(views).toHaveLength(2);
    api.server.modifyNode('aws-2', { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '203.0.113.21' } } });
    await drive(clock, () => views.length === 3, 'change');
    expect(views[2].peers.find((p) => p.name === 'aws-2')?.publicIp).toBe('203.0.113.21');
    expect(views[2].peers.find((p) => p.name === 'aws-1')).toEqual(views[1].peers.find((p) => p.name === 'aws-1'));

    api.server.deleteNode('aws-1');
    await drive(clock, () => views.length === 4, 'leave');
    expect(peerNames(views[3])).toEqual(['aws-2']);
    expect(views[3].nodes).toBe(1);
    expect(lists()).toHaveLength(1);
  });

  it('a node whose annotations turn into something flannel cannot use keeps its last good lease, as flannel\'s nodes do, until it is deleted', async () => {
    // flannel's handleUpdateLeaseEvent ignores such an update, so the cluster keeps routing to
    // the node; dropping it left the site without a route back.
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', publicIp: '203.0.113.10' }));
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24', publicIp: '203.0.113.20', mac: '0a:bb:00:00:00:02' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1, 'first view');
    const aws1 = views[0].peers.find((p) => p.name === 'aws-1');
    const annotate = (a: Record<string, string | null>) => api.server.modifyNode('aws-1', { metadata: { annotations: a } });
    const kept = [
      { 'flannel.alpha.coreos.com/public-ip': 'not-an-ip' },
      { 'flannel.alpha.coreos.com/public-ip': '203.0.113.10', 'flannel.alpha.coreos.com/backend-data': '{"VtepMAC":' },
      { 'flannel.alpha.coreos.com/backend-data': '{"VtepMAC":"0a:bb:00:00:00:01"}', 'flannel.alpha.coreos.com/backend-type': 'host-gw' },
      { 'flannel.alpha.coreos.com/backend-type': 'vxlan', 'flannel.alpha.coreos.com/kube-subnet-manager': 'false' },
    ];
    for (const a of kept) {
      const n = views.length;
      annotate(a);
      await drive(clock, () => views.length === n + 1, JSON.stringify(a));
      const v = views.at(-1)!;
      expect(v.peers.find((p) => p.name === 'aws-1'), JSON.stringify(a)).toEqual(aws1);
      expect(v.skipped.find((s) => s.name === 'aws-1')?.why).toMatch(/; its last good lease stays in use, as flannel's nodes keep it, until the node or its lease is deleted$/);
    }
    // A change that makes it a node the site cannot reach (its flannel.1 on another VNI drops
    // our frames) drops it at once.
    const n = views.length;
    annotate({ 'flannel.alpha.coreos.com/kube-subnet-manager': 'true', 'flannel.alpha.coreos.com/backend-data': '{"VtepMAC":"0a:bb:00:00:00:01","VNI":2}' });
    await drive(clock, () => views.length === n + 1, 'another VNI');
    expect(peerNames(views.at(-1))).toEqual(['aws-2']);
    expect(views.at(-1)!.skipped.find((s) => s.name === 'aws-1')?.why).toContain('VNI 2 is not ours');
    api.server.deleteNode('aws-1');
    await drive(clock, () => views.at(-1)!.nodes === 1, 'leave');
    expect(peerNames(views.at(-1))).toEqual(['aws-2']);
  });

  it('a node that was never a good lease is not made one: at start, a malformed node is only skipped', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', publicIp: 'not-an-ip' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1, 'first view');
    expect(views[0].peers).toEqual([]);
    expect(views[0].skipped[0].why).not.toContain('last good');
  });

  it('coalesces a burst of events into one view', async () => {
    await freshServer();
    const { src, views } = source({ network: parseCidr('10.0.0.0/8'), coalesceMs: 200 });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    for (const n of manyNodes(100)) api.server.addNode(n);
    await drive(clock, () => views.at(-1)?.peers.length === 100, '100 joins', { stepMs: 5 });
    expect(views.length - 1).toBeLessThanOrEqual(3);
  });

  it('bookmarks move the version on: after a compaction the watch resumes without a relist', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    const before = src.status().lastSync;
    clock.advance(1_000);
    api.server.bumpVersion(50); // writes to other resources
    api.server.bookmark();
    await drive(null, () => src.status().lastSync !== before, 'the bookmark');
    api.server.compact();
    api.server.dropConnections();
    await drive(clock, () => watches().length === 2 && api.server.watchCount === 1, 'a second watch');
    expect(watches()[1].query.resourceVersion).toBe(String(api.server.rv));
    expect(watches()[1].status).toBe(200);
    expect(lists()).toHaveLength(1);
  });

  it('410 Expired: lists again, with no node lost or doubled', async () => {
    await freshServer();
    for (const n of ['a', 'b', 'c']) api.server.addNode(flannelNode(`aws-${n}`, { subnet: `10.244.${n.charCodeAt(0) - 96}.0/24` }));
    const { src, views, log } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    api.server.stall(); // the watch misses what follows
    const seenRv = api.server.rv;
    api.server.addNode(flannelNode('aws-d', { subnet: '10.244.4.0/24' }));
    api.server.deleteNode('aws-b');
    api.server.modifyNode('aws-c', { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '203.0.113.33' } } });
    api.server.compact();
    api.server.dropConnections();
    await drive(clock, () => lists().length === 2 && views.length === 2, 'the relist');
    // Not older than the version the watch had reached, from the watch cache, whole: after a
    // control-plane upgrade every gateway relists at once, and etcd is not asked.
    expect(lists()[1]).toMatchObject({ query: { resourceVersion: String(seenRv) }, servedFrom: 'cache', status: 200 });
    expect(lists()[1].query.limit).toBeUndefined();
    const v = views[1];
    expect(peerNames(v)).toEqual(['aws-a', 'aws-c', 'aws-d']);
    expect(v.peers.find((p) => p.name === 'aws-c')?.publicIp).toBe('203.0.113.33');
    expect(v.nodes).toBe(3);
    expect(log.lines.some((l) => l.msg.includes('410 Expired'))).toBe(true);
    expect(src.status().connected).toBe(true);
  });

  it('an API server without a watch cache (--watch-cache=false): the first list comes in pages, and a relist after 410 asks for the latest, in pages', async () => {
    await freshServer();
    for (const n of manyNodes(501)) api.server.addNode(n);
    api.server.watchCache = false;
    const { src, views } = source({ network: parseCidr('10.0.0.0/8') });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view', { stepMs: 0 });
    expect(views[0].peers).toHaveLength(501);
    expect(lists().map((r: { query: Record<string, string>; servedFrom: string }) => [r.query.resourceVersion, r.query.limit, typeof r.query.continue, r.servedFrom]))
      .toEqual([['0', '500', 'undefined', 'etcd'], [undefined, '500', 'string', 'etcd']]);
    api.server.stall();
    api.server.modifyNode('ip-172-31-0-2', { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '52.9.0.2' } } });
    api.server.compact();
    api.server.dropConnections();
    await drive(clock, () => lists().length === 4 && views.length === 2, 'the relist', { stepMs: 20 });
    // Not "not older than" the version seen: without a cache that is a read of etcd all the
    // same, and in one answer; the latest, in pages (a sure read either way).
    expect(lists().slice(2).map((r: { query: Record<string, string>; servedFrom: string }) => [r.query.resourceVersion, r.query.limit, typeof r.query.continue, r.servedFrom]))
      .toEqual([[undefined, '500', 'undefined', 'etcd'], [undefined, '500', 'string', 'etcd']]);
    expect(views[1].peers).toHaveLength(501);
    expect(views[1].peers.find((p) => p.name === 'ip-172-31-0-2')?.publicIp).toBe('52.9.0.2');
  }, 30_000);

  it('410 as an HTTP status: lists again too', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-a', { subnet: '10.244.1.0/24' }));
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    api.server.expiredAsHttpStatus = true;
    api.server.stall();
    api.server.addNode(flannelNode('aws-b', { subnet: '10.244.2.0/24' }));
    api.server.compact();
    api.server.dropConnections();
    await drive(clock, () => lists().length === 2 && views.length === 2, 'the relist');
    expect(peerNames(views[1])).toEqual(['aws-a', 'aws-b']);
    expect(watches().some((w: { status: number }) => w.status === 410)).toBe(true);
  });

  it('etcd restored from an older backup (our version is ahead of the server: 504 Too large resource version): lists again', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const backupRv = api.server.rv;
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24' }));
    api.server.bumpVersion(20);
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    expect(peerNames(views[0])).toEqual(['aws-1', 'aws-2']);
    // The control plane comes back on a backup taken before aws-2 joined; aws-3 joins since.
    api.server.restoreBackup(backupRv);
    api.server.nodes.delete('aws-2');
    api.server.addNode(flannelNode('aws-3', { subnet: '10.244.3.0/24' }));
    api.server.dropConnections();
    await drive(clock, () => views.length === 2 && src.status().connected, 'a view of the restored cluster');
    expect(peerNames(views[1])).toEqual(['aws-1', 'aws-3']);
    expect(lists()).toHaveLength(2);
    // The latest, a consistent read: asking for a version the server has not reached would only wait and fail.
    expect(lists()[1]).toMatchObject({ query: { limit: '500' }, servedFrom: 'etcd', status: 200 });
    expect(lists()[1].query.resourceVersion).toBeUndefined();
  });

  it('an API server whose watches are behind the version another one listed: list and watch again with a growing backoff, not a tight loop', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    api.server.watchLag = 1_000;
    const { src, views } = source({ backoff: { initialMs: 200, maxMs: 1_600, random: () => 0 } });
    src.start();
    await drive(clock, () => views.length === 1 && (src.status().error?.includes('Too large resource version') ?? false), 'the first view, then the lagging watch');
    await quiet(10_000);
    // Half of 200, 400, 800, 1600, 1600, ... ms between rounds: some 10 lists in 10 s, not one per 100 ms.
    expect(lists().length).toBeLessThan(14);
    api.server.watchLag = 0;
    await drive(clock, () => src.status().connected && src.status().error === null && api.server.watchCount === 1, 'following once the watches catch up');
    expect(peerNames(views.at(-1))).toEqual(['aws-1']);
  });

  /** Clock times of the source's requests that the stand-in shed (429), in order, until `n` of them. */
  const shedTimes = (n: number, stepMs = 10) =>
    countTimes(() => api.server.requests.filter((r: { status: number }) => r.status === 429).length, n, `${n} requests shed`, stepMs);

  it('429 with Retry-After (API Priority and Fairness shedding load): waits as long as the server asks, not the shorter backoff, then follows', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    api.server.shedding = { retryAfter: '4', methods: null };
    const { src, views, log } = source({ backoff: { initialMs: 200, maxMs: 2_000, random: () => 0 } });
    src.start();
    const t = await shedTimes(3);
    // The backoff alone would retry after 100, then 200 ms; the server asked for 4 s each time.
    for (const gap of [t[1] - t[0], t[2] - t[1]]) {
      expect(gap).toBeGreaterThanOrEqual(4_000);
      expect(gap).toBeLessThan(4_300);
    }
    expect(src.status().error).toContain('is shedding load (429 Too Many Requests');
    expect(log.lines.find((l) => l.msg.includes('shedding load'))?.fields).toMatchObject({ retryInMs: 4_000 });
    expect(views).toHaveLength(0);
    api.server.shedding = null;
    await drive(clock, () => views.length === 1 && src.status().connected && src.status().error === null, 'following once the server takes requests again');
    expect(peerNames(views[0])).toEqual(['aws-1']);
  });

  it('a watch refused with a 429 and Retry-After: watched again when the server asks, the listed view kept', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    api.server.shedding = { retryAfter: '3', methods: null, watchesOnly: true };
    const { src, views } = source({ backoff: { initialMs: 200, maxMs: 2_000, random: () => 0 } });
    src.start();
    const t = await shedTimes(2);
    expect(t[1] - t[0]).toBeGreaterThanOrEqual(3_000);
    expect(t[1] - t[0]).toBeLessThan(3_300);
    expect(src.status().error).toContain('is shedding load (429 Too Many Requests');
    expect(src.status().error).toContain('watch nodes');
    expect(peerNames(views[0])).toEqual(['aws-1']);
    api.server.shedding = null;
    await drive(clock, () => api.server.watchCount === 1 && src.status().error === null, 'watching once the server takes it');
    expect(lists()).toHaveLength(1); // the version kept: no relist
  });

  it('429 without Retry-After, or one past its bound: the backoff, or at most 60 s', async () => {
    await freshServer();
    api.server.shedding = { retryAfter: null, methods: null };
    const { src } = source({ backoff: { initialMs: 200, maxMs: 2_000, random: () => 0 } });
    src.start();
    const t = await shedTimes(3);
    expect(t[1] - t[0]).toBeLessThan(400); // half of 200 ms, then half of 400: no wait of its own
    expect(t[2] - t[1]).toBeLessThan(500);
    api.server.shedding = { retryAfter: '86400', methods: null };
    const u = await shedTimes(5, 100);
    expect(u[4] - u[3]).toBeGreaterThanOrEqual(MAX_RETRY_AFTER_MS);
    expect(u[4] - u[3]).toBeLessThan(MAX_RETRY_AFTER_MS + 500);
  });

  it('an outage keeps the last view, retries with growing backoff, and resumes where it left off', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src, views, log } = source({ backoff: { initialMs: 200, maxMs: 1_600, random: () => 0 } });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    await api.server.down();
    await drive(clock, () => !src.status().connected, 'disconnected');
    expect(src.status().error).toContain(`lost the connection to the API server at ${api.url}`);
    await drive(clock, () => src.status().error?.includes(`cannot reach the API server at ${api.url}`), 'the retry refused');
    // Failures at growing intervals (random 0: half of 200, 400, 800, 1600, 1600 ms).
    const attempts: number[] = [];
    const seen = () => log.lines.filter((l) => /kubernetes: (still failing: )?cannot reach/.test(l.msg)).length;
    let last = seen();
    await drive(clock, () => {
      if (seen() > last) {
        last = seen();
        attempts.push(clock.monotonic());
      }
      return attempts.length >= 5;
    }, 'five failed attempts', { stepMs: 10 });
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
    expect(gaps.length).toBe(4);
    gaps.forEach((g, i) => {
      const want = [400, 800, 800, 800][i];
      expect(g).toBeGreaterThanOrEqual(want);
      expect(g).toBeLessThan(want + 250); // + the time a refused connection takes, in clock steps
    });
    expect(backoffDelay(10, { initialMs: 200, maxMs: 1_600, random: () => 0.999 })).toBeLessThanOrEqual(1_600);
    // The view stays while down; changes made meanwhile arrive once the server is back.
    expect(src.view()).toBe(views[0]);
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24' }));
    await api.server.up();
    await drive(clock, () => views.length === 2 && src.status().connected, 'resync');
    expect(peerNames(views[1])).toEqual(['aws-1', 'aws-2']);
    expect(src.status().error).toBeNull();
    expect(lists()).toHaveLength(1); // resumed from the kept version: no relist
  });

  it('the clock set while the list waits out our backoff: listed again at once, the backoff afresh; a Retry-After the server asked for stands', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    await api.server.down();
    const { src, views, log } = source({ backoff: { initialMs: 60_000, maxMs: 60_000, random: () => 0.999 } });
    src.start();
    await drive(clock, () => src.status().error?.includes('cannot reach the API server'), 'the first list refused');
    await api.server.up();
    await quiet(2_000);
    expect(views).toHaveLength(0); // 60 s of backoff ahead
    src.clockStepped();
    expect(log.lines.map((l) => l.msg)).toContain('kubernetes: trying again now: the clock was set');
    const at = clock.monotonic();
    await drive(clock, () => views.length === 1, 'the view after the step');
    // drive moves the clock 10 ms for every few ms of real time the request takes: a wide
    // bound, still far short of the backoff.
    expect(clock.monotonic() - at).toBeLessThan(20_000);
    expect(src.status()).toMatchObject({ connected: true, error: null });
    // Watching, nothing waits: a step changes nothing (the watch goes on, none other is made).
    await drive(clock, () => watches().length === 1, 'the watch');
    const before = log.lines.length;
    src.clockStepped();
    await quiet(500);
    expect(log.lines.slice(before).map((l) => l.msg)).not.toContain('kubernetes: trying again now: the clock was set');
    expect(watches()).toHaveLength(1);
    expect(lists()).toHaveLength(1); // the one after the step (the refused ones never reached it)
    // Shed with Retry-After: 5 s: the step leaves the server's wait alone.
    await freshServer();
    api.server.shedding = { retryAfter: '5', methods: ['GET'] };
    const shed = source({ backoff: { initialMs: 200, maxMs: 2_000, random: () => 0 } });
    shed.src.start();
    const [shedAt] = await shedTimes(1);
    shed.src.clockStepped();
    api.server.shedding = null;
    await drive(clock, () => lists().length === 1, 'the list again');
    expect(clock.monotonic() - shedAt).toBeGreaterThanOrEqual(5_000);
    expect(shed.log.lines.map((l) => l.msg)).not.toContain('kubernetes: trying again now: the clock was set');
  });

  it('notices a silently dead watch after timeoutSeconds plus the grace, and reconnects', async () => {
    await freshServer();
    // The jitter at its middle: the watch asks for 1.5 × 5 s.
    const { src, views, log } = source({ watchTimeoutS: 5, watchGraceMs: 1_000, backoff: { initialMs: 200, maxMs: 2_000, random: () => 0.5 } });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    expect(watches()[0].query.timeoutSeconds).toBe('7');
    const t0 = clock.monotonic();
    api.server.stall();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    await drive(clock, () => views.length === 2, 'the node, over a new watch', { stepMs: 20, timeoutMs: 15_000 });
    expect(clock.monotonic() - t0).toBeGreaterThanOrEqual(8_000);
    expect(log.lines.some((l) => l.level === 'warn' && l.msg.includes('went silent'))).toBe(true);
    expect(watches().length).toBeGreaterThanOrEqual(2);
  });

  it('a server that stops answering: the list times out on our clock, a hung watch is given up', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    api.server.hanging = true;
    const { src, views } = source({ requestTimeoutMs: 2_000, watchTimeoutS: 5, watchGraceMs: 1_000 });
    src.start();
    const err = await drive(clock, () => src.status().error, 'the list timing out', { stepMs: 20 });
    expect(err).toContain(`the API server at ${api.url} did not answer when we tried to list nodes (no answer within 2 s)`);
    api.server.hanging = false;
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view', { stepMs: 20 });
    // Now the watch: a new one that gets no answer at all is abandoned after 5 s + 1 s.
    api.server.hanging = true;
    api.server.dropConnections();
    const t0 = clock.monotonic();
    await drive(clock, () => src.status().error?.includes('went silent'), 'the hung watch given up', { stepMs: 20, timeoutMs: 15_000 });
    expect(clock.monotonic() - t0).toBeGreaterThanOrEqual(6_000);
    api.server.hanging = false;
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24' }));
    await drive(clock, () => views.length === 2, 'back to normal', { stepMs: 20 });
  });

  it('stop() ends the watch, cancels every timer and never throws', async () => {
    await freshServer();
    const { src, views } = source();
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    await src.stop();
    await drive(null, () => api.server.watchCount === 0, 'the watch closed');
    expect(clock.timerCount).toBe(0);
    const n = api.server.requests.length;
    clock.advance(60_000);
    expect(api.server.requests.length).toBe(n);
  });

  it('a view handler that throws does not stop the source', async () => {
    await freshServer();
    const { src, views } = source();
    src.onView(() => {
      throw new Error('boom');
    });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    await drive(clock, () => views.length === 2, 'second view');
  });
});

describe('credentials and permissions', () => {
  it("registrationRefusal (vxedge check): what registering would be refused, asked as SelfSubjectAccessReviews; nothing when all is granted", async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const granted = source();
    expect(await granted.src.registrationRefusal()).toBeNull(); // not connected yet: nothing to tell
    granted.src.start();
    await drive(clock, () => granted.views.length === 1, 'view');
    let answer: string | null | undefined;
    void granted.src.registrationRefusal().then((a) => (answer = a));
    await drive(clock, () => answer !== undefined, 'the reviews');
    expect(answer).toBeNull();
    const reviews = api.server.requests.filter((r: { verb: string | null }) => r.verb?.startsWith('review '));
    expect(reviews.map((r: { verb: string; name: string | null }) => [r.verb, r.name])).toEqual([
      ['review create', null], ['review get', NODE], ['review patch', NODE], ['review update', NODE], ['review delete', NODE],
    ]);

    // May follow the cluster, may not register.
    const reader = source({ token: 'read-only' });
    reader.src.start();
    await drive(clock, () => reader.views.length === 1, 'view');
    let refusal: string | null | undefined;
    void reader.src.registrationRefusal().then((a) => (refusal = a));
    await drive(clock, () => refusal !== undefined, 'the reviews');
    expect(refusal).toMatch(new RegExp(`may not create nodes, get nodes "${NODE}", patch nodes "${NODE}", update nodes "${NODE}", delete nodes "${NODE}": registering the site \\(cluster\\.register\\) would fail; grant it with \`vxedge rbac -c FILE \\| kubectl apply -f -\``));
    expect(writes().filter((r: { path: string }) => r.path.startsWith('/api/'))).toEqual([]); // the reviews write nothing
  });

  it('client certificate', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src, views } = source({ kubeconfig: api.kubeconfigFor(pki.clients['edge-cert']) });
    src.start();
    await drive(clock, () => views.length === 1, 'view');
    expect(lists()[0].user).toBe('edge-cert');
  });

  it("an expired client certificate: the 401 says so, with its end and this machine's clock, and the fix", async () => {
    await freshServer();
    const { src, views } = source({ kubeconfig: api.kubeconfigFor(pki.clients['old-cert']) });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    // kube-apiserver asks for a client certificate without requiring one: one it cannot verify is a 401.
    expect(api.server.requests.at(-1)).toMatchObject({ status: 401, user: null });
    expect(err).toMatch(
      /rejected our credentials \(401 Unauthorized\) when we tried to list nodes: the client certificate in kubeconfig \/\S+ \(cluster\.kubernetes\.kubeconfig\) expired on 2020-01-02 00:00 UTC, and this machine's clock says 2026-11-24 12:00 UTC: renew it/,
    );
    expect(views).toHaveLength(0);
    // A valid certificate's 401 (here a wrong token) keeps the general words.
    const token = source({ token: 'wrong' });
    token.src.start();
    expect(await drive(clock, () => token.src.status().error, 'an error')).toMatch(/401 Unauthorized.*: check the token, client certificate or exec plugin in/);
  });

  it('exec credential plugin (as EKS: aws eks get-token)', async () => {
    await freshServer();
    const plugin = path.join(pki.dir, 'get-token.sh');
    writeFileSync(plugin, `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"admin-token"}}'\n`);
    chmodSync(plugin, 0o755);
    const { src, views } = source({ kubeconfig: api.kubeconfigFor({ exec: { command: plugin, args: ['eks', 'get-token'] } }) });
    src.start();
    await drive(clock, () => views.length === 1, 'view');
    expect(lists()[0].user).toBe('admin');
  });

  it("an exec plugin's token refused (401): the words name the plugin and this machine's clock, which dates such tokens (EKS's)", async () => {
    await freshServer();
    const plugin = path.join(pki.dir, 'get-stale-token.sh');
    writeFileSync(plugin, `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"signed-with-a-wrong-clock"}}'\n`);
    chmodSync(plugin, 0o755);
    const { src } = source({ kubeconfig: api.kubeconfigFor({ exec: { command: plugin, args: ['eks', 'get-token'] } }) });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toMatch(new RegExp(
      `401 Unauthorized.*check the token, client certificate or exec plugin in kubeconfig \\S+ \\(cluster\\.kubernetes\\.kubeconfig\\); its exec plugin's token \\(${plugin.replace(/[.]/g, '\\.')}\\) ` +
      "may be dated by this machine's clock, and this machine's clock says 2026-11-24 12:\\d\\d UTC: if that is wrong, set it \\(timedatectl\\)$",
    ));
    // A token from the kubeconfig itself carries no clock of ours: not said.
    const { src: plain } = source({ token: 'wrong' });
    plain.start();
    expect(await drive(clock, () => plain.status().error, 'an error')).not.toContain('clock');
  });

  it('a missing exec plugin names the command and the fix', async () => {
    await freshServer();
    const { src } = source({ kubeconfig: api.kubeconfigFor({ exec: { command: '/nonexistent/aws' } }) });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('/nonexistent/aws');
    expect(err).toContain('exec');
  });

  it('$KUBECONFIG when no kubeconfig is configured; none at all is an error with the fix', async () => {
    await freshServer();
    const file = api.kubeconfigFor({ token: 'gw-token' });
    const a = source({ kubeconfig: null, env: { KUBECONFIG: file } });
    a.src.start();
    await drive(clock, () => a.views.length === 1, 'view via $KUBECONFIG');
    const b = source({ kubeconfig: null, env: {} });
    b.src.start();
    const err = await drive(clock, () => b.src.status().error, 'an error');
    expect(err).toContain('cluster.kubernetes.kubeconfig');
  });

  it('a kubeconfig that cannot be read: names the file', async () => {
    await freshServer();
    const { src } = source({ kubeconfig: '/nonexistent/kubeconfig' });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('cannot use kubeconfig /nonexistent/kubeconfig (cluster.kubernetes.kubeconfig)');
    expect(err).toContain('ENOENT');
  });

  it('401: names the credentials file', async () => {
    await freshServer();
    const { src, views } = source({ token: 'wrong' });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('401');
    expect(err).toMatch(/kubeconfig \/.*kubeconfig-\d+/);
    expect(src.status().connected).toBe(false);
    expect(views).toHaveLength(0);
  });

  it('403 on list: names the verb and the rbac command', async () => {
    await freshServer();
    const { src } = source({ token: 'watch-only' });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('not allowed to list nodes');
    expect(err).toContain('User "watcher" cannot list resource "nodes"');
    expect(err).toContain('vxedge rbac -c FILE | kubectl apply -f -');
  });

  it('403 on watch: the listed view is handed on, the error names watch', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src, views } = source({ token: 'list-only' });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(views).toHaveLength(1);
    expect(err).toContain('not allowed to watch nodes');
    expect(err).toContain('User "lister" cannot watch resource "nodes"'); // the server's Status, read from the refused watch
    expect(err).toContain('vxedge rbac');
  });

  it('a kubeconfig fixed after an error (server URL, then CA) is read again on the next retry', async () => {
    await freshServer();
    const otherPki = makeKubePki();
    try {
      const file = api.kubeconfigFor({ token: 'gw-token' }, 'https://127.0.0.1:1');
      const { src, views } = source({ kubeconfig: file });
      src.start();
      await drive(clock, () => src.status().error?.includes('cannot reach the API server at https://127.0.0.1:1') ?? false, 'unreachable');
      kubeconfig(file, { server: api.url, caFile: otherPki.caFile, token: 'gw-token' });
      const untrusted = `TLS to the API server at ${api.url} failed`;
      await drive(clock, () => src.status().error?.startsWith(untrusted) ?? false, 'the new URL, an untrusted CA');
      expect(src.status().error!.slice(untrusted.length)).toMatch(/^ \(\w+\): the API server's certificate is not signed by a CA in certificate-authority\(-data\); check/);
      kubeconfig(file, { server: api.url, caFile: pki.caFile, token: 'gw-token' });
      await drive(clock, () => views.length === 1 && src.status().connected && src.status().error === null, 'connected with the fixed kubeconfig');
    } finally {
      otherPki.remove();
    }
  });

  it("the API server's certificate, as presented, for the certificates check: one that ends in 5 days fails it", async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const now = Date.now();
    const ending = makeKubePki([], { notBefore: new Date(now - 86_400_000), notAfter: new Date(now + 5 * 86_400_000) });
    const other = await startApiServer(ending, USERS);
    try {
      other.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
      const { src, views } = source({ kubeconfig: other.kubeconfigFor({ token: 'gw-token' }) });
      expect(src.serverCertificates()).toEqual([]); // nothing asked yet
      src.start();
      await drive(clock, () => views.length === 1, 'view');
      const seen = src.serverCertificates()[0];
      expect(seen.what).toBe(`the API server's certificate (${other.url})`);
      expect(Math.abs(seen.validity.to.getTime() - (now + 5 * 86_400_000))).toBeLessThan(2_000); // openssl keeps whole seconds
      expect(certificatesCheck([seen], now)).toMatchObject({
        ok: false, detail: expect.stringMatching(/^the API server's certificate \(https:\/\/127\.0\.0\.1:\d+\) ends on \d{4}-\d\d-\d\d \d\d:\d\d UTC, in [45] days$/),
      });
      // The usual stand-in's, valid for a year, passes.
      const { src: usual, views: usualViews } = source();
      usual.start();
      await drive(clock, () => usualViews.length === 1, 'view');
      expect(certificatesCheck(usual.serverCertificates(), now)?.ok).toBe(true);
    } finally {
      await other.server.stop();
      ending.remove();
    }
  });

  it('an unreachable server: names its URL', async () => {
    await freshServer();
    const { src } = source({ kubeconfig: api.kubeconfigFor({ token: 'gw-token' }, 'https://127.0.0.1:1') });
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('cannot reach the API server at https://127.0.0.1:1');
  });
});

describe('registration', () => {
  const ours = () => api.server.nodes.get(NODE);
  const writesToOthers = () => writes().filter((r: { name: string | null }) => r.name !== NODE);

  it('creates our Node, exactly vxedge manifest\'s object, with the least-privilege RBAC', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src, views } = source({ register: true });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered, 'registered');
    const want = nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: LEASE.publicIp! }) as {
      metadata: Record<string, unknown>;
      spec: unknown;
    };
    expect(ours().metadata.annotations).toEqual(want.metadata.annotations);
    expect(ours().metadata.labels).toEqual(want.metadata.labels);
    expect(ours().spec).toEqual(want.spec);
    expect(writes().map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual(['POST 201']);
    // Our own Node never becomes a peer.
    await drive(clock, () => views.at(-1)?.nodes === 2, 'our Node in the view');
    expect(peerNames(views.at(-1))).toEqual(['aws-1']);
    expect(src.status().error).toBeNull();
  });

  it('under another --kube-annotation-prefix: reads the nodes and writes our Node under it, and names the prefix of a node under the default', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', prefix: 'example.com/net-' }));
    api.server.addNode(flannelNode('aws-2', { subnet: '10.244.2.0/24' }));
    const { src, views } = source({ register: true, annotationPrefix: 'example.com/net' });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered && views.at(-1)?.nodes === 3, 'registered, and our Node in the view');
    const want = nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: LEASE.publicIp!, annotations: annotationsUnder('example.com/net') }) as {
      metadata: { annotations: Record<string, string> };
    };
    expect(ours().metadata.annotations).toEqual(want.metadata.annotations);
    expect(Object.keys(ours().metadata.annotations).every((k: string) => k.startsWith('example.com/net-'))).toBe(true);
    expect(peerNames(views.at(-1))).toEqual(['aws-1']);
    // The running gateway's reason is the one vxedge peers gives (the slimmed Node keeps the other prefix's kube-subnet-manager).
    expect(views.at(-1)?.skipped.find((n) => n.name === 'aws-2')?.why).toEqual(expect.stringMatching(/^its flannel annotations are under flannel\.alpha\.coreos\.com\/ \(flanneld --kube-annotation-prefix\), not example\.com\/net-, /));
    // A later change of the public IP is patched under the prefix too.
    src.setOwnLease({ ...LEASE, publicIp: '198.51.100.3' });
    await drive(clock, () => ours().metadata.annotations['example.com/net-public-ip'] === '198.51.100.3', 'the new public IP patched');
    expect(ours().metadata.annotations['flannel.alpha.coreos.com/public-ip']).toBeUndefined();
  });

  it('registers nothing while the public IP is unknown', async () => {
    await freshServer();
    const { src, views } = source({ register: true });
    src.setOwnLease({ ...LEASE, publicIp: null });
    src.start();
    await drive(clock, () => views.length === 1, 'first view');
    await quiet(5_000);
    expect(writes()).toEqual([]);
    expect(src.status().registered).toBe(false);
    src.setOwnLease(LEASE);
    await drive(clock, () => src.status().registered, 'registered');
    expect(ours().metadata.annotations['flannel.alpha.coreos.com/public-ip']).toBe('198.51.100.2');
  });

  it('a public IP learned while the credentials are being reloaded (401) is registered once the API takes them again', async () => {
    await freshServer();
    const user = api.server.users.find((u: ApiUser) => u.token === 'gw-token')!;
    const { src, views } = source({ register: true, backoff: { initialMs: 2_000, maxMs: 2_000, random: () => 0.999 } });
    src.setOwnLease({ ...LEASE, publicIp: null });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    user.token = 'rotated-away'; // the token is revoked: the reconnect gets 401
    try {
      api.server.dropConnections();
      await drive(clock, () => src.status().error?.includes('401') ?? false, 'the 401');
      src.setOwnLease(LEASE); // NAT discovery answers during the backoff
      await quiet(100);
    } finally {
      user.token = 'gw-token'; // valid again (the kubeconfig's token renewed); USERS is shared by the file
    }
    await drive(clock, () => src.status().connected && api.server.watchCount >= 1 && src.status().error === null, 'reconnected');
    await drive(clock, () => src.status().registered, 'registered');
    expect(ours().metadata.annotations['flannel.alpha.coreos.com/public-ip']).toBe('198.51.100.2');
    expect(lists()).toHaveLength(1); // the watch resumed: no relist kicked the registration
  });

  it("never announces a subnet another Node has (it would take that node's pods' traffic); registers once it is gone", async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-9', { subnet: '10.244.100.0/24', publicIp: '203.0.113.99' }));
    const { src, views } = source({ register: true });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => views.length === 1 && (src.status().error?.includes('aws-9') ?? false), 'the conflict reported');
    await quiet(5_000);
    expect(writes()).toEqual([]);
    expect(src.status()).toMatchObject({ connected: true, registered: false });
    expect(src.status().error).toBe(
      "Node aws-9 has podCIDR 10.244.100.0/24, which overlaps the site's subnet 10.244.100.0/24 (overlay.subnet): vxedge does not announce a subnet " +
        'another node uses; give the site a free overlay.subnet, or delete that Node if it is gone for good',
    );
    api.server.deleteNode('aws-9');
    await drive(clock, () => src.status().registered && src.status().error === null, 'registered once the subnet is free');
    expect(writes().map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual(['POST 201']);
  });

  it('409 AlreadyExists: reads the Node and patches it', async () => {
    await freshServer();
    const { src, views } = source({ register: true });
    src.start();
    await drive(clock, () => views.length === 1 && api.server.watchCount === 1, 'first view');
    api.server.stall(); // we do not see what happens next
    api.server.addNode(nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.99' }));
    src.setOwnLease(LEASE);
    await drive(clock, () => src.status().registered, 'registered');
    expect(api.server.requests.filter((r: { name: string }) => r.name === NODE).map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual([
      'POST 409',
      'GET 200',
      'PATCH 200',
    ]);
    expect(ours().metadata.annotations['flannel.alpha.coreos.com/public-ip']).toBe('198.51.100.2');
  });

  it('a Node an older gateway registered gets the providerID and the load-balancer label in one patch, then nothing more', async () => {
    await freshServer();
    const older = nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: LEASE.publicIp! }) as {
      metadata: { labels: Record<string, string> }; spec: Record<string, unknown>;
    };
    delete older.metadata.labels['node.kubernetes.io/exclude-from-external-load-balancers'];
    delete older.spec.providerID;
    api.server.addNode(older);
    const { src } = source({ register: true });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered, 'registered');
    expect(ours().spec.providerID).toBe(`vxedge://${NODE}`);
    expect(ours().metadata.labels['node.kubernetes.io/exclude-from-external-load-balancers']).toBe('true');
    await quiet(5_000);
    expect(writes().map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual(['PATCH 200']);
  });

  it('annotationPrefix changed: the keys under the old prefix go from our Node in the patch that writes the new ones, then nothing more', async () => {
    await freshServer();
    api.server.addNode(nodeManifest({ site: 'lab', node: 'edge-1', subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: LEASE.publicIp! }));
    const { src } = source({ register: true, annotationPrefix: 'example.com/net' });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered, 'registered');
    expect(Object.keys(ours().metadata.annotations).sort()).toEqual([
      'example.com/net-backend-data', 'example.com/net-backend-type', 'example.com/net-kube-subnet-manager', 'example.com/net-public-ip',
    ]);
    await quiet(5_000);
    expect(writes().map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual(['PATCH 200']);
  });

  it('creates our Node again when it is deleted', async () => {
    await freshServer();
    const { src, log } = source({ register: true });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered && api.server.watchCount === 1, 'registered');
    const uid = ours().metadata.uid;
    api.server.deleteNode(NODE);
    await drive(clock, () => ours() && ours().metadata.uid !== uid && src.status().registered, 'created again');
    expect(writes().filter((r: { method: string }) => r.method === 'POST')).toHaveLength(2);
    expect(log.lines.some((l) => l.msg.includes('deleted; creating it again'))).toBe(true);
  });

  it('backs off when our Node keeps being deleted right after we create it (a cloud controller at work)', async () => {
    await freshServer();
    const { src, log } = source({ register: true, backoff: { initialMs: 2_000, maxMs: 8_000, random: () => 0 } });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered && api.server.watchCount === 1, 'registered');
    const posts = () => writes().filter((r: { method: string }) => r.method === 'POST').length;
    for (const round of [1, 2, 3]) {
      const uid = ours().metadata.uid;
      const t0 = clock.monotonic();
      api.server.deleteNode(NODE);
      await drive(clock, () => ours() && ours().metadata.uid !== uid && src.status().registered, `created again (${round})`, { stepMs: 50 });
      expect(posts()).toBe(round + 1);
      // At once the first time, then after 1 s and 2 s (half of 2 s, 4 s with random 0).
      const waited = clock.monotonic() - t0;
      if (round === 1) expect(waited).toBeLessThan(500);
      else expect(waited).toBeGreaterThanOrEqual([0, 0, 1_000, 2_000][round]);
    }
    expect(log.lines.filter((l) => l.msg.includes('cloud controller manager')).length).toBe(2);
  });

  it('patches the annotations when the public IP or VTEP MAC changes, with a merge patch', async () => {
    await freshServer();
    api.server.addNode(flannelNode('aws-1', { subnet: '10.244.1.0/24' }));
    const { src } = source({ register: true });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().registered && api.server.watchCount === 1, 'registered');
    src.setOwnLease({ ...LEASE, publicIp: '198.51.100.7' });
    await drive(clock, () => ours().metadata.annotations['flannel.alpha.coreos.com/public-ip'] === '198.51.100.7', 'new public IP');
    src.setOwnLease({ ...LEASE, publicIp: '198.51.100.7', vtepMac: '0e:5c:aa:00:00:65' });
    await drive(clock, () => JSON.parse(ours().metadata.annotations['flannel.alpha.coreos.com/backend-data']).VtepMAC === '0e:5c:aa:00:00:65', 'new MAC');
    const patches = writes().filter((r: { method: string }) => r.method === 'PATCH');
    expect(patches).toHaveLength(2);
    expect(patches.every((p: { contentType: string }) => p.contentType === 'application/merge-patch+json')).toBe(true);
    // The same lease again changes nothing.
    src.setOwnLease({ ...LEASE, publicIp: '198.51.100.7', vtepMac: '0e:5c:aa:00:00:65' });
    await quiet(1_000);
    expect(src.status().registered).toBe(true);
    expect(writes().filter((r: { method: string }) => r.method === 'PATCH')).toHaveLength(2);
    expect(writesToOthers()).toEqual([]);
    expect(api.server.nodes.get('aws-1').metadata.resourceVersion).toBe(String(2));
  });

  it('two gateways with one Node name (cloned boxes) do not fight over it: each gives up after 3 undone writes a minute, with an error that says why', async () => {
    await freshServer();
    const a = source({ register: true, backoff: { initialMs: 2_000, maxMs: 8_000, random: () => 0 } });
    const b = source({ register: true, backoff: { initialMs: 2_000, maxMs: 8_000, random: () => 0 } });
    a.src.setOwnLease(LEASE);
    b.src.setOwnLease({ ...LEASE, publicIp: '198.51.100.99' });
    a.src.start();
    b.src.start();
    const patches = () => writes().filter((r: { method: string }) => r.method === 'PATCH').length;
    await drive(clock, () => a.src.status().error !== null || b.src.status().error !== null, 'one of them gives up');
    await quiet(20_000);
    // Unbounded, each one's write was the other's watch event: dozens of patches a second.
    expect(patches()).toBeLessThanOrEqual(2 * (MAX_UNDONE + 1));
    const errors = [a, b].map((g) => g.src.status().error).filter((e) => e !== null);
    expect(errors.length).toBeGreaterThanOrEqual(1);
    expect(errors[0]).toMatch(/was changed back by another writer 3 times within 60 s .*two gateways with one Node name\?/);
    // One retry chain each, not one per event: in the next minute of clock a handful more writes at most.
    const before = patches();
    await quiet(60_000);
    expect(patches() - before).toBeLessThanOrEqual(2 * (MAX_UNDONE + 1));
  });

  it('our Node with another subnet is deleted and created again; someone else\'s is left alone', async () => {
    await freshServer();
    api.server.addNode(nodeManifest({ site: 'lab', node: 'edge-1', subnet: '10.244.99.0/24', vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2' }));
    const a = source({ register: true });
    a.src.setOwnLease(LEASE);
    a.src.start();
    await drive(clock, () => a.src.status().registered, 'registered');
    expect(ours().spec.podCIDR).toBe(SUBNET.text);
    expect(writes().map((r: { method: string; status: number }) => `${r.method} ${r.status}`)).toEqual(['DELETE 200', 'POST 201']);
    await a.src.stop();

    await freshServer();
    api.server.addNode(flannelNode(NODE, { subnet: '10.244.99.0/24' }));
    const b = source({ register: true });
    b.src.setOwnLease(LEASE);
    b.src.start();
    const err = await drive(clock, () => b.src.status().error, 'an error');
    expect(err).toContain('not ours');
    expect(writes()).toHaveLength(0);
  });

  it('403 on create: the error names the verb and the fix, the view still works', async () => {
    await freshServer();
    const { src, views } = source({ register: true, token: 'read-only' });
    src.setOwnLease(LEASE);
    src.start();
    const err = await drive(clock, () => src.status().error, 'an error');
    expect(err).toContain('not allowed to create nodes');
    expect(err).toContain('vxedge rbac -c FILE | kubectl apply -f -');
    expect(src.status()).toMatchObject({ connected: true, registered: false });
    expect(views).toHaveLength(1);
  });

  it('the clock set while a refused create waits out our backoff: created again at once', async () => {
    await freshServer();
    const { src, log } = source({ register: true, token: 'read-only', backoff: { initialMs: 20_000, maxMs: 30_000, random: () => 0.999 } });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => src.status().error?.includes('not allowed to create nodes'), 'a refused create');
    const posts = () => writes().filter((r: { method: string }) => r.method === 'POST');
    await quiet(1_000);
    expect(posts()).toHaveLength(1);
    src.clockStepped();
    expect(log.lines.map((l) => l.msg)).toContain('kubernetes: trying again now: the clock was set');
    await drive(clock, () => posts().length === 2, 'the create again', { stepMs: 0 });
  });

  it('a create shed with a 429 is tried again when the server asked (Retry-After), then registers', async () => {
    await freshServer();
    api.server.shedding = { retryAfter: '3', methods: ['POST'] };
    const { src, views } = source({ register: true, backoff: { initialMs: 200, maxMs: 2_000, random: () => 0 } });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => views.length === 1, 'first view (lists are not shed)');
    const posts = () => writes().filter((r: { method: string }) => r.method === 'POST');
    const times = await countTimes(() => posts().length, 2, 'two creates');
    expect(times[1] - times[0]).toBeGreaterThanOrEqual(3_000);
    expect(times[1] - times[0]).toBeLessThan(3_300);
    expect(src.status().registered).toBe(false);
    api.server.shedding = null;
    await drive(clock, () => src.status().registered, 'registered');
    expect(posts().map((r: { status: number }) => r.status).slice(0, 2)).toEqual([429, 429]);
    expect(posts().at(-1).status).toBe(201);
  });

  it('register: false writes nothing', async () => {
    await freshServer();
    const { src, views } = source({ register: false });
    src.setOwnLease(LEASE);
    src.start();
    await drive(clock, () => views.length === 1, 'first view');
    await quiet(5_000);
    expect(writes()).toEqual([]);
  });
});

describe('500 nodes', () => {
  it('lists 500 nodes into one view, then follows a churn of 200 changes in a few views', async () => {
    await freshServer();
    for (const n of manyNodes(500)) api.server.addNode(n);
    const { src, views } = source({ network: parseCidr('10.0.0.0/8') });
    const t0 = performance.now();
    src.start();
    await drive(clock, () => views.length === 1, 'first view', { stepMs: 0 });
    const firstMs = performance.now() - t0;
    expect(views[0].peers).toHaveLength(500);

    // A forced relist (410) measures list -> view without the client's first load.
    await drive(clock, () => api.server.watchCount === 1, 'watch');
    api.server.bumpVersion();
    api.server.compact();
    api.server.stall();
    const t1 = performance.now();
    api.server.dropConnections();
    await drive(clock, () => lists().length === 2 && views.length === 1 && src.status().connected, 'relist', { stepMs: 50 });
    const relistMs = performance.now() - t1;

    await drive(clock, () => api.server.watchCount === 1, 'watch again');
    const before = views.length;
    const t2 = performance.now();
    for (const n of manyNodes(100, 501)) api.server.addNode(n);
    for (let x = 1; x <= 50; x++) api.server.deleteNode(`ip-172-31-${x >> 8}-${x & 255}`);
    for (let x = 51; x <= 100; x++) api.server.modifyNode(`ip-172-31-${x >> 8}-${x & 255}`, { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': `52.9.${x}.10` } } });
    await drive(clock, () => views.at(-1)?.peers.length === 550 && views.at(-1)?.peers.find((p) => p.name === 'ip-172-31-0-100')?.publicIp === '52.9.100.10', 'churn applied', { stepMs: 20 });
    const churnMs = performance.now() - t2;
    const churnViews = views.length - before;
    expect(churnViews).toBeLessThanOrEqual(5);
    expect(new Set(views.at(-1)!.peers.map((p) => p.name)).size).toBe(550);
    console.log(`500 nodes: start -> first view ${firstMs.toFixed(0)} ms; relist -> view ${relistMs.toFixed(0)} ms; 200 changes -> ${churnViews} view(s) in ${churnMs.toFixed(0)} ms`);
  }, 60_000);
});

describe('pure parts', () => {
  it('backoffDelay doubles from initialMs, stays within [half, all] of its step, and caps at maxMs', () => {
    for (const r of [0, 0.5, 0.999]) {
      for (let n = 0; n < 12; n++) {
        const base = Math.min(30_000, 500 * 2 ** n);
        const d = backoffDelay(n, { random: () => r });
        expect(d).toBeGreaterThanOrEqual(base / 2);
        expect(d).toBeLessThanOrEqual(base);
      }
    }
    expect(backoffDelay(1e6, {})).toBeLessThanOrEqual(30_000);
  });

  it('parseRetryAfter: delay-seconds or an IMF-fixdate (RFC 9110 10.2.3), anything else none', () => {
    const now = Date.parse('Sun, 06 Dec 2026 09:30:00 GMT');
    expect(parseRetryAfter('5', now)).toBe(5_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Sun, 06 Dec 2026 09:30:32 GMT', now)).toBe(32_000);
    expect(parseRetryAfter('Sun, 06 Dec 2026 09:00:00 GMT', now)).toBe(0); // past: at once
    for (const bad of [undefined, null, ['5'], '', '-1', '1.5', '5s', '0x10', 'tomorrow', 'abc 5', 'Sunday, 06-Dec-26 09:30:32 GMT', 'Sun, 06 Dec 2026 09:30:32 +0100']) {
      expect(parseRetryAfter(bad, now)).toBeNull();
    }
    fc.assert(fc.property(fc.nat(), (n) => parseRetryAfter(String(n), now) === Math.min(n, 1e9) * 1000)); // bounded: a finite wait
    expect(parseRetryAfter('9'.repeat(400), now)).toBe(1e12);
    fc.assert(fc.property(fc.string(), (v) => {
      const ms = parseRetryAfter(v, now);
      return ms === null || (Number.isFinite(ms) && ms >= 0);
    }));
  });

  it('retryDelay: the backoff, or the Retry-After of a 429 or 5xx when longer, bounded', () => {
    const o = { initialMs: 200, maxMs: 2_000, random: () => 0 };
    expect(retryDelay(0, o, new Error('no answer'))).toBe(100);
    expect(retryDelay(0, o, new KubeHttpError(429, 'Too many requests', 4_000))).toBe(4_000);
    expect(retryDelay(0, o, new KubeHttpError(503, '', 4_000))).toBe(4_000);
    expect(retryDelay(0, o, new KubeHttpError(429, '', null))).toBe(100);
    expect(retryDelay(0, o, new KubeHttpError(429, '', 50))).toBe(100); // never sooner than the backoff
    expect(retryDelay(0, o, new KubeHttpError(409, '', 4_000))).toBe(100); // only where client-go honours it
    expect(retryDelay(0, o, new KubeHttpError(429, '', 1e9))).toBe(MAX_RETRY_AFTER_MS);
  });

  it('registrationStep: create, none, patch of exactly what differs, recreate or refuse on another podCIDR', () => {
    const want = nodeManifest({ site: 'lab', name: NODE, subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2' });
    expect(registrationStep(undefined, want)).toEqual({ do: 'create' });
    expect(registrationStep(slimNode(want)!, want)).toEqual({ do: 'none' });
    const moved = nodeManifest({ site: 'lab', name: NODE, subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.3' });
    expect(registrationStep(slimNode(moved)!, want)).toEqual({ do: 'patch', patch: { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '198.51.100.2' } } } });
    const other = nodeManifest({ site: 'lab', name: NODE, subnet: '10.244.99.0/24', vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2' });
    expect(registrationStep(slimNode(other)!, want).do).toBe('recreate');
    expect(registrationStep(slimNode(flannelNode(NODE, { subnet: '10.244.99.0/24' }))!, want).do).toBe('refuse');
    // A Node registered before the providerID and the load-balancer label: both added, in one patch.
    const older = structuredClone(want) as { metadata: { labels: Record<string, string> }; spec: Record<string, unknown> };
    delete older.metadata.labels['node.kubernetes.io/exclude-from-external-load-balancers'];
    delete older.spec.providerID;
    expect(registrationStep(slimNode(older)!, want)).toEqual({
      do: 'patch',
      patch: { metadata: { labels: { 'node.kubernetes.io/exclude-from-external-load-balancers': 'true' } }, spec: { providerID: `vxedge://${NODE}` } },
    });
    // One with another providerID keeps it: the API server refuses to change it.
    older.metadata.labels['node.kubernetes.io/exclude-from-external-load-balancers'] = 'true';
    older.spec.providerID = 'aws:///eu-west-1a/i-0123';
    expect(registrationStep(slimNode(older)!, want)).toEqual({ do: 'none' });
  });

  it('registrationStep: our Node written under another annotation prefix before loses those keys in the patch that writes the new ones', () => {
    const net = annotationsUnder('example.com/net');
    const want = nodeManifest({ site: 'lab', name: NODE, subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2', annotations: net });
    const before = nodeManifest({ site: 'lab', name: NODE, subnet: SUBNET.text, vni: 1, vtepMac: LEASE.vtepMac, publicIp: '198.51.100.2' });
    const step = registrationStep(slimNode(before, net)!, want, net);
    expect(step).toEqual({
      do: 'patch',
      patch: {
        metadata: {
          annotations: {
            'example.com/net-kube-subnet-manager': 'true', 'example.com/net-backend-type': 'vxlan',
            'example.com/net-backend-data': `{"VNI":1,"VtepMAC":"${LEASE.vtepMac}"}`, 'example.com/net-public-ip': '198.51.100.2',
            'flannel.alpha.coreos.com/kube-subnet-manager': null, 'flannel.alpha.coreos.com/backend-type': null,
            'flannel.alpha.coreos.com/backend-data': null, 'flannel.alpha.coreos.com/public-ip': null,
          },
        },
      },
    });
    // A Node that is not labelled ours keeps its annotations (its podCIDR is the site's: it is taken over, not cleaned).
    const foreign = structuredClone(before) as { metadata: { labels: Record<string, string> } };
    foreign.metadata.labels = {};
    const taken = registrationStep(slimNode(foreign, net)!, want, net) as { patch: { metadata: { annotations: Record<string, unknown> } } };
    expect(Object.values(taken.patch.metadata.annotations)).not.toContain(null);
  });

  it('slimNode keeps what flannel reads and drops the rest', () => {
    const n = slimNode(flannelNode('aws-1', { subnet: '10.244.1.0/24', externalIp: '203.0.113.1' }))!;
    expect(Object.keys((n.metadata as { annotations: object }).annotations).sort()).toEqual([
      'flannel.alpha.coreos.com/backend-data',
      'flannel.alpha.coreos.com/backend-type',
      'flannel.alpha.coreos.com/kube-subnet-manager',
      'flannel.alpha.coreos.com/public-ip',
    ]);
    expect(n.status).toEqual({ addresses: expect.any(Array) });
    expect(JSON.stringify(n).length).toBeLessThan(800);
    for (const bad of [null, 1, 'x', [], {}, { metadata: { name: 5 } }]) expect(slimNode(bad)).toBeNull();
  });
});

describe('error texts', () => {
  const ctx = {
    action: 'list nodes', server: 'https://k8s.example:6443', credentials: 'kubeconfig /etc/vxedge/kubeconfig (cluster.kubernetes.kubeconfig)',
    tls: { nowMs: Date.UTC(2026, 10, 24, 12), clientCert: { from: new Date('2025-11-24T12:00:00Z'), to: new Date('2026-11-24T11:59:00Z') } },
  };
  const status = (code: number, reason: string, message: string) => JSON.stringify({ kind: 'Status', code, reason, message });
  const table: [string, unknown, string[]][] = [
    ['401 from an API call, the client certificate ended a minute ago', { code: 401, body: undefined }, [
      'rejected our credentials (401 Unauthorized) when we tried to list nodes: the client certificate in kubeconfig /etc/vxedge/kubeconfig (cluster.kubernetes.kubeconfig) expired on 2026-11-24 11:59 UTC, ' +
      "and this machine's clock says 2026-11-24 12:00 UTC: renew it",
    ]],
    ['401 from a watch', new KubeHttpError(401, ''), ['401']],
    ['403 with a Status', { code: 403, body: status(403, 'Forbidden', 'nodes "x" is forbidden: User "u" cannot patch resource "nodes" in API group "" at the cluster scope') }, ['not allowed to patch nodes', 'User "u"', 'vxedge rbac -c FILE | kubectl apply -f -']],
    ['403 without a body (a proxy)', new KubeHttpError(403, ''), ['not allowed to list nodes (403 Forbidden)', 'vxedge rbac']],
    ['500', { code: 500, body: status(500, 'InternalError', 'etcd is down') }, ['https://k8s.example:6443 failed to list nodes (500: etcd is down); retrying']],
    ['422', { code: 422, body: status(422, 'Invalid', 'bad') }, ['list nodes failed: 422 Invalid: bad']],
    ['429 (its body plain text, as kube-apiserver sends it)', { code: 429, body: 'Too many requests, please try again later.\n' }, ['the API server at https://k8s.example:6443 is shedding load (429 Too Many Requests', 'refused to list nodes; retrying later']],
    ['429 from a watch', new KubeHttpError(429, 'Too many requests, please try again later.\n', 1_000), ['is shedding load (429 Too Many Requests']],
    ['refused', Object.assign(new Error('request to https://k8s.example:6443/api/v1/nodes failed, reason: connect ECONNREFUSED'), { name: 'FetchError', code: 'ECONNREFUSED' }), ['cannot reach the API server at https://k8s.example:6443 (ECONNREFUSED)', 'check the server URL in kubeconfig /etc/vxedge/kubeconfig']],
    ['DNS', Object.assign(new Error('getaddrinfo ENOTFOUND'), { name: 'FetchError', code: 'ENOTFOUND' }), ['cannot reach', 'ENOTFOUND']],
    ['cut', Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }), ['lost the connection to the API server at https://k8s.example:6443']],
    ['untrusted certificate', Object.assign(new Error('request failed, reason: self-signed certificate in certificate chain'), { name: 'FetchError', code: 'SELF_SIGNED_CERT_IN_CHAIN' }), ['TLS to the API server at https://k8s.example:6443 failed (SELF_SIGNED_CERT_IN_CHAIN): the API server\'s certificate is not signed by a CA in certificate-authority(-data); check certificate-authority(-data) and the server name in kubeconfig /etc/vxedge/kubeconfig']],
    ['a certificate not valid yet: the clock', Object.assign(new Error('certificate is not yet valid'), { code: 'CERT_NOT_YET_VALID' }), [
      "TLS to the API server at https://k8s.example:6443 failed (CERT_NOT_YET_VALID): the API server's certificate is not valid yet, or this machine's clock is wrong: it says 2026-11-24 12:00 UTC; check this machine's clock (timedatectl; a board without a battery-backed clock needs network time first)",
    ]],
    ['an expired certificate: the clock, else renewal', Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' }), [
      "the API server's certificate has expired, or this machine's clock is wrong: it says 2026-11-24 12:00 UTC; check this machine's clock (timedatectl), else the API server's certificate needs renewing",
    ]],
    ['a certificate for another name', Object.assign(new Error("Hostname/IP does not match certificate's altnames: Host: k8s.example. is not in the cert's altnames: DNS:other"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }), [
      "the API server's certificate does not name the host of the server URL of kubeconfig /etc/vxedge/kubeconfig (cluster.kubernetes.kubeconfig); put in the server URL of kubeconfig",
    ]],
    ['a signature that does not verify: the CA words', Object.assign(new Error('certificate signature failure'), { code: 'CERT_SIGNATURE_FAILURE' }), ['certificate we do not trust (CERT_SIGNATURE_FAILURE)', 'certificate-authority']],
    ['timeout', new KubeTimeoutError(30_000), ['did not answer when we tried to list nodes (no answer within 30 s)']],
    ['exec plugin missing', Object.assign(new Error('spawn aws ENOENT'), { code: 'ENOENT', syscall: 'spawn aws', path: 'aws' }), ['exec credential plugin "aws" (ENOENT)', 'users[].user.exec.command']],
    ['anything else', 'weird', ['list nodes failed: weird']],
    ['null', null, ['list nodes failed: null']],
  ];
  it('401 with a client certificate not valid yet (a clock in the past), and with one that is valid or none', () => {
    const at = (from: string, to: string) => ({ ...ctx, tls: { nowMs: ctx.tls.nowMs, clientCert: { from: new Date(from), to: new Date(to) } } });
    expect(describeKubeError({ code: 401 }, at('2026-11-24T12:01:00Z', '2027-11-24T12:00:00Z'))).toContain(
      "is valid only from 2026-11-24 12:01 UTC, and this machine's clock says 2026-11-24 12:00 UTC: renew it (a new kubeconfig from the cluster's admin), or set this machine's clock",
    );
    const general = /401 Unauthorized\) when we tried to list nodes: check the token, client certificate or exec plugin in kubeconfig \/etc\/vxedge\/kubeconfig/;
    expect(describeKubeError({ code: 401 }, at('2026-11-24T12:00:00Z', '2026-11-24T12:00:00Z'))).toMatch(general); // its last moment still counts
    expect(describeKubeError({ code: 401 }, { ...ctx, tls: { nowMs: ctx.tls.nowMs, clientCert: null } })).toMatch(general);
    expect(describeKubeError({ code: 401 }, { action: ctx.action, server: ctx.server, credentials: ctx.credentials })).toMatch(general);
  });

  for (const [what, err, fragments] of table) {
    it(what, () => {
      const text = describeKubeError(err, ctx);
      for (const f of fragments) expect(text).toContain(f);
    });
  }

  it('chooseKubeconfig: configured file, then $KUBECONFIG (first existing entry), then in-cluster, else none', () => {
    expect(chooseKubeconfig('/etc/vxedge/kc', { KUBECONFIG: '/x' })).toMatchObject({ kind: 'file', file: '/etc/vxedge/kc' });
    expect(chooseKubeconfig(null, { KUBECONFIG: `/nonexistent/a:${pki.caFile}` })).toMatchObject({ kind: 'file', file: pki.caFile });
    expect(chooseKubeconfig(null, { KUBECONFIG: '/nonexistent/a' })?.describe).toBe('kubeconfig /nonexistent/a ($KUBECONFIG)');
    expect(chooseKubeconfig(null, { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' })).toMatchObject({ kind: 'in-cluster' });
    expect(chooseKubeconfig(null, {})).toBeNull();
  });
});

describe('no unhandled rejections', () => {
  it('none were seen across this file', () => {
    expect(unhandled).toEqual([]);
  });
});
