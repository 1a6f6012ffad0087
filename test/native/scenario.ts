// What addon.test.ts and offload-io.test.ts share: a network namespace of their own, and a
// scenario script of this folder (child.mjs, offload-child.mjs) run in a child Node process
// inside it, printing one JSON line:
//
//   vitest ──spawn──> ip netns exec <ns> node <script> <scenario>  ──> {"...": ...}
//
// The scripts reach the addon the way the product does, through dist/native/index.js
// (nativeBinding()), so dist/ must hold this tree's src/native/index.ts: ensureNativeDist()
// builds it when it is missing or older than its source.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ensureDist } from '../support/dist.js';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Why a scenario in a namespace cannot run here (it needs root, /dev/net/tun and iproute2), or null. */
export const netnsSkipReason: string | null =
  process.getuid?.() !== 0 ? 'not root'
  : !existsSync('/dev/net/tun') ? 'no /dev/net/tun'
  : spawnSync('ip', ['-V']).status !== 0 ? 'ip (iproute2) did not run'
  : null;

export function ensureNativeDist(): void {
  ensureDist(['native/index']);
}

// A namespace of the test file's own, `${prefix}-<pid>`, with the lab tests' rule for those of
// earlier runs killed before their cleanup (test/lab/harness.ts).
export { createNamespace } from '../lab/harness.js';

export function deleteNamespace(ns: string): void {
  spawnSync('ip', ['netns', 'del', ns]);
}

export interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line as JSON, or undefined. */
  json: any;
}

/** Runs `script scenario` with Node in namespace `ns`, killed after `timeoutMs`. */
export function runChild(ns: string, script: string, scenario: string, timeoutMs: number, nodeArgs: string[] = []): ChildRun {
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, ...nodeArgs, script, scenario], {
    encoding: 'utf8',
    timeout: timeoutMs,
    cwd: REPO,
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, json };
}

/** Like runChild, for a scenario that must exit 0 with its JSON line; returns the JSON. */
export function scenarioResult(ns: string, script: string, scenario: string, timeoutMs: number, nodeArgs: string[] = []): any {
  const r = runChild(ns, script, scenario, timeoutMs, nodeArgs);
  if (r.status !== 0 || r.json === undefined) {
    throw new Error(`child ${scenario} failed: status ${r.status} signal ${r.signal}\n${r.stdout}\n${r.stderr}`);
  }
  return r.json;
}
