// The streaming splitter of a JSON object's array member (src/cluster/json-members.ts), which
// reads the Kubernetes API's Node lists: whatever the chunking, key order, whitespace and
// escapes, it gives what JSON.parse gives; and what JSON.parse refuses, it refuses too.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { JsonMemberSplitter } from '../../src/cluster/json-members.js';

/** Splits `text` fed in chunks cut at `cuts` (byte offsets); the elements parsed and the rest. */
function split(text: string | Buffer, cuts: number[] = [], member = 'items'): { items: unknown[]; rest: unknown } {
  const buf = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const items: unknown[] = [];
  const s = new JsonMemberSplitter(member, (t) => items.push(JSON.parse(t)));
  const at = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  for (const c of [...at, buf.length]) {
    s.push(buf.subarray(from, c));
    from = c;
  }
  return { items, rest: s.end() };
}

/** What JSON.parse makes of it, the member taken out as the splitter does. */
function reference(text: string | Buffer, member = 'items'): { items: unknown[]; rest: unknown } {
  const o = JSON.parse(Buffer.isBuffer(text) ? text.toString('utf8') : text) as Record<string, unknown>;
  const items = Array.isArray(o[member]) ? (o[member] as unknown[]) : [];
  return { items, rest: Array.isArray(o[member]) ? { ...o, [member]: [] } : o };
}

const envelope = fc.record({
  items: fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 8 }),
  others: fc.dictionary(fc.string({ maxLength: 6 }).filter((k) => k !== 'items' && k !== '__proto__'), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 4 }),
  itemsAt: fc.nat(),
  indent: fc.constantFrom(0, 1, 2),
});

describe('JsonMemberSplitter', () => {
  it('a Kubernetes list: the Nodes one by one, the envelope with items []', () => {
    const list = '{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"4711","continue":"abc"},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b","labels":{"x":"[{\\"}"}}}]}\n';
    expect(split(list)).toEqual({
      items: [{ metadata: { name: 'a' } }, { metadata: { name: 'b', labels: { x: '[{"}' } } }],
      rest: { kind: 'NodeList', apiVersion: 'v1', metadata: { resourceVersion: '4711', continue: 'abc' }, items: [] },
    });
  });

  it('property: any object, any key order and whitespace, cut anywhere: what JSON.parse gives', () => {
    fc.assert(
      fc.property(envelope, fc.array(fc.nat(), { maxLength: 12 }), ({ items, others, itemsAt, indent }, cuts) => {
        const keys = Object.keys(others);
        const at = itemsAt % (keys.length + 1);
        const obj: Record<string, unknown> = {};
        for (const [i, k] of [...keys.slice(0, at), 'items', ...keys.slice(at)].entries()) obj[k] = k === 'items' && i === at ? items : others[k];
        const text = JSON.stringify(obj, null, indent);
        expect(split(text, cuts)).toEqual(reference(text));
      }),
      { numRuns: 400 },
    );
  });

  it('multi-byte characters cut between chunks, and an escaped member name, as JSON.parse reads them', () => {
    const text = '{"it\\u0065ms":["añ€😀",{"k":"\\u00e9"}],"m":"😀"}';
    const buf = Buffer.from(text);
    for (let c = 0; c <= buf.length; c++) expect(split(buf, [c])).toEqual(reference(text));
  });

  it('a member that is not an array stays in the envelope; an empty array gives nothing', () => {
    expect(split('{"items":null,"a":[1]}')).toEqual({ items: [], rest: { items: null, a: [1] } });
    expect(split('{ "items" : [ ] }')).toEqual({ items: [], rest: { items: [] } });
    expect(split('{"a":{"items":[1,2]}}')).toEqual({ items: [], rest: { a: { items: [1, 2] } } });
  });

  it.each([
    ['cut short', '{"items":[{"a":1}'],
    ['cut in a string', '{"items":["ab'],
    ['an empty element', '{"items":[1,,2]}'],
    ['a leading comma', '{"items":[,1]}'],
    ['a trailing comma', '{"items":[1,]}'],
    ['more after the end', '{"items":[]} {}'],
    ['unbalanced', '{"items":[]}}'],
    ['a bad element', '{"items":[tru]}'],
    ['a bad envelope', '{"items":[1] "a":2}'],
  ])('refuses what is not JSON: %s', (_why, text) => {
    expect(() => split(text)).toThrow();
    expect(() => JSON.parse(text)).toThrow();
  });

  it('refuses JSON that is no list: not an object, or the member twice (JSON.parse would keep the last)', () => {
    expect(() => split('[1,2]')).toThrow('not a JSON object');
    expect(() => split('{"items":[1],"items":[2]}')).toThrow('"items" twice');
  });

  it('property: what it accepts, JSON.parse accepts and reads the same (corrupted lists)', () => {
    const base = JSON.stringify({ kind: 'NodeList', metadata: { resourceVersion: '7' }, items: [{ metadata: { name: 'a', annotations: { k: 'v,"]' } } }, [1, { b: null }], 'x'] });
    const chars = [...'{}[],:"\\ a1'];
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(base.length - 1), fc.constantFrom(...chars), fc.boolean()), { minLength: 1, maxLength: 3 }), fc.array(fc.nat(), { maxLength: 4 }), (edits, cuts) => {
        let t = base;
        for (const [at, ch, insert] of edits) t = t.slice(0, at) + ch + t.slice(at + (insert ? 0 : 1));
        let got: ReturnType<typeof split> | null = null;
        try {
          got = split(t, cuts);
        } catch {
          return; // refused: nothing to compare
        }
        expect(got).toEqual(reference(t));
      }),
      { numRuns: 2000 },
    );
  });
});
