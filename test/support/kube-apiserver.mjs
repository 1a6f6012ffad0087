// A stand-in for kube-apiserver, for the part of the Node API that vxedge uses. No real
// apiserver can be installed here, so this keeps the API's semantics instead, and tests drive
// it through the official client (@kubernetes/client-node), so the wire is real on our side.
//
// What it keeps from the real thing:
//   - HTTPS only; bearer-token and client-certificate (CN = user) authentication; 401 Status
//     for anything else;
//   - RBAC-style authorization per user, with ClusterRole rules ({verbs, resourceNames?});
//     403 Status whose message names the verb, as kube-apiserver words it;
//   - one global, monotonically increasing resourceVersion; a no-op patch changes nothing;
//   - GET /api/v1/nodes (list, metadata.resourceVersion, items in name order), by its
//     resourceVersion as kube-apiserver serves it (each request's log entry says `servedFrom`):
//     unset, a consistent read "from etcd"; "0", any version, from the watch cache, which
//     ignores ?limit and answers everything at once; "N" without ?limit, not older than N,
//     from the watch cache (504 "Too large resource version" when N is ahead of the server: the
//     real one waits up to 3 s for its cache first); with `watchCache` off, every list is read
//     "from etcd" and paged. "N" with ?limit (an exact read at N, from etcd) is refused with
//     501: kept versions are not modelled, and vxedge never asks for one. A paged read: with
//     ?limit=N a page of N and `metadata.continue` (a token as kube-apiserver makes it) while
//     more remain, each later page served from the first page's snapshot (the same
//     resourceVersion, whatever changed since), and 410 Expired for a token whose version was
//     compacted (`compact`); a continue token with a resourceVersion is a 400, as there;
//     ?watch=1 streams ADDED/MODIFIED/
//     DELETED events after `resourceVersion` (or the current state as ADDED when it is unset
//     or "0"), BOOKMARKs with allowWatchBookmarks, closes after timeoutSeconds, and sends an
//     ERROR event with a 410 Expired Status when the version is older than the retained history
//     (or, with `expiredAsHttpStatus`, answers HTTP 410, as some servers and proxies do);
//   - POST (409 AlreadyExists), GET/PUT/DELETE /api/v1/nodes/NAME (404 NotFound), PATCH with
//     merge-patch, strategic-merge-patch (as a merge: enough for maps) and json-patch; podCIDR
//     cannot change once set (422), as on a real cluster;
//   - POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews, answered for any
//     authenticated user by the same rules (Nodes only), as `kubectl auth can-i` asks;
//   - with `shedding` set, API Priority and Fairness rejecting requests: after authentication,
//     before authorization, a 429 with a plain-text body and a Retry-After header, as its
//     filter writes them (watches included).
// Control for tests: addNode/modifyNode/deleteNode (as another client would), bumpVersion
// (writes to other resources), compact (forces 410), bookmark, dropConnections, stall (the
// open watches die silently), `hanging` (no answers at all), `shedding` (429s), down/up, and
// `requests`, the log of what clients did.
//
// In-process: `const s = new KubeApiServer({ pki, users }); await s.start()`.
// As a child (e.g. inside a network namespace):
//   node test/support/kube-apiserver.mjs --listen IP:PORT --dir D [--users FILE]
// writes D/ca.crt and D/kubeconfig (token "admin-token", every right), plus D/kubeconfig-NAME
// for each user with a token in FILE (a JSON array of {name, token, rules}), prints
// {"ready":URL}, then takes one JSON command a line on stdin, {"id":1,"cmd":"addNode",
// "args":[node]} (any control method; "set" with [flag, value] for the three flags; "requests";
// "nodes"), answering {"id":1,"ok":true,"result":…} on stdout. It exits when stdin ends.
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { kubeconfig, makePki } from './kube-pki.mjs';

const MAX_BODY = 1 << 20;
const ALL_RIGHTS = [{ verbs: ['*'] }];
const clone = (v) => (v === undefined ? v : JSON.parse(JSON.stringify(v)));
const isObj = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

function status(code, reason, message, details) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** status()'s arguments for a version the server has not reached (504, cause ResourceVersionTooLarge), as the watch cache answers after its wait. */
function tooLargeVersion(requested, current) {
  return [504, 'Timeout', `Too large resource version: ${requested}, current: ${current}`, {
    causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
    retryAfterSeconds: 1,
  }];
}

