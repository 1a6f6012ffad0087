// Runs `scripts/arm-test TARGET` (the native addon cross-built, then run with the codec
// tests on Debian's ARM Node under qemu-user) for the vitest wrappers in this folder.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect } from 'vitest';

const SCRIPT = path.join(import.meta.dirname, '..', '..', 'scripts', 'arm-test');

/** The first run downloads and unpacks the sysroot (about a minute at most); later ones reuse it. */
export const ARM_TIMEOUT_MS = 15 * 60_000;

export const skipArm = process.env.VXEDGE_ARM === '0';

export async function armLeg(target: 'arm64' | 'armv7'): Promise<void> {
  const { code, out } = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn(SCRIPT, [target], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), ARM_TIMEOUT_MS - 10_000);
    child.on('error', reject);
    child.on('close', (c) => {
      clearTimeout(timer);
      resolve({ code: c, out });
    });
  });
  // The phase timings, for the CI log.
  for (const line of out.split('\n')) if (/^arm-test\[/.test(line)) console.log(line);
  expect(code, out).toBe(0);
  const m = new RegExp(`^arm-test\\[${target}\\]: (\\d+) passed, (\\d+) failed$`, 'm').exec(out);
  expect(m, out).not.toBeNull();
  expect(Number(m![2]), out).toBe(0);
  expect(Number(m![1])).toBeGreaterThanOrEqual(15);
  expect(out).toMatch(/^ok {3}TUN: the kernel answers an echo request/m);
}
