import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { VxlanVerdict, checkVxlanHeader, writeVxlanHeader, readVni } from '../../src/proto/vxlan.js';
import { ipv4PacketLength, internetChecksum } from '../../src/proto/ipv4.js';
import { clampTcpMss } from '../../src/proto/tcpmss.js';
import { icmpEcho, tcp, tcpChecksumOk } from './packets.js';

describe('VXLAN header', () => {
  it('is byte-exact to what the kernel sends for VNI 1', () => {
    const b = Buffer.alloc(8, 0xff);
    writeVxlanHeader(b, 0, 1);
    expect(b.toString('hex')).toBe('0800000000000100');
  });

  it('round-trips every VNI', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 0xffffff }), (vni) => {
        const b = Buffer.alloc(8);
        writeVxlanHeader(b, 0, vni);
        return readVni(b, 0) === vni && checkVxlanHeader(b, 0, vni) === VxlanVerdict.ok;
      }),
    );
  });

  it('rejects what the kernel rejects', () => {
    const h = (hex: string) => Buffer.from(hex, 'hex');
    expect(checkVxlanHeader(h('0000000000000100'), 0, 1)).toBe(VxlanVerdict.badFlags);
    expect(checkVxlanHeader(h('8000020000000100'), 0, 1)).toBe(VxlanVerdict.badFlags); // G without I
    expect(checkVxlanHeader(h('0c00000000000100'), 0, 1)).toBe(VxlanVerdict.reservedBits); // GPE P bit
    expect(checkVxlanHeader(h('8c00020000000100'), 0, 1)).toBe(VxlanVerdict.reservedBits); // G with another flag
    expect(checkVxlanHeader(h('8800020000000101'), 0, 1)).toBe(VxlanVerdict.reservedBits); // G, last byte set
    expect(checkVxlanHeader(h('0800010000000100'), 0, 1)).toBe(VxlanVerdict.reservedBits);
    expect(checkVxlanHeader(h('0800000000000101'), 0, 1)).toBe(VxlanVerdict.reservedBits);
    expect(checkVxlanHeader(h('0800000000000200'), 0, 1)).toBe(VxlanVerdict.wrongVni);
  });

  it("takes the Group Policy extension as a kernel VTEP with `gbp` does (flannel's \"GBP\": true): the G flag with anything in its three bytes", () => {
    const h = (hex: string) => Buffer.from(hex, 'hex');
    // What aws1's flannel.1 with gbp sent for a packet marked 0x200 (test/lab/flannel-options.test.ts), and with D and A set.
    expect(checkVxlanHeader(h('8800020000000100'), 0, 1)).toBe(VxlanVerdict.ok);
    expect(checkVxlanHeader(h('8848ffff00000100'), 0, 1)).toBe(VxlanVerdict.ok);
    expect(checkVxlanHeader(h('88b7000000000100'), 0, 1)).toBe(VxlanVerdict.ok); // reserved bits of byte 1: cleared by the kernel too
    expect(checkVxlanHeader(h('8800020000000200'), 0, 1)).toBe(VxlanVerdict.wrongVni);
  });

  it('classifies any 8 bytes without throwing, and accepts only the two forms', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.integer({ min: 1, max: 0xffffff }), fc.boolean(), (bytes, vni, gbp) => {
        const b = Buffer.from(bytes);
        if (gbp) b[0] = 0x88; // or the G form would come up once in 256
        const v = checkVxlanHeader(b, 0, vni);
        const plain = b[0] === 0x08 && b[1] === 0 && b[2] === 0 && b[3] === 0;
        const exact = (plain || b[0] === 0x88) && b[7] === 0 && readVni(b, 0) === vni;
        return (v === VxlanVerdict.ok) === exact;
      }),
    );
  });
});

