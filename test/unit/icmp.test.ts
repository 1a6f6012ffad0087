// The keepalive probe codec: what we send is a valid echo request, replies parse only
// when they are well-formed echo replies, and nothing from the network makes it throw.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PROBE_IP_LEN, parseEchoReply, writeEchoRequest } from '../../src/proto/icmp.js';
import { internetChecksum, ipv4PacketLength } from '../../src/proto/ipv4.js';
import { applyMutations, mutation } from '../support/mutate.js';
import { echoReplyTo as reply, ip } from './packets.js';

describe('ICMP probe codec', () => {
  const token = Buffer.from('0123456789abcdef', 'hex');
  it('writes a valid echo request from our VTEP to the peer VTEP, DF set', () => {
    const b = Buffer.alloc(100);
    const n = writeEchoRequest(b, 0, ip('10.244.100.0'), ip('10.244.1.0'), 0x1234, 7, token);
    expect(n).toBe(PROBE_IP_LEN);
    expect(ipv4PacketLength(b, 0, n)).toBe(n);
    expect(internetChecksum(b, 0, 20)).toBe(0);
    expect(internetChecksum(b, 20, n - 20)).toBe(0);
    expect(b[6] & 0x40).toBe(0x40);
    expect(b.readUInt32BE(16)).toBe(ip('10.244.1.0'));
  });
  it('pads full-size path MTU probes', () => {
    const b = Buffer.alloc(1500);
    expect(writeEchoRequest(b, 0, 1, 2, 1, 1, token, 1450)).toBe(1450);
    expect(b.readUInt16BE(2)).toBe(1450);
    expect(internetChecksum(b, 20, 1430)).toBe(0);
  });
  it('parses the reply with ident, seq and token position', () => {
    const b = Buffer.alloc(100);
    const n = writeEchoRequest(b, 0, 1, 2, 0xbeef, 42, token);
    const r = reply(b.subarray(0, n));
    const out = { ident: 0, seq: 0, tokenOff: 0 };
    expect(parseEchoReply(r, 0, r.length, out)).toBe(true);
    expect(out).toMatchObject({ ident: 0xbeef, seq: 42 });
    expect(r.subarray(out.tokenOff, out.tokenOff + 8).equals(token)).toBe(true);
  });
  it('rejects requests, corrupted checksums and short replies', () => {
    const b = Buffer.alloc(100);
    const n = writeEchoRequest(b, 0, 1, 2, 1, 1, token);
    const out = { ident: 0, seq: 0, tokenOff: 0 };
    expect(parseEchoReply(b, 0, n, out)).toBe(false);
    const r = reply(b.subarray(0, n));
    r[30] ^= 1;
    expect(parseEchoReply(r, 0, r.length, out)).toBe(false);
    expect(parseEchoReply(reply(b.subarray(0, n)), 0, 30, out)).toBe(false);
  });
  it('never throws on arbitrary IPv4 packets, and what it accepts is an echo reply with a good checksum', () => {
    // Replies to our probes (some padded), then bytes changed, sometimes with the ICMP checksum
    // made right again afterwards (so a changed reply can still be accepted); and pure random
    // bytes behind an IPv4/ICMP first byte and protocol.
    const probeReply = fc
      .record({ ident: fc.integer({ min: 0, max: 0xffff }), seq: fc.integer({ min: 0, max: 0xffff }), token: fc.uint8Array({ minLength: 8, maxLength: 8 }), pad: fc.integer({ min: 0, max: 40 }) })
      .map((f) => {
        const b = Buffer.alloc(PROBE_IP_LEN + f.pad);
        writeEchoRequest(b, 0, ip('10.244.100.0'), ip('10.244.1.0'), f.ident, f.seq, Buffer.from(f.token), PROBE_IP_LEN + f.pad);
        return { ...f, bytes: reply(b) };
      });
    const input = fc.oneof(
      {
        weight: 3,
        arbitrary: fc.tuple(probeReply, fc.array(mutation(40), { maxLength: 3 }), fc.boolean()).map(([r, ms, fix]) => {
          const b = applyMutations(r.bytes, ms);
          const ihl = (b[0] & 0x0f) * 4;
          if (fix && ms.length > 0 && b.length >= ihl + 4) {
            b.writeUInt16BE(0, ihl + 2);
            b.writeUInt16BE(internetChecksum(b, ihl, b.length - ihl), ihl + 2);
          }
          return { b, probe: ms.length === 0 ? r : null };
        }),
      },
      {
        weight: 1,
        arbitrary: fc.uint8Array({ minLength: 20, maxLength: 120 }).map((bytes) => {
          const b = Buffer.from(bytes);
          b[0] = 0x45;
          b[9] = 1;
          return { b, probe: null };
        }),
      },
    );
    let accepted = 0;
    let changedAccepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(input, ({ b, probe }) => {
        const out = { ident: -1, seq: -1, tokenOff: -1 };
        const ok = parseEchoReply(b, 0, b.length, out);
        if (probe) {
          // An unchanged reply to our probe: accepted, every field read back.
          expect(ok).toBe(true);
          expect([out.ident, out.seq]).toEqual([probe.ident, probe.seq]);
          expect(b.subarray(out.tokenOff, out.tokenOff + 8).equals(Buffer.from(probe.token))).toBe(true);
        }
        if (!ok) {
          rejected++;
          return;
        }
        accepted++;
        if (!probe) changedAccepted++;
        const icmp = (b[0] & 0x0f) * 4;
        expect(b[9]).toBe(1);
        expect([b[icmp], b[icmp + 1]]).toEqual([0, 0]); // echo reply, code 0
        expect(b.length - icmp).toBeGreaterThanOrEqual(24);
        expect(internetChecksum(b, icmp, b.length - icmp)).toBe(0);
        expect([out.ident, out.seq, out.tokenOff]).toEqual([b.readUInt16BE(icmp + 4), b.readUInt16BE(icmp + 6), icmp + 16]);
        expect(out.tokenOff + 8).toBeLessThanOrEqual(b.length);
      }),
      { numRuns: 5000 },
    );
    // Not vacuous: replies were accepted, changed ones too, and plenty were rejected.
    expect(accepted).toBeGreaterThan(500);
    expect(changedAccepted).toBeGreaterThan(50);
    expect(rejected).toBeGreaterThan(500);
  });
});
