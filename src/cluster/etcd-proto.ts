// The protobuf messages of etcd's v3 API that the etcd adapter sends and reads
// (etcdserverpb/rpc.proto, mvccpb/kv.proto, authpb), encoded and decoded by hand.
//
// Why by hand: the `etcd3` client parses etcd's .proto files at load with protobuf.js, and with
// gRPC's own library that cost 4.9 MB of live heap and 9.4 MB of anonymous memory under the
// unit's V8 flags (docs/memory.md, "etcd without gRPC's libraries"), for the dozen messages
// below. The wire format is small (https://protobuf.dev/programming-guides/encoding/): varints,
// length-delimited bytes and nested messages; that is all these messages use.
//
// What comes back is untrusted input: the decoder checks every length against the buffer, takes
// at most 10 bytes for a varint, skips fields it does not know (etcd adds fields over releases)
// and throws ProtoError, and nothing else, on bytes that are not a message.

/** Bytes that are not a valid protobuf message. */
export class ProtoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtoError';
  }
}

const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

/** Appends `v` (an unsigned 64-bit value) to `out` as a varint: 7 bits a byte, low first, the top bit "more". */
function pushVarint(out: number[], v: bigint): void {
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
}

/** A field's key: its number and wire type, as a varint. */
const pushTag = (out: number[], field: number, wire: number) => pushVarint(out, BigInt(field * 8 + wire));

/** Appends fields to a message; `finish()` gives its bytes. Nested messages are encoded first and written as bytes. */
export class ProtoWriter {
  private readonly parts: Buffer[] = [];

  /** A varint field (uint64, int64 as two's complement, bool, enum); 0 is written only with `always` (a oneof member). */
  varint(field: number, value: bigint | number | boolean, always = false): this {
    const v = BigInt.asUintN(64, BigInt(value));
    if (v === 0n && !always) return this;
    const bytes: number[] = [];
    pushTag(bytes, field, VARINT);
    pushVarint(bytes, v);
    this.parts.push(Buffer.from(bytes));
    return this;
  }

