// The offload half of the addon (src/native/tso.c and gro.c), tested through its pure entry
// points of nativeBinding() in this process (no device, no socket, no privileges):
//
//   _tsoSegment   what udpSend with vnet headers sends for one packet read with a
//                 virtio_net_hdr: compared byte for byte with segments built here in
//                 TypeScript, the slow obvious way;
//   _groCoalesce  what devWrite with vnet true writes for a batch of received inner packets:
//                 checked field by field, and round-tripped through _tsoSegment (coalescing
//                 then segmenting must give back exactly the packets that came in).
//
// The same code runs on real devices and sockets in test/native/offload-io.test.ts and in the
// lab (test/lab/offload.test.ts).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { nativeBinding } from '../../src/native/index.js';
import { foldChecksum, onesSum, writeIpv4HeaderChecksum } from '../../src/proto/ipv4.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_UDP_L4, VNET_HDR_LEN, readVnetU16, writeVnetHeader } from '../../src/proto/vnet.js';
import { applyMutations, mutation, type Mutation } from '../support/mutate.js';
import { groCoalesce } from '../support/native-offload.js';
import { fixTcpChecksum, ip, ipv4, tcpChecksumOk } from '../unit/packets.js';

const FIN = 0x01;
const PSH = 0x08;
const ACK = 0x10;
const CWR = 0x80;
const ENCAP = Buffer.from('0800000000000100' + '0abb00000100' + '0e5caa000064' + '0800', 'hex'); // VXLAN + inner Ethernet
const TS_OPTS = Buffer.from('0101080a0001e2400000abcd', 'hex'); // NOP NOP timestamps
const native = nativeBinding();

interface Seg {
  src?: string;
  dst?: string;
  sport?: number;
  dport?: number;
  seq: number;
  ack?: number;
  flags?: number;
  win?: number;
  ttl?: number;
  id?: number;
  options?: Buffer;
  payload: Buffer;
  ipOptions?: Buffer;
  /** The low four bits of the data-offset byte: reserved, the lowest AccECN's AE flag. */
  reserved?: number;
}

/** A complete IPv4/TCP packet with valid checksums. */
function tcpPacket(s: Seg): Buffer {
  const opts = s.options ?? TS_OPTS;
  const hl = 20 + opts.length;
  const t = Buffer.alloc(hl + s.payload.length);
  t.writeUInt16BE(s.sport ?? 40000, 0);
  t.writeUInt16BE(s.dport ?? 5201, 2);
  t.writeUInt32BE(s.seq >>> 0, 4);
  t.writeUInt32BE((s.ack ?? 777) >>> 0, 8);
  t[12] = ((hl / 4) << 4) | (s.reserved ?? 0);
  t[13] = s.flags ?? ACK;
  t.writeUInt16BE(s.win ?? 502, 14);
  opts.copy(t, 20);
  s.payload.copy(t, hl);
  let pkt = ipv4(s.src ?? '10.244.1.2', s.dst ?? '10.244.100.10', 6, t, { id: s.id ?? 0x1000, ttl: s.ttl ?? 63 });
  if (s.ipOptions) {
    const ihl = 20 + s.ipOptions.length;
    const withOpts = Buffer.alloc(ihl + t.length);
    pkt.copy(withOpts, 0, 0, 20);
    s.ipOptions.copy(withOpts, 20);
    t.copy(withOpts, ihl);
    withOpts[0] = 0x40 | (ihl / 4);
    withOpts.writeUInt16BE(withOpts.length, 2);
    writeIpv4HeaderChecksum(withOpts, 0);
    pkt = withOpts;
  }
  fixTcpChecksum(pkt);
  return pkt;
}

/** The pseudo-header sum the kernel leaves in the checksum field of a NEEDS_CSUM packet. */
function partialTcpChecksum(pkt: Buffer): void {
  const ihl = (pkt[0] & 0x0f) * 4;
  const l4 = pkt.length - ihl;
  let s = onesSum(pkt, 12, 8) + pkt[9] + l4;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  pkt.writeUInt16BE(s, ihl + 16);
}

/** Segments built the slow, obvious way: what the kernel's TSO would put on the wire. */
function referenceSegments(pkt: Buffer, gso: number): Buffer[] {
  const ihl = (pkt[0] & 0x0f) * 4;
  const hl = ihl + (pkt[ihl + 12] >> 4) * 4;
  const payload = pkt.length - hl;
  const n = Math.max(1, Math.ceil(payload / gso));
  const out: Buffer[] = [];
  for (let k = 0; k < n; k++) {
    const chunk = pkt.subarray(hl + k * gso, Math.min(pkt.length, hl + (k + 1) * gso));
    const seg = Buffer.concat([pkt.subarray(0, hl), chunk]);
    seg.writeUInt16BE(seg.length, 2);
    seg.writeUInt16BE((pkt.readUInt16BE(4) + k) & 0xffff, 4);
    writeIpv4HeaderChecksum(seg, 0);
    seg.writeUInt32BE((pkt.readUInt32BE(ihl + 4) + k * gso) >>> 0, ihl + 4);
    if (k < n - 1) seg[ihl + 13] &= ~(FIN | PSH);
    if (k > 0) seg[ihl + 13] &= ~CWR;
    fixTcpChecksum(seg);
    out.push(Buffer.concat([ENCAP, seg]));
  }
  return out;
}

/** Runs _tsoSegment on `pkt` behind ENCAP with the given virtio_net_hdr; null: dropped. */
function segment(pkt: Buffer, hdr: Parameters<typeof writeVnetHeader>[2]): Buffer[] | null {
  const buf = Buffer.alloc(64 + ENCAP.length + pkt.length);
  ENCAP.copy(buf, 64);
  pkt.copy(buf, 64 + ENCAP.length);
  const vnet = Buffer.alloc(VNET_HDR_LEN * 2);
  writeVnetHeader(vnet, VNET_HDR_LEN, hdr);
  const out = Buffer.alloc(4 << 20);
  const offs = new Int32Array(4096);
  const lens = new Int32Array(4096);
  const n = native._tsoSegment(buf, 64, ENCAP.length + pkt.length, vnet, VNET_HDR_LEN, ENCAP.length, out, offs, lens);
  if (n < 0) return null;
  return Array.from({ length: n }, (_, i) => Buffer.from(out.subarray(offs[i], offs[i] + lens[i])));
}

function tsoHeader(pkt: Buffer, gso: number, flags = VNET_F_NEEDS_CSUM) {
  const ihl = (pkt[0] & 0x0f) * 4;
  return { flags, gsoType: VNET_GSO_TCPV4, hdrLen: ihl + (pkt[ihl + 12] >> 4) * 4, gsoSize: gso, csumStart: ihl, csumOffset: 16 };
}

