// status.json: replaced atomically, one write at a time, the newest winning. Regression
// for writes that overlapped: a shared temp name made one rename fail with ENOENT, and two
// writers could interleave into one temp file and publish a torn document.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { StatusFile, StatusFileError, readStatus, statusPath } from '../../src/health/status-file.js';
import type { HealthDocument } from '../../src/health/document.js';
import { writeFileAtomic } from '../../src/util/atomic-file.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'vxedge-status-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const doc = (n: number): HealthDocument =>
  ({ site: 'lab', node: 'edge-1', version: '0', ts: new Date(n).toISOString(), uptimeS: n, state: 'ok', tunnel: {}, peers: [], checks: [], pid: process.pid, drops: {}, filler: 'x'.repeat(20_000 + (n % 7) * 3000) }) as unknown as HealthDocument;

describe('writeFileAtomic', () => {
  it('lets many overlapping writes of one file all succeed, leaving one whole version and no temp file', async () => {
    const dir = tmp();
    const file = path.join(dir, 'f.json');
    const bodies = Array.from({ length: 60 }, (_, i) => JSON.stringify({ i, pad: String(i).repeat(5000) }));
    await Promise.all(bodies.map((b) => writeFileAtomic(file, b)));
    expect(bodies).toContain(readFileSync(file, 'utf8'));
    expect(readdirSync(dir)).toEqual(['f.json']);
  });
});

describe('StatusFile', () => {
  it('never shows a torn document while writes pile up, ends with the newest, and reports no error', async () => {
    const dir = tmp();
    const errors: Error[] = [];
    const sf = new StatusFile(dir, (e) => errors.push(e));
    let torn = 0;
    let reads = 0;
    const reader = setInterval(() => {
      try {
        JSON.parse(readFileSync(statusPath(dir), 'utf8'));
        reads++;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') torn++;
      }
    }, 0);
    for (let n = 1; n <= 300; n++) {
      sf.write(doc(n));
      if (n % 25 === 0) await new Promise((r) => setImmediate(r));
    }
    await sf.flush();
    clearInterval(reader);
    expect(errors).toEqual([]);
    expect(torn).toBe(0);
    expect(reads).toBeGreaterThan(0);
    expect((await readStatus(dir))?.uptimeS).toBe(300);
    expect(readdirSync(dir)).toEqual(['status.json']);
  });

  it('remove() waits for a pending write, so no status.json is left behind by a clean stop', async () => {
    const dir = tmp();
    const sf = new StatusFile(dir, () => undefined);
    sf.write(doc(1));
    sf.write(doc(2));
    await sf.remove();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('reports a write that cannot happen, once per attempt, and never throws', async () => {
    const errors: Error[] = [];
    const dir = tmp();
    await writeFileAtomic(path.join(dir, 'a-file'), 'x');
    const sf = new StatusFile(path.join(dir, 'a-file', 'run'), (e) => errors.push(e)); // runDir under a file: ENOTDIR
    sf.write(doc(1));
    await sf.flush();
    expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual(['ENOTDIR']);
  });

  it('says a lasting write failure once, not at every document (every 2 s), and says when it works again', async () => {
    const errors: string[] = [];
    let recovered = 0;
    const dir = tmp();
    const blocker = path.join(dir, 'a-file');
    await writeFileAtomic(blocker, 'x');
    const runDir = path.join(blocker, 'run');
    const sf = new StatusFile(runDir, (e) => errors.push((e as NodeJS.ErrnoException).code ?? e.message), () => recovered++);
    for (let i = 0; i < 5; i++) {
      sf.write(doc(i));
      await sf.flush();
    }
    expect(errors).toEqual(['ENOTDIR']);
    expect(recovered).toBe(0);
    rmSync(blocker);
    sf.write(doc(5));
    await sf.flush();
    expect(recovered).toBe(1);
    expect(JSON.parse(readFileSync(statusPath(runDir), 'utf8')).uptimeS).toBe(5);
    sf.write(doc(6));
    await sf.flush();
    expect(recovered).toBe(1);
    // It breaks again: said again.
    rmSync(blocker, { recursive: true });
    await writeFileAtomic(blocker, 'x');
    sf.write(doc(7));
    await sf.flush();
    expect(errors).toEqual(['ENOTDIR', 'ENOTDIR']);
  });
});

describe('readStatus', () => {
  const put = (text: string) => {
    const dir = tmp();
    writeFileSync(statusPath(dir), text);
    return dir;
  };

  it('is null without a file, and for the file of a process that is gone', async () => {
    expect(await readStatus(tmp())).toBeNull();
    expect(await readStatus(path.join(tmp(), 'no-such-dir'))).toBeNull();
    // pid 2^22 + 1 is above Linux's pid_max limit, so no process has it.
    expect(await readStatus(put(JSON.stringify({ ...doc(1), pid: 4_194_305 })))).toBeNull();
  });

  it('returns a live document', async () => {
    expect((await readStatus(put(JSON.stringify(doc(7)))))?.uptimeS).toBe(7);
  });

  it('says what is wrong with a file that is there but is no health document', async () => {
    await expect(readStatus(put('{"site": '))).rejects.toThrow(/status\.json is not JSON/);
    await expect(readStatus(put('{}'))).rejects.toThrow(/is not a vxedge health document \(site is not a string, .*tunnel is not an object, peers is not a list of peers/);
    await expect(readStatus(put(JSON.stringify({ ...doc(1), peers: [1] })))).rejects.toThrow(StatusFileError);
  });

  it('says when the file cannot be read, instead of "no gateway"', async () => {
    const dir = tmp();
    mkdirSync(statusPath(dir));
    await expect(readStatus(dir)).rejects.toThrow(/cannot read .*status\.json: EISDIR/);
  });
});
