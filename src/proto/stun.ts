// STUN Binding messages (RFC 8489), only what endpoint discovery needs: we write
// Binding requests and read the responses that come back on the tunnel socket.
//
//    0                   1                   2                   3
//   |0 0|     Message Type (14)     |       Message Length (16)     |  length excludes the
//   |                 Magic Cookie = 0x2112A442                     |  20-byte header and is
//   |                 Transaction ID (96 bits)                      |  a multiple of 4
//   | Attribute Type (16)           | Attribute Length (16)         |  value padded to 4 bytes
//
// Every datagram is untrusted: the parser checks each length against the datagram
// before it reads, never throws, and returns null for anything malformed. Address
// attributes are taken in order of preference: XOR-MAPPED-ADDRESS (0x0020), the
// pre-standard 0x8020 some servers still send, then the legacy MAPPED-ADDRESS
// (0x0001). IPv6 mappings are decoded but are of no use to an IPv4 tunnel.
// MESSAGE-INTEGRITY is not verified (Binding for discovery needs no credentials),
// and attributes after it are ignored except FINGERPRINT, as §14.5 says.

export const STUN_HEADER_LEN = 20;
export const STUN_MAGIC_COOKIE = 0x2112a442;
export const STUN_TXID_LEN = 12;
/** The STUN default port (§14.2 of RFC 8489, "stun" in the IANA registry). */
export const STUN_DEFAULT_PORT = 3478;

export const STUN_BINDING_REQUEST = 0x0001;
export const STUN_BINDING_SUCCESS = 0x0101;
export const STUN_BINDING_ERROR = 0x0111;

const ATTR_MAPPED_ADDRESS = 0x0001;
const ATTR_MESSAGE_INTEGRITY = 0x0008;
const ATTR_ERROR_CODE = 0x0009;
const ATTR_MESSAGE_INTEGRITY_SHA256 = 0x001c;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_XOR_MAPPED_ADDRESS_OLD = 0x8020;
const ATTR_SOFTWARE = 0x8022;
const ATTR_FINGERPRINT = 0x8028;
const FINGERPRINT_XOR = 0x5354554e;
const FINGERPRINT_ATTR_LEN = 8;
/** SOFTWARE must be under 128 characters (§14.14); we keep to 127 bytes. */
const MAX_SOFTWARE_BYTES = 127;

export interface StunAddress {
  family: 4 | 6;
  address: string;
  port: number;
}

export interface StunMessage {
  /** Message type: method and class, e.g. 0x0101 Binding success response. */
  type: number;
  /** Offset of the 12-byte transaction id in the parsed buffer (no copy). */
  txidOffset: number;
  /** XOR-MAPPED-ADDRESS (0x0020, else 0x8020). */
  xorMapped?: StunAddress;
  /** MAPPED-ADDRESS (0x0001). */
  mapped?: StunAddress;
  /** ERROR-CODE as a number (class * 100 + number), e.g. 400. */
  errorCode?: number;
  errorReason?: string;
  software?: string;
  /** MESSAGE-INTEGRITY(-SHA256) is present (not verified). */
  integrity?: boolean;
  /** Present only when the message carries FINGERPRINT: whether its CRC-32 matches. */
  fingerprintOk?: boolean;
}

// --------------------------------------------------------------------- CRC-32

let table: Uint32Array | null = null;

/**
 * CRC-32 (IEEE 802.3, as zlib) of buf[start, end), without zlib: a STUN exchange is a few
 * dozen bytes a minute, and loading node:zlib for it cost the gateway 1.6 MB of memory (its
 * module and binding; docs/memory.md). Checked against zlib.crc32 in the tests.
 */
export function crc32(buf: Uint8Array, start = 0, end = buf.length): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// --------------------------------------------------------------------- writing

