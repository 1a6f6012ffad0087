// STUN: the Binding codec against the RFC 5769 test vectors and random input, and the
// discovery client (retransmission, matching, conclusions, scheduling) on fake time.
import { beforeEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import zlib from 'node:zlib';
import { Ajv } from 'ajv';
import {
  STUN_BINDING_ERROR,
  STUN_BINDING_REQUEST,
  STUN_BINDING_SUCCESS,
  crc32,
  isStunMessage,
  parseStunResponse,
  txidEquals,
  usableMapping,
  writeBindingRequest,
} from '../../src/proto/stun.js';
import { StunClient, natAdvice, natHealth, summarize, type AdviceContext, type StunResult } from '../../src/nat/stun-client.js';
import { ipToInt } from '../../src/util/ipv4.js';
import { ManualClock } from '../support/clock.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const PASSWORD = 'VOkJxbRl1RmTxUk/WvJxBt';

// RFC 5769 §2.1–2.3, byte for byte.
const SAMPLE_REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);
const SAMPLE_IPV4_RESPONSE = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
const SAMPLE_IPV6_RESPONSE = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);

/** HMAC-SHA1 over the message up to MESSAGE-INTEGRITY, length field as §14.5 says: proves the vectors were copied right. */
function integrityOk(msg: Buffer): boolean {
  const mi = msg.length - 8 - 24; // MESSAGE-INTEGRITY (24 bytes) comes right before FINGERPRINT (8)
  const head = Buffer.from(msg.subarray(0, mi));
  head.writeUInt16BE(mi + 24 - 20, 2);
  const mac = createHmac('sha1', PASSWORD).update(head).digest();
  return mac.equals(msg.subarray(mi + 4, mi + 24));
}

describe('STUN codec: RFC 5769 test vectors', () => {
  it('§2.1 sample request: parsed, FINGERPRINT verified', () => {
    expect(integrityOk(SAMPLE_REQUEST)).toBe(true);
    const m = parseStunResponse(SAMPLE_REQUEST, 0, SAMPLE_REQUEST.length)!;
    expect(m).toMatchObject({ type: STUN_BINDING_REQUEST, txidOffset: 8, software: 'STUN test client', integrity: true, fingerprintOk: true });
    expect(m.xorMapped).toBeUndefined();
    expect(usableMapping(m)).toBeNull();
  });

  it('§2.2 IPv4 response: XOR-MAPPED-ADDRESS 192.0.2.1:32853, FINGERPRINT verified', () => {
    expect(integrityOk(SAMPLE_IPV4_RESPONSE)).toBe(true);
    const m = parseStunResponse(SAMPLE_IPV4_RESPONSE, 0, SAMPLE_IPV4_RESPONSE.length)!;
    expect(m).toMatchObject({ type: STUN_BINDING_SUCCESS, software: 'test vector', integrity: true, fingerprintOk: true });
    expect(m.xorMapped).toEqual({ family: 4, address: '192.0.2.1', port: 32853 });
    expect(usableMapping(m)).toEqual({ family: 4, address: '192.0.2.1', port: 32853 });
    expect(txidEquals(SAMPLE_IPV4_RESPONSE, m.txidOffset, hex('b7e7a701bc34d686fa87dfae'))).toBe(true);
  });

  it('§2.3 IPv6 response: parsed as IPv6, and not usable for an IPv4 tunnel', () => {
    expect(integrityOk(SAMPLE_IPV6_RESPONSE)).toBe(true);
    const m = parseStunResponse(SAMPLE_IPV6_RESPONSE, 0, SAMPLE_IPV6_RESPONSE.length)!;
    expect(m.fingerprintOk).toBe(true);
    expect(m.xorMapped).toEqual({ family: 6, address: '2001:db8:1234:5678:11:2233:4455:6677', port: 32853 });
    expect(usableMapping(m)).toBeNull();
  });

  it('parses a vector inside a larger buffer at an offset', () => {
    const b = Buffer.concat([Buffer.alloc(37, 0xee), SAMPLE_IPV4_RESPONSE, Buffer.alloc(11, 0xee)]);
    const m = parseStunResponse(b, 37, SAMPLE_IPV4_RESPONSE.length)!;
    expect(m.fingerprintOk).toBe(true);
    expect(m.txidOffset).toBe(45);
    expect(usableMapping(m)?.address).toBe('192.0.2.1');
  });

  it('reports a corrupted message through FINGERPRINT', () => {
    const b = Buffer.from(SAMPLE_IPV4_RESPONSE);
    b[30] ^= 1; // inside SOFTWARE
    expect(parseStunResponse(b, 0, b.length)!.fingerprintOk).toBe(false);
  });
});

