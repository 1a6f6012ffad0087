// TCP MSS clamping for SYN and SYN-ACK segments crossing the tunnel. AWS nodes and
// their pods run 9001/8951-byte MTUs while the internet path carries 1500, and the
// outer packets have DF clear, so without clamping a pod's full-sized segments are
// fragmented on the way or lost to a PMTU black hole
// (docs/dataplane.md "MTU and MSS clamping"). The option is rewritten in place and the TCP
// checksum updated incrementally (RFC 1624, eqn. 3), so the segment is neither copied nor
// re-summed.

import { IPPROTO_TCP } from './ipv4.js';

const TCP_FLAG_SYN = 0x02;
const TCPOPT_EOL = 0;
const TCPOPT_NOP = 1;
const TCPOPT_MSS = 2;

/**
 * Lowers the MSS option of a TCP SYN in the IPv4 packet at `off` (`len` bytes,
 * already validated by ipv4PacketLength) to `maxMss`. Returns the MSS that was
 * replaced, or 0 when nothing changed (not TCP, not a SYN, a fragment, no or
 * smaller MSS, malformed options).
 *
 * `partialCsum`: the TCP checksum field holds only the pseudo-header sum, to be completed
 * over the whole segment later (a device read with VIRTIO_NET_HDR_F_NEEDS_CSUM), so the
 * option is rewritten without touching it.
 */
export function clampTcpMss(buf: Buffer, off: number, len: number, maxMss: number, partialCsum = false): number {
  if (buf[off + 9] !== IPPROTO_TCP) return 0;
  // Only the first fragment carries the TCP header; MF with offset 0 is too risky to edit.
  if (((buf[off + 6] << 8) | buf[off + 7]) & 0x3fff) return 0;
  const ihl = (buf[off] & 0x0f) << 2;
  const tcp = off + ihl;
  const end = off + len;
  if (tcp + 20 > end) return 0;
  if ((buf[tcp + 13] & TCP_FLAG_SYN) === 0) return 0;
  const dataOff = (buf[tcp + 12] >>> 4) << 2;
  if (dataOff < 20 || tcp + dataOff > end) return 0;
  let p = tcp + 20;
  const optEnd = tcp + dataOff;
  while (p < optEnd) {
    const kind = buf[p];
    if (kind === TCPOPT_EOL) return 0;
    if (kind === TCPOPT_NOP) {
      p++;
      continue;
    }
    if (p + 1 >= optEnd) return 0;
    const olen = buf[p + 1];
    if (olen < 2 || p + olen > optEnd) return 0;
    if (kind === TCPOPT_MSS) {
      if (olen !== 4) return 0;
      const old = (buf[p + 2] << 8) | buf[p + 3];
      if (old <= maxMss) return 0;
      if (partialCsum) {
        buf[p + 2] = maxMss >>> 8;
        buf[p + 3] = maxMss & 0xff;
      } else {
        rewrite16(buf, tcp, p + 2, maxMss, tcp + 16);
      }
      return old;
    }
    p += olen;
  }
  return 0;
}

/**
 * Replaces the 16-bit value at `at` (which may sit at an odd offset from the start of
 * the checksummed region `base`) and patches the checksum at `csumAt`. Also used for the
 * IPv4 header's ECN field (proto/ecn.ts).
 */
export function rewrite16(buf: Buffer, base: number, at: number, value: number, csumAt: number): void {
  // Work on the aligned 16-bit words that cover the two bytes: one word when aligned, two otherwise.
  const first = at - ((at - base) & 1);
  const words = first === at ? 1 : 2;
  let oldSum = 0;
  for (let i = 0; i < words; i++) oldSum += (buf[first + 2 * i] << 8) | buf[first + 2 * i + 1];
  buf[at] = value >>> 8;
  buf[at + 1] = value & 0xff;
  let newSum = 0;
  for (let i = 0; i < words; i++) newSum += (buf[first + 2 * i] << 8) | buf[first + 2 * i + 1];
  // HC' = ~(~HC + ~m + m'), with m and m' the sums over the changed words.
  const hc = (buf[csumAt] << 8) | buf[csumAt + 1];
  const sum = fold((~hc & 0xffff) + (~fold(oldSum) & 0xffff) + fold(newSum));
  const c = ~sum & 0xffff;
  buf[csumAt] = c >>> 8;
  buf[csumAt + 1] = c & 0xff;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}
