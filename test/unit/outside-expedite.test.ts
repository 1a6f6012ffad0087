// The outside path's expedite() (dataplane/outside.ts): a look at the underlay between the
// device's batches that writes at once what is not TCP and holds TCP, in order, until the
// next pump(); and the data plane's drain that calls it (dataplane/dataplane.ts).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { Logger } from '../../src/util/log.js';
import { ManualClock } from '../support/clock.js';
import { FakeIo } from './fake-io.js';
import { icmpEcho, ip, ipv4, mac, tcp, vxlanFrame } from './packets.js';

const OUR = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const BATCH = 8;

function settings(over: Partial<PathSettings> = {}): PathSettings {
  return { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: BATCH, ...over };
}

/** Inner packets from pod 10.244.1.2 to the site host, each told apart by its last byte. */
const segment = (k: number) => tcp('10.244.1.2', '10.244.100.10', 0x10, Buffer.alloc(0), Buffer.from([k]));
const echoReply = (k: number) => icmpEcho('10.244.1.2', '10.244.100.10', 7, k, Buffer.from([k]), 0);
const udp = (k: number) => ipv4('10.244.1.2', '10.244.100.10', 17, Buffer.from([0, 53, 0, 53, 0, 9, 0, 0, k]));

function rig(over: Partial<PathSettings> = {}) {
  const io = new FakeIo();
  const s = settings(over);
  const outside = new OutsidePath({ settings: s, io, fds: io.fds, drops: new DropCounters(), peers: new PeerTable([AWS1]) }, () => 1000);
  const arrive = (pkts: Buffer[]) => {
    for (const p of pkts) io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, p), addr: ip(AWS1.publicIp), port: 8472 });
  };
  /** What reached the device, one string per write call. */
  const writes = () => io.device.writes.map((w) => w.data.toString('hex'));
  return { io, outside, arrive, writes };
}

const hex = (pkts: Buffer[]) => pkts.map((p) => p.toString('hex'));

describe('outside path: expedite()', () => {
  it('writes what is not TCP at once and holds the TCP segments, in order, until the next pump', () => {
    const r = rig();
    r.arrive([segment(1), echoReply(1), segment(2), udp(1)]);
    expect(r.outside.expedite()).toBe(4);
    expect(r.writes()).toEqual(hex([echoReply(1), udp(1)]));
    r.arrive([segment(3), echoReply(2)]);
    r.outside.pump();
    // The held segments first, then the batch pump() received, each protocol in arrival order.
    expect(r.writes()).toEqual(hex([echoReply(1), udp(1), segment(1), segment(2), segment(3), echoReply(2)]));
  });

  it('receives into the slots it left free and never over what it holds; with every slot held it receives nothing', () => {
    const r = rig();
    r.arrive([1, 2, 3, 4, 5].map(segment));
    expect(r.outside.expedite()).toBe(5);
    expect(r.writes()).toEqual([]);
    r.arrive([echoReply(1), segment(6), segment(7), echoReply(2)]);
    expect(r.outside.expedite()).toBe(3); // the 3 free slots of 8
    expect(r.writes()).toEqual(hex([echoReply(1)]));
    expect(r.outside.expedite()).toBe(0); // every slot holds a segment that waits
    expect(r.io.underlay.inbox).toHaveLength(1);
    r.outside.pump();
    expect(r.writes()).toEqual(hex([echoReply(1), ...[1, 2, 3, 4, 5, 6, 7].map(segment), echoReply(2)]));
  });

  it('in TAP mode holds whole frames the same way', () => {
    const r = rig({ tap: true });
    r.arrive([segment(1), echoReply(1)]);
    r.outside.expedite();
    expect(r.io.device.written).toHaveLength(1);
    expect(r.io.device.written[0].subarray(14).equals(echoReply(1))).toBe(true);
    r.outside.pump();
    expect(r.io.device.written[1].subarray(14).equals(segment(1))).toBe(true);
  });

  it('whatever the calls and the mix, every packet is written once, TCP and the rest each in arrival order', () => {
    const kinds = [segment, echoReply, udp];
    fc.assert(
      fc.property(
        fc.array(fc.record({ arrive: fc.array(fc.integer({ min: 0, max: 2 }), { maxLength: 12 }), call: fc.constantFrom('pump', 'expedite') }), { maxLength: 12 }),
        (steps) => {
          const r = rig();
          const sent: Buffer[] = [];
          let k = 0;
          for (const step of steps) {
            const pkts = step.arrive.map((kind) => kinds[kind](k++ & 0xff));
            sent.push(...pkts);
            r.arrive(pkts);
            if (step.call === 'pump') r.outside.pump();
            else r.outside.expedite();
          }
          while (r.io.underlay.inbox.length > 0) r.outside.pump();
          r.outside.pump(); // whatever the last expedite held
          const got = r.io.device.written.map((b) => b.toString('hex'));
          const isTcp = (h: string) => h.slice(18, 20) === '06';
          expect([...got].sort()).toEqual(hex(sent).sort());
          expect(got.filter(isTcp)).toEqual(hex(sent).filter(isTcp));
          expect(got.filter((h) => !isTcp(h))).toEqual(hex(sent).filter((h) => !isTcp(h)));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('draining the device: the underlay is looked at between its batches', () => {
  function drainRig() {
    const io = new FakeIo();
    const dp = new Dataplane(settings(), io, io.fds, new PeerTable([AWS1]), new Logger('error'), new ManualClock());
    dp.start();
    /** The order of the calls that moved packets: 'send' (to the peers) or 'write n' (to the site). */
    const calls: string[] = [];
    const { udpSend, devWrite } = io;
    io.udpSend = (...a: Parameters<FakeIo['udpSend']>) => (calls.push('send'), udpSend.apply(io, a));
    io.devWrite = (...a: Parameters<FakeIo['devWrite']>) => (calls.push(`write ${a[4]}`), devWrite.apply(io, a));
    for (let i = 0; i < 3 * BATCH; i++) io.device.inbox.push(icmpEcho('10.244.100.10', '10.244.1.2', 1, i));
    const arrive = (pkts: Buffer[]) => {
      for (const p of pkts) io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, p), addr: ip(AWS1.publicIp), port: 8472 });
    };
    const fire = () => io.polls.find((p) => p.fd === io.fds.device)!.cb();
    return { io, calls, arrive, fire };
  }

  it('an answer waiting on the underlay is written after the device batch in progress, not after the drain', () => {
    const r = drainRig();
    r.arrive([echoReply(1), segment(1), segment(2)]);
    r.fire();
    // 3 full device batches and an empty read; after the first, the answer goes at once and
    // the two segments wait for the drain's own turn at the underlay.
    expect(r.calls).toEqual(['send', 'write 1', 'send', 'send', 'write 2']);
    expect(r.io.device.written.map((b) => b.toString('hex'))).toEqual(hex([echoReply(1), segment(1), segment(2)]));
  });

  it('draining the underlay does not look at the device in between (its packets wait for their turn)', () => {
    const r = drainRig();
    r.arrive(Array.from({ length: 2 * BATCH }, (_, i) => echoReply(i)));
    r.io.polls.find((p) => p.fd === r.io.fds.underlay)!.cb();
    expect(r.calls).toEqual(['write 8', 'write 8', 'send']);
  });
});
