// Who the peers are and how a change reaches the data plane and the kernel: the peer
// table (lookups, in-place changes), membership (merging and diffing) and peer sync (one
// batch of kernel work per change, nothing else touched), and what a reload applies.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EtcdSource } from '../../src/cluster/etcd.js';
import { encodeLease } from '../../src/cluster/flannel-lease.js';
import { LiveMembership, type MembershipHandover } from '../../src/cluster/live.js';
import { diffPeers, mergePeers } from '../../src/cluster/membership.js';
import type { ClusterSource, ClusterStatus, ClusterView } from '../../src/cluster/types.js';
import { reloadPlan, withLive } from '../../src/config/reload.js';
import { parseConfigText } from '../../src/config/load.js';
import type { Config, PeerConfig } from '../../src/config/types.js';
import type { SiteCertificate } from '../../src/util/tls-failure.js';
import { PeerSync } from '../../src/control/peer-sync.js';
import { PeerTable, STAT_RX_PACKETS } from '../../src/dataplane/peers.js';
import { ipToInt, parseCidr } from '../../src/util/ipv4.js';
import { macToBytes } from '../../src/util/mac.js';
import { CaptureLog, settle } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';
import { FakeEtcd } from './fake-etcd.js';

/** Peer n (1..65535): aws-n at 203.0.(113+n>>8).(n&255), subnet 10.244.n.0/24 for n < 256, a MAC of its own. */
const peer = (n: number, over: Partial<PeerConfig> = {}): PeerConfig => ({
  name: `aws-${n}`,
  publicIp: `203.0.${113 + (n >> 8)}.${n & 255}`,
  port: 8472,
  subnet: over.subnet ?? parseCidr(`10.244.${n & 255}.0/24`),
  vtepMac: `0a:bb:00:00:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`,
  ...over,
});