function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function ipChecksumOk(pkt: Buffer): boolean {
  return foldChecksum(onesSum(pkt, 0, (pkt[0] & 0x0f) * 4)) === 0;
}

/** The header fields both cuts (TCP and UDP) sum ahead or per segment, drawn whole so that
 *  the property tests cover every carry. */
const HEADER_FIELDS = {
  id: fc.integer({ min: 0, max: 0xffff }),
  src: fc.ipV4(),
  dst: fc.ipV4(),
  sport: fc.integer({ min: 0, max: 0xffff }),
  dport: fc.integer({ min: 0, max: 0xffff }),
  ttl: fc.integer({ min: 1, max: 255 }),
  ipOptions: fc.constantFrom(undefined, Buffer.from([1, 1, 1, 0]), Buffer.from([0x94, 4, 0, 0, 1, 1, 1, 0])),
};

describe('TSO segmentation in C (_tsoSegment)', () => {
  it('cuts a 64 KB super-packet into MTU-sized segments, byte-exact, the last one shorter', () => {
    const pkt = tcpPacket({ seq: 0xfffff000, flags: ACK | PSH | FIN | CWR, payload: bytes(65535 - 52), id: 0xfffe });
    partialTcpChecksum(pkt);
    const got = segment(pkt, tsoHeader(pkt, 1398))!;
    const want = referenceSegments(pkt, 1398);
    expect(got).toHaveLength(47);
    expect(got.map((b) => b.length)).toEqual(want.map((b) => b.length));
    for (let i = 0; i < want.length; i++) expect(got[i].equals(want[i]), `segment ${i}`).toBe(true);
    // The properties the peer's kernel checks, stated once more without the reference:
    const last = got[46].subarray(ENCAP.length);
    expect(last.length).toBe(52 + ((65535 - 52) % 1398));
    for (const [k, d] of got.entries()) {
      const s = d.subarray(ENCAP.length);
      expect(d.subarray(0, ENCAP.length).equals(ENCAP)).toBe(true);
      expect(s.readUInt16BE(2)).toBe(s.length);
      expect(s.readUInt16BE(4)).toBe((0xfffe + k) & 0xffff); // ids wrap
      expect(ipChecksumOk(s)).toBe(true);
      expect(tcpChecksumOk(s)).toBe(true);
      expect(s.readUInt32BE(24)).toBe((0xfffff000 + k * 1398) >>> 0); // seq wraps
      expect(s[33] & (FIN | PSH)).toBe(k === 46 ? FIN | PSH : 0);
      expect(s[33] & CWR).toBe(k === 0 ? CWR : 0);
      expect(s[33] & ACK).toBe(ACK);
    }
  });

  it('handles IP options, an exact multiple of gso_size and a single segment', () => {
    const withOpts = tcpPacket({ seq: 5, payload: bytes(3000, 7), ipOptions: Buffer.from('01010100', 'hex') });
    expect(segment(withOpts, tsoHeader(withOpts, 1000))).toEqual(referenceSegments(withOpts, 1000));
    const exact = tcpPacket({ seq: 5, payload: bytes(4 * 1398, 3), options: Buffer.alloc(0) });
    const e = segment(exact, tsoHeader(exact, 1398))!;
    expect(e).toHaveLength(4);
    expect(e.every((d) => d.length === ENCAP.length + 40 + 1398)).toBe(true);
    expect(e).toEqual(referenceSegments(exact, 1398));
    const one = tcpPacket({ seq: 9, payload: bytes(100, 5), flags: ACK | PSH });
    partialTcpChecksum(one);
    expect(segment(one, tsoHeader(one, 1398))).toEqual(referenceSegments(one, 1398));
  });

  it('uses the TCP header length from the packet, not hdr_len (wrong on the forwarding path)', () => {
    const pkt = tcpPacket({ seq: 1, payload: bytes(5000, 9) });
    expect(segment(pkt, { ...tsoHeader(pkt, 1398), hdrLen: 1500 })).toEqual(referenceSegments(pkt, 1398));
  });

  it('completes a partial checksum of a plain packet (TCP; UDP never 0)', () => {
    const pkt = tcpPacket({ seq: 1, payload: bytes(777, 2) });
    const whole = Buffer.from(pkt);
    partialTcpChecksum(pkt);
    const got = segment(pkt, { flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_NONE, csumStart: 20, csumOffset: 16 })!;
    expect(got).toHaveLength(1);
    expect(got[0].equals(Buffer.concat([ENCAP, whole]))).toBe(true);

    // A UDP datagram whose checksum comes out as 0 must carry 0xffff instead.
    const data = Buffer.alloc(8 + 2);
    const udp = ipv4('10.244.100.10', '10.244.1.2', 17, data);
    udp.writeUInt16BE(1000, 20);
    udp.writeUInt16BE(2000, 22);
    udp.writeUInt16BE(10, 24);
    const seed = onesSum(udp, 12, 8) + 17 + 10;
    // Choose the payload so that the full sum is 0xffff, i.e. the checksum is 0.
    let s = seed + 1000 + 2000 + 10;
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    udp.writeUInt16BE(0xffff - s, 28);
    let p = seed;
    while (p > 0xffff) p = (p & 0xffff) + (p >>> 16);
    udp.writeUInt16BE(p, 26);
    const u = segment(udp, { flags: VNET_F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 })!;
    expect(u[0].readUInt16BE(ENCAP.length + 26)).toBe(0xffff);
    // Not NEEDS_CSUM: sent exactly as read.
    const plain = tcpPacket({ seq: 3, payload: bytes(10) });
    expect(segment(plain, {})![0].equals(Buffer.concat([ENCAP, plain]))).toBe(true);
  });

  it('refuses metadata it cannot honour instead of sending garbage', () => {
    const pkt = tcpPacket({ seq: 1, payload: bytes(3000) });
    expect(segment(pkt, { ...tsoHeader(pkt, 1398), gsoSize: 0 })).toBeNull();
    expect(segment(pkt, { ...tsoHeader(pkt, 1398), gsoType: 4 /* TCPV6 */ })).toBeNull();
    expect(segment(pkt, { ...tsoHeader(pkt, 1398), gsoType: 3 /* UFO */ })).toBeNull();
    const udp = ipv4('10.244.100.10', '10.244.1.2', 17, bytes(3000));
    expect(segment(udp, tsoHeader(pkt, 1398))).toBeNull(); // TSO on a UDP packet
    const short = Buffer.from(pkt);
    short.writeUInt16BE(pkt.length - 1, 2); // total length does not match
    expect(segment(short, tsoHeader(pkt, 1398))).toBeNull();
    expect(segment(pkt, { flags: VNET_F_NEEDS_CSUM, csumStart: 20, csumOffset: pkt.length })).toBeNull();
  });

  it('property: any payload size and MSS gives the reference segments', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 65535 - 52 }),
        fc.integer({ min: 64, max: 8960 }),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.constantFrom(ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR, ACK | CWR | PSH),
        fc.boolean(),
        // Every header field tso.c sums ahead (tso_prepare) or per segment: carries included.
        fc.record({
          ...HEADER_FIELDS,
          ack: fc.integer({ min: 0, max: 0xffffffff }),
          win: fc.integer({ min: 0, max: 0xffff }),
          options: fc.constantFrom(Buffer.alloc(0), TS_OPTS, Buffer.from([1, 1, 4, 2])),
        }),
        (size, mss, seq, flags, partial, h) => {
          const pkt = tcpPacket({ ...h, seq, flags, payload: bytes(Math.min(size, 65535 - 120), size + 1) });
          if (partial) partialTcpChecksum(pkt);
          const got = segment(pkt, tsoHeader(pkt, mss));
          const want = referenceSegments(pkt, mss);
          expect(got).not.toBeNull();
          expect(got!.length).toBe(want.length);
          for (let i = 0; i < want.length; i++) if (!got![i].equals(want[i])) expect.fail(`segment ${i} differs`);
        },
      ),
      { numRuns: 300 },
    );
  });
});

