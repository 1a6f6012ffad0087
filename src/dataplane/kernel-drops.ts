// What the kernel dropped at the data plane's two edges before vxedge read it: packets for
// the tunnel that found the device's queue full (the site sends faster than the gateway
// reads; the TUN driver drops and never pushes back) and datagrams that found a tunnel
// socket's receive buffer full (or had a bad UDP checksum). vxedge's own counters cannot see
// these, so without them a flood could lose half its packets at the gateway while the health
// document said "drops: {}". Read at every health document, never on the packet path.
import { readFileSync } from 'node:fs';
import { Drop, type DropCounters } from './drops.js';

export interface KernelDropSources {
  /** The tunnel device's transmit drops (the kernel's count; the TUN's queue is its transmit
   *  side), or null when it cannot be read. */
  device(): number | null;
  /** Each tunnel socket's drop count (32-bit, wrapping; -1: unknown), in a fixed order. */
  underlay(): number[];
}

/** Turns the kernel's running counts into drops counted once. The constructor's reading is
 *  the baseline: what was dropped before vxedge took the device or the socket is not its loss. */
export class KernelDrops {
  private device: number | null;
  private readonly sockets: number[];

  constructor(private readonly sources: KernelDropSources) {
    this.device = sources.device();
    this.sockets = [...sources.underlay()]; // updated in place by collect: our own copy
  }

  /** Adds what was dropped since the last call to `drops` (deviceQueue, underlayReceive). */
  collect(drops: DropCounters): void {
    const dev = this.sources.device();
    if (dev !== null) {
      // A count below the last one belongs to a device created anew: all of it is new.
      if (this.device !== null) drops.add(Drop.deviceQueue, dev >= this.device ? dev - this.device : dev);
      this.device = dev;
    }
    const now = this.sources.underlay();
    let lost = 0;
    for (let i = 0; i < now.length; i++) {
      const c = now[i];
      if (c < 0) continue;
      const last = this.sockets[i];
      if (last !== undefined && last >= 0) lost += (c - last) >>> 0; // the kernel's counter is 32-bit
      this.sockets[i] = c;
    }
    if (lost > 0) drops.add(Drop.underlayReceive, lost);
  }
}

/**
 * The transmit drop count of interface `name` in /proc/net/dev's text, or null when the
 * interface is not listed. /proc/self/net/dev is always the reader's own network namespace,
 * where /sys/class/net may show another one (a namespace entered without remounting sysfs).
 */
export function netDevTxDrops(text: string, name: string): number | null {
  for (const line of text.split('\n')) {
    const t = line.trimStart();
    if (!t.startsWith(`${name}:`)) continue;
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop ...
    const f = t.slice(name.length + 1).trim().split(/\s+/);
    const v = Number(f[11]);
    return f.length >= 12 && Number.isSafeInteger(v) && v >= 0 ? v : null;
  }
  return null;
}

/** Reads the device's transmit drops from /proc/self/net/dev; null when it cannot. */
export function deviceTxDrops(name: string, read: () => string = () => readFileSync('/proc/self/net/dev', 'utf8')): () => number | null {
  return () => {
    try {
      return netDevTxDrops(read(), name);
    } catch {
      return null;
    }
  };
}
