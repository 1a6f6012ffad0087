// Tests of the native addon (src/native/*.c) and its loader (src/native/index.ts), both
// through the module the product uses: nativeBinding() and the NativeBinding declaration.
//
// The loader tests run in this process and make no syscall that touches the network. Every
// test that needs a device or a socket runs test/native/child.mjs in a child Node process
// INSIDE a network namespace this file creates (vxn-nat-<pid>), never in the root namespace;
// the child loads the addon through dist/native/index.js (built here when stale):
//
//   vitest ──spawn──> ip netns exec vxn-nat-<pid> node child.mjs <scenario>  ──> one JSON line
//
// Needs root, iproute2 and /dev/net/tun; the addon must be built first (`npm run install`).

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  findPackageRoot, nativeAddonPath, nativeBinding, NETLINK_ADDRESS, NETLINK_DEFAULT_ROUTE, NETLINK_LINK, NETLINK_LOST, NETLINK_NEIGH_GONE, NETLINK_ROUTE_GONE, TUN_F_CSUM, type NativeBinding,
} from '../../src/native/index.js';
import { createNamespace, deleteNamespace, ensureNativeDist, netnsSkipReason, REPO, runChild, scenarioResult } from './scenario.js';
import { skipUnless } from '../lab/harness.js';

const PREFIX = 'vxn-nat';
const CHILD = fileURLToPath(new URL('./child.mjs', import.meta.url));

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

/** Every call of the binding, once: typed against NativeBinding (a missing or extra name is a
 *  type error), and the addon's registration table (src/native/addon.c) must match it. */
const CALLS: Record<keyof NativeBinding, true> = {
  tunOpen: true, devRead: true, devWrite: true,
  udpOpen: true, udpSetGro: true, udpRecv: true, udpSend: true, udpSendFailed: true, udpCheckOffloads: true, udpDrops: true, unixDgramSend: true,
  udpSendThread: true, udpSendLost: true,
  pollStart: true, pollStop: true, close: true,
  lastError: true, offloadStats: true, releasePages: true, clockState: true, passwordCheck: true, passwordHash: true, netlinkOpen: true, netlinkRead: true,
  _pollCounts: true, _tsoSegment: true, _groCoalesce: true, _senderHold: true,
};

/** Where devRead puts packets of these lengths read in one call: the first behind
 *  `headroom`, each next one behind headroom from the 64-byte boundary after the previous
 *  packet's end; a truncated packet (-1) leaves its space to the next. */
function packedOffsets(headroom: number, lens: number[]): number[] {
  let pos = 0;
  return lens.map((len) => {
    const at = pos + headroom;
    if (len >= 0) pos = (at + len + 63) & ~63;
    return at;
  });
}

/** One devRead call as a scenario reports it. */
interface Read {
  offs: number[];
  lens: number[];
}

let ns = '';
/** Run a scenario that must succeed and return its JSON. */
const scenario = (name: string) => scenarioResult(ns, CHILD, name, 30_000, ['--expose-gc']);

