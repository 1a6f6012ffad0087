// util/startup-pages.ts: which mappings of /proc/self/smaps may be given back (only private,
// never-written, unlocked file mappings: dropping a copied page would lose what was written
// to it), and when. The madvise itself is tested on a real process in
// test/native/pages.test.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSmaps, releasable, releaseStartupPages, StartupPages, type Mapping } from '../../src/util/startup-pages.js';
import { ManualClock } from '../support/clock.js';
import { CaptureLog } from '../support/kube-harness.js';

/** One mapping as the kernel writes it in smaps (6.x; fields we do not read included). */
function block(m: Mapping): string {
  const hex = (n: number) => n.toString(16).padStart(12, '0');
  const header = `${hex(m.start)}-${hex(m.end)} ${m.perms} 00002000 fe:00 260386`;
  const size = (m.end - m.start) / 1024;
  return [
    m.path ? `${header.padEnd(73)}${m.path}` : `${header} `,
    `Size:           ${String(size).padStart(8)} kB`,
    'KernelPageSize:        4 kB',
    `Rss:            ${String(m.rssKb).padStart(8)} kB`,
    `Pss:            ${String(m.rssKb).padStart(8)} kB`,
    'Private_Clean:         8 kB',
    'Referenced:            8 kB',
    `Anonymous:      ${String(m.anonymousKb).padStart(8)} kB`,
    'AnonHugePages:         0 kB',
    'Swap:                  0 kB',
    `Locked:         ${String(m.lockedKb).padStart(8)} kB`,
    'THPeligible:           0',
    'VmFlags: rd ex mr mw me',
  ].join('\n');
}

const PAGE = 4096;
const node = (over: Partial<Mapping>): Mapping => ({
  start: 0x5555_0000_0000,
  end: 0x5555_0000_0000 + 64 * PAGE,
  perms: 'r-xp',
  path: '/usr/bin/node',
  rssKb: 256,
  anonymousKb: 0,
  lockedKb: 0,
  ...over,
});

describe('parseSmaps', () => {
  it('reads each mapping: range, permissions, path (none, a file, a pseudo-file) and its Rss, Anonymous and Locked', () => {
    const ms = [
      node({}),
      node({ start: 0x5555_0010_0000, end: 0x5555_0010_4000, perms: 'r--p', anonymousKb: 16, rssKb: 16 }),
      node({ start: 0x7f00_0000_0000, end: 0x7f00_0010_0000, perms: 'rw-p', path: '', rssKb: 1024, anonymousKb: 1024 }),
      node({ start: 0x7f00_0020_0000, end: 0x7f00_0020_1000, perms: 'r--s', path: '/dev/shm/a file with spaces' }),
      node({ start: 0x7ffd_0000_0000, end: 0x7ffd_0002_1000, perms: 'rw-p', path: '[stack]', lockedKb: 4 }),
    ];
    expect(parseSmaps(ms.map(block).join('\n') + '\n')).toEqual(ms);
  });

  it('property: any list of mappings written as smaps reads back the same', () => {
    const mapping = fc.record({
      start: fc.integer({ min: 1, max: 2 ** 35 }).map((p) => p * PAGE),
      pages: fc.integer({ min: 1, max: 2 ** 12 }),
      perms: fc.tuple(fc.constantFrom('r', '-'), fc.constantFrom('w', '-'), fc.constantFrom('x', '-'), fc.constantFrom('p', 's')).map((t) => t.join('')),
      path: fc.constantFrom('', '/usr/bin/node', '/usr/lib/x86_64-linux-gnu/libc.so.6', '[heap]', '[vdso]', '/tmp/gone (deleted)'),
      rssKb: fc.nat(1 << 20),
      anonymousKb: fc.nat(1 << 20),
      lockedKb: fc.nat(64),
    });
    fc.assert(
      fc.property(fc.array(mapping, { maxLength: 20 }), (arr) => {
        const ms: Mapping[] = arr.map(({ pages, ...m }) => ({ ...m, end: m.start + pages * PAGE }));
        expect(parseSmaps(ms.map(block).join('\n'))).toEqual(ms);
      }),
    );
  });

  it('skips lines it does not know (a truncated read, a field before any header)', () => {
    expect(parseSmaps('Rss: 12 kB\ngarbage\n')).toEqual([]);
    expect(parseSmaps(block(node({})).split('\n').slice(0, 4).join('\n'))).toEqual([node({ anonymousKb: 0, lockedKb: 0 })]);
  });
});

