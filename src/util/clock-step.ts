// Notices the wall clock being set. A Raspberry Pi has no battery-backed clock: it boots with
// the time it saved at shutdown (fake-hwclock) or systemd's build date, and network time
// steps it forward later, often after vxedge has started. Until then every certificate may
// look "not valid yet", and a TLS client that failed so waits out its backoff (MQTT up to
// 60 s, the cluster's sources up to 30 s) although the cause has gone. Whoever reads the
// watch tries such connections again at once instead.
//
// A step shows as a change of (wall − monotonic) between two looks. NTP's slewing changes it
// by at most 0.5 ms a second, and a stalled event loop moves both clocks alike, so neither
// trips the threshold; a look takes the slew in as the new reference.
import type { Clock } from './clock.js';

/** Least change of (wall − monotonic) between two looks that counts as the clock being set. */
export const CLOCK_STEP_MIN_MS = 1000;

export interface ClockStep {
  /** How far the wall clock moved beyond the time that passed (negative: set back). */
  byMs: number;
  /** Wall time before the step, as it would read now: the reference carried forward. */
  fromMs: number;
  /** Wall time now. */
  toMs: number;
}

export class ClockStepWatch {
  private offset: number;

  constructor(
    private readonly clock: Clock,
    private readonly minMs = CLOCK_STEP_MIN_MS,
  ) {
    this.offset = clock.now() - clock.monotonic();
  }

  /** The step since the last look, or null when the wall clock only ran (or slewed). */
  look(): ClockStep | null {
    const mono = this.clock.monotonic();
    const wall = this.clock.now();
    const offset = wall - mono;
    const byMs = offset - this.offset;
    const fromMs = mono + this.offset;
    this.offset = offset;
    return Math.abs(byMs) >= this.minMs ? { byMs, fromMs, toMs: wall } : null;
  }
}

/** "forward by 3d 4h 5m", "back by 12s": a step's size for a log line. */
export function describeStep(byMs: number): string {
  let s = Math.round(Math.abs(byMs) / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60]] as const) {
    if (s >= size || parts.length > 0) {
      const n = Math.floor(s / size);
      if (n > 0) parts.push(`${n}${unit}`);
      s -= n * size;
    }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`);
  return `${byMs < 0 ? 'back' : 'forward'} by ${parts.slice(0, 3).join(' ')}`;
}
