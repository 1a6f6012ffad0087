// Tests of the native addon (src/native/vxedge_native.c) and its loader (src/native/index.ts).
//
// The loader tests run in this process and make no syscall that touches the network. Every
// test that needs a device or a socket runs test/native/child.mjs in a child Node process
// INSIDE a network namespace this file creates (vxn-nat-<pid>), never in the root namespace:
//
//   vitest ──spawn──> ip netns exec vxn-nat-<pid> node child.mjs <scenario>  ──> one JSON line
//
// Needs root, iproute2 and /dev/net/tun; the addon must be built first (`npm run install`).

import { spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import * as native from '../../src/native/index.js';

const PREFIX = 'vxn-nat-';
const NS = `${PREFIX}${process.pid}`;
const CHILD = fileURLToPath(new URL('./child.mjs', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));

const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

const canNetns =
  process.getuid?.() === 0 && existsSync('/dev/net/tun') && spawnSync('ip', ['-V']).status === 0;

interface ChildRun {
  status: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  json: any;
}

function runChild(scenario: string): ChildRun {
  const r = spawnSync('ip', ['netns', 'exec', NS, process.execPath, '--expose-gc', CHILD, scenario], {
    encoding: 'utf8',
    timeout: 30_000,
    cwd: REPO,
  });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let json: unknown;
  try {
    json = JSON.parse(last);
  } catch {
    json = undefined;
  }
  return { status: r.status, signal: r.signal, stderr: r.stderr, json };
}

/** Run a scenario that must succeed and return its JSON. */
function scenario(name: string) {
  const r = runChild(name);
  if (r.status !== 0 || r.json === undefined) {
    throw new Error(`child ${name} failed: status ${r.status} signal ${r.signal}\n${r.stderr}`);
  }
  return r.json;
}

function deleteNamespaces(all: boolean) {
  const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  for (const line of list.split('\n')) {
    const name = line.split(' ')[0];
    if (name && name.startsWith(PREFIX) && (all || name === NS)) {
      spawnSync('ip', ['netns', 'del', name]);
    }
  }
}

describe('native loader (in process, no network)', () => {
  it('finds the package root from src/ and dist/ alike', () => {
    const root = mkdtempSync(join(tmpdir(), 'vxn-root-'));
    try {
      writeFileSync(join(root, 'package.json'), '{}');
      mkdirSync(join(root, 'dist', 'native'), { recursive: true });
      expect(native.findPackageRoot(join(root, 'dist', 'native'))).toBe(root);
      expect(native.findPackageRoot(root)).toBe(root);
    } finally {
      rmSync(root, { recursive: true });
    }
    expect(native.nativeAddonPath()).toBe(join(REPO, 'build', 'Release', 'vxedge_native.node'));
  });

  it('loads the addon and reports no per-packet error yet', () => {
    expect(existsSync(native.nativeAddonPath())).toBe(true);
    expect(native.lastError()).toEqual({ errno: 0, code: '', count: 0 });
  });

  it('rejects bad arguments before any syscall', () => {
    const bogusFd = 2 ** 30; // never open: if validation slipped, the syscall would say EBADF
    const buf = Buffer.alloc(100);
    expect(() => native.tunOpen('x'.repeat(16), true)).toThrow(RangeError);
    expect(() => native.devRead(bogusFd, buf, 50, 0, 3, new Int32Array(3))).toThrow(
      expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }),
    );
    expect(() => native.devWrite(bogusFd, buf, new Int32Array([95]), new Int32Array([6]), 1)).toThrow(
      /packet 0 \[95, \+6\) is outside the buffer/,
    );
    expect(() =>
      native.udpSend(bogusFd, buf, new Int32Array(1), new Int32Array(1), new Uint32Array(1), new Uint16Array(0), 1),
    ).toThrow(RangeError);
    expect(() => native.devRead(-1, buf, 50, 0, 1, new Int32Array(1))).toThrow(RangeError);
    expect(() => (native.devRead as any)(bogusFd, 'buf', 50, 0, 1, new Int32Array(1))).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }),
    );
    expect(() => native.pollStop({ fd: 3 } as any)).toThrow(TypeError);
  });
});

describe.skipIf(!canNetns)('native addon in a network namespace', () => {
  beforeAll(() => {
    deleteNamespaces(true); // leftovers of an earlier, killed run
    execFileSync('ip', ['netns', 'add', NS]);
    execFileSync('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  });

  afterAll(() => {
    deleteNamespaces(false);
  });

  it('tunOpen: kernel name, tun/tap type, O_NONBLOCK and FD_CLOEXEC; device gone on close', () => {
    const r = scenario('tun-open');
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

  it('TUN: one poll wakeup, one devRead of many packets at slot offsets; devWrite delivers', () => {
    const r = scenario('tun-io');
    expect(r.sent).toBe(8);
    expect(r.timedOut).toBe(false);
    expect(Math.max(...r.counts)).toBeGreaterThan(1);
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
    expect(r.truncLens).toEqual([-1, 20 + 8 + 10]); // 1028 bytes do not fit in 200
    expect(r.replies[0]).toEqual({
      src: '10.99.0.1',
      dst: '10.99.0.2',
      type: 0,
      id: 0x1234,
      seq: 7,
      data: 'echo-data-0123456789',
    });
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
    expect(r.errAfter.count - r.errBefore.count).toBe(1);
    expect(r.errAfter.code).toBe('EINVAL');
    expect(r.skipTexts).toEqual(['skip-test-0', 'skip-test-1', 'skip-test-3', 'skip-test-4']);
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
    expect(r.wrongType).toMatchObject({ code: 'EINVAL', syscall: 'ioctl(TUNSETIFF)' });
    for (const k of ['readSlots', 'readHeadroom', 'readMaxLens', 'readFraction', 'writeEnd', 'writeNeg', 'writeN', 'sendEnd', 'sendNPorts', 'recvMaxPorts', 'recvSlots']) {
      expect(r[k], k).toMatchObject({ threw: true, name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    }
    for (const k of ['readFdType', 'readBufType', 'readLensType', 'fewArgs', 'pollNotFn', 'pollStopBad']) {
      expect(r[k], k).toMatchObject({ threw: true, name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    }
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
    const r = runChild('throw-unhandled');
    expect(r.signal).toBeNull(); // not SIGABRT/SIGSEGV
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/Error: boom-unhandled/);
  });

  it('poll: a TUN deleted under the poll reports an error to the callback; reads throw EBADFD', () => {
    const r = scenario('tun-gone');
    expect(r.errs).toEqual([
      { message: expect.stringMatching(/^poll fd \d+: /), code: 'EBADF', errno: 9, syscall: 'uv_poll' },
    ]);
    expect(r.read).toMatchObject({ code: 'EBADFD', errno: 77, syscall: 'read' });
  });
});
