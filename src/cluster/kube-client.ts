// The Kubernetes API as KubernetesSource needs it: the Node calls we make, with the official
// client's kubeconfig handling (@kubernetes/client-node 1.4; 2.x does not load on Node 20).
//
// Of the client, only KubeConfig is used (tokens, client certificates, exec plugins, proxies:
// the part worth a library); the REST calls and the watch are plain HTTPS with the connection
// options the kubeconfig gives (applyToHTTPSOptions). Its generated APIs and models would
// cost ~45 MB and half a second to load (docs/memory.md), and its Watch reports a refused
// watch by its status alone, without the Status or Retry-After. Even so it is imported here,
// on first use, and never by a gateway with a static config: nothing imports this module's
// library statically.
//
// Every call is bounded: list/get/create/patch/delete abort after `requestTimeoutMs` on our
// Clock (the client has no timeout of its own); watch() returns a cancel that works from the
// start, and nothing from that watch is delivered after cancel().
import http from 'node:http';
import https from 'node:https';
import { pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Clock } from '../util/clock.js';
import { peerCertValidity, type CertValidity } from '../util/tls-failure.js';
import { kubeProxyUrl, loggable } from '../util/http-proxy.js';
import { kubeconfigCertificate, loadClientModule, type KubeconfigChoice } from './kubeconfig.js';
import { JsonMemberSplitter } from './json-members.js';
import { KubeTimeoutError, failedTooLarge, httpStatusOf, parseRetryAfter } from './kube-errors.js';

/** A Node as JSON (untrusted: every field may be missing or of the wrong type). */
export type NodeJson = Record<string, unknown>;

export interface NodeApi {
  /** The API server URL of the current context. */
  readonly server: string;
  /** The dates of the current user's client certificate (client-certificate(-data)), if it has one we can read. */
  readonly clientCert: CertValidity | null;
  /** The current user's exec credential plugin's command (EKS: `aws`), null when it has none. */
  readonly execCommand: string | null;
  /** The proxy the calls go through and who named it, its password hidden (`http://p:3128 (HTTPS_PROXY)`); null: none. */
  readonly proxy?: string | null;
  /** The dates of the certificate the API server presented at its last answer (null: none yet, or plain HTTP). */
  serverCert(): CertValidity | null;
  /**
   * Every Node, each handed to `keep` as it streams in (whole Node objects are never held
   * together: keep what is needed, null to drop it), and the list's resourceVersion.
   * `from` is the resourceVersion to ask for, as client-go's reflector asks (ListFrom);
   * `paged` says whether the answer came in pages (a '0' list in pages: no watch cache).
   */
  list<T>(keep: (item: unknown) => T | null, from?: ListFrom): Promise<{ items: T[]; resourceVersion: string; paged: boolean }>;
  /**
   * Watches Nodes from `resourceVersion` with bookmarks. `onOpen` runs when the server took
   * the watch (200), `onEvent` for each event; `onDone` once, with null when the server closed
   * the stream, else the error. The returned function cancels (no callback after it).
   */
  watch(resourceVersion: string, timeoutSeconds: number, on: WatchCallbacks): () => void;
  get(name: string): Promise<unknown>;
  create(node: NodeJson): Promise<unknown>;
  /** RFC 7386 merge patch on /api/v1/nodes/NAME. */
  mergePatch(name: string, patch: NodeJson): Promise<unknown>;
  /**
   * Deletes the Node; with `preconditions`, only the object of that uid (and resourceVersion):
   * one that was replaced or changed since it was read is left alone (409 Conflict).
   */
  delete(name: string, preconditions?: { uid: string; resourceVersion?: string }): Promise<void>;
  /**
   * Whether the API server lets these credentials `verb` Nodes (one Node by name, or all
   * when null): a SelfSubjectAccessReview, which every authenticated user may ask.
   */
  mayI(verb: string, name: string | null): Promise<boolean>;
  /** Aborts every request in flight (stop()). */
  abortAll(): void;
}

/**
 * The resourceVersion a list asks for:
 *   '0'   any version: served from the API server's watch cache, whole (the cache ignores
 *         ?limit), maybe a little behind; a reflector's first list;
 *   'N'   not older than N: from the watch cache too, whole (with ?limit it would be an exact
 *         read of N from etcd); a relist after a watch that expired;
 *   ''    the latest: a consistent read from etcd, in pages; when a version is gone (410) or
 *         ahead of the server (504 Too large resource version), and where there is no watch cache.
 */
export type ListFrom = string;

export interface WatchCallbacks {
  onOpen(): void;
  onEvent(type: unknown, object: unknown): void;
  onDone(err: unknown): void;
}

/** The longest answer we read (a list of 500 EKS Nodes is a few MB): more is an error, not a heap. */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;

