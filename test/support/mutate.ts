// Mutated inputs for fuzz properties: start from something valid and change a few bytes, so a
// parser of untrusted input is driven past its first checks (pure random bytes seldom get
// there) and its accepting branch is reached too.
//
//   fc.property(mutated(validResponse, { head: 16 }), (b) => { ... })
//
// Positions are drawn as plain numbers and taken modulo the length at the time of the change,
// so a mutation stays meaningful while fast-check shrinks the buffer under it. A property that
// uses these should also count how often its parser accepted, and assert that it did, or it can
// silently become vacuous.
import fc from 'fast-check';

export type Mutation =
  | { kind: 'set'; at: number; value: number }
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'remove'; at: number; count: number };

/** One mutation; `head`: half of the positions fall in the first `head` bytes (the headers). */
export function mutation(head = 64): fc.Arbitrary<Mutation> {
  const at = fc.oneof(fc.integer({ min: 0, max: Math.max(0, head - 1) }), fc.nat({ max: 0xffff }));
  const bytes = fc.uint8Array({ minLength: 1, maxLength: 16 });
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), at, value: fc.integer({ min: 0, max: 255 }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('flip' as const), at, bit: fc.integer({ min: 0, max: 7 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), bytes }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('insert' as const), at, bytes }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('remove' as const), at, count: fc.integer({ min: 1, max: 8 }) }) },
  );
}

/** A copy of `b` with the mutations applied in order. */
export function applyMutations(b: Uint8Array, ms: readonly Mutation[]): Buffer {
  let out = Buffer.from(b);
  for (const m of ms) {
    // A byte of the buffer; for truncate and insert, a place (0..length).
    const pos = (n: number) => n % (m.kind === 'truncate' || m.kind === 'insert' ? out.length + 1 : Math.max(1, out.length));
    switch (m.kind) {
      case 'set':
        if (out.length > 0) out[pos(m.at)] = m.value;
        break;
      case 'flip':
        if (out.length > 0) out[pos(m.at)] ^= 1 << m.bit;
        break;
      case 'truncate':
        out = out.subarray(0, pos(m.at));
        break;
      case 'extend':
        out = Buffer.concat([out, m.bytes]);
        break;
      case 'insert': {
        const at = pos(m.at);
        out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)]);
        break;
      }
      case 'remove': {
        if (out.length === 0) break;
        const at = pos(m.at);
        out = Buffer.concat([out.subarray(0, at), out.subarray(at + m.count)]);
        break;
      }
    }
  }
  return Buffer.from(out);
}

/**
 * `valid` as it is (about a third of the time) or with 1..maxMutations mutations, biased toward
 * the first `head` bytes.
 */
export function mutated(valid: fc.Arbitrary<Uint8Array>, { head = 64, maxMutations = 4 } = {}): fc.Arbitrary<Buffer> {
  const ms = fc.oneof(fc.constant([] as Mutation[]), fc.array(mutation(head), { minLength: 1, maxLength: maxMutations }), fc.array(mutation(head), { minLength: 1, maxLength: 1 }));
  return fc.tuple(valid, ms).map(([b, m]) => applyMutations(b, m));
}
