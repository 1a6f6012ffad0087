// The kube-apiserver stand-in keeps the API's semantics for what vxedge uses, so tests of the
// Kubernetes source can trust it. Everything goes through the official client, as vxedge's
// requests do; plus the control API, and the stand-in run as a child process.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as k8s from '@kubernetes/client-node';
import { drive, flannelNode, jsonPatch, makeKubePki, mergePatch, startApiServer, type ApiUser } from '../support/kube-harness.js';

const USERS: ApiUser[] = [
  { name: 'admin', token: 'admin-token' },
  { name: 'lister', token: 'list-only', rules: [{ verbs: ['list'] }] },
  { name: 'own-node', token: 'own', rules: [{ verbs: ['get', 'patch'], resourceNames: ['a'] }] },
  { name: 'cert-user', cn: 'cert-user' },
];

const pki = makeKubePki(['cert-user']);
let api: Awaited<ReturnType<typeof startApiServer>>;
afterAll(() => pki.remove());
beforeAll(async () => {
  api = await startApiServer(pki, USERS, { retain: 5 });
});
afterAll(() => api.server.stop());
// Every test leaves the shared server as it found it, even when it fails half-way: no Nodes,
// listening, the flags at their defaults.
afterEach(async () => {
  for (const n of [...api.server.nodes.keys()]) api.server.deleteNode(n);
  api.server.expiredAsHttpStatus = false;
  api.server.hanging = false;
  api.server.watchCache = true;
  api.server.shedding = null;
  await api.server.up();
});

function client(auth: { token?: string; certFile?: string; keyFile?: string } = { token: 'admin-token' }) {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(api.kubeconfigFor(auth));
  return { kc, core: kc.makeApiClient(k8s.CoreV1Api) };
}

/** The Status object of a failed call. */
async function failure(p: Promise<unknown>): Promise<{ code: number; status: Record<string, any> | undefined }> {
  try {
    await p;
  } catch (e) {
    const err = e as { code: number; body?: string };
    return { code: err.code, status: err.body ? JSON.parse(err.body) : undefined };
  }
  throw new Error('the call succeeded');
}

type Event = { type: string; object: any };

/** A watch through the client's Watch; events and the end are collected. */
async function watch(kc: k8s.KubeConfig, query: Record<string, string | number | boolean>) {
  const events: Event[] = [];
  const out = { events, done: false as boolean, err: null as unknown, abort: () => {} };
  const ctl = await new k8s.Watch(kc).watch('/api/v1/nodes', query, (type, object) => events.push({ type, object }), (err) => {
    out.done = true;
    out.err = err;
  });
  out.abort = () => ctl.abort();
  return out;
}

const mergeOpts = (type: string) => k8s.setHeaderOptions('Content-Type', type);