class HttpError extends Error {
  constructor(code, reason, message, details) {
    super(message);
    this.status = status(code, reason, message, details);
  }
}

const notFound = (name) => new HttpError(404, 'NotFound', `nodes "${name}" not found`, { name, kind: 'nodes' });
const invalid = (name, why) => new HttpError(422, 'Invalid', `Node "${name}" is invalid: ${why}`, { name, kind: 'Node' });

const SSAR_PATH = '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews';

/** RBAC as kube-apiserver evaluates ClusterRole rules for nodes; `name` null for list/watch/create. */
export function rbacAllows(rules, verb, name) {
  return rules.some((r) =>
    (r.verbs.includes('*') || r.verbs.includes(verb)) &&
    (!r.resources || r.resources.includes('nodes') || r.resources.includes('*')) &&
    (!r.resourceNames?.length || (name !== null && r.resourceNames.includes(name))));
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target, patch) {
  if (!isObj(patch)) return clone(patch);
  const out = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902 JSON patch (add, remove, replace, test); throws HttpError 422 on a failing op. */
export function jsonPatch(doc, ops, name) {
  if (!Array.isArray(ops)) throw new HttpError(400, 'BadRequest', 'a JSON patch is an array of operations');
  let out = clone(doc);
  for (const op of ops) {
    const keys = String(op?.path ?? '').split('/').slice(1).map((k) => k.replaceAll('~1', '/').replaceAll('~0', '~'));
    if (keys.length === 0) throw invalid(name, `json patch path ${JSON.stringify(op?.path)} is not allowed`);
    const last = keys.pop();
    let parent = out;
    for (const k of keys) {
      parent = parent?.[k];
      if (typeof parent !== 'object' || parent === null) throw invalid(name, `json patch path ${op.path} does not exist`);
    }
    const has = Array.isArray(parent) ? Number(last) < parent.length : Object.hasOwn(parent, last);
    if (op.op === 'test') {
      if (JSON.stringify(parent[last]) !== JSON.stringify(op.value)) throw invalid(name, `json patch test failed at ${op.path}`);
    } else if (op.op === 'remove' || op.op === 'replace') {
      if (!has) throw invalid(name, `json patch ${op.op} of missing ${op.path}`);
      if (op.op === 'replace') parent[last] = clone(op.value);
      else if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
    } else if (op.op === 'add') {
      if (Array.isArray(parent)) parent.splice(last === '-' ? parent.length : Number(last), 0, clone(op.value));
      else parent[last] = clone(op.value);
    } else {
      throw invalid(name, `json patch op ${JSON.stringify(op.op)} is not supported here`);
    }
  }
  return out;
}

export class KubeApiServer {
  /**
   * pki: { ca, cert, key } PEM texts (makePki()); users: [{ name, token?, cn?, rules? }] (rules
   * as in a ClusterRole; default every right); retain: watch events kept for resuming.
   */
  constructor({ pki, users = [], retain = 1000 }) {
    this.pki = pki;
    this.users = users;
    this.retain = retain;
    this.rv = 1;
    this.nodes = new Map();
    this.history = []; // { rv, type, object }, oldest first
    this.listPages = new Map(); // continue token -> { rv, items, offset }: the rest of a paged list
    this.compactedRv = 1; // a watch can resume from any version >= this
    this.watchers = new Set();
    this.sockets = new Set();
    this.requests = [];
    this.watchLag = 0; // > 0: watches are served by an API server this many versions behind the one that lists
    this.watchCache = true; // false: as kube-apiserver --watch-cache=false, every list is read from etcd, in pages
    this.expiredAsHttpStatus = false; // true: a too-old watch gets an HTTP 410 instead of an ERROR event
    this.hanging = false; // true: requests are read and never answered (a server that stopped answering)
    // { retryAfter: header value or null (none), methods: ['POST', ...] or null (every one),
    //   watchesOnly?: true (only ?watch requests) }: those requests get 429
    this.shedding = null;
    this.server = https.createServer({ key: pki.key, cert: pki.cert, ca: pki.ca, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      this.handle(req, res).catch((e) => this.reply({}, res, 500, status(500, 'InternalError', String(e?.message ?? e))));
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    this.server.on('tlsClientError', () => {});
  }

  async start({ host = '127.0.0.1', port = 0 } = {}) {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.host = host;
    this.port = this.server.address().port;
    this.url = `https://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
    return this.url;
  }

  async stop() {
    await this.down();
  }

  // ---- control --------------------------------------------------------------------------

  addNode(node) {
    return this.create(clone(node));
  }

  /** `change`: a merge patch, or a function that edits a copy of the Node. */
  modifyNode(name, change) {
    const cur = this.nodes.get(name);
    if (!cur) throw notFound(name);
    const next = typeof change === 'function' ? (change(clone(cur)) ?? cur) : mergePatch(cur, change);
    return this.commit(name, next);
  }

  deleteNode(name) {
    const cur = this.nodes.get(name);
    if (!cur) throw notFound(name);
    this.nodes.delete(name);
    const gone = { ...cur, metadata: { ...cur.metadata, resourceVersion: String(++this.rv) } };
    this.record('DELETED', gone);
    return gone;
  }

  /** Writes elsewhere in the cluster: the version moves on without a Node event. */
  bumpVersion(n = 1) {
    this.rv += n;
    return this.rv;
  }

  /**
   * etcd restored from a backup taken at version `rv`: the version goes back (new writes count
   * on from it), events after it are forgotten; the Nodes stay as they are (tests change them
   * after). A watch from a version the server has not reached gets a 504 "Too large resource
   * version" ERROR event, as the watch cache answers after its 3 s wait.
   */
  restoreBackup(rv) {
    this.rv = rv;
    this.history = this.history.filter((ev) => ev.rv <= rv);
    this.compactedRv = Math.min(this.compactedRv, rv);
  }

  /** Forgets every past event: a watch from any earlier version gets 410 Expired. */
  compact() {
    this.history = [];
    this.compactedRv = this.rv;
    this.listPages.clear(); // a continue token names a version: compacted, it is too old
  }

  bookmark() {
    for (const w of this.watchers) if (w.bookmarks) this.send(w, { type: 'BOOKMARK', object: { kind: 'Node', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } } });
  }

  /** Cuts every connection (watches included) without a goodbye. */
  dropConnections() {
    for (const s of this.sockets) s.destroy();
  }

  /** The open watch streams die silently: nothing more is sent on them and they are never closed. */
  stall() {
    for (const w of this.watchers) w.stalled = true;
  }

  async down() {
    if (!this.server.listening) return;
    const closed = new Promise((r) => this.server.close(() => r()));
    this.dropConnections();
    await closed;
  }

  async up() {
    if (this.server.listening) return;
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  get watchCount() {
    return this.watchers.size;
  }

  // ---- storage --------------------------------------------------------------------------

  create(node) {
    const name = node?.metadata?.name;
    if (node?.kind !== 'Node' || typeof name !== 'string' || !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(name)) {
      throw new HttpError(422, 'Invalid', `Node ${JSON.stringify(name ?? '')} is invalid: metadata.name: Invalid value`, { kind: 'Node' });
    }
    if (this.nodes.has(name)) throw new HttpError(409, 'AlreadyExists', `nodes "${name}" already exists`, { name, kind: 'nodes' });
    const obj = { ...node, apiVersion: 'v1', kind: 'Node', metadata: { ...node.metadata, uid: randomUUID(), creationTimestamp: new Date().toISOString(), resourceVersion: String(++this.rv) } };
    this.nodes.set(name, obj);
    this.record('ADDED', obj);
    return clone(obj);
  }

  /** Stores `next` for `name` unless nothing changed; keeps what the API keeps immutable. */
  commit(name, next) {
    const cur = this.nodes.get(name);
    if (next?.metadata?.name !== name) throw invalid(name, 'metadata.name: field is immutable');
    const oldCidr = cur.spec?.podCIDR;
    if (oldCidr && next.spec?.podCIDR !== oldCidr) throw invalid(name, 'spec.podCIDR: Forbidden: node updates may not change podCIDR except from "" to valid');
    const oldProvider = cur.spec?.providerID;
    if (oldProvider && next.spec?.providerID !== oldProvider) throw invalid(name, 'spec.providerID: Forbidden: node updates may not change providerID except from "" to valid');
    const meta = { ...next.metadata, uid: cur.metadata.uid, creationTimestamp: cur.metadata.creationTimestamp, resourceVersion: cur.metadata.resourceVersion };
    const candidate = { ...next, apiVersion: 'v1', kind: 'Node', metadata: meta };
    if (JSON.stringify(candidate) === JSON.stringify(cur)) return clone(cur);
    candidate.metadata.resourceVersion = String(++this.rv);
    this.nodes.set(name, candidate);
    this.record('MODIFIED', candidate);
    return clone(candidate);
  }

  record(type, object) {
    const ev = { rv: this.rv, type, object: clone(object) };
    this.history.push(ev);
    while (this.history.length > this.retain) this.compactedRv = this.history.shift().rv;
    for (const w of this.watchers) this.send(w, { type, object: ev.object });
  }

  // ---- HTTP -----------------------------------------------------------------------------

  async handle(req, res) {
    const url = new URL(req.url, 'https://x');
    const m = /^\/api\/v1\/nodes(?:\/([^/]+))?$/.exec(url.pathname);
    const entry = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), contentType: req.headers['content-type'] ?? null, user: null, verb: null, name: m?.[1] ? decodeURIComponent(m[1]) : null, status: 0 };
    this.requests.push(entry);
    if (this.hanging) return;
    const fail = (e) => this.reply(entry, res, e.status.code, e.status);
    const user = this.authenticate(req);
    if (!user) return fail(new HttpError(401, 'Unauthorized', 'Unauthorized'));
    entry.user = user.name;
    const shed = this.shedding;
    const watching = ['1', 'true'].includes(url.searchParams.get('watch') ?? '');
    if (shed && (!shed.methods || shed.methods.includes(req.method)) && (!shed.watchesOnly || watching)) {
      // apiserver's filters/priority-and-fairness.go tooManyRequests: http.Error with Retry-After.
      entry.status = 429;
      res.writeHead(429, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', ...(shed.retryAfter === null ? {} : { 'Retry-After': shed.retryAfter }) });
      res.end('Too many requests, please try again later.\n');
      return;
    }
    if (url.pathname === SSAR_PATH && req.method === 'POST') return this.review(entry, req, res, user);
    if (!m) return fail(new HttpError(404, 'NotFound', 'the server could not find the requested resource'));
    const name = entry.name;
    const watch = ['1', 'true'].includes(url.searchParams.get('watch') ?? '');
    const verb = { GET: name ? 'get' : watch ? 'watch' : 'list', POST: name ? null : 'create', PUT: name && 'update', PATCH: name && 'patch', DELETE: name && 'delete' }[req.method];
    if (!verb) return fail(new HttpError(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
    entry.verb = verb;
    if (!rbacAllows(user.rules ?? ALL_RIGHTS, verb, name)) {
      const what = name ? `nodes "${name}"` : 'nodes';
      return fail(new HttpError(403, 'Forbidden', `${what} is forbidden: User "${user.name}" cannot ${verb} resource "nodes" in API group "" at the cluster scope`, { ...(name ? { name } : {}), kind: 'nodes' }));
    }
    try {
      switch (verb) {
        case 'list':
          return this.reply(entry, res, 200, this.list(url.searchParams, entry));
        case 'watch':
          return this.watch(entry, url.searchParams, res);
        case 'get':
          if (!this.nodes.has(name)) throw notFound(name);
          return this.reply(entry, res, 200, this.nodes.get(name));
        case 'create': {
          const node = await body(req);
          entry.name = typeof node?.metadata?.name === 'string' ? node.metadata.name : null;
          return this.reply(entry, res, 201, this.create(node));
        }
        case 'update': {
          const next = await body(req);
          if (!this.nodes.has(name)) throw notFound(name);
          const want = next?.metadata?.resourceVersion;
          if (want && want !== this.nodes.get(name).metadata.resourceVersion) throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on nodes "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, kind: 'nodes' });
          return this.reply(entry, res, 200, this.commit(name, next));
        }
        case 'patch': {
          const patch = await body(req);
          const cur = this.nodes.get(name);
          if (!cur) throw notFound(name);
          const type = String(entry.contentType ?? '').split(';')[0].trim();
          let next;
          if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') next = mergePatch(cur, patch);
          else if (type === 'application/json-patch+json') next = jsonPatch(cur, patch, name);
          else throw new HttpError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
          return this.reply(entry, res, 200, this.commit(name, next));
        }
        case 'delete': {
          const options = await body(req, { emptyIsNull: true });
          const cur = this.nodes.get(name);
          if (!cur) throw notFound(name);
          // DeleteOptions.preconditions, worded as the apiserver's storage (Preconditions.Check).
          const pre = options?.preconditions ?? {};
          const conflict = (what, want, have) => new HttpError(409, 'Conflict', `Operation cannot be fulfilled on nodes "${name}": Precondition failed: ${what} in precondition: ${want}, ${what} in object meta: ${have}`, { name, kind: 'nodes' });
          if (pre.uid != null && pre.uid !== cur.metadata.uid) throw conflict('UID', pre.uid, cur.metadata.uid);
          if (pre.resourceVersion != null && pre.resourceVersion !== cur.metadata.resourceVersion) throw conflict('ResourceVersion', pre.resourceVersion, cur.metadata.resourceVersion);
          this.deleteNode(name);
          return this.reply(entry, res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind: 'nodes' } });
        }
      }
    } catch (e) {
      if (e instanceof HttpError) return fail(e);
      throw e;
    }
  }

  /**
   * A SelfSubjectAccessReview: what this user may do, by the same rules as its requests. Every
   * authenticated user may ask (kube-apiserver's system:basic-user); only Nodes are known here.
   */
  async review(entry, req, res, user) {
    const r = await body(req);
    const a = r?.spec?.resourceAttributes ?? {};
    entry.verb = `review ${a.verb}`;
    entry.name = typeof a.name === 'string' ? a.name : null;
    const allowed = a.resource === 'nodes' && (a.group ?? '') === '' && typeof a.verb === 'string' && rbacAllows(user.rules ?? ALL_RIGHTS, a.verb, entry.name);
    return this.reply(entry, res, 201, { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', metadata: {}, spec: r?.spec ?? {}, status: { allowed } });
  }

  authenticate(req) {
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Bearer ')) {
      const token = auth.slice(7);
      return this.users.find((u) => u.token !== undefined && u.token === token) ?? null;
    }
    const cn = req.socket.authorized ? req.socket.getPeerCertificate()?.subject?.CN : undefined;
    return cn ? (this.users.find((u) => u.cn === cn) ?? null) : null;
  }

  /**
   * The Node list as kube-apiserver serves it for the request's resourceVersion (see the top of
   * this file); `entry.servedFrom` says where from: "cache" or "etcd".
   */
  list(q, entry = {}) {
    let limit = Number(q.get('limit') ?? 0);
    const token = q.get('continue');
    const rv = q.get('resourceVersion') ?? '';
    if (token && rv !== '') throw new HttpError(400, 'BadRequest', 'specifying resource version is not allowed when using continue');
    if (!token && rv !== '' && !/^[0-9]+$/.test(rv)) throw new HttpError(400, 'BadRequest', `Invalid value: "${rv}": resourceVersion: must be a number`);
    const fromCache = this.watchCache && !token && rv !== '';
    if (!token && rv !== '' && rv !== '0') {
      if (limit > 0) throw new HttpError(501, 'NotImplemented', `the stand-in keeps no list at an exact old version (resourceVersion=${rv} with limit)`);
      if (Number(rv) > this.rv) {
        throw new HttpError(...tooLargeVersion(rv, this.rv));
      }
    }
    if (fromCache) limit = 0; // the watch cache answers everything at once
    entry.servedFrom = fromCache ? 'cache' : 'etcd';
    let snap;
    if (token) {
      snap = this.listPages.get(token);
      if (!snap) {
        throw new HttpError(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.');
      }
    } else {
      const byName = (a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0);
      snap = { rv: this.rv, items: [...this.nodes.values()].sort(byName).map(clone), offset: 0 };
    }
    const page = limit > 0 ? snap.items.slice(snap.offset, snap.offset + limit) : snap.items.slice(snap.offset);
    const next = snap.offset + page.length;
    const metadata = { resourceVersion: String(snap.rv) };
    if (next < snap.items.length) {
      const more = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: snap.rv, start: `${page.at(-1).metadata.name}\u0000` })).toString('base64');
      this.listPages.set(more, { ...snap, offset: next });
      Object.assign(metadata, { continue: more, remainingItemCount: snap.items.length - next });
    }
    return { kind: 'NodeList', apiVersion: 'v1', metadata, items: page };
  }

  reply(entry, res, code, obj) {
    entry.status = code;
    res.writeHead(code, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(obj));
  }

  watch(entry, q, res) {
    const from = q.get('resourceVersion') ?? '';
    if (this.tooOld(from)) {
      const expired = status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`);
      if (this.expiredAsHttpStatus) return this.reply(entry, res, 410, expired);
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ type: 'ERROR', object: expired }) + '\n');
      return;
    }
    if (/^[0-9]+$/.test(from) && Number(from) > this.rv - this.watchLag) {
      const tooLarge = status(...tooLargeVersion(from, this.rv - this.watchLag));
      entry.status = 200;
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ type: 'ERROR', object: tooLarge }) + '\n');
      return;
    }
    entry.status = 200;
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.flushHeaders();
    const w = { res, bookmarks: q.get('allowWatchBookmarks') === 'true', timer: null, stalled: false };
    const replay = from === '' || from === '0' ? [...this.nodes.values()].map((n) => ({ type: 'ADDED', object: n })) : this.history.filter((ev) => ev.rv > Number(from));
    for (const ev of replay) this.send(w, { type: ev.type, object: clone(ev.object) });
    this.watchers.add(w);
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    if (timeout > 0) {
      w.timer = setTimeout(() => {
        if (!w.stalled) res.end();
      }, timeout * 1000);
    }
    res.on('close', () => {
      clearTimeout(w.timer);
      this.watchers.delete(w);
    });
  }

  tooOld(from) {
    return from !== '' && from !== '0' && (!/^[0-9]+$/.test(from) || Number(from) < this.compactedRv);
  }

  send(w, event) {
    if (!w.stalled && !w.res.writableEnded) w.res.write(JSON.stringify(event) + '\n');
  }
}

