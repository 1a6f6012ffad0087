// The offload half of the addon on a real kernel: a TUN device with virtio-net headers and
// TSO, and UDP_SEGMENT/UDP_GRO sockets. Each scenario runs test/native/offload-child.mjs in a
// child Node process inside a network namespace this file creates (vxof-io-<pid>), never in
// the root namespace; the child reaches the addon through dist/native/index.js (built here
// when stale). Needs root, iproute2, ethtool, tc and /dev/net/tun; the addon must be built.
import { release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNamespace, deleteNamespace, ensureNativeDist, netnsSkipReason, scenarioResult } from './scenario.js';
import { skipUnless } from '../lab/harness.js';

const CHILD = fileURLToPath(new URL('./offload-child.mjs', import.meta.url));
let ns = '';
const scenario = (name: string) => scenarioResult(ns, CHILD, name, 20_000);

describe.skipIf(skipUnless(netnsSkipReason, 'offloads on a real kernel'))('offloads on a real kernel (namespace)', () => {
  beforeAll(() => {
    ensureNativeDist();
    ns = createNamespace('vxof-io');
  });
  afterAll(() => {
    if (ns) deleteNamespace(ns);
  });

  it('a refused offload flag throws, leaves no device, and the plain device opens in its place', () => {
    const r = scenario('refuse');
    expect(r.unknownFlag).toMatchObject({ threw: true, code: 'EINVAL', syscall: 'ioctl(TUNSETOFFLOAD)' });
    expect(r.linkAfterRefusal.threw).toBe(true);
    expect(r.plainAfter).toBe('vxo0');
    expect(r.plainLink).toMatch(/vnet_hdr off/);
    expect(r.link).toMatch(/tun type tun pi off vnet_hdr on/);
    expect(r.features).toMatch(/tx-tcp-segmentation: on/);
    expect(r.features).toMatch(/tx-checksum-ip-generic: on/);
    expect(r.afterClose.threw).toBe(true);
  });

  it("the kernel's TCP through the device: TSO super-packets cut into valid segments, joined segments accepted", () => {
    const r = scenario('tcp');
    expect(r.synackWritten).toBe(1);
    expect(r.superPackets).toBeGreaterThan(0);
    expect(r).toMatchObject({ gsoSize: 1400, csumStart: 20, csumOffset: 16, needsCsum: true });
    expect(r.allChecksumsOk).toBe(true);
    expect(r.seqOk).toBe(true);
    expect(r.maxSegment).toBe(1440);
    expect(r.flightBytes).toBeGreaterThanOrEqual(10 * 1400);
    expect(r.flightMatches).toBe(true);
    // 6 segments written in one call: one super-packet, and the socket got every byte.
    expect(r.backWritten).toBe(6);
    expect(r.coalescedWrites).toBe(1);
    expect(r.coalescedSegments).toBe(6);
    expect(r.backReceived).toBe(true);
    // Every read with vnet headers put its packets (super-packets too) where devRead promises:
    // packed at 64-byte boundaries behind the headroom (the SYN and the flight at least).
    expect(r.layout.packets).toBeGreaterThanOrEqual(2);
    expect(r.layout.packedOk).toBe(true);
  });

  it('UDP_SEGMENT out, UDP_GRO in: one message, one coalesced datagram, same bytes as segmented', () => {
    const r = scenario('udp-gso-gro');
    expect(r.groBadFd).toMatchObject({ threw: true, code: 'EBADF', syscall: 'setsockopt(UDP_GRO)' });
    expect(r.expectedCount).toBe(15);
    expect(r).toMatchObject({ sentGro: 1, sentPlain: 1, gsoMessages: 2 });
    expect(r).toMatchObject({ groDatagrams: 1, groSeg: 22 + 40 + 1398, groBytesMatch: true });
    expect(r.plainDatagrams).toBe(15);
    expect(r.plainSegs.every((s: number) => s === 0)).toBe(true);
    expect(r.plainMatch).toBe(true);
  });

  it('UDP datagrams written with vnet headers: one super-packet per flow where the kernel takes them, every datagram delivered byte for byte', () => {
    const r = scenario('udp-write');
    expect(r).toMatchObject({ written: 26, packets: 26, receivedA: 21, receivedB: 5, matchA: true, matchB: true });
    // Linux 6.2 and later take GSO_UDP_L4 writes (this machine's kernel is newer); older
    // ones get every datagram on its own, which the same checks then cover.
    const [major, minor] = release().split('.').map(Number);
    expect(r.usoWrite).toBe(major > 6 || (major === 6 && minor >= 2) ? 1 : 0);
    if (r.usoWrite) expect(r).toMatchObject({ coalescedWrites: 2, coalescedSegments: 26 });
    else expect(r).toMatchObject({ coalescedWrites: 0, coalescedSegments: 0 });
  });

  it('a UDP super-packet read from the device (GSO_UDP_L4, a local UDP_SEGMENT send) is cut back into its datagrams, byte for byte', () => {
    const r = scenario('udp-read');
    expect(r.sent).toBe(11);
    expect(r).toMatchObject({ received: 11, checksumsOk: true, idsCountUp: true, payloadsMatch: true });
    const [major, minor] = release().split('.').map(Number);
    expect(r.usoWrite).toBe(major > 6 || (major === 6 && minor >= 2) ? 1 : 0);
    // With USO the kernel hands the whole send over as one super-packet; without, it cuts it
    // before the device and the datagrams are read one by one.
    if (r.usoWrite) expect(r).toMatchObject({ reads: 1, gsoTypes: [5], gsoSize: 1200, usoPackets: 1, usoSegments: 11 });
    else expect(r).toMatchObject({ reads: 11, usoPackets: 0, usoSegments: 0 });
    // devRead's `segments` budget counts a super-packet by its datagrams (without USO every
    // datagram is a packet of its own, and 64 fill the read's `max` first).
    if (r.usoWrite) expect(r).toMatchObject({ budgetReads: [2, 2], unbudgetedRead: 4 });
    else expect(r).toMatchObject({ budgetReads: [64, 64], unbudgetedRead: 64 });
  });

  it('UDP_SEGMENT refused by the kernel: the segments go out one datagram each, from then on', () => {
    const r = scenario('gso-refused');
    expect(r).toMatchObject({ sent1: 1, sent2: 1, refused: 1, gsoOff: 1, gsoMessages: 0 });
    expect(r.datagrams).toBe(8); // 5000 bytes at 1398: 4 segments per send, all delivered
    // Each send: 3 full segments of 1488 bytes on the wire, fragmented in 2 over the 1000-byte
    // MTU (DF clear, as the kernel's vxlan), and a last one of 908 bytes that fits.
    expect(r.fragments).toBe(14);
    expect(r.outerEcn).toEqual([1]); // the inner ECT(1), on every fragment of every datagram
  });

  it("the outer ECN field as the kernel's vxlan sets it: inner ECN copied, CE as ECT(0), no DSCP; joins and segments keep it", () => {
    const r = scenario('ecn-send');
    expect(r.sentCases).toBe(11);
    expect(r.cases).toEqual({
      '23 bytes': 0, '24 bytes, AF11 + ECT(1)': 1, 'v4 Not-ECT': 0, 'v4 ECT(1)': 1, 'v4 ECT(0)': 2, 'v4 CE': 2, 'v4 DSCP EF + ECT(1)': 1,
      'v6 ECT(0)': 2, 'v6 CE, DSCP CS1': 2, ARP: 0, STUN: 0,
    });
    // [ECT(0) ECT(0)] [Not-ECT Not-ECT] [CE CE]: three UDP_SEGMENT messages, not one.
    expect(r).toMatchObject({ sentRun: 6, runMessages: 3, run: [2, 2, 0, 0, 2, 2] });
    expect(r.superSegments).toBeGreaterThan(8);
    for (const how of [r.inline, r.thread]) {
      expect(how).toEqual({ sent: 2, segmentEcn: [2], segments: r.superSegments, plainEcn: [1] });
    }
    // What passes a held batch (the express set): joined only by equal outer ECN, CE with
    // ECT(0); beside a super-packet (send_early), CE as ECT(0); the held segments keep theirs.
    expect(r).toMatchObject({ heldSent: 1, passSent: 4, earlySent: 2 });
    expect(r.pass).toEqual({ ecn: [1, 1, 2, 2], count: 4 });
    expect(r.early).toEqual([{ tag: 0x67, ecn: 2 }]);
    expect(r.afterHold).toEqual({ count: r.afterHold.want, want: r.afterHold.want, held: [0], second: [1] });
    expect(r.counted).toEqual({ passed: 5, messages: 4 });
  });

  it('the sender thread: batches leave in order byte for byte though the caller reuses its buffer at once; refusals are counted; close waits', () => {
    const r = scenario('send-thread');
    expect(r).toMatchObject({ started: true, startedAgain: true, sendThreadStat: 1 });
    expect(r.accepted).toBe(r.expectedAccepted);
    expect(r.handed).toBeGreaterThanOrEqual(40); // every 4-packet batch went to the thread
    expect(r.expectedCount).toBe(40 * (9 + 3) + 4);
    expect(r.received).toBe(r.expectedCount);
    expect(r.firstMismatch).toBe(-1);
    expect(r).toMatchObject({ idleSingle: 1, inlineAfterIdle: 1 });
    // Three datagrams handed over (udpSend cannot know yet), then refused: counted once.
    expect(r).toMatchObject({ refusedAccepted: 3, lost: 3, lostAgain: 0, lastErrorCode: 'EACCES' });
    expect(r).toMatchObject({ loneRefused: 0, loneLost: 0 }); // sent at once: udpSend itself says it failed
    expect(r.tailMatch).toBe(true);
    expect(r).toMatchObject({ stopped: false, statAfterStop: 0, plainAgain: 4, handedAfterStop: 0 });
  });

  it('the sender thread: a datagram passes the batches it holds and the super-packets read with it when its flow is in none of them, and waits behind its own flow', () => {
    const r = scenario('send-pass');
    // 1. Held: 15 TCP segments. The ICMP echo is sent at once, the segments when let go.
    expect(r).toMatchObject({ superHanded: 1, icmpAccepted: 1, passed1: 1 });
    expect(r.whileHeld1).toEqual([1]);
    expect(r.after1).toEqual(Array(15).fill(6));
    // 2. Held: a UDP datagram and a TCP one. An ICMP echo passes them; a UDP and a TCP datagram
    //    of their flows wait behind them, in order.
    expect(r).toMatchObject({ mixedHanded: 2, batch2Accepted: 3, passed2: 2 });
    expect(r.whileHeld2).toEqual([0x24]);
    expect(r.after2).toEqual([0x22, 0x23, 0x26, 0x27]);
    // 3. Held: bulk TCP. A TCP datagram of its flow waits behind it; one of another flow does not.
    expect(r.whileHeld3).toEqual([0x34]);
    expect(r.after3).toEqual({ count: 16, lastTag: 0x33, passed: 3 });
    // 4. Held: bulk TCP. A batch of ICMP, TCP of the bulk flow, UDP: the ICMP and UDP leave at
    //    once, the TCP after the held segments.
    expect(r.mixAccepted).toBe(3);
    expect(r.whileHeld4).toEqual([0x41, 0x43]);
    expect(r.after4).toEqual({ count: 16, lastTag: 0x42, passed: 5 });
    // 5. Held: bulk TCP. In one call, a second flow's super-packet and then a datagram of that
    //    flow: the datagram stays behind the segments; the ICMP echo of the call passes.
    expect(r.secondAccepted).toBe(3);
    expect(r.whileHeld5).toEqual([0x53]);
    expect(r.after5).toEqual({ count: 31, secondFlowTags: [...Array(15).fill(0x62), 0x52] });
    // 6. Seven batches held, the eighth hand-over waits until the 50 ms hold ends: one wait,
    //    counted with its time, which lies within what the eight calls took. Nothing is lost.
    expect(r.wait6).toMatchObject({ waits: 1, received: 120 });
    expect(r.wait6.elapsed).toBeGreaterThanOrEqual(49);
    expect(r.wait6.ms).toBeGreaterThan(0);
    expect(r.wait6.ms).toBeLessThanOrEqual(r.wait6.elapsed + 1);
    // 7. Nothing held: the echo of a call with a super-packet leaves before its segments are
    //    cut and handed over; the datagram of the super-packet's flow leaves after them.
    expect(r.earlyAccepted).toBe(3);
    expect(r.early7).toEqual({ tags: [0x71, ...Array(15).fill(0x73), 0x72], passed: 1, handed: 1 });
  });

  it('property: the sender thread, the express set and the first pass never reorder a flow, nor lose a packet', () => {
    const r = scenario('send-order');
    expect(r.failure).toBeNull();
    expect(r.runs).toBe(60);
    // The cases exercised what they are about: datagrams passed, batches went to the thread.
    expect(r.passed).toBeGreaterThan(0);
    expect(r.handed).toBeGreaterThan(0);
  });

  it('an underlay socket group: the port stays exclusive, ready members are read in turn, nothing is lost or reordered, close frees the port', () => {
    const r = scenario('udp-group');
    for (const k of ['group', 'single']) {
      expect(r[k]).toMatchObject({ secondPlain: 'EADDRINUSE', secondGroup: 'EADDRINUSE', received: 612, bulkInOrder: true, othersOnce: 12, replyFrom: 7400, rebindAfterClose: null });
      expect(r[k].firstBatch).toBe(16);
    }
    // 600 datagrams of one source were queued before the 12 of others: one socket returns
    // the 12 after all 600. The group reads its ready members in turn, up to a batch of 16
    // from each, so the 12 come within the first batches, except those the kernel's hash put
    // in the same member as the 600 (a 4th of them on average), which stay behind those.
    expect(r.single).toMatchObject({ othersEarly: 0, othersAfterBulk: 12 });
    expect(r.group.othersEarly).toBeGreaterThan(0);
    expect(r.group.othersEarly + r.group.othersAfterBulk).toBe(12);
  });

  it("udpDrops: the kernel's drop count of each socket of a group, exactly what one overflowing source lost, in the one member it hashes to", () => {
    const r = scenario('udp-drops');
    for (const k of ['group', 'single']) {
      const { before, after, received, sent } = r[k];
      expect(before).toEqual(k === 'group' ? [0, 0, 0, 0] : [0]);
      expect(received).toBeGreaterThan(0);
      expect(received).toBeLessThan(sent); // the small buffer overflowed
      expect(after.reduce((a: number, b: number) => a + b, 0)).toBe(sent - received);
      expect(after.filter((c: number) => c > 0)).toHaveLength(1); // one source: one member
    }
  });

  it('the sender thread: a socket that fills up while datagrams pass held TCP, or pass in the first pass of a call: udpSend counts what the kernel took, no more', () => {
    const r = scenario('send-full');
    expect(r.heldHanded).toBe(2);
    expect(r.passed).toBe(256); // the express set filled and was sent mid-call
    expect(r.tookByKernel).toBeGreaterThan(0);
    expect(r.tookByKernel).toBeLessThan(256); // the socket filled up
    // The TCP datagram of the call, still queued when the send stopped, is not counted.
    expect(r.sent).toBe(r.tookByKernel);
    // The same in the first pass of a call with a super-packet: the ICMP datagrams went
    // first (256 passed, the express set full), the socket filled, and neither the rest nor
    // the super-packet's 15 segments are counted.
    expect(r.early.passed).toBe(256);
    expect(r.early.tookByKernel).toBeGreaterThan(0);
    expect(r.early.tookByKernel).toBeLessThan(256);
    expect(r.early.sent).toBe(r.early.tookByKernel);
  });
});