/** A Binding response with the given attributes (type, value) and optionally FINGERPRINT, written the long way. */
function response(txid: Buffer, attrs: [number, Buffer][], opts: { type?: number; fingerprint?: boolean } = {}): Buffer {
  const parts = attrs.map(([t, v]) => {
    const a = Buffer.alloc(4 + ((v.length + 3) & ~3));
    a.writeUInt16BE(t, 0);
    a.writeUInt16BE(v.length, 2);
    v.copy(a, 4);
    return a;
  });
  let body = Buffer.concat(parts);
  const head = Buffer.alloc(20);
  head.writeUInt16BE(opts.type ?? STUN_BINDING_SUCCESS, 0);
  head.writeUInt32BE(0x2112a442, 4);
  txid.copy(head, 8);
  if (opts.fingerprint) {
    head.writeUInt16BE(body.length + 8, 2);
    const crc = crc32(Buffer.concat([head, body])); // zlib.crc32 needs Node >= 20.15 (the armv7 leg has 20.11)
    const fp = Buffer.alloc(8);
    fp.writeUInt32BE(0x80280004, 0);
    fp.writeUInt32BE((crc ^ 0x5354554e) >>> 0, 4);
    body = Buffer.concat([body, fp]);
  }
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([head, body]);
}

function addrValue(ip: string, port: number, xor: boolean): Buffer {
  const v = Buffer.alloc(8);
  v[1] = 1;
  v.writeUInt16BE(xor ? port ^ 0x2112 : port, 2);
  v.writeUInt32BE(xor ? (ipToInt(ip) ^ 0x2112a442) >>> 0 : ipToInt(ip), 4);
  return v;
}
const xorMapped = (ip: string, port: number): [number, Buffer] => [0x0020, addrValue(ip, port, true)];