describe('CRUD on /api/v1/nodes', () => {
  it('create, list with a resourceVersion, get, 409 AlreadyExists, 404 NotFound, delete', async () => {
    const { core } = client();
    const rv0 = api.server.rv;
    const created = await core.createNode({ body: flannelNode('a', { subnet: '10.244.1.0/24' }) as k8s.V1Node });
    expect(created.metadata?.resourceVersion).toBe(String(rv0 + 1));
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    const list = await core.listNode();
    expect(list.metadata?.resourceVersion).toBe(String(rv0 + 1));
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['a']);
    expect((await core.readNode({ name: 'a' })).spec?.podCIDR).toBe('10.244.1.0/24');

    const dup = await failure(core.createNode({ body: flannelNode('a', { subnet: '10.244.1.0/24' }) as k8s.V1Node }));
    expect(dup.code).toBe(409);
    expect(dup.status).toMatchObject({ kind: 'Status', reason: 'AlreadyExists', code: 409, message: 'nodes "a" already exists', details: { name: 'a', kind: 'nodes' } });
    const missing = await failure(core.readNode({ name: 'nope' }));
    expect(missing.status).toMatchObject({ reason: 'NotFound', code: 404, message: 'nodes "nope" not found' });
    expect((await failure(core.deleteNode({ name: 'nope' }))).code).toBe(404);
    expect((await failure(core.createNode({ body: { kind: 'Node', metadata: { name: 'Bad_Name' } } as k8s.V1Node }))).code).toBe(422);

    await core.deleteNode({ name: 'a' });
    expect((await core.listNode()).items).toHaveLength(0);
    expect(api.server.rv).toBe(rv0 + 2);
  });

  it('a paged list: pages of ?limit in name order from one snapshot, a continue token per page, 410 Expired once compacted', async () => {
    const { core } = client();
    for (const n of ['e', 'a', 'd', 'c', 'b']) api.server.addNode(flannelNode(n, { subnet: `10.244.${n.charCodeAt(0)}.0/24` }));
    const rv = String(api.server.rv);
    const first = await core.listNode({ limit: 2 });
    expect(first.items.map((n) => n.metadata?.name)).toEqual(['a', 'b']);
    expect(first.metadata).toMatchObject({ resourceVersion: rv, remainingItemCount: 3 });
    expect(JSON.parse(Buffer.from(first.metadata!._continue!, 'base64').toString())).toEqual({ v: 'meta.k8s.io/v1', rv: Number(rv), start: 'b\u0000' });
    // Changes after the first page do not show in the later ones: they are of its snapshot.
    api.server.deleteNode('c');
    api.server.addNode(flannelNode('bb', { subnet: '10.244.200.0/24' }));
    const second = await core.listNode({ limit: 2, _continue: first.metadata!._continue });
    expect(second.items.map((n) => n.metadata?.name)).toEqual(['c', 'd']);
    expect(second.metadata?.resourceVersion).toBe(rv);
    const last = await core.listNode({ limit: 2, _continue: second.metadata!._continue });
    expect(last.items.map((n) => n.metadata?.name)).toEqual(['e']);
    expect(last.metadata?._continue).toBeUndefined();
    // Without a limit: everything now, in name order.
    expect((await core.listNode()).items.map((n) => n.metadata?.name)).toEqual(['a', 'b', 'bb', 'd', 'e']);
    // A token whose version was compacted is too old.
    const again = await core.listNode({ limit: 2 });
    api.server.compact();
    const old = await failure(core.listNode({ limit: 2, _continue: again.metadata!._continue }));
    expect(old.code).toBe(410);
    expect(old.status).toMatchObject({ reason: 'Expired', message: expect.stringMatching(/^The provided continue parameter is too old/) });
  });

  it("a list by its resourceVersion: '0' from the watch cache, whole; 'N' not older than N, whole, 504 when N is ahead; unset from etcd, paged; no cache: every list paged from etcd", async () => {
    const { core } = client();
    for (const n of ['c', 'a', 'b']) api.server.addNode(flannelNode(n, { subnet: `10.244.${n.charCodeAt(0)}.0/24` }));
    const rv = api.server.rv;
    const names = (l: k8s.V1NodeList) => l.items.map((n) => n.metadata?.name);
    const servedFrom = () => (api.server.requests.at(-1) as { servedFrom?: string }).servedFrom;
    // The watch cache ignores the limit.
    const any = await core.listNode({ resourceVersion: '0', limit: 2 });
    expect([names(any), any.metadata?._continue, any.metadata?.resourceVersion, servedFrom()]).toEqual([['a', 'b', 'c'], undefined, String(rv), 'cache']);
    const notOlder = await core.listNode({ resourceVersion: String(rv - 1) });
    expect([names(notOlder), notOlder.metadata?.resourceVersion, servedFrom()]).toEqual([['a', 'b', 'c'], String(rv), 'cache']);
    const ahead = await failure(core.listNode({ resourceVersion: String(rv + 10) }));
    expect(ahead.code).toBe(504);
    expect(ahead.status).toMatchObject({ reason: 'Timeout', details: { causes: [{ reason: 'ResourceVersionTooLarge' }] } });
    const latest = await core.listNode({ limit: 2 });
    expect([names(latest), typeof latest.metadata?._continue, servedFrom()]).toEqual([['a', 'b'], 'string', 'etcd']);
    // What kube-apiserver refuses, and the exact read of an old version, which is not modelled.
    expect((await failure(core.listNode({ resourceVersion: '0', limit: 2, _continue: latest.metadata!._continue }))).code).toBe(400);
    expect((await failure(core.listNode({ resourceVersion: 'x' }))).code).toBe(400);
    expect((await failure(core.listNode({ resourceVersion: String(rv), limit: 2 }))).code).toBe(501);
    api.server.watchCache = false; // (afterEach turns it on again)
    const paged = await core.listNode({ resourceVersion: '0', limit: 2 });
    expect([names(paged), typeof paged.metadata?._continue, servedFrom()]).toEqual([['a', 'b'], 'string', 'etcd']);
    const whole = await core.listNode({ resourceVersion: String(rv) });
    expect([names(whole), servedFrom()]).toEqual([['a', 'b', 'c'], 'etcd']);
  });

  it('merge, strategic-merge and JSON patch; a no-op changes no version; podCIDR is immutable; unknown types get 415', async () => {
    const { core } = client();
    await core.createNode({ body: flannelNode('p', { subnet: '10.244.2.0/24' }) as k8s.V1Node });
    const merged = await core.patchNode({ name: 'p', body: { metadata: { annotations: { x: '1', 'node.alpha.kubernetes.io/ttl': null } } } }, mergeOpts(k8s.PatchStrategy.MergePatch));
    expect(merged.metadata?.annotations?.x).toBe('1');
    expect(merged.metadata?.annotations?.['node.alpha.kubernetes.io/ttl']).toBeUndefined();
    const smp = await core.patchNode({ name: 'p', body: { metadata: { labels: { y: '2' } } } }, mergeOpts(k8s.PatchStrategy.StrategicMergePatch));
    expect(smp.metadata?.labels?.y).toBe('2');
    const jp = await core.patchNode({ name: 'p', body: [{ op: 'replace', path: '/metadata/annotations/x', value: '3' }, { op: 'add', path: '/metadata/labels/a~1b', value: 'z' }] });
    expect(jp.metadata?.annotations?.x).toBe('3');
    expect(jp.metadata?.labels?.['a/b']).toBe('z');
    const rv = api.server.rv;
    const same = await core.patchNode({ name: 'p', body: { metadata: { labels: { y: '2' } } } }, mergeOpts(k8s.PatchStrategy.MergePatch));
    expect(same.metadata?.resourceVersion).toBe(String(rv));
    expect(api.server.rv).toBe(rv);

    const test = await failure(core.patchNode({ name: 'p', body: [{ op: 'test', path: '/metadata/labels/y', value: 'nope' }] }));
    expect(test.code).toBe(422);
    const cidr = await failure(core.patchNode({ name: 'p', body: { spec: { podCIDR: '10.244.3.0/24' } } }, mergeOpts(k8s.PatchStrategy.MergePatch)));
    expect(cidr.status).toMatchObject({ reason: 'Invalid', code: 422 });
    expect(cidr.status?.message).toContain('podCIDR');
    // spec.providerID too: set once from "", never changed (flannelNode carries an AWS one).
    const pid = await failure(core.patchNode({ name: 'p', body: { spec: { providerID: 'vxedge://p' } } }, mergeOpts(k8s.PatchStrategy.MergePatch)));
    expect(pid.status).toMatchObject({ reason: 'Invalid', code: 422, message: expect.stringContaining('spec.providerID: Forbidden: node updates may not change providerID except from "" to valid') });
    await core.createNode({ body: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'q' }, spec: {} } as k8s.V1Node });
    const set = await core.patchNode({ name: 'q', body: { spec: { providerID: 'vxedge://q' } } }, mergeOpts(k8s.PatchStrategy.MergePatch));
    expect(set.spec?.providerID).toBe('vxedge://q');
    expect((await failure(core.patchNode({ name: 'p', body: {} }, mergeOpts('application/apply-patch+yaml')))).code).toBe(415);
    expect((await failure(core.patchNode({ name: 'nope', body: {} }, mergeOpts(k8s.PatchStrategy.MergePatch)))).code).toBe(404);
  });

  it('merge patch and JSON patch follow RFC 7386 and RFC 6902', () => {
    // RFC 7386 appendix A, a few of its cases.
    expect(mergePatch({ a: 'b' }, { a: 'c' })).toEqual({ a: 'c' });
    expect(mergePatch({ a: 'b' }, { a: null })).toEqual({});
    expect(mergePatch({ a: [{ b: 'c' }] }, { a: [1] })).toEqual({ a: [1] });
    expect(mergePatch({ a: { b: 'c' } }, { a: { b: 'd', c: null } })).toEqual({ a: { b: 'd' } });
    expect(mergePatch(['a', 'b'], { a: 'b' })).toEqual({ a: 'b' });
    expect(jsonPatch({ foo: ['bar', 'baz'] }, [{ op: 'add', path: '/foo/1', value: 'qux' }], 'x')).toEqual({ foo: ['bar', 'qux', 'baz'] });
    expect(jsonPatch({ foo: ['bar'] }, [{ op: 'add', path: '/foo/-', value: 'end' }], 'x')).toEqual({ foo: ['bar', 'end'] });
    expect(jsonPatch({ baz: 'qux', foo: 'bar' }, [{ op: 'remove', path: '/baz' }], 'x')).toEqual({ foo: 'bar' });
    expect(() => jsonPatch({}, [{ op: 'remove', path: '/missing' }], 'x')).toThrow(/missing/);
  });
});