describe('IPv4 validation', () => {
  it('accepts a real packet and reports its total length, ignoring trailing padding', () => {
    const p = icmpEcho('10.244.1.2', '10.244.100.10');
    const padded = Buffer.concat([p, Buffer.alloc(10)]);
    expect(ipv4PacketLength(padded, 0, padded.length)).toBe(p.length);
    expect(internetChecksum(p, 0, 20)).toBe(0);
  });

  it('rejects truncated packets, bad versions and bad header lengths', () => {
    const p = icmpEcho('10.244.1.2', '10.244.100.10');
    expect(ipv4PacketLength(p, 0, p.length - 1)).toBe(-1);
    expect(ipv4PacketLength(p, 0, 19)).toBe(-1);
    const v6 = Buffer.from(p);
    v6[0] = 0x65;
    expect(ipv4PacketLength(v6, 0, v6.length)).toBe(-1);
    const ihl = Buffer.from(p);
    ihl[0] = 0x44;
    expect(ipv4PacketLength(ihl, 0, ihl.length)).toBe(-1);
  });

  it('never claims more bytes than arrived, whatever the input', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => {
        const b = Buffer.from(bytes);
        const n = ipv4PacketLength(b, 0, b.length);
        return n === -1 || (n >= 20 && n <= b.length);
      }),
    );
  });
});

describe('TCP MSS clamping', () => {
  const mssOpt = (mss: number, prefixNops = 0) => {
    const o = Buffer.alloc(Math.ceil((prefixNops + 4) / 4) * 4, 1); // NOP padding
    o[prefixNops] = 2;
    o[prefixNops + 1] = 4;
    o.writeUInt16BE(mss, prefixNops + 2);
    return o;
  };

  it('clamps the MSS of a SYN from a 9001-MTU AWS pod and keeps the checksum valid', () => {
    const syn = tcp('10.244.1.2', '10.244.100.10', 0x02, mssOpt(8911));
    expect(tcpChecksumOk(syn)).toBe(true);
    expect(clampTcpMss(syn, 0, syn.length, 1410)).toBe(8911);
    expect(syn.readUInt16BE(20 + 22)).toBe(1410);
    expect(tcpChecksumOk(syn)).toBe(true);
  });

  it('handles an MSS option at an odd offset', () => {
    const syn = tcp('10.244.1.2', '10.244.100.10', 0x12, mssOpt(9000, 1)); // SYN-ACK
    expect(clampTcpMss(syn, 0, syn.length, 1410)).toBe(9000);
    expect(syn.readUInt16BE(20 + 23)).toBe(1410);
    expect(tcpChecksumOk(syn)).toBe(true);
  });

  it('leaves smaller MSS, non-SYN segments and non-TCP packets alone', () => {
    const small = tcp('10.244.1.2', '10.244.100.10', 0x02, mssOpt(1200));
    const copy = Buffer.from(small);
    expect(clampTcpMss(small, 0, small.length, 1410)).toBe(0);
    expect(small.equals(copy)).toBe(true);
    const ack = tcp('10.244.1.2', '10.244.100.10', 0x10, mssOpt(9000));
    expect(clampTcpMss(ack, 0, ack.length, 1410)).toBe(0);
    const ping = icmpEcho('10.244.1.2', '10.244.100.10');
    expect(clampTcpMss(ping, 0, ping.length, 1410)).toBe(0);
  });

  it('keeps every checksum valid for any MSS, any alignment and any clamp target', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 7 }),
        fc.integer({ min: 536, max: 9000 }),
        fc.uint8Array({ maxLength: 64 }),
        (mss, nops, target, payload) => {
          const syn = tcp('10.244.1.2', '10.244.100.10', 0x02, mssOpt(mss, nops), Buffer.from(payload));
          const replaced = clampTcpMss(syn, 0, syn.length, target);
          const now = syn.readUInt16BE(20 + 20 + nops + 2);
          return tcpChecksumOk(syn) && (mss > target ? replaced === mss && now === target : replaced === 0 && now === mss);
        },
      ),
    );
  });

  it('never throws or reads past the packet on arbitrary options', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (opts) => {
        const o = Buffer.alloc(Math.ceil(opts.length / 4) * 4);
        Buffer.from(opts).copy(o);
        const syn = tcp('10.244.1.2', '10.244.100.10', 0x02, o);
        const r = clampTcpMss(syn, 0, syn.length, 1410);
        return r >= 0 && tcpChecksumOk(syn);
      }),
    );
  });
});
