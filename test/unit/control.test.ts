// Liveness, reasons and roaming: pure functions as tables, the roaming state machine
// against in-memory twins of the device and socket.
import { describe, expect, it } from 'vitest';
import { peerState } from '../../src/control/peer-state.js';
import { peerReason, ReasonMemo, type ReasonFacts } from '../../src/control/reasons.js';
import { OLD_PATH_GRACE_MS, PROBE_RESEND_MS, REFUSED_MS, REFUSED_PER_PEER, ROAM_LOG_EVERY_MS, Roaming, VALIDATIONS_PER_INTERVAL, VALIDATIONS_PER_SECOND } from '../../src/control/roaming.js';
import { ControlPlane } from '../../src/control/control-plane.js';
import { PeerSync } from '../../src/control/peer-sync.js';
import type { PeerConfig } from '../../src/config/types.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import { Logger } from '../../src/util/log.js';
import { intToIp, parseCidr } from '../../src/util/ipv4.js';
import { FakeIo } from './fake-io.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';
import { echoReplyTo, icmpEcho, ip, mac, vxlanFrame } from './packets.js';

describe('peer state machine', () => {
  const T = 90_000;
  const table: [string, { firstProbeAt: number; lastReplyAt: number; lastRxAt: number }, number, string][] = [
    ['nothing sent yet', { firstProbeAt: 0, lastReplyAt: 0, lastRxAt: 0 }, 1_000, 'unknown'],
    ['first probe out, waiting', { firstProbeAt: 1_000, lastReplyAt: 0, lastRxAt: 0 }, 50_000, 'unknown'],
    ['traffic but no answer yet', { firstProbeAt: 1_000, lastReplyAt: 0, lastRxAt: 40_000 }, 50_000, 'unknown'],
    ['never answered within timeout', { firstProbeAt: 1_000, lastReplyAt: 0, lastRxAt: 0 }, 91_001, 'down'],
    ['answered', { firstProbeAt: 1_000, lastReplyAt: 2_000, lastRxAt: 2_000 }, 3_000, 'up'],
    ['answered long ago, silent since', { firstProbeAt: 1_000, lastReplyAt: 2_000, lastRxAt: 2_000 }, 92_000, 'down'],
    ['answered long ago, but frames keep coming', { firstProbeAt: 1_000, lastReplyAt: 2_000, lastRxAt: 90_000 }, 120_000, 'up'],
    ['exactly at the timeout', { firstProbeAt: 0, lastReplyAt: 10_000, lastRxAt: 0 }, 100_000, 'down'],
  ];
  for (const [name, l, now, want] of table) {
    it(name, () => expect(peerState(l, now, T)).toBe(want));
  }
});

