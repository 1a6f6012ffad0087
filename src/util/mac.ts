// Ethernet MAC addresses. Config and logs use the lower-case colon form; the
// data plane writes the 6 bytes straight into a frame's headroom, so
// macToBytes() can fill a caller's buffer instead of allocating.

import { show } from './show.js';

import { randomBytes } from 'node:crypto';

const MAC_RE = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$/i;
const EXPECTED = '(expected aa:bb:cc:dd:ee:ff)';


/**
 * Normalises a VTEP MAC to "aa:bb:cc:dd:ee:ff". A VTEP MAC is the inner
 * destination of unicast frames, so multicast and all-zero values are refused.
 */
export function parseMac(s: string): string {
  if (typeof s !== 'string' || !MAC_RE.test(s)) throw new Error(`${show(s)} is not a MAC address ${EXPECTED}`);
  const mac = s.toLowerCase().replaceAll('-', ':');
  if (parseInt(mac.slice(0, 2), 16) & 0x01) {
    throw new Error(`${show(s)} is a multicast MAC; a VTEP MAC must be unicast (first octet even, e.g. 0e:..)`);
  }
  if (mac === '00:00:00:00:00:00') throw new Error(`${show(s)} is the all-zero MAC; use a real VTEP MAC`);
  return mac;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** Writes the 6 bytes of a MAC ("aa:bb:.." or "aa-bb-..") at out[offset]. */
export function macToBytes(s: string, out?: Buffer, offset = 0): Buffer {
  if (typeof s !== 'string' || s.length !== 17) throw new Error(`${show(s)} is not a MAC address ${EXPECTED}`);
  const buf = out ?? Buffer.alloc(6);
  if (offset < 0 || offset + 6 > buf.length) throw new Error(`no room for a MAC at offset ${offset} of ${buf.length}`);
  for (let i = 0; i < 6; i++) {
    const hi = hexValue(s.charCodeAt(i * 3));
    const lo = hexValue(s.charCodeAt(i * 3 + 1));
    const sep = i < 5 ? s.charCodeAt(i * 3 + 2) : 0x3a;
    if (hi < 0 || lo < 0 || (sep !== 0x3a && sep !== 0x2d)) {
      throw new Error(`${show(s)} is not a MAC address ${EXPECTED}`);
    }
    buf[offset + i] = (hi << 4) | lo;
  }
  return buf;
}

/** The 6 bytes at buf[offset] as "aa:bb:cc:dd:ee:ff". */
export function formatMac(buf: Uint8Array, offset = 0): string {
  let s = '';
  for (let i = 0; i < 6; i++) {
    if (i > 0) s += ':';
    s += (buf[offset + i] ?? 0).toString(16).padStart(2, '0');
  }
  return s;
}

/** A random locally administered unicast MAC, made the way flannel makes its VtepMAC. */
export function randomLocalMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return formatMac(b);
}