interface Written {
  vnet: { flags: number; gsoType: number; hdrLen: number; gsoSize: number; csumStart: number; csumOffset: number };
  pkt: Buffer;
}

/** Runs _groCoalesce on packets laid out in one buffer at scattered offsets. */
function coalesce(pkts: Buffer[]): Written[] {
  return coalesceWith(pkts, undefined);
}

/** The same; `udp`: join UDP datagrams (as on a kernel with GSO_UDP_L4 writes) or not. */
function coalesceWith(pkts: Buffer[], udp: boolean | undefined): Written[] {
  return groCoalesce(native, pkts, udp).map((w) => ({
    vnet: {
      flags: w[0], gsoType: w[1], hdrLen: readVnetU16(w, 2), gsoSize: readVnetU16(w, 4),
      csumStart: readVnetU16(w, 6), csumOffset: readVnetU16(w, 8),
    },
    pkt: w.subarray(VNET_HDR_LEN),
  }));
}

/** Consecutive segments of one flow, as a sender's TSO would emit them. */
function flow(n: number, mss: number, o: Partial<Seg> & { lastLen?: number; lastFlags?: number } = {}): Buffer[] {
  const out: Buffer[] = [];
  let seq = o.seq ?? 1_000_000;
  for (let i = 0; i < n; i++) {
    const len = i === n - 1 && o.lastLen !== undefined ? o.lastLen : mss;
    const flags = i === n - 1 && o.lastFlags !== undefined ? o.lastFlags : ACK;
    out.push(tcpPacket({ ...o, seq, flags, id: (o.id ?? 100) + i, payload: bytes(len, seq) }));
    seq = (seq + len) >>> 0;
  }
  return out;
}

const ZERO_VNET = { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };

/** Segments a written packet back (what the kernel does with it, if it has to). */
function resegment(w: Written): Buffer[] {
  if (w.vnet.gsoType === VNET_GSO_NONE) return [w.pkt];
  return segment(w.pkt, w.vnet)!.map((d) => d.subarray(ENCAP.length));
}

