// scripts/bench-js's command line: --help prints its usage (the header comment) and times
// nothing; an unknown option exits 2 and points at --help.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/bench-js');

describe('scripts/bench-js', () => {
  it('--help prints the usage and exits 0 without timing anything', () => {
    const r = spawnSync(SCRIPT, ['--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^scripts\/bench-js: the JavaScript share of the packet path/);
    expect(r.stdout).toMatch(/Usage: scripts\/bench-js \[--dist DIR\]/);
    expect(r.stdout).toMatch(/--runs {5}runs per case/);
    expect(r.stdout).not.toMatch(/^\/\/|ns\/packet/m);
  });

  it('an unknown option exits 2 and names --help', () => {
    const r = spawnSync(SCRIPT, ['--bogus'], { encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/Unknown option '--bogus' \(scripts\/bench-js --help\)/);
  });
});