describe('STUN codec', () => {
  const txid = hex('000102030405060708090a0b');

  it('writes the 20-byte Binding request, and with SOFTWARE and FINGERPRINT', () => {
    const b = Buffer.alloc(64, 0xff);
    expect(writeBindingRequest(b, 0, txid)).toBe(20);
    expect(b.subarray(0, 20).toString('hex')).toBe('000100002112a442000102030405060708090a0b');
    const n = writeBindingRequest(b, 2, txid, { software: 'vxedge', fingerprint: true });
    expect(n).toBe(20 + 12 + 8);
    const m = parseStunResponse(b, 2, n)!;
    expect(m).toMatchObject({ type: STUN_BINDING_REQUEST, software: 'vxedge', fingerprintOk: true });
    expect(b.readUInt16BE(2 + 2)).toBe(n - 20);
    expect(() => writeBindingRequest(Buffer.alloc(19), 0, txid)).toThrow(RangeError);
  });

  it('round-trips requests (any txid, any SOFTWARE, with or without FINGERPRINT)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.string({ maxLength: 40 }), fc.boolean(), fc.nat(16), (id, sw, fp, off) => {
        const b = Buffer.alloc(off + 200);
        const n = writeBindingRequest(b, off, id, { software: sw, fingerprint: fp });
        const m = parseStunResponse(b, off, n);
        return (
          m !== null && n % 4 === 0 && m.type === STUN_BINDING_REQUEST && txidEquals(b, m.txidOffset, id) &&
          m.fingerprintOk === (fp ? true : undefined) && (m.software ?? '') === sw
        );
      }),
    );
  });

  it('never throws on random bytes, with or without a STUN-shaped header', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), fc.boolean(), fc.nat(8), (bytes, shape, off) => {
        const b = Buffer.alloc(off + bytes.length + 4);
        b.set(bytes, off);
        if (shape && bytes.length >= 20) {
          b[off] &= 0x3f;
          b.writeUInt32BE(0x2112a442, off + 4);
          b.writeUInt16BE((bytes.length - 20) & ~3, off + 2);
        }
        for (const len of [bytes.length, bytes.length + 4, (bytes.length & ~3) + 20, -1]) {
          parseStunResponse(b, off, len);
          isStunMessage(b, off, len);
        }
        return true;
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws on responses with random attributes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(0x0001, 0x0020, 0x8020, 0x0009, 0x8022, 0x0008, 0x8028, 0x1234), fc.uint8Array({ maxLength: 24 })), { maxLength: 6 }),
        fc.boolean(),
        (attrs, fp) => {
          const r = response(txid, attrs.map(([t, v]) => [t, Buffer.from(v)]), { fingerprint: fp });
          const m = parseStunResponse(r, 0, r.length);
          return m === null || typeof m.type === 'number';
        },
      ),
    );
  });

  it('is strict about lengths', () => {
    const ok = response(txid, [xorMapped('198.51.100.2', 8472)]);
    expect(parseStunResponse(ok, 0, ok.length)).not.toBeNull();
    expect(parseStunResponse(ok, 0, ok.length - 1)).toBeNull(); // datagram shorter than the length field
    expect(parseStunResponse(Buffer.concat([ok, Buffer.alloc(4)]), 0, ok.length + 4)).toBeNull(); // trailing bytes
    const odd = Buffer.from(ok);
    odd.writeUInt16BE(ok.length - 20 - 2, 2);
    expect(parseStunResponse(odd, 0, ok.length - 2)).toBeNull(); // not a multiple of 4
    const overrun = Buffer.from(ok);
    overrun.writeUInt16BE(200, 22); // attribute longer than the message
    expect(parseStunResponse(overrun, 0, ok.length)).toBeNull();
    expect(parseStunResponse(ok, 0, 19)).toBeNull();
    expect(parseStunResponse(ok, ok.length - 10, 20)).toBeNull(); // would read past the buffer
    const rfc3489 = Buffer.from(ok);
    rfc3489.writeUInt32BE(0, 4);
    expect(parseStunResponse(rfc3489, 0, ok.length)).toBeNull();
  });

  it('rejects FINGERPRINT that is not last, and ignores attributes after MESSAGE-INTEGRITY', () => {
    const withFp = response(txid, [xorMapped('198.51.100.2', 8472)], { fingerprint: true });
    const notLast = response(txid, [[0x8028, withFp.subarray(withFp.length - 4)], xorMapped('198.51.100.2', 8472)]);
    expect(parseStunResponse(notLast, 0, notLast.length)).toBeNull();
    const afterMi = response(txid, [[0x0008, Buffer.alloc(20)], xorMapped('198.51.100.2', 8472)]);
    expect(parseStunResponse(afterMi, 0, afterMi.length)!.xorMapped).toBeUndefined();
  });

  it('prefers XOR-MAPPED-ADDRESS, then 0x8020, then MAPPED-ADDRESS', () => {
    const parse = (attrs: [number, Buffer][]) => {
      const r = response(txid, attrs);
      return usableMapping(parseStunResponse(r, 0, r.length)!);
    };
    const legacy: [number, Buffer] = [0x0001, addrValue('192.0.2.3', 3, false)];
    const old: [number, Buffer] = [0x8020, addrValue('192.0.2.2', 2, true)];
    expect(parse([legacy, old, xorMapped('192.0.2.1', 1)])).toEqual({ family: 4, address: '192.0.2.1', port: 1 });
    expect(parse([legacy, old])).toEqual({ family: 4, address: '192.0.2.2', port: 2 });
    expect(parse([legacy])).toEqual({ family: 4, address: '192.0.2.3', port: 3 });
    expect(parse([[0x0020, Buffer.from('0001', 'hex')]])).toBeNull(); // truncated address: ignored
  });

  it('reads ERROR-CODE', () => {
    const v = Buffer.concat([Buffer.from([0, 0, 4, 20]), Buffer.from('Unknown Attribute')]);
    const r = response(txid, [[0x0009, v]], { type: STUN_BINDING_ERROR });
    expect(parseStunResponse(r, 0, r.length)).toMatchObject({ type: STUN_BINDING_ERROR, errorCode: 420, errorReason: 'Unknown Attribute' });
  });

  it('computes the CRC-32 of the check vector without zlib', () => {
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.from('xx123456789yy'), 2, 11)).toBe(0xcbf43926);
  });

  it.skipIf(typeof zlib.crc32 !== 'function')('computes CRC-32 as zlib.crc32 does (Node >= 20.15)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => crc32(bytes) === zlib.crc32(bytes) >>> 0),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The client, on fake time.

const S1 = { host: '198.51.100.1', port: 3478 };
const S2 = { host: '203.0.113.1', port: 3478 };

interface Sent {
  at: number;
  buf: Buffer;
  addr: number;
  port: number;
}

/** Time for the client under test: it moves only when a test advances it. */
let clock = new ManualClock();

function makeClient(over: Partial<ConstructorParameters<typeof StunClient>[0]> = {}) {
  const sent: Sent[] = [];
  const results: StunResult[] = [];
  const t0 = clock.monotonic();
  const c = new StunClient({
    clock,
    servers: [S1, S2],
    localPort: 8472,
    send: (buf, off, len, addr, port) => {
      sent.push({ at: clock.monotonic() - t0, buf: Buffer.from(buf.subarray(off, off + len)), addr, port });
      return true;
    },
    random: () => 0.5,
    ...over,
  });
  c.onResult((r) => results.push(r));
  /** Answers the last request sent to `server` as that server, with `mapped`. */
  const reply = (server: { host: string; port: number }, mapped: [string, number], opts: { from?: [number, number]; txid?: Buffer } = {}) => {
    const req = [...sent].reverse().find((s) => s.addr === ipToInt(server.host) && s.port === server.port)!;
    const r = response(opts.txid ?? req.buf.subarray(8, 20), [xorMapped(...mapped)], { fingerprint: true });
    const [addr, port] = opts.from ?? [req.addr, req.port];
    return c.handle(r, 0, r.length, addr, port);
  };
  return { c, sent, results, reply, t0 };
}

describe('StunClient', () => {
  beforeEach(() => {
    clock = new ManualClock();
  });

  it('retransmits at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s and gives up at 39.5 s (RFC 8489 §6.2.1)', async () => {
    const { c, sent, results } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(39_499);
    expect(sent.map((s) => s.at)).toEqual([0, 500, 1500, 3500, 7500, 15_500, 31_500]);
    expect(new Set(sent.map((s) => s.buf.toString('hex'))).size).toBe(1); // the same transaction each time
    expect(results).toEqual([]);
    await clock.advanceAsync(1);
    expect(results).toHaveLength(1);
    expect(results[0].servers).toEqual([{ server: '198.51.100.1:3478', mapped: null, error: 'no answer to 7 requests in 39.5 s', rttMs: null }]);
    expect(results[0]).toMatchObject({ publicEndpoint: null, portPreserved: null, mappingVaries: null, reason: 'start' });
    c.stop();
  });

  it('takes its timing constants from options', async () => {
    const { c, sent, results } = makeClient({ servers: [S1], rtoMs: 10, rc: 3, rm: 2 });
    c.start();
    await clock.advanceAsync(50);
    expect(sent.map((s) => s.at)).toEqual([0, 10, 30]);
    expect(results[0].servers[0].error).toBe('no answer to 3 requests in 0.05 s');
    c.stop();
  });

  it('sends well-formed Binding requests with FINGERPRINT, a fresh txid per server, to each server', async () => {
    const { c, sent } = makeClient();
    c.start();
    await clock.advanceAsync(0);
    expect(sent.map((s) => [s.addr, s.port])).toEqual([[ipToInt(S1.host), 3478], [ipToInt(S2.host), 3478]]);
    for (const s of sent) expect(parseStunResponse(s.buf, 0, s.buf.length)).toMatchObject({ type: STUN_BINDING_REQUEST, fingerprintOk: true });
    expect(sent[0].buf.subarray(8, 20).equals(sent[1].buf.subarray(8, 20))).toBe(false);
    c.stop();
  });

  it('two servers, same mapping, port kept: publicEndpoint, portPreserved, mapping does not vary', async () => {
    const { c, results, reply } = makeClient();
    c.start();
    await clock.advanceAsync(3);
    expect(reply(S2, ['198.51.100.2', 8472])).toBe(true);
    expect(reply(S1, ['198.51.100.2', 8472])).toBe(true);
    expect(results).toHaveLength(1);
    expect(results[0]).toMatchObject({ publicEndpoint: '198.51.100.2:8472', portPreserved: true, mappingVaries: false });
    expect(results[0].servers.map((s) => [s.server, s.mapped, s.error, s.rttMs])).toEqual([
      ['198.51.100.1:3478', '198.51.100.2:8472', null, 3],
      ['203.0.113.1:3478', '198.51.100.2:8472', null, 3],
    ]);
    expect(c.lastGood).toBe(results[0]);
    c.stop();
  });

  it('two servers, different mappings: mappingVaries; the port not kept: portPreserved false', async () => {
    const { c, results, reply } = makeClient();
    c.start();
    await clock.advanceAsync(0);
    reply(S1, ['198.51.100.2', 40_001]);
    reply(S2, ['198.51.100.2', 40_002]);
    expect(results[0]).toMatchObject({ publicEndpoint: '198.51.100.2:40001', portPreserved: false, mappingVaries: true });
    c.stop();
  });

  it('one answer: mappingVaries unknown; the first server in config order gives publicEndpoint', async () => {
    const { c, results, reply } = makeClient({ rtoMs: 10 });
    c.start();
    await clock.advanceAsync(0);
    reply(S2, ['198.51.100.2', 8472]);
    await clock.advanceAsync(10_000);
    expect(results[0]).toMatchObject({ publicEndpoint: '198.51.100.2:8472', portPreserved: true, mappingVaries: null });
    expect(results[0].servers[0].error).toMatch(/^no answer/);
    c.stop();
  });

  it('matches on transaction id AND the server address and port', async () => {
    const { c, results, reply } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(0);
    expect(reply(S1, ['6.6.6.6', 1], { from: [ipToInt(S2.host), 3478] })).toBe(false); // right txid, other host
    expect(reply(S1, ['6.6.6.6', 1], { from: [ipToInt(S1.host), 3479] })).toBe(false); // right txid, other port
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), (id) => reply(S1, ['6.6.6.6', 1], { txid: Buffer.from(id) }) === false),
    );
    expect(results).toEqual([]);
    expect(reply(S1, ['198.51.100.2', 8472])).toBe(true);
    expect(results[0].publicEndpoint).toBe('198.51.100.2:8472');
    // A late duplicate of the answer is still ours (consumed, changes nothing).
    expect(reply(S1, ['6.6.6.6', 1])).toBe(true);
    expect(results).toHaveLength(1);
    c.stop();
  });

  it('never throws from handle(), whatever arrives', async () => {
    const { c } = makeClient();
    c.start();
    await clock.advanceAsync(0);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.nat(), fc.nat(65535), (bytes, addr, port) => {
        const b = Buffer.from(bytes);
        return typeof c.handle(b, 0, b.length, addr >>> 0, port) === 'boolean';
      }),
    );
    c.stop();
  });

  it('ignores a matching answer with a bad FINGERPRINT, and records an error response', async () => {
    const { c, sent, results } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(0);
    const id = sent[0].buf.subarray(8, 20);
    const bad = response(id, [xorMapped('6.6.6.6', 1)], { fingerprint: true });
    bad[bad.length - 1] ^= 0xff;
    expect(c.handle(bad, 0, bad.length, ipToInt(S1.host), 3478)).toBe(true);
    expect(results).toEqual([]);
    const err = response(id, [[0x0009, Buffer.from([0, 0, 5, 0, 0x62, 0x75, 0x73, 0x79])]], { type: STUN_BINDING_ERROR });
    expect(c.handle(err, 0, err.length, ipToInt(S1.host), 3478)).toBe(true);
    expect(results[0].servers[0]).toMatchObject({ mapped: null, error: 'error response 500 busy' });
    c.stop();
  });

  it('resolves names with the injected lookup, and reports a failed lookup', async () => {
    const lookup = vi.fn(async (host: string) => {
      if (host === 'stun.example.net') return '198.51.100.1';
      throw Object.assign(new Error('nope'), { code: 'ENOTFOUND' });
    });
    const { c, sent, results, reply } = makeClient({ servers: [{ host: 'stun.example.net', port: 3478 }, { host: 'gone.example.net', port: 3478 }], lookup });
    c.start();
    await clock.advanceAsync(0);
    expect(sent.map((s) => s.addr)).toEqual([ipToInt('198.51.100.1')]);
    reply(S1, ['198.51.100.2', 8472]);
    expect(results[0].servers).toEqual([
      { server: 'stun.example.net:3478', mapped: '198.51.100.2:8472', error: null, rttMs: 0 },
      { server: 'gone.example.net:3478', mapped: null, error: 'cannot resolve gone.example.net: ENOTFOUND', rttMs: null },
    ]);
    c.stop();
  });

  it('runs again after 60–120 s (here 90 s with random 0.5), and keeps the last good endpoint through a failed round', async () => {
    const { c, sent, results, reply } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(0);
    reply(S1, ['198.51.100.2', 8472]);
    await clock.advanceAsync(89_999);
    expect(sent).toHaveLength(1);
    await clock.advanceAsync(1);
    expect(sent).toHaveLength(2);
    await clock.advanceAsync(39_500); // no answer this time
    expect(results.map((r) => [r.reason, r.publicEndpoint])).toEqual([['start', '198.51.100.2:8472'], ['periodic', null]]);
    expect(c.result?.publicEndpoint).toBeNull();
    expect(c.lastGood?.publicEndpoint).toBe('198.51.100.2:8472');
    c.stop();
  });

  it('trigger(): debounced, spaced from the previous round, and queued behind a running one', async () => {
    const { c, sent, results, reply } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(0);
    reply(S1, ['198.51.100.2', 8472]);
    c.trigger('peers down');
    c.trigger('underlay address changed');
    await clock.advanceAsync(4_999); // min gap 5 s from the start of the previous round
    expect(sent).toHaveLength(1);
    await clock.advanceAsync(1);
    expect(sent).toHaveLength(2);
    c.trigger('again, while running'); // runs after this round ends
    await clock.advanceAsync(100);
    reply(S1, ['198.51.100.2', 40_000]);
    expect(results.map((r) => r.reason)).toEqual(['start', 'peers down']);
    expect(results[1]).toMatchObject({ publicEndpoint: '198.51.100.2:40000', portPreserved: false });
    await clock.advanceAsync(5_000);
    expect(sent).toHaveLength(3);
    reply(S1, ['198.51.100.2', 40_000]);
    expect(results.map((r) => r.reason)).toEqual(['start', 'peers down', 'again, while running']);
    c.stop();
  });

  it('stop() cancels every timer; send failures are reported, not thrown', async () => {
    const { c, sent } = makeClient({ servers: [S1] });
    c.start();
    await clock.advanceAsync(600);
    c.stop();
    await clock.advanceAsync(200_000);
    expect(sent).toHaveLength(2);
    expect(clock.timerCount).toBe(0);

    const results: StunResult[] = [];
    const failing = new StunClient({ servers: [S1], localPort: 8472, send: () => { throw new Error('EPERM'); }, rtoMs: 1, clock });
    failing.onResult((r) => results.push(r));
    failing.start();
    await clock.advanceAsync(200);
    expect(results[0].servers[0].error).toMatch(/could not send/);
    failing.stop();
  });
});