const AWS_A = { name: 'aws-a', publicIp: '203.0.113.1', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0e:00:00:00:01:01' };

/**
 * A started LiveMembership of a Kubernetes site over an in-memory source: its views are what
 * a test hands to `emit`, its status `own` (connected, registered, `nodes` seen) as the test sets it.
 */
async function overMemorySource(nodes: number) {
  const cfg = parseConfigText(JSON.stringify({
    site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' }, cluster: { source: 'kubernetes' },
  }), 'x.json', 'json', {});
  const m = {
    emit: (_v: ClusterView) => undefined as void,
    own: { source: 'kubernetes', connected: true, lastSync: '2026-12-06T00:00:00.000Z', nodes, registered: true, error: null } as Omit<ClusterStatus, 'peers' | 'skipped'>,
    log: new CaptureLog(),
    /** What the servers present (serverCertificates), how often certificatesSeen was called, and the end of the first handshakes. */
    presented: [] as SiteCertificate[],
    seen: 0,
    firstRead: { resolve: () => undefined as void, promise: Promise.resolve() },
  };
  m.firstRead.promise = new Promise<void>((r) => (m.firstRead.resolve = r));
  const source: ClusterSource = {
    kind: 'kubernetes', start: () => undefined, stop: async () => undefined, setOwnLease: () => undefined,
    onView: (cb) => (m.emit = cb), status: () => m.own,
    serverCertificates: () => m.presented, serverCertificatesRead: () => m.firstRead.promise,
  };
  const live = await LiveMembership.create({
    cfg, siteMac: '0e:5c:aa:00:00:64', clock: new ManualClock(), log: m.log, changed: () => undefined, certificatesSeen: () => m.seen++,
    apply: async () => ({ added: [], removed: [], changed: [] }), load: async () => source,
  });
  await live.start();
  return Object.assign(m, { live });
}

describe('peer table', () => {
  it('routes by longest prefix, whatever the order peers were added in', () => {
    const t = new PeerTable([peer(1, { subnet: parseCidr('10.244.0.0/16') }), peer(2, { subnet: parseCidr('10.244.2.0/24') }), peer(3, { subnet: parseCidr('10.244.2.128/25') })]);
    expect(t.route(ipToInt('10.244.2.200'))).toBe(t.indexOf('aws-3'));
    expect(t.route(ipToInt('10.244.2.5'))).toBe(t.indexOf('aws-2'));
    expect(t.route(ipToInt('10.244.9.9'))).toBe(t.indexOf('aws-1'));
    expect(t.route(ipToInt('10.245.0.1'))).toBe(-1);
    t.remove('aws-3');
    expect(t.route(ipToInt('10.244.2.200'))).toBe(t.indexOf('aws-2'));
  });

  it('finds senders by address and by MAC', () => {
    const t = new PeerTable([peer(1), peer(2)]);
    expect(t.fromAddress(ipToInt('203.0.113.2'))).toBe(1);
    expect(t.fromAddress(ipToInt('203.0.113.9'))).toBe(-1);
    expect(t.fromMac(macToBytes(peer(2).vtepMac), 0)).toBe(1);
    expect(t.fromMac(macToBytes('0a:bb:00:00:00:09'), 0)).toBe(-1);
    const frame = Buffer.alloc(20);
    macToBytes(peer(1).vtepMac, frame, 7);
    expect(t.fromMac(frame, 7)).toBe(0);
  });

  it('regression: two peers behind one address (a port forwarded to each): when the one the address index names leaves or roams, the other is found by that address', () => {
    const shared = '198.51.100.7';
    const t = new PeerTable([peer(1, { publicIp: shared, port: 8472 }), peer(2, { publicIp: shared, port: 8473 }), peer(3)]);
    const a = ipToInt(shared);
    expect([0, 1]).toContain(t.fromAddress(a));
    t.remove(t.names[t.fromAddress(a)]!);
    const left = t.fromAddress(a);
    expect(left).toBeGreaterThanOrEqual(0);
    expect(t.names[left]).not.toBeNull();
    t.add(peer(4, { publicIp: shared }));
    t.setAddress(t.fromAddress(a), ipToInt('192.0.2.44')); // whichever is named roams away
    expect(t.fromAddress(a)).toBeGreaterThanOrEqual(0);
    expect(t.addr[t.fromAddress(a)]).toBe(a);
    expect(t.fromAddress(ipToInt('203.0.113.3'))).toBe(t.indexOf('aws-3'));
  });

  it('agrees with a linear longest-prefix scan for any set of subnets, in 10/8 or above 2^31 (192.168/16 overlays)', () => {
    const subnet = (first: number) =>
      fc.tuple(fc.integer({ min: 0, max: 0xffffff }), fc.integer({ min: 8, max: 30 })).map(([n, len]) => {
        const mask = (0xffffffff << (32 - len)) >>> 0;
        const net = (((first << 24) | n) & mask) >>> 0;
        return parseCidr(`${net >>> 24}.${(net >>> 16) & 255}.${(net >>> 8) & 255}.${net & 255}/${len}`);
      });
    fc.assert(
      fc.property(
        fc.constantFrom(10, 192).chain((first) => fc.tuple(fc.constant(first), fc.uniqueArray(subnet(first), { selector: (c) => c.text, minLength: 1, maxLength: 40 }))),
        fc.array(fc.integer({ min: 0, max: 0xffffff }), { minLength: 1, maxLength: 50 }),
        ([first, subnets], dsts) => {
          const peers = subnets.map((c, i) => peer(i + 1, { subnet: c }));
          const t = new PeerTable(peers);
          return dsts.every((d) => {
            const dst = ((first << 24) | d) >>> 0;
            const matches = peers.filter((p) => ((dst & p.subnet.mask) >>> 0) === p.subnet.network);
            const best = Math.max(-1, ...matches.map((p) => p.subnet.prefixLen));
            const got = t.route(dst);
            return best < 0 ? got === -1 : got >= 0 && t.configs[got]!.subnet.prefixLen === best && matches.includes(t.configs[got]!);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('changes one peer in place: slot, counters and a roamed address stay', () => {
    const t = new PeerTable([peer(1), peer(2)]);
    const s = t.indexOf('aws-2');
    t.countRx(s, 100);
    t.setAddress(s, ipToInt('203.0.113.99')); // it roamed
    t.update(peer(2, { port: 4789 }));
    expect(t.indexOf('aws-2')).toBe(s);
    expect(t.stat(s, STAT_RX_PACKETS)).toBe(1);
    expect(t.addr[s]).toBe(ipToInt('203.0.113.99'));
    expect(t.fromAddress(ipToInt('203.0.113.99'))).toBe(s);
    // A new configured address is taken: the operator (or the cluster) said so.
    t.update(peer(2, { publicIp: '203.0.113.50' }));
    expect(t.addr[s]).toBe(ipToInt('203.0.113.50'));
    expect(t.fromAddress(ipToInt('203.0.113.99'))).toBe(-1);
  });

  it('reuses a freed slot with fresh counters, and grows past its first capacity', () => {
    const t = new PeerTable();
    for (let i = 1; i <= 500; i++) t.add(peer(i, { subnet: parseCidr(`10.${100 + (i >> 8)}.${i & 255}.0/24`) }));
    expect(t.size).toBe(500);
    const s = t.indexOf('aws-7');
    t.countTx(s, 10);
    t.remove('aws-7');
    expect(t.size).toBe(499);
    expect(t.add(peer(7, { name: 'new', subnet: parseCidr('10.200.0.0/24') }))).toBe(s);
    expect(t.stat(s, 2)).toBe(0);
    expect(t.route(ipToInt('10.101.244.9'))).toBe(t.indexOf('aws-500'));
    expect([...t.slots()]).toHaveLength(500);
  });
});

describe('membership', () => {
  const ctx = { network: parseCidr('10.244.0.0/16'), siteSubnet: parseCidr('10.244.100.0/24'), siteMac: '0e:5c:aa:00:00:64' };
  const view = (peers: PeerConfig[]): ClusterView => ({ nodes: peers.length, peers, skipped: [] });

  it('keeps static peers and adds cluster ones, leaving out what would hijack or shadow something', () => {
    const m = mergePeers([peer(1)], view([
      peer(2),
      peer(3, { name: 'static-twin', subnet: parseCidr('10.244.1.0/24') }),
      peer(4, { name: 'site-thief', subnet: parseCidr('10.244.100.0/24') }),
      peer(5, { name: 'outsider', subnet: parseCidr('10.99.0.0/24') }),
      peer(6, { name: 'mac-clone', vtepMac: peer(2).vtepMac }),
      peer(7, { name: 'our-mac', vtepMac: ctx.siteMac }),
      peer(8, { name: 'aws-1' }),
      peer(9, { name: 'sub-of-2', subnet: parseCidr('10.244.2.128/25') }),
    ]), ctx);
    expect(m.peers.map((p) => p.name)).toEqual(['aws-1', 'aws-2']);
    const why = Object.fromEntries(m.skipped.map((s) => [s.name, s.why]));
    expect(why['static-twin']).toMatch(/overlaps the static peer aws-1/);
    expect(why['site-thief']).toMatch(/claims the site's subnet/);
    expect(why.outsider).toMatch(/outside overlay.network/);
    expect(why['mac-clone']).toMatch(/also aws-2's/);
    expect(why['our-mac']).toMatch(/this site's own/);
    expect(why['aws-1']).toMatch(/static peer has the same name/);
    expect(why['sub-of-2']).toMatch(/overlaps node aws-2/);
  });

  it('regression: a newcomer claiming the subnet of a node in force never takes its route, whatever its name', () => {
    const old = peer(2, { name: 'aws-node-1' });
    const thief = peer(9, { name: 'a-thief', subnet: old.subnet });
    const first = mergePeers([], view([old]), ctx);
    const next = mergePeers([], view([old, thief]), { ...ctx, inForce: first.peers });
    expect(next.peers.map((p) => p.name)).toEqual(['aws-node-1']);
    expect(next.skipped).toEqual([{ name: 'a-thief', why: expect.stringContaining('overlaps node aws-node-1') }]);
    // Without history (a fresh start), name order decides, as it must decide something.
    expect(mergePeers([], view([old, thief]), ctx).peers.map((p) => p.name)).toEqual(['a-thief']);
  });

  it('diffs by name: added, removed, changed', () => {
    const d = diffPeers([peer(1), peer(2), peer(3)], [peer(1), peer(2, { publicIp: '203.0.113.77' }), peer(4)]);
    expect(d.added.map((p) => p.name)).toEqual(['aws-4']);
    expect(d.removed.map((p) => p.name)).toEqual(['aws-3']);
    expect(d.changed.map((c) => [c.from.publicIp, c.to.publicIp])).toEqual([['203.0.113.2', '203.0.113.77']]);
  });
});

describe('peer sync', () => {
  function rig(initial: PeerConfig[] = []) {
    const calls: string[] = [];
    const device = {
      addPeers: async (ps: readonly PeerConfig[]) => void calls.push(`add ${ps.map((p) => p.name).join(',')}`),
      removePeers: async (ps: readonly PeerConfig[]) => void calls.push(`del ${ps.map((p) => p.name).join(',')}`),
    };
    const table = new PeerTable();
    let synced = 0;
    const sync = new PeerSync(device, table, () => synced++);
    return { calls, table, sync, synced: () => synced, initial: sync.apply(initial) };
  }

  it('programs 500 peers in one batch, and one node joining or leaving costs one batch for that node', async () => {
    const peers = Array.from({ length: 500 }, (_, i) => peer(i + 1, { subnet: parseCidr(`10.${100 + ((i + 1) >> 8)}.${(i + 1) & 255}.0/24`) }));
    const r = rig(peers);
    await r.initial;
    expect(r.calls).toEqual(['del ', `add ${peers.map((p) => p.name).join(',')}`]);
    r.calls.length = 0;
    const joined = peer(900, { name: 'late', subnet: parseCidr('10.250.0.0/24') });
    await r.sync.apply([...peers, joined]);
    expect(r.calls).toEqual(['del ', 'add late']);
    r.calls.length = 0;
    await r.sync.apply(peers.filter((p) => p.name !== 'aws-7').concat(joined));
    expect(r.calls).toEqual(['del aws-7', 'add ']);
    expect(r.table.size).toBe(500);
  });

  it('puts back the routes of peers in force that the kernel lost, looking only between applies', async () => {
    const r = rig([peer(1), peer(2), peer(3)]);
    await r.initial;
    r.calls.length = 0;
    const later = r.sync.apply([peer(1), peer(3)]);
    // Asked while aws-2 is being removed: the look waits for that apply, and sees its result.
    let looked: string[] = [];
    const restored = r.sync.restoreRoutes(async (peers) => {
      looked = peers.map((p) => p.name);
      return peers.filter((p) => p.name === 'aws-3');
    });
    await later;
    expect((await restored).map((p) => p.name)).toEqual(['aws-3']);
    expect(looked).toEqual(['aws-1', 'aws-3']);
    expect(r.calls).toEqual(['del aws-2', 'add ', 'add aws-3']);
    // Nothing lost: nothing written.
    expect(await r.sync.restoreRoutes(async () => [])).toEqual([]);
    expect(r.calls).toHaveLength(3);
  });

  it('regression: a reload keeps a roamed address, counters and slot of an unchanged peer', async () => {
    const r = rig([peer(1), peer(2)]);
    await r.initial;
    const s = r.table.indexOf('aws-1');
    r.table.setAddress(s, ipToInt('203.0.113.111'));
    r.table.countRx(s, 64);
    const d = await r.sync.apply([peer(1), peer(3)]); // aws-2 removed, aws-3 added, aws-1 unchanged
    expect(d.changed).toEqual([]);
    expect(r.table.indexOf('aws-1')).toBe(s);
    expect(r.table.addr[s]).toBe(ipToInt('203.0.113.111'));
    expect(r.table.stat(s, STAT_RX_PACKETS)).toBe(1);
  });

  it('an address change lives in the table only; a subnet change re-routes just that peer', async () => {
    const r = rig([peer(1), peer(2)]);
    await r.initial;
    r.calls.length = 0;
    await r.sync.apply([peer(1, { publicIp: '203.0.113.41' }), peer(2)]);
    expect(r.calls).toEqual(['del ', 'add ']);
    expect(r.table.addr[r.table.indexOf('aws-1')]).toBe(ipToInt('203.0.113.41'));
    await r.sync.apply([peer(1, { publicIp: '203.0.113.41', subnet: parseCidr('10.244.9.0/24') }), peer(2)]);
    expect(r.calls.slice(2)).toEqual(['del aws-1', 'add aws-1']);
    expect(r.table.route(ipToInt('10.244.9.1'))).toBe(r.table.indexOf('aws-1'));
    expect(r.table.route(ipToInt('10.244.1.1'))).toBe(-1);
  });

  it('a route the kernel refused is tried again at the next apply, one without a change too, until it is in', async () => {
    const calls: string[] = [];
    let refuse = true;
    const device = {
      addPeers: async (ps: readonly PeerConfig[]) => {
        calls.push(`add ${ps.map((p) => p.name).join(',')}`);
        if (refuse && ps.length) throw new Error('RTNETLINK answers: File exists');
      },
      removePeers: async () => undefined,
    };
    const table = new PeerTable();
    const sync = new PeerSync(device, table, () => undefined);
    await expect(sync.apply([peer(1), peer(2)])).rejects.toThrow(/File exists/);
    expect(sync.current().map((p) => p.name)).toEqual(['aws-1', 'aws-2']); // in the table: the rest of the batch may be in
    expect(sync.unroutedPeers()).toEqual(['aws-1', 'aws-2']);
    await expect(sync.apply([peer(1), peer(2)])).rejects.toThrow();
    refuse = false;
    // aws-2 leaves, aws-1 moves to another address meanwhile: only aws-1 is routed, at its latest config.
    await sync.apply([peer(1, { publicIp: '203.0.113.41' })]);
    expect(calls).toEqual(['add aws-1,aws-2', 'add aws-1,aws-2', 'add aws-1']);
    expect(sync.unroutedPeers()).toEqual([]);
    await sync.apply([peer(1, { publicIp: '203.0.113.41' })]);
    expect(calls).toHaveLength(3); // nothing left to route, nothing changed: no batch
  });

  it('serializes overlapping applies, and tells the keepalive after each change', async () => {
    const r = rig();
    await Promise.all([r.initial, r.sync.apply([peer(1)]), r.sync.apply([peer(1), peer(2)]), r.sync.apply([peer(2)])]);
    expect(r.sync.current().map((p) => p.name)).toEqual(['aws-2']);
    expect(r.synced()).toBe(3);
  });
});

describe('reload plan', () => {
  const base = { site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' } };
  const cfg = (over: Record<string, unknown> = {}) => parseConfigText(JSON.stringify({ ...base, ...over }), 'x.json', 'json', {});

  it('regression: nothing is silently ignored; keepalive, MSS clamp and strictPeers apply live', () => {
    const a = cfg();
    const b = cfg({
      keepalive: { interval: '5s', timeout: '20s' },
      overlay: { ...base.overlay, mssClamp: false, strictPeers: false },
      stateDir: '/tmp/elsewhere', runDir: '/tmp/run2',
      peers: [{ name: 'aws-1', publicIp: '203.0.113.1', subnet: '10.244.1.0/24', vtepMac: '0a:bb:00:00:01:00' }],
      log: { level: 'debug' },
    });
    const plan = reloadPlan(a, b);
    expect(plan.live.sort()).toEqual(['keepalive.interval', 'keepalive.timeout', 'log.level', 'overlay.mssClamp', 'overlay.strictPeers', 'peers']);
    expect(plan.restart.sort()).toEqual(['runDir', 'stateDir']);
    expect(reloadPlan(a, cfg())).toEqual({ live: [], restart: [] });
  });

  it('withLive: the config in force takes the live keys from the new file and keeps the running value of the rest, the running one unchanged', () => {
    const running = cfg();
    const next = cfg({ underlay: { publicIp: '203.0.113.7', port: 8473 }, mqtt: { url: 'mqtt://broker', interval: '5s' }, board: { led: 'ACT', releaseStartupPages: false } });
    const plan = reloadPlan(running, next);
    const inForce = withLive(running, next, plan.live);
    expect(inForce.underlay).toEqual({ ...running.underlay, publicIp: '203.0.113.7' });
    expect(inForce.mqtt).toEqual(next.mqtt);
    expect(inForce.board).toEqual({ led: next.board.led, releaseStartupPages: true });
    expect(reloadPlan(inForce, next)).toEqual({ live: [], restart: ['underlay.port', 'board.releaseStartupPages'] });
    expect(running).toEqual(cfg());
    expect(inForce.overlay).toBe(running.overlay); // untouched parts are shared, not copied
  });

  it('names every changed key that needs a restart', () => {
    const plan = reloadPlan(cfg(), cfg({ underlay: { port: 8473 }, vxlan: { vni: 2 }, mqtt: { url: 'mqtt://broker' }, nat: { portMapping: 'off' } }));
    expect(plan.restart.sort()).toEqual(['underlay.port', 'vxlan.vni']);
    expect(plan.live).toEqual(['nat.portMapping', 'mqtt.url']);
  });

  it('applies the NAT, cluster, MQTT, metrics and LED keys live: parts the gateway rebuilds beside the tunnel', () => {
    const plan = reloadPlan(cfg(), cfg({
      mqtt: { url: 'mqtts://broker:8883', proxy: 'http://proxy:3128', topicPrefix: 'fleet', interval: '10s', username: 'u', passwordFile: '/p', ca: '/ca', cert: '/c', key: '/k' },
      metrics: { listen: '127.0.0.1:9474', webConfig: '/w.yml' },
      board: { led: '/tmp/led' },
    }));
    expect(plan.restart).toEqual([]);
    expect(plan.live.sort()).toEqual([
      'board.led', 'metrics.listen', 'metrics.webConfig', 'mqtt.ca', 'mqtt.cert', 'mqtt.interval', 'mqtt.key', 'mqtt.passwordFile', 'mqtt.proxy',
      'mqtt.topicPrefix', 'mqtt.url', 'mqtt.username',
    ]);
    expect(reloadPlan(cfg(), cfg({ nat: { stun: ['stun.example.net:3478'], portMapping: 'upnp' } }))).toEqual({ live: ['nat.stun', 'nat.portMapping'], restart: [] });
    expect(reloadPlan(cfg(), cfg({ underlay: { publicIp: '203.0.113.7', port: 8473 } }))).toEqual({ live: ['underlay.publicIp'], restart: ['underlay.port'] });
    expect(reloadPlan(cfg(), cfg({ cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } } }))).toEqual({
      live: ['cluster.source', 'cluster.etcd.endpoints'], restart: [],
    });
    // board.releaseStartupPages acts once, at start-up.
    expect(reloadPlan(cfg(), cfg({ board: { releaseStartupPages: false } })).restart).toEqual(['board.releaseStartupPages']);
  });
});

describe('live membership', () => {
  it('tries a failed apply again after 2 s, doubling, without waiting for a change a static site may never see', async () => {
    const cfg = parseConfigText(
      JSON.stringify({
        site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' },
        peers: [{ name: 'aws-1', publicIp: '203.0.113.1', subnet: '10.244.1.0/24', vtepMac: '0a:bb:00:00:01:00' }],
      }),
      'x.json', 'json', {},
    );
    const clock = new ManualClock();
    const log = new CaptureLog();
    let applied = 0;
    let failing = 2;
    const live = await LiveMembership.create({
      cfg, siteMac: '0e:5c:aa:00:00:64', clock, log, changed: () => undefined,
      apply: async () => {
        applied++;
        if (failing-- > 0) throw new Error('RTNETLINK answers: File exists');
        return { added: [], removed: [], changed: [] };
      },
    });
    await expect(live.start()).rejects.toThrow(/File exists/);
    expect(log.lines.filter((l) => l.level === 'warn').map((l) => l.fields?.retryInS)).toEqual([2]);
    clock.advance(1_999);
    await settle();
    expect(applied).toBe(1);
    clock.advance(1);
    await settle();
    expect(applied).toBe(2); // failed again: next in 4 s
    expect(log.lines.filter((l) => l.level === 'warn').map((l) => l.fields?.retryInS)).toEqual([2, 4]);
    clock.advance(4_000);
    await settle();
    expect(applied).toBe(3); // in
    clock.advance(120_000);
    await settle();
    expect(applied).toBe(3); // and no more tries
    await live.stop();
  });

  it('stop() cancels a pending retry', async () => {
    const cfg = parseConfigText(JSON.stringify({ site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' } }), 'x.json', 'json', {});
    const clock = new ManualClock();
    let applied = 0;
    const live = await LiveMembership.create({
      cfg, siteMac: '0e:5c:aa:00:00:64', clock, log: new CaptureLog(), changed: () => undefined,
      apply: async () => {
        applied++;
        throw new Error('refused');
      },
    });
    await expect(live.start()).rejects.toThrow();
    await live.stop();
    clock.advance(10_000);
    await settle();
    expect(applied).toBe(1);
  });

  it('logs the cluster nodes left out as they change: once each, with the reason, and when one is no longer left out', async () => {
    const PREFIX = '/coreos.com/network';
    const key = (subnet: string) => `${PREFIX}/subnets/${subnet}`;
    const lease = (ip: string, mac: string, vni = 1) => encodeLease({ publicIp: ip, vni, vtepMac: mac });
    const cfg = parseConfigText(JSON.stringify({
      site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' },
      cluster: { source: 'etcd', register: false, etcd: { endpoints: ['http://192.0.2.10:2379'] } },
    }), 'x.json', 'json', {});
    const clock = new ManualClock();
    const fake = new FakeEtcd(clock);
    fake.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
    fake.put(key('10.244.1.0-24'), lease('203.0.113.1', '0e:00:00:00:01:01'));
    fake.put(key('10.244.2.0-24'), lease('203.0.113.2', '0e:00:00:00:02:01', 2));
    const log = new CaptureLog();
    const applied: string[][] = [];
    const live = await LiveMembership.create({
      cfg, siteMac: '0e:5c:aa:00:00:64', clock, log, changed: () => undefined,
      apply: async (peers) => {
        applied.push(peers.map((p) => p.name));
        return { added: [], removed: [], changed: [] };
      },
      load: async (c, o) => new EtcdSource({
        endpoints: c.cluster.etcd.endpoints, prefix: c.cluster.etcd.prefix, network: c.overlay.network, subnet: c.overlay.subnet, vni: c.vxlan.vni,
        register: false, clock: o.clock, log: new CaptureLog(), backoff: { random: () => 0.5 }, connect: async () => fake,
      }),
    });
    const leftOut = () => log.lines.filter((l) => /left out/.test(l.msg)).map((l) => ({ level: l.level, msg: l.msg, ...l.fields }));
    /** Lets the source see the etcd's changes (its coalescing window) and the membership merge them. */
    const follow = async () => {
      for (let t = 0; t < 2_000; t += 100) {
        clock.advance(100);
        await settle();
      }
    };
    await live.start();
    await settle();
    expect(applied.at(-1)).toEqual(['etcd-10.244.1.0-24']);
    expect(leftOut()).toEqual([{
      level: 'warn', msg: 'cluster nodes left out: the site does not reach their pods',
      nodes: [expect.stringMatching(/^etcd-10\.244\.2\.0-24: .*VNI 2/)], leftOut: 1, see: 'cluster.skipped in vxedge status --json',
    }]);
    expect(live.status(1)?.skipped?.map((s) => s.name)).toEqual(['etcd-10.244.2.0-24']);

    // A view that changes something else says nothing more about the node left out.
    fake.put(key('10.244.3.0-24'), lease('203.0.113.3', '0e:00:00:00:03:01'));
    await follow();
    expect(applied.at(-1)).toEqual(['etcd-10.244.1.0-24', 'etcd-10.244.3.0-24']);
    expect(leftOut()).toHaveLength(1);

    // Another node left out: only it is named; then the first is mended and the second deleted.
    fake.put(key('10.244.4.0-24'), lease('203.0.113.4', '0e:00:00:00:01:01'));
    await follow();
    expect(leftOut().at(-1)).toMatchObject({ level: 'warn', nodes: [expect.stringMatching(/^etcd-10\.244\.4\.0-24: .*0e:00:00:00:01:01/)], leftOut: 2 });
    fake.put(key('10.244.2.0-24'), lease('203.0.113.2', '0e:00:00:00:02:01'));
    fake.del(key('10.244.4.0-24'));
    await follow();
    expect(leftOut().at(-1)).toEqual({
      level: 'info', msg: 'cluster nodes no longer left out', nowPeers: ['etcd-10.244.2.0-24'], gone: ['etcd-10.244.4.0-24'], leftOut: 0,
    });
    expect(leftOut()).toHaveLength(3);
    expect(live.status(3)?.skipped).toEqual([]);
    await live.stop();
  });
  it("a reload of cluster.*: the next membership keeps the cluster's peers until its own source has a view; a static site or another kind of source starts afresh", async () => {
    const PREFIX = '/coreos.com/network';
    const key = (subnet: string) => `${PREFIX}/subnets/${subnet}`;
    const lease = (ip: string, mac: string) => encodeLease({ publicIp: ip, vni: 1, vtepMac: mac });
    const site = (cluster: object) => parseConfigText(JSON.stringify({
      site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' },
      peers: [{ name: 'static-9', publicIp: '203.0.113.9', subnet: '10.244.9.0/24', vtepMac: '0e:00:00:00:09:01' }], cluster,
    }), 'x.json', 'json', {});
    const clock = new ManualClock();
    const applied: string[][] = [];
    const membership = (cfg: Config, connect: () => Promise<FakeEtcd>, handover: MembershipHandover | null) => LiveMembership.create({
      cfg, siteMac: '0e:5c:aa:00:00:64', clock, log: new CaptureLog(), changed: () => undefined,
      apply: async (peers) => {
        applied.push(peers.map((p) => p.name).sort());
        return { added: [], removed: [], changed: [] };
      },
      load: async (c, o) => new EtcdSource({
        endpoints: c.cluster.etcd.endpoints, prefix: c.cluster.etcd.prefix, network: c.overlay.network, subnet: c.overlay.subnet, vni: c.vxlan.vni,
        register: false, clock: o.clock, log: new CaptureLog(), backoff: { random: () => 0.5 }, connect,
      }),
      ...(handover ? { handover } : {}),
    });
    const follow = async () => {
      for (let t = 0; t < 2_000; t += 100) {
        clock.advance(100);
        await settle();
      }
    };
    const etcdAt = (endpoint: string) => site({ source: 'etcd', register: false, etcd: { endpoints: [endpoint] } });
    const fake = new FakeEtcd(clock);
    fake.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
    fake.put(key('10.244.1.0-24'), lease('203.0.113.1', '0e:00:00:00:01:01'));
    const first = await membership(etcdAt('http://192.0.2.10:2379'), async () => fake, null);
    await first.start();
    await follow();
    expect(applied.at(-1)).toEqual(['etcd-10.244.1.0-24', 'static-9']);

    // Moved to an endpoint that does not answer: the cluster's peer stays in force meanwhile.
    const moved = etcdAt('http://192.0.2.11:2379');
    await first.stop();
    const refused = async (): Promise<FakeEtcd> => {
      throw Object.assign(new Error('connect ECONNREFUSED 192.0.2.11:2379'), { code: 'ECONNREFUSED' });
    };
    const second = await membership(moved, refused, first.handover(moved));
    await second.start();
    await follow();
    expect(applied.at(-1)).toEqual(['etcd-10.244.1.0-24', 'static-9']);
    expect(second.status(2)).toMatchObject({ source: 'etcd', connected: false });
    await second.stop();

    // Once the new source sees its cluster, its view is the one in force.
    const other = new FakeEtcd(clock);
    other.put(`${PREFIX}/config`, '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
    other.put(key('10.244.3.0-24'), lease('203.0.113.3', '0e:00:00:00:03:01'));
    const third = await membership(moved, async () => other, second.handover(moved));
    await third.start();
    await follow();
    expect(applied.at(-1)).toEqual(['etcd-10.244.3.0-24', 'static-9']);
    await third.stop();

    // No cluster any more, or another kind of source: nothing is handed over.
    expect(third.handover(site({ source: 'static' }))).toBeNull();
    expect(third.handover(site({ source: 'kubernetes' }))).toBeNull();
    expect(third.handover(etcdAt('http://192.0.2.12:2379'))?.inForce.map((p) => p.name).sort()).toEqual(['etcd-10.244.3.0-24', 'static-9']);
  });

  it("dual-stack flannel nodes: the cluster's error and a failing check while they last (the source's own error first), logged when they come and go", async () => {
    const m = await overMemorySource(2);
    const { live, log, emit } = m;
    const peer = AWS_A;
    const told = () => log.lines.filter((l) => /dual-stack/.test(l.msg)).map((l) => `${l.level}: ${l.msg}`);
    emit({ nodes: 2, peers: [peer], skipped: [] });
    expect(live.status(1)?.error).toBeNull();
    expect(live.check()).toMatchObject({ ok: true });

    emit({ nodes: 3, peers: [peer], skipped: [], dualStack: ['aws-a'] });
    const error = live.status(1)!.error!;
    expect(error).toMatch(/^1 flannel node\(s\) run dual-stack \(aws-a: .*; vxedge carries IPv4 only: set "EnableIPv6": false .*kubectl annotate nodes --all /);
    expect(live.check()).toMatchObject({ ok: false, detail: expect.stringMatching(/^kubernetes: 2 node\(s\) seen, last sync \S+; registered; 1 flannel node\(s\) run dual-stack/), fix: expect.stringMatching(/^vxedge carries IPv4 only/) });
    // A second node of a rollout is counted, not logged again.
    emit({ nodes: 3, peers: [peer], skipped: [], dualStack: ['aws-a', 'aws-b'] });
    expect(live.status(1)!.error).toMatch(/^2 flannel node\(s\)/);
    expect(told()).toEqual(['warn: cluster nodes run flannel dual-stack: they route nothing to this site']);
    // The source's own trouble is the error while it lasts.
    m.own = { ...m.own, connected: false, error: 'the API server https://192.0.2.1:6443 does not answer' };
    expect(live.status(1)!.error).toBe(m.own.error);
    expect(live.check()).toMatchObject({ ok: false, fix: m.own.error });
    m.own = { ...m.own, connected: true, error: null };

    emit({ nodes: 3, peers: [peer], skipped: [] });
    expect(live.status(1)!.error).toBeNull();
    expect(live.check()).toMatchObject({ ok: true });
    expect(told()).toEqual(['warn: cluster nodes run flannel dual-stack: they route nothing to this site', 'info: no cluster node runs flannel dual-stack any more']);
    await live.stop();
  });

  it('tells certificatesSeen when the servers present certificates not seen before: with a view, or when the first handshakes end; not again for the same ones', async () => {
    const m = await overMemorySource(1);
    const cert = (what: string, to: string): SiteCertificate => ({ what, validity: { from: new Date('2026-01-01T00:00:00Z'), to: new Date(to) }, presented: true });
    const view = { nodes: 1, peers: [AWS_A], skipped: [] };
    m.emit(view);
    expect(m.seen).toBe(0); // nothing presented yet
    m.presented = [cert('api', '2027-01-01T00:00:00Z')];
    m.emit(view);
    expect(m.seen).toBe(1);
    m.emit(view);
    expect(m.seen).toBe(1);
    m.presented = [cert('api', '2028-01-01T00:00:00Z')]; // renewed: the same server, a new end
    m.emit(view);
    expect(m.seen).toBe(2);
    m.presented = [...m.presented, cert('member', '2027-06-01T00:00:00Z')];
    m.firstRead.resolve();
    await settle();
    expect(m.seen).toBe(3);
    await m.live.stop();
    m.presented = [];
    m.emit(view);
    expect(m.seen).toBe(3); // stopped: nothing more
  });

  it('every node left out: a failing check naming them and the keys to compare; none but ours, or one usable, passes', async () => {
    const { live, emit } = await overMemorySource(5);
    const peer = AWS_A;
    const self = { name: 'vxedge-lab-edge-1', why: 'this gateway itself' };
    const under = (name: string) => ({ name, why: 'its flannel annotations are under example.com/net- (flanneld --kube-annotation-prefix), …' });
    emit({ nodes: 1, peers: [], skipped: [self] });
    expect(live.check()).toMatchObject({ ok: true });
    emit({ nodes: 5, peers: [], skipped: [self, under('aws-a'), under('aws-b'), under('aws-c'), under('aws-d')] });
    expect(live.check()).toEqual({
      name: 'cluster', ok: false,
      detail: 'kubernetes: 5 node(s) seen, last sync 2026-12-06T00:00:00.000Z; registered; every node is left out, the site reaches no pod: ' +
        `aws-a (${under('aws-a').why}); aws-b (${under('aws-b').why}); aws-c (${under('aws-c').why}); and 1 more (cluster.skipped)`,
      fix: "every node was left out, each for the reason named: overlay.network and vxlan.vni must be the cluster's (flannel's net-conf.json), " +
        "and cluster.kubernetes.annotationPrefix its flanneld's --kube-annotation-prefix",
    });
    emit({ nodes: 5, peers: [peer], skipped: [self, under('aws-b'), under('aws-c'), under('aws-d')] });
    expect(live.check()).toMatchObject({ ok: true });
    await live.stop();
  });
});
