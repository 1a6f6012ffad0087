// src/cluster/kube-client.ts as HTTP: the six calls and the watch the Kubernetes source makes
// are plain HTTP(S) with the options the client's KubeConfig gives.
// Against a local HTTP server that records each request: method, path, headers and body as
// the API server would see them; a non-2xx answer carries its status and Status object as the
// client's ApiException did (so kube-errors.ts words it); an answer that is not JSON, one over
// the size bound, one that never comes (our clock), and abortAll. The same calls against the
// stand-in with TLS, tokens, client certificates and exec plugins: kubernetes-source.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { connectNodeApi, KubeHttpError, type NodeApi } from '../../src/cluster/kube-client.js';
import { describeKubeError, httpStatusOf, KubeTimeoutError } from '../../src/cluster/kube-errors.js';
import { settle } from '../support/capture-log.js';
import { ManualClock, drive } from '../support/clock.js';

interface Seen { method: string; url: string; headers: http.IncomingHttpHeaders; body: string; closed?: boolean }
type Answer = { status: number; body: string; type?: string; gzip?: boolean; headers?: Record<string, string>; chunks?: string[] } | 'never';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-kube-client-'));
let server: http.Server;
let seen: Seen[] = [];
let answer: (s: Seen) => Answer = () => ({ status: 200, body: '{}' });
let kubeconfig: string;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (b: Buffer) => (body += b.toString()));
    req.on('end', () => {
      const s: Seen = { method: req.method!, url: req.url!, headers: req.headers, body };
      seen.push(s);
      res.on('close', () => (s.closed = true)); // answered, or the client went away
      const a = answer(s);
      if (a === 'never') return;
      // As kube-apiserver's APIResponseCompression: gzip only to a client that accepts it.
      const gz = a.gzip === true && /\bgzip\b/.test(String(req.headers['accept-encoding']));
      res.writeHead(a.status, { 'Content-Type': a.type ?? 'application/json', ...(gz ? { 'Content-Encoding': 'gzip' } : {}), ...a.headers });
      if (!a.chunks) return res.end(gz ? gzipSync(a.body) : a.body);
      // A stream (a watch): each chunk written on its own turn, so the client reads them apart.
      const rest = [...a.chunks];
      const next = () => (rest.length > 0 ? res.write(rest.shift(), () => setTimeout(next, 5)) : res.end());
      next();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  kubeconfig = path.join(TMP, 'kubeconfig');
  // Plain HTTP is allowed by the client only with insecure-skip-tls-verify.
  writeFileSync(kubeconfig, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
    clusters: [{ name: 'k', cluster: { server: `http://127.0.0.1:${port}/`, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'u', user: { token: 'gw-token' } }],
    contexts: [{ name: 'c', context: { cluster: 'k', user: 'u' } }],
  }));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  rmSync(TMP, { recursive: true, force: true });
});

async function api(maxAnswerBytes?: number): Promise<{ node: NodeApi; clock: ManualClock }> {
  seen = [];
  const clock = new ManualClock();
  const node = await connectNodeApi({ kind: 'file', file: kubeconfig, describe: `kubeconfig ${kubeconfig}` }, clock, 8_000, maxAnswerBytes);
  return { node, clock };
}

/** The request's headers that say who asks and what it sends. */
const who = (s: Seen) => ({ authorization: s.headers.authorization, accept: s.headers.accept, contentType: s.headers['content-type'] });

