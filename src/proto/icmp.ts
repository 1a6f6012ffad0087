// ICMP echo, for keepalive probes sent inside the tunnel from our VTEP address to a
// peer's. A stock flannel node's kernel answers them, which proves the whole round
// trip: our NAT mapping, the node's security group, its FDB/route to us, and back.
import { IPPROTO_ICMP, internetChecksum, writeIpv4HeaderChecksum } from './ipv4.js';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_ECHO_REQUEST = 8;
export const PROBE_PAYLOAD_LEN = 16;
export const PROBE_IP_LEN = 20 + 8 + PROBE_PAYLOAD_LEN;

/**
 * Writes an IPv4 ICMP echo request at `off`: ident/seq identify the probe, `token`
 * (8 random bytes) makes the reply unforgeable by an off-path sender. `totalLen`
 * (default the minimum) pads it, for path MTU probes. Returns its length.
 */
export function writeEchoRequest(
  buf: Buffer, off: number, src: number, dst: number, ident: number, seq: number, token: Buffer, totalLen = PROBE_IP_LEN,
): number {
  const len = Math.max(PROBE_IP_LEN, totalLen);
  buf.fill(0, off, off + len);
  buf[off] = 0x45;
  buf.writeUInt16BE(len, off + 2);
  buf.writeUInt16BE(seq, off + 4); // IP id
  buf[off + 6] = 0x40; // DF: a probe must not be fragmented
  buf[off + 8] = 64;
  buf[off + 9] = IPPROTO_ICMP;
  buf.writeUInt32BE(src, off + 12);
  buf.writeUInt32BE(dst, off + 16);
  writeIpv4HeaderChecksum(buf, off);
  const icmp = off + 20;
  buf[icmp] = ICMP_ECHO_REQUEST;
  buf.writeUInt16BE(ident, icmp + 4);
  buf.writeUInt16BE(seq, icmp + 6);
  buf.write('vxedge\0\0', icmp + 8, 'latin1');
  token.copy(buf, icmp + 16, 0, 8);
  buf.writeUInt16BE(internetChecksum(buf, icmp, len - 20), icmp + 2);
  return len;
}

/** The echo reply fields if the IPv4 packet at `off` is one (checksum verified), else null-ish seq -1. */
export function parseEchoReply(buf: Buffer, off: number, len: number, out: { ident: number; seq: number; tokenOff: number }): boolean {
  if (buf[off + 9] !== IPPROTO_ICMP) return false;
  const ihl = (buf[off] & 0x0f) << 2;
  const icmp = off + ihl;
  const icmpLen = len - ihl;
  if (icmpLen < 8 + PROBE_PAYLOAD_LEN || buf[icmp] !== ICMP_ECHO_REPLY || buf[icmp + 1] !== 0) return false;
  if (internetChecksum(buf, icmp, icmpLen) !== 0) return false;
  out.ident = buf.readUInt16BE(icmp + 4);
  out.seq = buf.readUInt16BE(icmp + 6);
  out.tokenOff = icmp + 16;
  return true;
}
