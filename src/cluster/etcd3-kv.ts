// EtcdKv over the maintained etcd v3 client for Node, `etcd3` (gRPC via grpc-js). Loaded only
// by an etcd cluster source (dynamic import in etcd.ts): importing this file loads gRPC.
//
// We use the client's raw RPC stubs (kv, leaseClient, watchClient) rather than its high-level
// Watcher and Lease helpers, which run their own timers and retries and hide what the source
// must see: a compacted watch (the response's compact_revision), a lease that is gone (TTL 0),
// and the revision every answer reflects.
//
// Two details of the library matter:
//  - A stream that fails while still writable makes the pool reset every gRPC client of that
//    host (it treats the error as a broken host), which would also kill our watch. So a stream
//    we are done with is half-closed first (end(), after which it is no longer writable) and
//    only then cancelled.
//  - Unary calls fetch a new auth token when etcd says the old one is invalid (simple tokens
//    expire after 5 idle minutes); streams do not. A keepalive that fails that way is retried
//    once after a unary call has refreshed the token.
//  - The client has no way to ask for a leader on a watch (clientv3's WithRequireLeader, which
//    flanneld uses): our watch stream is opened through a WatchClient of our own over the
//    client's connection pool, which adds the metadata (leaderWatchClient).
import { readFile } from 'node:fs/promises';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
  WatchClient,
  castGrpcError,
  type ICallable,
  castGrpcErrorMessage,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type IOptions,
  type IWatchResponse,
} from 'etcd3';
import { show } from '../util/show.js';
import { whyUnreadable } from '../util/why-unreadable.js';
import {
  EtcdKvError,
  prefixRangeEnd,
  type EtcdConnectOptions,
  type EtcdKv,
  type KvEntry,
  type PutIfResult,
  type WatchHandle,
  type WatchHandler,
} from './etcd-kv.js';

/** gRPC channel settings: notice a dead connection within ~40 s, and reconnect within 5 s of etcd's return. */
const GRPC_OPTIONS = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  // etcd refuses pings on a connection without calls (GOAWAY too_many_pings); our watch is always open.
  'grpc.keepalive_permit_without_calls': 0,
  'grpc.initial_reconnect_backoff_ms': 1_000,
  'grpc.max_reconnect_backoff_ms': 5_000,
};

/**
 * etcd's "require leader" metadata (clientv3 WithRequireLeader, rpctypes.MetadataRequireLeaderKey):
 * a member that has no leader refuses the watch, and cancels an open one ("etcdserver: no leader")
 * after three election timeouts without one. Without it, a member cut off from the rest of its
 * cluster keeps the watch open and silent while the others go on changing leases: the view goes
 * stale and the source still says connected.
 */
const REQUIRE_LEADER: [string, string] = ['hasleader', 'true'];

/** A WatchClient over the client's connection pool whose streams carry REQUIRE_LEADER. */
function leaderWatchClient(client: Etcd3): WatchClient {
  // The pool is the Namespace's protected `pool` (every RPC client of the library is built on it).
  const pool = (client as unknown as { pool: ICallable<unknown> }).pool;
  return new WatchClient({
    exec: (service, method, params, options) => pool.exec(service, method, params, options),
    withConnection: (service, fn) =>
      pool.withConnection(service, (c) => {
        const metadata = c.metadata.clone(); // the pool's (auth token) metadata is shared by every call
        metadata.set(...REQUIRE_LEADER);
        return fn({ ...c, metadata });
      }),
    markFailed: (resource, error) => pool.markFailed(resource, error),
    get callOptionsFactory() {
      return pool.callOptionsFactory;
    },
  });
}

const TLS_RE = /certificate|\bSSL\b|\bTLS\b|handshake|self[- ]signed|CERT_|unable to verify|wrong version number|alert/i;
const AUTH_RE = /authentication|user name is empty|invalid auth token|auth token|password/i;

