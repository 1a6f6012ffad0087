// The outside path's expedite() (dataplane/outside.ts): a look at the underlay between the
// device's batches that writes at once what is not TCP of a bulk flow (one the inside path
// saw moving data to the peers, dataplane/bulk-flows.ts) and holds that flow's segments, in
// order, until the next pump(); and the data plane's drain that calls it (dataplane/dataplane.ts).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BulkFlows } from '../../src/dataplane/bulk-flows.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { DropCounters } from '../../src/dataplane/drops.js';
import { OutsidePath } from '../../src/dataplane/outside.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { Logger } from '../../src/util/log.js';
import { ManualClock } from '../support/clock.js';
import { FakeIo } from './fake-io.js';
import { fixTcpChecksum, icmpEcho, ip, ipv4, mac, tcp, vxlanFrame } from './packets.js';

const OUR = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const BATCH = 8;

function settings(over: Partial<PathSettings> = {}): PathSettings {
  return { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: BATCH, ...over };
}

/** A TCP packet with the given ports (tcp() makes 40000 -> 5201). */
function withPorts(p: Buffer, sport: number, dport: number): Buffer {
  p.writeUInt16BE(sport, 20);
  p.writeUInt16BE(dport, 22);
  fixTcpChecksum(p);
  return p;
}
/** A full-sized segment of the site host's upload to pod 10.244.1.2 (host port 5201 -> pod port 40000). */
const upload = (k: number) => withPorts(tcp('10.244.100.10', '10.244.1.2', 0x10, Buffer.alloc(0), Buffer.alloc(1000, k)), 5201, 40000);
/** Inner packets from pod 10.244.1.2 to the site host, each told apart by its last byte: the
 *  upload's ACKs (segment), the answer of an SSH session beside it, an echo reply, DNS. */
const segment = (k: number) => tcp('10.244.1.2', '10.244.100.10', 0x10, Buffer.alloc(0), Buffer.from([k]));
const answer = (k: number) => withPorts(tcp('10.244.1.2', '10.244.100.10', 0x18, Buffer.alloc(0), Buffer.from([k])), 22, 50000);
const echoReply = (k: number) => icmpEcho('10.244.1.2', '10.244.100.10', 7, k, Buffer.from([k]), 0);
const udp = (k: number) => ipv4('10.244.1.2', '10.244.100.10', 17, Buffer.from([0, 53, 0, 53, 0, 9, 0, 0, k]));

function rig(over: Partial<PathSettings> = {}) {
  const io = new FakeIo();
  const s = settings(over);
  const bulk = new BulkFlows();
  const outside = new OutsidePath({ settings: s, io, fds: io.fds, drops: new DropCounters(), peers: new PeerTable([AWS1]), bulk }, () => 1000);
  const arrive = (pkts: Buffer[]) => {
    for (const p of pkts) io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, p), addr: ip(AWS1.publicIp), port: 8472 });
  };
  /** What the inside path does when it reads a segment of the upload. */
  const uploading = () => {
    const u = upload(0);
    bulk.markReverse(u, 0, u.length);
  };
  /** What reached the device, one string per write call. */
  const writes = () => io.device.writes.map((w) => w.data.toString('hex'));
  return { io, outside, arrive, uploading, writes };
}

const hex = (pkts: Buffer[]) => pkts.map((p) => p.toString('hex'));

