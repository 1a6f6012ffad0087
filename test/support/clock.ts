// A clock for tests: time moves only when the test says so. Timers fire in order of
// their due time (then of creation), each seeing now()/monotonic() at its due time, so
// a test reads like a timeline:
//
//   const clock = new ManualClock();
//   const ka = new Keepalive({ clock, ... });
//   clock.advance(25_000);           // every timer due by then has run
//   expect(sent).toHaveLength(1);
import type { Clock, Timer, TimerOptions } from '../../src/util/clock.js';

interface Pending {
  at: number;
  seq: number;
  fn: () => void;
  every: number; // 0: once
  cancelled: boolean;
}

/** Lets pending promise reactions and immediates run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Moves the clock on in steps of `step` ms (advanceAsync) until cond holds; fails the test if it
 *  does not within maxMs of clock time. For fakes that answer without real I/O. */
export async function advanceUntil(clock: ManualClock, cond: () => boolean, maxMs: number, step = 1000): Promise<void> {
  await flush();
  for (let t = 0; !cond(); t += step) {
    if (t >= maxMs) throw new Error(`condition not met within ${maxMs} ms of clock time`);
    await clock.advanceAsync(step);
  }
}

/**
 * Until `cond()` is truthy: lets real I/O run (a few ms of real time), then moves `clock` on by
 * `stepMs` (none when stepMs is 0). Throws after `timeoutMs` of real time, naming `what`.
 */
export async function drive<T>(clock: ManualClock | null, cond: () => T, what: string, { timeoutMs = 10_000, stepMs = 10 } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
    if (clock && stepMs > 0) clock.advance(stepMs);
  }
}

export class ManualClock implements Clock {
  private mono: number;
  private wall: number;
  private seq = 0;
  private pending: Pending[] = [];

  constructor(opts: { wall?: number; monotonic?: number } = {}) {
    this.wall = opts.wall ?? Date.UTC(2026, 10, 24, 12, 0, 0);
    this.mono = opts.monotonic ?? 1_000_000;
  }

  now(): number {
    return this.wall;
  }

  monotonic(): number {
    return this.mono;
  }

  after(ms: number, fn: () => void, _opts?: TimerOptions): Timer {
    return this.add(Math.max(0, ms), fn, 0);
  }

  every(ms: number, fn: () => void, _opts?: TimerOptions): Timer {
    return this.add(Math.max(1, ms), fn, Math.max(1, ms));
  }

  /** Moves time forward by ms, running every timer that falls due on the way. */
  advance(ms: number): void {
    const end = this.mono + ms;
    for (;;) {
      const next = this.nextDue();
      if (!next || next.at > end) break;
      this.step(Math.max(0, next.at - this.mono));
      this.pending = this.pending.filter((p) => p !== next);
      if (next.every > 0) {
        // As Node's setInterval: the next run is a period after this one ran, so a run made
        // late by a stall pushes the later ones back (it does not catch up).
        next.at = this.mono + next.every;
        this.pending.push(next);
      }
      next.fn();
    }
    this.step(end - this.mono);
  }

  /**
   * Like advance, but lets promise callbacks and I/O callbacks run after each timer (as
   * the real event loop would), so a timer whose callback awaits something and then arms
   * another timer within the window sees it fire too.
   */
  async advanceAsync(ms: number): Promise<void> {
    const end = this.mono + ms;
    await flush();
    for (;;) {
      const next = this.nextDue();
      if (!next || next.at > end) break;
      this.advance(Math.max(0, next.at - this.mono));
      await flush();
    }
    this.step(end - this.mono);
    await flush();
  }

  /** Time passes without any timer firing: the event loop was blocked for ms. */
  stall(ms: number): void {
    this.step(ms);
  }

  /** Runs timers until none is left due within `limitMs` (for "run until idle"). */
  runAll(limitMs = 3_600_000): void {
    this.advance(limitMs);
  }

  /** Timers not yet run or cancelled. */
  get timerCount(): number {
    return this.pending.filter((p) => !p.cancelled).length;
  }

  /** Jumps the wall clock only (an NTP step), leaving monotonic time alone. */
  setWall(ms: number): void {
    this.wall = ms;
  }

  private step(ms: number): void {
    this.mono += ms;
    this.wall += ms;
  }

  private nextDue(): Pending | undefined {
    this.pending = this.pending.filter((p) => !p.cancelled);
    let best: Pending | undefined;
    for (const p of this.pending) if (!best || p.at < best.at || (p.at === best.at && p.seq < best.seq)) best = p;
    return best;
  }

  private add(ms: number, fn: () => void, every: number): Timer {
    const p: Pending = { at: this.mono + ms, seq: this.seq++, fn, every, cancelled: false };
    this.pending.push(p);
    return {
      cancel: () => {
        p.cancelled = true;
      },
    };
  }
}
