// How the data plane drains its two fds on a wakeup (dataplane/dataplane.ts): at most
// BATCHES_PER_WAKEUP (8) batches of the readable fd's path, then one batch of the other;
// a file descriptor that is gone stops its path only, a bug in a batch is counted. Between
// the underlay's batches the device is looked at (below); between the device's batches the
// underlay is (test/unit/outside-expedite.test.ts).
import { describe, expect, it } from 'vitest';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { KernelDrops } from '../../src/dataplane/kernel-drops.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { NativeSystemError } from '../../src/native/index.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';
import { FakeIo } from './fake-io.js';
import { icmpEcho, ip, mac, vxlanFrame } from './packets.js';

const OUR = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const BATCH = 8;

function rig() {
  const io = new FakeIo();
  const log = new CaptureLog();
  const errors = () => log.lines.filter((l) => l.level === 'error').map((l) => l.msg);
  const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: BATCH };
  const dp = new Dataplane(s, io, io.fds, new PeerTable([AWS1]), log, new ManualClock());
  dp.start();
  const fire = (fd: number) => io.polls.find((p) => p.fd === fd)!.cb();
  const toPods = (n: number) => {
    for (let i = 0; i < n; i++) io.device.inbox.push(icmpEcho('10.244.100.10', '10.244.1.2', 1, i));
  };
  const fromPods = (n: number) => {
    for (let i = 0; i < n; i++) {
      io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10', 2, i)), addr: ip(AWS1.publicIp), port: 8472 });
    }
  };
  return { io, dp, errors, fire, toPods, fromPods };
}

const gone = (code: string) => Object.assign(new Error(`read fd 3: file descriptor in bad state (${code})`), { code, errno: 77, syscall: 'read' }) as NativeSystemError;

