import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatDuration, MAX_DURATION_MS, parseDuration } from '../../src/util/duration.js';

const ms = fc.integer({ min: 0, max: MAX_DURATION_MS });

describe('parseDuration', () => {
  it.each([
    [500, 500],
    [0, 0],
    ['500', 500],
    ['500ms', 500],
    ['25s', 25_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['1m30s', 90_000],
    ['1h2m3s4ms', 3_723_004],
    [' 25s ', 25_000],
    ['25 s', 25_000],
    ['0.0005s', 1], // rounded to the millisecond
  ])('%j -> %d ms', (input, expected) => {
    expect(parseDuration(input)).toBe(expected);
  });

  it.each([
    [-1, 'is negative'],
    ['-5s', 'is negative'],
    [NaN, 'NaN is not a duration'],
    [1.5, 'is not a whole number of milliseconds'],
    [Infinity, 'is not a whole number'],
    ['', 'is not a duration'],
    ['5d', 'unknown unit "d" (use ms, s, m or h)'],
    ['5 seconds', 'unknown unit "seconds"'],
    ['1.5', 'needs a unit after 1.5'],
    ['s', 'is not a duration'],
    ['1s!', 'is not a duration'],
    ['25days', 'unknown unit "days"'],
    [null, 'is not a duration'],
    [true, 'is not a duration'],
    [{ ms: 5 }, 'is not a duration'],
    [MAX_DURATION_MS + 1, 'is too long'],
    ['600h', 'is too long'],
  ])('rejects %j', (input, message) => {
    expect(() => parseDuration(input)).toThrow(message);
  });

  it('keeps integer milliseconds as they are, as numbers and as strings', () => {
    fc.assert(fc.property(ms, (n) => parseDuration(n) === n && parseDuration(String(n)) === n && parseDuration(`${n}ms`) === n));
  });

  it('scales seconds, minutes and hours', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 500 }), (n) => {
        return parseDuration(`${n}s`) === n * 1000 && parseDuration(`${n}m`) === n * 60_000 && parseDuration(`${n}h`) === n * 3_600_000;
      }),
    );
  });

  it('reads back what formatDuration writes', () => {
    fc.assert(fc.property(ms, (n) => parseDuration(formatDuration(n)) === n));
  });

  it('throws nothing but a plain Error, and returns only safe whole numbers', () => {
    const near = fc.string({ unit: fc.constantFrom('1', '5', '0', '.', '-', ' ', 'm', 's', 'h', 'x'), maxLength: 12 });
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), near, fc.anything({ maxDepth: 2 })), (v) => {
        try {
          const n = parseDuration(v);
          return Number.isSafeInteger(n) && n >= 0 && n <= MAX_DURATION_MS;
        } catch (e) {
          return e instanceof Error && e.constructor === Error && e.message.length > 0;
        }
      }),
      // Found by CI: an object whose toString is not a function made the message itself throw.
      { examples: [[{ toString: '' }], [{ valueOf: 1, toString: null }]] },
    );
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [250, '250ms'],
    [1500, '1.5s'],
    [25_000, '25s'],
    [90_000, '1m30s'],
    [3_600_000, '1h'],
    [3_660_500, '1h1m0.5s'],
  ])('%d ms -> %s', (n, text) => {
    expect(formatDuration(n)).toBe(text);
  });
});
