// EtcdKv over etcd's v3 gRPC API, spoken with our own small gRPC client (grpc-h2.ts, Node's
// http2) and protobuf codec (etcd-proto.ts). Loaded only by an etcd cluster source (dynamic
// import in etcd-connection.ts).
//
// It replaced the `etcd3` client (December 7): with gRPC's and protobuf.js's libraries that
// client cost 4.9 MB of live heap and 9.4 MB of anonymous memory at load, and a gateway
// following etcd peaked at 67 MB in `scripts/soak`, over a board's 64 MB budget. etcd's JSON
// gateway (/v3/kv/range over HTTP/1.1) was tried first and does not do: it reaches etcd through
// a gRPC client of its own, so a client certificate's common name, etcd's user for `vxedge
// rbac`, never arrives (and with --client-cert-auth, etcd 3.4's gateway could not connect at all).
//
// What the source must see, and how:
//  - a compacted watch (compact_revision), a lease that is gone (TTL 0), and the revision every
//    answer reflects: read from the messages as they are;
//  - clientv3's WithRequireLeader, which flanneld uses: the watch carries the metadata
//    "hasleader: true", so a member cut off from its leader cancels it ("etcdserver: no
//    leader") instead of going silent while the others change leases;
//  - authentication: a token from Auth/Authenticate in the "token" metadata. Simple tokens
//    expire after 5 idle minutes: a call refused with "invalid auth token" gets a new token and
//    is made once more (a watch too);
//  - several endpoints: calls go to one at a time, and to the next when a connection cannot be
//    made, when the member says it cannot serve (MEMBER_CANNOT_SERVE: cut off from its leader),
//    or when it leaves two calls in a row past their deadlines (grpc-h2.ts STALLS_TO_LEAVE), as
//    etcd's own clients move to another member; a dead connection under a quiet watch ends
//    after an unanswered ping (30 s + 10 s).
import { readFile } from 'node:fs/promises';
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
import {
  CompareResult,
  CompareTarget,
  ProtoError,
  authenticateRequest,
  decodeAuthenticateResponse,
  decodeLeaseResponse,
  decodeLeaseTimeToLiveResponse,
  decodeRangeResponse,
  decodeTxnResponse,
  decodeWatchResponse,
  leaseGrantRequest,
  leaseIdRequest,
  leaseTimeToLiveRequest,
  rangeRequest,
  txnRequest,
  watchCreateRequest,
  type Compare,
  type KeyValue,
  type RequestOp,
} from './etcd-proto.js';
import { GrpcChannel, GrpcCode, GrpcConnectError, GrpcStatusError } from './grpc-h2.js';

const KV = '/etcdserverpb.KV/';
const LEASE = '/etcdserverpb.Lease/';

/**
 * etcd's words (rpctypes) for a member that cannot serve now while the others may: it has no
 * leader (a member cut off from the rest ends a require-leader watch so), or could not get a
 * request committed in time. Both are UNAVAILABLE; another member is asked instead.
 */
const MEMBER_CANNOT_SERVE = /^etcdserver: (no leader|request timed out)/;

/** etcd's "require leader" metadata (clientv3 WithRequireLeader, rpctypes.MetadataRequireLeaderKey). */
const REQUIRE_LEADER = { hasleader: 'true' };

const TLS_RE = /certificate|\bSSL\b|\bTLS\b|handshake|self[- ]signed|CERT_|unable to verify|wrong version number|alert/i;
const AUTH_RE = /authentication|user name is empty|invalid auth token|auth token|password/i;