describe('TCP coalescing in C (_groCoalesce)', () => {
  it('joins in-order segments of one flow into a GSO_TCPV4 super-packet', () => {
    const pkts = flow(5, 1398, { lastLen: 700, lastFlags: ACK | PSH });
    const w = coalesce(pkts);
    expect(w).toHaveLength(1);
    expect(w[0].vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: 1398, csumStart: 20, csumOffset: 16 });
    const s = w[0].pkt;
    expect(s.length).toBe(52 + 4 * 1398 + 700);
    expect(s.readUInt16BE(2)).toBe(s.length);
    expect(ipChecksumOk(s)).toBe(true);
    expect(s[33]).toBe(ACK | PSH);
    expect(s.subarray(52).equals(Buffer.concat(pkts.map((p) => p.subarray(52))))).toBe(true);
    // The checksum field holds the pseudo-header sum: completing it gives a valid segment.
    const expectSeed = Buffer.from(s);
    partialTcpChecksum(expectSeed);
    expect(s.readUInt16BE(36)).toBe(expectSeed.readUInt16BE(36));
    expect(resegment(w[0])).toEqual(pkts);
  });

  it('writes what cannot be joined as it came, behind a zero header, in order', () => {
    const syn = tcpPacket({ seq: 1, flags: 0x02, payload: Buffer.alloc(0) });
    const pureAck = tcpPacket({ seq: 5, payload: Buffer.alloc(0) });
    const fin = tcpPacket({ seq: 5, flags: ACK | FIN, payload: bytes(10) });
    const udp = ipv4('10.244.1.2', '10.244.100.10', 17, bytes(100));
    const opts = tcpPacket({ seq: 9, payload: bytes(100), ipOptions: Buffer.from('01010100', 'hex') });
    const w = coalesce([syn, pureAck, fin, udp, opts]);
    expect(w.map((x) => x.vnet)).toEqual([ZERO_VNET, ZERO_VNET, ZERO_VNET, ZERO_VNET, ZERO_VNET]);
    expect(w.map((x) => x.pkt)).toEqual([syn, pureAck, fin, udp, opts]);
  });

  it('regression: a TCP packet with IP options ends its flow\'s chain, so nothing is joined across it', () => {
    // data, a pure ACK carrying IP options, data: joining the two data segments would move
    // the second ahead of the ACK that came before it.
    const [d1, d2] = flow(2, 100, { seq: 1000 });
    const ackWithOptions = tcpPacket({ seq: 1100, payload: Buffer.alloc(0), ipOptions: Buffer.from('01010101', 'hex') });
    const w = coalesce([d1, ackWithOptions, d2]);
    expect(w.map((x) => x.vnet.gsoType)).toEqual([VNET_GSO_NONE, VNET_GSO_NONE, VNET_GSO_NONE]);
    expect(w.map((x) => x.pkt)).toEqual([d1, ackWithOptions, d2]);
  });

  it('keeps flows apart, and splits on a gap, a change of window/reserved bits/TTL/options/ack, or a longer segment', () => {
    const a = flow(3, 1000, { sport: 1111 });
    const b = flow(3, 1000, { sport: 2222 });
    const w = coalesce([a[0], b[0], a[1], b[1], a[2], b[2]]);
    expect(w).toHaveLength(2);
    expect(w.map((x) => x.pkt.readUInt16BE(20))).toEqual([1111, 2222]);
    expect(resegment(w[0])).toEqual(a);
    expect(resegment(w[1])).toEqual(b);

    const base = flow(4, 1000);
    const variants: [string, (s: Seg) => Seg][] = [
      ['gap', (s) => ({ ...s, seq: s.seq + 1 })],
      ['window', (s) => ({ ...s, win: 999 })],
      // The kernel's GRO compares the whole flag word, reserved bits and AccECN's AE included:
      // joined, the third segment's AE would be lost.
      ['AE flag', (s) => ({ ...s, reserved: 0x1 })],
      ['reserved bits', (s) => ({ ...s, reserved: 0x8 })],
      ['ttl', (s) => ({ ...s, ttl: 5 })],
      ['ack', (s) => ({ ...s, ack: 778 })],
      ['timestamp', (s) => ({ ...s, options: Buffer.from('0101080a0001e2410000abcd', 'hex') })],
      ['longer', (s) => ({ ...s, payload: bytes(1001, 4) })],
    ];
    for (const [name, change] of variants) {
      const third = tcpPacket(change({ seq: 1_000_000 + 2000, id: 102, payload: bytes(1000, 1_002_000) }));
      const ws = coalesce([base[0], base[1], third]);
      expect(ws.length, name).toBe(2);
      expect(ws[0].vnet.gsoType, name).toBe(VNET_GSO_TCPV4);
      expect(ws[1].pkt.equals(third), name).toBe(true);
    }
  });

  it('never joins a segment with a bad checksum (the kernel must see it and drop it)', () => {
    const pkts = flow(4, 1000);
    const before = native.offloadStats().csumRejects;
    const bad = Buffer.from(pkts[2]);
    bad[60] ^= 0xff; // payload corrupted, checksum left as it was
    const w = coalesce([pkts[0], pkts[1], bad, pkts[3]]);
    expect(w[0].vnet.gsoType).toBe(VNET_GSO_TCPV4);
    expect(resegment(w[0])).toEqual([pkts[0], pkts[1]]);
    expect(w.some((x) => x.pkt.equals(bad) && x.vnet.gsoType === 0)).toBe(true);
    expect(native.offloadStats().csumRejects).toBeGreaterThan(before);
    // A bad IPv4 header checksum at the head: the head goes alone, the rest still joins.
    const badHead = Buffer.from(pkts[0]);
    badHead[8] ^= 1; // TTL changed without the header checksum; the others carry it too
    const others = flow(4, 1000).map((p) => {
      const q = Buffer.from(p);
      q[8] ^= 1;
      writeIpv4HeaderChecksum(q, 0);
      return q;
    });
    const w2 = coalesce([badHead, ...others.slice(1)]);
    expect(w2[0].pkt.equals(badHead)).toBe(true);
    expect(w2[0].vnet).toEqual(ZERO_VNET);
    expect(resegment(w2[1])).toEqual(others.slice(1));
  });

  it('stops at 64 KB: the next segment starts a new super-packet', () => {
    const pkts = flow(60, 1398);
    const w = coalesce(pkts);
    expect(w.length).toBe(2);
    expect(w[0].pkt.length).toBeLessThanOrEqual(65535);
    expect([...resegment(w[0]), ...resegment(w[1])]).toEqual(pkts);
  });

  it('property: coalescing then segmenting gives back every packet, in order', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ flow: fc.integer({ min: 0, max: 2 }), len: fc.integer({ min: 0, max: 1448 }), psh: fc.boolean() }),
          { minLength: 1, maxLength: 120 },
        ),
        fc.integer({ min: 300, max: 1448 }),
        (steps, mss) => {
          const seq = [10, 20_000_000, 0xfffff000];
          const id = [1, 500, 0xfff0];
          const pkts = steps.map((st) => {
            const len = Math.min(st.len, mss);
            const p = tcpPacket({
              sport: 1000 + st.flow, seq: seq[st.flow], id: id[st.flow],
              flags: st.psh ? ACK | PSH : ACK, payload: bytes(len, seq[st.flow]),
            });
            seq[st.flow] = (seq[st.flow] + len) >>> 0;
            id[st.flow] = (id[st.flow] + 1) & 0xffff;
            return p;
          });
          const w = coalesce(pkts);
          for (const x of w) {
            expect(ipChecksumOk(x.pkt)).toBe(true);
            if (x.vnet.gsoType === VNET_GSO_NONE) expect(x.vnet).toEqual(ZERO_VNET);
          }
          // Per flow, the packets come back exactly and in order.
          const back = w.flatMap(resegment);
          for (let f = 0; f < 3; f++) {
            const mine = (p: Buffer) => p.readUInt16BE(20) === 1000 + f;
            expect(back.filter(mine)).toEqual(pkts.filter(mine));
          }
          expect(back.length).toBe(pkts.length);
        },
      ),
      {
        numRuns: Number(process.env.VXEDGE_PROPERTY_RUNS ?? 200),
        // Found by CI: data, pure ACK, data of one flow must not join across the ACK.
        examples: [[[{ flow: 0, len: 1, psh: false }, { flow: 0, len: 0, psh: false }, { flow: 0, len: 1, psh: false }, { flow: 0, len: 0, psh: false }], 300]],
      },
    );
  });
});

// ---------------------------------------------------------------- UDP (GSO_UDP_L4 writes)


/** The UDP checksum of `pkt` (IPv4, any header length) as the sender would put it (0 -> 0xffff). */
function udpChecksum(pkt: Buffer): number {
  const l4 = pkt.length - (pkt[0] & 0x0f) * 4;
  const c = Buffer.from(pkt.subarray(pkt.length - l4));
  c.writeUInt16BE(0, 6);
  const v = foldChecksum(onesSum(c, 0, l4, onesSum(pkt, 12, 8) + 17 + l4));
  return v === 0 ? 0xffff : v;
}

function udpPacket(o: { payload: Buffer; sport?: number; ttl?: number; tos?: number; id?: number; frag?: number; noCsum?: boolean }): Buffer {
  const u = Buffer.alloc(8 + o.payload.length);
  u.writeUInt16BE(o.sport ?? 5555, 0);
  u.writeUInt16BE(6000, 2);
  u.writeUInt16BE(u.length, 4);
  o.payload.copy(u, 8);
  const pkt = ipv4('10.244.1.2', '10.244.100.10', 17, u, { id: o.id ?? 0x2000, ttl: o.ttl ?? 63, frag: o.frag });
  if (o.tos !== undefined) {
    pkt[1] = o.tos;
    writeIpv4HeaderChecksum(pkt, 0);
  }
  if (!o.noCsum) pkt.writeUInt16BE(udpChecksum(pkt), 26);
  return pkt;
}

/** Datagrams of one flow: `sizes` payload bytes each. */
const datagrams = (sizes: number[], o: Partial<Parameters<typeof udpPacket>[0]> = {}) =>
  sizes.map((n, i) => udpPacket({ ...o, id: (o.id ?? 0x2000) + i, payload: bytes(n, 7 * i + n) }));

/** What the kernel makes of a written UDP super-packet: the datagrams, each with its own
 *  length, IP ID (the head's + k) and a complete checksum. */
