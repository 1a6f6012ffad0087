// The armv7 leg (32-bit Raspberry Pi OS, armhf: Pi 2/3/4/Zero 2 W): as the arm64 leg, with
// the official Node 20 for armv7l. 32-bit pointers, size_t and time_t are where a C addon
// built only on 64-bit machines breaks: the structures the addon shares with the kernel
// (mmsghdr, iovec, sockaddr_in, cmsghdr, virtio_net_hdr) cross the translation here in the
// addon tests and under real traffic in the lab; counters past 2^32, Buffer offsets and
// times past 2038 are in test/arm/emulated/target.emu.ts. VXEDGE_ARM=0 skips it.
import { describe, it } from 'vitest';
import { ARM_TIMEOUT_MS, armLeg, skipArm } from './arm-leg.js';
import { EmulatedLauncher } from '../lab/arm-launcher.js';
import { gatewayScenarios } from '../lab/gateway-scenarios.js';
import { skipUnlessRoot } from '../lab/harness.js';

describe.skipIf(skipArm)('armv7 (qemu-user, official Node 20 for armv7l)', () => {
  it('builds the addon for armv7 and passes the addon, codec and property tests there', () => armLeg('armv7'), ARM_TIMEOUT_MS);

  describe.skipIf(skipUnlessRoot(['tcpdump', 'socat']))('the armhf .deb payload as the gateway between kernel flannel peers', () => {
    gatewayScenarios({ prefix: 'vxa7', launcher: new EmulatedLauncher('armv7') });
  });
});
