// The peer table's hash index (src/dataplane/slot-index.ts) must behave as the Maps it
// replaced: checked against a Map on random sequences of operations, over a key space
// small enough that probe runs collide, wrap around the table and are cut by deletions.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SlotIndex } from '../../src/dataplane/slot-index.js';

type Op = { op: 'set' | 'deleteIf' | 'get'; a: number; b: number; slot: number };

/** Keys as the peer table makes them: addresses on both sides of 2^31, MAC halves, prefix lengths. */
const keyA = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.integer({ min: 0, max: 40 }).map((n) => (0xcb007100 + n) >>> 0), // 203.0.113.n: above 2^31
  fc.integer({ min: 0, max: 40 }).map((n) => (0xcb007100 + n) | 0), // the same, as int32
  fc.constantFrom(0x7fffffff, 0x80000000, 0xffffffff, -1, -0x80000000),
);
const op: fc.Arbitrary<Op> = fc.record({
  op: fc.constantFrom('set', 'set', 'deleteIf', 'get'),
  a: keyA,
  b: fc.integer({ min: 0, max: 3 }),
  slot: fc.integer({ min: 0, max: 5 }),
});

describe('SlotIndex', () => {
  it('agrees with a Map on any sequence of sets, conditional deletes and lookups', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), fc.integer({ min: 1, max: 40 }), (ops, capacity) => {
        const idx = new SlotIndex(capacity);
        const ref = new Map<string, number>();
        const k = (a: number, b: number) => `${a | 0}/${b}`;
        for (const o of ops) {
          if (o.op === 'set') {
            expect(idx.set(o.a, o.b, o.slot)).toBe(!ref.has(k(o.a, o.b)));
            ref.set(k(o.a, o.b), o.slot);
          } else if (o.op === 'deleteIf') {
            const mine = ref.get(k(o.a, o.b)) === o.slot;
            expect(idx.deleteIf(o.a, o.b, o.slot)).toBe(mine);
            if (mine) ref.delete(k(o.a, o.b));
          }
          expect(idx.get(o.a, o.b)).toBe(ref.get(k(o.a, o.b)) ?? -1);
          expect(idx.size).toBe(ref.size);
        }
        // Every key still there is found; the ones not there are not.
        for (const [key, slot] of ref) {
          const [a, b] = key.split('/').map(Number);
          expect(idx.get(a, b)).toBe(slot);
        }
        for (const o of ops) if (!ref.has(k(o.a, o.b))) expect(idx.get(o.a, o.b)).toBe(-1);
      }),
      { numRuns: 400 },
    );
  });

  it('a key is the same whether given as an unsigned or a signed 32-bit number', () => {
    const idx = new SlotIndex();
    idx.set(0xcb00710a, 0, 7);
    expect(idx.get(0xcb00710a | 0, 0)).toBe(7);
    expect(idx.get(0xcb00710a, 1)).toBe(-1);
  });

  it('grows past its first size and keeps every entry', () => {
    const idx = new SlotIndex(2);
    for (let s = 0; s < 1000; s++) idx.set((0xc6336400 + s) >>> 0, s & 0xffff, s);
    expect(idx.size).toBe(1000);
    for (let s = 0; s < 1000; s++) expect(idx.get((0xc6336400 + s) >>> 0, s & 0xffff)).toBe(s);
  });
});
