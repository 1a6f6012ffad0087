// Keepalives: the pure step function as a timeline, then the driver and the whole control
// plane (keepalive, roaming, diagnosis, supervisor) over in-memory I/O on a manual clock.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ControlPlane } from '../../src/control/control-plane.js';
import { LearnedEndpoints } from '../../src/control/endpoints.js';
import {
  BIG_EVERY,
  initialKeepalive,
  keepaliveStep,
  probeStats,
  WINDOW,
  type KeepaliveParams,
  type KeepaliveState,
} from '../../src/control/keepalive-machine.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import { ProbeTokens, RandomWords } from '../../src/control/probe-tokens.js';
import { Keepalive } from '../../src/control/keepalive.js';
import { OLD_PATH_GRACE_MS } from '../../src/control/roaming.js';
import type { PathSettings } from '../../src/dataplane/settings.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { Logger } from '../../src/util/log.js';
import { ManualClock, flush } from '../support/clock.js';
import { FakeIo } from './fake-io.js';
import { echoReplyTo, icmpEcho, ip, mac, vxlanFrame } from './packets.js';

const P: KeepaliveParams = { intervalMs: 25_000, timeoutMs: 90_000 };

/** Runs a list of events through the step function, collecting what it asked for. */
function run(events: Parameters<typeof keepaliveStep>[1][], p = P, s0: KeepaliveState = initialKeepalive(100)) {
  let s = s0;
  const sends: { seq: number; big: boolean }[] = [];
  const changes: string[] = [];
  const dues: (number | null)[] = [];
  for (const ev of events) {
    const r = keepaliveStep(s, ev, p);
    s = r.state;
    if (r.send) sends.push(r.send);
    if (r.changed) changes.push(`${r.changed.from}->${r.changed.to}`);
    if (ev.type === 'due') dues.push(r.nextDueIn);
  }
  return { s, sends, changes, dues };
}

