// Many deadlines behind one timer (src/util/due-queue.ts), on a manual clock: every item
// fires once per schedule, never early, at most the coalescing window late, in deadline
// order; cancelled items never fire; and timers are made a bounded number of times.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DueQueue, type DueItem } from '../../src/util/due-queue.js';
import type { Clock } from '../../src/util/clock.js';
import { ManualClock } from '../support/clock.js';

interface Item extends DueItem {
  id: number;
}

/** A ManualClock that counts the timers made on it. */
function countingClock(): { clock: ManualClock; made: () => number } {
  const clock = new ManualClock({ monotonic: 0 });
  let made = 0;
  const after = clock.after.bind(clock);
  (clock as Clock).after = (ms, fn, opts) => {
    made++;
    return after(ms, fn, opts);
  };
  return { clock, made: () => made };
}

type Op = { op: 'schedule'; id: number; delay: number } | { op: 'cancel'; id: number } | { op: 'advance'; ms: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('schedule' as const), id: fc.integer({ min: 0, max: 9 }), delay: fc.integer({ min: 0, max: 200 }) }),
  fc.record({ op: fc.constant('cancel' as const), id: fc.integer({ min: 0, max: 9 }) }),
  fc.record({ op: fc.constant('advance' as const), ms: fc.integer({ min: 0, max: 120 }) }),
);

describe('DueQueue', () => {
  for (const coalesceMs of [0, 20]) {
    it(`fires each scheduled item once, in order, never early and at most ${coalesceMs} ms late; cancelled ones never`, () => {
      fc.assert(
        fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
          const { clock } = countingClock();
          const items: Item[] = Array.from({ length: 10 }, (_, id) => ({ id, dueAt: 0, heapIndex: -1 }));
          /** The deadline each item must fire at, as the test sees it. */
          const expected = new Map<number, number>();
          const fired: { id: number; at: number; due: number }[] = [];
          const q = new DueQueue<Item>(clock, (it) => {
            fired.push({ id: it.id, at: clock.monotonic(), due: expected.get(it.id)! });
            expected.delete(it.id);
          }, coalesceMs);
          for (const o of ops) {
            if (o.op === 'schedule') {
              q.schedule(items[o.id], o.delay);
              expected.set(o.id, clock.monotonic() + o.delay);
            } else if (o.op === 'cancel') {
              q.cancel(items[o.id]);
              expected.delete(o.id);
            } else {
              clock.advance(o.ms);
            }
            expect(q.size).toBe(expected.size);
          }
          clock.advance(1000);
          expect(expected.size).toBe(0);
          expect(q.size).toBe(0);
          for (const f of fired) {
            expect(f.at).toBeGreaterThanOrEqual(f.due);
            expect(f.at).toBeLessThanOrEqual(f.due + coalesceMs);
          }
          // In deadline order within each firing (same time), and firings in time order.
          for (let i = 1; i < fired.length; i++) {
            expect(fired[i].at).toBeGreaterThanOrEqual(fired[i - 1].at);
            if (fired[i].at === fired[i - 1].at) expect(fired[i].due).toBeGreaterThanOrEqual(fired[i - 1].due);
          }
        }),
        { numRuns: 300 },
      );
    });
  }

  it('500 items due every 2 s (±20 %) need ~50 timers a second with a 20 ms window, not 250', () => {
    const { clock, made } = countingClock();
    let fires = 0;
    const items: Item[] = Array.from({ length: 500 }, (_, id) => ({ id, dueAt: 0, heapIndex: -1 }));
    let r = 0x2545f491;
    const random = () => ((r = (Math.imul(r, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const q = new DueQueue<Item>(clock, (it) => {
      fires++;
      q.schedule(it, 2000 * (0.8 + 0.4 * random()));
    }, 20);
    for (const it of items) q.schedule(it, 500 * random());
    const before = made();
    clock.advance(10_000);
    expect(fires).toBeGreaterThan(2300); // ~250 a second
    expect(made() - before).toBeLessThanOrEqual(10 * 51);
  });

  it('an item scheduled again from its own callback with no delay waits for the next firing', () => {
    const { clock } = countingClock();
    const item: Item = { id: 0, dueAt: 0, heapIndex: -1 };
    let n = 0;
    const q = new DueQueue<Item>(clock, (it) => {
      n++;
      q.schedule(it, 0);
    }, 5);
    q.schedule(item, 10);
    clock.advance(10);
    expect(n).toBe(1);
    clock.advance(5);
    expect(n).toBe(2);
    q.clear();
    clock.advance(100);
    expect(n).toBe(2);
  });
});