describe('peer reasons', () => {
  const base: ReasonFacts = {
    state: 'down', keepalivesEnabled: true, timeoutS: 90, answeredBefore: false, heardRecently: false,
    hostReachable: null, peerIp: '203.0.113.10', port: 8472, siteSubnet: '10.244.100.0/24', nat: null,
  };
  it('is null when up', () => expect(peerReason({ ...base, state: 'up' })).toBeNull());
  it('says we are waiting while unknown', () => expect(peerReason({ ...base, state: 'unknown' })).toMatch(/waiting/));
  it('tells an unreachable host', () => expect(peerReason({ ...base, hostReachable: false })).toMatch(/host unreachable/));
  it('names UDP 8472, the security group and the Node object when the host answers ping', () => {
    const r = peerReason({ ...base, hostReachable: true })!;
    expect(r).toMatch(/answers ping/);
    expect(r).toMatch(/UDP 8472/);
    expect(r).toMatch(/security group/);
    expect(r).toMatch(/Node object/);
    expect(r).not.toMatch(/port forward/);
  });
  it('names the NAT remedies when the site is behind NAT', () => {
    const r = peerReason({ ...base, nat: { local: '192.0.2.10:8472', public: '198.51.100.2:8472' } })!;
    expect(r).toMatch(/port forward to 192\.0\.2\.10:8472/);
    expect(r).toMatch(/srcport 8472 8473/);
  });
  it('points at the inbound direction when frames arrive but probes are not answered', () => {
    expect(peerReason({ ...base, heardRecently: true })).toMatch(/frames from 203\.0\.113\.10 do arrive.*UDP 8472 toward the node/);
  });
  it('mentions that it answered before', () => expect(peerReason({ ...base, answeredBefore: true })).toMatch(/answered before/));
  // With the site's own uplink down every peer went down "host unreachable (is the node running …)".
  it('puts a fault on the gateway side first, and sends no one to the node or the security group', () => {
    const fault = 'eth0 is down (administratively): nothing reaches the peers (see the underlay check)';
    for (const f of [{}, { hostReachable: false }, { heardRecently: true }, { nat: { local: '192.0.2.10:8472', public: '198.51.100.2:8472' } }]) {
      const r = peerReason({ ...base, ...f, localFault: fault })!;
      expect(r).toBe(`no answer to keepalive probes for 90s: the fault is on this side, not the node's: ${fault}`);
    }
    expect(peerReason({ ...base, state: 'unknown', localFault: fault })).toMatch(/waiting/);
    expect(peerReason({ ...base, localFault: null })).toMatch(/security group/);
  });

  describe('remembered per peer (ReasonMemo)', () => {
    const nat = { local: '192.0.2.10:8472', public: '198.51.100.2:8472' };
    // Every fact, changed one at a time: each must give a fresh reason.
    const changes: Partial<ReasonFacts>[] = [
      { state: 'unknown' }, { state: 'up' }, { keepalivesEnabled: false }, { timeoutS: 30 }, { answeredBefore: true },
      { heardRecently: true }, { hostReachable: true }, { hostReachable: false }, { peerIp: '203.0.113.11' }, { port: 4789 },
      { siteSubnet: '10.244.101.0/24' }, { nat }, { nat: { ...nat, public: '198.51.100.3:8472' } }, { nat: { ...nat, local: '192.0.2.11:8472' } },
      { localFault: 'eth0 has no carrier' },
    ];

    it('is the reason peerReason gives, made again only when a fact changed', () => {
      const memo = new ReasonMemo();
      const first = memo.reason('aws-1', { ...base, nat: { ...nat } });
      expect(first).toBe(peerReason({ ...base, nat }));
      // Equal facts in new objects (as every document makes them): the very same string.
      expect(memo.reason('aws-1', { ...base, nat: { ...nat } })).toBe(first);
      for (const c of changes) {
        const facts = { ...base, nat: { ...nat }, ...c };
        expect(memo.reason('aws-1', facts), JSON.stringify(c)).toBe(peerReason(facts));
        expect(memo.reason('aws-1', { ...base, nat: { ...nat } }), JSON.stringify(c)).toBe(first);
      }
    });

    it('keeps peers apart and forgets those not seen in a round', () => {
      const memo = new ReasonMemo();
      memo.beginRound();
      for (let i = 0; i < 500; i++) memo.reason(`aws-${i}`, { ...base, peerIp: `203.0.113.${i % 250}` });
      memo.endRound();
      expect(memo.size).toBe(500);
      expect(memo.reason('aws-7', { ...base, peerIp: '203.0.113.7' })).toBe(peerReason({ ...base, peerIp: '203.0.113.7' }));
      // Peers come and go (cluster membership): the memo holds only the current ones.
      memo.beginRound();
      for (let i = 0; i < 10; i++) memo.reason(`aws-${i}`, { ...base, peerIp: `203.0.113.${i}` });
      memo.endRound();
      expect(memo.size).toBe(10);
    });
  });
});

