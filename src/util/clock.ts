// The one clock every timer of vxedge goes through. Production code never calls
// setTimeout, setInterval, Date.now() or performance.now() for its logic: it takes a
// Clock, so that tests drive time with a ManualClock (test/support/clock.ts) instead of
// sleeping, and a busy CI machine cannot turn a timing assertion into a flake.
//
// Two time scales, because a Raspberry Pi has no RTC and jumps by years at its first NTP
// sync:
//   now()       wall time, ms since the epoch: timestamps shown to people (lastSeen, ts);
//   monotonic() ms on a clock that never jumps: every interval, timeout and age.
//
// Timers never keep the process alive by themselves (the data plane's polls and the
// signal handlers do), unless asked with { keepAlive: true }.
import { clockSynchronised } from './clock-sync.js';

export interface Timer {
  /** Stops the timer; idempotent, safe from inside its own callback. */
  cancel(): void;
}

export interface TimerOptions {
  /** Keep the event loop alive while the timer is pending (default false). */
  keepAlive?: boolean;
}

export interface Clock {
  /** Wall time, ms since the epoch. */
  now(): number;
  /** Monotonic ms (arbitrary origin); use for every duration and deadline. */
  monotonic(): number;
  /** Runs fn once after ms. */
  after(ms: number, fn: () => void, opts?: TimerOptions): Timer;
  /** Runs fn every ms until cancelled. */
  every(ms: number, fn: () => void, opts?: TimerOptions): Timer;
  /** Whether network time keeps the wall clock (util/clock-sync.ts): said beside a reading
   *  that a certificate's dates make doubtful. Absent or null: not known (test clocks). */
  synchronised?(): boolean | null;
}

/** The real clock: Date.now(), performance.now(), Node's timers and the kernel's word on its sync. */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  synchronised: () => clockSynchronised(Date.now()),
  after(ms, fn, opts) {
    const t = setTimeout(fn, Math.max(0, ms));
    if (!opts?.keepAlive) t.unref();
    return { cancel: () => clearTimeout(t) };
  },
  every(ms, fn, opts) {
    const t = setInterval(fn, Math.max(1, ms));
    if (!opts?.keepAlive) t.unref();
    return { cancel: () => clearInterval(t) };
  },
};

/** A resolved promise after ms on `clock` (for async code that waits, e.g. a retry). */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.after(ms, resolve));
}