describe('native loader (in process, no network)', () => {
  it('finds the package root from src/ and dist/ alike', () => {
    const root = mkdtempSync(join(tmpdir(), 'vxn-root-'));
    try {
      writeFileSync(join(root, 'package.json'), '{}');
      mkdirSync(join(root, 'dist', 'native'), { recursive: true });
      expect(findPackageRoot(join(root, 'dist', 'native'))).toBe(root);
      expect(findPackageRoot(root)).toBe(root);
    } finally {
      rmSync(root, { recursive: true });
    }
    expect(nativeAddonPath()).toBe(join(REPO, 'build', 'Release', 'vxedge_native.node'));
  });

  it('loads the addon once, with exactly the calls NativeBinding declares, and no per-packet error yet', () => {
    expect(existsSync(nativeAddonPath())).toBe(true);
    const b = nativeBinding();
    expect(nativeBinding()).toBe(b);
    expect(Object.keys(b).sort()).toEqual(Object.keys(CALLS).sort());
    for (const name of Object.keys(CALLS)) expect(typeof b[name as keyof NativeBinding], name).toBe('function');
    expect(b.lastError()).toEqual({ errno: 0, code: '', count: 0 });
  });

  it('rejects bad arguments before any syscall', () => {
    const b = nativeBinding();
    const bogusFd = 2 ** 30; // never open: if validation slipped, the syscall would say EBADF
    const buf = Buffer.alloc(100);
    const one = () => new Int32Array(1);
    expect(() => b.tunOpen('x'.repeat(16), true, 0)).toThrow(RangeError);
    expect(() => b.tunOpen('vxn-never', true, TUN_F_CSUM)).toThrow(/offloads need a TUN device, not TAP/);
    expect(() => b.devRead(bogusFd, buf, 0, 65536, 1, one(), one(), null)).toThrow(
      expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }),
    );
    expect(() => b.devWrite(bogusFd, buf, new Int32Array([95]), new Int32Array([6]), 1, false)).toThrow(
      /packet 0 \[95, \+6\) is outside the buffer/,
    );
    expect(() =>
      b.udpSend(bogusFd, buf, one(), one(), new Uint32Array(1), new Uint16Array(0), 1, null, null, 0),
    ).toThrow(RangeError);
    expect(() =>
      b.udpSend(bogusFd, buf, one(), new Int32Array([50]), new Uint32Array(1), new Uint16Array(1), 1, Buffer.alloc(10), null, 22),
    ).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/vnet and vnetIdx go together/) }));
    expect(() => (b.udpSendThread as any)('yes')).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/udpSendThread: on must be a boolean/) }));
    expect(b.udpSendFailed(new Uint8Array(1))).toBe(0); // those calls threw: nothing to name
    expect(() => (b.udpSendFailed as any)([0])).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/udpSendFailed: out must be a Buffer or Uint8Array/) }));
    expect(b.udpSendLost()).toBe(0); // no sender thread here: nothing can be lost after the call
    expect(() => b.devRead(-1, buf, 0, 50, 1, one(), one(), null)).toThrow(RangeError);
    expect(() => (b.devRead as any)(bogusFd, 'buf', 0, 50, 1, one(), one(), null)).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }),
    );
    expect(() => b.pollStop({ fd: 3 } as any)).toThrow(TypeError);
  });

  it("clockState: adjtimex's read of the clock's sync, the same as libc's adjtimex() called from another process", () => {
    // A read with modes 0 changes nothing, so this is safe on any machine; the state and
    // status only change when a time daemon steps in between the two reads, so both are read
    // twice around the other process's and the answers must agree with one of them.
    const b = nativeBinding();
    const before = b.clockState();
    const py = spawnSync('python3', ['-c', ADJTIMEX_PY], { encoding: 'utf8', timeout: 10_000 });
    expect(py.status, py.stderr).toBe(0);
    const after = b.clockState();
    const [state, status, maxError, estError] = py.stdout.trim().split(' ').map(Number);
    expect([before, after].some((s) => s.state === state && s.status === status), `${py.stdout} vs ${JSON.stringify([before, after])}`).toBe(true);
    expect(before.state).toBeGreaterThanOrEqual(0);
    expect(before.state).toBeLessThanOrEqual(5); // TIME_OK .. TIME_ERROR
    // The errors grow by 500 ppm of the time between reads: the same order, not the same value.
    expect(Math.abs(after.maxErrorUs - maxError)).toBeLessThan(1_000_000);
    expect(after.estErrorUs).toBeGreaterThanOrEqual(0);
    expect(Number.isFinite(estError)).toBe(true);
    expect(Object.keys(before).sort()).toEqual(['estErrorUs', 'maxErrorUs', 'state', 'status']);
  });
});

/** struct timex (x86-64, arm64 and armhf alike in layout for these leading fields, as libc defines them), adjtimex() with modes 0. */
const ADJTIMEX_PY = `
import ctypes
L = ctypes.c_long
class timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", L), ("freq", L), ("maxerror", L), ("esterror", L), ("status", ctypes.c_int),
                ("rest", ctypes.c_char * 256)]
t = timex()
r = ctypes.CDLL(None, use_errno=True).adjtimex(ctypes.byref(t))
assert r >= 0, ctypes.get_errno()
print(r, t.status, t.maxerror, t.esterror)
`;

