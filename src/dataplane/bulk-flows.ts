// Bulk flows: which TCP connections are moving data to the peers right now, so that the
// outside path's look between the device's batches (OutsidePath.expedite) can tell their
// ACKs, which should reach the site in the groups bulk TCP wants, from any other TCP (the
// answer of an interactive session), which should not wait for the drain to end.
//
// The inside path marks the flow of every TCP packet it reads that carries bulk (a
// super-packet, or at least half the MTU), reversed: the ACKs come back with source and
// destination swapped. The outside path asks about each TCP packet it holds or lets go,
// and pump() clears the marks once it has written everything held: the next drain marks
// what is still moving. A fragment has no ports (a later one's first bytes are payload), so
// every fragment is asked about as the flow of its two addresses alone, which each bulk flow
// marks too: all of a datagram gets one answer, and a bulk flow's fragments wait with it. No
// flow is reordered whatever the marks say: each look decides again for everything it
// holds, in order, and gives every packet of one flow the same answer.
//
// A Bloom filter of two 32-bit words, one bit in each per flow: "not marked" is certain,
// "marked" may be wrong now and then (with the few bulk flows of a drain, rarely), and a
// wrong "marked" only holds a packet as every TCP packet was held before.

import { IPPROTO_TCP } from '../proto/ipv4.js';

export class BulkFlows {
  private lo = 0;
  private hi = 0;

  /** Marks the reverse of the flow of the TCP/IPv4 packet at `ip` (the validated header). */
  markReverse(buf: Buffer, ip: number, ipLen: number): void {
    const l4 = ip + ((buf[ip] & 0x0f) << 2);
    const src = readAddr(buf, ip + 16);
    const dst = readAddr(buf, ip + 12);
    if (hasPorts(buf, ip, ipLen)) this.mark(flowHash(src, dst, (buf[l4 + 2] << 24) | (buf[l4 + 3] << 16) | (buf[l4] << 8) | buf[l4 + 1]));
    // The pair of addresses too: the flow's fragments (no ports, hashed without) wait with its
    // segments instead of passing them.
    this.mark(flowHash(src, dst, 0));
  }

  private mark(h: number): void {
    this.lo |= 1 << (h & 31);
    this.hi |= 1 << ((h >>> 5) & 31);
  }

  /** Whether the flow of the TCP/IPv4 packet at `ip` (`ipLen` bytes) may be marked (false: it is not). */
  has(buf: Buffer, ip: number, ipLen: number): boolean {
    if (this.lo === 0) return false; // nothing marked: no hash for each ACK of a drain without bulk
    const l4 = ip + ((buf[ip] & 0x0f) << 2);
    const ports = hasPorts(buf, ip, ipLen) ? (buf[l4] << 24) | (buf[l4 + 1] << 16) | (buf[l4 + 2] << 8) | buf[l4 + 3] : 0;
    const h = flowHash(readAddr(buf, ip + 12), readAddr(buf, ip + 16), ports);
    return (this.lo & (1 << (h & 31))) !== 0 && (this.hi & (1 << ((h >>> 5) & 31))) !== 0;
  }

  clear(): void {
    this.lo = 0;
    this.hi = 0;
  }
}

/** Whether the IPv4 packet at `ip`, `ipLen` bytes long, is TCP carrying bulk data. */
export function isBulkTcp(buf: Buffer, ip: number, ipLen: number, mtu: number): boolean {
  return buf[ip + 9] === IPPROTO_TCP && ipLen >= mtu >>> 1;
}

/** Whether the IPv4 packet at `ip` carries its ports: not a fragment (a later fragment's first
 *  bytes are payload, and the first fragment must hash as the rest do, so that all of a
 *  datagram gets one answer; native/tso.c flow_bits does the same) and 4 bytes of them there. */
function hasPorts(buf: Buffer, ip: number, ipLen: number): boolean {
  return (((buf[ip + 6] << 8) | buf[ip + 7]) & 0x3fff) === 0 && ((buf[ip] & 0x0f) << 2) + 4 <= ipLen;
}

/** An address as a signed 32-bit integer: no heap number for V8 (see ipv4Src). */
function readAddr(buf: Buffer, off: number): number {
  return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
}

/** Source, destination, ports (source in the high half): a 32-bit mix (Math.imul keeps it integer). */
function flowHash(src: number, dst: number, ports: number): number {
  let h = Math.imul(src, 0x9e3779b1) ^ dst;
  h = Math.imul(h ^ ports, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return h ^ (h >>> 12);
}