/** Sorts an error of the etcd3 client (or gRPC) into an EtcdKvError. */
export function classifyEtcd3Error(e: unknown): EtcdKvError {
  if (e instanceof EtcdKvError) return e;
  const err = e instanceof Error ? castGrpcError(e) : new Error(String(e));
  const msg = err.message.replace(/\s+/g, ' ').slice(0, 400);
  if (err instanceof EtcdLeaseInvalidError || /requested lease not found/.test(msg)) return new EtcdKvError('lease-not-found', msg);
  if (err instanceof EtcdPermissionDeniedError || /permission denied/.test(msg)) return new EtcdKvError('permission', msg);
  if (err instanceof EtcdAuthenticationFailedError || err instanceof EtcdInvalidAuthTokenError || err instanceof GRPCUnauthenticatedError) {
    return new EtcdKvError('auth', msg);
  }
  if (TLS_RE.test(msg)) return new EtcdKvError('tls', msg);
  if (/etcdserver:/.test(msg) && AUTH_RE.test(msg)) return new EtcdKvError('auth', msg);
  if (err instanceof GRPCDeadlineExceededError) return new EtcdKvError('timeout', msg);
  // Both are RESOURCE_EXHAUSTED. The first is etcd's NOSPACE alarm (the backend over its
  // --quota-backend-bytes): every write is refused until an admin frees space and disarms it;
  // the second, a member whose applied index lags its commits: load, gone by itself.
  if (/database space exceeded/.test(msg)) return new EtcdKvError('nospace', msg);
  if (/etcdserver: too many requests/.test(msg)) return new EtcdKvError('busy', msg);
  // "13 INTERNAL: Received RST_STREAM with code 0": etcd shutting down resets an open watch
  // stream before the connection goes (seen once in the lab when etcd was stopped).
  if (err instanceof GRPCUnavailableError || /circuit breaker|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|No connection established|Received RST_STREAM/i.test(msg)) {
    return new EtcdKvError('unavailable', msg);
  }
  return new EtcdKvError('other', msg);
}

function toEntry(kv: IKeyValue): KvEntry {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value ? kv.value.toString('utf8') : '',
    modRevision: BigInt(kv.mod_revision || '0'),
    lease: BigInt(kv.lease || '0'),
  };
}

async function readSecret(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new EtcdKvError('setup', `cannot read ${what} ${file}: ${whyUnreadable(e)}`);
  }
}

/** "https://etcd-1:2379/" -> "https://etcd-1:2379": the form the client's host list takes. */
function normaliseEndpoint(s: string): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    throw new EtcdKvError('setup', `cluster.etcd.endpoints: ${show(s)} is not a URL (expected http://host:2379 or https://host:2379)`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.host === '') {
    throw new EtcdKvError('setup', `cluster.etcd.endpoints: ${show(s)} is not an http:// or https:// URL`);
  }
  return `${u.protocol}//${u.host}`;
}

export async function connectEtcd3(o: EtcdConnectOptions): Promise<EtcdKv> {
  const hosts = o.endpoints.map(normaliseEndpoint);
  const options: IOptions = { hosts, grpcOptions: GRPC_OPTIONS, dialTimeout: o.callTimeoutMs };
  if (o.tls && (o.tls.ca || o.tls.cert || o.tls.key)) {
    if (!o.tls.cert !== !o.tls.key) throw new EtcdKvError('setup', 'cluster.etcd.cert and cluster.etcd.key go together: set both or neither');
    options.credentials = {
      // null: the system's CAs (gRPC's default roots).
      rootCertificate: (o.tls.ca ? await readSecret(o.tls.ca, 'cluster.etcd.ca') : null) as Buffer,
      certChain: o.tls.cert ? await readSecret(o.tls.cert, 'cluster.etcd.cert') : undefined,
      privateKey: o.tls.key ? await readSecret(o.tls.key, 'cluster.etcd.key') : undefined,
    };
  }
  if (o.auth) {
    const password = (await readSecret(o.auth.passwordFile, 'cluster.etcd.passwordFile')).toString('utf8').replace(/\r?\n$/, '');
    if (password === '') throw new EtcdKvError('setup', `cluster.etcd.passwordFile ${o.auth.passwordFile} is empty`);
    options.auth = { username: o.auth.username, password };
  }
  const deadline = () => new Date(o.clock.now() + o.callTimeoutMs);
  options.defaultCallOptions = (ctx) => (ctx.isStream ? {} : { deadline: deadline() });
  let client: Etcd3;
  try {
    client = new Etcd3(options);
  } catch (e) {
    throw new EtcdKvError('setup', `cannot set up the etcd client: ${(e as Error).message}`);
  }
  return new Etcd3Kv(client, deadline);
}