describe('kube-client: the Node calls as HTTP', () => {
  it('list: GET /api/v1/nodes with the token; items and the resourceVersion from the answer', async () => {
    answer = () => ({ status: 200, body: JSON.stringify({ kind: 'NodeList', metadata: { resourceVersion: '4711' }, items: [{ metadata: { name: 'aws-1' } }] }) });
    const { node } = await api();
    expect(node.server).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/?$/); // the kubeconfig says ".../": no "//api" below
    expect(await node.list((n) => n)).toEqual({ items: [{ metadata: { name: 'aws-1' } }], resourceVersion: '4711', paged: false });
    expect(seen.map((s) => [s.method, s.url])).toEqual([['GET', '/api/v1/nodes?limit=500']]);
    expect(who(seen[0])).toEqual({ authorization: 'Bearer gw-token', accept: 'application/json', contentType: undefined });
    // A list that is not one (no items) is an empty list, not a crash.
    answer = () => ({ status: 200, body: '{"kind":"Status"}' });
    expect(await node.list((n) => n)).toEqual({ items: [], resourceVersion: '', paged: false });
  });

  it('list hands each Node to keep as its page streams in and holds only what keep returns; a Node that is not JSON fails the list', async () => {
    // Items before the metadata, and a big one: the order and size of a real list do not matter.
    answer = () => ({ status: 200, body: `{"items":[{"n":1},{"n":2,"images":"${'x'.repeat(200_000)}"},{"n":3}],"metadata":{"resourceVersion":"9"}}` });
    const { node } = await api();
    const given: number[] = [];
    const r = await node.list((n) => {
      const k = (n as { n: number }).n;
      given.push(k);
      return k === 2 ? null : { k };
    });
    expect(given).toEqual([1, 2, 3]);
    expect(r).toEqual({ items: [{ k: 1 }, { k: 3 }], resourceVersion: '9', paged: false });
    answer = () => ({ status: 200, body: '{"metadata":{"resourceVersion":"9"},"items":[{"n":1},{n:2}]}' });
    await expect(node.list((n) => n)).rejects.toThrow('the API server answered GET /api/v1/nodes?limit=500 with 200 and a body that is not JSON');
  });

  it('list in pages: each continue token followed, the items in order, the version of the first page', async () => {
    const pages = [
      { metadata: { resourceVersion: '10', continue: 'tok-1', remainingItemCount: 3 }, items: [{ n: 1 }, { n: 2 }] },
      { metadata: { resourceVersion: '10', continue: 'tok+2/=' }, items: [{ n: 3 }, { n: 4 }] },
      { metadata: { resourceVersion: '10' }, items: [{ n: 5 }] },
    ];
    answer = (s) => {
      const c = new URL(s.url, 'http://x').searchParams.get('continue');
      return { status: 200, body: JSON.stringify(pages[c === null ? 0 : c === 'tok-1' ? 1 : 2]) };
    };
    const { node } = await api();
    expect(await node.list((n) => n)).toEqual({ items: [1, 2, 3, 4, 5].map((n) => ({ n })), resourceVersion: '10', paged: true });
    expect(seen.map((s) => s.url)).toEqual(['/api/v1/nodes?limit=500', '/api/v1/nodes?limit=500&continue=tok-1', '/api/v1/nodes?limit=500&continue=tok%2B2%2F%3D']);
  });

  it("the version asked for, as client-go's reflector asks: '0' any (the watch cache, which ignores the limit), 'N' not older than N (whole: no limit), '' the latest in pages", async () => {
    answer = () => ({ status: 200, body: JSON.stringify({ metadata: { resourceVersion: '50' }, items: [{ n: 1 }] }) });
    const { node } = await api();
    expect(await node.list((n) => n, '0')).toEqual({ items: [{ n: 1 }], resourceVersion: '50', paged: false });
    expect(await node.list((n) => n, '42')).toEqual({ items: [{ n: 1 }], resourceVersion: '50', paged: false });
    expect(await node.list((n) => n, '')).toEqual({ items: [{ n: 1 }], resourceVersion: '50', paged: false });
    expect(seen.map((s) => s.url)).toEqual(['/api/v1/nodes?resourceVersion=0&limit=500', '/api/v1/nodes?resourceVersion=42', '/api/v1/nodes?limit=500']);
    // Any version, from a server without a watch cache: pages, each later one by its token
    // alone (the API refuses a resourceVersion beside a continue token).
    seen = [];
    answer = (s) => ({ status: 200, body: JSON.stringify(s.url.includes('continue=') ? { metadata: { resourceVersion: '60' }, items: [{ n: 2 }] } : { metadata: { resourceVersion: '60', continue: 'c1' }, items: [{ n: 1 }] }) });
    expect(await node.list((n) => n, '0')).toEqual({ items: [{ n: 1 }, { n: 2 }], resourceVersion: '60', paged: true });
    expect(seen.map((s) => s.url)).toEqual(['/api/v1/nodes?resourceVersion=0&limit=500', '/api/v1/nodes?limit=500&continue=c1']);
  });

  it('a version the server no longer has (410) or has not reached (504 Too large resource version) is listed again at once as the latest; other failures are the error', async () => {
    const expired = { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 42 (77)' };
    const tooLarge = { kind: 'Status', code: 504, reason: 'Timeout', message: 'Too large resource version: 42, current: 30', details: { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }] } };
    // API servers 1.17.0-1.18.5 said it in the message alone.
    const tooLargeOld = { kind: 'Status', code: 504, reason: 'Timeout', message: 'Too large resource version: 42, current: 30' };
    const timeout = { kind: 'Status', code: 504, reason: 'Timeout', message: 'Timeout: request did not complete within 60s' };
    const latest = { metadata: { resourceVersion: '77' }, items: [{ n: 7 }] };
    const { node } = await api();
    for (const [code, refusal] of [[410, expired], [504, tooLarge], [504, tooLargeOld]] as const) {
      seen = [];
      answer = (s) => (s.url.includes('resourceVersion=') ? { status: code, body: JSON.stringify(refusal) } : { status: 200, body: JSON.stringify(latest) });
      expect(await node.list((n) => n, '42')).toEqual({ items: [{ n: 7 }], resourceVersion: '77', paged: false });
      expect(seen.map((s) => s.url)).toEqual(['/api/v1/nodes?resourceVersion=42', '/api/v1/nodes?limit=500']);
    }
    // A timeout that is not about the version, and a 410 to a list of the latest: the error.
    answer = (s) => (s.url.includes('resourceVersion=') ? { status: 504, body: JSON.stringify(timeout) } : { status: 200, body: JSON.stringify(latest) });
    expect(httpStatusOf(await node.list((n) => n, '42').catch((x: unknown) => x))).toBe(504);
    seen = [];
    answer = () => ({ status: 410, body: JSON.stringify(expired) });
    expect(httpStatusOf(await node.list((n) => n, '').catch((x: unknown) => x))).toBe(410);
    expect(seen).toHaveLength(1);
  });

  it('a continue token that expired between pages starts the list again, once; a second 410 is the error', async () => {
    const expired = { kind: 'Status', code: 410, reason: 'Expired', message: 'The provided continue parameter is too old to display a consistent list result.' };
    let lists = 0;
    let failures = 1;
    answer = (s) => {
      if (!s.url.includes('continue=')) return { status: 200, body: JSON.stringify({ metadata: { resourceVersion: String(20 + ++lists), continue: 'more' }, items: [{ page: 1 }] }) };
      return failures-- > 0 ? { status: 410, body: JSON.stringify(expired) } : { status: 200, body: JSON.stringify({ metadata: { resourceVersion: '99' }, items: [{ page: 2 }] }) };
    };
    const { node } = await api();
    expect(await node.list((n) => n)).toEqual({ items: [{ page: 1 }, { page: 2 }], resourceVersion: '22', paged: true });
    expect(seen).toHaveLength(4);
    failures = 2;
    const e = await node.list((n) => n).catch((x: unknown) => x);
    expect(httpStatusOf(e)).toBe(410);
    expect(seen).toHaveLength(8);
  });

  it('get, create, merge patch, delete: the methods, paths, bodies and content types the API expects', async () => {
    answer = (s) => ({ status: s.method === 'POST' ? 201 : 200, body: JSON.stringify({ kind: 'Node', metadata: { name: 'vxedge-lab-edge-1', resourceVersion: '9' } }) });
    const { node } = await api();
    const manifest = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'vxedge-lab-edge-1', annotations: { 'flannel.alpha.coreos.com/public-ip': '198.51.100.2' } }, spec: { podCIDR: '10.244.100.0/24' } };
    expect(await node.get('vxedge-lab-edge-1')).toMatchObject({ metadata: { resourceVersion: '9' } });
    expect(await node.create(manifest)).toMatchObject({ kind: 'Node' });
    await node.mergePatch('vxedge-lab-edge-1', { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': null } } });
    await node.delete('vxedge-lab-edge-1');
    expect(seen.map((s) => [s.method, s.url, s.headers['content-type'] ?? null])).toEqual([
      ['GET', '/api/v1/nodes/vxedge-lab-edge-1', null],
      ['POST', '/api/v1/nodes', 'application/json'],
      ['PATCH', '/api/v1/nodes/vxedge-lab-edge-1', 'application/merge-patch+json'],
      ['DELETE', '/api/v1/nodes/vxedge-lab-edge-1', null],
    ]);
    // The body is the object as given: nothing renamed or dropped (a null deletes in a merge patch).
    expect(JSON.parse(seen[1].body)).toEqual(manifest);
    expect(JSON.parse(seen[2].body)).toEqual({ metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': null } } });
    expect(seen.every((s) => s.headers.authorization === 'Bearer gw-token')).toBe(true);
  });

  it('mayI: a SelfSubjectAccessReview for nodes, by name when given; allowed only when the answer says true', async () => {
    answer = (s) => ({ status: 201, body: JSON.stringify({ status: { allowed: JSON.parse(s.body).spec.resourceAttributes.verb === 'create' } }) });
    const { node } = await api();
    expect(await node.mayI('create', null)).toBe(true);
    expect(await node.mayI('patch', 'vxedge-lab-edge-1')).toBe(false);
    expect(seen.map((s) => [s.method, s.url])).toEqual([
      ['POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews'],
      ['POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews'],
    ]);
    expect(JSON.parse(seen[1].body)).toEqual({
      apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview',
      spec: { resourceAttributes: { group: '', resource: 'nodes', verb: 'patch', name: 'vxedge-lab-edge-1' } },
    });
    answer = () => ({ status: 201, body: '{"status":{"allowed":"yes"}}' });
    expect(await node.mayI('get', null)).toBe(false);
  });

  it('a non-2xx answer is an error with the status and the Status object, worded as before', async () => {
    const status = { kind: 'Status', status: 'Failure', reason: 'Forbidden', code: 403, message: 'nodes is forbidden: User "system:serviceaccount:kube-system:vxedge" cannot list resource "nodes" in API group "" at the cluster scope' };
    answer = () => ({ status: 403, body: JSON.stringify(status) });
    const { node } = await api();
    const e = await node.list((n) => n).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KubeHttpError);
    expect(httpStatusOf(e)).toBe(403);
    expect(describeKubeError(e, { action: 'list nodes', server: node.server, credentials: 'kubeconfig k' })).toBe(`not allowed to list nodes (403 Forbidden: ${status.message}): grant it with \`vxedge rbac -c FILE | kubectl apply -f -\``);
    answer = () => ({ status: 409, body: JSON.stringify({ kind: 'Status', reason: 'AlreadyExists', code: 409, message: 'nodes "x" already exists' }) });
    expect(httpStatusOf(await node.create({}).catch((x: unknown) => x))).toBe(409);
    // A 401 often has no Status body at all.
    answer = () => ({ status: 401, body: 'Unauthorized', type: 'text/plain' });
    expect(describeKubeError(await node.get('x').catch((x: unknown) => x), { action: 'get node x', server: node.server, credentials: 'kubeconfig k' })).toMatch(/rejected our credentials \(401 Unauthorized\)/);
  });

  it('a 200 that is not JSON, and an answer over the size bound, are errors that say so', async () => {
    answer = () => ({ status: 200, body: '<html>proxy login</html>', type: 'text/html' });
    const { node } = await api(1024);
    await expect(node.list((n) => n)).rejects.toThrow('the API server answered GET /api/v1/nodes?limit=500 with 200 and a body that is not JSON');
    answer = () => ({ status: 200, body: JSON.stringify({ items: [{ pad: 'x'.repeat(2000) }] }) });
    await expect(node.list((n) => n)).rejects.toThrow("the API server's answer is over 1024 bytes");
    answer = () => ({ status: 200, body: JSON.stringify({ items: [{ pad: 'x'.repeat(900) }] }) });
    expect((await node.list((n) => n)).items).toHaveLength(1);
  });

  it('accepts gzip and reads it; the size bound holds for what it unpacks to', async () => {
    const items = Array.from({ length: 50 }, (_, i) => ({ metadata: { name: `aws-${i}`, annotations: { 'flannel.alpha.coreos.com/backend-type': 'vxlan' } } }));
    answer = () => ({ status: 200, body: JSON.stringify({ metadata: { resourceVersion: '7' }, items }), gzip: true });
    const { node } = await api(64 * 1024);
    expect(await node.list((n) => n)).toEqual({ items, resourceVersion: '7', paged: false });
    expect(seen[0].headers['accept-encoding']).toBe('gzip');
    // 2 MB of one letter packs into ~2 KB: refused for what it is, not for what came.
    answer = () => ({ status: 200, body: JSON.stringify({ items: [{ pad: 'x'.repeat(2_000_000) }] }), gzip: true });
    await expect(node.list((n) => n)).rejects.toThrow("the API server's answer is over 65536 bytes");
  });

  it('a call that gets no answer ends at the timeout on our clock; abortAll ends every call in flight', async () => {
    answer = () => 'never';
    const { node, clock } = await api();
    const late = node.get('x').catch((x: unknown) => x);
    for (let i = 0; i < 50 && seen.length === 0; i++) await settle();
    expect(seen).toHaveLength(1);
    clock.advance(7_999);
    await settle();
    clock.advance(1);
    const e = await late;
    expect(e).toBeInstanceOf(KubeTimeoutError);
    expect(describeKubeError(e, { action: 'get node x', server: node.server, credentials: 'kubeconfig k' })).toMatch(/did not answer when we tried to get node x \(no answer within 8 s\)/);

    const stopped = node.list((n) => n).catch((x: unknown) => x);
    for (let i = 0; i < 50 && seen.length === 1; i++) await settle();
    node.abortAll();
    expect(String(await stopped)).toMatch(/stopped/);
  });
});