function udpResegment(w: Written): Buffer[] {
  if (w.vnet.gsoType !== VNET_GSO_UDP_L4) return [w.pkt];
  const out: Buffer[] = [];
  for (let at = 28, k = 0; at < w.pkt.length; at += w.vnet.gsoSize, k++) {
    const chunk = w.pkt.subarray(at, Math.min(w.pkt.length, at + w.vnet.gsoSize));
    const d = Buffer.concat([w.pkt.subarray(0, 28), chunk]);
    d.writeUInt16BE(d.length, 2);
    d.writeUInt16BE((w.pkt.readUInt16BE(4) + k) & 0xffff, 4);
    writeIpv4HeaderChecksum(d, 0);
    d.writeUInt16BE(d.length - 20, 24);
    d.writeUInt16BE(udpChecksum(d), 26);
    out.push(d);
  }
  return out;
}

/** What a receiver compares: all but the IP ID and the UDP checksum (the kernel makes both anew). */
const udpView = (p: Buffer) => {
  const c = Buffer.from(p);
  c.writeUInt16BE(0, 4);
  c.writeUInt16BE(0, 10);
  c.writeUInt16BE(0, 26);
  return c.toString('hex');
};

const coalesceUdp = (pkts: Buffer[], udp = true) => coalesceWith(pkts, udp);

describe('UDP coalescing in C (_groCoalesce, GSO_UDP_L4 writes)', () => {
  it('joins same-size datagrams of one flow into one super-packet; a shorter one ends it', () => {
    const pkts = datagrams([64, 64, 64, 64, 20, 64]);
    const w = coalesceUdp(pkts);
    expect(w).toHaveLength(2);
    expect(w[0].vnet).toEqual({ flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_UDP_L4, hdrLen: 28, gsoSize: 64, csumStart: 20, csumOffset: 6 });
    const s = w[0].pkt;
    expect(s.length).toBe(28 + 4 * 64 + 20);
    expect(s.readUInt16BE(2)).toBe(s.length);
    expect(s.readUInt16BE(24)).toBe(s.length - 20);
    expect(ipChecksumOk(s)).toBe(true);
    // The checksum field holds the pseudo-header sum of the whole, for the kernel to complete.
    let seed = onesSum(s, 12, 8) + 17 + (s.length - 20);
    while (seed > 0xffff) seed = (seed & 0xffff) + (seed >>> 16);
    expect(s.readUInt16BE(26)).toBe(seed);
    expect(s.subarray(28).equals(Buffer.concat(pkts.slice(0, 5).map((p) => p.subarray(28))))).toBe(true);
    expect(w[1]).toEqual({ vnet: ZERO_VNET, pkt: pkts[5] });
    expect(w.flatMap(udpResegment).map(udpView)).toEqual(pkts.map(udpView));
  });

  it('without the kernel\'s support (udp false) every datagram goes as it came', () => {
    const pkts = datagrams([64, 64, 64]);
    expect(coalesceUdp(pkts, false)).toEqual(pkts.map((pkt) => ({ vnet: ZERO_VNET, pkt })));
  });

  it('keeps flows, TTL, TOS and DF apart, and never joins a longer datagram', () => {
    const a = datagrams([50, 50], { sport: 1 });
    const b = datagrams([50, 50], { sport: 2 });
    const longer = udpPacket({ sport: 1, payload: bytes(60) });
    const ttl = udpPacket({ sport: 1, payload: bytes(50), ttl: 9 });
    const tos = udpPacket({ sport: 1, payload: bytes(50), tos: 0xb8 });
    const noDf = udpPacket({ sport: 1, payload: bytes(50), frag: 0 });
    const pkts = [a[0], b[0], a[1], b[1], longer, ttl, tos, noDf];
    const w = coalesceUdp(pkts);
    expect(w.map((x) => x.vnet.gsoType)).toEqual([VNET_GSO_UDP_L4, VNET_GSO_UDP_L4, 0, 0, 0, 0]);
    expect(w.flatMap(udpResegment).map(udpView)).toEqual([a[0], a[1], b[0], b[1], longer, ttl, tos, noDf].map(udpView));
  });

  it('a fragment or a datagram with IP options ends its flow\'s chain: nothing is joined across it', () => {
    const before = datagrams([40, 40]);
    const frag = udpPacket({ payload: bytes(40), frag: 0x2000 }); // MF
    const after = datagrams([40, 40], { id: 0x3000 });
    const w = coalesceUdp([...before, frag, ...after]);
    expect(w.map((x) => x.vnet.gsoType)).toEqual([VNET_GSO_UDP_L4, 0, VNET_GSO_UDP_L4]);
    expect(w.flatMap(udpResegment).map(udpView)).toEqual([...before, frag, ...after].map(udpView));
  });

  it('joins a datagram without a checksum (0), never one with a bad checksum', () => {
    const pkts = datagrams([30, 30, 30]);
    const none = udpPacket({ payload: bytes(30, 99), noCsum: true, id: 0x2003 });
    const bad = udpPacket({ payload: bytes(30, 98), id: 0x2004 });
    bad[30] ^= 0xff;
    const rejects = native.offloadStats().csumRejects;
    const w = coalesceUdp([...pkts, none, bad]);
    expect(w).toHaveLength(2);
    expect(w[0].vnet.gsoType).toBe(VNET_GSO_UDP_L4);
    expect(w[0].pkt.length).toBe(28 + 4 * 30);
    expect(w[1]).toEqual({ vnet: ZERO_VNET, pkt: bad });
    expect(native.offloadStats().csumRejects).toBe(rejects + 1);
  });

  it('property: coalescing then what the kernel does gives back every datagram, in order per flow', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ flow: fc.integer({ min: 0, max: 2 }), len: fc.integer({ min: 0, max: 1400 }), tcp: fc.boolean() }), { minLength: 1, maxLength: 120 }),
        (steps) => {
          const seq = [10, 20_000, 7];
          const id = [1, 500, 0xfff0]; // TCP: as a sender numbers them, which TSO repeats
          const pkts = steps.map((st, i) => {
            if (st.tcp) {
              const p = tcpPacket({ sport: 1000 + st.flow, seq: seq[st.flow], id: id[st.flow], payload: bytes(st.len % 1000, i) });
              seq[st.flow] += st.len % 1000;
              id[st.flow] = (id[st.flow] + 1) & 0xffff;
              return p;
            }
            return udpPacket({ sport: 1000 + st.flow, id: i, payload: bytes(st.len, i) });
          });
          const w = coalesceUdp(pkts);
          for (const x of w) expect(ipChecksumOk(x.pkt)).toBe(true);
          const back = w.flatMap((x) => (x.vnet.gsoType === VNET_GSO_UDP_L4 ? udpResegment(x) : resegment(x)));
          expect(back.length).toBe(pkts.length);
          for (let f = 0; f < 3; f++) {
            for (const proto of [6, 17]) {
              const mine = (p: Buffer) => p[9] === proto && p.readUInt16BE(20) === 1000 + f;
              const view = proto === 17 ? udpView : (p: Buffer) => p.toString('hex');
              expect(back.filter(mine).map(view)).toEqual(pkts.filter(mine).map(view));
            }
          }
        },
      ),
      { numRuns: Number(process.env.VXEDGE_PROPERTY_RUNS ?? 200) },
    );
  });
});