/** Sorts a failure into an EtcdKvError: etcd's status and words, Node's for the connection and TLS, or our deadline. */
export function classifyEtcdError(e: unknown): EtcdKvError {
  if (e instanceof EtcdKvError) return e;
  const err = e instanceof GrpcConnectError ? e.reason : e instanceof Error ? e : new Error(String(e));
  const status = err instanceof GrpcStatusError ? err.code : undefined;
  const msg = err.message.replace(/\s+/g, ' ').slice(0, 400);
  if (/requested lease not found/.test(msg)) return new EtcdKvError('lease-not-found', msg);
  if (status === GrpcCode.PERMISSION_DENIED || /permission denied/.test(msg)) return new EtcdKvError('permission', msg);
  if (status === GrpcCode.UNAUTHENTICATED || (/etcdserver:/.test(msg) && AUTH_RE.test(msg))) return new EtcdKvError('auth', msg);
  if (TLS_RE.test(msg)) return new EtcdKvError('tls', msg);
  if (status === GrpcCode.DEADLINE_EXCEEDED) return new EtcdKvError('timeout', msg);
  // Both are RESOURCE_EXHAUSTED. The first is etcd's NOSPACE alarm (the backend over its
  // --quota-backend-bytes): every write is refused until an admin frees space and disarms it;
  // the second, a member whose applied index lags its commits: load, gone by itself.
  if (/database space exceeded/.test(msg)) return new EtcdKvError('nospace', msg);
  if (/etcdserver: too many requests/.test(msg)) return new EtcdKvError('busy', msg);
  if (status === GrpcCode.UNAVAILABLE || e instanceof GrpcConnectError || /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|ECONNRESET|EPIPE|ENOTFOUND|EAI_AGAIN|RST_STREAM|GOAWAY|keepalive ping|\bno leader\b/.test(msg)) {
    return new EtcdKvError('unavailable', msg);
  }
  if (err instanceof ProtoError) return new EtcdKvError('other', `etcd sent a message that cannot be read: ${msg}`);
  return new EtcdKvError('other', msg);
}

const toEntry = (kv: KeyValue): KvEntry => ({ key: kv.key.toString('utf8'), value: kv.value.toString('utf8'), modRevision: kv.modRevision, lease: kv.lease });

async function readSecret(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new EtcdKvError('setup', `cannot read ${what} ${file}: ${whyUnreadable(e)}`);
  }
}

/** "https://etcd-1:2379/" -> "https://etcd-1:2379". */
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

export async function connectEtcdGrpc(o: EtcdConnectOptions): Promise<EtcdKv> {
  const endpoints = o.endpoints.map(normaliseEndpoint);
  if (endpoints.length === 0) throw new EtcdKvError('setup', 'cluster.etcd.endpoints is empty: name at least one etcd member (http://host:2379 or https://host:2379)');
  const tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  if (o.tls && (o.tls.ca || o.tls.cert || o.tls.key)) {
    if (!o.tls.cert !== !o.tls.key) throw new EtcdKvError('setup', 'cluster.etcd.cert and cluster.etcd.key go together: set both or neither');
    if (o.tls.ca) tls.ca = await readSecret(o.tls.ca, 'cluster.etcd.ca'); // else the system's CAs
    if (o.tls.cert) tls.cert = await readSecret(o.tls.cert, 'cluster.etcd.cert');
    if (o.tls.key) tls.key = await readSecret(o.tls.key, 'cluster.etcd.key');
  }
  let credentials: { name: string; password: string } | null = null;
  if (o.auth) {
    const password = (await readSecret(o.auth.passwordFile, 'cluster.etcd.passwordFile')).toString('utf8').replace(/\r?\n$/, '');
    if (password === '') throw new EtcdKvError('setup', `cluster.etcd.passwordFile ${o.auth.passwordFile} is empty`);
    credentials = { name: o.auth.username, password };
  }
  const leaveOn = (e: GrpcStatusError) => e.code === GrpcCode.UNAVAILABLE && MEMBER_CANNOT_SERVE.test(e.details);
  const channel = new GrpcChannel({ endpoints, tls, clock: o.clock, leaveOn, ...(o.memberLeft ? { left: o.memberLeft } : {}) });
  return new EtcdGrpcKv(channel, credentials, o.callTimeoutMs);
}

const isExpiredToken = (e: unknown) => e instanceof Error && /invalid auth token/.test(e.message);

class EtcdGrpcKv implements EtcdKv {
  private token: string | null = null;
  private authenticating: Promise<string> | null = null;