describe('authentication and authorization', () => {
  it('401 Status for a bad token and for no credentials; client certificates authenticate by CN', async () => {
    const bad = await failure(client({ token: 'wrong' }).core.listNode());
    expect(bad.code).toBe(401);
    expect(api.server.requests.at(-1)).toMatchObject({ status: 401, user: null });
    expect((await failure(client({}).core.listNode())).code).toBe(401);
    await client(pki.clients['cert-user']).core.listNode();
    expect(api.server.requests.at(-1)).toMatchObject({ status: 200, user: 'cert-user', verb: 'list' });
  });

  it('shedding load (API Priority and Fairness): 429, Retry-After, a plain-text body; after authentication; only the methods named; watches too', async () => {
    api.server.shedding = { retryAfter: '7', methods: null };
    expect((await failure(client({ token: 'wrong' }).core.listNode())).code).toBe(401);
    let shed: { code?: number; body?: unknown; headers?: Record<string, string> } = {};
    await client().core.listNode().catch((e) => (shed = e));
    expect(shed.code).toBe(429);
    expect(shed.headers?.['retry-after']).toBe('7');
    expect(shed.body).toBe('Too many requests, please try again later.\n');
    expect(api.server.requests.at(-1)).toMatchObject({ status: 429, user: 'admin' });
    const w = await watch(client().kc, {});
    await drive(null, () => w.done, 'the watch refused');
    expect((w.err as { statusCode?: number }).statusCode).toBe(429);
    api.server.shedding = { retryAfter: null, methods: ['POST'] };
    await client().core.listNode();
    const create = await client().core.createNode({ body: flannelNode('a', { subnet: '10.244.1.0/24' }) }).then(() => null, (e: { code?: number; headers?: Record<string, string> }) => e);
    expect(create?.code).toBe(429);
    expect(create?.headers?.['retry-after']).toBeUndefined();
    expect(api.server.nodes.size).toBe(0);
  });

  it('403 Forbidden Status naming the user and the verb; resourceNames limit by name', async () => {
    const lister = client({ token: 'list-only' }).core;
    await lister.listNode();
    const create = await failure(lister.createNode({ body: flannelNode('z', { subnet: '10.244.9.0/24' }) as k8s.V1Node }));
    expect(create.status).toMatchObject({ reason: 'Forbidden', code: 403 });
    expect(create.status?.message).toBe('nodes is forbidden: User "lister" cannot create resource "nodes" in API group "" at the cluster scope');
    await client().core.createNode({ body: flannelNode('a', { subnet: '10.244.1.0/24' }) as k8s.V1Node });
    await client().core.createNode({ body: flannelNode('b', { subnet: '10.244.2.0/24' }) as k8s.V1Node });
    const own = client({ token: 'own' }).core;
    await own.patchNode({ name: 'a', body: { metadata: { labels: { mine: 'yes' } } } }, mergeOpts(k8s.PatchStrategy.MergePatch));
    const other = await failure(own.patchNode({ name: 'b', body: { metadata: { labels: { mine: 'yes' } } } }, mergeOpts(k8s.PatchStrategy.MergePatch)));
    expect(other.status?.message).toBe('nodes "b" is forbidden: User "own-node" cannot patch resource "nodes" in API group "" at the cluster scope');
    expect((await failure(own.listNode())).code).toBe(403);
  });
});