describe('kube-client: the watch', () => {
  /** A watch's callbacks as a log, and its end. */
  function watcher(node: NodeApi, rv = '7', timeoutS = 300) {
    const log: string[] = [];
    let done: (err: unknown) => void = () => {};
    const ended = new Promise<unknown>((r) => (done = r));
    const cancel = node.watch(rv, timeoutS, {
      onOpen: () => log.push('open'),
      onEvent: (type, obj) => log.push(`${String(type)} ${JSON.stringify(obj)}`),
      onDone: (err) => {
        log.push('done');
        done(err);
      },
    });
    return { log, ended, cancel };
  }

  it('GET ?watch with bookmarks, the version and the timeout; one event a line, however the stream is cut; done(null) when the server ends it', async () => {
    const a = JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'aws-1', resourceVersion: '8' } } });
    const b = JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } });
    const c = JSON.stringify({ type: 'DELETED', object: { metadata: { name: 'aws-\u00e9' } } });
    answer = () => ({ status: 200, body: '', chunks: [a.slice(0, 10), `${a.slice(10)}\n${b}\n`, '\n', c.slice(0, 30), `${c.slice(30)}\n`] });
    const { node } = await api();
    const w = watcher(node);
    expect(await w.ended).toBeNull();
    expect(seen.map((x) => [x.method, x.url])).toEqual([['GET', '/api/v1/nodes?watch=true&resourceVersion=7&allowWatchBookmarks=true&timeoutSeconds=300']]);
    expect(who(seen[0])).toEqual({ authorization: 'Bearer gw-token', accept: 'application/json', contentType: undefined });
    expect(w.log).toEqual(['open', `ADDED ${JSON.stringify(JSON.parse(a).object)}`, `BOOKMARK ${JSON.stringify(JSON.parse(b).object)}`, `DELETED {"metadata":{"name":"aws-é"}}`, 'done']);
  });

  it('a refused watch is read as any other answer: its Status, and a 429\'s Retry-After', async () => {
    const { node } = await api();
    answer = () => ({ status: 429, body: 'Too many requests, please try again later.\n', type: 'text/plain', headers: { 'Retry-After': '5' } });
    const shed = (await watcher(node).ended) as KubeHttpError;
    expect(shed).toBeInstanceOf(KubeHttpError);
    expect([shed.code, shed.retryAfterMs]).toEqual([429, 5_000]);
    answer = () => ({ status: 403, body: JSON.stringify({ kind: 'Status', code: 403, reason: 'Forbidden', message: 'nodes is forbidden: User "u" cannot watch resource "nodes" in API group "" at the cluster scope' }) });
    const w = watcher(node);
    const refused = await w.ended;
    expect(w.log).toEqual(['done']); // never opened
    expect(describeKubeError(refused, { action: 'watch nodes', server: null, credentials: 'k' })).toContain('not allowed to watch nodes (403 Forbidden: nodes is forbidden: User "u" cannot watch');
  });

  it('a line that is not JSON, or longer than the bound, ends the watch with an error that says so', async () => {
    const { node } = await api(1_000);
    answer = () => ({ status: 200, body: '', chunks: ['{"type":"ADDED","object":{}}\n', '<html>proxy error</html>\n'] });
    const w = watcher(node);
    expect(String(await w.ended)).toContain('a watch event that is not JSON');
    expect(w.log).toEqual(['open', 'ADDED {}', 'done']);
    answer = () => ({ status: 200, body: '', chunks: ['{"type":"ADDED","object":{"x":"', 'y'.repeat(600), 'y'.repeat(600), '"}}\n'] });
    expect(String(await watcher(node).ended)).toContain('a watch event from the API server is over 1000 bytes');
  });

  it('cancel, before the answer or during the stream: nothing is delivered after it', async () => {
    const { node } = await api();
    answer = () => 'never';
    const early = watcher(node);
    await drive(null, () => seen.length === 1, 'the watch at the server');
    early.cancel();
    answer = () => ({ status: 200, body: '', chunks: ['{"type":"ADDED","object":{}}\n', ...Array.from({ length: 20 }, () => '{"type":"MODIFIED","object":{}}\n')] });
    const late = watcher(node);
    await drive(null, () => late.log.includes('ADDED {}'), 'the first event');
    late.cancel();
    const seenThen = late.log.length;
    // Both connections closed at the server (the cancels reached it); then a few turns for
    // anything the client had already read.
    await drive(null, () => seen.length === 2 && seen.every((x) => x.closed), 'both watches closed at the server');
    await settle();
    expect(early.log).toEqual([]);
    expect(late.log.length).toBe(seenThen);
    expect(late.log).not.toContain('done');
  });
});