describe('NAT advice', () => {
  const ctx: AdviceContext = { localAddress: '192.0.2.10', localPort: 8472, vxlanPort: 8472, publicIp: null };
  const round = (...mapped: (string | null)[]) =>
    summarize(mapped.map((m, i) => ({ server: `s${i}:3478`, mapped: m, error: m ? null : 'no answer to 7 requests in 39.5 s', rttMs: m ? 1 : null })), 8472, 0, 'start');

  it('no NAT', () => {
    expect(natAdvice(round('192.0.2.10:8472', '192.0.2.10:8472'), ctx)).toMatch(/^no NAT/);
  });
  it('port preserved, same mapping everywhere: the srcport pin works, or a port forward', () => {
    const a = natAdvice(round('198.51.100.2:8472', '198.51.100.2:8472'), ctx);
    expect(a).toContain('srcport 8472 8473');
    expect(a).toContain('port forward');
    expect(natAdvice(round('198.51.100.2:8472'), ctx)).toContain('configure two');
  });
  it('port not preserved, or mapping varies: the site router needs the port forward', () => {
    expect(natAdvice(round('198.51.100.2:40001', '198.51.100.2:40001'), ctx)).toMatch(/does not preserve the port.*needs a port forward of UDP 8472 to 192\.0\.2\.10:8472/);
    expect(natAdvice(round('198.51.100.2:8472', '198.51.100.2:40002'), ctx)).toMatch(/hard.*needs a port forward of UDP 8472/);
  });
  it('nothing answered, or not yet run', () => {
    expect(natAdvice(round(null, null), ctx)).toMatch(/^no STUN server answered/);
    expect(natAdvice(null, ctx)).toMatch(/running/);
  });
  it('says when underlay.publicIp disagrees with STUN', () => {
    expect(natAdvice(round('198.51.100.2:8472', '198.51.100.2:8472'), { ...ctx, publicIp: '198.51.100.9' })).toContain('underlay.publicIp is 198.51.100.9 but STUN saw 198.51.100.2');
  });

  it('the health document nat object matches the schema', () => {
    const schema = JSON.parse(readFileSync(new URL('../../src/health/health.schema.json', import.meta.url), 'utf8')) as { properties: { nat: object }; definitions: object };
    const ajv = new Ajv({ allErrors: true, strict: true, validateFormats: false });
    const validate = ajv.compile({ ...schema.properties.nat, definitions: schema.definitions });
    const fake = (r: StunResult | null) => natHealth({ result: r } as unknown as StunClient, ctx);
    for (const doc of [fake(null), fake(round('198.51.100.2:8472', null)), fake(round('198.51.100.2:8472', '198.51.100.2:40000'))]) {
      expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
    }
    expect(validate({ ...fake(null), extra: 1 })).toBe(false);
    expect(validate({ ...fake(round('198.51.100.2:8472')), stun: [{ server: 's', mapped: null, error: null, rttMs: null }] })).toBe(false);
  });
});
