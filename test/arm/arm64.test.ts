// The arm64 leg (Raspberry Pi 4/5, CM4 on 64-bit Raspberry Pi OS): scripts/arm-test arm64.
// Runs in CI through scripts/test; VXEDGE_ARM=0 skips it.
import { describe, it } from 'vitest';
import { ARM_TIMEOUT_MS, armLeg, skipArm } from './arm-leg.js';

describe.skipIf(skipArm)('arm64 (qemu-user, Debian arm64 Node)', () => {
  it('builds the addon for arm64 and passes the addon and codec tests there', () => armLeg('arm64'), ARM_TIMEOUT_MS);
});