describe('watch', () => {
  it('from a version: the events after it, in order; new events as they happen', async () => {
    const { kc } = client();
    const from = api.server.rv;
    api.server.addNode(flannelNode('w1', { subnet: '10.244.1.0/24' }));
    api.server.modifyNode('w1', { metadata: { labels: { x: '1' } } });
    const w = await watch(kc, { resourceVersion: String(from) });
    await drive(null, () => w.events.length === 2, 'replay');
    api.server.deleteNode('w1');
    await drive(null, () => w.events.length === 3, 'live');
    expect(w.events.map((e) => [e.type, e.object.metadata.name])).toEqual([['ADDED', 'w1'], ['MODIFIED', 'w1'], ['DELETED', 'w1']]);
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs).toEqual([from + 1, from + 2, from + 3]);
    w.abort();
  });

  it('without a version (or "0"): the current Nodes as ADDED first', async () => {
    const { kc } = client();
    api.server.addNode(flannelNode('w2', { subnet: '10.244.2.0/24' }));
    for (const rv of [undefined, '0']) {
      const w = await watch(kc, rv === undefined ? {} : { resourceVersion: rv });
      await drive(null, () => w.events.length === 1, 'initial state');
      expect(w.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'w2' } } });
      w.abort();
    }
  });

  it('bookmarks only when asked for, carrying the current version', async () => {
    const { kc } = client();
    const plain = await watch(kc, { resourceVersion: String(api.server.rv) });
    const withBm = await watch(kc, { resourceVersion: String(api.server.rv), allowWatchBookmarks: true });
    await drive(null, () => api.server.watchCount === 2, 'two watches');
    api.server.bumpVersion(10);
    api.server.bookmark();
    await drive(null, () => withBm.events.length === 1, 'a bookmark');
    expect(withBm.events[0]).toEqual({ type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(api.server.rv) } } });
    api.server.addNode(flannelNode('w3', { subnet: '10.244.3.0/24' }));
    await drive(null, () => plain.events.length === 1, 'an event');
    expect(plain.events[0].type).toBe('ADDED');
    plain.abort();
    withBm.abort();
  });

  it('timeoutSeconds: the server ends the stream', async () => {
    const { kc } = client();
    const w = await watch(kc, { resourceVersion: String(api.server.rv), timeoutSeconds: 1 });
    await drive(null, () => w.done, 'the end of the stream', { timeoutMs: 5_000 });
    expect(w.err).toBeNull();
  });

  it('410 Expired after a compaction, or once the version falls out of the retained window', async () => {
    const { kc } = client();
    const old = api.server.rv;
    api.server.bumpVersion();
    api.server.compact();
    const w = await watch(kc, { resourceVersion: String(old) });
    await drive(null, () => w.done, 'the end');
    expect(w.events).toEqual([{ type: 'ERROR', object: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired' }) }]);
    // retain: 5 events; six writes push the first out.
    const from = api.server.rv;
    api.server.addNode(flannelNode('w4', { subnet: '10.244.4.0/24' }));
    for (let i = 0; i < 5; i++) api.server.modifyNode('w4', { metadata: { labels: { i: String(i) } } });
    const late = await watch(kc, { resourceVersion: String(from) });
    await drive(null, () => late.done, 'the end');
    expect(late.events[0].object.code).toBe(410);
    const ok = await watch(kc, { resourceVersion: String(from + 1) });
    await drive(null, () => ok.events.length === 5, 'the retained five');
    ok.abort();
    // The other way servers say it: an HTTP 410 with the Status.
    api.server.expiredAsHttpStatus = true;
    const gone = await watch(kc, { resourceVersion: String(from) });
    api.server.expiredAsHttpStatus = false;
    await drive(null, () => gone.done, 'the end');
    expect((gone.err as { statusCode: number }).statusCode).toBe(410);
    expect(api.server.requests.at(-1)).toMatchObject({ verb: 'watch', status: 410 });
  });
});

describe('control', () => {
  it('dropConnections ends watches with an error; stall silences open watches only; down/up', async () => {
    const { kc, core } = client();
    const w = await watch(kc, { resourceVersion: String(api.server.rv) });
    await drive(null, () => api.server.watchCount === 1, 'watching');
    api.server.dropConnections();
    await drive(null, () => w.done, 'dropped');
    expect(w.err).toBeTruthy();

    const a = await watch(kc, { resourceVersion: String(api.server.rv) });
    await drive(null, () => api.server.watchCount === 1, 'watching');
    api.server.stall();
    const from = String(api.server.rv);
    api.server.addNode(flannelNode('c1', { subnet: '10.244.5.0/24' }));
    const b = await watch(kc, { resourceVersion: from });
    await drive(null, () => b.events.length === 1, 'a fresh watch sees it');
    expect(a.events).toHaveLength(0);
    expect(a.done).toBe(false);
    a.abort();
    b.abort();

    await api.server.down();
    const refused = await core.listNode().then(() => null, (e) => e);
    expect(refused?.code).toBe('ECONNREFUSED');
    await api.server.up();
    expect((await core.listNode()).items.map((n) => n.metadata?.name)).toEqual(['c1']);
  });

  it('logs each request: method, verb, name, user, content type, status', async () => {
    const { core } = client();
    const n = api.server.requests.length;
    await core.createNode({ body: flannelNode('r1', { subnet: '10.244.6.0/24' }) as k8s.V1Node });
    await core.patchNode({ name: 'r1', body: { metadata: { labels: { a: 'b' } } } }, mergeOpts(k8s.PatchStrategy.MergePatch));
    expect(api.server.requests.slice(n)).toEqual([
      { method: 'POST', path: '/api/v1/nodes', query: {}, contentType: 'application/json', user: 'admin', verb: 'create', name: 'r1', status: 201 },
      { method: 'PATCH', path: '/api/v1/nodes/r1', query: {}, contentType: 'application/merge-patch+json', user: 'admin', verb: 'patch', name: 'r1', status: 200 },
    ]);
  });
});

describe('as a child process', () => {
  let child: ChildProcess | undefined;
  const dir = mkdtempSync(path.join(tmpdir(), 'vxk8s-child-'));
  afterAll(() => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('listens where told, writes its CA and kubeconfig, and takes commands on stdin', async () => {
    const script = path.join(import.meta.dirname, '..', 'support', 'kube-apiserver.mjs');
    const users = path.join(dir, 'users.json');
    writeFileSync(users, JSON.stringify([{ name: 'system:serviceaccount:kube-system:gw', token: 'gw', rules: [{ verbs: ['list'] }] }]));
    child = spawn(process.execPath, [script, '--listen', '127.0.0.1:0', '--dir', dir, '--users', users], { stdio: ['pipe', 'pipe', 'inherit'], timeout: 30_000 });
    const replies: Record<string, any>[] = [];
    createInterface({ input: child.stdout! }).on('line', (l) => replies.push(JSON.parse(l)));
    const ready = await drive(null, () => replies.find((r) => r.ready), 'ready', { timeoutMs: 15_000 });
    expect(ready.ready).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const send = async (id: number, cmd: string, args: unknown[] = []) => {
      child!.stdin!.write(JSON.stringify({ id, cmd, args }) + '\n');
      return drive(null, () => replies.find((r) => r.id === id), `reply ${id}`);
    };
    expect((await send(1, 'addNode', [flannelNode('k1', { subnet: '10.244.1.0/24' })])).ok).toBe(true);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path.join(dir, 'kubeconfig'));
    const list = await kc.makeApiClient(k8s.CoreV1Api).listNode();
    expect(list.items.map((n) => n.metadata?.name)).toEqual(['k1']);
    const gw = new k8s.KubeConfig();
    gw.loadFromFile(path.join(dir, 'kubeconfig-system_serviceaccount_kube-system_gw'));
    const forbidden = await gw.makeApiClient(k8s.CoreV1Api).createNode({ body: flannelNode('k2', { subnet: '10.244.2.0/24' }) as k8s.V1Node }).then(() => null, (e) => e);
    expect(forbidden?.code).toBe(403);
    expect((await send(4, 'set', ['hanging', true])).ok).toBe(true);
    expect((await send(5, 'set', ['hanging', false])).ok).toBe(true);
    const log = await send(2, 'requests');
    expect(log.result.map((r: { verb: string; user: string; status: number }) => `${r.verb} ${r.user} ${r.status}`)).toEqual([
      'list admin 200',
      'create system:serviceaccount:kube-system:gw 403',
    ]);
    expect((await send(3, 'frobnicate')).ok).toBe(false);
    child.stdin!.end();
    await drive(null, () => child!.exitCode !== null, 'exit on end of input');
    expect(child.exitCode).toBe(0);
  });
});
