// The wall clock being set (network time after a boot), told apart from time passing, a
// stalled event loop and NTP's slewing.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CLOCK_STEP_MIN_MS, ClockStepWatch, describeStep } from '../../src/util/clock-step.js';
import { ManualClock } from '../support/clock.js';

describe('ClockStepWatch', () => {
  it('says nothing while time passes, the event loop stalls, or both clocks move together', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 86_400_000 })), { maxLength: 30 }), (moves) => {
      const clock = new ManualClock();
      const watch = new ClockStepWatch(clock);
      for (const [stall, ms] of moves) {
        if (stall) clock.stall(ms);
        else clock.advance(ms);
        if (watch.look() !== null) return false;
      }
      return true;
    }));
  });

  it('reports a step forward with where the clock was and is, once', () => {
    const clock = new ManualClock({ wall: Date.UTC(2026, 0, 1) });
    const watch = new ClockStepWatch(clock);
    clock.advance(2000);
    const before = clock.now();
    clock.setWall(Date.UTC(2026, 11, 6, 14, 0, 0));
    const step = watch.look();
    expect(step).toEqual({ byMs: Date.UTC(2026, 11, 6, 14, 0, 0) - before, fromMs: before, toMs: Date.UTC(2026, 11, 6, 14, 0, 0) });
    clock.advance(2000);
    expect(watch.look()).toBeNull();
  });

  it('reports a step back as negative', () => {
    const clock = new ManualClock();
    const watch = new ClockStepWatch(clock);
    clock.setWall(clock.now() - 90_000);
    expect(watch.look()?.byMs).toBe(-90_000);
  });

  it(`counts ${CLOCK_STEP_MIN_MS} ms as a step, less as none`, () => {
    const clock = new ManualClock();
    const watch = new ClockStepWatch(clock);
    clock.setWall(clock.now() + CLOCK_STEP_MIN_MS - 1);
    expect(watch.look()).toBeNull();
    clock.setWall(clock.now() + CLOCK_STEP_MIN_MS);
    expect(watch.look()?.byMs).toBe(CLOCK_STEP_MIN_MS);
  });

  it("takes NTP's slewing in as it goes: 0.5 ms a second for a day is no step", () => {
    const clock = new ManualClock();
    const watch = new ClockStepWatch(clock);
    for (let i = 0; i < 43_200; i++) {
      clock.advance(2000);
      clock.setWall(clock.now() + 1); // 500 ppm, the kernel's limit
      expect(watch.look()).toBeNull();
    }
  });
});

describe('describeStep', () => {
  it.each([
    [0, 'forward by 0s'],
    [1500, 'forward by 2s'],
    [-12_000, 'back by 12s'],
    [90_000, 'forward by 1m 30s'],
    [3_600_000, 'forward by 1h'],
    [(3 * 86_400 + 4 * 3600 + 5 * 60 + 6) * 1000, 'forward by 3d 4h 5m'],
    [(86_400 + 7) * 1000, 'forward by 1d 7s'],
    [-(56 * 365 * 86_400) * 1000, 'back by 20440d'],
  ])('%i ms: %s', (ms, text) => {
    expect(describeStep(ms)).toBe(text);
  });
});
