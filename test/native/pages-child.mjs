// The scenario of test/native/pages.test.ts, in a Node process of its own: gives back this
// process's start-up pages the way `vxedge run` does (releaseStartupPages of the compiled
// dist/util/startup-pages.js over nativeBinding().releasePages) and prints one JSON line
// with what the kernel says before and after, and whether everything written survived.
//
//   node test/native/pages-child.mjs
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { nativeBinding } from '../../dist/native/index.js';
import { parseSmaps, releasable, releaseStartupPages } from '../../dist/util/startup-pages.js';

const n = nativeBinding();
const maps = () => parseSmaps(readFileSync('/proc/self/smaps', 'utf8'));
const sum = (ms, f) => ms.filter(f).reduce((a, m) => a + m.rssKb, 0);
const caught = (f) => {
  try {
    f();
    return { threw: false };
  } catch (e) {
    return { threw: true, name: e.name, message: e.message, code: e.code, syscall: e.syscall };
  }
};

// What the process wrote before: a JS heap object graph, an off-heap buffer, and the
// relocated (copied-on-write) data of the binary and its libraries, which the code below
// runs on; all of it must be intact afterwards.
const data = Array.from({ length: 50_000 }, (_, i) => ({ i, s: `row ${i}` }));
const buf = Buffer.alloc(8 << 20);
for (let i = 0; i < buf.length; i += 4093) buf[i] = i % 251;
const digest = () => createHash('sha256').update(buf).update(JSON.stringify(data)).digest('hex');
const before = digest();

const m0 = maps();
const passed = [];
const r = releaseStartupPages({
  releasePages: (ranges) => {
    passed.push(...ranges);
    return n.releasePages(ranges);
  },
});
const m1 = maps(); // read at once: only what reading smaps itself ran is back
const node = (m) => m.path === process.execPath;

// Did any range passed overlap a mapping that must not be given back?
// (One with nothing resident before may have become releasable by the time of the release.)
const kept = m0.filter((m) => !releasable({ ...m, rssKb: 1 }));
let overlapsKept = 0;
for (let i = 0; i < passed.length; i += 2) {
  const a = passed[i], b = passed[i] + passed[i + 1];
  overlapsKept += kept.filter((m) => m.start < b && a < m.end).length;
}

// Code that was not run before (a module loaded now, a regex, crypto) still runs.
const zlib = await import('node:zlib');
const roundTrip = zlib.inflateSync(zlib.deflateSync(Buffer.from('vxedge'.repeat(1000)))).toString() === 'vxedge'.repeat(1000);

console.log(JSON.stringify({
  result: r,
  ranges: passed.length / 2,
  overlapsKept,
  releasableKbBefore: sum(m0, releasable),
  releasableKbAfter: sum(m1, (m) => passed.some((s, i) => i % 2 === 0 && s === m.start)),
  nodeFileKbBefore: sum(m0, (m) => node(m) && m.anonymousKb === 0),
  nodeFileKbAfter: sum(m1, (m) => node(m) && m.anonymousKb === 0),
  nodeWrittenKbBefore: sum(m0, (m) => node(m) && m.anonymousKb > 0),
  nodeWrittenKbAfter: sum(m1, (m) => node(m) && m.anonymousKb > 0),
  nodeWrittenMappings: m0.filter((m) => node(m) && m.anonymousKb > 0).length,
  intact: digest() === before,
  roundTrip,
  errors: {
    unmapped: caught(() => n.releasePages(new Float64Array([4096, 4096]))),
    misaligned: caught(() => n.releasePages(new Float64Array([4096 + 1, 4096]))),
    odd: caught(() => n.releasePages(new Float64Array([4096]))),
    zero: caught(() => n.releasePages(new Float64Array([0, 4096]))),
    huge: caught(() => n.releasePages(new Float64Array([4096, 2 ** 52]))),
    notFloat64: caught(() => n.releasePages(new Uint32Array([4096, 4096]))),
    none: n.releasePages(new Float64Array(0)),
  },
}));