/** Bytes a Binding request with these options takes. */
export function bindingRequestLength(opts: { software?: string; fingerprint?: boolean } = {}): number {
  let n = STUN_HEADER_LEN;
  if (opts.software) n += 4 + pad4(Math.min(Buffer.byteLength(opts.software), MAX_SOFTWARE_BYTES));
  if (opts.fingerprint) n += FINGERPRINT_ATTR_LEN;
  return n;
}

/**
 * Writes a Binding request at buf[off]; returns its length. `txid` must hold 12 bytes
 * (use crypto.randomBytes: the transaction id is what makes a response ours). Throws a
 * RangeError if buf is too short (our own buffer: a bug, not a bad packet).
 */
export function writeBindingRequest(
  buf: Buffer,
  off: number,
  txid: Uint8Array,
  opts: { software?: string; fingerprint?: boolean } = {},
): number {
  if (txid.length !== STUN_TXID_LEN) throw new RangeError(`a STUN transaction id is ${STUN_TXID_LEN} bytes, not ${txid.length}`);
  const total = bindingRequestLength(opts);
  if (off < 0 || off + total > buf.length) throw new RangeError(`a ${total}-byte STUN request does not fit at offset ${off}`);
  buf.writeUInt16BE(STUN_BINDING_REQUEST, off);
  buf.writeUInt16BE(total - STUN_HEADER_LEN, off + 2);
  buf.writeUInt32BE(STUN_MAGIC_COOKIE, off + 4);
  buf.set(txid, off + 8);
  let p = off + STUN_HEADER_LEN;
  if (opts.software) {
    const value = Buffer.from(opts.software, 'utf8');
    const n = Math.min(value.length, MAX_SOFTWARE_BYTES);
    buf.writeUInt16BE(ATTR_SOFTWARE, p);
    buf.writeUInt16BE(n, p + 2);
    value.copy(buf, p + 4, 0, n);
    buf.fill(0, p + 4 + n, p + 4 + pad4(n));
    p += 4 + pad4(n);
  }
  if (opts.fingerprint) {
    // The length field already counts FINGERPRINT, as §14.7 requires before the CRC is taken.
    buf.writeUInt16BE(ATTR_FINGERPRINT, p);
    buf.writeUInt16BE(4, p + 2);
    buf.writeUInt32BE((crc32(buf, off, p) ^ FINGERPRINT_XOR) >>> 0, p + 4);
    p += FINGERPRINT_ATTR_LEN;
  }
  return p - off;
}

// --------------------------------------------------------------------- reading

/**
 * True when buf[off, off+len) has the shape of a STUN message: top two bits zero, the
 * magic cookie, and a length field that is a multiple of 4 and matches the datagram.
 * Cheap and allocation-free: the first filter on the packet path.
 */
export function isStunMessage(buf: Buffer, off: number, len: number): boolean {
  if (len < STUN_HEADER_LEN || off < 0 || off + len > buf.length) return false;
  if ((buf[off] & 0xc0) !== 0) return false;
  if (buf.readUInt32BE(off + 4) !== STUN_MAGIC_COOKIE) return false;
  const msgLen = buf.readUInt16BE(off + 2);
  return (msgLen & 3) === 0 && STUN_HEADER_LEN + msgLen === len;
}

/**
 * Parses one STUN message (any class; the caller checks `type`). Returns null when the
 * datagram is not a well-formed STUN message. Never throws.
 */
