// SiteNat: what the gateway announces and reports from the router's port mapping, against the
// in-memory router of portmap-fakes.ts on a ManualClock.
import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/types.js';
import type { OutsideHooks } from '../../src/dataplane/outside.js';
import { SiteNat } from '../../src/nat/site-nat.js';
import type { PortMappingMode } from '../../src/nat/portmap/client.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock, advanceUntil } from '../support/clock.js';
import { FakeRouter, GW, ME, WAN } from './portmap-fakes.js';
import { bindingSuccess } from '../support/stun.js';

const STUN_SERVER = '198.51.100.1';

async function siteNat(mode: PortMappingMode, setup: (r: FakeRouter) => void = () => {}, opts: { stun?: boolean } = {}) {
  const clock = new ManualClock();
  const router = new FakeRouter(clock);
  setup(router);
  const log = new CaptureLog();
  const stun = opts.stun ? [{ host: STUN_SERVER, port: 3478 }] : [];
  const cfg = { nat: { stun, portMapping: mode }, underlay: { port: 8472, publicIp: null }, vxlan: { port: 8472 }, peers: [] } as unknown as Config;
  // The STUN server sees us at the router's external address, on the mapped port.
  const hooks: OutsideHooks = {};
  const stunRequests: number[] = [];
  const stunServer = { silent: false };
  const sendControl = (buf: Buffer, off: number, len: number, addr: number, port: number) => {
    const req = Buffer.from(buf.subarray(off, off + len));
    stunRequests.push(clock.monotonic());
    if (stunServer.silent) return true;
    const answer = bindingSuccess(req, router.externalIp, 8472);
    queueMicrotask(() => hooks.onStun?.(answer, 0, answer.length, addr, port));
    return true;
  };
  let n = 0;
  const nat = await SiteNat.create({
    cfg, underlay: { iface: 'eth0', address: ME, mtu: 1500 }, dataplane: { sendControl, outside: { hooks } } as never,
    router: GW, pcpNonce: Buffer.alloc(12, 7), clock, log, changed: () => {},
    portMapperDeps: { udp: router.udp, http: router.http, random: () => 0.5, nonce: () => Buffer.alloc(12, ++n) },
  });
  return { clock, router, nat, log, stunRequests, stunServer, cfg };
}