// ------------------------------------------------- _groCoalesce on bytes from the network

/** Both checksums of a packet with a 20-byte IP header recomputed over what it holds (its
 *  total length must be its length): a mutated packet that is consistent again. */
function fixChecksums(p: Buffer): void {
  if (p.length < 20 || p[0] !== 0x45 || p.readUInt16BE(2) !== p.length) return;
  writeIpv4HeaderChecksum(p, 0);
  const at = p[9] === 6 ? 36 : p[9] === 17 ? 26 : -1;
  if (at < 0 || p.length < at + 2) return;
  p.writeUInt16BE(0, at);
  const c = foldChecksum(onesSum(p, 20, p.length - 20, onesSum(p, 12, 8) + p[9] + p.length - 20));
  p.writeUInt16BE(p[9] === 17 && c === 0 ? 0xffff : c, at);
}

/** What gro.c checks before it joins a packet: both checksums (UDP: 0 is none, allowed). */
function checksumsOk(p: Buffer): boolean {
  if (!ipChecksumOk(p)) return false;
  if (p[9] === 6) return tcpChecksumOk(p);
  return p.readUInt16BE(26) === 0 || foldChecksum(onesSum(p, 20, p.length - 20, onesSum(p, 12, 8) + 17 + p.length - 20)) === 0;
}

const l4HeaderLen = (p: Buffer) => (p[9] === 6 ? (p[32] >> 4) * 4 : 8);

describe('_groCoalesce on arbitrary and mutated bytes', () => {
  it('property: never crashes, and what it joins is cut back by _tsoSegment into the payloads of the packets it took, in order', () => {
    // TCP segments of two flows and UDP datagrams of a third as senders make them, some with
    // bytes changed (and sometimes their checksums made right again, so that a changed packet
    // can still be joined), and random bytes behind an IPv4 first byte and a protocol number.
    const packet = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          kind: fc.constant('flow' as const),
          flow: fc.integer({ min: 0, max: 2 }), // 0 and 1: TCP, 2: UDP
          // Mostly full-sized (-1: the MSS) and without PSH, as a bulk sender's, so that chains form.
          len: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 1400 }) }),
          psh: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
          mutations: fc.oneof({ weight: 4, arbitrary: fc.constant([] as Mutation[]) }, { weight: 1, arbitrary: fc.array(mutation(60), { minLength: 1, maxLength: 3 }) }),
          fix: fc.boolean(),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({
          kind: fc.constant('random' as const),
          bytes: fc.uint8Array({ minLength: 20, maxLength: 200 }),
          proto: fc.constantFrom(6, 17, 1),
        }),
      },
    );
    const stats = { runs: 0, joined: 0, joinedPackets: 0, changedJoined: 0, single: 0 };
    fc.assert(
      fc.property(fc.array(packet, { minLength: 1, maxLength: 40 }), fc.integer({ min: 300, max: 1400 }), fc.boolean(), (steps, mss, udp) => {
        const seq = [10, 20_000_000, 0xfffff000];
        const id = [1, 500, 0xfff0];
        const changed = new Set<number>();
        const pkts = steps.map((st, i) => {
          if (st.kind === 'random') {
            const b = Buffer.from(st.bytes);
            b[0] = 0x45;
            b[9] = st.proto;
            return b;
          }
          const len = st.len < 0 ? mss : Math.min(st.len, mss);
          let p: Buffer;
          if (st.flow === 2) {
            p = udpPacket({ sport: 1000 + st.flow, id: id[st.flow], payload: bytes(len, i) });
          } else {
            p = tcpPacket({ sport: 1000 + st.flow, seq: seq[st.flow], id: id[st.flow], flags: st.psh ? ACK | PSH : ACK, payload: bytes(len, seq[st.flow]) });
            seq[st.flow] = (seq[st.flow] + len) >>> 0;
          }
          id[st.flow] = (id[st.flow] + 1) & 0xffff;
          if (st.mutations.length === 0) return p;
          changed.add(i);
          const m = applyMutations(p, st.mutations);
          if (st.fix) fixChecksums(m);
          return m;
        });
        const w = coalesceWith(pkts, udp); // n >= 0 is checked there
        // Outputs come in the order of their first packet, so the first packet of output k is the
        // first one no earlier output took; a joined output's other packets are later packets of
        // its flow with good checksums, in order (the earliest that fits is the one it took).
        const taken = new Array<boolean>(pkts.length).fill(false);
        let next = 0;
        for (const x of w) {
          while (next < pkts.length && taken[next]) next++;
          expect(next, 'an output with no packet left for it').toBeLessThan(pkts.length);
          const head = next;
          taken[head] = true;
          if (x.vnet.gsoType === VNET_GSO_NONE) {
            expect(x.vnet).toEqual(ZERO_VNET);
            if (!x.pkt.equals(pkts[head])) expect.fail(`output for packet ${head} is not that packet as it came`);
            stats.single++;
            continue;
          }
          const h = pkts[head];
          expect(x.vnet.gsoType).toBe(h[9] === 6 ? VNET_GSO_TCPV4 : VNET_GSO_UDP_L4);
          const cut = segment(x.pkt, x.vnet);
          expect(cut, 'a joined packet _tsoSegment refuses').not.toBeNull();
          const segs = cut!.map((d) => d.subarray(ENCAP.length));
          expect(segs.length).toBeGreaterThanOrEqual(2);
          const hl = 20 + l4HeaderLen(h);
          expect(segs[0].subarray(hl).equals(h.subarray(hl)), `payload of packet ${head}`).toBe(true);
          if (h[9] === 6) expect([segs[0].readUInt32BE(24), segs[0][32], segs[0][33]], `seq, data offset byte and flags of packet ${head}`).toEqual([h.readUInt32BE(24), h[32], h[33]]);
          let prev = head;
          for (const sg of segs.slice(1)) {
            const payload = sg.subarray(hl);
            let j = prev + 1;
            for (; j < pkts.length; j++) {
              const p = pkts[j];
              if (taken[j] || p.length < hl || p[0] !== 0x45 || p[9] !== h[9] || !p.subarray(12, 24).equals(h.subarray(12, 24))) continue;
              if (l4HeaderLen(p) !== l4HeaderLen(h) || !checksumsOk(p) || !p.subarray(hl).equals(payload)) continue;
              // TCP: the same sequence number and flags too, or the receiver would not put the
              // bytes where they belong; the same reserved bits (AccECN's AE), or one was lost.
              if (p[9] !== 6 || (p.readUInt32BE(24) === sg.readUInt32BE(24) && p[32] === sg[32] && p[33] === sg[33])) break;
            }
            if (j >= pkts.length) expect.fail(`a segment cut from the output for packet ${head} (after packet ${prev}) has the payload of no later packet of its flow`);
            taken[j] = true;
            prev = j;
            if (changed.has(j)) stats.changedJoined++;
          }
          if (changed.has(head)) stats.changedJoined++;
          stats.joined++;
          stats.joinedPackets += segs.length;
        }
        // Every packet went out exactly once, alone or in one super-packet.
        expect(taken.every(Boolean), 'a packet that no output carries').toBe(true);
        stats.runs++;
      }),
      { numRuns: Number(process.env.VXEDGE_PROPERTY_RUNS ?? 300) },
    );
    // Not vacuous: it joined (changed packets too) and wrote packets alone, many times each.
    expect(stats.joined).toBeGreaterThan(stats.runs / 3);
    expect(stats.changedJoined).toBeGreaterThan(0);
    expect(stats.single).toBeGreaterThan(stats.runs);
  });
});

