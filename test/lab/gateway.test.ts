// vxedge against real kernel flannel peers, as built here: the host's node running this
// checkout's dist/ and addon (amd64). The scenarios (pings both ways, 4 MB transfers intact
// and MTU-sized on the wire, health and offloads, a layer that loses UDP control messages,
// malformed floods, MQTT health on a real broker, SIGHUP, SIGTERM, a second instance, a
// crash) are shared with the ARM legs (test/arm/arm64.test.ts, armv7.test.ts), which run
// the .deb payload on the emulated ARM Node instead: see test/lab/gateway-scenarios.ts.
import { describe } from 'vitest';
import { skipUnlessRoot } from './harness.js';
import { gatewayScenarios } from './gateway-scenarios.js';
import { nativeLauncher } from './vxedge.js';

describe.skipIf(skipUnlessRoot(['tcpdump', 'socat']))('vxedge between kernel flannel peers', () => {
  gatewayScenarios({ prefix: 'vxgw', launcher: nativeLauncher });
});