describe('keepalive step function', () => {
  it('sends a probe on each due event, the next one interval ± 20 % later', () => {
    const r = run([
      { type: 'due', now: 1000, jitter: 0 },
      { type: 'due', now: 26_000, jitter: -1 },
      { type: 'due', now: 46_000, jitter: 1 },
      { type: 'due', now: 76_000, jitter: 7 }, // out of range: clamped
    ]);
    expect(r.sends.map((x) => x.seq)).toEqual([101, 102, 103, 104]);
    expect(r.dues).toEqual([25_000, 20_000, 30_000, 30_000]);
    expect(r.s.firstProbeAt).toBe(1000);
  });

  it('makes the second probe and every 4th after it a full-size one, kept out of the loss window', () => {
    const r = run(Array.from({ length: 9 }, (_, i) => ({ type: 'due' as const, now: 1000 + i * 25_000, jitter: 0 })));
    expect(r.sends.map((x) => x.big)).toEqual([false, true, false, false, false, true, false, false, false]);
    expect(BIG_EVERY).toBe(4);
    expect(r.s.window.smallProbes().map((h) => h.seq)).toEqual([101, 103, 104, 105, 107, 108, 109]);
    expect(r.s.window.bigProbe()?.seq).toBe(106);
    // A full-size probe does not replace an unanswered one still within its answer window.
    const quick = run(Array.from({ length: 6 }, (_, i) => ({ type: 'due' as const, now: 1000 + i * 1000, jitter: 0 })));
    expect(quick.s.window.bigProbe()?.seq).toBe(102);
  });

  it('goes up on an answer, with the RTT of that probe, and ignores answers to nothing', () => {
    const r = run([
      { type: 'due', now: 1000, jitter: 0 },
      { type: 'reply', now: 1003.25, seq: 999 },
      { type: 'reply', now: 1004.5, seq: 101 },
      { type: 'reply', now: 1005, seq: 101 }, // duplicate
    ]);
    expect(r.changes).toEqual(['unknown->up']);
    expect(r.s.lastRttMs).toBe(4.5);
    expect(r.s.lastReplyAt).toBe(1004.5);
  });

  it('goes down after the timeout without answers or traffic, and up again on traffic plus an answer', () => {
    const r = run([
      { type: 'due', now: 0, jitter: 0 },
      { type: 'reply', now: 10, seq: 101 },
      { type: 'check', now: 50_000, lastRxAt: 0 },
      { type: 'check', now: 90_009, lastRxAt: 0 },
      { type: 'check', now: 90_011, lastRxAt: 0 },
      { type: 'check', now: 100_000, lastRxAt: 99_000 }, // traffic alone: life, but we had an answer before
    ]);
    expect(r.changes).toEqual(['unknown->up', 'up->down', 'down->up']);
  });

  it('is unknown until the timeout after the first probe, then down', () => {
    const r = run([
      { type: 'check', now: 500_000, lastRxAt: 0 }, // nothing sent yet
      { type: 'due', now: 500_000, jitter: 0 },
      { type: 'check', now: 589_999, lastRxAt: 589_000 },
      { type: 'check', now: 590_000, lastRxAt: 0 },
    ]);
    expect(r.changes).toEqual(['unknown->down']);
  });

  it('judges by traffic alone when probing is off, and never sends', () => {
    const off = { intervalMs: 0, timeoutMs: 20_000 };
    const r = run([
      { type: 'due', now: 0, jitter: 0 },
      { type: 'check', now: 1000, lastRxAt: 0 },
      { type: 'check', now: 2000, lastRxAt: 1500 },
      { type: 'check', now: 21_501, lastRxAt: 1500 },
    ], off);
    expect(r.sends).toEqual([]);
    expect(r.dues).toEqual([null]);
    expect(r.changes).toEqual(['unknown->up', 'up->down']);
  });

  it('computes loss over the settled probes of the last 20, and the path-MTU verdict', () => {
    const events: Parameters<typeof keepaliveStep>[1][] = [];
    for (let i = 0; i < 30; i++) {
      events.push({ type: 'due', now: i * 25_000, jitter: 0 });
      // Answer all small probes but every 4th small one.
      if (i % 4 !== 0) events.push({ type: 'reply', now: i * 25_000 + 5, seq: 101 + i });
    }
    const r = run(events);
    const small = r.s.window.smallProbes();
    expect(small).toHaveLength(WINDOW);
    const lost = small.filter((h) => h.answeredAt === 0).length;
    const stats = probeStats(r.s, 30 * 25_000, P);
    expect(stats.lossPct).toBe(Math.round((1000 * lost) / WINDOW) / 10);
    expect(stats.rttMs).toBe(5);
    // The big probes were among the answered or not: the verdict follows the last one.
    const lastBig = r.s.window.bigProbe()!;
    expect(stats.pathMtuOk).toBe(lastBig.answeredAt > 0 ? true : false);
  });

  it('does not count a probe as lost before it could settle', () => {
    const r = run([{ type: 'due', now: 0, jitter: 0 }]);
    expect(probeStats(r.s, 4_999, P).lossPct).toBeNull();
    expect(probeStats(r.s, 5_001, P).lossPct).toBe(100);
  });
});

// ---------------------------------------------------------------------------------------------
// The driver and the control plane over in-memory I/O.