describe('roaming with path validation', () => {
  const OUR = '0e:5c:aa:00:00:64';
  const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
  function rig() {
    const io = new FakeIo();
    const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8 };
    const clock = new ManualClock();
    const dp = new Dataplane(s, io, io.fds, new PeerTable([AWS1]), new Logger('error', true), clock);
    const log = new CaptureLog();
    const roaming = new Roaming(dp, log, clock);
    roaming.start();
    const logs = { some: (f: (l: string) => boolean) => log.lines.some((l) => f(l.msg)) };
    return { dev: io.device, udp: io.underlay, dp, roaming, logs, lines: log.lines, advance: (ms: number) => clock.advance(ms) };
  }
  const fromPod = () => vxlanFrame(1, OUR, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10'));
  /** aws-1 at `addr` answers each probe sent there that is not in `answered` (a lost one can be put there first). */
  function answerProbesAt(r: ReturnType<typeof rig>, addr: number, answered: Set<number>): void {
    r.udp.sent.forEach((d, i) => {
      if (d.addr !== addr || answered.has(i)) return;
      answered.add(i);
      r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(d.data.subarray(22))), addr, port: 40101 });
    });
    while (r.dp.outside.pump() > 0);
  }

  it('validates a new address with a probe there and one at the old endpoint; moves on the answer once the old endpoint stayed silent', () => {
    const r = rig();
    r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.11'), port: 40000 });
    r.dp.outside.pump();
    expect(r.dev.written).toHaveLength(0); // not forwarded before validation
    expect(r.udp.sent.map((d) => [d.addr, d.port])).toEqual([
      [ip('203.0.113.11'), 8472], // never the source port it came from
      [ip('203.0.113.10'), 8472], // the old path (RFC 9000 §9.3.3)
    ]);
    // The peer's kernel answers the echo: swap addresses, type 0.
    const reply = echoReplyTo(r.udp.sent[0].data.subarray(22));
    // An answer from yet another address does not count.
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, reply), addr: ip('203.0.113.99'), port: 40001 });
    r.dp.outside.pump();
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, reply), addr: ip('203.0.113.11'), port: 40001 });
    r.dp.outside.pump();
    // Answered, but the old endpoint has until the grace is over (counted from the probes) to show it is alive.
    r.advance(OLD_PATH_GRACE_MS - 1);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
    r.advance(1);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.11'));
    expect(r.dp.peers.port[0]).toBe(8472);
    // From now on its frames are accepted from the new address.
    r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.11'), port: 40002 });
    r.dp.outside.pump();
    expect(r.dev.written).toHaveLength(1);
  });

  it('does not move a peer that still answers at its endpoint: someone else answering for it, from an address of its own', () => {
    const r = rig();
    r.advance(100);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 40000 });
    r.dp.outside.pump();
    const [toCandidate, toEndpoint] = r.udp.sent;
    // The forger answers the probe it was sent (it knows the MAC and the subnet), and the
    // real peer answers ours at its endpoint: that answer is ours, consumed, not forwarded.
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(toCandidate.data.subarray(22))), addr: ip('198.51.100.66'), port: 40001 });
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(toEndpoint.data.subarray(22))), addr: ip('203.0.113.10'), port: 40002 });
    r.dp.outside.pump();
    r.advance(OLD_PATH_GRACE_MS);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
    expect(r.dev.written).toHaveLength(0);
    expect(r.logs.some((l) => /still answers at its endpoint: not moved/.test(l))).toBe(true);
    // Any frame from the endpoint counts as alive, not only the answer: traffic of its pods.
    // (198.51.100.66 is refused for REFUSED_MS now: the forger tries from another address.)
    r.advance(5_000);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 40003 });
    r.dp.outside.pump();
    expect(r.udp.sent).toHaveLength(2);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.67'), port: 40003 });
    r.dp.outside.pump();
    r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.10'), port: 40004 });
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(r.udp.sent[2].data.subarray(22))), addr: ip('198.51.100.67'), port: 40001 });
    r.dp.outside.pump();
    r.advance(OLD_PATH_GRACE_MS);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
    expect(r.dev.written).toHaveLength(1); // the pod's frame from the endpoint, forwarded
    // Once the endpoint falls silent, the next validation moves it, and an answer that comes
    // after the grace moves it at once.
    r.advance(5_000);
    r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.11'), port: 40005 });
    r.dp.outside.pump();
    expect(r.udp.sent).toHaveLength(6);
    r.advance(2 * OLD_PATH_GRACE_MS);
    r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(r.udp.sent[4].data.subarray(22))), addr: ip('203.0.113.11'), port: 40001 });
    r.dp.outside.pump();
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.11'));
  });

  it('regression: an echo answer with our ident but not our validation goes on to the keepalive (which may have drawn the same ident)', () => {
    const io = new FakeIo();
    const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8 };
    const clock = new ManualClock();
    const dp = new Dataplane(s, io, io.fds, new PeerTable([AWS1]), new Logger('error', true), clock);
    const seen: number[] = [];
    dp.outside.hooks.onToVtep = (buf, off) => (seen.push(buf.readUInt16BE(off + 26)), true); // the keepalive's hook: the echo's seq
    const ident = 0x4242;
    const roaming = new Roaming(dp, new CaptureLog(), clock, ident);
    roaming.start();
    // A keepalive's answer: the same ident, its own seq and token.
    const keepaliveEcho = icmpEcho('10.244.100.0', '10.244.1.0', ident, 7, Buffer.alloc(16, 0x5a));
    io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(keepaliveEcho)), addr: ip(AWS1.publicIp), port: 40000 });
    dp.outside.pump();
    expect(seen).toEqual([7]);
    // With a validation pending, its old-path answer is ours and stops there; another seq still goes on.
    io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), addr: ip('203.0.113.11'), port: 40001 });
    dp.outside.pump();
    const oldPath = io.underlay.sent.find((d) => d.addr === ip(AWS1.publicIp))!;
    io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(oldPath.data.subarray(22))), addr: ip(AWS1.publicIp), port: 40000 });
    io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(keepaliveEcho)), addr: ip(AWS1.publicIp), port: 40000 });
    dp.outside.pump();
    expect(seen).toEqual([7, 7]);
    expect(io.device.written).toHaveLength(0);
  });

  it('follows a real move within a bounded time while a forger floods from several addresses of its own, at a bounded cost', () => {
    const r = rig();
    // AWS re-mapped aws-1's EIP: its old endpoint is silent from now on, and its pods' frames
    // come from 203.0.113.11, every 200 ms. A forger floods frames claiming aws-1 from six
    // addresses of its own (none answers a probe), ahead of the real ones in every batch.
    const real = ip('203.0.113.11');
    const forgers = [1, 2, 3, 4, 5, 6].map((i) => ip(`198.51.100.${60 + i}`));
    const answered = new Set<number>();
    let t = 0;
    for (; t <= 60_000 && r.dp.peers.addr[0] !== real; t += 100) {
      for (const f of forgers) for (let k = 0; k < 10; k++) r.udp.inbox.push({ data: fromPod(), addr: f, port: 40000 + k });
      if (t % 200 === 0) r.udp.inbox.push({ data: fromPod(), addr: real, port: 40100 });
      while (r.dp.outside.pump() > 0);
      answerProbesAt(r, real, answered); // aws-1's kernel answers every probe that reaches its new address
      r.advance(100);
    }
    // 4 validations at once, each forger address tried once: the six take the first round
    // and two places of the second, 5 s later, which the real address gets too.
    expect(r.dp.peers.addr[0]).toBe(real);
    expect(t).toBeLessThanOrEqual(5_000 + OLD_PATH_GRACE_MS + 100);
    const probesTo = (a: number) => r.udp.sent.filter((d) => d.addr === a).length;
    // Each forger address: its validation's probe and the one resend (the endpoint is silent,
    // and the forger goes on sending from there), then refused.
    for (const f of forgers) expect(probesTo(f), intToIp(f)).toBe(2);
    expect(probesTo(ip('203.0.113.10'))).toBe(forgers.length + 1); // each validation's old-path probe
    expect(r.dev.written).toHaveLength(0); // nothing of the flood, and no probe answer, reached the site
    // The flood goes on against the new endpoint: nothing moves, and its refused addresses cost nothing.
    const sent = r.udp.sent.length;
    for (let k = 0; k < 100; k++) {
      for (const f of forgers) r.udp.inbox.push({ data: fromPod(), addr: f, port: 40000 });
      r.udp.inbox.push({ data: fromPod(), addr: real, port: 40100 });
      while (r.dp.outside.pump() > 0);
      r.advance(100);
    }
    expect(r.dp.peers.addr[0]).toBe(real);
    expect(r.udp.sent.length).toBe(sent);
    expect(r.dev.written).toHaveLength(100); // the peer's own frames, from its new endpoint
  });

  it('moves to neither of two new addresses that both answer: a forger answering from an address of its own does not take a real move', () => {
    const r = rig();
    // aws-1's EIP is re-mapped (its old endpoint falls silent) while a forger with a VXLAN
    // device of its own (aws-1's MAC and subnet) claims it from 198.51.100.66, first.
    const forger = ip('198.51.100.66');
    const real = ip('203.0.113.11');
    r.udp.inbox.push({ data: fromPod(), addr: forger, port: 40000 });
    r.udp.inbox.push({ data: fromPod(), addr: real, port: 40001 });
    r.dp.outside.pump();
    expect(r.udp.sent.map((d) => d.addr)).toEqual([forger, ip('203.0.113.10'), real, ip('203.0.113.10')]);
    const answer = (i: number, from: number) => {
      r.udp.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, echoReplyTo(r.udp.sent[i].data.subarray(22))), addr: from, port: 40002 });
      r.dp.outside.pump();
    };
    answer(0, forger);
    r.advance(10);
    answer(2, real);
    r.advance(OLD_PATH_GRACE_MS);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
    expect(r.logs.some((l) => /two new addresses, and both answer for it: not moved/.test(l))).toBe(true);
    expect(r.dev.written).toHaveLength(0);
    // Both are refused for REFUSED_MS; once the forger has gone, the real address is followed.
    r.udp.inbox.push({ data: fromPod(), addr: real, port: 40001 });
    r.dp.outside.pump();
    expect(r.udp.sent).toHaveLength(4);
    r.advance(REFUSED_MS);
    r.udp.inbox.push({ data: fromPod(), addr: real, port: 40001 });
    r.dp.outside.pump();
    expect(r.udp.sent.map((d) => d.addr).slice(4)).toEqual([real, ip('203.0.113.10')]);
    answer(4, real);
    r.advance(OLD_PATH_GRACE_MS);
    expect(r.dp.peers.addr[0]).toBe(real);
  });

  it('remembers REFUSED_PER_PEER refused addresses per peer, the oldest forgotten first', () => {
    const r = rig();
    // Rounds of VALIDATIONS_PER_INTERVAL new addresses every 5 s, none answering.
    const addrs = Array.from({ length: REFUSED_PER_PEER + VALIDATIONS_PER_INTERVAL }, (_, i) => ip('198.51.100.1') + i);
    expect(addrs.length).toBeGreaterThan(REFUSED_PER_PEER);
    const probesTo = (a: number) => r.udp.sent.filter((d) => d.addr === a).length;
    for (let round = 0; round * VALIDATIONS_PER_INTERVAL < addrs.length; round++) {
      for (const a of addrs.slice(round * VALIDATIONS_PER_INTERVAL, (round + 1) * VALIDATIONS_PER_INTERVAL)) r.udp.inbox.push({ data: fromPod(), addr: a, port: 9 });
      while (r.dp.outside.pump() > 0);
      r.advance(5_000);
    }
    expect(addrs.map(probesTo)).toEqual(addrs.map(() => 1));
    // 25 s on, well within REFUSED_MS: the last 16 are still refused, the first 4 were forgotten.
    for (const a of addrs) r.udp.inbox.push({ data: fromPod(), addr: a, port: 9 });
    while (r.dp.outside.pump() > 0);
    expect(addrs.map(probesTo)).toEqual(addrs.map((_, i) => (i < VALIDATIONS_PER_INTERVAL ? 2 : 1)));
  });

  it('a flood of forged frames from one address costs one validation per REFUSED_MS and moves nothing', () => {
    const r = rig();
    for (let i = 0; i < 100; i++) r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 1000 + i });
    while (r.dp.outside.pump() > 0);
    expect(r.udp.sent).toHaveLength(2); // the probe, and its twin at the endpoint
    expect(r.dp.drops.get('unknownSource')).toBe(100);
    // Unanswered for VALIDATION_TIMEOUT_MS (5 s): refused for REFUSED_MS after that. The
    // candidate probe is sent once more after PROBE_RESEND_MS (the endpoint is silent here,
    // and the address sends on), and that is all.
    for (let t = 0; t < 5_000 + REFUSED_MS; t += 500) {
      r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 9 });
      r.dp.outside.pump();
      r.advance(500);
    }
    expect(r.udp.sent.map((d) => d.addr)).toEqual([ip('198.51.100.66'), ip('203.0.113.10'), ip('198.51.100.66')]);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 9 });
    r.dp.outside.pump();
    expect(r.udp.sent).toHaveLength(5);
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
  });

  it('a flood picks how often validations start, not how much is logged: one line of each kind per peer per ROAM_LOG_EVERY_MS, the next says how many were left out', () => {
    const r = rig();
    // For 150 s, a new forger address every 100 ms; each answers its probe while aws-1 is
    // still heard at its endpoint, so each validation ends in a "not moved" warning.
    for (let t = 0, k = 0; t < 150_000; t += 100, k++) {
      const forger = ip(`198.51.${100 + ((k >> 8) & 0xff)}.${k & 0xff}`);
      r.udp.inbox.push({ data: fromPod(), addr: forger, port: 40000 });
      r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.10'), port: 40001 }); // aws-1, alive
      while (r.dp.outside.pump() > 0);
      answerProbesAt(r, forger, new Set());
      r.advance(100);
    }
    const started = r.udp.sent.filter((d) => d.addr !== ip('203.0.113.10')).length;
    const validating = r.lines.filter((l) => /validating the path/.test(l.msg));
    const refused = r.lines.filter((l) => /still answers at its endpoint: not moved/.test(l.msg));
    expect(started).toBeGreaterThan(100); // the flood got its validations (4 per 5 s)
    expect(validating.length).toBe(Math.ceil(150_000 / ROAM_LOG_EVERY_MS)); // 3: at 0, 60 and 120 s
    expect(refused.length).toBe(3);
    expect(validating[0].fields).not.toHaveProperty('notLogged');
    expect(validating[1].fields?.notLogged).toBeGreaterThan(40);
    expect(validating.reduce((n, l) => n + 1 + Number(l.fields?.notLogged ?? 0), 0)).toBeLessThanOrEqual(started); // counted, not invented
    expect(r.dp.peers.addr[0]).toBe(ip('203.0.113.10'));
  });

  it('a real move whose first probe was lost is followed after PROBE_RESEND_MS, not after REFUSED_MS', () => {
    const r = rig();
    // aws-1's EIP was re-mapped: the old endpoint is silent, its pods' frames come from
    // 203.0.113.11 every 200 ms. The first probe there is lost; the peer answers every other.
    const real = ip('203.0.113.11');
    const answered = new Set<number>([0]); // sent[0], the first probe to `real`: lost
    let t = 0;
    for (; t <= 40_000 && r.dp.peers.addr[0] !== real; t += 100) {
      if (t % 200 === 0) r.udp.inbox.push({ data: fromPod(), addr: real, port: 40100 });
      while (r.dp.outside.pump() > 0);
      answerProbesAt(r, real, answered);
      r.advance(100);
    }
    expect(r.udp.sent[0].addr).toBe(real);
    expect(r.dp.peers.addr[0]).toBe(real);
    expect(t).toBeLessThanOrEqual(PROBE_RESEND_MS + 100);
    // One validation: its probe, the old path's, and the probe once more (same seq and token).
    expect(r.udp.sent.map((d) => d.addr)).toEqual([real, ip('203.0.113.10'), real]);
    expect(r.udp.sent[2].data.equals(r.udp.sent[0].data)).toBe(true);
  });

  it('resends no probe while the peer is heard at its endpoint, nor to an address that sent one frame only', () => {
    const r = rig();
    // A forger's frames from 198.51.100.66 while aws-1 is alive at its endpoint: the
    // validation cannot succeed, and a resend would only cost.
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 40000 });
    r.dp.outside.pump();
    r.advance(1);
    r.udp.inbox.push({ data: fromPod(), addr: ip('203.0.113.10'), port: 40001 });
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.66'), port: 40000 });
    r.dp.outside.pump();
    r.advance(PROBE_RESEND_MS);
    expect(r.udp.sent).toHaveLength(2);
    // The endpoint silent now, a frame from 198.51.100.67 and nothing more from there: the
    // second probe would be more than it sent (RFC 9000 §8.1).
    r.advance(5_000);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.67'), port: 40000 });
    r.dp.outside.pump();
    expect(r.udp.sent).toHaveLength(4);
    r.advance(PROBE_RESEND_MS);
    expect(r.udp.sent).toHaveLength(4);
    // The same with another frame from there: resent once.
    r.advance(5_000);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.68'), port: 40000 });
    r.dp.outside.pump();
    r.advance(1);
    r.udp.inbox.push({ data: fromPod(), addr: ip('198.51.100.68'), port: 40000 });
    r.dp.outside.pump();
    r.advance(PROBE_RESEND_MS);
    expect(r.udp.sent.map((d) => d.addr).slice(4)).toEqual([ip('198.51.100.68'), ip('203.0.113.10'), ip('198.51.100.68')]);
    r.advance(5_000);
    expect(r.udp.sent).toHaveLength(7);
  });

  it('a flood from ever new addresses costs at most VALIDATIONS_PER_INTERVAL validations per peer per 5 s, and VALIDATIONS_PER_SECOND overall', () => {
    const r = rig();
    // One peer, a new source address for every frame (spoofed: nothing answers), 10 s.
    // One frame from each address: no probe is sent to it twice.
    let n = 0;
    for (let t = 0; t <= 10_000; t += 100) {
      for (let k = 0; k < 50; k++, n++) r.udp.inbox.push({ data: fromPod(), addr: ip('100.64.0.0') + n, port: 9 });
      while (r.dp.outside.pump() > 0);
      r.advance(100);
    }
    const toCandidates = r.udp.sent.filter((d) => d.addr !== ip(AWS1.publicIp));
    expect(toCandidates).toHaveLength(3 * VALIDATIONS_PER_INTERVAL); // rounds at 0, 5 and 10 s
    expect(r.udp.sent).toHaveLength(2 * toCandidates.length);
    expect(r.dp.peers.addr[0]).toBe(ip(AWS1.publicIp));

    // Many peers at once: the overall bound holds first.
    const peers = Array.from({ length: 40 }, (_, i) => ({ ...AWS1, name: `aws-${i + 1}`, publicIp: `203.0.113.${100 + i}`, subnet: parseCidr(`10.244.${10 + i}.0/24`), vtepMac: `0a:bb:00:00:${(10 + i).toString(16).padStart(2, '0')}:00` }));
    const io = new FakeIo();
    const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 64 };
    const clock = new ManualClock();
    const dp = new Dataplane(s, io, io.fds, new PeerTable(peers), new Logger('error', true), clock);
    new Roaming(dp, new CaptureLog(), clock).start();
    for (let t = 0; t < 3_000; t += 100) {
      for (const p of peers) io.underlay.inbox.push({ data: vxlanFrame(1, OUR, p.vtepMac, icmpEcho(intToIp(p.subnet.network + 2), '10.244.100.10')), addr: ip('100.64.0.0') + n++, port: 9 });
      while (dp.outside.pump() > 0);
      clock.advance(100);
    }
    expect(io.underlay.sent).toHaveLength(2 * 3 * VALIDATIONS_PER_SECOND); // 3 s
  });
});

