// SiteNat: what the gateway announces and reports from the router's port mapping, against the
// in-memory router of portmap-fakes.ts on a ManualClock.
import { describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/types.js';
import { SiteNat } from '../../src/nat/site-nat.js';
import type { PortMappingMode } from '../../src/nat/portmap/client.js';
import { CaptureLog } from '../support/capture-log.js';
import { ManualClock, flush } from '../support/clock.js';
import { FakeRouter, GW, ME, WAN } from './portmap-fakes.js';

async function siteNat(mode: PortMappingMode, setup: (r: FakeRouter) => void = () => {}) {
  const clock = new ManualClock();
  const router = new FakeRouter(clock);
  setup(router);
  const log = new CaptureLog();
  const cfg = { nat: { stun: [], portMapping: mode }, underlay: { port: 8472, publicIp: null }, vxlan: { port: 8472 } } as unknown as Config;
  let n = 0;
  const nat = await SiteNat.create({
    cfg, underlay: { iface: 'eth0', address: ME, mtu: 1500 }, dataplane: { sendControl: () => true, outside: { hooks: {} } } as never,
    router: GW, pcpNonce: Buffer.alloc(12, 7), clock, log, changed: () => {},
    portMapperDeps: { udp: router.udp, http: router.http, random: () => 0.5, nonce: () => Buffer.alloc(12, ++n) },
  });
  return { clock, router, nat, log };
}

async function advanceUntil(clock: ManualClock, cond: () => boolean, maxMs: number, step = 1000): Promise<void> {
  await flush();
  for (let t = 0; !cond(); t += step) {
    if (t >= maxMs) throw new Error(`condition not met within ${maxMs} ms of clock time`);
    await clock.advanceAsync(step);
  }
}

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
});