describe('offload entry points reject bad arguments', () => {
  it('checks offsets, lengths and header indices before touching memory', () => {
    const buf = Buffer.alloc(100);
    expect(() => native._groCoalesce(buf, new Int32Array([90]), new Int32Array([20]), 1, Buffer.alloc(10), new Int32Array(1), new Int32Array(1))).toThrow(RangeError);
    expect(() => native._tsoSegment(buf, 0, 200, Buffer.alloc(10), 0, 22, Buffer.alloc(10), new Int32Array(1), new Int32Array(1))).toThrow(RangeError);
    expect(() => native._tsoSegment(buf, 0, 50, Buffer.alloc(10), 1, 22, Buffer.alloc(10), new Int32Array(1), new Int32Array(1))).toThrow(RangeError);
    expect(() =>
      native.udpSend(2 ** 30, buf, new Int32Array([0]), new Int32Array([50]), new Uint32Array(1), new Uint16Array(1), 1, Buffer.alloc(10), new Int32Array([1]), 22),
    ).toThrow(/vnetIdx\[0\] = 1 is outside vnet/);
    expect(() =>
      native.udpSend(2 ** 30, buf, new Int32Array([0]), new Int32Array([20]), new Uint32Array(1), new Uint16Array(1), 1, Buffer.alloc(10), new Int32Array([0]), 22),
    ).toThrow(/packet 0 is shorter than encap/);
    // One virtio_net_hdr (10 bytes) for two packets.
    expect(() => native.devRead(2 ** 30, buf, 32, 65535, 2, new Int32Array(2), new Int32Array(2), Buffer.alloc(10))).toThrow(RangeError);
    // Joining segments works on at most 4096 packets per call.
    expect(() => native.devWrite(2 ** 30, buf, new Int32Array(4097), new Int32Array(4097), 4097, true)).toThrow(RangeError);
    expect(ip('1.2.3.4')).toBe(0x01020304);
  });

  it('_groCoalesce: offsets in a view of the buffer itself are read as checked, not as the rewrite of a joined head changed them', () => {
    // offs is an Int32Array over bytes 32..39 of the head's own TCP header: offs[0] is its
    // data offset, flags and window (0x50 0x10 0x01 0x00 = 0x11050, the head's offset), offs[1]
    // its checksum and urgent pointer (where the second segment is put). Joining the two puts
    // the pseudo-header sum into that checksum: read after the rewrite, offs[1] named other
    // bytes of the buffer than the ones checked (past its end, with a smaller buffer).
    const HEAD = 0x11050;
    for (let salt = 0; salt < 64; salt++) {
      const payload = (k: number) => Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 7 + k * 31 + salt) & 0xff));
      const head = tcpPacket({ seq: 5000, win: 0x0100, options: Buffer.alloc(0), payload: payload(1) });
      head.writeUInt16BE(0x0100, 38); // urgent pointer (URG is off): offs[1] = checksum + 0x10000
      fixTcpChecksum(head);
      const second = tcpPacket({ seq: 5100, win: 0x0100, options: Buffer.alloc(0), payload: payload(2) });
      const at = head[36] | (head[37] << 8) | (head[38] << 16) | (head[39] << 24);
      if (at < HEAD + head.length + 64 && at + second.length + 64 > HEAD) continue; // overlaps the head: another payload
      const ab = new ArrayBuffer(0x20000 + 4096);
      const buf = Buffer.from(ab);
      head.copy(buf, HEAD);
      second.copy(buf, at);
      const offs = new Int32Array(ab, HEAD + 32, 2);
      expect([offs[0], offs[1]]).toEqual([HEAD, at]);
      const lens = new Int32Array([head.length, second.length]);
      const out = Buffer.alloc(1000);
      const ooffs = new Int32Array(2);
      const olens = new Int32Array(2);
      expect(native._groCoalesce(buf, offs, lens, 2, out, ooffs, olens)).toBe(1);
      const joined = out.subarray(ooffs[0] + VNET_HDR_LEN, ooffs[0] + olens[0]);
      expect(joined.length).toBe(40 + 200);
      expect(joined.subarray(40, 140).equals(payload(1))).toBe(true);
      expect(joined.subarray(140).equals(payload(2)), 'the second segment\'s payload').toBe(true);
      return;
    }
    throw new Error('no payload put the second segment clear of the head');
  });
});

// ------------------------------------------------------- UDP (GSO_UDP_L4 reads, cut by tso.c)

/** The datagrams the kernel's UDP GSO makes of a UDP super-packet, the slow obvious way: the
 *  headers copied (IP options too), then per datagram the IP length, id (the head's + k) and
 *  checksum, the UDP length and a complete UDP checksum; behind ENCAP, as _tsoSegment gives them. */
function referenceDatagrams(pkt: Buffer, gso: number): Buffer[] {
  const hl = (pkt[0] & 0x0f) * 4 + 8;
  const n = Math.max(1, Math.ceil((pkt.length - hl) / gso));
  return Array.from({ length: n }, (_, k) => {
    const d = Buffer.concat([pkt.subarray(0, hl), pkt.subarray(hl + k * gso, Math.min(pkt.length, hl + (k + 1) * gso))]);
    d.writeUInt16BE(d.length, 2);
    d.writeUInt16BE((pkt.readUInt16BE(4) + k) & 0xffff, 4);
    writeIpv4HeaderChecksum(d, 0);
    d.writeUInt16BE(d.length - hl + 8, hl - 4);
    d.writeUInt16BE(udpChecksum(d), hl - 2);
    return Buffer.concat([ENCAP, d]);
  });
}