  constructor(
    private readonly channel: GrpcChannel,
    private readonly credentials: { name: string; password: string } | null,
    private readonly callTimeoutMs: number,
  ) {}

  async get(key: string): Promise<KvEntry | null> {
    const res = await this.unary(`${KV}Range`, rangeRequest(Buffer.from(key)), decodeRangeResponse);
    return res.kvs.length > 0 ? toEntry(res.kvs[0]) : null;
  }

  async range(prefix: string): Promise<{ entries: KvEntry[]; revision: bigint }> {
    const key = Buffer.from(prefix);
    const res = await this.unary(`${KV}Range`, rangeRequest(key, prefixRangeEnd(key)), decodeRangeResponse);
    return { entries: res.kvs.map(toEntry), revision: res.revision };
  }

  watch(prefix: string, fromRevision: bigint, handler: WatchHandler, opts: { exact?: boolean } = {}): WatchHandle {
    const key = Buffer.from(prefix);
    const create = watchCreateRequest(key, opts.exact ? null : prefixRangeEnd(key), fromRevision);
    let done = false;
    let stream: { cancel(): void } | null = null;
    let renewedToken = false;
    const finish = (report: () => void) => {
      if (done) return;
      done = true;
      stream?.cancel();
      report();
    };
    const open = async (): Promise<void> => {
      const token = await this.authToken();
      if (done) return;
      let started = false;
      const s = this.channel.stream('/etcdserverpb.Watch/Watch', { ...this.metadata(token), ...REQUIRE_LEADER }, {
        onMessage: (m) => {
          if (done) return;
          const res = decodeWatchResponse(m);
          if (res.compactRevision > 0n) return finish(() => handler.onCompacted(res.compactRevision));
          if (res.canceled) {
            const why = classifyEtcdError(new Error(res.cancelReason || 'etcd canceled the watch'));
            // A token that expired while idle: a new one, and the watch once more.
            if (!started && !renewedToken && this.credentials && isExpiredToken(why)) {
              renewedToken = true;
              this.token = null;
              s.cancel();
              return void open().catch((e: unknown) => finish(() => handler.onError(classifyEtcdError(e))));
            }
            return finish(() => handler.onError(why));
          }
          if (res.created) {
            started = true;
            return handler.onStarted();
          }
          handler.onEvents(res.events.map((ev) => ({ type: ev.type, ...toEntry(ev.kv) })), res.revision);
        },
        onEnd: (err) => finish(() => handler.onError(err ? classifyEtcdError(err) : new EtcdKvError('unavailable', 'etcd closed the watch stream'))),
      });
      stream = s;
      s.write(create);
    };
    open().catch((e: unknown) => finish(() => handler.onError(classifyEtcdError(e))));
    return {
      cancel: () => {
        done = true;
        stream?.cancel();
      },
    };
  }

  async grant(ttlS: number): Promise<{ id: bigint; ttlS: number }> {
    const res = await this.unary(`${LEASE}LeaseGrant`, leaseGrantRequest(ttlS), decodeLeaseResponse);
    if (res.error) throw new EtcdKvError('other', `lease grant: ${res.error}`);
    return { id: res.id, ttlS: Number(res.ttl) };
  }

  async keepAliveOnce(id: bigint): Promise<number> {
    // A stream in etcd's API, made as a unary call: one request, the stream half-closed at once,
    // and etcd answers it before it reads the end (its loop sends each answer before the next
    // read) and ends with status OK. TTL 0: the lease is gone.
    const res = await this.unary(`${LEASE}LeaseKeepAlive`, leaseIdRequest(id), decodeLeaseResponse);
    return Math.max(0, Number(res.ttl));
  }

  async revoke(id: bigint): Promise<void> {
    await this.unary(`${LEASE}LeaseRevoke`, leaseIdRequest(id), () => undefined);
  }

  async leaseKeys(id: bigint): Promise<string[] | null> {
    // etcd answers a lease it does not know with TTL -1 and no error (v3rpc LeaseTimeToLive).
    const res = await this.unary(`${LEASE}LeaseTimeToLive`, leaseTimeToLiveRequest(id), decodeLeaseTimeToLiveResponse);
    return res.ttl < 0n ? null : res.keys.map((k) => k.toString('utf8'));
  }

