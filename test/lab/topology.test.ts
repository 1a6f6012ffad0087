// Proves the namespace lab (scripts/labnet) with a kernel flannel.1 in the gateway's place: the
// AWS nodes look like flannel made them, traffic flows both ways through the site NAT, and
// AWS-initiated traffic depends on the UDP 8472 port forward.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LABNET,
  killGroup,
  labDown,
  labUp,
  nsRun,
  nsSpawn,
  ping,
  run,
  skipUnlessRoot,
  snmpCounters,
  tcpTransfer,
  waitExit,
  waitFor,
  waitSnmpDelta,
  type LabEnv,
} from './harness.js';

const PREFIX = 'vxtopo';
const MB4 = 4 * 1024 * 1024;

describe.skipIf(skipUnlessRoot(['socat', 'conntrack', 'timeout']))('lab topology (kernel flannel.1 at the site)', () => {
  describe('with the UDP 8472 port forward', () => {
    let env: LabEnv;
    beforeAll(async () => {
      env = await labUp({ prefix: PREFIX, gw: 'kernel' });
    });
    afterAll(async () => {
      await labDown(PREFIX);
    });

    it('creates and programs flannel.1 on the AWS nodes as flannel does', async () => {
      const link = await nsRun(env.NS_AWS1, ['ip', '-d', 'link', 'show', 'flannel.1']);
      expect(link).toContain('mtu 1450');
      expect(link).toContain(`link/ether ${env.AWS1_VTEP_MAC}`);
      expect(link).toMatch(/vxlan id 1 local 203\.0\.113\.10 dev eth0 srcport 0 0 dstport 8472 nolearning /);
      expect(link).toMatch(/ udpcsum /);
      expect(await nsRun(env.NS_AWS1, ['ip', '-4', 'addr', 'show', 'dev', 'flannel.1'])).toContain('inet 10.244.1.0/32');
      const neigh = await nsRun(env.NS_AWS1, ['ip', 'neigh', 'show', 'dev', 'flannel.1']);
      expect(neigh).toContain(`10.244.100.0 lladdr ${env.GW_VTEP_MAC} PERMANENT`);
      expect(neigh).toContain(`10.244.2.0 lladdr ${env.AWS2_VTEP_MAC} PERMANENT`);
      const fdb = await nsRun(env.NS_AWS1, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']);
      expect(fdb).toContain(`${env.GW_VTEP_MAC} dst 198.51.100.2 self permanent`);
      expect(fdb).toContain(`${env.AWS2_VTEP_MAC} dst 203.0.113.20 self permanent`);
      const routes = await nsRun(env.NS_AWS1, ['ip', 'route', 'show', 'dev', 'flannel.1']);
      expect(routes).toContain('10.244.100.0/24 via 10.244.100.0 onlink');
      expect(routes).toContain('10.244.2.0/24 via 10.244.2.0 onlink');
      // Finding 1: the "AWS NIC" fills in checksums like hardware would
      expect(await nsRun(env.NS_AWS1, ['ethtool', '-k', 'eth0'])).toMatch(/^tx-checksumming: off/m);
      expect(await nsRun(env.NS_AWS2, ['ethtool', '-k', 'eth0'])).toMatch(/^tx-checksumming: off/m);
      expect(await nsRun(env.NS_GW, ['ethtool', '-k', 'eth0'])).toMatch(/^tx-checksumming: off/m);
      expect((await nsRun(env.NS_AWS1, ['sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6'])).trim()).toBe('1');
      expect((await nsRun(env.NS_AWS1, ['ip', '-6', 'addr'])).trim()).toBe('');
    });

    it('runs the NAT with per-namespace conntrack timeouts, MASQUERADE and the forward', async () => {
      const t = await nsRun(env.NS_NAT, ['sysctl', '-n', 'net.netfilter.nf_conntrack_udp_timeout']);
      const ts = await nsRun(env.NS_NAT, ['sysctl', '-n', 'net.netfilter.nf_conntrack_udp_timeout_stream']);
      expect([t.trim(), ts.trim()]).toEqual(['5', '10']);
      // another lab namespace keeps the kernel default: the setting is per netns
      expect((await nsRun(env.NS_GW, ['sysctl', '-n', 'net.netfilter.nf_conntrack_udp_timeout'])).trim()).not.toBe('5');
      const rules = await nsRun(env.NS_NAT, ['iptables', '-t', 'nat', '-S']);
      expect(rules).toContain('-A POSTROUTING -o wan -j MASQUERADE');
      expect(rules).toContain('-A PREROUTING -i wan -p udp -m udp --dport 8472 -j DNAT --to-destination 192.0.2.10:8472');
    });

    it('pings both ways between the site host and the pods and VTEPs', async () => {
      const probes: Array<[string, string]> = [
        [env.NS_HOST, env.POD1_IP],
        [env.NS_HOST, env.POD2_IP],
        [env.NS_HOST, env.AWS1_VTEP_IP],
        [env.NS_HOST, env.AWS2_VTEP_IP],
        [env.NS_POD1, env.HOST_IP],
        [env.NS_POD2, env.HOST_IP],
        [env.NS_AWS1, env.HOST_IP], // sourced from flannel.1's 10.244.1.0
        [env.NS_AWS2, env.HOST_IP],
        [env.NS_POD1, env.POD2_IP], // AWS node to AWS node, for completeness
      ];
      const results = await Promise.all(probes.map(([ns, dst]) => ping(ns, dst, { count: 3, intervalMs: 100 })));
      const summary = probes.map(([ns, dst], i) => `${ns} -> ${dst}: ${results[i].received}/${results[i].sent}`);
      expect(summary).toEqual(probes.map(([ns, dst]) => `${ns} -> ${dst}: 3/3`));
    });

    it('labnet rr: one-byte TCP requests host -> pod1, each answered with its own byte, as JSON like ping; none without a server', async () => {
      const server = nsSpawn(env.NS_POD1, [LABNET, 'rr-serve', '--prefix', PREFIX, 'pod1', env.POD1_IP, '5202', '--for', '20']);
      try {
        await waitFor(async () => (await nsRun(env.NS_POD1, ['ss', '-Hltn', 'sport = :5202'])).includes(':5202'), 5_000);
        const r = await run([LABNET, 'rr', '--prefix', PREFIX, 'host', env.POD1_IP, '5202', '--count', '10', '--interval', '0.02'], { timeoutMs: 10_000 });
        expect(r.code, r.stderr).toBe(0);
        const j = JSON.parse(r.stdout.trim()) as { sent: number; received: number; rttMs: number[] };
        expect(j).toMatchObject({ sent: 10, received: 10 });
        expect(j.rttMs).toHaveLength(10);
        for (const v of j.rttMs) expect(v).toBeGreaterThan(0);
      } finally {
        killGroup(server, 'SIGTERM');
        await waitExit(server, 2_000);
      }
      const refused = await run([LABNET, 'rr', '--prefix', PREFIX, 'host', env.POD1_IP, '5202', '--count', '2'], { timeoutMs: 10_000 });
      expect(refused.code).not.toBe(0);
      expect(refused.stdout).toBe('');
      expect(refused.stderr).toContain('connect 10.244.1.2:5202: Connection refused');
    });

    it('labnet ping: a --timeout shorter than the run sends what fits, says so on stderr and exits 1', async () => {
      // 10 echoes 0.2 s apart take 1.8 s to send; a 0.5 s limit ends the run after the third.
      const r = await run([LABNET, 'ping', '--prefix', PREFIX, 'host', env.POD1_IP, '--count', '10', '--interval', '0.2', '--timeout', '0.5'], { timeoutMs: 10_000 });
      expect(r.code).toBe(1);
      const j = JSON.parse(r.stdout.trim()) as { sent: number; received: number };
      expect(j.sent).toBeLessThan(10);
      expect(r.stderr).toContain(`--timeout 0.5 s ended the run after ${j.sent} of 10 echoes were sent`);
      const full = await run([LABNET, 'ping', '--prefix', PREFIX, 'host', env.POD1_IP, '--count', '3', '--interval', '0.05'], { timeoutMs: 10_000 });
      expect(full.code, full.stderr).toBe(0);
      expect(full.stderr).toBe('');
    });

    it('moves 4 MB over TCP host -> pod1 and pod1 -> host intact', async () => {
      const aws0 = await snmpCounters(env.NS_AWS1);
      const down = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB4);
      expect(down.receivedBytes).toBe(MB4);
      expect(down.receivedSha256).toBe(down.sentSha256);
      const up = await tcpTransfer(env.NS_POD1, env.NS_HOST, env.HOST_IP, MB4);
      expect(up.receivedBytes).toBe(MB4);
      expect(up.receivedSha256).toBe(up.sentSha256);
      // no outer UDP checksum errors on the AWS node (see the gw `tx off` note in scripts/labnet)
      const aws1 = await snmpCounters(env.NS_AWS1);
      expect(aws1['Udp.InCsumErrors'] - aws0['Udp.InCsumErrors']).toBe(0);
      console.info(`4 MB host->pod1 ${down.ms.toFixed(0)} ms, pod1->host ${up.ms.toFixed(0)} ms`);
    });
  });

  describe('without the port forward', () => {
    let env: LabEnv;
    beforeAll(async () => {
      env = await labUp({ prefix: PREFIX, gw: 'kernel', portForward: false });
    });
    afterAll(async () => {
      await labDown(PREFIX);
    });

    it('AWS-initiated traffic dies at the NAT (no mapping for UDP 8472)', async () => {
      const nat0 = await snmpCounters(env.NS_NAT);
      const r = await ping(env.NS_POD1, env.HOST_IP, { count: 2, intervalMs: 100, timeoutMs: 1_000 });
      expect(r.received).toBe(0);
      // the encapsulated echoes reach the NAT itself, which has no socket on 8472
      expect(await waitSnmpDelta(env.NS_NAT, 'Udp.NoPorts', nat0, 2, 5_000)).toBeGreaterThanOrEqual(2);
    });

    it('host-initiated traffic reaches the pod, but the replies die at the NAT too', async () => {
      // The AWS node sends its reply to public-ip:8472 like any other frame, never to the port the
      // gateway's frame came from, so MASQUERADE's mapping for the request does not match it.
      const pod0 = await snmpCounters(env.NS_POD1);
      const nat0 = await snmpCounters(env.NS_NAT);
      const r = await ping(env.NS_HOST, env.POD1_IP, { count: 2, intervalMs: 100, timeoutMs: 1_000 });
      expect(r.received).toBe(0);
      // Both echoes answered by the pod, both replies dead at the NAT (counted once they got there).
      expect(await waitSnmpDelta(env.NS_POD1, 'Icmp.OutEchoReps', pod0, 2, 5_000)).toBe(2);
      expect(await waitSnmpDelta(env.NS_NAT, 'Udp.NoPorts', nat0, 2, 5_000)).toBeGreaterThanOrEqual(2);
      const pod1 = await snmpCounters(env.NS_POD1);
      expect(pod1['Icmp.InEchos'] - pod0['Icmp.InEchos']).toBe(2);
      expect(pod1['Icmp.OutEchoReps'] - pod0['Icmp.OutEchoReps']).toBe(2);
    });
  });

  describe("--underlay-gro --lan-gro (the gateway's two interfaces as real NICs)", () => {
    let env: LabEnv;
    beforeAll(async () => {
      env = await labUp({ prefix: PREFIX, gw: 'kernel', underlayGro: true, lanGro: true });
    });
    afterAll(async () => {
      await labDown(PREFIX);
    });

    it('cuts on the NAT side, does GRO on the gateway side, says so in env, and still carries TCP intact', async () => {
      expect(String(env.UNDERLAY_GRO)).toBe('1');
      const nat = await nsRun(env.NS_NAT, ['ethtool', '-k', env.NAT_LAN_IF]);
      expect(nat).toMatch(/^tcp-segmentation-offload: off/m);
      expect(nat).toMatch(/^generic-segmentation-offload: off/m);
      expect(await nsRun(env.NS_GW, ['ethtool', '-k', env.GW_UNDERLAY_IF])).toMatch(/^generic-receive-offload: on/m);
      const down = await tcpTransfer(env.NS_POD1, env.NS_HOST, env.HOST_IP, MB4);
      expect(down.receivedSha256).toBe(down.sentSha256);
    });

    it("the LAN: the host sends MTU-sized frames, the gateway's LAN polls in a thread of its own with GRO, TCP intact", async () => {
      expect(String(env.LAN_GRO)).toBe('1');
      expect(await nsRun(env.NS_HOST, ['ethtool', '-k', env.HOST_IF])).toMatch(/^tcp-segmentation-offload: off/m);
      expect(await nsRun(env.NS_GW, ['ethtool', '-k', env.GW_LAN_IF])).toMatch(/^generic-receive-offload: on/m);
      expect((await nsRun(env.NS_GW, ['cat', `/sys/class/net/${env.GW_LAN_IF}/threaded`])).trim()).toBe('1');
      const up = await tcpTransfer(env.NS_HOST, env.NS_POD1, env.POD1_IP, MB4);
      expect(up.receivedSha256).toBe(up.sentSha256);
    });
  });

  describe('--aws-srcport-pin without the port forward (no gateway VTEP)', () => {
    let env: LabEnv;
    beforeAll(async () => {
      env = await labUp({ prefix: PREFIX, gw: 'none', portForward: false, awsSrcportPin: true });
    });
    afterAll(async () => {
      await labDown(PREFIX);
    });

    it('a gateway socket on 8472 that sends first receives AWS frames through port-preserving MASQUERADE', async () => {
      expect(await nsRun(env.NS_AWS1, ['ip', '-d', 'link', 'show', 'flannel.1'])).toContain('srcport 8472 8473');
      // Stand-in for vxedge: one UDP socket on gw:8472 sends a datagram to aws1:8472 (opening the
      // NAT mapping), then prints what it receives.
      const script = `
        const s = require('node:dgram').createSocket('udp4');
        s.on('message', (m, r) => console.log(JSON.stringify({ from: r.address, port: r.port, hex: m.toString('hex') })));
        s.bind(8472, '${env.GW_UNDERLAY_IP}', () => s.send(Buffer.from('hello'), 8472, '${env.AWS1_PUBLIC_IP}', () => console.log('sent')));
        setTimeout(() => process.exit(0), 8000);`;
      const gw = nsSpawn(env.NS_GW, [process.execPath, '-e', script]);
      let out = '';
      gw.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      await waitFor(() => out.includes('sent'), 3_000);

      // MASQUERADE kept the source port: replies are expected at 198.51.100.2:8472
      const mapping = 'src=203.0.113.10 dst=198.51.100.2 sport=8472 dport=8472';
      const ct = await waitFor(async () => {
        const out = await nsRun(env.NS_NAT, ['conntrack', '-L', '-p', 'udp', '-s', env.GW_UNDERLAY_IP]);
        return out.includes(`dport=${env.VXLAN_PORT} `) ? out : null; // the datagram crossed the NAT
      }, 3_000);
      expect(ct).toContain(mapping);

      await ping(env.NS_POD1, env.HOST_IP, { count: 1, timeoutMs: 500 }); // no gateway VTEP: no reply
      const line = await waitFor(
        () => out.split('\n').find((l) => l.startsWith('{')),
        3_000,
      );
      const frame = JSON.parse(line) as { from: string; port: number; hex: string };
      expect(frame.from).toBe(env.AWS1_PUBLIC_IP);
      expect(frame.port).toBe(8472);
      expect(frame.hex.slice(0, 16)).toBe('0800000000000100'); // VXLAN, VNI 1
      expect(frame.hex.slice(16, 40)).toBe('0e5caa000064' + '0abb00000100'); // inner dst/src MAC
      gw.kill('SIGTERM');
      await waitExit(gw, 2_000);
    });
  });
});
