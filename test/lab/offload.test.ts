// vxedge's offload path (README "Offloads") between kernel flannel peers: 16 MB each way, with
// sha256, with offloads on (TUN with virtio-net headers and TSO, UDP_SEGMENT sends, UDP_GRO
// receives, TCP coalescing on device writes), once more with UDP GRO really happening on the
// gateway's underlay NIC (as on a Pi's NIC; a lab veth does no GRO by default), and with
// offloads forced off from the environment (VXEDGE_OVERLAY_OFFLOAD=false: the plain path).
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge flannel.1] -- host
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)
//  pod2 -- aws2 [kernel flannel.1] --/
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, nsRun, skipUnlessRoot, tcpTransfer, type LabEnv } from './harness.js';
import { startGateway, type RunningGateway } from './vxedge.js';
import type { HealthDocument } from '../../src/health/document.js';

const PREFIX = 'vxof';
const MB16 = 16 * 1024 * 1024;

interface Case {
  name: string;
  env?: NodeJS.ProcessEnv;
  /** ethtool -K <gw underlay> gro on|off */
  underlayGro?: boolean;
  expect: { tso: boolean; udpGro: boolean };
}

const CASES: Case[] = [
  { name: 'offloads on', expect: { tso: true, udpGro: true } },
  { name: 'offloads on, GRO on the underlay NIC', underlayGro: true, expect: { tso: true, udpGro: true } },
  { name: 'offloads forced off (VXEDGE_OVERLAY_OFFLOAD=false)', env: { VXEDGE_OVERLAY_OFFLOAD: 'false' }, expect: { tso: false, udpGro: false } },
];

describe.skipIf(skipUnlessRoot(['socat', 'ethtool']))('vxedge offloads between kernel flannel peers', () => {
  let env: LabEnv;
  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
  });
  afterAll(async () => {
    await labDown(PREFIX);
  });

  for (const c of CASES) {
    describe(c.name, () => {
      let gw: RunningGateway;
      beforeAll(async () => {
        // A veth hands frames to GRO only when its sender has no TSO (veth_skb_is_eligible_for_gro).
        await nsRun(env.NS_NAT, ['ethtool', '-K', env.NAT_LAN_IF, 'tso', c.underlayGro ? 'off' : 'on']);
        await nsRun(env.NS_GW, ['ethtool', '-K', env.GW_UNDERLAY_IF, 'gro', c.underlayGro ? 'on' : 'off']);
        gw = await startGateway(env, { env: c.env });
        await gw.waitUp();
      });
      afterAll(async () => {
        await gw.cleanup();
        await nsRun(env.NS_GW, ['ethtool', '-K', env.GW_UNDERLAY_IF, 'gro', 'off']);
        await nsRun(env.NS_NAT, ['ethtool', '-K', env.NAT_LAN_IF, 'tso', 'on']);
      });

      it('carries 16 MB each way intact', async () => {
        const up = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB16, { timeoutMs: 60_000 });
        expect(up.receivedBytes).toBe(MB16);
        expect(up.receivedSha256).toBe(up.sentSha256);
        const down = await tcpTransfer(env.NS_POD2, env.NS_HOST, env.HOST_IP, MB16, { timeoutMs: 60_000 });
        expect(down.receivedBytes).toBe(MB16);
        expect(down.receivedSha256).toBe(down.sentSha256);
      });

      it('reports the offload state, and the offloads really carried the traffic', async () => {
        // status.json is rewritten every 2 s: wait for one written after both transfers.
        const s: HealthDocument = await gw.waitStatus((d) => d.peers.reduce((a, p) => a + p.rxPackets, 0) > 10_000);
        expect(s.state).toBe('ok');
        expect(s.offload).toMatchObject({ tso: c.expect.tso, udpGro: c.expect.udpGro });
        // Nothing dropped for a reason the offload path could cause.
        for (const k of ['badIPv4', 'underlaySend', 'deviceWrite', 'internal', 'oversize']) expect(s.drops[k], k).toBeUndefined();
        if (c.expect.tso) {
          expect(s.offload!.reason).toBeNull();
          const n = s.offload!.counters!;
          console.log(`${c.name}: offload counters`, n);
          expect(n.tsoPackets).toBeGreaterThan(100); // super-packets from the site, cut by us
          expect(n.tsoSegments / n.tsoPackets).toBeGreaterThan(4);
          expect(n.gsoMessages).toBeGreaterThan(100); // ... and sent with UDP_SEGMENT
          expect(n.gsoOff).toBe(0);
          expect(n.coalescedWrites).toBeGreaterThan(100); // segments from the peers joined on write
          expect(n.csumRejects).toBe(0);
          if (c.underlayGro) expect(n.groDatagrams).toBeGreaterThan(100);
        } else {
          expect(s.offload!.reason).toMatch(/overlay.offload is false/);
          expect(s.offload!.counters).toBeUndefined();
        }
      });
    });
  }
});