describe('releasable', () => {
  it('only a private, unwritten, unlocked file mapping with something resident', () => {
    expect(releasable(node({}))).toBe(true);
    expect(releasable(node({ perms: 'r--p' }))).toBe(true);
    expect(releasable(node({ perms: '---p' }))).toBe(true);
    expect(releasable(node({ perms: 'rw-p' })), 'writable').toBe(false);
    expect(releasable(node({ perms: 'r--s' })), 'shared').toBe(false);
    expect(releasable(node({ perms: 'r--p', anonymousKb: 4 })), 'relocated (copied) pages').toBe(false);
    expect(releasable(node({ lockedKb: 4 })), 'locked').toBe(false);
    expect(releasable(node({ rssKb: 0 })), 'nothing resident').toBe(false);
    expect(releasable(node({ path: '' })), 'anonymous').toBe(false);
    expect(releasable(node({ path: '[vdso]' })), 'pseudo-file').toBe(false);
    expect(releasable(node({ path: '/tmp/x.node (deleted)' })), 'deleted file').toBe(false);
  });
});

describe('releaseStartupPages', () => {
  it('property: passes exactly the releasable mappings, as [start, length] pairs, and counts their resident memory', () => {
    const mapping = fc.record({
      page: fc.integer({ min: 1, max: 2 ** 30 }),
      pages: fc.integer({ min: 1, max: 512 }),
      perms: fc.constantFrom('r-xp', 'r--p', 'rw-p', 'r--s', 'rwxp', '---p'),
      path: fc.constantFrom('', '/usr/bin/node', '[heap]', '/x (deleted)'),
      rssKb: fc.nat(2048),
      anonymousKb: fc.constantFrom(0, 0, 4),
      lockedKb: fc.constantFrom(0, 0, 0, 8),
    });
    fc.assert(
      fc.property(fc.array(mapping, { maxLength: 30 }), (arr) => {
        const ms: Mapping[] = arr.map(({ page, pages, ...m }) => ({ ...m, start: page * PAGE, end: (page + pages) * PAGE }));
        const calls: number[][] = [];
        const r = releaseStartupPages({
          readSmaps: () => ms.map(block).join('\n'),
          readMaps: () => ms.map(block).join('\n'),
          releasePages: (ranges) => {
            calls.push([...ranges]);
            return 0;
          },
          rss: () => 50 * 1024 * 1024,
        });
        const want = ms.filter(releasable);
        expect(r.mappings).toBe(want.length);
        expect(calls).toEqual(want.length ? [want.flatMap((m) => [m.start, m.end - m.start])] : []);
        // To a tenth of a MB, rounded half up as the log shows it (1 280 kB is 1.3 MB: a
        // toBeCloseTo(…, 1) failed exactly on such ties).
        expect(r.residentMb).toBe(Math.round((want.reduce((a, m) => a + m.rssKb, 0) / 1024) * 10) / 10);
        expect(r.rssBeforeMb).toBe(50);
        expect(r.skipped).toBeUndefined();
      }),
    );
  });

  it('gives nothing back when smaps and maps list different mappings (an emulator), after reading both once more', () => {
    const ours = node({});
    const theirs = node({ start: 0x7f00_0000_0000, end: 0x7f00_0010_0000, path: '/usr/bin/qemu-arm-static' });
    const header = (m: Mapping) => block(m).split('\n')[0];
    let smapsReads = 0;
    const calls: number[][] = [];
    const run = (maps: string) =>
      releaseStartupPages({
        readSmaps: () => {
          smapsReads++;
          return [ours, theirs].map(block).join('\n');
        },
        readMaps: () => maps,
        releasePages: (ranges) => {
          calls.push([...ranges]);
          return 0;
        },
        rss: () => 0,
      });
    // The emulator's own mapping is missing from maps: nothing at all, although `ours` matches.
    expect(run(header(ours))).toMatchObject({ mappings: 0, skipped: expect.stringContaining('list different mappings') });
    expect(calls).toEqual([]);
    expect(smapsReads).toBe(2);
    // The same mappings with other permissions in maps (qemu maps guest code read-only).
    expect(run([header({ ...ours, perms: 'r--p' }), header(theirs)].join('\n')).mappings).toBe(0);
    expect(calls).toEqual([]);
    // Listed the same: both given back.
    expect(run([ours, theirs].map(header).join('\n'))).toMatchObject({ mappings: 2 });
    expect(calls).toEqual([[ours.start, ours.end - ours.start, theirs.start, theirs.end - theirs.start]]);
  });

  it('anonymous mappings made or dropped meanwhile (thread stacks, arenas) are no disagreement', () => {
    const file = node({});
    const stack = node({ start: 0x7f00_0000_0000, end: 0x7f00_0080_0000, perms: 'rw-p', path: '', anonymousKb: 8 });
    const calls: number[][] = [];
    const r = releaseStartupPages({
      readSmaps: () => [file, stack].map(block).join('\n'),
      readMaps: () => block(file).split('\n')[0],
      releasePages: (ranges) => {
        calls.push([...ranges]);
        return 0;
      },
      rss: () => 0,
    });
    expect(r.skipped).toBeUndefined();
    expect(calls).toEqual([[file.start, file.end - file.start]]);
  });

  it('a mapping made between the two reads is not a disagreement: both are read again', () => {
    const a = node({});
    const b = node({ start: 0x7f00_0000_0000, end: 0x7f00_0010_0000 });
    let mapsReads = 0;
    const r = releaseStartupPages({
      readSmaps: () => block(a),
      // The first maps read already sees a mapping the smaps read before it did not.
      readMaps: () => (++mapsReads === 1 ? [a, b] : [a]).map((m) => block(m).split('\n')[0]).join('\n'),
      releasePages: () => 0,
      rss: () => 0,
    });
    expect(mapsReads).toBe(2);
    expect(r).toMatchObject({ mappings: 1 });
    expect(r.skipped).toBeUndefined();
  });
});

