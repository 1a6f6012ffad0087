// An ICMP echo to a peer's public address over the underlay (raw socket, not the
// tunnel): used only to explain why a peer is down. If the host answers but the
// tunnel does not, the problem is UDP 8472 (security group, site firewall, NAT) or
// the node's route back; if the host does not answer, it is unreachable (or drops
// ICMP, which AWS security groups do by default: the reason says so).
import { createRequire } from 'node:module';
import { randomInt } from 'node:crypto';
import { internetChecksum } from '../proto/ipv4.js';
import { systemClock, type Clock, type Timer } from '../util/clock.js';

const require = createRequire(import.meta.url);

interface RawSocket {
  on(ev: 'message', cb: (buf: Buffer, source: string) => void): void;
  on(ev: 'error', cb: (e: Error) => void): void;
  send(buf: Buffer, off: number, len: number, addr: string, before: (() => void) | null, after: (e: Error | null) => void): void;
  close(): void;
}
interface RawModule {
  createSocket(o: { protocol: number }): RawSocket;
  Protocol: { ICMP: number };
}

export interface UnderlayPingResult {
  reachable: boolean;
  rttMs: number | null;
  error: string | null;
}

let rawModule: RawModule | null | undefined;
function raw(): RawModule | null {
  if (rawModule === undefined) {
    try {
      rawModule = require('raw-socket') as RawModule;
    } catch {
      rawModule = null;
    }
  }
  return rawModule;
}

/**
 * One raw socket for every ping in flight. An ICMP raw socket receives every echo reply that
 * reaches the host, so one socket per ping would hand each of N concurrent pings all N replies
 * (500 peers going down together: 250 000 callbacks). Replies are dispatched by echo identifier.
 */
interface SharedSocket {
  sock: RawSocket;
  /** Echo identifier -> the ping waiting for it. */
  waiting: Map<number, (source: string, seq: number) => void>;
}
let shared: SharedSocket | null = null;

function sharedSocket(r: RawModule): SharedSocket {
  if (shared) return shared;
  const s: SharedSocket = { sock: r.createSocket({ protocol: r.Protocol.ICMP }), waiting: new Map() };
  s.sock.on('message', (buf, source) => {
    // IPv4 raw sockets deliver the IP header too.
    const ihl = (buf[0] & 0x0f) * 4;
    if (buf.length < ihl + 8 || buf[ihl] !== 0) return; // not an echo reply
    s.waiting.get(buf.readUInt16BE(ihl + 4))?.(source, buf.readUInt16BE(ihl + 6));
  });
  s.sock.on('error', (e) => {
    // The socket is unusable: every ping in flight ends with the error, the next one opens a new socket.
    if (shared === s) shared = null;
    for (const [ident, fail] of [...s.waiting]) {
      s.waiting.delete(ident);
      fail(e.message, -1);
    }
    closeQuietly(s.sock);
  });
  shared = s;
  return s;
}

function closeQuietly(sock: RawSocket): void {
  try {
    sock.close();
  } catch {
    // already closed
  }
}

/** Raw sockets open at the moment (0 or 1): what the tests check. */
export function openUnderlaySockets(): number {
  return shared ? 1 : 0;
}

/** Sends up to `count` echoes (one per 300 ms) and resolves at the first answer or after timeoutMs. */
export function pingUnderlay(address: string, clock: Clock = systemClock, timeoutMs = 2000, count = 3): Promise<UnderlayPingResult> {
  const r = raw();
  if (!r) return Promise.resolve({ reachable: false, rttMs: null, error: 'raw-socket module not available' });
  let s: SharedSocket;
  try {
    s = sharedSocket(r);
  } catch (e) {
    return Promise.resolve({ reachable: false, rttMs: null, error: `raw socket: ${(e as Error).message} (needs CAP_NET_RAW)` });
  }
  return new Promise((resolve) => {
    let ident = randomInt(1, 0xffff);
    while (s.waiting.has(ident)) ident = (ident % 0xfffe) + 1;
    const sentAt: number[] = [];
    const timers: Timer[] = [];
    const finish = (res: UnderlayPingResult) => {
      if (s.waiting.get(ident) !== onReply) return;
      s.waiting.delete(ident);
      timers.forEach((t) => t.cancel());
      if (s.waiting.size === 0 && shared === s) {
        shared = null;
        closeQuietly(s.sock);
      }
      resolve(res);
    };
    const onReply = (source: string, seq: number) => {
      if (seq < 0) finish({ reachable: false, rttMs: null, error: source });
      else if (source === address) finish({ reachable: true, rttMs: sentAt[seq] ? Math.round((clock.monotonic() - sentAt[seq]) * 1000) / 1000 : null, error: null });
    };
    s.waiting.set(ident, onReply);
    for (let seq = 0; seq < count; seq++) {
      timers.push(
        clock.after(seq * 300, () => {
          const m = Buffer.alloc(16);
          m[0] = 8;
          m.writeUInt16BE(ident, 4);
          m.writeUInt16BE(seq, 6);
          m.write('vxedge-u', 8, 'latin1');
          m.writeUInt16BE(internetChecksum(m, 0, m.length), 2);
          sentAt[seq] = clock.monotonic();
          s.sock.send(m, 0, m.length, address, null, () => undefined);
        }),
      );
    }
    timers.push(clock.after(timeoutMs, () => finish({ reachable: false, rttMs: null, error: null })));
  });
}