const OUR = '0e:5c:aa:00:00:64';
const AWS1 = { name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' };
const AWS2 = { name: 'aws-2', publicIp: '203.0.113.20', port: 8472, subnet: parseCidr('10.244.2.0/24'), vtepMac: '0a:bb:00:00:02:00' };

/** The data plane's settings of every rig here: our VTEP in the lab's site subnet. */
const SETTINGS: PathSettings = { tap: false, vni: 1, mtu: 1450, vtepMac: mac(OUR), vtepIp: ip('10.244.100.0'), mssClamp: true, maxMss: 1410, strictPeers: true, batch: 8 };

function rig(params: KeepaliveParams = { intervalMs: 2000, timeoutMs: 10_000 }) {
  const io = new FakeIo();
  const clock = new ManualClock();
  const log = new Logger('error', true);
  const dp = new Dataplane(SETTINGS, io, io.fds, new PeerTable([AWS1, AWS2]), log, clock);
  const pinged: string[] = [];
  const rediscovered: string[] = [];
  let published = 0;
  const cp = new ControlPlane(dp, {
    ...params, clock, log,
    publish: () => published++,
    rediscover: (why) => rediscovered.push(why),
    ping: async (addr) => {
      pinged.push(addr);
      return { reachable: true, rttMs: 1, error: null };
    },
  });
  /** The peer at `addr` answers every probe sent to that address so far (and not yet answered). */
  const answered = new Set<number>();
  const answer = (peer: typeof AWS1, addr = peer.publicIp) => {
    io.underlay.sent.forEach((d, i) => {
      if (d.addr !== ip(addr) || answered.has(i)) return;
      answered.add(i);
      io.underlay.inbox.push({ data: vxlanFrame(1, OUR, peer.vtepMac, echoReplyTo(d.data.subarray(22))), addr: ip(addr), port: 40000 });
    });
    while (dp.outside.pump() > 0);
  };
  return { io, clock, dp, cp, pinged, rediscovered, answer, published: () => published };
}

describe('keepalive driver', () => {
  it('probes each peer soon after start, then every interval, and brings answering peers up', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    expect(r.io.underlay.sent.map((d) => d.addr).sort()).toEqual([ip(AWS1.publicIp), ip(AWS2.publicIp)]);
    const answeredAtWall = r.clock.now();
    r.answer(AWS1);
    expect(r.cp.keepalive.health('aws-1').state).toBe('up');
    expect(r.cp.keepalive.health('aws-2').state).toBe('unknown');
    r.clock.advance(2400); // interval 2 s ± 20 %
    expect(r.io.underlay.sent).toHaveLength(4);
    // lastSeen is wall time, though liveness runs on the monotonic clock: an NTP step moves it along.
    expect(r.cp.keepalive.health('aws-1')).toMatchObject({ lastSeen: answeredAtWall, answeredBefore: true });
    r.clock.setWall(answeredAtWall + 86_400_000);
    expect(r.cp.keepalive.health('aws-1').lastSeen).toBe(answeredAtWall + 86_400_000 - 2400);
    expect(r.cp.keepalive.health('aws-1').state).toBe('up');
  });

  it('probes peers that joined the table before it started', () => {
    const r = rig();
    r.cp.peersChanged(); // the cluster filled the table first
    r.clock.advance(1000);
    expect(r.io.underlay.sent).toHaveLength(0);
    r.cp.start();
    r.clock.advance(500);
    expect(r.io.underlay.sent.map((d) => d.addr).sort()).toEqual([ip(AWS1.publicIp), ip(AWS2.publicIp)]);
    r.clock.advance(2400);
    expect(r.io.underlay.sent).toHaveLength(4); // and on, every interval
  });

  it('takes keepalive.interval changes live, keeping every peer\'s history', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    r.answer(AWS1);
    r.cp.setParams({ intervalMs: 20_000, timeoutMs: 60_000 });
    const sent = r.io.underlay.sent.length;
    r.clock.advance(5000); // the first probe after the change comes within 0.5 s, then 20 s ± 20 %
    const after = r.io.underlay.sent.length - sent;
    expect(after).toBe(2);
    r.clock.advance(10_000);
    expect(r.io.underlay.sent.length - sent).toBe(2);
    expect(r.cp.keepalive.health('aws-1').answeredBefore).toBe(true);
  });

  it('stops probing a peer that left the table and starts on one that joined', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    r.dp.peers.remove('aws-2');
    r.cp.peersChanged();
    const n = r.io.underlay.sent.length;
    r.clock.advance(10_000);
    expect(r.io.underlay.sent.slice(n).every((d) => d.addr === ip(AWS1.publicIp))).toBe(true);
    r.dp.peers.add({ ...AWS2, name: 'aws-3' });
    r.cp.peersChanged();
    r.clock.advance(500);
    expect(r.io.underlay.sent.some((d) => d.addr === ip(AWS2.publicIp))).toBe(true);
    expect(r.cp.keepalive.health('aws-2').state).toBe('unknown'); // forgotten
  });

  it('a peer that stops answering goes down, is diagnosed, and every peer down asks for rediscovery', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    r.answer(AWS1);
    r.answer(AWS2);
    const before = r.published();
    r.clock.advance(11_000);
    expect(r.cp.keepalive.health('aws-1').state).toBe('down');
    expect(r.pinged.sort()).toEqual([AWS1.publicIp, AWS2.publicIp]);
    // The second peer going down left none up: our side may have changed.
    expect(r.rediscovered).toEqual(['peers down']);
    expect(r.published()).toBeGreaterThan(before);
  });
});