/** The most of a refused watch's answer (a Status, or a proxy's page) that is read for its error. */
const MAX_ERROR_BYTES = 64 * 1024;

/** Nodes per page of a list (client-go's pager asks for 500 too). */
const LIST_PAGE = 500;
/** A list that goes on past this many pages (100 000 Nodes; Kubernetes supports 5 000) is an error. */
const MAX_LIST_PAGES = 200;

/**
 * A non-2xx answer, shaped as the client's ApiException ({code, body}) for kube-errors.ts;
 * `retryAfterMs`: the wait its Retry-After header asked for (null: none).
 */
export class KubeHttpError extends Error {
  constructor(readonly code: number, readonly body: string, readonly retryAfterMs: number | null = null) {
    super(`HTTP ${code}`);
    this.name = 'KubeHttpError';
  }
}

/**
 * The dates of a kubeconfig user's client certificate, for the words of a 401; null when it has
 * none, or none that can be read (the client says so on use).
 */
function userCertificate(user: { certData?: string; certFile?: string } | null): CertValidity | null {
  try {
    return kubeconfigCertificate(user?.certData, user?.certFile);
  } catch {
    return null;
  }
}

export async function connectNodeApi(choice: KubeconfigChoice, clock: Clock, requestTimeoutMs: number, maxAnswerBytes = MAX_ANSWER_BYTES): Promise<NodeApi> {
  // The kubeconfig module only: the package's index (and `makeApiClient`) loads
  // every generated API and model, some 45 MB of the client's 60. The bundle gives config.js
  // a stand-in for the generated index it imports (scripts/kube-slim.mjs).
  const { KubeConfig } = await loadClientModule();
  const kc = new KubeConfig();
  if (choice.kind === 'file') kc.loadFromFile(choice.file!);
  else kc.loadFromCluster();
  const named = kc.getCurrentCluster();
  if (!named) throw new Error(`${choice.describe} has no current context with a cluster: set current-context`);
  // HTTPS_PROXY and NO_PROXY as kubectl and flanneld (client-go) read them, unless the
  // kubeconfig names its own proxy-url; the client's agent then goes through it.
  const envProxy = named.proxyUrl ? null : kubeProxyUrl(named.server);
  const cluster = envProxy ? { ...named, proxyUrl: envProxy.url } : named;
  if (envProxy) kc.clusters = kc.clusters.map((c) => (c === named ? cluster : c));
  const server = cluster.server.replace(/\/+$/, '');
  const user = kc.getCurrentUser();
  const clientCert = userCertificate(user);
  const execCommand = typeof user?.exec?.command === 'string' ? (user.exec.command as string) : null;
  let serverCert: CertValidity | null = null;
  const answered = (res: http.IncomingMessage) => {
    serverCert = peerCertValidity(res.socket) ?? serverCert;
  };
  const inFlight = new Set<AbortController>();

  /**
   * One request, bounded by our clock. The connection options (agent with the cluster's TLS
   * or proxy, the Authorization header from a token, client certificate or exec plugin) are
   * the kubeconfig's (applyToHTTPSOptions); the body is JSON both ways, the
   * answer untrusted JSON.
   */
  const call = async (method: string, urlPath: string, body?: unknown, contentType = 'application/json', reader: BodyReader = wholeJson()): Promise<unknown> => {
    const ac = new AbortController();
    inFlight.add(ac);
    const timer = clock.after(requestTimeoutMs, () => ac.abort(new KubeTimeoutError(requestTimeoutMs)));
    try {
      const opts: https.RequestOptions = { method };
      await kc.applyToHTTPSOptions(opts);
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      opts.headers = {
        ...opts.headers, Accept: 'application/json', 'Accept-Encoding': 'gzip',
        ...(payload ? { 'Content-Type': contentType, 'Content-Length': String(payload.length) } : {}),
      };
      const answer = await exchange(new URL(server + urlPath), { ...opts, signal: ac.signal }, payload, maxAnswerBytes, reader, () => clock.now(), answered);
      if (answer.notJson) throw new Error(`the API server answered ${method} ${urlPath} with ${answer.status} and a body that is not JSON`);
      return answer.value;
    } catch (e) {
      // An abort shows as an AbortError: say which it was (our timeout, or a stop).
      throw ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason : e;
    } finally {
      timer.cancel();
      inFlight.delete(ac);
    }
  };
  const nodePath = (name: string) => `/api/v1/nodes/${encodeURIComponent(name)}`;

  return {
    server: cluster.server,
    proxy: cluster.proxyUrl ? `${loggable(cluster.proxyUrl)} (${envProxy ? envProxy.variable : "the kubeconfig's proxy-url"})` : null,
    clientCert,
    execCommand,
    serverCert: () => serverCert,
    async list<T>(keep: (item: unknown) => T | null, from: ListFrom = '') {
      // As client-go's reflector lists for flanneld (ListFrom): '0' and '' in pages of 500,
      // which the watch cache ignores for '0' (a consistent read from etcd is paged, so each of
      // its answers is bounded however large the cluster); 'N' whole, from the cache. The pages
      // are one snapshot, so the version is the first page's. A token that expired between
      // pages (its version compacted) starts the list again, once.
      for (let retried = false; ; ) {
        const items: T[] = [];
        let resourceVersion = '';
        let token = '';
        let page = 0;
        try {
          for (; page === 0 || token; page++) {
            if (page >= MAX_LIST_PAGES) throw new Error(`the Node list did not end after ${MAX_LIST_PAGES} pages of ${LIST_PAGE}`);
            // A continue token carries its version: the API refuses a resourceVersion beside it.
            const q = new URLSearchParams(
              token ? { limit: String(LIST_PAGE), continue: token }
                : from === '' ? { limit: String(LIST_PAGE) }
                  : from === '0' ? { resourceVersion: '0', limit: String(LIST_PAGE) }
                    : { resourceVersion: from },
            );
            // Node by Node as the page streams in (json-members.ts): a page of real Nodes is
            // megabytes, and parsed whole it would stay in the heap long after it is dropped.
            // What comes back is the envelope, its items taken out ("items":[]).
            const splitter = new JsonMemberSplitter('items', (text) => {
              const k = keep(JSON.parse(text));
              if (k !== null) items.push(k);
            });
            const l = (await call('GET', `/api/v1/nodes?${q}`, undefined, undefined, splitter)) as { metadata?: { resourceVersion?: unknown; continue?: unknown } } | null;
            if (page === 0) resourceVersion = String(l?.metadata?.resourceVersion ?? '');
            token = typeof l?.metadata?.continue === 'string' ? l.metadata.continue : '';
          }
          return { items, resourceVersion, paged: page > 1 };
        } catch (e) {
          // A version the server no longer has (410) or has not reached (504 Too large resource
          // version: a cache behind, etcd restored from a backup): at once the latest instead,
          // as client-go's reflector does (its "last sync resource version unavailable").
          if (from !== '' && page === 0 && (httpStatusOf(e) === 410 || failedTooLarge(e))) {
            from = '';
            continue;
          }
          if (!token || retried || httpStatusOf(e) !== 410) throw e;
          retried = true;
        }
      }
    },
    watch(resourceVersion, timeoutSeconds, on) {
      // A watch is one GET that stays open: a line of JSON per event ({type, object}). Ours,
      // not the client's Watch, so that a refusal is read as any other answer: its Status
      // (a 403 names the verb), and a 429's or 503's Retry-After, which the source waits for.
      const ac = new AbortController();
      let over = false;
      const finish = (err: unknown) => {
        if (over) return;
        over = true;
        ac.abort();
        on.onDone(err);
      };
      const q = new URLSearchParams({ watch: 'true', resourceVersion, allowWatchBookmarks: 'true', timeoutSeconds: String(timeoutSeconds) });
      const opts: https.RequestOptions = { method: 'GET' };
      kc.applyToHTTPSOptions(opts).then(() => {
        if (over) return;
        opts.headers = { ...opts.headers, Accept: 'application/json' };
        const url = new URL(`${server}/api/v1/nodes?${q}`);
        const req = (url.protocol === 'http:' ? http : https).request(url, { ...opts, signal: ac.signal }, (res) => {
          if (over) return void res.destroy(); // cancelled as the answer came
          answered(res);
          if (res.statusCode !== 200) return void refusal(res, res, MAX_ERROR_BYTES, () => clock.now()).then(finish, finish);
          on.onOpen();
          readLines(res, maxAnswerBytes, (line) => {
            if (over || line.trim() === '') return;
            let event: { type?: unknown; object?: unknown };
            try {
              event = JSON.parse(line) as typeof event;
            } catch {
              throw new Error('the API server sent a watch event that is not JSON');
            }
            on.onEvent(event?.type, event?.object);
          }).then(() => finish(null), finish);
        });
        // The server says nothing on a quiet watch between bookmarks: let TCP notice a dead peer.
        req.on('socket', (sock) => sock.setKeepAlive(true, 30_000));
        req.on('error', finish);
        req.end();
      }, finish);
      return () => {
        over = true;
        ac.abort();
      };
    },
    get: (name) => call('GET', nodePath(name)),
    create: (node) => call('POST', '/api/v1/nodes', node),
    mergePatch: (name, patch) => call('PATCH', nodePath(name), patch, 'application/merge-patch+json'),
    async delete(name, preconditions) {
      await call('DELETE', nodePath(name), preconditions ? { apiVersion: 'v1', kind: 'DeleteOptions', preconditions } : undefined);
    },
    async mayI(verb, name) {
      const review = (await call('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { group: '', resource: 'nodes', verb, ...(name ? { name } : {}) } },
      })) as { status?: { allowed?: unknown } } | null;
      return review?.status?.allowed === true;
    },
    abortAll() {
      for (const ac of inFlight) ac.abort(new Error('stopped'));
    },
  };
}