  /** A length-delimited field: bytes, a string (UTF-8) or a nested message's bytes; empty ones are left out unless `always`. */
  bytes(field: number, value: Buffer | string, always = false): this {
    const b = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
    if (b.length === 0 && !always) return this;
    const head: number[] = [];
    pushTag(head, field, LEN);
    pushVarint(head, BigInt(b.length));
    this.parts.push(Buffer.from(head), b);
    return this;
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** One field as read: a varint or fixed64 as bigint, a fixed32 as number, a length-delimited one as the bytes (a view). */
export type ProtoValue = bigint | number | Buffer;

/** Calls `each` for every field of the message in `buf`, in order. */
export function readFields(buf: Buffer, each: (field: number, value: ProtoValue) => void): void {
  let at = 0;
  const varint = (): bigint => {
    let v = 0n;
    for (let i = 0; i < 10; i++) {
      if (at >= buf.length) throw new ProtoError('a varint runs past the end of the message');
      const b = buf[at++];
      v |= BigInt(b & 0x7f) << BigInt(7 * i);
      if (b < 0x80) return BigInt.asUintN(64, v);
    }
    throw new ProtoError('a varint longer than 10 bytes');
  };
  while (at < buf.length) {
    const tag = varint();
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (field === 0 || tag >> 3n > 0x1fffffffn) throw new ProtoError(`field number ${tag >> 3n} is not valid`);
    switch (wire) {
      case VARINT:
        each(field, varint());
        break;
      case FIXED64:
        if (at + 8 > buf.length) throw new ProtoError('a 64-bit field runs past the end of the message');
        each(field, buf.readBigUInt64LE(at));
        at += 8;
        break;
      case LEN: {
        const n = varint();
        if (n > BigInt(buf.length - at)) throw new ProtoError(`field ${field} says ${n} bytes, ${buf.length - at} are left`);
        each(field, buf.subarray(at, at + Number(n)));
        at += Number(n);
        break;
      }
      case FIXED32:
        if (at + 4 > buf.length) throw new ProtoError('a 32-bit field runs past the end of the message');
        each(field, buf.readUInt32LE(at));
        at += 4;
        break;
      default:
        throw new ProtoError(`wire type ${wire} of field ${field} is not one etcd's messages use`);
    }
  }
}

// What a field holds, checked: a field of the wrong wire type is not that field.
const asInt64 = (v: ProtoValue): bigint => (typeof v === 'bigint' ? BigInt.asIntN(64, v) : wrong());
const asBool = (v: ProtoValue): boolean => (typeof v === 'bigint' ? v !== 0n : wrong());
const asBytes = (v: ProtoValue): Buffer => (Buffer.isBuffer(v) ? v : wrong());
function wrong(): never {
  throw new ProtoError('a field has the wrong wire type for its number');
}

// --- Requests (etcdserverpb) -------------------------------------------------------------------

/** RangeRequest: one key, or [key, rangeEnd). */
export function rangeRequest(key: Buffer, rangeEnd?: Buffer): Buffer {
  const w = new ProtoWriter().bytes(1, key);
  if (rangeEnd) w.bytes(2, rangeEnd);
  return w.finish();
}

/** PutRequest. */
export function putRequest(key: Buffer, value: Buffer, lease: bigint): Buffer {
  return new ProtoWriter().bytes(1, key).bytes(2, value).varint(3, lease).finish();
}

/** Compare's result and target enums. */
export const CompareResult = { EQUAL: 0, GREATER: 1, LESS: 2, NOT_EQUAL: 3 } as const;
export const CompareTarget = { VERSION: 0, CREATE: 1, MOD: 2, VALUE: 3, LEASE: 4 } as const;

export interface Compare {
  key: Buffer;
  result: (typeof CompareResult)[keyof typeof CompareResult];
  target: (typeof CompareTarget)['VERSION' | 'CREATE' | 'MOD'];
  /** The version, create revision or mod revision compared with, by target. */
  value: bigint;
}

export type RequestOp =
  | { range: Buffer } // request_range of one key
  | { put: { key: Buffer; value: Buffer; lease: bigint } }
  | { deleteKey: Buffer }; // request_delete_range of one key

/** TxnRequest: if every compare holds, the success ops, else the failure ops. */
export function txnRequest(compare: Compare[], success: RequestOp[], failure: RequestOp[]): Buffer {
  const w = new ProtoWriter();
  for (const c of compare) {
    // The compared value is a oneof (target_union): written even when 0, at the field of its target.
    const unionField = c.target === CompareTarget.VERSION ? 4 : c.target === CompareTarget.CREATE ? 5 : 6;
    w.bytes(1, new ProtoWriter().varint(1, c.result).varint(2, c.target).bytes(3, c.key).varint(unionField, c.value, true).finish(), true);
  }
  const op = (o: RequestOp) => {
    if ('range' in o) return new ProtoWriter().bytes(1, rangeRequest(o.range), true).finish();
    if ('put' in o) return new ProtoWriter().bytes(2, putRequest(o.put.key, o.put.value, o.put.lease), true).finish();
    return new ProtoWriter().bytes(3, rangeRequest(o.deleteKey), true).finish();
  };
  for (const o of success) w.bytes(2, op(o), true);
  for (const o of failure) w.bytes(3, op(o), true);
  return w.finish();
}

/** LeaseGrantRequest: a lease of `ttlS` seconds, its id chosen by etcd. */
export const leaseGrantRequest = (ttlS: number): Buffer => new ProtoWriter().varint(1, ttlS).finish();
/** LeaseRevokeRequest and LeaseKeepAliveRequest: a lease id at field 1. */
export const leaseIdRequest = (id: bigint): Buffer => new ProtoWriter().varint(1, id).finish();
/** LeaseTimeToLiveRequest asking for the keys attached (field 2). */
export const leaseTimeToLiveRequest = (id: bigint): Buffer => new ProtoWriter().varint(1, id).varint(2, true).finish();
/** AuthenticateRequest. */
export const authenticateRequest = (name: string, password: string): Buffer => new ProtoWriter().bytes(1, name).bytes(2, password).finish();

/** WatchRequest with a create_request: [key, rangeEnd) (one key without rangeEnd) from `startRevision`, with progress notifications. */
export function watchCreateRequest(key: Buffer, rangeEnd: Buffer | null, startRevision: bigint): Buffer {
  const create = new ProtoWriter().bytes(1, key);
  if (rangeEnd) create.bytes(2, rangeEnd);
  create.varint(3, startRevision).varint(4, true);
  return new ProtoWriter().bytes(1, create.finish(), true).finish();
}

// --- Responses ---------------------------------------------------------------------------------

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  createRevision: bigint;
  modRevision: bigint;
  version: bigint;
  lease: bigint;
}

/** ResponseHeader's revision: the store's revision the answer reflects. */
function headerRevision(b: Buffer): bigint {
  let revision = 0n;
  readFields(b, (f, v) => {
    if (f === 3) revision = asInt64(v);
  });
  return revision;
}

export function decodeKeyValue(b: Buffer): KeyValue {
  const kv: KeyValue = { key: Buffer.alloc(0), value: Buffer.alloc(0), createRevision: 0n, modRevision: 0n, version: 0n, lease: 0n };
  readFields(b, (f, v) => {
    if (f === 1) kv.key = asBytes(v);
    else if (f === 2) kv.createRevision = asInt64(v);
    else if (f === 3) kv.modRevision = asInt64(v);
    else if (f === 4) kv.version = asInt64(v);
    else if (f === 5) kv.value = asBytes(v);
    else if (f === 6) kv.lease = asInt64(v);
  });
  return kv;
}

export interface RangeResponse {
  revision: bigint;
  kvs: KeyValue[];
}

export function decodeRangeResponse(b: Buffer): RangeResponse {
  const r: RangeResponse = { revision: 0n, kvs: [] };
  readFields(b, (f, v) => {
    if (f === 1) r.revision = headerRevision(asBytes(v));
    else if (f === 2) r.kvs.push(decodeKeyValue(asBytes(v)));
  });
  return r;
}

export interface TxnResponse {
  revision: bigint;
  succeeded: boolean;
  /** The response_range of each op, in order (null for the other kinds). */
  ranges: (RangeResponse | null)[];
}

export function decodeTxnResponse(b: Buffer): TxnResponse {
  const r: TxnResponse = { revision: 0n, succeeded: false, ranges: [] };
  readFields(b, (f, v) => {
    if (f === 1) r.revision = headerRevision(asBytes(v));
    else if (f === 2) r.succeeded = asBool(v);
    else if (f === 3) {
      let range: RangeResponse | null = null;
      readFields(asBytes(v), (g, u) => {
        if (g === 1) range = decodeRangeResponse(asBytes(u));
      });
      r.ranges.push(range);
    }
  });
  return r;
}

/** LeaseGrantResponse and LeaseKeepAliveResponse: ID at 2, TTL at 3 (0: the lease is gone), error at 4. */
export interface LeaseResponse {
  id: bigint;
  ttl: bigint;
  error: string;
}

export function decodeLeaseResponse(b: Buffer): LeaseResponse {
  const r: LeaseResponse = { id: 0n, ttl: 0n, error: '' };
  readFields(b, (f, v) => {
    if (f === 2) r.id = asInt64(v);
    else if (f === 3) r.ttl = asInt64(v);
    else if (f === 4) r.error = asBytes(v).toString('utf8');
  });
  return r;
}

/** LeaseTimeToLiveResponse: TTL at 3 (-1: no such lease, expired or revoked), the keys attached at 5. */
export interface LeaseTimeToLiveResponse {
  ttl: bigint;
  keys: Buffer[];
}

export function decodeLeaseTimeToLiveResponse(b: Buffer): LeaseTimeToLiveResponse {
  const r: LeaseTimeToLiveResponse = { ttl: 0n, keys: [] };
  readFields(b, (f, v) => {
    if (f === 3) r.ttl = asInt64(v);
    else if (f === 5) r.keys.push(asBytes(v));
  });
  return r;
}

/** AuthenticateResponse's token. */
export function decodeAuthenticateResponse(b: Buffer): string {
  let token = '';
  readFields(b, (f, v) => {
    if (f === 2) token = asBytes(v).toString('utf8');
  });
  return token;
}

export interface WatchResponse {
  revision: bigint;
  created: boolean;
  canceled: boolean;
  compactRevision: bigint;
  cancelReason: string;
  events: { type: 'put' | 'delete'; kv: KeyValue }[];
}

export function decodeWatchResponse(b: Buffer): WatchResponse {
  const r: WatchResponse = { revision: 0n, created: false, canceled: false, compactRevision: 0n, cancelReason: '', events: [] };
  readFields(b, (f, v) => {
    if (f === 1) r.revision = headerRevision(asBytes(v));
    else if (f === 3) r.created = asBool(v);
    else if (f === 4) r.canceled = asBool(v);
    else if (f === 5) r.compactRevision = asInt64(v);
    else if (f === 6) r.cancelReason = asBytes(v).toString('utf8');
    else if (f === 11) {
      let type: 'put' | 'delete' = 'put';
      let kv: KeyValue | null = null;
      readFields(asBytes(v), (g, u) => {
        if (g === 1) type = asInt64(u) === 1n ? 'delete' : 'put';
        else if (g === 2) kv = decodeKeyValue(asBytes(u));
      });
      r.events.push({ type, kv: kv ?? decodeKeyValue(Buffer.alloc(0)) });
    }
  });
  return r;
}
