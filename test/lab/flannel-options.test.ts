// flannel's VXLAN backend options that change what the nodes' flannel.1 sends or takes, both
// on: "GBP": true and "Learning": true (scripts/labnet --aws-gbp --aws-learning makes the
// nodes' devices as flannel does with them).
//
// - GBP: flannel.1 is made with `gbp`, and a packet that carries a firewall mark (kube-proxy's
//   0x4000 masquerade mark, a policy agent's) leaves with the Group Policy extension: the G
//   flag and the mark's low 16 bits as a policy ID in the header's reserved bytes. A kernel
//   VTEP without `gbp` drops those frames; vxedge takes them as one with `gbp` does
//   (src/proto/vxlan.ts), so the site hears such a cluster.
// - Learning: flannel.1 without `nolearning` drops a frame whose source MAC's permanent FDB
//   entry names another address than the frame came from (vxlan_snoop). The site's frames
//   come from the public IP its lease announces (the NAT's), so such a node takes them: the
//   pings below cross a node with both options, each way.
//
// What crosses aws1's underlay is read with tcpdump, so the test knows the frames it counts on
// really carried the extension.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { labDown, labUp, nsRun, ping, skipUnlessRoot, startCapture, waitFor, type LabEnv } from './harness.js';
import { startGateway, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxflo';
/** The mark aws1 puts on what pod1 sends to the site: policy ID 0x0200, neither D nor A. */
const MARK = '0x200';
/** The first four bytes of such a frame's VXLAN header (flags, D·A, policy ID), as tcpdump's udp[8:4]. */
const GBP_WORD = '0x88000200';

describe.skipIf(skipUnlessRoot(['tcpdump']))('flannel with "GBP": true and "Learning": true at the nodes', () => {
  let env: LabEnv;
  let gw: RunningGateway;
  const aws1 = () => gw.status().then((d) => d!.peers.find((p) => p.name === 'aws-1')!);

  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX, awsGbp: true, awsLearning: true });
    gw = await startGateway(env);
    await gw.waitUp();
  });

  afterAll(async () => {
    await gw?.cleanup();
    await labDown(PREFIX);
  });

  it('the nodes\' flannel.1 is made as flannel makes it with both options', async () => {
    expect(env).toMatchObject({ AWS_GBP: 1, AWS_LEARNING: 1 });
    const link = await nsRun(env.NS_AWS1, ['ip', '-d', 'link', 'show', env.VTEP_DEV]);
    expect(link).toMatch(/\bgbp\b/);
    expect(link).not.toMatch(/\bnolearning\b/);
  });

  it('frames with the Group Policy extension from a marked pod are taken, and the learning node takes ours: pings both ways, no drop, the policy ID ignored', async () => {
    // Unmarked, the frames are plain: the baseline.
    expect(await ping(env.NS_HOST, env.POD1_IP, { count: 3 })).toMatchObject({ ok: true });

    await nsRun(env.NS_AWS1, ['iptables', '-t', 'mangle', '-A', 'FORWARD', '-s', env.POD1_IP, '-d', env.GW_SUBNET, '-j', 'MARK', '--set-mark', MARK]);
    const rxBefore = (await aws1()).rxPackets;
    const cap = startCapture(env.NS_AWS1, ['-i', env.AWS1_UNDERLAY_IF, '-n', `udp dst port ${env.VXLAN_PORT} and udp[8:4] = ${GBP_WORD}`], { timeoutMs: 30_000 });
    try {
      await cap.ready;
      // pod1's echo replies (site -> pod1) and its own requests (pod1 -> site) leave marked.
      const toPod = await ping(env.NS_HOST, env.POD1_IP, { count: 10, intervalMs: 100 });
      const fromPod = await ping(env.NS_POD1, env.HOST_IP, { count: 10, intervalMs: 100 });
      await waitFor(() => cap.lines.length >= 20, 5_000).catch(() => undefined);
      expect(cap.lines.length, 'frames with G flag and policy ID 0x0200 on aws1\'s underlay').toBeGreaterThanOrEqual(20);
      expect(toPod).toMatchObject({ sent: 10, received: 10 });
      expect(fromPod).toMatchObject({ sent: 10, received: 10 });
    } finally {
      await cap.stop();
    }
    const after = await gw.untilStatus((d) => d.peers.find((p) => p.name === 'aws-1')!.rxPackets >= rxBefore + 20, 'the marked frames counted for aws-1', 5_000);
    expect(after.drops ?? {}).not.toHaveProperty('reservedBits');
    expect(after.peers.find((p) => p.name === 'aws-1')).toMatchObject({ state: 'up' });
  });
});
