// Builders for test packets: real, checksummed IPv4/ICMP/TCP/UDP, so the codecs are
// exercised on what a kernel would produce.
import { internetChecksum, onesSum, foldChecksum, writeIpv4HeaderChecksum } from '../../src/proto/ipv4.js';

import { ipToInt } from '../../src/util/ipv4.js';

export const ip = ipToInt;

export function ipv4(src: string, dst: string, proto: number, payload: Buffer, opts: { ttl?: number; id?: number; frag?: number } = {}): Buffer {
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(opts.id ?? 0x1234, 4);
  b.writeUInt16BE(opts.frag ?? 0x4000, 6);
  b[8] = opts.ttl ?? 64;
  b[9] = proto;
  b.writeUInt32BE(ip(src), 12);
  b.writeUInt32BE(ip(dst), 16);
  payload.copy(b, 20);
  writeIpv4HeaderChecksum(b, 0);
  return b;
}

export function icmpEcho(src: string, dst: string, id = 1, seq = 1, data = Buffer.alloc(56, 0xab), type = 8): Buffer {
  const m = Buffer.alloc(8 + data.length);
  m[0] = type;
  m.writeUInt16BE(id, 4);
  m.writeUInt16BE(seq, 6);
  data.copy(m, 8);
  m.writeUInt16BE(internetChecksum(m, 0, m.length), 2);
  return ipv4(src, dst, 1, m);
}

/** A TCP segment with the given options bytes (already padded to a multiple of 4); `o` sets the source port, sequence number and IP ID. */
export function tcp(src: string, dst: string, flags: number, options: Buffer = Buffer.alloc(0), payload = Buffer.alloc(0), o: { sport?: number; seq?: number; id?: number } = {}): Buffer {
  const hl = 20 + options.length;
  const t = Buffer.alloc(hl + payload.length);
  t.writeUInt16BE(o.sport ?? 40000, 0);
  t.writeUInt16BE(5201, 2);
  t.writeUInt32BE((o.seq ?? 1000) >>> 0, 4);
  t[12] = (hl / 4) << 4;
  t[13] = flags;
  t.writeUInt16BE(64240, 14);
  options.copy(t, 20);
  payload.copy(t, hl);
  const pkt = ipv4(src, dst, 6, t, { id: o.id });
  fixTcpChecksum(pkt);
  return pkt;
}

export function tcpChecksumOk(pkt: Buffer): boolean {
  const ihl = (pkt[0] & 0x0f) * 4;
  const len = pkt.readUInt16BE(2) - ihl;
  return foldChecksum(onesSum(pkt, ihl, len, pseudo(pkt, len))) === 0;
}

function pseudo(pkt: Buffer, l4len: number): number {
  return onesSum(pkt, 12, 8) + pkt[9] + l4len;
}

export function fixTcpChecksum(pkt: Buffer): void {
  const ihl = (pkt[0] & 0x0f) * 4;
  const len = pkt.readUInt16BE(2) - ihl;
  pkt.writeUInt16BE(0, ihl + 16);
  pkt.writeUInt16BE(foldChecksum(onesSum(pkt, ihl, len, pseudo(pkt, len))), ihl + 16);
}

/** The echo reply a kernel sends for an IPv4 echo request (20-byte header): addresses swapped, type 0. */
export function echoReplyTo(req: Buffer): Buffer {
  const r = Buffer.from(req);
  r.writeUInt32BE(req.readUInt32BE(16), 12);
  r.writeUInt32BE(req.readUInt32BE(12), 16);
  r[20] = 0;
  r.writeUInt16BE(0, 22);
  r.writeUInt16BE(internetChecksum(r, 20, r.length - 20), 22);
  return r;
}

export function mac(s: string): Buffer {
  return Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
}

export function vxlanFrame(vni: number, dstMac: string, srcMac: string, inner: Buffer, etherType = 0x0800): Buffer {
  const f = Buffer.alloc(8 + 14 + inner.length);
  f[0] = 0x08;
  f[4] = (vni >> 16) & 0xff;
  f[5] = (vni >> 8) & 0xff;
  f[6] = vni & 0xff;
  mac(dstMac).copy(f, 8);
  mac(srcMac).copy(f, 14);
  f.writeUInt16BE(etherType, 20);
  inner.copy(f, 22);
  return f;
}
