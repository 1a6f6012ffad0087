// Runs the underlay reachability probe for peers that are down: once when a peer goes
// down, then at most every minute while it stays down, and at once again when the peer's
// address changes (it roamed): a result is about an address, not a name. Results feed
// reasons.ts.
//
// Probes start at most BURST per PACE_MS, the rest wait their turn: when a site's uplink
// dies, every peer goes down within a second, and 500 probes started at once (2 000 timers,
// 1 500 raw sends, 500 promises) stalled the event loop the packets share for tens of ms.
// Paced, 500 down peers are diagnosed within 2 s, in slices of ~1 ms.
import type { Clock } from '../util/clock.js';
import { pingUnderlay, type UnderlayPingResult } from './underlay-probe.js';

const RERUN_MS = 60_000;
export const BURST = 25;
export const PACE_MS = 100;

interface Entry {
  addr: string;
  at: number;
  running: boolean;
  result: UnderlayPingResult | null;
}

interface Queued {
  peer: string;
  entry: Entry;
  onDone?: () => void;
}

export class UnderlayDiagnosis {
  private readonly entries = new Map<string, Entry>();
  /** Checks waiting for a probe to start, oldest first. */
  private readonly queue: Queued[] = [];
  /** Probes started in the current PACE_MS window (the window opens with its first). */
  private startedInWindow = 0;

  constructor(
    private readonly clock: Clock,
    private readonly ping: (addr: string) => Promise<UnderlayPingResult> = (a) => pingUnderlay(a, clock),
  ) {}

  /** Starts a probe of `addr` for a down peer unless one of that address ran recently; `onDone` fires with the result. */
  check(peer: string, addr: string, onDone?: () => void): void {
    const now = this.clock.monotonic();
    let e = this.entries.get(peer);
    if (e && e.addr === addr && (e.running || now - e.at < RERUN_MS)) return;
    e = { addr, at: now, running: true, result: null };
    this.entries.set(peer, e);
    this.queue.push({ peer, entry: e, onDone });
    this.startQueued();
  }

  /** Checks waiting for their turn (what the tests look at). */
  get waiting(): number {
    return this.queue.length;
  }

  private startQueued(): void {
    while (this.queue.length > 0 && this.startedInWindow < BURST) {
      const { peer, entry, onDone } = this.queue.shift()!;
      if (this.entries.get(peer) !== entry) continue; // forgotten, or checked again at a new address
      if (this.startedInWindow++ === 0) {
        this.clock.after(PACE_MS, () => {
          this.startedInWindow = 0;
          this.startQueued();
        });
      }
      void this.ping(entry.addr).then((r) => {
        entry.running = false;
        entry.result = r;
        if (this.entries.get(peer) === entry) onDone?.();
      });
    }
  }

  /** true/false from the last probe of the peer's current address, null if none ran (or it could not run). */
  reachable(peer: string, addr: string): boolean | null {
    const e = this.entries.get(peer);
    const r = e && e.addr === addr ? e.result : null;
    return r && !r.error ? r.reachable : null;
  }

  forget(peer: string): void {
    this.entries.delete(peer);
  }
}
