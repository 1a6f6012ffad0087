// NAT traversal against a Linux MASQUERADE site router and stock kernel flannel peers. The
// router's UDP conntrack timeouts are cut by scripts/labnet (per namespace) to 5 s for an
// unreplied flow and 10 s for a stream; the tests read them back rather than assume them.
//
//   - keepalives hold the mapping open for AWS nodes pinned to source port 8472
//     (srcport 8472 8473), and without keepalives the same setup fails;
//   - without a port forward and without the pin, AWS-initiated traffic cannot get in,
//     and the health says which remedies are missing;
//   - a flushed conntrack table (the router forgot every mapping) is healed by the next
//     keepalive: recovery within keepalive.interval × 1.2 (jitter) + 1 s;
//   - UDP 8472 blocked at one node: that peer goes down with a reason naming UDP 8472,
//     the other stays up;
//   - a node's address moves: frames from the new address are validated and followed, also
//     while a forger floods frames claiming that node from an address of its own;
//   - a forger with a VXLAN of its own claiming a node, which answers the probe, does not
//     move a node that still answers at its endpoint;
//   - a CE mark put on the outer header on the internet reaches the site host (RFC 6040).
//
// Idling "past the NAT's timeouts" is judged on the router's own state (its conntrack table),
// not on a fixed sleep.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killGroup, labDown, labUp, nsExec, nsRun, nsSpawn, ping, startCapture, waitExit, waitForOutput, skipUnlessRoot, snmpCounters, waitFor, waitSnmpDelta, type LabEnv } from './harness.js';
import { startGateway, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxnat';
/** How many NAT stream timeouts the keepalive test watches the mapping for. */
const IDLE_STREAM_TIMEOUTS = 2.5;

interface Mapping {
  /** Seconds the entry has existed (conntrack delta-time; needs nf_conntrack_timestamp). */
  ageS: number;
  line: string;
}

/** The NAT's UDP timeouts (seconds), as scripts/labnet set them in its namespace. */
/** aws1 gets a new public address (an EIP re-mapped): its underlay address and its
 *  flannel.1 local address change to `to`; the old address is gone. */
async function remapAws1(env: LabEnv, to: string): Promise<void> {
  const dev = env.AWS1_UNDERLAY_IF;
  await nsRun(env.NS_AWS1, ['ip', 'addr', 'del', `${env.AWS1_UNDERLAY_IP}/24`, 'dev', dev]);
  await nsRun(env.NS_AWS1, ['ip', 'addr', 'add', `${to}/24`, 'dev', dev]);
  await nsRun(env.NS_AWS1, ['ip', 'route', 'replace', 'default', 'via', env.INET_AWS_IP]);
  await nsRun(env.NS_AWS1, ['ip', 'link', 'set', env.VTEP_DEV, 'type', 'vxlan', 'local', to]);
}

async function natUdpTimeouts(env: LabEnv): Promise<{ unrepliedS: number; streamS: number }> {
  const get = async (k: string) => Number((await nsRun(env.NS_NAT, ['sysctl', '-n', k])).trim());
  return {
    unrepliedS: await get('net.netfilter.nf_conntrack_udp_timeout'),
    streamS: await get('net.netfilter.nf_conntrack_udp_timeout_stream'),
  };
}

/** Makes the NAT record when each conntrack entry was created (before the entries we watch exist). */
async function natTimestamps(env: LabEnv): Promise<void> {
  await nsRun(env.NS_NAT, ['sysctl', '-qw', 'net.netfilter.nf_conntrack_timestamp=1']);
}

/** The NAT's mappings of the gateway's VXLAN socket (192.0.2.10:8472 going out), by peer address. */
async function natMappings(env: LabEnv): Promise<Map<string, Mapping>> {
  const out = await nsRun(env.NS_NAT, ['conntrack', '-L', '-p', 'udp', '-s', env.GW_UNDERLAY_IP, '--sport', String(env.VXLAN_PORT), '-o', 'ktimestamp'], { timeoutMs: 5_000 });
  const m = new Map<string, Mapping>();
  for (const line of out.split('\n')) {
    const peer = /\bdst=(\S+)/.exec(line)?.[1];
    if (!peer) continue;
    m.set(peer, { ageS: Number(/\bdelta-time=(\d+)/.exec(line)?.[1] ?? NaN), line });
  }
  return m;
}

describe.skipIf(skipUnlessRoot(['conntrack']))('NAT traversal', () => {
  let env: LabEnv;
  let gw: RunningGateway | null = null;
  afterEach(async () => {
    await gw?.cleanup();
    gw = null;
  });
  afterAll(async () => {
    await labDown(PREFIX);
  });

  describe('AWS nodes pinned to source port 8472, no port forward', () => {
    it('keepalives keep AWS-initiated traffic flowing after the overlay idled for several NAT timeouts', async () => {
      env = await labUp({ prefix: PREFIX, portForward: false, awsSrcportPin: true });
      const { streamS, unrepliedS } = await natUdpTimeouts(env);
      expect(streamS).toBeLessThanOrEqual(10); // else the window below would be minutes
      await natTimestamps(env);
      gw = await startGateway(env, { keepaliveInterval: '2s', keepaliveTimeout: '8s' });
      await gw.waitUp();
      expect((await ping(env.NS_POD1, env.HOST_IP)).ok).toBe(true);
      const peers = [env.AWS1_PUBLIC_IP, env.AWS2_PUBLIC_IP];
      let m = await waitFor(async () => {
        const now = await natMappings(env);
        return peers.every((p) => now.has(p)) ? now : null;
      }, 5_000);
      // From here only keepalives touch the mappings. Watch them for several NAT timeouts: present
      // at every look, and at the end older than the whole window, i.e. the same entry throughout
      // (a lapsed mapping that a later probe re-created would be younger).
      const windowMs = IDLE_STREAM_TIMEOUTS * streamS * 1000;
      expect(windowMs).toBeGreaterThan(2 * Math.max(streamS, unrepliedS) * 1000);
      const t0 = Date.now();
      while (Date.now() - t0 < windowMs) {
        for (const p of peers) expect(m.get(p), `NAT mapping toward ${p} ${Date.now() - t0} ms into the window`).toBeDefined();
        await new Promise((r) => setTimeout(r, 1_000)); // the sampling period, not a wait for something
        m = await natMappings(env);
      }
      for (const p of peers) expect(m.get(p)?.ageS, m.get(p)?.line).toBeGreaterThanOrEqual(Math.floor(windowMs / 1000));
      const r = await ping(env.NS_POD1, env.HOST_IP, { count: 3 });
      expect(r.ok).toBe(true);
      expect((await ping(env.NS_POD2, env.HOST_IP)).ok).toBe(true);
    }, 60_000);

    it('without keepalives the same traffic fails once the NAT forgot the mapping', async () => {
      env = await labUp({ prefix: PREFIX, portForward: false, awsSrcportPin: true });
      const { streamS, unrepliedS } = await natUdpTimeouts(env);
      gw = await startGateway(env, { keepaliveInterval: '0', keepaliveTimeout: '8s' });
      await gw.waitStarted();
      // Site-initiated traffic opens the mapping; the AWS pod can answer and initiate.
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      expect((await ping(env.NS_POD1, env.HOST_IP)).ok).toBe(true);
      expect((await natMappings(env)).has(env.AWS1_PUBLIC_IP)).toBe(true);
      // Nothing refreshes it now: the router drops it after its stream timeout.
      await waitFor(async () => !(await natMappings(env)).has(env.AWS1_PUBLIC_IP), (streamS + unrepliedS + 10) * 1000, 250);
      const nat0 = await snmpCounters(env.NS_NAT);
      const r = await ping(env.NS_POD1, env.HOST_IP, { count: 3 });
      expect(r.received).toBe(0);
      // The frames died at the router (no mapping, nothing listens on its UDP 8472).
      await waitSnmpDelta(env.NS_NAT, 'Udp.NoPorts', nat0, 3, 5_000);
    }, 60_000);
  });

  describe('stock AWS nodes (hashed source ports)', () => {
    it('with the port forward, AWS-initiated pings reach the site', async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '4s' });
      await gw.waitUp();
      expect((await ping(env.NS_POD1, env.HOST_IP)).ok).toBe(true);
      expect((await ping(env.NS_POD2, env.HOST_IP)).ok).toBe(true);
    });

    it('a flushed conntrack table (the router forgot every mapping) costs at most 1 s of traffic', async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '2s', keepaliveTimeout: '8s' });
      await gw.waitUp();
      const pod0 = await snmpCounters(env.NS_POD1);
      const pinging = ping(env.NS_POD1, env.HOST_IP, { count: 40, intervalMs: 100, timeoutMs: 7_000 });
      // Flush once the ping is flowing (replies are back at pod1), while it has seconds to go.
      await waitSnmpDelta(env.NS_POD1, 'Icmp.InEchoReps', pod0, 3, 5_000);
      const atFlush = await snmpCounters(env.NS_POD1);
      await nsRun(env.NS_NAT, ['conntrack', '-F']);
      const r = await pinging;
      expect(r.sent).toBe(40);
      expect(r.sent - (atFlush['Icmp.OutEchos'] - pod0['Icmp.OutEchos'])).toBeGreaterThanOrEqual(10); // ≥ 1 s of echoes after the flush
      expect(r.sent - r.received).toBeLessThanOrEqual(10);
      const s = await gw.waitStatus((d) => d.state === 'ok', 5_000);
      expect(s.peers.every((p) => p.state === 'up')).toBe(true);
    }, 30_000);

    it('without it, they do not, and the health names the missing remedy', async () => {
      env = await labUp({ prefix: PREFIX, portForward: false });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '4s' });
      const s = await gw.waitStatus((d) => d.peers.every((p) => p.state === 'down'), 15_000);
      expect(s.state).toBe('down');
      for (const p of s.peers) {
        expect(p.reason).toMatch(/UDP 8472/);
        expect(p.reason).toMatch(/port forward to 192\.0\.2\.10:8472/);
        expect(p.reason).toMatch(/srcport 8472 8473/);
      }
      expect((await ping(env.NS_POD1, env.HOST_IP, { count: 2 })).received).toBe(0);
    }, 30_000);
  });

  describe('one node blocks UDP 8472', () => {
    it('goes down keepalive.timeout after it was last heard, with a reason naming UDP 8472; the other stays up; unblocking brings it back', async () => {
      const TIMEOUT_MS = 4_000;
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: `${TIMEOUT_MS / 1000}s` });
      await gw.waitUp();
      await nsRun(env.NS_AWS2, ['iptables', '-I', 'INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP']);
      const s = await gw.waitStatus((d) => d.peers.find((p) => p.name === 'aws-2')?.state === 'down', 10_000);
      const aws2 = s.peers.find((p) => p.name === 'aws-2')!;
      // When, by the gateway's own clock: from the last frame heard from aws-2 (its lastSeen in
      // the health document) to the log line of its going down. Not before keepalive.timeout
      // (less 5 ms for the two timestamps' rounding); at most one liveness look (every 1 s)
      // later, plus 2 s for timers running late on a busy machine.
      const down = await gw.waitLog(/^peer state$/, { peer: 'aws-2', from: 'up', to: 'down' });
      const silentMs = Date.parse(down.ts) - Date.parse(aws2.lastSeen!);
      console.log(`[nat] aws-2 down ${silentMs} ms after it was last heard (keepalive.timeout ${TIMEOUT_MS} ms)`);
      expect(silentMs, JSON.stringify({ down, lastSeen: aws2.lastSeen })).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
      expect(silentMs, JSON.stringify({ down, lastSeen: aws2.lastSeen })).toBeLessThanOrEqual(TIMEOUT_MS + 1_000 + 2_000);
      expect(aws2.reason).toMatch(/UDP 8472/);
      expect(s.peers.find((p) => p.name === 'aws-1')!.state).toBe('up');
      expect(s.state).toBe('degraded');
      // The underlay probe then tells the host is reachable, so the block is UDP.
      const later = await gw.waitStatus((d) => /answers ping/.test(d.peers.find((p) => p.name === 'aws-2')?.reason ?? ''), 8_000);
      expect(later.peers.find((p) => p.name === 'aws-2')!.reason).toMatch(/security group/);
      await nsRun(env.NS_AWS2, ['iptables', '-D', 'INPUT', '-p', 'udp', '--dport', '8472', '-j', 'DROP']);
      await gw.waitStatus((d) => d.state === 'ok', 10_000);
    }, 40_000);
  });

  describe('path MTU', () => {
    it('a path that loses large frames fails the path_mtu check for that peer only', async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      // The internet drops big packets toward aws2 (as a fragment-filtering middlebox would).
      await nsRun(env.NS_INET, ['iptables', '-I', 'FORWARD', '-d', env.AWS2_PUBLIC_IP, '-m', 'length', '--length', '1200:65535', '-j', 'DROP']);
      gw = await startGateway(env, { keepaliveInterval: '500ms', keepaliveTimeout: '5s' });
      // Probing starts once the router port mapping gave up (about 2 s here); a verdict needs
      // full-size probes (every 4th) to go unanswered past their settle time.
      const s = await gw.waitStatus((d) => d.checks.some((c) => c.name === 'path_mtu' && !c.ok), 25_000);
      const c = s.checks.find((x) => x.name === 'path_mtu')!;
      expect(c.detail).toMatch(/^aws-2 answers small probes but not 1450-byte ones/);
      expect(c.fix).toMatch(/vxlan\.mtu/);
      expect(s.peers.every((p) => p.state === 'up')).toBe(true);
      expect(s.state).toBe('degraded');
      await nsRun(env.NS_INET, ['iptables', '-D', 'FORWARD', '-d', env.AWS2_PUBLIC_IP, '-m', 'length', '--length', '1200:65535', '-j', 'DROP']);
      await gw.waitStatus((d) => d.state === 'ok', 15_000);
    }, 40_000);
  });

  describe('roaming', () => {
    it("follows a node whose address moved, after validating the new path; forged frames don't move it", async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '30s' });
      await gw.waitUp();
      await remapAws1(env, '203.0.113.11');
      // Traffic from the node now arrives from 203.0.113.11: validated, then followed.
      const r = await ping(env.NS_POD1, env.HOST_IP, { count: 15, intervalMs: 200, timeoutMs: 6_000 });
      expect(r.received).toBeGreaterThan(0);
      const s = await gw.waitStatus((d) => d.peers.find((p) => p.name === 'aws-1')?.endpoint === '203.0.113.11:8472', 5_000);
      expect(s.peers.find((p) => p.name === 'aws-1')!.state).toBe('up');
      expect(gw.output).toContain('peer endpoint moved after path validation');
      expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      // A forger elsewhere claiming aws2's MAC gets one unanswered probe, nothing more.
      const settled = Date.now();
      const before = await gw.waitStatus((d) => Date.parse(d.ts) > settled, 5_000); // counts from before the flood
      const inet0 = await snmpCounters(env.NS_INET);
      await nsRun(env.NS_INET, ['node', new URL('./flood.mjs', import.meta.url).pathname, '--to', env.GW_PUBLIC_IP, '--bind', env.INET_AWS_IP,
        '--kinds', 'good', '--count', '100', '--gw-mac', env.GW_VTEP_MAC, '--peer-mac', env.AWS2_VTEP_MAC, '--src', env.POD2_IP, '--dst', env.HOST_IP], { timeoutMs: 20_000 });
      // Evidence that it is all over: every forged frame was read and dropped, the gateway sent
      // its validation probe to the forger's address, and that address refused it (nothing
      // listens on its UDP 8472), so no answer can ever validate the move.
      const after = await gw.waitStatus((d) => (d.drops.unknownSource ?? 0) - (before.drops.unknownSource ?? 0) >= 100, 10_000);
      await gw.waitLog(/validating the path/, { peer: 'aws-2', candidate: env.INET_AWS_IP });
      await waitSnmpDelta(env.NS_INET, 'Udp.NoPorts', inet0, 1, 5_000);
      const over = Date.now();
      expect(after.peers.find((p) => p.name === 'aws-2')!.endpoint).toBe(`${env.AWS2_PUBLIC_IP}:8472`);
      const later = await gw.waitStatus((d) => Date.parse(d.ts) > over, 5_000);
      expect(later.peers.find((p) => p.name === 'aws-2')!.endpoint).toBe(`${env.AWS2_PUBLIC_IP}:8472`);
      expect(gw.logEntries().filter((e) => /endpoint moved/.test(e.msg) && e.peer === 'aws-2')).toEqual([]);
    }, 40_000);

    it('follows a node whose address moved while a forger floods frames claiming it from an address of its own', async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '30s' });
      await gw.waitUp();
      // The forger starts first and goes on for 15 s: frames with aws-1's MAC and a source in
      // its subnet, from inet's own address (nothing there answers a probe), in bursts of 50.
      // With one validation per peer per 5 s it took every one, and aws-1 was never followed.
      const flood = nsSpawn(env.NS_INET, ['node', new URL('./flood.mjs', import.meta.url).pathname, '--to', env.GW_PUBLIC_IP, '--bind', env.INET_AWS_IP,
        '--kinds', 'good', '--count', '50', '--duration-ms', '15000', '--gw-mac', env.GW_VTEP_MAC, '--peer-mac', env.AWS1_VTEP_MAC, '--src', env.POD1_IP, '--dst', env.HOST_IP]);
      try {
        await gw.waitLog(/validating the path/, { peer: 'aws-1', candidate: env.INET_AWS_IP });
        await remapAws1(env, '203.0.113.11'); // as in the first case
        const r = await ping(env.NS_POD1, env.HOST_IP, { count: 20, intervalMs: 200, timeoutMs: 8_000 });
        expect(r.received).toBeGreaterThan(0);
        const s = await gw.waitStatus((d) => d.peers.find((p) => p.name === 'aws-1')?.endpoint === '203.0.113.11:8472', 5_000);
        expect(flood.exitCode).toBeNull(); // followed while the flood went on
        expect(s.peers.find((p) => p.name === 'aws-1')!.state).toBe('up');
        await gw.waitLog(/peer endpoint moved after path validation/, { peer: 'aws-1', to: '203.0.113.11' });
        expect(await waitExit(flood, 20_000)).toBe(0);
        const over = Date.now();
        const after = await gw.waitStatus((d) => Date.parse(d.ts) > over, 5_000);
        expect(after.peers.find((p) => p.name === 'aws-1')!.endpoint).toBe('203.0.113.11:8472');
        expect((await ping(env.NS_HOST, env.POD1_IP)).ok).toBe(true);
      } finally {
        if (flood.exitCode === null) killGroup(flood, 'SIGKILL');
      }
    }, 60_000);

    it('a forger with a kernel VXLAN of its own that claims aws-2 and answers the probe does not move aws-2, which still answers at its endpoint', async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '30s' });
      await gw.waitUp();
      // On the internet, at an address of its own (inet's 203.0.113.1): a VXLAN device set up
      // as flannel sets up a node toward the site, but with aws-2's VTEP MAC and address, so
      // it passes every check the gateway can make of a frame, and it answers echoes.
      const ns = env.NS_INET;
      const dev = 'forge.1';
      try {
        await nsRun(ns, ['ip', 'link', 'add', dev, 'type', 'vxlan', 'id', '1', 'local', env.INET_AWS_IP, 'dstport', '8472', 'nolearning']);
        await nsRun(ns, ['ip', 'link', 'set', dev, 'address', env.AWS2_VTEP_MAC, 'mtu', '1450', 'up']);
        await nsRun(ns, ['ip', 'addr', 'add', `${env.AWS2_VTEP_IP}/32`, 'dev', dev]);
        await nsRun(ns, ['ip', 'route', 'add', env.GW_SUBNET, 'via', env.GW_VTEP_IP, 'dev', dev, 'onlink']);
        await nsRun(ns, ['ip', 'neigh', 'replace', env.GW_VTEP_IP, 'lladdr', env.GW_VTEP_MAC, 'dev', dev, 'nud', 'permanent']);
        await nsRun(ns, ['bridge', 'fdb', 'append', env.GW_VTEP_MAC, 'dev', dev, 'dst', env.GW_PUBLIC_IP]);
        // Its pings to the site start the validation; its kernel answers the probe.
        const forged = await ping(ns, env.HOST_IP, { count: 4, intervalMs: 300, source: env.AWS2_VTEP_IP });
        expect(forged.received).toBe(0); // candidates are never forwarded
        await gw.waitLog(/validating the path/, { peer: 'aws-2', candidate: env.INET_AWS_IP });
        // Logged only once the candidate's answer came back (the forger did answer) and aws-2
        // had been heard at its endpoint since the probes.
        await gw.waitLog(/still answers at its endpoint: not moved/, { peer: 'aws-2', endpoint: env.AWS2_PUBLIC_IP, candidate: env.INET_AWS_IP });
        const s = await gw.waitStatus((d) => d.peers.find((p) => p.name === 'aws-2')?.state === 'up', 5_000);
        expect(s.peers.find((p) => p.name === 'aws-2')!.endpoint).toBe(`${env.AWS2_PUBLIC_IP}:8472`);
        expect(gw.logEntries().filter((e) => /endpoint moved/.test(e.msg))).toEqual([]);
        expect((await ping(env.NS_HOST, env.POD2_IP)).ok).toBe(true);
      } finally {
        await nsExec(ns, ['ip', 'link', 'del', dev]);
      }
    }, 40_000);
  });
  describe('ECN across the tunnel', () => {
    it("a CE mark the internet path puts on the outer header reaches the site host (RFC 6040); on a Not-ECT packet it is a drop, as the kernel's vxlan does", async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '30s' });
      await gw.waitUp();
      // A congested router on the internet marks CE on every ECN-capable VXLAN datagram toward
      // the site (aws1's kernel VXLAN copied the inner ECN field to the outer header), and one
      // that does not keep to RFC 3168 marks Not-ECT ones too: those of 89 bytes, the size of
      // pod1's "notnotnot-i" datagrams below (keepalives differ in size and stay unmarked).
      await nsRun(env.NS_INET, ['nft', '-f', '-'], {
        input:
          `table ip vxecn {\n chain f {\n  type filter hook forward priority 0;\n` +
          `  ip daddr ${env.GW_PUBLIC_IP} udp dport 8472 ip ecn ect0 ip ecn set ce\n` +
          `  ip daddr ${env.GW_PUBLIC_IP} udp dport 8472 ip length 89 ip ecn set ce\n }\n}\n`,
      });
      try {
        const receiver = nsSpawn(env.NS_HOST, ['timeout', '20', 'python3', '-u', '-c', [
          'import json, socket, sys',
          's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
          's.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)',
          `s.bind(("${env.HOST_IP}", 5555))`,
          's.settimeout(3)',
          'print("listening", file=sys.stderr, flush=True)',
          'got = []',
          'try:',
          '  while len(got) < 5:',
          '    data, anc, _, _ = s.recvmsg(64, 64)',
          '    got.append({"text": data.decode(), "tos": [c[2][0] for c in anc if c[1] == socket.IP_TOS][0]})',
          'except socket.timeout:',
          '  pass',
          'print(json.dumps(got))',
        ].join('\n')]);
        let out = '';
        receiver.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        await waitForOutput(receiver, 'stderr', 'listening', 10_000);
        const before = (await gw.status())?.drops.ceNotEct ?? 0;
        // From pod1: five ECN-capable datagrams (ECT(0)), then five that are not (89 bytes on the wire).
        await nsRun(env.NS_POD1, ['python3', '-c', [
          'import socket',
          'for tos, tag in ((2, "ect"), (0, "notnotnot")):',
          '  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
          '  s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)',
          '  for i in range(5):',
          `    s.sendto(("%s-%d" % (tag, i)).encode(), ("${env.HOST_IP}", 5555))`,
        ].join('\n')]);
        await waitExit(receiver, 25_000);
        const got = JSON.parse(out.trim()) as { text: string; tos: number }[];
        expect(got.map((g) => g.text).sort()).toEqual(['ect-0', 'ect-1', 'ect-2', 'ect-3', 'ect-4']);
        expect(got.every((g) => (g.tos & 3) === 3)).toBe(true); // CE, carried from the outer header
        const after = await gw.waitStatus((d) => (d.drops.ceNotEct ?? 0) - before >= 5, 5_000);
        expect((after.drops.ceNotEct ?? 0) - before).toBe(5);
      } finally {
        await nsExec(env.NS_INET, ['nft', 'delete', 'table', 'ip', 'vxecn']);
      }
    }, 60_000);

    it("the outer ECN field of what the gateway sends is what aws1's kernel VXLAN sends for the same inner TOS", async () => {
      env = await labUp({ prefix: PREFIX, portForward: true });
      gw = await startGateway(env, { keepaliveInterval: '1s', keepaliveTimeout: '30s' });
      await gw.waitUp();
      // Both directions cross aws1's underlay interface: the site's datagrams to pod1 (vxedge's
      // encapsulation, through the NAT) and pod1's to the site (the kernel's).
      const pcap = `/tmp/${PREFIX}-ecn-${process.pid}.pcap`;
      const TOS = [0x00, 0x01, 0x02, 0x03, 0xb9]; // Not-ECT, ECT(1), ECT(0), CE, DSCP EF + ECT(1)
      const cap = startCapture(env.NS_AWS1, ['-i', env.AWS1_UNDERLAY_IF, '-n', '-U', '-w', pcap, 'udp port 8472'], { timeoutMs: 30_000 });
      // Each datagram's outer DSCP and ECN (tshark lists a field once per IP header, outer first),
      // by its inner payload. udp.payload, not data.data: the sender's ephemeral source port may
      // be one tshark hands to a dissector (ENIP, PNIO, TZSP, …), which then leaves no data.data.
      const outerFields = async () => {
        const text = await nsRun(env.NS_AWS1, ['tshark', '-r', pcap, '-d', 'udp.port==8472,vxlan', '-Y', 'udp.dstport == 5556 && !icmp',
          '-T', 'fields', '-E', 'separator=;', '-e', 'ip.dsfield.dscp', '-e', 'ip.dsfield.ecn', '-e', 'udp.payload']).catch(() => '');
        const found = new Map<string, { dscp: number; ecn: number }>();
        for (const line of text.trim().split('\n').filter(Boolean)) {
          const [dscp, ecn, payloads] = line.split(';');
          const inner = payloads.split(',').at(-1)!; // the outer UDP's payload is the VXLAN frame
          found.set(Buffer.from(inner, 'hex').toString(), { dscp: Number(dscp.split(',')[0]), ecn: Number(ecn.split(',')[0]) });
        }
        return found;
      };
      try {
        await cap.ready;
        const send = (ns: string, to: string, tag: string) => nsRun(ns, ['python3', '-c', [
          'import socket',
          `for tos in (${TOS.join(', ')},):`,
          '  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
          '  s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)',
          `  s.sendto(b"${tag}-%d" % tos, ("${to}", 5556))`,
        ].join('\n')]);
        await send(env.NS_HOST, env.POD1_IP, 'site');
        await send(env.NS_POD1, env.HOST_IP, 'pod1');
        // On a deadline the assertions below say which datagrams are missing.
        await waitFor(async () => (await outerFields()).size >= 2 * TOS.length, 10_000).catch(() => undefined);
      } finally {
        await cap.stop();
      }
      const outer = await outerFields();
      await nsExec(env.NS_AWS1, ['rm', '-f', pcap]);
      const want = [0, 1, 2, 2, 1]; // the inner ECN copied out, CE as ECT(0); the DSCP never
      expect(TOS.map((t) => outer.get(`pod1-${t}`))).toEqual(want.map((ecn) => ({ dscp: 0, ecn }))); // the kernel's
      expect(TOS.map((t) => outer.get(`site-${t}`))).toEqual(want.map((ecn) => ({ dscp: 0, ecn }))); // ours
    }, 60_000);
  });
});