describe('outside path: expedite()', () => {
  it('writes at once what is not TCP of a bulk flow and holds that flow\'s segments, in order, until the next pump', () => {
    const r = rig();
    r.uploading();
    r.arrive([segment(1), echoReply(1), segment(2), udp(1), answer(1)]);
    expect(r.outside.expedite()).toBe(5);
    expect(r.writes()).toEqual(hex([echoReply(1), udp(1), answer(1)]));
    r.arrive([segment(3), echoReply(2)]);
    r.outside.pump();
    // The held segments first, then the batch pump() received, each flow in arrival order.
    expect(r.writes()).toEqual(hex([echoReply(1), udp(1), answer(1), segment(1), segment(2), segment(3), echoReply(2)]));
  });

  it('holds no TCP of a flow the inside path did not see moving bulk, and pump() forgets what it saw', () => {
    const r = rig();
    r.arrive([segment(1), answer(1)]);
    r.outside.expedite();
    expect(r.writes()).toEqual(hex([segment(1), answer(1)]));
    r.uploading();
    r.arrive([segment(2)]);
    r.outside.expedite();
    expect(r.writes()).toHaveLength(2); // segment(2) held
    r.outside.pump();
    r.arrive([segment(3)]);
    r.outside.expedite(); // no drain has seen the upload since
    expect(r.writes()).toEqual(hex([segment(1), answer(1), segment(2), segment(3)]));
  });

  it('receives into the slots it left free and never over what it holds; with every slot held it receives nothing', () => {
    const r = rig();
    r.uploading();
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

  it('regression: a fragment has no ports: all fragments of a datagram get one answer, whatever a later one\'s first bytes, and a bulk pair\'s fragments wait with its segments', () => {
    const r = rig();
    r.uploading();
    // A TCP datagram from the pod in two fragments: the first with the TCP header (ports 22 ->
    // 50000), the second (offset 24 bytes) whose payload happens to start with the upload's
    // ACK ports (40000 -> 5201); read as ports it named the upload's flow, the first did not.
    const head = tcp('10.244.1.2', '10.244.100.10', 0x18, Buffer.alloc(0), Buffer.alloc(4, 1)).subarray(20);
    head.writeUInt16BE(22, 0);
    head.writeUInt16BE(50000, 2);
    const first = ipv4('10.244.1.2', '10.244.100.10', 6, head, { frag: 0x2000 });
    const tail = Buffer.alloc(16, 2);
    tail.writeUInt16BE(40000, 0);
    tail.writeUInt16BE(5201, 2);
    const later = ipv4('10.244.1.2', '10.244.100.10', 6, tail, { frag: 3 });
    r.arrive([segment(1), first, later, echoReply(1)]);
    r.outside.expedite();
    expect(r.writes()).toEqual(hex([echoReply(1)]));
    r.outside.pump();
    expect(r.writes()).toEqual(hex([echoReply(1), segment(1), first, later]));
    // Between two addresses no bulk flow joins, fragments go at once, all of them.
    const r2 = rig();
    r2.uploading();
    const other = (b: Buffer) => ipv4('10.244.1.3', '10.244.100.10', 6, b.subarray(20), { frag: b === first ? 0x2000 : 3 });
    r2.arrive([other(first), other(later)]);
    r2.outside.expedite();
    expect(r2.writes()).toEqual(hex([other(first), other(later)]));
  });

  it('in TAP mode holds whole frames the same way', () => {
    const r = rig({ tap: true });
    r.uploading();
    r.arrive([segment(1), echoReply(1)]);
    r.outside.expedite();
    expect(r.io.device.written).toHaveLength(1);
    expect(r.io.device.written[0].subarray(14).equals(echoReply(1))).toBe(true);
    r.outside.pump();
    expect(r.io.device.written[1].subarray(14).equals(segment(1))).toBe(true);
  });

  it('whatever the calls, the mix and when the upload is seen, every packet is written once and each flow in arrival order', () => {
    const kinds = [segment, answer, echoReply, udp];
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            arrive: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 12 }),
            call: fc.constantFrom('pump', 'expedite', 'upload seen, expedite'),
          }),
          { maxLength: 12 },
        ),
        (steps) => {
          const r = rig();
          const sent: Buffer[][] = kinds.map(() => []);
          const all: Buffer[] = [];
          let k = 0;
          for (const step of steps) {
            const pkts = step.arrive.map((kind) => {
              const p = kinds[kind](k++ & 0xff);
              sent[kind].push(p);
              return p;
            });
            all.push(...pkts);
            r.arrive(pkts);
            if (step.call === 'pump') r.outside.pump();
            else {
              if (step.call !== 'expedite') r.uploading();
              r.outside.expedite();
            }
          }
          while (r.io.underlay.inbox.length > 0) r.outside.pump();
          r.outside.pump(); // whatever the last expedite held
          const got = r.io.device.written.map((b) => b.toString('hex'));
          expect([...got].sort()).toEqual(hex(all).sort());
          for (const flow of sent) {
            const mine = new Set(hex(flow));
            expect(got.filter((h) => mine.has(h))).toEqual(hex(flow));
          }
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
    // The site host uploads to the pod: three full batches of it wait in the device.
    for (let i = 0; i < 3 * BATCH; i++) io.device.inbox.push(upload(i));
    const arrive = (pkts: Buffer[]) => {
      for (const p of pkts) io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, p), addr: ip(AWS1.publicIp), port: 8472 });
    };
    const fire = () => io.polls.find((p) => p.fd === io.fds.device)!.cb();
    return { io, calls, arrive, fire };
  }

  it('answers waiting on the underlay are written after the device batch in progress, not after the drain; the upload\'s ACKs wait for it', () => {
    const r = drainRig();
    r.arrive([echoReply(1), segment(1), answer(1), segment(2)]);
    r.fire();
    // 3 full device batches and an empty read; after the first, the echo reply and the SSH
    // answer go at once and the upload's two ACKs wait for the drain's own turn at the underlay.
    expect(r.calls).toEqual(['send', 'write 2', 'send', 'send', 'write 2']);
    expect(r.io.device.written.map((b) => b.toString('hex'))).toEqual(hex([echoReply(1), answer(1), segment(1), segment(2)]));
  });

  it('a drain of small packets marks no bulk flow: TCP answers go at once', () => {
    const r = drainRig();
    r.io.device.inbox.length = 0;
    for (let i = 0; i < 2 * BATCH; i++) r.io.device.inbox.push(withPorts(tcp('10.244.100.10', '10.244.1.2', 0x10), 5201, 40000)); // pure ACKs
    r.arrive([segment(1)]);
    r.fire();
    expect(r.calls.slice(0, 2)).toEqual(['send', 'write 1']);
  });

  it('draining the underlay does not look at the device in between (its packets wait for their turn)', () => {
    const r = drainRig();
    r.arrive(Array.from({ length: 2 * BATCH }, (_, i) => echoReply(i)));
    r.io.polls.find((p) => p.fd === r.io.fds.underlay)!.cb();
    expect(r.calls).toEqual(['write 8', 'write 8', 'send']);
  });
});
