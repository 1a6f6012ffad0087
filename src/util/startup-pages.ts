// Start-up pages: once the gateway has started, the pages of mapped files that only
// start-up used are given back to the kernel (docs/memory.md, "Start-up pages").
//
// Most of a Node process's resident set is its own binary: starting Node and loading the
// modules touches ~30 MB of its code and read-only data, and the kernel maps more around
// every page touched (fault-around; whole large folios on newer kernels), none of which
// leaves the resident set again. The gateway afterwards runs a small part of that code.
// Dropping the mappings (madvise MADV_DONTNEED, native/pages.c) takes the pages out of the
// process's resident set; they stay in the page cache, and whatever is used again comes
// back by a minor fault, without I/O. Measured with 500 peers through scripts/bench: peak
// (VmHWM) 69.3 -> 52.5 MB, resident through the tests 65-71 -> 41-46 MB.
//
// Only a private mapping that was never written qualifies: a copied-on-write page dropped
// would lose what was written to it. /proc/self/smaps says which: not writable, private,
// Anonymous: 0 (no page of it was ever copied), nothing locked; and /proc/self/maps must
// list the very same mappings, which rules out an emulator's smaps (see releaseStartupPages).
import { readFileSync } from 'node:fs';
import type { Clock, Timer } from './clock.js';
import type { Logger } from './log.js';

export interface Mapping {
  start: number;
  end: number;
  /** "r-xp": read, write, execute, private/shared. */
  perms: string;
  /** The file, or '' / "[heap]" / "[stack]" for those that are none. */
  path: string;
  rssKb: number;
  anonymousKb: number;
  lockedKb: number;
}

// One pass of one regular expression over the whole text rather than a split into its
// ~2 500 lines: a 500-peer gateway's smaps is ~120 KB, parsed on the event loop (1.3 against
// 2.0 ms, cold).
const LINES = /^([0-9a-f]+)-([0-9a-f]+) ([-r][-w][-x][ps]) \S+ \S+ \S+ *(.*)$|^(Rss|Anonymous|Locked): +(\d+) kB$/gm;

/** The mappings of a /proc/<pid>/smaps text, in its order. Lines it does not know are skipped. */
export function parseSmaps(text: string): Mapping[] {
  const out: Mapping[] = [];
  let cur: Mapping | null = null;
  LINES.lastIndex = 0;
  for (let m = LINES.exec(text); m !== null; m = LINES.exec(text)) {
    if (m[1] !== undefined) {
      cur = { start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], path: m[4], rssKb: 0, anonymousKb: 0, lockedKb: 0 };
      out.push(cur);
    } else if (cur) {
      const kb = Number(m[6]);
      if (m[5] === 'Rss') cur.rssKb = kb;
      else if (m[5] === 'Anonymous') cur.anonymousKb = kb;
      else cur.lockedKb = kb;
    }
  }
  return out;
}

const isFile = (m: Mapping) => m.path.startsWith('/');

/** A mapping whose pages can be dropped and found again in the file: a file (not deleted),
 *  private, not writable, no page of it ever copied, none locked, something resident. */
export function releasable(m: Mapping): boolean {
  return (
    isFile(m) &&
    !m.path.endsWith(' (deleted)') &&
    m.perms[1] === '-' &&
    m.perms[3] === 'p' &&
    m.anonymousKb === 0 &&
    m.lockedKb === 0 &&
    m.rssKb > 0 &&
    m.end > m.start
  );
}

export interface ReleaseDeps {
  releasePages(ranges: Float64Array): number;
  /** /proc/self/smaps. */
  readSmaps?: () => string;
  /** /proc/self/maps. */
  readMaps?: () => string;
  /** The resident set in bytes now (process.memoryUsage.rss). */
  rss?: () => number;
}

export interface ReleaseResult {
  /** How many mappings were given back, and what of them was resident. */
  mappings: number;
  /** Set when nothing was given back because /proc/self/smaps and /proc/self/maps did not
   *  list the same mappings (see releaseStartupPages). */
  skipped?: string;
  residentMb: number;
  rssBeforeMb: number;
  rssAfterMb: number;
}

const MB = 1024 * 1024;
const round = (n: number) => Math.round(n * 10) / 10;

const key = (m: Mapping) => `${m.start}-${m.end} ${m.perms} ${m.path}`;

/** null when two readings list the same mappings of files in the same order, else the first
 *  difference, for the log. Anonymous mappings are left out of the comparison: other threads
 *  (libuv's pool starting, malloc arenas) make and drop them at any time, and they are never
 *  given back anyway. */
