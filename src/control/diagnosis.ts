// Runs the underlay reachability probe for peers that are down: once when a peer goes
// down, then at most every minute while it stays down, and at once again when the peer's
// address changes (it roamed): a result is about an address, not a name. Results feed
// reasons.ts.
import type { Clock } from '../util/clock.js';
import { pingUnderlay, type UnderlayPingResult } from './underlay-probe.js';

const RERUN_MS = 60_000;

interface Entry {
  addr: string;
  at: number;
  running: boolean;
  result: UnderlayPingResult | null;
}

export class UnderlayDiagnosis {
  private readonly entries = new Map<string, Entry>();

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
    const mine = e;
    void this.ping(addr).then((r) => {
      mine.running = false;
      mine.result = r;
      if (this.entries.get(peer) === mine) onDone?.();
    });
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
