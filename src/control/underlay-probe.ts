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

/** Sends up to `count` echoes (one per 300 ms) and resolves at the first answer or after timeoutMs. */
export function pingUnderlay(address: string, clock: Clock = systemClock, timeoutMs = 2000, count = 3): Promise<UnderlayPingResult> {
  const r = raw();
  if (!r) return Promise.resolve({ reachable: false, rttMs: null, error: 'raw-socket module not available' });
  return new Promise((resolve) => {
    let sock: RawSocket;
    try {
      sock = r.createSocket({ protocol: r.Protocol.ICMP });
    } catch (e) {
      resolve({ reachable: false, rttMs: null, error: `raw socket: ${(e as Error).message} (needs CAP_NET_RAW)` });
      return;
    }
    const ident = randomInt(1, 0xffff);
    const sentAt: number[] = [];
    let done = false;
    const timers: Timer[] = [];
    const finish = (res: UnderlayPingResult) => {
      if (done) return;
      done = true;
      timers.forEach((t) => t.cancel());
      try {
        sock.close();
      } catch {
        // already closed
      }
      resolve(res);
    };
    sock.on('error', (e) => finish({ reachable: false, rttMs: null, error: e.message }));
    sock.on('message', (buf, source) => {
      // IPv4 raw sockets deliver the IP header too.
      const ihl = (buf[0] & 0x0f) * 4;
      if (source !== address || buf.length < ihl + 8 || buf[ihl] !== 0 || buf.readUInt16BE(ihl + 4) !== ident) return;
      const seq = buf.readUInt16BE(ihl + 6);
      finish({ reachable: true, rttMs: sentAt[seq] ? Math.round((clock.monotonic() - sentAt[seq]) * 1000) / 1000 : null, error: null });
    });
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
          sock.send(m, 0, m.length, address, null, () => undefined);
        }),
      );
    }
    timers.push(clock.after(timeoutMs, () => finish({ reachable: false, rttMs: null, error: null })));
  });
}