describe('draining on a wakeup', () => {
  it('takes at most 8 batches of the readable side, then one of the other side', () => {
    const r = rig();
    r.toPods(100);
    r.fromPods(20);
    r.fire(r.io.fds.underlay);
    expect(r.io.device.written).toHaveLength(20); // the underlay drained (short batch: stop)
    expect(r.io.underlay.sent).toHaveLength(BATCH); // then one batch the other way
    r.fromPods(8 * BATCH + 20);
    r.fire(r.io.fds.underlay);
    expect(r.io.device.written).toHaveLength(20 + 8 * BATCH); // the bound: the rest waits for the next turn of the loop
    expect(r.io.underlay.sent).toHaveLength(2 * BATCH);
    r.fire(r.io.fds.device);
    expect(r.io.underlay.sent).toHaveLength(10 * BATCH); // the same bound the other way
    expect(r.io.device.written).toHaveLength(40 + 8 * BATCH); // what the underlay still held
    r.fire(r.io.fds.device);
    expect(r.io.underlay.sent).toHaveLength(100);
    expect(r.dp.pollError).toBeNull();
    expect(r.dp.drops.snapshot()).toEqual({});
  });

  it('while the underlay drains, the device is looked at after each of its full batches, and what a look reads leaves at once', () => {
    const r = rig();
    const calls: string[] = [];
    const io = r.io;
    const devRead = io.devRead.bind(io);
    const udpRecv = io.udpRecv.bind(io);
    const udpSend = io.udpSend.bind(io);
    // A look reads only the queues without a download's ACKs (the addon's choice): here one
    // echo request each time, from a queue of its own.
    const others = [0, 1, 2].map((i) => icmpEcho('10.244.100.10', '10.244.1.2', 3, i));
    io.devRead = (fd, buf, headroom, room, max, offs, lens, vnet, look) => {
      calls.push(look ? 'look' : 'read');
      if (!look) return devRead(fd, buf, headroom, room, max, offs, lens, vnet);
      if (others.length === 0) return 0;
      io.device.inbox.push(others.shift()!);
      return devRead(fd, buf, headroom, room, 1, offs, lens, vnet);
    };
    io.udpRecv = (...a: Parameters<FakeIo['udpRecv']>) => {
      calls.push('recv');
      return udpRecv(...a);
    };
    io.udpSend = (...a: Parameters<FakeIo['udpSend']>) => {
      calls.push('send');
      return udpSend(...a);
    };
    r.fromPods(3 * BATCH + 2);
    r.fire(io.fds.underlay);
    // Three full batches, each followed by a look whose echo is sent before the next batch;
    // the short fourth ends the drain, then the device's own turn (nothing left there).
    expect(calls).toEqual(['recv', 'look', 'send', 'recv', 'look', 'send', 'recv', 'look', 'send', 'recv', 'read']);
    expect(io.underlay.sent).toHaveLength(3);
    expect(io.device.written).toHaveLength(3 * BATCH + 2);
  });

  it('a device that is gone (EBADFD on the read) stops the device side only', () => {
    const r = rig();
    let reads = 0;
    r.io.devRead = () => {
      reads++;
      throw gone('EBADFD');
    };
    r.fire(r.io.fds.device);
    expect(r.dp.pollError).toMatch(/^device poll failed: .*EBADFD/);
    expect(r.errors()).toEqual(['the data plane stopped reading a file descriptor']);
    expect(r.io.polls.map((p) => p.fd)).toEqual([r.io.fds.underlay]);
    r.fromPods(3);
    r.fire(r.io.fds.underlay); // the underlay goes on; the dead device is not read again
    expect(reads).toBe(1);
    expect(r.io.underlay.inbox).toHaveLength(0);
  });

  it('a bug in a batch is counted once per batch, logged once, and the poll goes on', () => {
    const r = rig();
    r.io.devRead = () => {
      throw new TypeError('boom');
    };
    r.fire(r.io.fds.device);
    r.fire(r.io.fds.device);
    expect(r.dp.drops.snapshot()).toEqual({ internal: 2 });
    expect(r.errors()).toEqual(['internal error in the packet path (further ones are only counted)']);
    expect(r.dp.pollError).toBeNull();
    expect(r.io.polls).toHaveLength(2);
  });

  it('stop() ends both polls', () => {
    const r = rig();
    r.dp.stop();
    expect(r.io.polls).toHaveLength(0);
  });
});

describe('sends the sender thread could not make', () => {
  it('are counted as underlaySend drops when the counters are read, once each', () => {
    const r = rig();
    let pending = 0;
    (r.io as FakeIo & { udpSendLost(): number }).udpSendLost = () => {
      const n = pending;
      pending = 0;
      return n;
    };
    r.toPods(5);
    r.fire(r.io.fds.device);
    expect(r.io.underlay.sent).toHaveLength(5); // udpSend accepted all five
    pending = 3; // the thread then found the socket full for three of them
    r.dp.collectLosses();
    expect(r.dp.drops.get('underlaySend')).toBe(3);
    r.dp.collectLosses(); // nothing new: not counted twice
    expect(r.dp.drops.get('underlaySend')).toBe(3);
  });

  it('without a sender thread (no udpSendLost) nothing is added', () => {
    const r = rig();
    r.dp.collectLosses();
    expect(r.dp.drops.total()).toBe(0);
  });
});

describe("the kernel's drops at the two edges", () => {
  it('are read with the other losses, beside the data plane\'s own counts', () => {
    const r = rig();
    const k = { device: 10, sockets: [1, 2] };
    r.dp.kernelDrops = new KernelDrops({ device: () => k.device, underlay: () => k.sockets });
    r.toPods(2);
    r.fire(r.io.fds.device);
    k.device = 16; // six packets found the device's queue full
    k.sockets = [1, 5];
    r.dp.collectLosses();
    expect(r.dp.drops.snapshot()).toEqual({ deviceQueue: 6, underlayReceive: 3 });
    expect(r.io.underlay.sent).toHaveLength(2); // what was read still went out
  });
});
