// The armv7 leg (32-bit Raspberry Pi OS, armhf): scripts/arm-test armv7. 32-bit pointers
// and size_t are where a C addon built only on 64-bit machines breaks. VXEDGE_ARM=0 skips it.
import { describe, it } from 'vitest';
import { ARM_TIMEOUT_MS, armLeg, skipArm } from './arm-leg.js';

describe.skipIf(skipArm)('armv7 (qemu-user, Debian armhf Node)', () => {
  it('builds the addon for armv7 and passes the addon and codec tests there', () => armLeg('armv7'), ARM_TIMEOUT_MS);
});