describe('SiteNat: a reload of nat.*', () => {
  it('new STUN servers: the last answer stands until theirs; none answering, or none at all: the local address', async () => {
    const r = await siteNat('off', () => {}, { stun: true });
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.publicEndpoint().source === 'stun', 10_000);
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${WAN}:8472`, source: 'stun' });
    r.stunServer.silent = true;
    const asked = r.stunRequests.length;
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [{ host: '203.0.113.5', port: 3478 }], portMapping: 'off' } } as Config, GW);
    expect(r.stunRequests.length).toBeGreaterThan(asked); // the new servers are asked at once
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${WAN}:8472`, source: 'stun' });
    await advanceUntil(r.clock, () => r.nat.health()?.checkedAt != null, 60_000);
    expect(r.nat.health()?.stun?.map((x) => [x.server, x.mapped])).toEqual([['203.0.113.5:3478', null]]);
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${ME}:8472`, source: 'local' });

    r.stunServer.silent = false;
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [{ host: STUN_SERVER, port: 3478 }], portMapping: 'off' } } as Config, GW);
    await advanceUntil(r.clock, () => r.nat.publicEndpoint().source === 'stun', 10_000);
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [], portMapping: 'off' } } as Config, GW);
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${ME}:8472`, source: 'local' });
    expect(r.nat.health()).toBeUndefined();
    const after = r.stunRequests.length;
    await r.clock.advanceAsync(600_000);
    expect(r.stunRequests.length).toBe(after);
    await r.nat.stop();
  });

  it('the port mapping switched on, to another mode, and off: made, made again, deleted on the router', async () => {
    const r = await siteNat('off');
    r.nat.start();
    await r.clock.advanceAsync(10_000);
    expect(r.router.mapping(8472)).toBeUndefined();
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [], portMapping: 'natpmp' } } as Config, GW);
    await advanceUntil(r.clock, () => r.nat.portMapped(), 10_000);
    expect(r.router.mapping(8472)).toMatchObject({ via: 'natpmp' });
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${WAN}:8472`, source: 'port-mapping' });
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [], portMapping: 'pcp' } } as Config, GW);
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.protocol === 'pcp' && r.nat.portMapped(), 10_000);
    expect(r.router.mapping(8472)).toMatchObject({ via: 'pcp' });
    await r.nat.reconfigure({ ...r.cfg, nat: { stun: [], portMapping: 'off' } } as Config, GW);
    expect(r.router.mapping(8472)).toBeUndefined();
    expect(r.nat.health()).toBeUndefined();
    expect(r.nat.checks().map((c) => c.name)).toEqual(['public_endpoint']);
    await r.nat.stop();
  });
});

describe('SiteNat: the public endpoint from the router mapping', () => {
  it.each(['pcp', 'natpmp'] as const)('%s: a mapping made again after a failed attempt is announced again (same router address)', async (mode) => {
    const r = await siteNat(mode);
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.portMapped(), 10_000);
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${WAN}:8472`, source: 'port-mapping' });
    // The router restarts and, for a while, offers only another port (another host got 8472
    // first): the check sees the restart, the new attempt fails, and the mapper waits to retry.
    await r.clock.advanceAsync(120_000);
    r.router.restart();
    r.router.grantPort = 9000;
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.state === 'failed', 120_000);
    expect(r.nat.portMapped()).toBe(false);
    expect(r.nat.publicEndpoint().source).not.toBe('port-mapping');
    // WAN back, same address: the retry maps again, and the site announces the mapping again.
    r.router.grantPort = null;
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.state === 'mapped', 120_000);
    expect(r.nat.portMapped()).toBe(true);
    expect(r.nat.publicEndpoint()).toEqual({ endpoint: `${WAN}:8472`, source: 'port-mapping' });
    await r.nat.stop();
  });

  it('the router address turning private (the ISP moved it behind CGNAT) stops the announcement', async () => {
    const r = await siteNat('natpmp');
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.portMapped(), 10_000);
    r.router.externalIp = '100.64.1.2';
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.routerAddress === '100.64.1.2', 120_000);
    expect(r.nat.portMapped()).toBe(false);
    expect(r.nat.publicEndpoint().endpoint).not.toContain(WAN);
    expect(r.nat.health()?.portMapping?.error).toMatch(/not public/);
    await r.nat.stop();
  });

  it('a router behind CGNAT fails the port_mapping check even without STUN: its mapping cannot reach the internet', async () => {
    // STUN is off by default, so the router's own answer is all there is to go on.
    const r = await siteNat('auto', (x) => (x.externalIp = '100.64.1.2'));
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.state === 'mapped', 10_000);
    expect(r.nat.portMapped()).toBe(false);
    expect(r.nat.checks().find((c) => c.name === 'port_mapping')).toMatchObject({
      ok: false,
      detail: expect.stringMatching(/pcp maps 100\.64\.1\.2:8472, but 100\.64\.1\.2, the router's external address, is not public/),
      fix: expect.stringContaining('forward UDP 8472 to this router on the upstream one'),
    });
    await r.nat.stop();
  });

  it("a change of the router's address makes STUN look again, so the port_mapping check does not take it for a second NAT", async () => {
    const r = await siteNat('natpmp', () => {}, { stun: true });
    const check = () => r.nat.checks().find((c) => c.name === 'port_mapping');
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.portMapped() && r.stunRequests.length > 0, 10_000);
    await r.clock.advanceAsync(1000);
    expect(check()).toMatchObject({ ok: true });
    // A round now puts the next periodic one at least 60 s away.
    await r.clock.advanceAsync(45_000);
    r.nat.rediscover('test');
    await r.clock.advanceAsync(8000);
    const rounds = r.stunRequests.length;
    r.router.externalIp = '11.22.33.99';
    // The mapper's periodic check (every 60 s from the mapping) sees the new address.
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.routerAddress === '11.22.33.99', 60_000);
    expect(r.nat.publicEndpoint().endpoint).toBe('11.22.33.99:8472');
    await r.clock.advanceAsync(8000);
    expect(r.stunRequests.length).toBeGreaterThan(rounds);
    expect(r.nat.health()?.portMapping?.stunAgrees).toBe(true);
    expect(check()).toMatchObject({ ok: true });
    await r.nat.stop();
  });
});

