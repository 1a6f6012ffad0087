// The ARM legs' two halves, for test/arm/arm64.test.ts and armv7.test.ts:
//   - armLeg(): `scripts/arm-test TARGET` (the addon cross-built and run with the codec tests
//     and the UDP offload check on the official ARM Node 20 under qemu-user, then the codec and
//     property tests of test/unit with vitest's worker on that Node);
//   - the gateway itself: the .deb payload on that Node in the lab (test/lab/gateway-scenarios.ts
//     with test/lab/arm-launcher.ts), in the test files.
import path from 'node:path';
import { expect } from 'vitest';
import { run } from '../lab/harness.js';

const SCRIPT = path.join(import.meta.dirname, '..', '..', 'scripts', 'arm-test');

/** A cold first run fetches Node 20 and the sysroot (about 10 s each); later ones reuse them. */
export const ARM_TIMEOUT_MS = 10 * 60_000;

export const skipArm = process.env.VXEDGE_ARM === '0';

export async function armLeg(target: 'arm64' | 'armv7'): Promise<void> {
  const r = await run([SCRIPT, target], { timeoutMs: ARM_TIMEOUT_MS - 10_000 });
  const out = r.stdout + r.stderr;
  // The phase timings and the vitest summary, for the CI log.
  for (const line of out.split('\n')) if (/^arm-test\[|^emulated vitest:/.test(line)) console.log(line);
  expect(r.code, out).toBe(0);
  const m = new RegExp(`^arm-test\\[${target}\\]: (\\d+) passed, (\\d+) failed$`, 'm').exec(out);
  expect(m, out).not.toBeNull();
  expect(Number(m![2]), out).toBe(0);
  // Every part ran, on the emulated target: the addon's TUN test, the UDP check in its
  // three cases, and vitest's unit files (hundreds of tests, none failed).
  const arch = target === 'arm64' ? 'arm64' : 'arm';
  expect(out).toMatch(new RegExp(`^addon on ${arch}, Node v20\\.`, 'm'));
  expect(out).toMatch(/^ok {3}TUN: the kernel answers an echo request/m);
  for (const c of ['none', 'send', 'recv']) expect(out).toMatch(new RegExp(`^ok {3}udpCheckOffloads \\(${c}, ${arch}\\): gro`, 'm'));
  const v = /^emulated vitest: \d+ suites in (\d+) files\n(\d+) passed, (\d+) failed$/m.exec(out);
  expect(v, out).not.toBeNull();
  expect(Number(v![1])).toBeGreaterThanOrEqual(10);
  expect(Number(v![2])).toBeGreaterThanOrEqual(300);
  expect(Number(v![3])).toBe(0);
}
