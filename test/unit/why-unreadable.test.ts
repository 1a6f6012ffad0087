// The words every "cannot read <file>" message uses, from the errors a real read raises.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { whyUnreadable } from '../../src/util/why-unreadable.js';

describe('whyUnreadable', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-unreadable-'));
  writeFileSync(path.join(dir, 'file'), 'x');
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const readError = (p: string): unknown => {
    try {
      readFileSync(p);
    } catch (e) {
      return e;
    }
    throw new Error(`${p} was readable`);
  };

  it.each([
    ['a missing file', 'missing', 'no such file'],
    ['a path below a file (ENOTDIR)', 'file/below', 'no such file'],
    ['a directory', '.', 'it is a directory'],
  ])('%s', (_name, rel, words) => {
    expect(whyUnreadable(readError(path.join(dir, rel)))).toBe(words);
  });

  it('permission errors, by code (root reads everything, so not from a real read here)', () => {
    expect(whyUnreadable(Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' }))).toBe('permission denied');
    expect(whyUnreadable(Object.assign(new Error('EPERM: operation not permitted'), { code: 'EPERM' }))).toBe('permission denied');
  });

  it('anything else keeps its own message', () => {
    expect(whyUnreadable(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }))).toBe('EIO: i/o error, read');
  });
});