class Etcd3Kv implements EtcdKv {
  private readonly watchClient: WatchClient;

  constructor(
    private readonly client: Etcd3,
    private readonly deadline: () => Date,
  ) {
    this.watchClient = leaderWatchClient(client);
  }

  async get(key: string): Promise<KvEntry | null> {
    try {
      const res = await this.client.kv.range({ key: Buffer.from(key) });
      return res.kvs.length > 0 ? toEntry(res.kvs[0]) : null;
    } catch (e) {
      throw classifyEtcd3Error(e);
    }
  }

  async range(prefix: string): Promise<{ entries: KvEntry[]; revision: bigint }> {
    const key = Buffer.from(prefix);
    try {
      const res = await this.client.kv.range({ key, range_end: prefixRangeEnd(key) });
      return { entries: res.kvs.map(toEntry), revision: BigInt(res.header.revision) };
    } catch (e) {
      throw classifyEtcd3Error(e);
    }
  }

  watch(prefix: string, fromRevision: bigint, handler: WatchHandler, opts: { exact?: boolean } = {}): WatchHandle {
    const key = Buffer.from(prefix);
    let stream: Awaited<ReturnType<WatchClient['watch']>> | null = null;
    let done = false;
    const close = () => {
      if (!stream) return;
      try {
        stream.end();
        stream.cancel();
      } catch {
        /* already closed */
      }
    };
    const finish = (report: () => void) => {
      if (done) return;
      done = true;
      close();
      report();
    };
    this.watchClient.watch().then(
      (s) => {
        stream = s;
        if (done) return close();
        s.on('data', (res: IWatchResponse) => {
          if (done) return;
          const compacted = BigInt(res.compact_revision || '0');
          if (compacted > 0n) return finish(() => handler.onCompacted(compacted));
          if (res.canceled) {
            const why = res.cancel_reason || 'etcd canceled the watch';
            return finish(() => handler.onError(classifyEtcd3Error(castGrpcErrorMessage(why))));
          }
          if (res.created) return handler.onStarted();
          const events = (res.events ?? []).map((ev) => {
            const e = toEntry(ev.kv);
            return { type: ev.type === 'Delete' ? ('delete' as const) : ('put' as const), ...e };
          });
          handler.onEvents(events, BigInt(res.header?.revision ?? '0'));
        });
        s.on('error', (e: Error) => finish(() => handler.onError(classifyEtcd3Error(e))));
        s.on('end', () => finish(() => handler.onError(new EtcdKvError('unavailable', 'etcd closed the watch stream'))));
        const range = opts.exact ? {} : { range_end: prefixRangeEnd(key) };
        s.write({ create_request: { key, ...range, start_revision: fromRevision.toString(), progress_notify: true } });
      },
      (e: unknown) => finish(() => handler.onError(classifyEtcd3Error(e))),
    );
    return {
      cancel: () => {
        done = true;
        close();
      },
    };
  }

  async grant(ttlS: number): Promise<{ id: bigint; ttlS: number }> {
    try {
      const res = await this.client.leaseClient.leaseGrant({ TTL: ttlS });
      if (res.error) throw new EtcdKvError('other', `lease grant: ${res.error}`);
      return { id: BigInt(res.ID), ttlS: Number(res.TTL) };
    } catch (e) {
      throw classifyEtcd3Error(e);
    }
  }