describe('keepalive driver: which peers are up', () => {
  it('a peer that left the table while up no longer counts: the last one going down asks for rediscovery', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    r.answer(AWS1);
    r.answer(AWS2);
    expect(r.cp.keepalive.anyUp()).toBe(true);
    r.dp.peers.remove('aws-2');
    r.cp.peersChanged();
    expect(r.cp.keepalive.anyUp()).toBe(true);
    r.clock.advance(11_000);
    expect(r.cp.keepalive.health('aws-1').state).toBe('down');
    expect(r.cp.keepalive.anyUp()).toBe(false);
    expect(r.rediscovered).toEqual(['peers down']);
    // Up again: counted again.
    r.answer(AWS1);
    expect(r.cp.keepalive.anyUp()).toBe(true);
  });
});

describe('keepalive driver: many peers', () => {
  it('looks at 120 peers in 3 slices: each once a second, so peers started together do not all go down in one look', () => {
    const io = new FakeIo();
    const clock = new ManualClock();
    const hex = (x: number) => x.toString(16).padStart(2, '0');
    const peers = Array.from({ length: 120 }, (_, i) => ({
      name: `n${i}`, publicIp: `203.0.113.${i + 1}`, port: 8472, subnet: parseCidr(`10.245.${i}.0/24`), vtepMac: `0a:cc:00:00:00:${hex(i)}`,
    }));
      const dp = new Dataplane(SETTINGS, io, io.fds, new PeerTable(peers), new Logger('error', true), clock);
    // random() fixed: every peer's first probe at the same moment, so all time out together.
    const ka = new Keepalive(dp, { intervalMs: 2000, timeoutMs: 6000, clock, random: () => 0.5 });
    const downAt = new Map<string, number>();
    ka.onStateChange = (name, _from, to) => {
      if (to === 'down') downAt.set(name, clock.monotonic());
    };
    const start = clock.monotonic();
    ka.start();
    for (let t = 0; t < 8000; t += 10) clock.advance(10);
    expect(downAt.size).toBe(120);
    const groups = new Map<number, number>();
    for (const at of downAt.values()) groups.set(at, (groups.get(at) ?? 0) + 1);
    expect([...groups.values()].sort()).toEqual([40, 40, 40]);
    // Each within a second of its timeout (first probe at 275 ms, timeout 6 s).
    for (const at of downAt.values()) {
      expect(at - start).toBeGreaterThanOrEqual(6275);
      expect(at - start).toBeLessThanOrEqual(7275);
    }
    ka.stop();
  });
});

describe('probe tokens', () => {
  const wire = (hi: number, lo: number) => {
    const b = Buffer.alloc(12);
    b.writeUInt32BE(hi, 2);
    b.writeUInt32BE(lo, 6);
    return b;
  };

  it('knows the last WINDOW small probes and the kept full-size one, each answerable once', () => {
    const t = new ProbeTokens();
    for (let seq = 1; seq <= WINDOW + 5; seq++) t.add(seq, false, seq * 7, 0xffffffff - seq);
    t.add(999, true, 0xdeadbeef, 0x01020304);
    // The five oldest small probes left the window.
    for (let seq = 1; seq <= 5; seq++) expect(t.take(seq, wire(seq * 7, 0xffffffff - seq), 2), `seq ${seq}`).toBe(false);
    for (let seq = 6; seq <= WINDOW + 5; seq++) expect(t.take(seq, wire(seq * 7, 0xffffffff - seq), 2), `seq ${seq}`).toBe(true);
    expect(t.take(999, wire(0xdeadbeef, 0x01020304), 2)).toBe(true);
    // Taken: a replayed answer does not count again.
    expect(t.take(10, wire(70, 0xffffffff - 10), 2)).toBe(false);
    expect(t.take(999, wire(0xdeadbeef, 0x01020304), 2)).toBe(false);
  });

  it('refuses a wrong token in either half, and a forged answer does not use up the real one', () => {
    const t = new ProbeTokens();
    t.add(0xffff, false, 0x11111111, 0x22222222);
    expect(t.take(0xffff, wire(0x11111111, 0x22222223), 2)).toBe(false);
    expect(t.take(0xffff, wire(0x11111110, 0x22222222), 2)).toBe(false);
    expect(t.take(0x1ffff, wire(0x11111111, 0x22222222), 2)).toBe(true); // 16-bit sequence numbers
  });

  it('a newer full-size probe replaces the kept one', () => {
    const t = new ProbeTokens();
    t.add(2, true, 1, 2);
    t.add(6, true, 3, 4);
    expect(t.take(2, wire(1, 2), 2)).toBe(false);
    expect(t.take(6, wire(3, 4), 2)).toBe(true);
  });

  it('draws random words without repeating a pool', () => {
    const r = new RandomWords();
    const words = Array.from({ length: 1024 }, () => r.next());
    expect(new Set(words).size).toBeGreaterThan(1020); // 1024 draws of 32 bits: a collision is rare, four are not plausible
    expect(words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff)).toBe(true);
  });
});

