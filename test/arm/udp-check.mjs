// The addon's start-up check of UDP_SEGMENT and UDP_GRO (udpCheckOffloads, socket.c) on the
// target architecture, under the layer it is there to catch. scripts/arm-test runs it on the
// emulated Node three times: as qemu-user is, and with test/arm/shim/drop-udp-cmsg.c
// preloaded to lose the SOL_UDP control messages on send, or every control message on
// receive, as a qemu-user that drops what it does not translate would. VXARM_EXPECT names
// the case: none (both offloads seen working), send, recv. Prints "N passed, N failed".
//   VXARM_EXPECT=none node test/arm/udp-check.mjs
import { nativeBinding } from '../../dist/native/index.js';

const expectCase = process.env.VXARM_EXPECT ?? 'none';
const WANT = {
  none: { segment: null, gro: null, gsoOff: 0 },
  send: {
    segment: /^UDP_SEGMENT ignored: 2 segments of 1000 bytes sent as one message arrived as one 2000-byte datagram \(the control message was lost/,
    gro: /^UDP_GRO not verified: checking it needs a working UDP_SEGMENT$/,
    gsoOff: 1,
  },
  recv: { segment: null, gro: /^UDP_GRO lost its control message: one 2000-byte datagram arrived without its segment size \(1000\)$/, gsoOff: 0 },
}[expectCase];
if (!WANT) throw new Error(`VXARM_EXPECT=${expectCase}: none, send or recv`);

const native = nativeBinding();
const got = native.udpCheckOffloads();
const stats = native.offloadStats();
let passed = 0;
let failed = 0;
const check = (name, ok) => {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} udpCheckOffloads (${expectCase}, ${process.arch}): ${name}`);
};
const matches = (want, v) => (want === null ? v === null : typeof v === 'string' && want.test(v));
console.log(`udpCheckOffloads on ${process.arch}, Node ${process.version}: ${JSON.stringify(got)}`);
check(`segment ${WANT.segment ?? 'null'}`, matches(WANT.segment, got.segment));
check(`gro ${WANT.gro ?? 'null'}`, matches(WANT.gro, got.gro));
check(`offloadStats().gsoOff is ${WANT.gsoOff}`, stats.gsoOff === WANT.gsoOff);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
