// Durations in config: whole milliseconds, or Go-style strings ("500ms",
// "25s", "1m30s", "1.5s") because flannel and systemd users write them so.
// Every duration ends up in a Node timer, and setTimeout() fires at once for
// anything above 2^31-1 ms, so longer values are refused here.

import { show } from './show.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
export const MAX_DURATION_MS = 2 ** 31 - 1;

const PART_RE = /(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*/y;
const EXAMPLE = 'milliseconds or a string like "500ms", "25s", "2m", "1h"';


function checkRange(ms: number, v: unknown): number {
  if (ms > MAX_DURATION_MS) throw new Error(`${show(v)} is too long (at most ${MAX_DURATION_MS} ms, about 24 days)`);
  return ms;
}

function parseText(v: string): number {
  const s = v.trim();
  if (s === '') throw new Error(`${show(v)} is not a duration (expected ${EXAMPLE})`);
  if (s.startsWith('-')) throw new Error(`${show(v)} is negative; a duration must be 0 or more`);
  if (/^\d+$/.test(s)) return checkRange(Number(s), v);

  let total = 0;
  PART_RE.lastIndex = 0;
  while (PART_RE.lastIndex < s.length) {
    const at = PART_RE.lastIndex;
    const m = PART_RE.exec(s);
    if (!m || m.index !== at) throw new Error(`${show(v)} is not a duration (expected ${EXAMPLE})`);
    const [, num, unit] = m;
    if (unit === '') throw new Error(`${show(v)} needs a unit after ${num} (use ms, s, m or h)`);
    const factor = UNIT_MS[unit];
    if (factor === undefined) throw new Error(`${show(v)} has an unknown unit "${unit}" (use ms, s, m or h)`);
    total += Number(num) * factor;
  }
  return checkRange(Math.round(total), v);
}

/** Milliseconds from an integer or a duration string. Throws an Error that names the value. */
export function parseDuration(v: unknown): number {
  if (typeof v === 'number') {
    if (Number.isNaN(v)) throw new Error(`NaN is not a duration (expected ${EXAMPLE})`);
    if (v < 0) throw new Error(`${v} is negative; a duration must be 0 or more`);
    if (!Number.isInteger(v)) throw new Error(`${v} is not a whole number of milliseconds`);
    return checkRange(v, v);
  }
  if (typeof v === 'string') return parseText(v);
  throw new Error(`${show(v)} is not a duration (expected ${EXAMPLE})`);
}

/** 90000 -> "1m30s", 1500 -> "1.5s", 250 -> "250ms": for messages and logs. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${ms / 1000}s`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const rest = ms % 60_000;
  return `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${rest ? `${rest / 1000}s` : ''}`;
}