/** A UDP super-packet as a TUN read with TUN_F_USO4 hands it over: one IP and UDP header for
 *  the whole, the UDP checksum field holding the pseudo-header sum (NEEDS_CSUM). */
function udpSuper(o: { payload: Buffer; src?: string; dst?: string; sport?: number; dport?: number; id?: number; ttl?: number; tos?: number; ipOptions?: Buffer }): Buffer {
  const opts = o.ipOptions ?? Buffer.alloc(0);
  const ihl = 20 + opts.length;
  const pkt = Buffer.alloc(ihl + 8 + o.payload.length);
  ipv4(o.src ?? '10.244.100.10', o.dst ?? '10.244.1.2', 17, Buffer.alloc(0), { id: o.id ?? 0x4242, ttl: o.ttl ?? 64 }).copy(pkt, 0, 0, 20);
  opts.copy(pkt, 20);
  pkt[0] = 0x40 | (ihl / 4);
  pkt[1] = o.tos ?? 0;
  pkt.writeUInt16BE(pkt.length, 2);
  writeIpv4HeaderChecksum(pkt, 0);
  pkt.writeUInt16BE(o.sport ?? 4433, ihl);
  pkt.writeUInt16BE(o.dport ?? 6000, ihl + 2);
  pkt.writeUInt16BE((8 + o.payload.length) & 0xffff, ihl + 4);
  o.payload.copy(pkt, ihl + 8);
  let p = onesSum(pkt, 12, 8) + 17 + pkt.length - ihl;
  while (p > 0xffff) p = (p & 0xffff) + (p >>> 16);
  pkt.writeUInt16BE(p, ihl + 6);
  return pkt;
}

function usoHeader(pkt: Buffer, gso: number) {
  const ihl = (pkt[0] & 0x0f) * 4;
  return { flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_UDP_L4, hdrLen: ihl + 8, gsoSize: gso, csumStart: ihl, csumOffset: 6 };
}

describe('UDP super-packets read from the device (_tsoSegment, GSO_UDP_L4)', () => {
  it('cuts one into datagrams of gso_size bytes, the last one shorter, as the kernel\'s UDP GSO would', () => {
    const pkt = udpSuper({ payload: bytes(10 * 1200 + 500, 3) });
    const got = segment(pkt, usoHeader(pkt, 1200))!;
    expect(got).toHaveLength(11);
    expect(got.map((d) => d.length)).toEqual([...Array(10).fill(ENCAP.length + 28 + 1200), ENCAP.length + 28 + 500]);
    got.forEach((d, k) => {
      const ipPart = d.subarray(ENCAP.length);
      expect(d.subarray(0, ENCAP.length).equals(ENCAP)).toBe(true);
      expect(ipChecksumOk(ipPart)).toBe(true);
      expect(ipPart.readUInt16BE(4)).toBe(0x4242 + k);
      expect(ipPart.readUInt16BE(24)).toBe(ipPart.length - 20);
      expect(ipPart.readUInt16BE(26)).toBe(udpChecksum(ipPart));
    });
    expect(Buffer.concat(got.map((d) => d.subarray(ENCAP.length + 28))).equals(pkt.subarray(28))).toBe(true);
    expect(got).toEqual(referenceDatagrams(pkt, 1200));
  });

  it('gives back the datagrams the device write joined (_groCoalesce, then this cut)', () => {
    const pkts = datagrams([1000, 1000, 1000, 1000, 1000, 1000, 700]);
    const w = coalesceUdp(pkts);
    expect(w).toHaveLength(1);
    expect(w[0].vnet.gsoType).toBe(VNET_GSO_UDP_L4);
    const back = segment(w[0].pkt, w[0].vnet)!.map((d) => d.subarray(ENCAP.length));
    expect(back.map((d) => d.toString('hex'))).toEqual(pkts.map((d) => d.toString('hex')));
  });

  it('counts what it cut in usoPackets and usoSegments, apart from TCP\'s', () => {
    const before = native.offloadStats();
    const pkt = udpSuper({ payload: bytes(3000) });
    expect(segment(pkt, usoHeader(pkt, 1400))).toHaveLength(3);
    const after = native.offloadStats();
    expect([after.usoPackets - before.usoPackets, after.usoSegments - before.usoSegments]).toEqual([1, 3]);
    expect([after.tsoPackets, after.tsoSegments]).toEqual([before.tsoPackets, before.tsoSegments]);
  });

  it('refuses metadata it cannot honour instead of sending garbage', () => {
    const pkt = udpSuper({ payload: bytes(3000) });
    expect(segment(pkt, { ...usoHeader(pkt, 1400), gsoSize: 0 })).toBeNull();
    const tcpPkt = tcpPacket({ seq: 1, payload: bytes(3000) });
    expect(segment(tcpPkt, usoHeader(pkt, 1400))).toBeNull(); // USO on a TCP packet
    expect(segment(pkt, tsoHeader(tcpPkt, 1400))).toBeNull(); // TSO on a UDP packet
    const frag = Buffer.from(pkt);
    frag.writeUInt16BE(0x2000, 6); // MF: a fragment is no super-packet
    writeIpv4HeaderChecksum(frag, 0);
    expect(segment(frag, usoHeader(frag, 1400))).toBeNull();
    const short = Buffer.from(pkt);
    short.writeUInt16BE(pkt.length - 1, 2); // total length does not match
    expect(segment(short, usoHeader(pkt, 1400))).toBeNull();
    const stub = udpSuper({ payload: Buffer.alloc(0) }).subarray(0, 24); // no room for the UDP header
    stub.writeUInt16BE(24, 2);
    expect(segment(stub, usoHeader(stub, 1400))).toBeNull();
  });

  it('property: any payload size, gso_size and header gives the reference datagrams', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 65535 - 28 - 8 }),
        fc.integer({ min: 1, max: 8960 }),
        // Every header field tso.c sums ahead (uso_prepare) or per datagram: carries included.
        fc.record({ ...HEADER_FIELDS, tos: fc.integer({ min: 0, max: 255 }) }),
        (size, gso, h) => {
          const pkt = udpSuper({ ...h, payload: bytes(Math.min(size, 65535 - 36 - 8), size + 1) });
          // 4 MB of output room holds 4096 datagrams; a tiny gso_size on a big packet needs more.
          const want = referenceDatagrams(pkt, gso);
          const got = segment(pkt, usoHeader(pkt, gso));
          if (want.length > 4096) {
            expect(got).toBeNull();
            return;
          }
          expect(got).not.toBeNull();
          expect(got!.length).toBe(want.length);
          for (let i = 0; i < want.length; i++) if (!got![i].equals(want[i])) expect.fail(`datagram ${i} differs`);
        },
      ),
      { numRuns: Number(process.env.VXEDGE_PROPERTY_RUNS ?? 300) },
    );
  });
});