describe('keepalive driver: answers must carry the probe\'s token', () => {
  /** The echo reply to probe `i` of those sent so far, its token changed if `forge`. */
  const replyTo = (r: ReturnType<typeof rig>, i: number, forge = false) => {
    const inner = echoReplyTo(r.io.underlay.sent[i].data.subarray(22));
    if (forge) {
      inner[20 + 16] ^= 0x80; // the token's first byte, and the ICMP checksum to match
      inner[20 + 2] ^= 0x80;
    }
    return { data: vxlanFrame(1, OUR, AWS1.vtepMac, inner), addr: ip(AWS1.publicIp), port: 40000 };
  };
  const probesTo = (r: ReturnType<typeof rig>, addr: string) =>
    r.io.underlay.sent.map((d, i) => ({ d, i })).filter((x) => x.d.addr === ip(addr));

  it('a forged token leaves the peer as it was; the real answer then counts', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    const [first] = probesTo(r, AWS1.publicIp);
    r.io.underlay.inbox.push(replyTo(r, first.i, true));
    while (r.dp.outside.pump() > 0);
    expect(r.cp.keepalive.health('aws-1').state).toBe('unknown');
    r.io.underlay.inbox.push(replyTo(r, first.i));
    while (r.dp.outside.pump() > 0);
    expect(r.cp.keepalive.health('aws-1').state).toBe('up');
  });

  it('answers to every small probe of the loss window count, however late, and only once', () => {
    const r = rig({ intervalMs: 2000, timeoutMs: 600_000 });
    r.cp.start();
    r.clock.advance(500);
    r.clock.advance(2400 * 30); // ~30 probes, none answered yet
    const probes = probesTo(r, AWS1.publicIp);
    expect(probes.length).toBeGreaterThanOrEqual(30);
    // Answer them all, oldest first: only the last WINDOW small ones (and the kept big one) are counted.
    for (const x of probes) r.io.underlay.inbox.push(replyTo(r, x.i));
    for (const x of probes) r.io.underlay.inbox.push(replyTo(r, x.i)); // replayed
    while (r.dp.outside.pump() > 0);
    const h = r.cp.keepalive.health('aws-1');
    expect(h.state).toBe('up');
    expect(h.probesSent).toBe(WINDOW);
    expect(h.lossPct).toBe(0); // every probe in the window was answered
    expect(h.pathMtuOk).toBe(true);
  });
});

describe('router forward made while peers do not answer', () => {
  it('probes to peers that are not up pause 35 s (the router forgets their flow), then resume; up peers keep their rhythm', () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    // aws-1 answers every probe; aws-2's answers die at the router.
    for (let t = 0; t < 11_000; t += 1000) {
      r.answer(AWS1);
      r.clock.advance(1000);
    }
    expect(r.cp.keepalive.state('aws-2')).toBe('down');
    r.cp.routerForwardOpened();
    const n = r.io.underlay.sent.length;
    const toAws2 = () => r.io.underlay.sent.slice(n).filter((d) => d.addr === ip(AWS2.publicIp)).length;
    const toAws1 = () => r.io.underlay.sent.slice(n).filter((d) => d.addr === ip(AWS1.publicIp)).length;
    for (let t = 0; t < 34_000; t += 1000) {
      r.clock.advance(1000);
      r.answer(AWS1);
    }
    expect(toAws2()).toBe(0);
    expect(toAws1()).toBeGreaterThanOrEqual(14); // every 2 s ± 20 %
    expect(r.cp.keepalive.state('aws-1')).toBe('up');
    r.clock.advance(1500);
    expect(toAws2()).toBe(1);
    r.answer(AWS2);
    expect(r.cp.keepalive.state('aws-2')).toBe('up');
  });

  it('does nothing before probing started, or when every peer is up', () => {
    const r = rig();
    r.cp.routerForwardOpened(); // not started: nothing was probed yet
    r.cp.start();
    r.clock.advance(500);
    expect(r.io.underlay.sent).toHaveLength(2);
    r.answer(AWS1);
    r.answer(AWS2);
    r.cp.routerForwardOpened();
    r.clock.advance(2400);
    expect(r.io.underlay.sent).toHaveLength(4);
  });
});