  async keepAliveOnce(id: bigint): Promise<number> {
    try {
      return await this.keepAliveStream(id);
    } catch (e) {
      const err = classifyEtcd3Error(e);
      if (err.kind !== 'auth' || !/invalid auth token/i.test(err.message)) throw err;
      // A unary call renews the client's token; then one more try.
      await this.client.leaseClient.leaseTimeToLive({ ID: id.toString() }).catch(() => undefined);
      try {
        return await this.keepAliveStream(id);
      } catch (e2) {
        throw classifyEtcd3Error(e2);
      }
    }
  }

  private async keepAliveStream(id: bigint): Promise<number> {
    const s = await this.client.leaseClient.leaseKeepAlive({ deadline: this.deadline() });
    return new Promise<number>((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        try {
          s.end(); // half-close: etcd ends the stream cleanly
        } catch {
          /* closed */
        }
        f();
      };
      s.on('data', (res: { TTL: string }) => settle(() => resolve(Math.max(0, Number(res.TTL)))));
      s.on('error', (e: Error) => settle(() => reject(classifyEtcd3Error(e))));
      s.on('end', () => settle(() => reject(new EtcdKvError('unavailable', 'etcd closed the keepalive stream without an answer'))));
      s.write({ ID: id.toString() });
    });
  }

  async revoke(id: bigint): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id.toString() });
    } catch (e) {
      throw classifyEtcd3Error(e);
    }
  }

  async putIf(key: string, value: string, lease: bigint, expectModRevision: bigint): Promise<PutIfResult> {
    const k = Buffer.from(key);
    const compare = expectModRevision === 0n
      ? { key: k, target: 'Version' as const, result: 'Equal' as const, version: 0 }
      : { key: k, target: 'Mod' as const, result: 'Equal' as const, mod_revision: expectModRevision.toString() };
    return this.onCondition(k, compare, { request_put: { key: k, value: Buffer.from(value), lease: lease.toString() } });
  }

  async deleteIf(key: string, expectModRevision: bigint): Promise<PutIfResult> {
    const k = Buffer.from(key);
    return this.onCondition(k, { key: k, target: 'Mod', result: 'Equal', mod_revision: expectModRevision.toString() }, { request_delete_range: { key: k } });
  }

  /** One transaction: `op` if `compare` holds, else the key's current entry (two writers cannot both win). */
  private async onCondition(k: Buffer, compare: ICompare, op: IRequestOp): Promise<PutIfResult> {
    try {
      const res = await this.client.kv.txn({ compare: [compare], success: [op], failure: [{ request_range: { key: k } }] });
      const revision = BigInt(res.header.revision);
      if (res.succeeded) return { ok: true, revision };
      const kvs = res.responses[0]?.response_range?.kvs ?? [];
      return { ok: false, current: kvs.length > 0 ? toEntry(kvs[0]) : null, revision };
    } catch (e) {
      throw classifyEtcd3Error(e);
    }
  }

  // etcd authorizes a transaction as a whole before it evaluates the compare: every put and
  // delete of both branches must be allowed (CheckTxnAuth in etcd's apply_auth.go). So a
  // transaction whose compare can never hold (no key has a create revision below 0) and whose
  // success branch writes the key asks for exactly the write permission and writes nothing.
  async mayPut(key: string): Promise<boolean> {
    const k = Buffer.from(key);
    try {
      const res = await this.client.kv.txn({
        compare: [{ key: k, target: 'Create', result: 'Less', create_revision: 0 }],
        success: [{ request_put: { key: k, value: Buffer.alloc(0) } }],
        failure: [],
      });
      if (res.succeeded) throw new EtcdKvError('other', `asking whether ${key} may be written wrote it: etcd took create revision < 0 as true`);
      return true;
    } catch (e) {
      const err = classifyEtcd3Error(e);
      if (err.kind === 'permission') return false;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.client.close();
  }
}
