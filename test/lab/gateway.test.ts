// vxedge against real kernel flannel peers (lab topology in scripts/labnet):
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge flannel.1] -- host
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)
//  pod2 -- aws2 [kernel flannel.1] --/
//
// The AWS nodes' flannel.1 devices are created and programmed exactly as flannel does
// (VNI 1, port 8472, nolearning, neighbour + FDB + onlink route per peer, including the
// site), with tx checksum offload off on their underlay as a real NIC behaves.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { labDown, labUp, nsExec, nsRun, nsSpawn, ping, skipUnlessRoot, startCapture, tcpTransfer, waitExit, waitFor, waitForOutput, type LabEnv } from './harness.js';
import { startGateway, type GatewayOptions, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxgw';
const FLOOD = path.join(import.meta.dirname, 'flood.mjs');
const SINK = path.join(import.meta.dirname, 'udp-sink.mjs');
const MB4 = 4 * 1024 * 1024;

async function deviceAndRoutes(env: LabEnv): Promise<{ device: boolean; routes: string }> {
  const link = await nsExec(env.NS_GW, ['ip', 'link', 'show', 'dev', env.VTEP_DEV]);
  const routes = await nsRun(env.NS_GW, ['ip', '-4', 'route', 'show']);
  return { device: link.code === 0, routes };
}

describe.skipIf(skipUnlessRoot(['tcpdump', 'socat']))('vxedge between kernel flannel peers', () => {
  let env: LabEnv;
  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
  });
  afterAll(async () => {
    await labDown(PREFIX);
  });

  for (const mode of ['tun', 'tap'] as const) {
    describe(`${mode.toUpperCase()} mode`, () => {
      let gw: RunningGateway;
      beforeAll(async () => {
        gw = await startGateway(env, { mode });
        await gw.waitUp();
      });
      afterAll(async () => {
        await gw.cleanup();
      });

      it('pings both ways between the site host and pods on both AWS nodes', async () => {
        for (const [from, to] of [
          [env.NS_HOST, env.POD1_IP], [env.NS_HOST, env.POD2_IP],
          [env.NS_POD1, env.HOST_IP], [env.NS_POD2, env.HOST_IP],
          [env.NS_HOST, env.AWS1_VTEP_IP], [env.NS_POD1, env.GW_VTEP_IP],
        ]) {
          const r = await ping(from, to, { count: 3 });
          expect(r, `${from} -> ${to}`).toMatchObject({ ok: true, received: 3 });
        }
      });

      it('carries a 4 MB TCP transfer each way intact', async () => {
        const up = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB4);
        expect(up.receivedBytes).toBe(MB4);
        expect(up.receivedSha256).toBe(up.sentSha256);
        const down = await tcpTransfer(env.NS_POD2, env.NS_HOST, env.HOST_IP, MB4);
        expect(down.receivedBytes).toBe(MB4);
        expect(down.receivedSha256).toBe(down.sentSha256);
      });

      it('reports both peers up with RTT, zero loss and counters', async () => {
        const s = await gw.waitStatus((d) => d.peers.every((p) => p.rxPackets > 100 && p.lossPct === 0));
        expect(s.state).toBe('ok');
        expect(s.tunnel).toMatchObject({ device: env.VTEP_DEV, mode, vni: 1, mtu: 1450, vtepMac: env.GW_VTEP_MAC });
        for (const p of s.peers) {
          expect(p.state).toBe('up');
          expect(p.rttMs).toBeGreaterThan(0);
          expect(p.reason).toBeNull();
        }
        expect(s.checks.every((c) => c.ok), JSON.stringify(s.checks)).toBe(true);
      });

      it('installs the kernel state flannel would', async () => {
        const routes = await nsRun(env.NS_GW, ['ip', '-4', 'route', 'show', 'dev', env.VTEP_DEV]);
        const addr = await nsRun(env.NS_GW, ['ip', '-4', 'addr', 'show', 'dev', env.VTEP_DEV]);
        expect(addr).toContain(`${env.GW_VTEP_IP}/32`);
        if (mode === 'tap') {
          expect(routes).toContain(`${env.AWS1_SUBNET} via ${env.AWS1_VTEP_IP} onlink`);
          const neigh = await nsRun(env.NS_GW, ['ip', 'neigh', 'show', 'dev', env.VTEP_DEV]);
          expect(neigh).toMatch(new RegExp(`${env.AWS1_VTEP_IP} lladdr ${env.AWS1_VTEP_MAC} PERMANENT`));
        } else {
          expect(routes).toContain(`${env.AWS1_SUBNET} scope link`);
        }
        // A queue of 2000 packets, not the TUN/TAP default of 500 that TCP bursts overflow.
        expect(await nsRun(env.NS_GW, ['ip', 'link', 'show', 'dev', env.VTEP_DEV])).toMatch(/ qlen 2000\b/);
      });

      it('sends its VXLAN datagrams with DF clear, as the kernel vxlan does', async () => {
        const cap = startCapture(env.NS_GW, ['-n', '-v', '-c', '3', '-i', env.GW_UNDERLAY_IF, 'udp and src port 8472'], { timeoutMs: 8_000 });
        await cap.ready;
        expect((await ping(env.NS_HOST, env.POD1_IP, { count: 3 })).ok).toBe(true);
        // Only the outer headers: tcpdump also decodes the inner packet, whose DF is the sender's.
        const outer = (await cap.done).stdout.split('\n').filter((l) => /proto UDP \(17\)/.test(l));
        expect(outer.length).toBeGreaterThan(0);
        for (const l of outer) expect(l).toMatch(/flags \[none\]/);
      });
    });
  }

  describe('untrusted input', () => {
    let gw: RunningGateway;
    beforeAll(async () => {
      gw = await startGateway(env);
      await gw.waitUp();
    });
    afterAll(async () => {
      await gw.cleanup();
    });

    const flood = (ns: string, bind: string, kinds: string[], count: number) =>
      nsRun(ns, ['node', FLOOD, '--to', env.GW_PUBLIC_IP, '--bind', bind, '--kinds', kinds.join(','), '--count', String(count),
        '--gw-mac', env.GW_VTEP_MAC, '--peer-mac', env.AWS1_VTEP_MAC, '--src', env.POD1_IP, '--dst', env.HOST_IP], { timeoutMs: 30_000 });

    it('counts a flood of malformed datagrams as drops and keeps forwarding', async () => {
      const before = (await gw.status())!;
      const sink = nsSpawn(env.NS_HOST, ['node', SINK, env.HOST_IP, '9999', '40']);
      let sinkOut = '';
      sink.stdout!.on('data', (b: Buffer) => (sinkOut += b.toString()));
      await waitForOutput(sink, 'stderr', 'listening', 10_000);
      const pinging = ping(env.NS_HOST, env.POD1_IP, { count: 10, intervalMs: 200 });
      const bad = ['truncated', 'badFlags', 'reservedBits', 'wrongVni', 'foreignDstMac', 'foreignSrcMac', 'notIPv4', 'oversized', 'random', 'spoofed'];
      // From aws1's own address (as an attacker who can spoof it would), and from an address that is no peer.
      await flood(env.NS_AWS1, env.AWS1_UNDERLAY_IP, [...bad, 'good'], 200);
      await flood(env.NS_INET, env.INET_AWS_IP, ['good', 'random'], 200);
      expect((await pinging).ok).toBe(true);
      // The gateway has read both floods once the second one's frames are counted (one socket, in order) ...
      const after = await gw.waitStatus((s) => (s.drops.unknownSource ?? 0) - (before.drops.unknownSource ?? 0) >= 200);
      // ... and the sink has everything the gateway let through once a marker sent after them arrives.
      const seenMarker = waitForOutput(sink, 'stderr', 'seen marker', 10_000);
      await flood(env.NS_AWS1, env.AWS1_UNDERLAY_IP, ['marker'], 3);
      await seenMarker;
      sink.stdin!.end();
      await waitExit(sink, 10_000);
      const { marker, ...got } = JSON.parse(sinkOut.trim()) as Record<string, number>;
      expect(marker).toBeGreaterThan(0);
      // Only well-formed frames from the peer's address with a source in its subnet get through.
      expect(Object.keys(got)).toEqual(['good']);
      expect(got.good).toBeGreaterThanOrEqual(190); // from aws1 only; the 200 from inet were dropped
      expect(got.good).toBeLessThanOrEqual(200);
      const d = (k: string) => (after.drops[k] ?? 0) - (before.drops[k] ?? 0);
      console.log('drops during the flood', Object.fromEntries(Object.keys(after.drops).map((k) => [k, d(k)])));
      expect(d('short')).toBeGreaterThanOrEqual(190);
      expect(d('badFlags')).toBeGreaterThanOrEqual(190);
      expect(d('reservedBits')).toBeGreaterThanOrEqual(190);
      expect(d('wrongVni')).toBeGreaterThanOrEqual(190);
      expect(d('notForUs')).toBeGreaterThanOrEqual(190);
      expect(d('foreignMac')).toBeGreaterThanOrEqual(190);
      expect(d('notIPv4')).toBeGreaterThanOrEqual(190);
      expect(d('oversize')).toBeGreaterThanOrEqual(190);
      expect(d('spoofedSource')).toBeGreaterThanOrEqual(190);
      expect(gw.child.exitCode).toBeNull();
      expect(after.peers.every((p) => p.state === 'up')).toBe(true);
    });
  });

  describe('lifecycle', () => {
    // Every gateway a test starts is gone before the next test, even when an assertion failed.
    const started: RunningGateway[] = [];
    const start = async (o: GatewayOptions = {}) => {
      const g = await startGateway(env, o);
      started.push(g);
      return g;
    };
    afterEach(async () => {
      for (const g of started.splice(0)) await g.cleanup();
    });

    it('SIGTERM leaves no device or route behind and exits 0', async () => {
      const gw = await start();
      await gw.waitUp();
      expect((await deviceAndRoutes(env)).device).toBe(true);
      const code = await gw.stop('SIGTERM');
      expect(code).toBe(0);
      const after = await deviceAndRoutes(env);
      expect(after.device).toBe(false);
      expect(after.routes).not.toContain('10.244.1.0/24');
      expect(after.routes).not.toContain('10.244.2.0/24');
      expect(gw.output).toContain('gateway stopped');
    });

    it('a second instance fails cleanly without disturbing the running one', async () => {
      const gw = await start();
      await gw.waitUp();
      // Same port: refused at bind. Other port, same device: refused as "in use".
      const same = await start();
      expect(await waitExit(same.child, 10_000)).toBe(1);
      expect(same.output).toContain('address already in use');
      const other = await start({ extra: { underlay: { publicIp: env.GW_PUBLIC_IP, port: 8473 } } });
      expect(await waitExit(other.child, 10_000)).toBe(1);
      expect(other.output).toContain('is in use by another process');
      for (const g of [same, other]) expect(g.output).not.toMatch(/\n\s+at /);
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      expect(gw.child.exitCode).toBeNull();
      expect(await gw.stop()).toBe(0);
    });

    it('replaces a leftover device after a crash', async () => {
      // A persistent TUN with our name, as a crashed run (or a hand-made test) could leave.
      await nsRun(env.NS_GW, ['ip', 'tuntap', 'add', 'dev', env.VTEP_DEV, 'mode', 'tun']);
      await nsRun(env.NS_GW, ['ip', 'link', 'set', 'dev', env.VTEP_DEV, 'up']);
      await nsRun(env.NS_GW, ['ip', 'route', 'add', env.AWS1_SUBNET, 'dev', env.VTEP_DEV]);
      const gw = await start();
      await gw.waitUp();
      expect(gw.output).toContain('replacing existing device');
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      gw.child.kill('SIGKILL');
      await waitExit(gw.child, 5_000);
      // A non-persistent device dies with its process, and its routes with it.
      await waitFor(async () => !(await deviceAndRoutes(env)).device, 5_000);
      expect((await deviceAndRoutes(env)).routes).not.toContain(env.AWS1_SUBNET);
    });
  });
});