describe.skipIf(skipUnless(netnsSkipReason, 'native addon in a namespace'))('native addon in a network namespace', () => {
  beforeAll(() => {
    ensureNativeDist();
    ns = createNamespace(PREFIX);
  });

  afterAll(() => {
    if (ns) deleteNamespace(ns);
  });

  it('tunOpen: kernel name, tun/tap type, O_NONBLOCK and FD_CLOEXEC; device gone on close', () => {
    const r = scenario('tun-open');
    expect(r.addon).toBe(join(REPO, 'build', 'Release', 'vxedge_native.node')); // via dist/native/index.js
    expect(r.sameBinding).toBe(true);
    expect(r.tun.name).toBe('vxt0'); // 'vxt%d' numbered by the kernel
    expect(r.tun.link).toMatch(/tun type tun pi off/);
    expect(r.tap.name).toBe('vxp0');
    expect(r.tap.link).toMatch(/tun type tap pi off/);
    expect(r.tap.link).toMatch(/link\/ether/);
    expect(r.auto.name).toBe('tap0');
    for (const t of [r.tun, r.tap]) {
      expect(t.flags & O_NONBLOCK).toBe(O_NONBLOCK);
      expect(t.flags & O_CLOEXEC).toBe(O_CLOEXEC);
    }
    expect(r.afterClose).not.toMatch(/vxt0|vxp0|tap0/);
  });

  it('netlinkRead: the device\'s link, addresses and deleted routes, the underlay\'s link and addresses, default routes, nothing of other interfaces; a storm says so', () => {
    const r = scenario('netlink');
    expect(r.flags & O_NONBLOCK).toBe(O_NONBLOCK);
    expect(r.flags & O_CLOEXEC).toBe(O_CLOEXEC);
    const [LINK, ADDRESS, ROUTE_GONE, LOST] = [NETLINK_LINK, NETLINK_ADDRESS, NETLINK_ROUTE_GONE, NETLINK_LOST];
    expect(r.steps).toEqual({
      otherUp: 0,
      otherRouteGone: 0,
      deviceUp: LINK,
      routeAdded: 0, // our own peer routes going in wake nothing
      routeDeleted: ROUTE_GONE,
      underlayUp: LINK,
      underlayAddr: ADDRESS,
      // The site's router may have changed: a default route of the main table, whatever its
      // interface; one of another table (policy routing) wakes nothing.
      defaultAdded: NETLINK_DEFAULT_ROUTE,
      defaultReplaced: NETLINK_DEFAULT_ROUTE,
      defaultGone: NETLINK_DEFAULT_ROUTE,
      otherTableDefault: 0,
      underlayAddrGone: ADDRESS,
      deviceDown: LINK, // the kernel drops the device's routes without a notice of each
      underlayGone: LINK, // by name: its index is gone with it
    });
    // 3 000 routes added while nobody read: more than the socket holds.
    expect(r.storm.mask & LOST).toBe(LOST);
    expect(r.storm.pollErrors).toBeGreaterThan(0); // libuv's word for the socket's ENOBUFS
    expect(r.storm.reads).toBeGreaterThan(1); // bounded reads, the poll fires again for the rest
    expect(r.afterStorm).toBe(ROUTE_GONE);
    expect(r.badArgs).toMatchObject({ threw: true, name: 'RangeError' });
    expect(r.closed).toMatchObject({ threw: true, code: 'EBADF', syscall: 'recvfrom' });
    // TAP mode asks for the neighbour group: its peers' permanent entries deleted or made
    // non-permanent say so; our own going in, and another device's, do not.
    expect(r.neigh.withGroup).toEqual({ added: 0, deleted: NETLINK_NEIGH_GONE, madeStale: NETLINK_NEIGH_GONE, otherDevice: 0 });
    expect(r.neigh.without).toEqual({ added: 0, deleted: 0, madeStale: 0, otherDevice: 0 });
  });

  it('TUN: one poll wakeup, one devRead of many packets packed in one buffer; devWrite delivers', () => {
    const r = scenario('tun-io');
    expect(r.sent).toBe(8);
    expect(r.timedOut).toBe(false);
    expect(Math.max(...r.reads.map((rd: Read) => rd.offs.length))).toBeGreaterThan(1);
    for (const rd of r.reads) expect(rd.offs).toEqual(packedOffsets(64, rd.lens));
    const udp = r.pkts.filter((p: { proto: number }) => p.proto === 17);
    expect(udp).toHaveLength(8);
    for (const [i, p] of udp.entries()) {
      expect(p).toMatchObject({ ver: 4, src: '10.99.0.1', dst: '10.99.0.2', sport: 6666, dport: 9999 });
      expect(p.len).toBe(20 + 8 + 20 + i * 100);
      expect(p.payloadOk).toBe(true);
    }
    expect(r.headroomOk).toBe(true);
    expect(r.tailOk).toBe(true);
    // [UDP, junk, UDP, ICMP echo]: the junk is skipped (EINVAL), the rest is accepted.
    expect(r.written).toBe(3);
    expect(r.errAfter.count - r.errBefore.count).toBe(1);
    expect(r.errAfter).toMatchObject({ errno: 22, code: 'EINVAL' });
    expect(r.delivered).toEqual([
      { addr: '10.99.0.2', port: 7777, len: 18, text: 'first via devWrite' },
      { addr: '10.99.0.2', port: 7777, len: 19, text: 'second via devWrite' },
    ]);
    expect(r.sentBig).toBe(2);
    // 1028 bytes do not fit in a room of 200; the 38-byte packet takes the space it left, in
    // the same call (the buffer holds only one packet).
    expect(r.trunc).toEqual([{ offs: [64, 64], lens: [-1, 20 + 8 + 10] }]);
    expect(r.replies[0]).toEqual({
      src: '10.99.0.1',
      dst: '10.99.0.2',
      type: 0,
      id: 0x1234,
      seq: 7,
      data: 'echo-data-0123456789',
    });
  });

  it('devRead: packets packed at 64-byte boundaries; the read stops when the buffer cannot hold another', () => {
    const r = scenario('tun-packed');
    expect(r.sent).toBe(6);
    // Not even one packet fits behind the headroom: nothing is read, nothing is lost.
    expect(r.tooSmall).toEqual({ offs: [], lens: [] });
    // IP packets of 100..105 bytes, each taking 192 bytes: the buffer holds 3 per call,
    // although 6 were waiting and max was 6.
    expect(r.reads).toHaveLength(2);
    const lens = [100, 101, 102, 103, 104, 105];
    expect(r.reads.map((rd: Read) => rd.lens)).toEqual([lens.slice(0, 3), lens.slice(3)]);
    for (const rd of r.reads) {
      expect(rd.offs).toEqual([32, 32 + 192, 32 + 2 * 192]);
      expect(rd.offs).toEqual(packedOffsets(32, rd.lens));
      const end = rd.offs[2] + rd.lens[2];
      expect(((end + 63) & ~63) + 32 + 1500).toBeGreaterThan(r.bufLen); // no room for a 4th
    }
    expect(r.reads.flatMap((rd: Read & { marks: number[] }) => rd.marks)).toEqual([0x40, 0x41, 0x42, 0x43, 0x44, 0x45]);
    expect(r.after).toEqual({ offs: [], lens: [] });
  });

  it('TAP: Ethernet frames both ways, runt frames skipped', () => {
    const r = scenario('tap-io');
    expect(r.sent).toBe(3);
    const data = r.frames.filter((f: { ethertype: number }) => f.ethertype === 0x0800);
    expect(data.map((f: { len: number }) => f.len)).toEqual([14 + 29, 14 + 30, 14 + 31]);
    for (const f of data) expect(f).toMatchObject({ dstMac: '02:00:00:00:00:02', proto: 17, dport: 9998 });
    expect(r.written).toBe(1);
    expect(r.lastError.code).toBe('EINVAL');
    expect(r.delivered).toEqual([{ addr: '10.98.0.2', port: 7778, text: 'frame via devWrite' }]);
  });

  it('udpSend/udpRecv: 100 varied datagrams, truncation, chunks over 1024, skipped failures', () => {
    const r = scenario('udp');
    const rb = /skmem:\(r\d+,rb(\d+),t\d+,tb(\d+)/.exec(r.skmem);
    expect(Number(rb?.[1])).toBeGreaterThanOrEqual(4 << 20); // SO_RCVBUFFORCE beat rmem_max
    expect(Number(rb?.[2])).toBeGreaterThanOrEqual(4 << 20);
    expect(r.sent100).toBe(100);
    expect(r.got100).toBe(100);
    expect(r.mismatches).toEqual([]);
    expect(r.headroomOk).toBe(true);
    expect(r.sentT).toBe(7);
    expect(r.truncLens).toEqual([100, -1, 50, -1, 199, 200, -1]);
    expect(r.sentMany).toBe(1500);
    expect(r.gotMany).toBe(1500);
    expect(r.inOrder).toBe(true);
    expect(r.sentSkip).toBe(4); // the datagram to port 0 fails with EINVAL and is skipped
    expect(r.failedN).toBe(5); // udpSendFailed names it, and writes nothing past the call's packets
    expect(r.failedSkip).toEqual([0, 0, 1, 0, 0, 9, 9]);
    expect(r.errAfter.count - r.errBefore.count).toBe(1);
    expect(r.errAfter.code).toBe('EINVAL');
    expect(r.skipTexts).toEqual(['skip-test-0', 'skip-test-1', 'skip-test-3', 'skip-test-4']);
  });

  it('udpSend joins consecutive same-size datagrams to one peer into UDP_SEGMENT sends; they arrive as they were sent', () => {
    const r = scenario('udp-join');
    expect(r.sent).toBe(r.total);
    expect(r).toMatchObject({ bOk: true, cOk: true, gotC: 3 });
    // b: 20 of 114 + the shorter 60 (which ends it); c: 3; b: 5 (c came between); b: the 200
    // and one 114 after it (shorter, so it ends that one); the 69 left as 64 (the most one
    // message may carry) + 5.
    expect(r.messages).toBe(6);
  });

  it("udpRecv's ecn: each datagram's outer ECN field, as IP_RECVTOS gives it; a short or mistyped array is refused", () => {
    const r = scenario('udp-ecn');
    expect(r.timedOut).toBe(false);
    expect(r.got).toEqual([
      { text: 'ecn-0', ecn: 0 }, { text: 'ecn-1', ecn: 1 }, { text: 'ecn-187', ecn: 3 }, { text: 'ecn-2', ecn: 2 }, { text: 'ecn-3', ecn: 3 },
    ]);
    expect(r.short).toMatchObject({ threw: true, name: 'RangeError' }); // max 8 > the 2 ecn entries
    expect(r.wrongType).toMatchObject({ threw: true, name: 'TypeError' });
  });

  it('errors: system errors carry code/errno/syscall; bad arguments throw TypeError/RangeError', () => {
    const r = scenario('errors');
    expect(r.alive).toBe(true);
    expect(r.addrInUse).toEqual({
      threw: true,
      isError: true,
      name: 'Error',
      message: 'bind 127.0.0.1:40010: address already in use (EADDRINUSE)',
      code: 'EADDRINUSE',
      errno: 98,
      syscall: 'bind',
    });
    expect(r.addrInUseAny.code).toBe('EADDRINUSE');
    expect(r.badAddr).toMatchObject({ code: 'EADDRNOTAVAIL', syscall: 'bind', message: /^bind 203\.0\.113\.2:8472: / });
    expect(r.longName).toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(r.badName).toMatchObject({ code: 'EINVAL', errno: 22, syscall: 'ioctl(TUNSETIFF)' });
    expect(r.busy).toMatchObject({ code: 'EBUSY', errno: 16, syscall: 'ioctl(TUNSETIFF)' });
    expect(r.busyOffloads).toMatchObject({ code: 'EBUSY', errno: 16, syscall: 'ioctl(TUNSETIFF)' });
    expect(r.wrongType).toMatchObject({ code: 'EINVAL', syscall: 'ioctl(TUNSETIFF)' });
    const ranges = [
      'tapOffloads', 'offloadsNeg', 'queuesZero', 'queuesMany',
      'readRoomBig', 'readRoomZero', 'readHeadroom', 'readMaxOffs', 'readMaxLens', 'readMaxVnet', 'readFraction',
      'writeEnd', 'writeNeg', 'writeN', 'writeNVnet',
      'sendEnd', 'sendNPorts', 'sendEncap', 'sendNVnetIdx',
      'recvMaxPorts', 'recvMaxSegs', 'recvSlots',
    ];
    for (const k of ranges) expect(r[k], k).toMatchObject({ threw: true, name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    const types = [
      'readFdType', 'readBufType', 'readOffsType', 'readLensType', 'readVnetType', 'fewArgs',
      'writeVnetType', 'sendVnetAlone', 'sendVnetIdxAlone', 'recvSegsType', 'pollNotFn', 'pollStopBad',
    ];
    for (const k of types) expect(r[k], k).toMatchObject({ threw: true, name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    expect(r.tapOffloads.message).toMatch(/offloads need a TUN device/);
    expect(r.sendVnetAlone.message).toMatch(/vnet and vnetIdx go together/);
    expect(r.sendOnTun).toMatchObject({ code: 'ENOTSOCK', syscall: 'sendmmsg' });
    expect(r.pollTwice).toMatchObject({ code: 'EEXIST', syscall: 'uv_poll_init' });
    expect(r.pollFile).toMatchObject({ code: 'EPERM', syscall: 'uv_poll_init' });
    expect(r.readClosed).toMatchObject({ code: 'EBADF', errno: 9, syscall: 'read' });
    expect(r.writeClosed).toMatchObject({ code: 'EBADF', syscall: 'write' });
    expect(r.closeTwice).toMatchObject({ code: 'EBADF', syscall: 'close' });
    expect(r.zeroMax).toBe(0);
  });

  it('poll: stop and restart inside the callback, 1100 cycles without leaks, async context', () => {
    const r = scenario('poll');
    expect(r.stopInside.calls).toBe(1);
    expect(r.stopInside.innerStop.threw).toBe(false);
    expect(r.stopInside.counts.open).toBe(0);
    expect(r.restart.restarted).toBe(1);
    expect(r.cycles.inner).toBe(100);
    // 1100 handles were made; all must be freed once closed and collected (slack for GC timing).
    expect(r.cycles.after.allocated).toBeLessThanOrEqual(r.cycles.baseline.allocated + 10);
    expect(r.cycles.after.open).toBe(0);
    expect(r.cycles.rssGrowth).toBeLessThan(16 << 20);
    expect(r.closeStops.counts.open).toBe(0);
    expect(r.closeStops.stopAfter.threw).toBe(false);
    // Both fds were readable in the same loop turn: the second callback must already see
    // the first callback's microtask, i.e. microtasks ran between the two.
    const [first, second] = r.context.order;
    expect(r.context.seen[first].otherMicrotaskRan).toBe(false);
    expect(r.context.seen[second].otherMicrotaskRan).toBe(true);
    expect(r.context.seen.b.store).toBe('b'); // AsyncLocalStorage crosses pollStart
    expect(r.context.seen.c.store).toBe('c');
    expect(r.context.seen.b.asyncId).toBeGreaterThan(1);
    expect(r.context.types).toEqual(['VXEDGE_POLL', 'VXEDGE_POLL']);
    expect(r.final.open).toBe(0);
  });

  it('poll: an exception in the callback is an uncaught exception, not a silent crash', () => {
    const handled = scenario('throw-handled');
    expect(handled).toEqual({ seen: ['boom-from-poll'], alive: true, tickRan: true });
    const r = runChild(ns, CHILD, 'throw-unhandled', 30_000, ['--expose-gc']);
    expect(r.signal).toBeNull(); // not SIGABRT/SIGSEGV
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Error: boom-unhandled/);
  });

  it('multi-queue TUN: a flow that fills its queue does not hold back the others; order per flow kept; nothing leaks', () => {
    const r = scenario('tun-multiqueue');
    const flows = (b: string[][]) => b.flat();
    for (const run of [r.multi, r.single]) {
      expect(run.timedOut).toBe(false);
      expect(run.written).toBe(9); // one reply per flow, each to its flow's queue
      expect([run.junkWritten, run.junkCounted]).toEqual([0, 1]);
      expect(run.repliesDelivered).toBe(true);
      expect(run.gone).toBe(true); // closing the handle closed every queue
      const all: string[] = flows(run.batches);
      expect(all).toHaveLength(48);
      // Each flow in order: a queue is FIFO and a flow never changes queue here.
      expect(all.filter((x) => x.startsWith('bulk'))).toEqual(Array.from({ length: 40 }, (_, i) => `bulk ${i}`));
      expect(new Set(all.filter((x) => x.startsWith('small')))).toEqual(new Set(Array.from({ length: 8 }, (_, i) => `small ${i}`)));
    }
    expect(r.multi.queues).toBe(4);
    expect(r.single.queues).toBe(1);
    // One queue: the 8 small flows wait behind all 40 of the bulk flow.
    expect(r.single.batches[0].every((x: string) => x.startsWith('bulk'))).toBe(true);
    expect(flows(r.single.batches).findIndex((x) => x.startsWith('small'))).toBe(40);
    // Four queues, read in turn: the bulk flow gets at most half of the first batch; a
    // small flow on another queue is through within two batches, one that hashes to the
    // bulk flow's queue waits behind it (the hash is fixed, so which ones is too).
    const first = r.multi.batches[0] as string[];
    expect(first).toHaveLength(8);
    expect(first.filter((x) => x.startsWith('bulk')).length).toBeLessThanOrEqual(4);
    expect(first.filter((x) => x.startsWith('small')).length).toBeGreaterThanOrEqual(4);
    const seq: string[] = flows(r.multi.batches);
    const small = (x: string) => x.startsWith('small');
    const early = seq.slice(0, 16).filter(small).length;
    const late = seq.slice(seq.indexOf('bulk 39')).filter(small).length;
    expect(early + late).toBe(8);
    expect(early).toBeGreaterThanOrEqual(6);
    expect(r.fdsLeaked).toBe(0);
  });

  it("devRead's look leaves the queue of a download's ACKs to the full read and reads the others", () => {
    const r = scenario('tun-look');
    expect(r.timedOut).toBe(false);
    expect([r.setup, r.bulkWritten, r.ackWritten]).toEqual([9, 1, 1]);
    const smalls = Array.from({ length: 8 }, (_, i) => `small ${i}`);
    // The look never returns the bulk flow's answer; the full read does, with any small flow
    // that hashes to the same queue (fixed by the hash, so the same ones every run).
    expect(r.look).not.toContain('rst');
    expect(r.full).toContain('rst');
    expect(r.full.filter((x: string) => x === 'rst')).toHaveLength(1);
    expect([...r.look, ...r.full.filter((x: string) => x !== 'rst')].sort()).toEqual(smalls);
    expect(r.look.length).toBeGreaterThanOrEqual(4); // 8 flows over 4 queues: most elsewhere
    expect(r.first.reads).toBe(r.look.length);
    expect(r.first.left).toBeGreaterThanOrEqual(1);
    // The full read cleared the mark, and a 20-byte ACK set none.
    expect(r.after).toEqual(['rst']);
    expect(r.second).toEqual({ reads: 1, left: 0 });
    expect([r.plainLook, r.plainFull]).toEqual([0, 1]);
  });

  it('multi-queue TUN deleted under the poll: the read throws EBADFD', () => {
    const r = scenario('tun-gone-multiqueue');
    expect(r.queues).toBe(2);
    expect(r.reads).toEqual([expect.objectContaining({ threw: true, code: 'EBADFD', syscall: 'read' })]);
  });

  it('poll: a TUN deleted under the poll reports an error to the callback; reads throw EBADFD', () => {
    const r = scenario('tun-gone');
    expect(r.errs).toEqual([
      { message: expect.stringMatching(/^poll fd \d+: /), code: 'EBADF', errno: 9, syscall: 'uv_poll' },
    ]);
    expect(r.read).toMatchObject({ code: 'EBADFD', errno: 77, syscall: 'read' });
  });
});