/** How a 2xx answer's body is read: chunk by chunk as it arrives, then its value. Either may throw on a body that is not JSON. */
interface BodyReader {
  push(chunk: Buffer): void;
  end(): unknown;
}

/** The whole body, then JSON.parse. */
function wholeJson(): BodyReader {
  const parts: Buffer[] = [];
  return { push: (c) => parts.push(c), end: () => JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown };
}

type Answer = { status: number; value: unknown; notJson: boolean };

/**
 * A refused answer (not 2xx) as the error it is: its body as text, at most `maxBytes`, and
 * the wait its Retry-After asks for, from `now`.
 */
async function refusal(res: http.IncomingMessage, body: Readable, maxBytes: number, now: () => number): Promise<KubeHttpError> {
  const parts: Buffer[] = [];
  await readAtMost(body, maxBytes, (b) => parts.push(b));
  return new KubeHttpError(res.statusCode ?? 0, Buffer.concat(parts).toString('utf8'), parseRetryAfter(res.headers['retry-after'], now()));
}

/**
 * One HTTP(S) exchange: a 2xx body through `reader`; any other is a KubeHttpError (refusal());
 * at most `maxBytes` of either (after decompression: a small gzip of a huge answer is refused
 * as the answer would be). The API server gzips answers over 128 KB to a client that accepts
 * it (APIResponseCompression): a list of 500 Nodes is then a tenth of its size on the site's uplink.
 */
