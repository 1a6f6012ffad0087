// Vitest for the ARM legs: the codec and property tests of test/unit, unchanged, executed by
// the emulated ARM Node 20 (scripts/arm-test sets VXARM_NODE to a wrapper that runs
// `qemu-<arch>-static -L <sysroot> <node>`). Vitest itself, with its transform (rolldown has
// no ARM binding here), stays on the host; its test worker is the emulated Node, forked with
// an IPC channel exactly as the `forks` pool forks one. One worker for every file
// (isolate off): starting the emulated Node costs seconds, the tests themselves do not.
//   VXARM_NODE=... VXARM_TARGET=arm64|armv7 npx vitest run --config test/arm/emulated.config.ts
import { defineConfig } from 'vitest/config';
import { emulatedPool } from './emulated-pool.js';

/** The unit files with fast-check properties of codecs and parsers of untrusted input, the
 *  kernel's golden frames and the TypeScript side of the offload paths. */
const CODEC_TESTS = [
  'proto', 'ipv4', 'icmp', 'stun', 'dataplane', 'peers', 'golden', 'offload', 'duration',
  'flannel-lease', 'flannel-node', 'fleet', 'portmap-natpmp', 'portmap-pcp', 'portmap-upnp',
];
export default defineConfig({
  test: {
    include: [
      'test/arm/emulated/*.emu.ts',
      ...CODEC_TESTS.map((t) => `test/unit/${t}.test.ts`),
    ],
    pool: emulatedPool(process.env.VXARM_NODE ?? ''),
    isolate: false,
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
