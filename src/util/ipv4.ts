// IPv4 addresses as uint32 numbers and prefixes as Cidr. The data plane calls
// inCidr() per packet, so the numeric helpers never allocate; the parsers walk
// char codes rather than split() for the same reason and because it makes the
// strictness rules (no leading zeros, no spaces, no "+1") explicit.

import { show } from './show.js';

import type { Cidr } from '../config/types.js';

const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Parses a strict dotted quad into a uint32, or returns -1. Never throws. */
function parseIPv4(s: string, end: number): number {
  let value = 0;
  let octets = 0;
  let i = 0;
  while (octets < 4) {
    const start = i;
    let octet = 0;
    while (i < end) {
      const c = s.charCodeAt(i);
      if (c < ZERO || c > NINE) break;
      octet = octet * 10 + (c - ZERO);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || octet > 255) return -1;
    if (digits > 1 && s.charCodeAt(start) === ZERO) return -1; // "01" reads as octal to some tools
    value = value * 256 + octet; // multiply, not <<, keeps the result unsigned
    octets++;
    if (octets < 4) {
      if (i >= end || s.charCodeAt(i) !== DOT) return -1;
      i++;
    }
  }
  return i === end ? value : -1;
}


export function isIPv4(s: string): boolean {
  return typeof s === 'string' && parseIPv4(s, s.length) >= 0;
}

/** "203.0.113.1" -> 0xCB007101 (unsigned). Throws on anything but a strict dotted quad. */
export function ipToInt(s: string): number {
  const n = typeof s === 'string' ? parseIPv4(s, s.length) : -1;
  if (n < 0) throw new Error(`${show(s)} is not an IPv4 address (expected a.b.c.d, e.g. 192.0.2.10)`);
  return n;
}

/** Accepts int32 too, because `a & b` in JS yields a signed result. */
export function intToIp(n: number): string {
  if (!Number.isInteger(n) || n < -0x80000000 || n > 0xffffffff) {
    throw new Error(`${show(n)} is not a 32-bit IPv4 address value`);
  }
  const u = n >>> 0;
  return `${u >>> 24}.${(u >>> 16) & 255}.${(u >>> 8) & 255}.${u & 255}`;
}

export function prefixMask(prefixLen: number): number {
  // `<< 32` is `<< 0` in JS, hence the special case.
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** "10.244.1.0/24" -> Cidr. The prefix must be explicit and host bits must be zero. */
export function parseCidr(s: string): Cidr {
  if (typeof s !== 'string') throw new Error(`${show(s)} is not a CIDR (expected a string like 10.244.0.0/16)`);
  const slash = s.indexOf('/');
  if (slash < 0) {
    const hint = isIPv4(s) ? `; add the prefix length, e.g. ${s}/24` : ' (expected e.g. 10.244.0.0/16)';
    throw new Error(`${show(s)} is not a CIDR${hint}`);
  }
  const ip = parseIPv4(s, slash);
  const lenText = s.slice(slash + 1);
  const lenOk = /^(0|[1-9][0-9]?)$/.test(lenText) && Number(lenText) <= 32;
  if (ip < 0 || !lenOk) throw new Error(`${show(s)} is not a CIDR (expected a.b.c.d/len with len 0..32)`);
  const prefixLen = Number(lenText);
  const mask = prefixMask(prefixLen);
  const network = (ip & mask) >>> 0;
  if (network !== ip) {
    const fixed = `${intToIp(network)}/${prefixLen}`;
    throw new Error(`${s} has host bits set; did you mean ${fixed}?`);
  }
  return { text: `${intToIp(network)}/${prefixLen}`, network, prefixLen, mask };
}

export function inCidr(ip: number, c: Cidr): boolean {
  return (ip & c.mask) >>> 0 === c.network;
}

/** True when every address of `inner` is in `outer` (equal prefixes count). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return inner.prefixLen >= outer.prefixLen && (inner.network & outer.mask) >>> 0 === outer.network;
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  // Two prefixes overlap exactly when the shorter one contains the longer.
  return cidrContains(a, b) || cidrContains(b, a);
}

/** Addresses that can never be a peer's or our public endpoint: 0/8, 127/8, 224/4 and above. */
export function isUnicastIPv4(ip: number): boolean {
  const first = ip >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

// Special-purpose ranges that are not globally reachable (IANA IPv4 Special-Purpose Address
// Registry, RFC 6890): a VXLAN endpoint in one of them cannot be reached across the internet.
// The documentation ranges 192.0.2/24, 198.51.100/24 and 203.0.113/24 (RFC 5737) are missing
// on purpose: our namespace lab uses them as its "public internet", and they never appear on
// a real network, so counting them as routable costs nothing and keeps the lab working.
const NOT_GLOBAL: { cidr: Cidr; kind: string }[] = ([
  ['0.0.0.0/8', '"this network", 0.0.0.0/8'],
  ['10.0.0.0/8', 'private, RFC 1918'],
  ['100.64.0.0/10', 'carrier-grade NAT, 100.64.0.0/10'],
  ['127.0.0.0/8', 'loopback, 127.0.0.0/8'],
  ['169.254.0.0/16', 'link-local, 169.254.0.0/16'],
  ['172.16.0.0/12', 'private, RFC 1918'],
  ['192.0.0.0/24', 'IETF protocol assignments, 192.0.0.0/24'],
  ['192.168.0.0/16', 'private, RFC 1918'],
  ['198.18.0.0/15', 'benchmarking, 198.18.0.0/15'],
  ['224.0.0.0/4', 'multicast, 224.0.0.0/4'],
  ['240.0.0.0/4', 'reserved, 240.0.0.0/4'],
] as const).map(([c, kind]) => ({ cidr: parseCidr(c), kind }));

/** True for an IPv4 address (uint32) outside every non-global special-purpose range. */
export function isGloballyRoutable(ip: number): boolean {
  for (const { cidr: c } of NOT_GLOBAL) if (((ip & c.mask) >>> 0) === c.network) return false;
  return true;
}

/** What kind of non-global address a dotted quad is ("private, RFC 1918", "carrier-grade NAT,
 *  100.64.0.0/10", …), for messages; "public" when it is globally routable. */
export function nonGlobalKind(s: string): string {
  const ip = ipToInt(s);
  for (const { cidr: c, kind } of NOT_GLOBAL) if (((ip & c.mask) >>> 0) === c.network) return kind;
  return 'public';
}
