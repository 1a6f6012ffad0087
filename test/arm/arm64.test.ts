// The arm64 leg (Raspberry Pi 3/4/5, CM4, on 64-bit Raspberry Pi OS or Debian): the official
// Node 20 for arm64 under qemu-user runs the cross-built addon with the codec and property
// tests (scripts/arm-test arm64), then the vxedge_*_arm64.deb payload as the gateway in the
// lab, through the same scenarios as the amd64 gateway (test/lab/gateway-scenarios.ts).
// Runs in CI through scripts/test; VXEDGE_ARM=0 skips it.
import { describe, it } from 'vitest';
import { ARM_TIMEOUT_MS, armLeg, skipArm } from './arm-leg.js';
import { EmulatedLauncher } from '../lab/arm-launcher.js';
import { gatewayScenarios } from '../lab/gateway-scenarios.js';
import { skipUnlessRoot } from '../lab/harness.js';

describe.skipIf(skipArm)('arm64 (qemu-user, official Node 20 for arm64)', () => {
  it('builds the addon for arm64 and passes the addon, codec and property tests there', () => armLeg('arm64'), ARM_TIMEOUT_MS);

  describe.skipIf(skipUnlessRoot(['tcpdump', 'socat']))('the arm64 .deb payload as the gateway between kernel flannel peers', () => {
    gatewayScenarios({ prefix: 'vxa6', launcher: new EmulatedLauncher('arm64') });
  });
});
