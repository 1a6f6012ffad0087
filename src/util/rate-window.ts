// A sliding-window limit: at most `n` events in any `windowMs` (monotonic ms). It keeps the
// times of the last n events in a ring, so it costs n numbers however hard it is pushed: a
// flood that asks a million times holds no more than one that asks n times.

export class RateWindow {
  /** Times of the last n events taken; -Infinity: a place never used. */
  private readonly times: Float64Array;
  /** The ring's oldest entry, the one the next event replaces. */
  private oldest = 0;

  constructor(
    n: number,
    private readonly windowMs: number,
  ) {
    if (!Number.isInteger(n) || n < 1) throw new Error(`RateWindow: n must be a positive integer, got ${n}`);
    this.times = new Float64Array(n).fill(-Infinity);
  }

  /** Whether an event at `now` would be within the limit (takes nothing). */
  allows(now: number): boolean {
    return now - this.times[this.oldest] >= this.windowMs;
  }

  /** Counts an event at `now`; call only after allows(now). */
  take(now: number): void {
    this.times[this.oldest] = now;
    this.oldest = (this.oldest + 1) % this.times.length;
  }
}