describe('roaming follows the cluster', () => {
  const OUR = '0e:5c:aa:00:00:64';
  const STAYS: PeerConfig = { name: 'aws-0', publicIp: '203.0.113.200', port: 8472, subnet: parseCidr('10.244.200.0/24'), vtepMac: '0a:bb:00:00:c8:00' };
  const node = (i: number): PeerConfig => ({
    name: `aws-${i}`, publicIp: `203.0.113.${i}`, port: 8472, subnet: parseCidr(`10.244.${i}.0/24`), vtepMac: `0a:bb:00:00:${i.toString(16).padStart(2, '0')}:00`,
  });
  /** The gateway's wiring (gateway.ts): peer sync applies the cluster's peers, the control plane follows the table. */
  function rig() {
    const io = new FakeIo();
    const s = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8 };
    const clock = new ManualClock();
    const log = new Logger('error', true);
    const dp = new Dataplane(s, io, io.fds, new PeerTable(), log, clock);
    const cp = new ControlPlane(dp, { intervalMs: 0, timeoutMs: 10_000, clock, log, publish: () => undefined, rediscover: () => undefined });
    const device = { addPeers: async () => undefined, removePeers: async () => undefined };
    const sync = new PeerSync(device, dp.peers, () => cp.peersChanged());
    cp.start();
    /** A frame of peer p's pods from `from`, which is not p's endpoint: a roaming candidate. */
    const candidate = (p: PeerConfig, from: string) => {
      const src = intToIp(p.subnet.network + 2);
      io.underlay.inbox.push({ data: vxlanFrame(1, OUR, p.vtepMac, icmpEcho(src, '10.244.100.10')), addr: ip(from), port: 40000 });
      while (dp.outside.pump() > 0);
    };
    return { io, cp, sync, clock, candidate, probesTo: (from: string) => io.underlay.sent.filter((d) => d.addr === ip(from)).length };
  }

  it('forgets the validation state of peers that left the cluster: it holds no more peers than the table', async () => {
    const r = rig();
    await r.sync.apply([STAYS]);
    r.candidate(STAYS, '198.51.100.200');
    // Nodes come and go (autoscaling); each is claimed from a new address while it is in the cluster.
    for (let i = 1; i <= 100; i++) {
      await r.sync.apply([STAYS, node(i)]);
      r.candidate(node(i), `198.51.100.${i}`);
      expect(r.probesTo(`198.51.100.${i}`), `node ${i}`).toBe(1); // its validation started: roaming holds state for it
      await r.sync.apply([STAYS]);
      r.clock.advance(1000);
    }
    expect(r.cp.roaming.trackedPeers).toBe(1);
  });

  it('a node that left and joins again under its name starts afresh: its next new address is validated at once', async () => {
    const r = rig();
    await r.sync.apply([STAYS, node(1)]);
    r.candidate(node(1), '198.51.100.1');
    expect(r.probesTo('198.51.100.1')).toBe(1);
    await r.sync.apply([STAYS]);
    await r.sync.apply([STAYS, node(1)]); // rebuilt, same name, within VALIDATION_INTERVAL_MS
    r.candidate(node(1), '198.51.100.2');
    expect(r.probesTo('198.51.100.2')).toBe(1);
  });
});