async function body(req, { emptyIsNull = false } = {}) {
  const chunks = [];
  let size = 0;
  for await (const c of req) {
    size += c.length;
    if (size > MAX_BODY) throw new HttpError(413, 'RequestEntityTooLarge', 'the request body is too large');
    chunks.push(c);
  }
  if (size === 0 && emptyIsNull) return null; // a DELETE without DeleteOptions
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'BadRequest', 'the request body is not valid JSON');
  }
}

// ---- as a child process -------------------------------------------------------------------

async function main(argv) {
  const arg = (name) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const listen = arg('--listen') ?? '127.0.0.1:0';
  const dir = arg('--dir');
  if (!dir) throw new Error('usage: kube-apiserver.mjs --listen IP:PORT --dir D');
  const cut = listen.lastIndexOf(':');
  const host = listen.slice(0, cut).replace(/^\[|\]$/g, '');
  const pki = makePki(dir, { ips: [host] });
  const users = arg('--users') ? JSON.parse(readFileSync(arg('--users'), 'utf8')) : [];
  const server = new KubeApiServer({ pki, users: [{ name: 'admin', token: 'admin-token' }, ...users] });
  const url = await server.start({ host, port: Number(listen.slice(cut + 1)) });
  kubeconfig(path.join(dir, 'kubeconfig'), { server: url, caFile: pki.caFile, token: 'admin-token' });
  for (const u of users) {
    if (u.token) kubeconfig(path.join(dir, `kubeconfig-${u.name.replace(/[^A-Za-z0-9._-]/g, '_')}`), { server: url, caFile: pki.caFile, token: u.token });
  }
  process.stdout.write(JSON.stringify({ ready: url }) + '\n');
  const commands = new Set(['addNode', 'modifyNode', 'deleteNode', 'bumpVersion', 'restoreBackup', 'compact', 'bookmark', 'dropConnections', 'stall', 'down', 'up']);
  const flags = new Set(['hanging', 'expiredAsHttpStatus', 'watchCache']);
  for await (const line of createInterface({ input: process.stdin })) {
    let msg = {};
    try {
      msg = JSON.parse(line);
      let result;
      if (msg.cmd === 'requests') result = server.requests;
      else if (msg.cmd === 'nodes') result = [...server.nodes.values()];
      else if (msg.cmd === 'set' && flags.has(msg.args?.[0])) server[msg.args[0]] = Boolean(msg.args[1]);
      else if (commands.has(msg.cmd)) result = await server[msg.cmd](...(msg.args ?? []));
      else throw new Error(`unknown command ${JSON.stringify(msg.cmd)}`);
      process.stdout.write(JSON.stringify({ id: msg.id, ok: true, result: result ?? null }) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: msg?.id, ok: false, error: String(e?.message ?? e) }) + '\n');
    }
  }
  await server.stop();
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`kube-apiserver: ${e?.message ?? e}\n`);
    process.exit(1);
  });
}
