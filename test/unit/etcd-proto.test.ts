// The etcd adapter's protobuf codec (src/cluster/etcd-proto.ts) against protobuf.js reading
// etcd's own .proto files (the ones the etcd3 client ships, node_modules/etcd3/proto): every
// request we encode is what protobuf.js reads back field for field, every answer protobuf.js
// encodes is what we decode; and the decoder, which reads untrusted bytes, throws ProtoError and
// nothing else on any input.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import path from 'node:path';
import protobuf from 'protobufjs';
import {
  CompareResult,
  CompareTarget,
  ProtoError,
  ProtoWriter,
  authenticateRequest,
  decodeAuthenticateResponse,
  decodeKeyValue,
  decodeLeaseResponse,
  decodeLeaseTimeToLiveResponse,
  decodeRangeResponse,
  decodeTxnResponse,
  decodeWatchResponse,
  leaseGrantRequest,
  leaseIdRequest,
  leaseTimeToLiveRequest,
  rangeRequest,
  readFields,
  txnRequest,
  watchCreateRequest,
  type Compare,
  type RequestOp,
} from '../../src/cluster/etcd-proto.js';

const root = protobuf.loadSync(path.join(import.meta.dirname, '..', '..', 'node_modules', 'etcd3', 'proto', 'rpc.proto'));
const type = (name: string) => root.lookupType(name);
/** protobuf.js's reading of our bytes, with int64s as decimal strings and bytes as Buffers. */
const read = (name: string, bytes: Buffer) =>
  type(name).toObject(type(name).decode(bytes), { longs: String, enums: String, bytes: Buffer, defaults: true, oneofs: true });
/** protobuf.js's encoding of a message (camelCase fields, int64s as strings). */
const write = (name: string, obj: object): Buffer => Buffer.from(type(name).encode(type(name).fromObject(obj)).finish());

const bytes = fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a));
const int64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const revision = fc.bigInt({ min: 0n, max: 2n ** 63n - 1n });

describe('requests: what protobuf.js reads from our bytes', () => {
  it('RangeRequest, with and without a range end', () => {
    fc.assert(fc.property(bytes, fc.option(bytes, { nil: undefined }), (key, end) => {
      const r = read('etcdserverpb.RangeRequest', rangeRequest(key, end));
      expect(Buffer.compare(r.key, key)).toBe(0);
      expect(Buffer.compare(r.rangeEnd, end ?? Buffer.alloc(0))).toBe(0);
    }));
  });

  it('lengths of two and three varint bytes (keys of 128 B to 20 KB)', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 128, maxLength: 20_000 }).map((a) => Buffer.from(a)), (key) => {
      expect(Buffer.compare(read('etcdserverpb.RangeRequest', rangeRequest(key)).key, key)).toBe(0);
    }), { numRuns: 50 });
  });

  it('LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest (lease ids above 2^53 and below 0 too)', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), int64, (ttl, id) => {
      expect(read('etcdserverpb.LeaseGrantRequest', leaseGrantRequest(ttl))).toMatchObject({ TTL: String(ttl), ID: '0' });
      expect(read('etcdserverpb.LeaseKeepAliveRequest', leaseIdRequest(id)).ID).toBe(String(id));
      expect(read('etcdserverpb.LeaseRevokeRequest', leaseIdRequest(id)).ID).toBe(String(id));
      expect(read('etcdserverpb.LeaseTimeToLiveRequest', leaseTimeToLiveRequest(id))).toMatchObject({ ID: String(id), keys: true });
    }));
  });

  it('AuthenticateRequest (any text, UTF-8)', () => {
    fc.assert(fc.property(fc.string(), fc.string(), (name, password) => {
      expect(read('etcdserverpb.AuthenticateRequest', authenticateRequest(name, password))).toMatchObject({ name, password });
    }));
  });

  it('WatchRequest with a create request: prefix or one key, from a revision, with progress notifications', () => {
    fc.assert(fc.property(bytes, fc.option(bytes, { nil: null }), revision, (key, end, from) => {
      const r = read('etcdserverpb.WatchRequest', watchCreateRequest(key, end, from));
      expect(r.requestUnion).toBe('createRequest');
      expect(Buffer.compare(r.createRequest.key, key)).toBe(0);
      expect(Buffer.compare(r.createRequest.rangeEnd, end ?? Buffer.alloc(0))).toBe(0);
      expect(r.createRequest.startRevision).toBe(String(from));
      expect(r.createRequest.progressNotify).toBe(true);
    }));
  });

  it('TxnRequest: compares on version, create and mod revision (0 written: it is a oneof), puts on a lease, ranges, deletes', () => {
    const target = fc.constantFrom(CompareTarget.VERSION, CompareTarget.CREATE, CompareTarget.MOD);
    const result = fc.constantFrom(...Object.values(CompareResult));
    const compare = fc.record({ key: bytes, target, result, value: revision }) as fc.Arbitrary<Compare>;
    const op: fc.Arbitrary<RequestOp> = fc.oneof(
      bytes.map((k) => ({ range: k })),
      fc.record({ key: bytes, value: bytes, lease: int64 }).map((put) => ({ put })),
      bytes.map((k) => ({ deleteKey: k })),
    );
    // The etcd3 client's copy of the .proto spells the enums' names in CamelCase; their numbers are etcd's.
    const targetNames = ['Version', 'Create', 'Mod'];
    const resultNames = ['Equal', 'Greater', 'Less', 'NotEqual'];
    const unionField = ['version', 'createRevision', 'modRevision'];
    fc.assert(fc.property(fc.array(compare, { maxLength: 3 }), fc.array(op, { maxLength: 3 }), fc.array(op, { maxLength: 3 }), (cs, success, failure) => {
      const r = read('etcdserverpb.TxnRequest', txnRequest(cs, success, failure));
      expect(r.compare).toHaveLength(cs.length);
      cs.forEach((c, i) => {
        const got = r.compare[i];
        expect(Buffer.compare(got.key, c.key)).toBe(0);
        expect([got.target, got.result]).toEqual([targetNames[c.target], resultNames[c.result]]);
        expect(got.targetUnion).toBe(unionField[c.target]);
        expect(got[unionField[c.target]]).toBe(String(c.value));
      });
      const same = (ops: RequestOp[], got: Record<string, any>[]) => {
        expect(got).toHaveLength(ops.length);
        ops.forEach((o, i) => {
          if ('range' in o) {
            expect(got[i].request).toBe('requestRange');
            expect(Buffer.compare(got[i].requestRange.key, o.range)).toBe(0);
          } else if ('put' in o) {
            expect(got[i].request).toBe('requestPut');
            expect(Buffer.compare(got[i].requestPut.key, o.put.key)).toBe(0);
            expect(Buffer.compare(got[i].requestPut.value, o.put.value)).toBe(0);
            expect(got[i].requestPut.lease).toBe(String(o.put.lease));
          } else {
            expect(got[i].request).toBe('requestDeleteRange');
            expect(Buffer.compare(got[i].requestDeleteRange.key, o.deleteKey)).toBe(0);
          }
        });
      };
      same(success, r.success);
      same(failure, r.failure);
    }));
  });
});