function exchange(
  url: URL, opts: https.RequestOptions, payload: Buffer | undefined, maxBytes: number, reader: BodyReader, now: () => number,
  answered: (res: http.IncomingMessage) => void,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'http:' ? http : https).request(url, opts, (res) => {
      answered(res);
      const status = res.statusCode ?? 0;
      const gzip = String(res.headers['content-encoding'] ?? '').toLowerCase() === 'gzip';
      // pipeline: an error or a cut on either side ends the other, and the read below with it.
      const body: Readable = gzip ? pipeline(res, createGunzip(), () => undefined) : res;
      const failed = (e: unknown) => {
        res.destroy();
        reject(e);
      };
      if (status < 200 || status > 299) return void refusal(res, body, maxBytes, now).then(reject, failed);
      let notJson = false;
      readAtMost(body, maxBytes, (b) => {
        if (notJson) return;
        try {
          reader.push(b);
        } catch {
          notJson = true; // read on to the end (or the bound): the connection stays reusable
        }
      }).then(() => {
        let value: unknown = null;
        try {
          if (!notJson) value = reader.end();
        } catch {
          notJson = true;
        }
        resolve({ status, value, notJson });
      }, failed);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * A watch's stream as lines, each handed to `each` whole; a line longer than `maxBytes` (an
 * event is one Node, tens of KB) is an error, not a heap. An error thrown by `each` ends the
 * read with it.
 */
async function readLines(body: Readable, maxBytes: number, each: (line: string) => void): Promise<void> {
  let held: Buffer[] = [];
  let heldBytes = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      const piece = chunk.subarray(from, nl);
      each(heldBytes === 0 ? piece.toString('utf8') : Buffer.concat([...held, piece]).toString('utf8'));
      held = [];
      heldBytes = 0;
      from = nl + 1;
    }
    if (from < chunk.length) {
      heldBytes += chunk.length - from;
      if (heldBytes > maxBytes) throw new Error(`a watch event from the API server is over ${sizeText(maxBytes)}`);
      held.push(chunk.subarray(from));
    }
  }
  if (heldBytes > 0) each(Buffer.concat(held).toString('utf8'));
}

/** A bound in words: "64 MiB", "1000 bytes". */
const sizeText = (bytes: number) => (bytes >= 1048576 ? `${bytes / 1048576} MiB` : `${bytes} bytes`);

async function readAtMost(body: Readable, maxBytes: number, each: (b: Buffer) => void): Promise<void> {
  let size = 0;
  for await (const b of body as AsyncIterable<Buffer>) {
    size += b.length;
    if (size > maxBytes) throw new Error(`the API server's answer is over ${sizeText(maxBytes)}`);
    each(b);
  }
}
