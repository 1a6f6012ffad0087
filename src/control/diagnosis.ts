// Runs the underlay reachability probe for peers that are down: once when a peer
// goes down, then at most every minute while it stays down. Results feed reasons.ts.
import { pingUnderlay, type UnderlayPingResult } from './underlay-probe.js';

const RERUN_MS = 60_000;

interface Entry {
  at: number;
  running: boolean;
  result: UnderlayPingResult | null;
}

export class UnderlayDiagnosis {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly ping: (addr: string) => Promise<UnderlayPingResult> = (a) => pingUnderlay(a),
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts a probe for a down peer unless one ran recently; `onDone` fires with the result. */
  check(peer: string, addr: string, onDone?: () => void): void {
    const e = this.entries.get(peer) ?? { at: 0, running: false, result: null };
    this.entries.set(peer, e);
    if (e.running || (e.at && this.now() - e.at < RERUN_MS)) return;
    e.running = true;
    e.at = this.now();
    void this.ping(addr).then((r) => {
      e.running = false;
      e.result = r;
      onDone?.();
    });
  }

  /** true/false from the last probe, null if none ran (or it could not run). */
  reachable(peer: string): boolean | null {
    const r = this.entries.get(peer)?.result;
    return r && !r.error ? r.reachable : null;
  }

  forget(peer: string): void {
    this.entries.delete(peer);
  }
}