function difference(smapsAll: Mapping[], mapsAll: Mapping[]): string | null {
  const smaps = smapsAll.filter(isFile);
  const maps = mapsAll.filter(isFile);
  const n = Math.max(smaps.length, maps.length);
  for (let i = 0; i < n; i++) {
    const a = smaps[i] ? key(smaps[i]) : 'nothing';
    const b = maps[i] ? key(maps[i]) : 'nothing';
    if (a !== b) return `file mapping ${i} of ${smaps.length} in smaps is ${a}, of ${maps.length} in maps ${b}`;
  }
  return null;
}

/** Gives back the resident pages of every releasable mapping, provided /proc/self/smaps and
 *  /proc/self/maps list exactly the same mappings of files. In a native process they always
 *  do (but for one made between the two reads: then it reads both again, once). Under an
 *  emulator such as qemu-user they do not: its maps is the guest's, its smaps its own
 *  (qemu 7.2). Matching single mappings is not enough: a few ranges of the emulator's smaps
 *  matched the guest's maps by chance, and giving them back crashed the armhf gateway under
 *  qemu. So then nothing is given back, and `skipped` says why.
 *  Throws what reading /proc or the madvise throws (no /proc: ENOENT). */
export function releaseStartupPages(deps: ReleaseDeps): ReleaseResult {
  const readSmaps = deps.readSmaps ?? (() => readFileSync('/proc/self/smaps', 'utf8'));
  const readMaps = deps.readMaps ?? (() => readFileSync('/proc/self/maps', 'utf8'));
  const rss = deps.rss ?? (() => process.memoryUsage.rss());
  const before = rss();
  let all = parseSmaps(readSmaps());
  let differ = difference(all, parseSmaps(readMaps()));
  if (differ !== null) {
    all = parseSmaps(readSmaps());
    differ = difference(all, parseSmaps(readMaps()));
  }
  const chosen = differ === null ? all.filter(releasable) : [];
  const ranges = new Float64Array(chosen.length * 2);
  let residentKb = 0;
  chosen.forEach((m, i) => {
    ranges[2 * i] = m.start;
    ranges[2 * i + 1] = m.end - m.start;
    residentKb += m.rssKb;
  });
  if (chosen.length > 0) deps.releasePages(ranges);
  return {
    mappings: chosen.length,
    ...(differ === null ? {} : { skipped: `/proc/self/smaps and /proc/self/maps list different mappings (an emulator?): ${differ}` }),
    residentMb: round(residentKb / 1024),
    rssBeforeMb: round(before / MB),
    rssAfterMb: round(rss() / MB),
  };
}

/** When, after READY, the pages are given back again: at once (what starting the gateway
 *  touched), and once the first rounds have run (the first probes, status.json, MQTT's
 *  connect and first publish, the first checks) and their one-off code is done. */
export const RELEASE_AFTER_READY_MS: readonly number[] = [0, 10_000];

export interface StartupPagesDeps extends ReleaseDeps {
  clock: Clock;
  log: Logger;
}

/** The gateway's start-up pages given back at its stages: `release('loaded')` once the
 *  modules are loaded (Node's bootstrap and the module loader are done), then `afterReady()`.
 *  Each release is logged with what it gave and how long it took. A skip (the process's own
 *  mappings cannot be trusted: an emulator) is one info line and ends the schedule, as the
 *  next stage would find the same; a failure is one warning (it costs memory, not function)
 *  and ends it too. */
export class StartupPages {
  private ended = false;
  private timers: Timer[] = [];

  constructor(private readonly deps: StartupPagesDeps) {}

  release(stage: string): ReleaseResult | null {
    if (this.ended) return null;
    const t0 = this.deps.clock.monotonic();
    try {
      const r = releaseStartupPages(this.deps);
      const ms = round(this.deps.clock.monotonic() - t0);
      if (r.skipped) {
        this.end();
        this.deps.log.info('gave back no start-up pages, and will not try again', { stage, skipped: r.skipped, ms });
        return r;
      }
      this.deps.log.info('gave back start-up pages of mapped files', {
        stage,
        mappings: r.mappings,
        residentMb: r.residentMb,
        rssMb: `${r.rssBeforeMb} -> ${r.rssAfterMb}`,
        ms,
      });
      return r;
    } catch (e) {
      this.end();
      this.deps.log.warn('could not give back start-up pages; it costs memory, not function, and is not tried again (board.releaseStartupPages: false turns it off)', {
        stage,
        err: (e as Error).message,
      });
      return null;
    }
  }

  afterReady(delaysMs: readonly number[] = RELEASE_AFTER_READY_MS): void {
    if (this.ended) return;
    this.timers = delaysMs.map((ms, i) => this.deps.clock.after(ms, () => this.release(i === 0 ? 'ready' : 'settled')));
  }

  stop(): void {
    for (const t of this.timers) t.cancel();
    this.timers = [];
  }

  private end(): void {
    this.ended = true;
    this.stop();
  }
}