describe('StartupPages', () => {
  const smaps = block(node({})) + '\n' + block(node({ start: 0x7f00_0000_0000, end: 0x7f00_0001_0000, perms: 'rw-p', path: '' }));

  /** `maps`: what /proc/self/maps lists (by default the same as smaps, as natively). */
  function rig(fail = false, maps = smaps) {
    const clock = new ManualClock();
    const log = new CaptureLog();
    const released: number[][] = [];
    let rss = 60 * 1024 * 1024;
    const pages = new StartupPages({
      clock,
      log,
      readSmaps: () => smaps,
      readMaps: () => maps,
      rss: () => rss,
      releasePages: (r) => {
        if (fail) throw Object.assign(new Error('madvise 0x1000+4096: cannot allocate memory (ENOMEM)'), { code: 'ENOMEM' });
        released.push([...r]);
        rss -= 20 * 1024 * 1024;
        return r[1];
      },
    });
    return { clock, log, released, pages };
  }

  it('gives back at each stage: loaded, then at READY and 10 s after; logs what each gave', () => {
    const { clock, log, released, pages } = rig();
    expect(pages.release('loaded')).toEqual({ mappings: 1, residentMb: 0.3, rssBeforeMb: 60, rssAfterMb: 40 });
    pages.afterReady();
    expect(released).toHaveLength(1);
    clock.advance(0);
    expect(released).toHaveLength(2);
    clock.advance(9_999);
    expect(released).toHaveLength(2);
    clock.advance(1);
    expect(released).toHaveLength(3);
    expect(released[0]).toEqual([0x5555_0000_0000, 64 * PAGE]);
    expect(log.lines.map((l) => [l.level, l.msg, l.fields?.stage])).toEqual([
      ['info', 'gave back start-up pages of mapped files', 'loaded'],
      ['info', 'gave back start-up pages of mapped files', 'ready'],
      ['info', 'gave back start-up pages of mapped files', 'settled'],
    ]);
    expect(log.lines[0].fields).toMatchObject({ mappings: 1, residentMb: 0.3, rssMb: '60 -> 40' });
    clock.advance(60_000);
    expect(released).toHaveLength(3);
  });

  it('mappings that cannot be trusted (an emulator): one info line that nothing was given back and why, and no more tries', () => {
    const { clock, log, released, pages } = rig(false, block(node({ perms: 'r--p' })));
    expect(pages.release('loaded')).toMatchObject({ mappings: 0, skipped: expect.stringContaining('list different mappings') });
    pages.afterReady();
    clock.advance(60_000);
    expect(released).toEqual([]);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]).toMatchObject({
      level: 'info',
      msg: 'gave back no start-up pages, and will not try again',
      fields: { stage: 'loaded', skipped: expect.stringContaining('r-xp') },
    });
    expect(log.lines[0].fields).not.toHaveProperty('mappings');
  });

  it('stop() cancels what is still due', () => {
    const { clock, released, pages } = rig();
    pages.afterReady();
    clock.advance(0);
    pages.stop();
    clock.advance(20_000);
    expect(released).toHaveLength(1);
  });

  it('a failure is one warning that names the key to turn it off, and nothing more is tried', () => {
    const { clock, log, pages } = rig(true);
    expect(pages.release('loaded')).toBeNull();
    pages.afterReady();
    clock.advance(20_000);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]).toMatchObject({
      level: 'warn',
      msg: expect.stringContaining('board.releaseStartupPages: false'),
      fields: { stage: 'loaded', err: expect.stringContaining('ENOMEM') },
    });
  });
});
