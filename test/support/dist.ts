// dist/ for tests that run compiled code (child processes, the CLI, the gateway): built the way
// `npm run build` builds it (tsc, then scripts/bundle for dist/cli/main.js), and only when
// needed, so a test never runs stale code and a fresh CI checkout (built by `npm ci`) is not
// built twice.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from '../lab/harness.js';

const mtime = (f: string) => statSync(f, { throwIfNoEntry: false })?.mtimeMs ?? 0;

/** Runs `npm run build`. tsc emits every file even when some fail to type-check, so the
 *  modules a test needs are there even then; the exit status is the caller's to judge. */
export function buildDist(): number | null {
  return spawnSync('npm', ['run', '--silent', 'build'], { cwd: REPO_ROOT, stdio: 'ignore', timeout: 180_000 }).status;
}

/** The newest mtime of the .ts files under dir. */
function newestSource(dir: string): number {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .reduce((a, f) => Math.max(a, mtime(path.join(dir, f))), 0);
}

/** The whole of dist/ current, for tests that run the CLI or the gateway: dist/cli/main.js,
 *  which `npm run build` writes last, must be newer than every source under src/. */
export function ensureDistCurrent(): void {
  const cli = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
  const stale = () => mtime(cli) < newestSource(path.join(REPO_ROOT, 'src'));
  if (!stale()) return;
  buildDist();
  if (stale()) throw new Error(`building dist/ (npm run build) did not produce a current ${cli}`);
}

/** dist/ must hold this tree's `modules` (paths under src/ without `.ts`, e.g. 'cli/fleet'):
 *  builds when one is missing or older than its source, and fails when that did not help. */
export function ensureDist(modules: string[]): void {
  const pairs = modules.map((m) => [path.join(REPO_ROOT, 'src', `${m}.ts`), path.join(REPO_ROOT, 'dist', `${m}.js`)]);
  const stale = () => pairs.filter(([src, out]) => mtime(out) < mtime(src)).map(([, out]) => out);
  if (stale().length === 0) return;
  buildDist();
  const left = stale();
  if (left.length) throw new Error(`building dist/ (npm run build) did not produce a current ${left.join(', ')}`);
}
