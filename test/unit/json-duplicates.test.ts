// firstDuplicateKey: the first key a JSON object holds twice, in text JSON.parse accepted.
// Property tests write JSON with a serializer of their own that can repeat one object's key
// (spelled the same or with a \u escape) and knows where the repeat starts.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { firstDuplicateKey } from '../../src/config/json-duplicates.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * JSON text of `v` with `ws` between tokens; object number `dupAt` (in the order their '{'
 * appear) that has keys repeats its first key at the end, escaped when `escape`. Returns the
 * text and where that repeat starts (-1: none written).
 */
function write(v: Json, ws: string, dupAt: number, escape: boolean): { text: string; pos: number; key: string | null } {
  let text = '';
  let objects = 0;
  let pos = -1;
  let key: string | null = null;
  const go = (x: Json) => {
    if (Array.isArray(x)) {
      text += `[${ws}`;
      x.forEach((e, i) => {
        if (i > 0) text += `${ws},${ws}`;
        go(e);
      });
      text += `${ws}]`;
    } else if (x !== null && typeof x === 'object') {
      const mine = objects++;
      const keys = Object.keys(x);
      text += `{${ws}`;
      keys.forEach((k, i) => {
        if (i > 0) text += `${ws},${ws}`;
        text += `${JSON.stringify(k)}${ws}:${ws}`;
        go(x[k]);
      });
      if (mine === dupAt && keys.length > 0) {
        const k = (key = keys[0]);
        text += `${ws},${ws}`;
        pos = text.length;
        // The same key as JSON.parse reads it, its first character (UTF-16 unit) written as \uXXXX.
        text += escape && k !== '' ? `"\\u${k.charCodeAt(0).toString(16).padStart(4, '0')}${JSON.stringify(k.slice(1)).slice(1)}` : JSON.stringify(k);
        text += `${ws}:${ws}"again"`;
      }
      text += `${ws}}`;
    } else {
      text += JSON.stringify(x);
    }
  };
  go(v);
  return { text, pos, key };
}

const json = fc.jsonValue() as fc.Arbitrary<Json>;
const space = fc.constantFrom('', ' ', '\n  ', '\t');

describe('firstDuplicateKey', () => {
  it('none in JSON whose objects hold each key once, whatever the values and spacing', () => {
    fc.assert(fc.property(json, space, (v, ws) => firstDuplicateKey(write(v, ws, -1, false).text) === null), { numRuns: 500 });
  });

  it('finds a repeated key, spelled the same or escaped, at its second place', () => {
    fc.assert(
      fc.property(json, space, fc.nat(20), fc.boolean(), (v, ws, at, escape) => {
        const { text, pos, key } = write(v, ws, at, escape);
        JSON.parse(text); // the serializer writes valid JSON
        const found = firstDuplicateKey(text);
        if (pos < 0) return found === null;
        return found !== null && found.pos === pos && found.key === key;
      }),
      { numRuns: 500 },
    );
  });

  it('examples: quotes, braces and colons inside strings; one key in two objects; escapes compared decoded', () => {
    expect(firstDuplicateKey('{"a":"{\\"a\\":1,","b":"}","c":[{"a":1},{"a":2}],"d":{"a":{"a":{}}}}')).toBeNull();
    const at = (text: string, key: string) => ({ key, pos: text.lastIndexOf(`"${key}"`) });
    expect(firstDuplicateKey('{"a":1,"b":{},"a":2}')).toEqual({ key: 'a', pos: 14 });
    const peers = '{"peers":[{"name":"x","mac":"0e:00","name":"y"}],"peers":[]}';
    expect(firstDuplicateKey(peers)).toEqual({ key: 'name', pos: peers.indexOf('"name"', 20) }); // the first repeat in the text
    expect(firstDuplicateKey('{"x":[1,{"y":{}}],"x":2}')).toEqual(at('{"x":[1,{"y":{}}],"x":2}', 'x'));
    expect(firstDuplicateKey('{"a":1,"\\u0061":2}')).toEqual({ key: 'a', pos: 7 });
    expect(firstDuplicateKey('{"\\\\":1,"\\\\":2}')).toEqual({ key: '\\', pos: 8 });
    expect(firstDuplicateKey('[{},{"":1,"":2}]')).toEqual({ key: '', pos: 10 });
    expect(firstDuplicateKey('"plain"')).toBeNull();
    expect(firstDuplicateKey('{}')).toBeNull();
  });
});