describe('SiteNat: the router followed when the default gateway changes', () => {
  const NEW = '192.0.2.254';

  it('a router replaced at another address: the old mapping is deleted where it still answers, then the new router is asked', async () => {
    const r = await siteNat('pcp', () => {}, { stun: true });
    r.nat.start();
    await advanceUntil(r.clock, () => r.nat.portMapped(), 10_000);
    expect(r.nat.health()!.portMapping).toMatchObject({ gateway: GW, state: 'mapped' });
    // The default route went and came back (a DHCP renewal): the same router, nothing to do.
    const sentBefore = r.router.sent.length;
    await r.nat.routerSeen(null);
    await r.nat.routerSeen(GW);
    await r.clock.advanceAsync(1000);
    expect(r.router.sent.length).toBe(sentBefore);
    expect(r.nat.health()!.portMapping).toMatchObject({ gateway: GW, state: 'mapped' });

    // Another box at another address, which knows nothing of us.
    r.router.mappings.clear();
    const stunRounds = r.stunRequests.length;
    const seen = r.nat.routerSeen(NEW);
    // While the old mapping is being deleted the document says the new router is to be asked,
    // not that there is no router.
    expect(r.nat.health()!.portMapping).toMatchObject({ gateway: NEW, state: 'idle', error: null });
    r.router.address = NEW;
    await advanceUntil(r.clock, () => r.nat.health()?.portMapping?.state === 'mapped', 30_000);
    await seen;
    expect(r.nat.health()!.portMapping).toMatchObject({ gateway: NEW, protocol: 'pcp', external: `${WAN}:8472` });
    expect(r.router.mappings.size).toBe(1);
    // The delete went to the old address, the new mapping to the new one.
    const to = r.router.sent.slice(sentBefore).map((d) => d.to.address);
    expect(to[0]).toBe(GW);
    expect(to.at(-1)).toBe(NEW);
    expect(r.log.lines.some((e) => e.msg === 'the site router changed: the port mapping follows it' && e.fields?.was === GW && e.fields?.now === NEW)).toBe(true);
    await r.clock.advanceAsync(8000);
    expect(r.stunRequests.length).toBeGreaterThan(stunRounds);
    await r.nat.stop();
    expect(r.router.mappings.size).toBe(0); // deleted on the new router at stop
  });

  it('a router that appears on a site that had none is asked', async () => {
    const r = await siteNat('natpmp');
    const bare = await SiteNat.create({
      cfg: { nat: { stun: [], portMapping: 'natpmp' }, underlay: { port: 8472, publicIp: null }, vxlan: { port: 8472 }, peers: [] } as unknown as Config,
      underlay: { iface: 'eth0', address: ME, mtu: 1500 }, dataplane: { sendControl: () => true, outside: { hooks: {} } } as never,
      router: null, pcpNonce: Buffer.alloc(12, 7), clock: r.clock, log: r.log, changed: () => {},
      portMapperDeps: { udp: r.router.udp, http: r.router.http, random: () => 0.5, nonce: () => Buffer.alloc(12, 1) },
    });
    bare.start();
    expect(bare.health()!.portMapping).toMatchObject({ gateway: null, state: 'failed', error: expect.stringContaining('no default gateway on eth0') });
    await bare.routerSeen(GW);
    await advanceUntil(r.clock, () => bare.portMapped(), 10_000);
    expect(bare.health()!.portMapping).toMatchObject({ gateway: GW, protocol: 'natpmp', state: 'mapped' });
    expect(r.log.lines.some((e) => e.msg === 'the underlay has a default gateway now: asking it for the port mapping')).toBe(true);
    await bare.stop();
    // Stopped: a router seen afterwards starts nothing.
    await bare.routerSeen(NEW);
    expect(bare.health()!.portMapping!.gateway).toBe(GW);
  });
});

describe('SiteNat: a private underlay.publicIp judged on the peers in force', () => {
  /** A site with underlay.publicIp 10.20.0.5, configured peers `statics`, and `inForce` in the peer table. */
  async function privateSite(statics: string[], inForce: string[]) {
    const clock = new ManualClock();
    const cfg = {
      nat: { stun: [], portMapping: 'off' }, underlay: { port: 8472, publicIp: '10.20.0.5' }, vxlan: { port: 8472 },
      peers: statics.map((publicIp, i) => ({ name: `static-${i}`, publicIp })),
    } as unknown as Config;
    const nat = await SiteNat.create({
      cfg, underlay: { iface: 'eth0', address: ME, mtu: 1500 }, dataplane: { sendControl: () => true, outside: { hooks: {} } } as never,
      router: null, pcpNonce: Buffer.alloc(12, 7), clock, log: new CaptureLog(), changed: () => {}, peers: () => inForce,
    });
    return nat.checks().find((c) => c.name === 'public_endpoint')!;
  }

  it('fails when the cluster added a public peer, though every configured one is private (it cannot reach 10.20.0.5)', async () => {
    expect(await privateSite(['172.31.5.10'], ['172.31.5.10', '203.0.113.10'])).toMatchObject({ ok: false, detail: expect.stringContaining('underlay.publicIp 10.20.0.5') });
  });

  it('passes when every peer in force is private, those of a cluster source too (flannel leases in etcd over a VPN)', async () => {
    expect(await privateSite([], ['172.31.5.10', '172.31.6.11'])).toMatchObject({ ok: true, detail: expect.stringContaining('a private underlay') });
  });
});
