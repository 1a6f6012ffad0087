// Just enough IPv4 to route, filter and clamp: every field read here comes from
// the network or from local hosts and is checked against the bytes we actually have.

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

/**
 * Length of a plausible IPv4 packet at `off` with `avail` bytes, or -1: version 4,
 * header length 20..60 within the packet, total length within what arrived. Trailing
 * bytes beyond the total length (Ethernet padding) are allowed; the caller trims them.
 */
export function ipv4PacketLength(buf: Buffer, off: number, avail: number): number {
  if (avail < 20) return -1;
  const vihl = buf[off];
  if (vihl >>> 4 !== 4) return -1;
  const ihl = (vihl & 0x0f) << 2;
  if (ihl < 20) return -1;
  const total = (buf[off + 2] << 8) | buf[off + 3];
  if (total < ihl || total > avail) return -1;
  return total;
}

/**
 * The source address as a signed 32-bit number: the address's bits, `>>> 0` for the
 * unsigned value. Signed because V8 keeps an int32 unboxed through any call on 64-bit
 * machines, where an address above 128.0.0.0 as an unsigned number is boxed (allocated)
 * each time it is passed to a function that was not inlined: these run once per packet.
 */
export function ipv4Src(buf: Uint8Array, off: number): number {
  return (buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15];
}

/** The destination address as a signed 32-bit number (see ipv4Src). */
export function ipv4Dst(buf: Uint8Array, off: number): number {
  return (buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19];
}

/** One's-complement sum of 16-bit big-endian words over [off, off+len), not folded. */
export function onesSum(buf: Buffer, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (len & 1) sum += buf[off + len - 1] << 8;
  return sum;
}

export function foldChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Internet checksum (RFC 1071) of a byte range. */
export function internetChecksum(buf: Buffer, off: number, len: number): number {
  return foldChecksum(onesSum(buf, off, len));
}

/** Fills in the IPv4 header checksum of the header at `off`. */
export function writeIpv4HeaderChecksum(buf: Buffer, off: number): void {
  const ihl = (buf[off] & 0x0f) << 2;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const c = internetChecksum(buf, off, ihl);
  buf[off + 10] = c >>> 8;
  buf[off + 11] = c & 0xff;
}
