// The keepalive probe codec: what we send is a valid echo request, replies parse only
// when they are well-formed echo replies, and nothing from the network makes it throw.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PROBE_IP_LEN, parseEchoReply, writeEchoRequest } from '../../src/proto/icmp.js';
import { internetChecksum, ipv4PacketLength } from '../../src/proto/ipv4.js';
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
  it('never throws on arbitrary IPv4 packets', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 120 }), (bytes) => {
        const b = Buffer.from(bytes);
        b[0] = 0x45;
        b[9] = 1;
        const out = { ident: 0, seq: 0, tokenOff: 0 };
        const ok = parseEchoReply(b, 0, b.length, out);
        return !ok || (out.tokenOff + 8 <= b.length);
      }),
    );
  });
});