describe('answers: what we read from protobuf.js bytes', () => {
  const kv = fc.record({ key: bytes, value: bytes, createRevision: revision, modRevision: revision, version: revision, lease: int64 });
  const asJson = (k: { key: Buffer; value: Buffer; createRevision: bigint; modRevision: bigint; version: bigint; lease: bigint }) =>
    ({ key: k.key, value: k.value, createRevision: String(k.createRevision), modRevision: String(k.modRevision), version: String(k.version), lease: String(k.lease) });
  const header = (rev: bigint) => ({ clusterId: '14841639068965178418', memberId: '10276657743932975437', revision: String(rev), raftTerm: '2' });

  it('RangeResponse: the header revision and every key-value, in order', () => {
    fc.assert(fc.property(revision, fc.array(kv, { maxLength: 5 }), (rev, kvs) => {
      const got = decodeRangeResponse(write('etcdserverpb.RangeResponse', { header: header(rev), kvs: kvs.map(asJson), count: String(kvs.length), more: false }));
      expect(got.revision).toBe(rev);
      expect(got.kvs).toEqual(kvs);
    }));
  });

  it('TxnResponse: succeeded, and the range of a failure branch', () => {
    fc.assert(fc.property(revision, fc.boolean(), fc.array(kv, { maxLength: 2 }), (rev, succeeded, kvs) => {
      const responses = succeeded ? [{ responsePut: { header: header(rev) } }] : [{ responseRange: { header: header(rev), kvs: kvs.map(asJson) } }];
      const got = decodeTxnResponse(write('etcdserverpb.TxnResponse', { header: header(rev), succeeded, responses }));
      expect([got.revision, got.succeeded]).toEqual([rev, succeeded]);
      expect(got.ranges).toEqual(succeeded ? [null] : [{ revision: rev, kvs }]);
    }));
  });

  it('LeaseGrantResponse and LeaseKeepAliveResponse (TTL 0: the lease is gone)', () => {
    fc.assert(fc.property(int64, fc.bigInt({ min: 0n, max: 2n ** 31n }), fc.string(), (id, ttl, error) => {
      expect(decodeLeaseResponse(write('etcdserverpb.LeaseGrantResponse', { header: header(1n), ID: String(id), TTL: String(ttl), error }))).toEqual({ id, ttl, error });
      expect(decodeLeaseResponse(write('etcdserverpb.LeaseKeepAliveResponse', { header: header(1n), ID: String(id), TTL: String(ttl) }))).toEqual({ id, ttl, error: '' });
    }));
  });

  it('LeaseTimeToLiveResponse: its TTL (-1: no such lease) and the keys attached', () => {
    fc.assert(fc.property(int64, fc.bigInt({ min: -1n, max: 2n ** 31n }), fc.array(bytes, { maxLength: 4 }), (id, ttl, keys) => {
      const got = decodeLeaseTimeToLiveResponse(write('etcdserverpb.LeaseTimeToLiveResponse', { header: header(1n), ID: String(id), TTL: String(ttl), grantedTTL: '60', keys }));
      expect(got.ttl).toBe(ttl);
      expect(got.keys.map((k) => k.toString('hex'))).toEqual(keys.map((k) => k.toString('hex')));
    }));
  });

  it('AuthenticateResponse', () => {
    fc.assert(fc.property(fc.string(), (token) => {
      expect(decodeAuthenticateResponse(write('etcdserverpb.AuthenticateResponse', { header: header(1n), token }))).toBe(token);
    }));
  });

  it('WatchResponse: created, canceled with its reason, compacted, events put and delete (watch_id -1 too)', () => {
    const event = fc.record({ type: fc.constantFrom('put' as const, 'delete' as const), kv });
    fc.assert(fc.property(revision, fc.boolean(), fc.boolean(), revision, fc.string(), fc.array(event, { maxLength: 4 }), fc.constantFrom('0', '7', '-1'),
      (rev, created, canceled, compactRevision, cancelReason, events, watchId) => {
        const got = decodeWatchResponse(write('etcdserverpb.WatchResponse', {
          header: header(rev), watchId, created, canceled, compactRevision: String(compactRevision), cancelReason,
          events: events.map((e) => ({ type: e.type === 'delete' ? 'Delete' : 'Put', kv: asJson(e.kv) })),
        }));
        expect(got).toEqual({ revision: rev, created, canceled, compactRevision, cancelReason, events });
      }));
  });

  it('fields it does not know (a newer etcd) are skipped, of every wire type', () => {
    const extra = new ProtoWriter().varint(99, 5n).bytes(100, 'x').finish();
    const fixed = Buffer.from([(11 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8, (12 << 3) | 5, 1, 2, 3, 4]);
    const base = write('mvccpb.KeyValue', { key: Buffer.from('k'), value: Buffer.from('v'), modRevision: '7' });
    expect(decodeKeyValue(Buffer.concat([extra, base, fixed]))).toMatchObject({ key: Buffer.from('k'), value: Buffer.from('v'), modRevision: 7n });
  });
});

describe('the decoder on untrusted bytes', () => {
  const decoders = [decodeRangeResponse, decodeTxnResponse, decodeLeaseResponse, decodeLeaseTimeToLiveResponse, decodeAuthenticateResponse, decodeWatchResponse, decodeKeyValue];

  it('any bytes: an answer or a ProtoError, never another exception', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(decoders.length - 1), (a, i) => {
      try {
        decoders[i](Buffer.from(a));
      } catch (e) {
        expect(e).toBeInstanceOf(ProtoError);
      }
    }), { numRuns: 5000 });
  });

  it('a valid answer cut short anywhere is a ProtoError or a shorter answer, never a read past its end', () => {
    const full = write('etcdserverpb.WatchResponse', {
      header: { revision: '42' }, created: true, cancelReason: 'x'.repeat(200),
      events: [{ type: 'Delete', kv: { key: Buffer.from('/coreos.com/network/subnets/10.244.1.0-24'), modRevision: '42' } }],
    });
    fc.assert(fc.property(fc.nat(full.length - 1), (n) => {
      try {
        decodeWatchResponse(full.subarray(0, n));
      } catch (e) {
        expect(e).toBeInstanceOf(ProtoError);
      }
    }));
  });

  it.each([
    ['a varint of 11 bytes', Buffer.from([0x08, ...Array(10).fill(0xff), 0x01]), 'a varint longer than 10 bytes'],
    ['a length past the end', Buffer.from([0x0a, 0x05, 0x61]), 'field 1 says 5 bytes, 1 are left'],
    ['a group (wire type 3)', Buffer.from([0x0b]), 'wire type 3 of field 1'],
    ['field number 0', Buffer.from([0x00, 0x01]), 'field number 0 is not valid'],
    ['a key given as a number', Buffer.from([0x08, 0x01]), 'wrong wire type'],
  ])('%s is refused', (_what, b, words) => {
    expect(() => decodeKeyValue(b)).toThrow(ProtoError);
    expect(() => decodeKeyValue(b)).toThrow(words);
  });

  it('readFields gives each field with its value as read', () => {
    const seen: [number, unknown][] = [];
    readFields(new ProtoWriter().varint(1, 300).bytes(2, 'ab').varint(3, -1n).finish(), (f, v) => seen.push([f, Buffer.isBuffer(v) ? v.toString() : v]));
    expect(seen).toEqual([[1, 300n], [2, 'ab'], [3, 2n ** 64n - 1n]]);
  });
});