export function parseStunResponse(buf: Buffer, off: number, len: number): StunMessage | null {
  if (!isStunMessage(buf, off, len)) return null;
  const msg: StunMessage = { type: buf.readUInt16BE(off) & 0x3fff, txidOffset: off + 8 };
  const end = off + len;
  let xorRank = 0; // 2: from 0x0020, 1: from 0x8020
  let afterIntegrity = false;
  let p = off + STUN_HEADER_LEN;
  while (p < end) {
    if (p + 4 > end) return null;
    const type = buf.readUInt16BE(p);
    const alen = buf.readUInt16BE(p + 2);
    const v = p + 4;
    const next = v + pad4(alen);
    if (next > end) return null;
    if (type === ATTR_FINGERPRINT) {
      if (alen !== 4 || next !== end) return null; // must be the last attribute
      msg.fingerprintOk = ((crc32(buf, off, p) ^ FINGERPRINT_XOR) >>> 0) === buf.readUInt32BE(v);
      break;
    }
    if (!afterIntegrity) {
      switch (type) {
        case ATTR_XOR_MAPPED_ADDRESS:
        case ATTR_XOR_MAPPED_ADDRESS_OLD: {
          const rank = type === ATTR_XOR_MAPPED_ADDRESS ? 2 : 1;
          if (rank > xorRank) {
            const a = readAddress(buf, v, alen, off + 4);
            if (a) {
              msg.xorMapped = a;
              xorRank = rank;
            }
          }
          break;
        }
        case ATTR_MAPPED_ADDRESS:
          if (!msg.mapped) msg.mapped = readAddress(buf, v, alen, -1) ?? undefined;
          break;
        case ATTR_ERROR_CODE:
          if (alen >= 4 && msg.errorCode === undefined) {
            const cls = buf[v + 2] & 0x07;
            const num = buf[v + 3];
            if (cls >= 3 && cls <= 6 && num < 100) {
              msg.errorCode = cls * 100 + num;
              msg.errorReason = buf.toString('utf8', v + 4, v + alen);
            }
          }
          break;
        case ATTR_SOFTWARE:
          if (msg.software === undefined) msg.software = buf.toString('utf8', v, v + alen);
          break;
        case ATTR_MESSAGE_INTEGRITY:
        case ATTR_MESSAGE_INTEGRITY_SHA256:
          msg.integrity = true;
          afterIntegrity = true;
          break;
      }
    }
    p = next;
  }
  return msg;
}

/**
 * The IPv4 mapping to use from a parsed response, in order of preference, or null. An
 * IPv6 mapping is never returned: a tunnel over an IPv4 socket cannot use it.
 */
export function usableMapping(msg: StunMessage): StunAddress | null {
  if (msg.xorMapped?.family === 4) return msg.xorMapped;
  if (msg.mapped?.family === 4) return msg.mapped;
  return null;
}

/** True when buf[a, a+12) and txid are the same transaction id. Allocation-free. */
export function txidEquals(buf: Buffer, a: number, txid: Uint8Array): boolean {
  if (a < 0 || a + STUN_TXID_LEN > buf.length) return false;
  for (let i = 0; i < STUN_TXID_LEN; i++) if (buf[a + i] !== txid[i]) return false;
  return true;
}

/**
 * An address attribute value at buf[v, v+len): `0 | family | port | address`. With
 * xorFrom >= 0 the port and address are XORed with the cookie (and, for IPv6, the
 * transaction id) found at buf[xorFrom]. Null when malformed.
 */
function readAddress(buf: Buffer, v: number, len: number, xorFrom: number): StunAddress | null {
  if (len < 4) return null;
  const family = buf[v + 1];
  const xor = xorFrom >= 0;
  const port = buf.readUInt16BE(v + 2) ^ (xor ? STUN_MAGIC_COOKIE >>> 16 : 0);
  if (family === 0x01) {
    if (len !== 8) return null;
    const a = (buf.readUInt32BE(v + 4) ^ (xor ? STUN_MAGIC_COOKIE : 0)) >>> 0;
    return { family: 4, address: `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`, port };
  }
  if (family === 0x02) {
    if (len !== 20) return null;
    const groups: string[] = [];
    for (let i = 0; i < 16; i += 2) {
      const hi = buf[v + 4 + i] ^ (xor ? buf[xorFrom + i] : 0);
      const lo = buf[v + 5 + i] ^ (xor ? buf[xorFrom + i + 1] : 0);
      groups.push(((hi << 8) | lo).toString(16));
    }
    return { family: 6, address: compressIPv6(groups), port };
  }
  return null;
}

/** RFC 5952 text: the longest run (>= 2) of zero groups becomes "::". */
function compressIPv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}
