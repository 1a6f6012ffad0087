// util/rerun.ts: the check refresh's runner. Requests in a burst are one run, runs never
// overlap, a request during a run gets a run after it, and requested runs keep a gap.
import { describe, expect, it } from 'vitest';
import { Rerun } from '../../src/util/rerun.js';
import { flush, ManualClock } from '../support/clock.js';

/** A job whose runs the test ends by hand; `starts` holds each run's start (monotonic ms). */
function harness(settleMs = 100, gapMs = 2000) {
  const clock = new ManualClock();
  const starts: number[] = [];
  const ends: (() => void)[] = [];
  const failures: string[] = [];
  let fail: string | null = null;
  const rerun = new Rerun(clock, () => {
    starts.push(clock.monotonic());
    if (fail !== null) return Promise.reject(new Error(fail));
    return new Promise<void>((resolve) => ends.push(resolve));
  }, { settleMs, gapMs, failed: (e) => failures.push(e.message) });
  const t0 = clock.monotonic();
  return {
    clock, rerun, failures,
    /** Run starts, ms after the harness was made. */
    starts: () => starts.map((s) => s - t0),
    /** Ends the oldest run still going. */
    end: async () => {
      ends.shift()!();
      await flush();
    },
    failNext: (why: string | null) => (fail = why),
  };
}

describe('Rerun', () => {
  it('serves a burst of requests with one run, after the settle time', async () => {
    const h = harness();
    for (let i = 0; i < 50; i++) h.rerun.request();
    h.clock.advance(99);
    expect(h.starts()).toEqual([]);
    h.clock.advance(1);
    expect(h.starts()).toEqual([100]);
    await h.end();
    await h.clock.advanceAsync(10_000);
    expect(h.starts()).toEqual([100]); // nothing asked for more
  });

  it('never runs twice at once; a request during a run gets one run after it, a gap after the last start', async () => {
    const h = harness();
    h.rerun.request();
    h.clock.advance(100);
    h.clock.advance(500);
    h.rerun.request(); // the run may have read the state before this change
    h.rerun.request();
    await h.clock.advanceAsync(5_000);
    expect(h.starts()).toEqual([100]); // the first has not ended
    await h.end();
    await h.clock.advanceAsync(5_000);
    // Ended at 5 600, later than 100 + the gap: the next waits only the settle time.
    expect(h.starts()).toEqual([100, 5_700]);
  });

  it('keeps the gap between requested runs, however often the kernel asks', async () => {
    const h = harness();
    h.rerun.request();
    h.clock.advance(100);
    await h.end(); // ended at once, at 100
    h.rerun.request();
    await h.clock.advanceAsync(1_000);
    expect(h.starts()).toEqual([100]);
    await h.clock.advanceAsync(1_000);
    expect(h.starts()).toEqual([100, 2_100]);
  });

  it('now() waits for the run in progress, then runs at once, without the gap', async () => {
    const h = harness();
    h.rerun.request();
    h.clock.advance(100);
    let done = false;
    const now = h.rerun.now().then(() => (done = true));
    await flush();
    expect(h.starts()).toEqual([100]);
    await h.end(); // the first ends: now()'s own run starts
    expect(h.starts()).toEqual([100, 100]);
    expect(done).toBe(false);
    await h.end();
    await now;
    expect(done).toBe(true);
    // A request made before now() was served by it: no run is left over.
    await h.clock.advanceAsync(10_000);
    expect(h.starts()).toHaveLength(2);
  });

  it('a run that throws is reported, and later requests still run', async () => {
    const h = harness();
    h.failNext('ip: command not found');
    h.rerun.request();
    await h.clock.advanceAsync(100);
    expect(h.failures).toEqual(['ip: command not found']);
    h.failNext(null);
    h.rerun.request();
    await h.clock.advanceAsync(2_000);
    expect(h.starts()).toEqual([100, 2_100]);
  });

  it('stop() cancels what is requested and resolves once the run in progress has ended', async () => {
    const h = harness();
    h.rerun.request();
    h.clock.advance(100);
    h.rerun.request();
    let stopped = false;
    const stop = h.rerun.stop().then(() => (stopped = true));
    await flush();
    expect(stopped).toBe(false);
    await h.end();
    await stop;
    expect(stopped).toBe(true);
    h.rerun.request();
    await h.rerun.now();
    await h.clock.advanceAsync(10_000);
    expect(h.starts()).toEqual([100]);
  });
});