  async putIf(key: string, value: string, lease: bigint, expectModRevision: bigint): Promise<PutIfResult> {
    const k = Buffer.from(key);
    const compare: Compare = expectModRevision === 0n
      ? { key: k, target: CompareTarget.VERSION, result: CompareResult.EQUAL, value: 0n }
      : { key: k, target: CompareTarget.MOD, result: CompareResult.EQUAL, value: expectModRevision };
    return this.onCondition(k, compare, { put: { key: k, value: Buffer.from(value), lease } });
  }

  async deleteIf(key: string, expectModRevision: bigint): Promise<PutIfResult> {
    const k = Buffer.from(key);
    return this.onCondition(k, { key: k, target: CompareTarget.MOD, result: CompareResult.EQUAL, value: expectModRevision }, { deleteKey: k });
  }

  /** One transaction: `op` if `compare` holds, else the key's current entry (two writers cannot both win). */
  private async onCondition(k: Buffer, compare: Compare, op: RequestOp): Promise<PutIfResult> {
    const res = await this.unary(`${KV}Txn`, txnRequest([compare], [op], [{ range: k }]), decodeTxnResponse);
    if (res.succeeded) return { ok: true, revision: res.revision };
    const kvs = res.ranges[0]?.kvs ?? [];
    return { ok: false, current: kvs.length > 0 ? toEntry(kvs[0]) : null, revision: res.revision };
  }

  // etcd authorizes a transaction as a whole before it evaluates the compare: every put and
  // delete of both branches must be allowed (CheckTxnAuth in etcd's apply_auth.go). So a
  // transaction whose compare can never hold (no key has a create revision below 0) and whose
  // success branch writes the key asks for exactly the write permission and writes nothing.
  async mayPut(key: string): Promise<boolean> {
    const k = Buffer.from(key);
    try {
      const res = await this.unary(`${KV}Txn`, txnRequest(
        [{ key: k, target: CompareTarget.CREATE, result: CompareResult.LESS, value: 0n }],
        [{ put: { key: k, value: Buffer.alloc(0), lease: 0n } }],
        [],
      ), decodeTxnResponse);
      if (res.succeeded) throw new EtcdKvError('other', `asking whether ${key} may be written wrote it: etcd took create revision < 0 as true`);
      return true;
    } catch (e) {
      const err = classifyEtcdError(e);
      if (err.kind === 'permission') return false;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.channel.close();
  }

  /**
   * A unary call and its answer decoded; once more with a new token when etcd says the token
   * expired. etcd's refusal, and an answer that cannot be read, are thrown as an EtcdKvError.
   */
  private async unary<T>(path: string, request: Buffer, decode: (answer: Buffer) => T): Promise<T> {
    for (let renewed = false; ; renewed = true) {
      const token = await this.authToken();
      try {
        return decode(await this.channel.unary(path, request, this.metadata(token), this.callTimeoutMs));
      } catch (e) {
        if (renewed || !this.credentials || !isExpiredToken(e)) throw classifyEtcdError(e);
        this.token = null;
      }
    }
  }

  private metadata(token: string | null): Record<string, string> {
    return token ? { token } : {};
  }

  /** The auth token (null without credentials), fetched once and shared by the calls waiting for it. */
  private async authToken(): Promise<string | null> {
    if (!this.credentials) return null;
    if (this.token) return this.token;
    this.authenticating ??= (async () => {
      try {
        const { name, password } = this.credentials!;
        const answer = await this.channel.unary('/etcdserverpb.Auth/Authenticate', authenticateRequest(name, password), {}, this.callTimeoutMs);
        const token = decodeAuthenticateResponse(answer);
        if (token === '') throw new EtcdKvError('auth', 'etcd answered the authentication without a token');
        this.token = token;
        return token;
      } catch (e) {
        throw classifyEtcdError(e);
      } finally {
        this.authenticating = null;
      }
    })();
    return this.authenticating;
  }
}
