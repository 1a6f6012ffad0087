// native/pages.c and util/startup-pages.ts together, on a real process: a child Node process
// (test/native/pages-child.mjs) gives back its own start-up pages as `vxedge run` does, and
// the kernel's /proc/self/smaps says what left the resident set; what the process wrote
// (heap, buffers, the binary's relocated data) must be intact and code must still run. No
// network, no namespace: it touches nothing but the child's own page tables.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureDist } from '../support/dist.js';
import { REPO } from './scenario.js';

const CHILD = fileURLToPath(new URL('./pages-child.mjs', import.meta.url));

describe.skipIf(process.platform !== 'linux')('giving back start-up pages (madvise MADV_DONTNEED)', () => {
  let out: any;
  beforeAll(() => {
    ensureDist(['native/index', 'util/startup-pages']);
    // The unit's V8 flags, as the gateway runs.
    const r = spawnSync(process.execPath, ['--max-semi-space-size=1', '--single-threaded', CHILD], {
      cwd: REPO,
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(r.status, r.stderr).toBe(0);
    out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  });

  it('drops the pages of the binary that start-up touched: most of them leave the resident set', () => {
    expect(out.ranges).toBe(out.result.mappings);
    // A native process's smaps and maps list the same mappings.
    expect(out.result.skipped).toBeUndefined();
    expect(out.ranges).toBeGreaterThan(0);
    // Node's own code and read-only data: 20-40 MB resident after start-up on x86-64.
    expect(out.nodeFileKbBefore).toBeGreaterThan(8 * 1024);
    expect(out.nodeFileKbAfter).toBeLessThan(out.nodeFileKbBefore / 2);
    expect(out.releasableKbAfter).toBeLessThan(out.releasableKbBefore / 2);
    expect(out.result.residentMb).toBeGreaterThan(8);
    expect(out.result.rssAfterMb).toBeLessThan(out.result.rssBeforeMb - 8);
  });

  it('never touches a written mapping: the binary\'s relocated data stays, heap and buffers intact, code runs', () => {
    expect(out.overlapsKept).toBe(0);
    expect(out.nodeWrittenMappings).toBeGreaterThan(0);
    expect(out.nodeWrittenKbAfter).toBeGreaterThanOrEqual(out.nodeWrittenKbBefore);
    expect(out.intact).toBe(true);
    expect(out.roundTrip).toBe(true);
  });

  it('errors: an unmapped range is the kernel\'s ENOMEM from madvise; malformed ranges are refused before any call', () => {
    expect(out.errors.unmapped).toMatchObject({ threw: true, code: 'ENOMEM', syscall: 'madvise' });
    for (const k of ['misaligned', 'odd', 'zero', 'huge']) {
      expect(out.errors[k], k).toMatchObject({ threw: true, name: 'RangeError' });
    }
    expect(out.errors.misaligned.message).toMatch(/releasePages: range 0 \(4097, 4096\) is not a page-aligned range/);
    expect(out.errors.odd.message).toMatch(/\[start, length\] pairs; got 1 numbers/);
    expect(out.errors.notFloat64).toMatchObject({ threw: true, name: 'TypeError' });
    expect(out.errors.none).toBe(0);
  });
});
