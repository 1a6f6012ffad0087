// chronyd's answer to "tracking" (what `chronyc tracking` prints), over its command port:
// whether chrony keeps this clock synchronised, where the kernel will not say (the unit's
// ProtectClock=yes refuses adjtimex). chronyd answers monitoring requests from localhost on
// UDP 323 with no key (its default `cmdallow`), and the unit lets the gateway send UDP.
//
// The wire format is chrony's candm.h, protocol version 6 (chrony 2.2 and later, every
// Debian and Raspberry Pi OS release that has chrony 4): all fields big-endian; a request
// is padded to the length of its reply (chronyd drops a shorter one, so that it never
// answers with more than it was sent); chrony's 32-bit "Float" is a 7-bit exponent and a
// 25-bit coefficient, both signed (util.c UTI_FloatNetworkToHost).
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';

export const CHRONY_CMD_PORT = 323;
const PROTO_VERSION = 6;
const PKT_TYPE_CMD_REQUEST = 1;
const PKT_TYPE_CMD_REPLY = 2;
const REQ_TRACKING = 33;
const RPY_TRACKING = 5;
/** Reply header (28 bytes) + the tracking reply's data (76). */
export const TRACKING_REPLY_LENGTH = 104;
/** chrony's leap status when it is not synchronised (LEAP_Unsynchronised). */
export const LEAP_UNSYNCHRONISED = 3;
const IPADDR_INET4 = 1;
const IPADDR_INET6 = 2;

/** chronyd's status codes that say something to an operator (candm.h STT_*). */
const STATUS: Record<number, string> = {
  1: 'it failed',
  2: 'not allowed from here (chrony.conf cmdallow/cmddeny)',
  3: 'it did not take the request',
  18: 'it speaks another protocol version',
  19: 'it found the request of the wrong length',
};

export interface ChronyTracking {
  /** Synchronised to a source (leap status other than "not synchronised"). */
  synchronised: boolean;
  stratum: number;
  /** The reference: a server's address, else its ID as chronyc shows it (a refclock's name, "7F7F0101" for local). */
  reference: string;
  /** When the reference last updated the clock, ms since the epoch; null: never. */
  refTimeMs: number | null;
  /** How far the system clock is from chrony's estimate of true time, seconds (positive: fast). */
  offsetS: number;
  /** Leap status: 0 normal, 1 insert second, 2 delete second, 3 not synchronised. */
  leap: number;
}

/** The tracking request with `sequence`, padded to the reply's length. */
export function trackingRequest(sequence: number): Buffer {
  const b = Buffer.alloc(TRACKING_REPLY_LENGTH);
  b[0] = PROTO_VERSION;
  b[1] = PKT_TYPE_CMD_REQUEST;
  b.writeUInt16BE(REQ_TRACKING, 4);
  b.writeUInt32BE(sequence >>> 0, 8);
  return b;
}

/** chrony's 32-bit float: a signed 7-bit exponent over a signed 25-bit coefficient. */
export function chronyFloat(x: number): number {
  let exp = x >>> 25;
  if (exp >= 64) exp -= 128;
  let coef = x & 0x1ffffff;
  if (coef >= 0x1000000) coef -= 0x2000000;
  return coef * 2 ** (exp - 25);
}

function referenceOf(b: Buffer): string {
  const family = b.readUInt16BE(48);
  if (family === IPADDR_INET4) return Array.from(b.subarray(32, 36)).join('.');
  if (family === IPADDR_INET6) {
    const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(32 + 2 * i).toString(16));
    return words.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
  }
  // No address: a reference clock's name ("GPS", "PPS") or the local reference, as chronyc shows it.
  const id = b.readUInt32BE(28);
  const ascii = b.subarray(28, 32).toString('latin1').replace(/\0+$/, '');
  return /^[A-Z0-9]{1,4}$/.test(ascii) ? ascii : id.toString(16).toUpperCase().padStart(8, '0');
}

/**
 * What a datagram says to the request with `sequence`: its tracking, chronyd's refusal (in
 * words), or null when it is no reply to that request (ignored). Any datagram can arrive on
 * the socket, so nothing here trusts it (test/unit/chrony.test.ts fuzzes it).
 */
export function parseTrackingReply(b: Buffer, sequence: number): { tracking: ChronyTracking } | { refused: string } | null {
  if (b.length < 28 || b[1] !== PKT_TYPE_CMD_REPLY || b.readUInt16BE(4) !== REQ_TRACKING || b.readUInt32BE(16) !== sequence >>> 0) return null;
  const status = b.readUInt16BE(8);
  if (status !== 0) return { refused: `chronyd refused the request: ${STATUS[status] ?? `status ${status}`}` };
  if (b[0] !== PROTO_VERSION) return { refused: `chronyd speaks protocol version ${b[0]}, not ${PROTO_VERSION}` };
  if (b.readUInt16BE(6) !== RPY_TRACKING || b.length < TRACKING_REPLY_LENGTH) return { refused: 'chronyd answered with another reply than tracking' };
  const leap = b.readUInt16BE(54);
  const sec = b.readUInt32BE(56) * 2 ** 32 + b.readUInt32BE(60);
  const refTimeMs = sec === 0 ? null : sec * 1000 + Math.floor(b.readUInt32BE(64) / 1e6);
  return {
    tracking: {
      synchronised: leap !== LEAP_UNSYNCHRONISED,
      stratum: b.readUInt16BE(52),
      reference: referenceOf(b),
      refTimeMs,
      // current_correction: what chrony would add to the clock, so a clock that is fast has a negative one.
      offsetS: 0 - chronyFloat(b.readUInt32BE(68)),
      leap,
    },
  };
}

export interface AskChronyOptions {
  host?: string;
  port?: number;
  /** How long to wait for the answer (a chronyd that is not there: the port is closed and the kernel says so at once). */
  timeoutMs?: number;
}

/** Asks chronyd for its tracking; rejects with why it could not (no chronyd, refused, no answer). */
export function askChrony(o: AskChronyOptions = {}): Promise<ChronyTracking> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? CHRONY_CMD_PORT;
  const where = `${host}:${port}`;
  const timeoutMs = o.timeoutMs ?? 500;
  const sequence = randomInt(2 ** 31);
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const done = (r: ChronyTracking | Error) => {
      clearTimeout(timer);
      s.close();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const timer = setTimeout(() => done(new Error(`chronyd: no answer on ${where} within ${timeoutMs} ms`)), timeoutMs);
    s.on('error', (e: NodeJS.ErrnoException) => {
      // ECONNREFUSED (the kernel's port unreachable): nothing listens there, so no chronyd runs.
      done(new Error(e.code === 'ECONNREFUSED' ? `chronyd: not running (nothing answers on ${where})` : `chronyd: ${e.message}`));
    });
    s.on('message', (m) => {
      const r = parseTrackingReply(m, sequence);
      if (r && 'tracking' in r) done(r.tracking);
      else if (r) done(new Error(`${r.refused} (${where})`));
    });
    // connect() first, so that the kernel's port-unreachable comes back as ECONNREFUSED.
    s.connect(port, host, () => s.send(trackingRequest(sequence)));
  });
}
