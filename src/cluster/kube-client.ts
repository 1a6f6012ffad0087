// The Kubernetes API as KubernetesSource needs it: the Node calls we make, through the
// official client (@kubernetes/client-node 1.4; 2.x does not load on Node 20).
//
// The client costs about 80 MB of memory and half a second to load, so it is imported here,
// on first use, and never by a gateway with a static config: nothing imports this module's
// library statically (type imports are erased).
//
// Every call is bounded: list/get/create/patch/delete abort after `requestTimeoutMs` on our
// Clock (the client has no timeout of its own). A watch cannot be aborted before the server
// answers (the client hands out its AbortController only then), so watch() returns a cancel
// that also works during that window: the late controller is aborted when it arrives, and
// nothing from that watch is delivered after cancel().
import type * as K8s from '@kubernetes/client-node';
import path from 'node:path';
import { existsSync } from 'node:fs';
import type { Clock } from '../util/clock.js';
import { KubeTimeoutError } from './kube-errors.js';

/** A Node as JSON (untrusted: every field may be missing or of the wrong type). */
export type NodeJson = Record<string, unknown>;

export interface NodeApi {
  /** The API server URL of the current context. */
  readonly server: string;
  list(): Promise<{ items: unknown[]; resourceVersion: string }>;
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
  delete(name: string): Promise<void>;
  /**
   * Whether the API server lets these credentials `verb` Nodes (one Node by name, or all
   * when null): a SelfSubjectAccessReview, which every authenticated user may ask.
   */
  mayI(verb: string, name: string | null): Promise<boolean>;
  /** Aborts every request in flight (stop()). */
  abortAll(): void;
}

export interface WatchCallbacks {
  onOpen(): void;
  onEvent(type: unknown, object: unknown): void;
  onDone(err: unknown): void;
}

export interface KubeconfigChoice {
  /** What to load: a file, or the in-cluster service account. */
  kind: 'file' | 'in-cluster';
  file: string | null;
  /** For error messages: where the credentials come from. */
  describe: string;
}

/**
 * cluster.kubernetes.kubeconfig, else $KUBECONFIG (its first existing entry: we follow one
 * cluster, so merging several files as kubectl does buys nothing), else the in-cluster
 * service account. Null when none applies.
 */
export function chooseKubeconfig(configured: string | null, env: NodeJS.ProcessEnv = process.env): KubeconfigChoice | null {
  if (configured) return { kind: 'file', file: configured, describe: `kubeconfig ${configured} (cluster.kubernetes.kubeconfig)` };
  const fromEnv = (env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean);
  if (fromEnv.length > 0) {
    const file = fromEnv.find((f) => existsSync(f)) ?? fromEnv[0];
    return { kind: 'file', file, describe: `kubeconfig ${file} ($KUBECONFIG)` };
  }
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) {
    return { kind: 'in-cluster', file: null, describe: 'the in-cluster service account (/var/run/secrets/kubernetes.io/serviceaccount)' };
  }
  return null;
}

export async function connectNodeApi(choice: KubeconfigChoice, clock: Clock, requestTimeoutMs: number): Promise<NodeApi> {
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  if (choice.kind === 'file') kc.loadFromFile(choice.file!);
  else kc.loadFromCluster();
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`${choice.describe} has no current context with a cluster: set current-context`);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const authz = kc.makeApiClient(k8s.AuthorizationV1Api);
  const inFlight = new Set<AbortController>();

  /**
   * Per-call options: an abort signal driven by our clock, and the Content-Type (a patch's
   * type; JSON otherwise, which is what the client sends anyway). The client's own
   * setHeaderMiddleware makes the middleware, so its result has the type the client expects.
   */
  const bounded = async <T>(call: (opts: K8s.ConfigurationOptions) => Promise<T>, contentType = 'application/json'): Promise<T> => {
    const ac = new AbortController();
    inFlight.add(ac);
    const timer = clock.after(requestTimeoutMs, () => ac.abort(new KubeTimeoutError(requestTimeoutMs)));
    const header = k8s.setHeaderMiddleware('Content-Type', contentType);
    const middleware: K8s.ObservableMiddleware = {
      pre: (ctx) => {
        ctx.setSignal(ac.signal);
        return header.pre(ctx);
      },
      post: header.post,
    };
    try {
      return await call({ middleware: [middleware], middlewareMergeStrategy: 'append' });
    } catch (e) {
      // node-fetch reports an abort as its own AbortError; say which abort it was.
      throw ac.signal.aborted && ac.signal.reason instanceof Error ? ac.signal.reason : e;
    } finally {
      timer.cancel();
      inFlight.delete(ac);
    }
  };

  return {
    server: cluster.server,
    async list() {
      const list = await bounded((o) => core.listNode({}, o));
      return { items: Array.isArray(list.items) ? list.items : [], resourceVersion: String(list.metadata?.resourceVersion ?? '') };
    },
    watch(resourceVersion, timeoutSeconds, on) {
      let over = false;
      let controller: AbortController | undefined;
      const finish = (err: unknown) => {
        if (over) return;
        over = true;
        on.onDone(err);
      };
      new k8s.Watch(kc)
        .watch('/api/v1/nodes', { resourceVersion, allowWatchBookmarks: true, timeoutSeconds }, (type, obj) => {
          if (!over) on.onEvent(type, obj);
        }, (err) => finish(err ?? null))
        .then(
          // The client resolves after a 200 (or after reporting a failure through done).
          (c) => {
            controller = c;
            if (over) c.abort();
            else on.onOpen();
          },
          finish,
        );
      return () => {
        over = true;
        controller?.abort();
      };
    },
    get: (name) => bounded((o) => core.readNode({ name }, o)),
    create: (node) => bounded((o) => core.createNode({ body: node as K8s.V1Node }, o)),
    mergePatch: (name, patch) => bounded((o) => core.patchNode({ name, body: patch }, o), k8s.PatchStrategy.MergePatch),
    async delete(name) {
      await bounded((o) => core.deleteNode({ name }, o));
    },
    async mayI(verb, name) {
      const review = await bounded((o) => authz.createSelfSubjectAccessReview({
        body: { apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview', spec: { resourceAttributes: { group: '', resource: 'nodes', verb, ...(name ? { name } : {}) } } },
      }, o));
      return review.status?.allowed === true;
    },
    abortAll() {
      for (const ac of inFlight) ac.abort(new Error('stopped'));
    },
  };
}