describe('regression: a roamed peer is diagnosed at its new address', () => {
  it('pings the address the peer roamed to, at once, even though the old one was pinged a moment ago', async () => {
    const r = rig();
    r.cp.start();
    r.clock.advance(500);
    r.answer(AWS1);
    r.answer(AWS2);
    // aws-1 goes quiet: down, diagnosed at its configured address.
    for (let i = 0; i < 12; i++) {
      r.clock.advance(1000);
      r.answer(AWS2);
    }
    expect(r.pinged).toEqual([AWS1.publicIp]);
    await flush();
    // Its EIP is re-mapped: frames arrive from a new address and validation moves it there.
    const moved = '203.0.113.11';
    r.io.underlay.inbox.push({ data: vxlanFrame(1, OUR, AWS1.vtepMac, icmpEcho('10.244.1.2', '10.244.100.10')), addr: ip(moved), port: 40000 });
    while (r.dp.outside.pump() > 0);
    r.answer(AWS1, moved);
    r.clock.advance(OLD_PATH_GRACE_MS); // the old address stays silent (the EIP is gone)
    expect(r.dp.peers.addr[r.dp.peers.indexOf('aws-1')]).toBe(ip(moved));
    // Still down (the validation answer is no keepalive answer): the gateway's periodic look
    // diagnoses it again, at the new address, without waiting out the minute between reruns.
    expect(r.cp.keepalive.health('aws-1').state).toBe('down');
    r.clock.advance(1000);
    r.cp.tick();
    expect(r.pinged).toEqual([AWS1.publicIp, moved]);
    // And not again within the minute for the same address.
    for (let i = 0; i < 30; i++) {
      r.clock.advance(1000);
      r.answer(AWS2);
      r.cp.tick();
    }
    expect(r.pinged).toEqual([AWS1.publicIp, moved]);
  });
});

describe('learned endpoints (stateDir)', () => {
  it('keeps a roamed address across a restart, while the given address is still the one it was learned against', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vxedge-ep-'));
    try {
      const errors: Error[] = [];
      const store = new LearnedEndpoints(dir, (e) => errors.push(e));
      store.remember('aws-1', AWS1.publicIp, '203.0.113.11', '2026-11-24T12:00:00.000Z');
      await store.flush();
      expect(JSON.parse(readFileSync(join(dir, 'endpoints.json'), 'utf8'))).toEqual({
        'aws-1': { given: AWS1.publicIp, learned: '203.0.113.11', at: '2026-11-24T12:00:00.000Z' },
      });
      // A restart: a fresh table from the same config starts aws-1 where it roamed to.
      const again = new LearnedEndpoints(dir, (e) => errors.push(e));
      await again.load();
      const t = new PeerTable([AWS1, AWS2]);
      expect(again.apply(t)).toEqual(['aws-1']);
      expect(t.addr[t.indexOf('aws-1')]).toBe(ip('203.0.113.11'));
      // The operator (or the cluster) gives a new address: that one wins.
      const t2 = new PeerTable([{ ...AWS1, publicIp: '203.0.113.50' }]);
      expect(again.apply(t2)).toEqual([]);
      expect(t2.addr[0]).toBe(ip('203.0.113.50'));
      expect(errors).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a missing or damaged file means nothing was learned', async () => {
    const store = new LearnedEndpoints('/nonexistent-vxedge-dir', () => undefined);
    await store.load();
    const t = new PeerTable([AWS1]);
    expect(store.apply(t)).toEqual([]);
  });
});
