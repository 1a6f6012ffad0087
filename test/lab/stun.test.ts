// Public endpoint discovery through the site NAT, against two real STUN servers (coturn):
//
//   gw 192.0.2.10:8472 --- nat (MASQUERADE, keeps ports; UDP 8472 forward) --- inet
//                          WAN 198.51.100.2                                     198.51.100.1:3478  coturn #1
//                                                                               203.0.113.1:3478   coturn #2
//
// The gateway runs without underlay.publicIp: it must learn 198.51.100.2:8472 from the
// servers, report the NAT's behaviour, and hand the address to `vxedge manifest`; a reload
// that changes nat.stun asks the new servers, and an empty list stops asking. Then
// the NAT is "renumbered-lite": its conntrack table is flushed and its SNAT moved to
// ports 40000-40100, the peers are cut off (so every peer goes down, which triggers a
// new round), and the gateway must notice the new mapping and say a port forward is needed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ajv } from 'ajv';
import { labDown, labUp, nsExec, nsRun, nsSpawn, skipUnlessRoot, waitFor, type LabEnv } from './harness.js';
import { CLI, checkCommand, labConfig, startGateway, writeLabConfig, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxst';
const STUN_PORT = 3478;
const SCHEMA = JSON.parse(readFileSync(new URL('../../src/health/health.schema.json', import.meta.url), 'utf8')) as object;
const validate = new Ajv({ allErrors: true, strict: true, validateFormats: false }).compile(SCHEMA);

function startStunServer(env: LabEnv, ip: string, dir: string): ChildProcess {
  const child = nsSpawn(env.NS_INET, [
    'timeout', '90', 'turnserver', '-n', '--stun-only', '--no-cli', '--no-tls', '--no-dtls',
    '--listening-ip', ip, '--listening-port', String(STUN_PORT), '--log-file', 'stdout', '--simple-log',
    '--pidfile', path.join(dir, `turnserver-${ip}.pid`),
  ]);
  child.stdout!.resume();
  child.stderr!.resume();
  return child;
}

describe.skipIf(skipUnlessRoot(['turnserver', 'conntrack']))('STUN discovery through the site NAT', () => {
  let env: LabEnv;
  let gw: RunningGateway | undefined;
  let servers: string[];
  const dir = mkdtempSync(path.join(tmpdir(), `${PREFIX}-stun-`));

  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
    servers = [`${env.INET_WAN_IP}:${STUN_PORT}`, `${env.INET_AWS_IP}:${STUN_PORT}`];
    for (const ip of [env.INET_WAN_IP, env.INET_AWS_IP]) startStunServer(env, ip, dir);
    await waitFor(async () => {
      const ss = await nsRun(env.NS_INET, ['ss', '-Hlun', `sport = :${STUN_PORT}`]);
      return ss.includes(`${env.INET_WAN_IP}:${STUN_PORT}`) && ss.includes(`${env.INET_AWS_IP}:${STUN_PORT}`);
    }, 10_000, 100);
  });
  afterAll(async () => {
    await gw?.cleanup();
    await labDown(PREFIX); // kills the STUN servers too
    rmSync(dir, { recursive: true, force: true });
  });

  it('`vxedge check` asks the servers from the tunnel port and reads the answer as the gateway would; a server that does not answer is named', async () => {
    const file = await writeLabConfig(env, dir, 'check.json', { extra: { underlay: {}, nat: { stun: servers } } });
    const c = await checkCommand(env.NS_GW, file, 'stun');
    const esc = (x: string) => x.replace(/[.]/g, '\\.');
    expect(c.line, c.stdout).toMatch(new RegExp(`^ok +stun +from ${esc(env.GW_UNDERLAY_IP)}:8472: ${esc(servers[0]!)} saw ${esc(env.NAT_WAN_IP)}:8472; ${esc(servers[1]!)} saw ${esc(env.NAT_WAN_IP)}:8472; the NAT preserves port 8472 and maps independently of the destination`));
    console.log(`[stun] vxedge check: ${c.line.replace(/ +/g, ' ')} (${c.ms.toFixed(0)} ms)`);

    const silent = `${env.INET_AWS_IP}:3479`; // nothing listens there
    const lone = await writeLabConfig(env, dir, 'check-silent.json', { extra: { underlay: {}, nat: { stun: [silent] } } });
    const f = await checkCommand(env.NS_GW, lone, 'stun');
    expect(f.code).toBe(1);
    expect(f.line).toMatch(new RegExp(`^FAIL +stun +from ${esc(env.GW_UNDERLAY_IP)}:8472: ${esc(silent)} no answer \\(.+\\)\\n +fix: check that UDP to the STUN servers is allowed`));
    expect(f.ms).toBeLessThan(15_000);
  });

  it('learns the NAT\'s address and preserved port, and the manifest announces it', async () => {
    gw = await startGateway(env, { extra: { underlay: {}, nat: { stun: servers } } });
    await gw.waitUp();
    const s = await gw.waitStatus((d) => d.nat?.checkedAt != null);
    expect(validate(s), JSON.stringify(validate.errors)).toBe(true);
    expect(s.tunnel.localEndpoint).toBe(`${env.GW_UNDERLAY_IP}:8472`);
    expect(s.tunnel.publicEndpoint).toBe(`${env.NAT_WAN_IP}:8472`);
    expect(s.nat).toMatchObject({ mappedEndpoint: `${env.NAT_WAN_IP}:8472`, portPreserved: true, mappingVaries: false });
    expect(s.nat!.stun?.map((x) => [x.server, x.mapped, x.error])).toEqual(servers.map((x) => [x, `${env.NAT_WAN_IP}:8472`, null]));
    expect(s.nat!.advice).toContain('srcport 8472 8473');
    expect(s.checks.find((c) => c.name === 'public_endpoint')).toMatchObject({ ok: true, detail: `${env.NAT_WAN_IP}:8472 (stun)` }); // and where it came from
    // The answers were consumed by the STUN client, not counted as bad VXLAN.
    expect(s.drops).toEqual({});

    // `vxedge check` beside it: the tunnel port is the gateway's, so it asks from another one.
    const c = await checkCommand(env.NS_GW, gw.configFile, 'stun');
    expect(c.line).toMatch(new RegExp(`^ok +stun +from ${env.GW_UNDERLAY_IP.replace(/[.]/g, '\\.')}:(?!8472:)\\d+ \\(8472 is taken here: a running gateway's mapping is in vxedge status\\): `));

    const manifest = await nsRun(env.NS_GW, ['node', CLI, 'manifest', '-c', gw.configFile]);
    expect(manifest).toMatch(new RegExp(`flannel\\.alpha\\.coreos\\.com/public-ip: "?${env.NAT_WAN_IP.replace(/\./g, '\\.')}"?`));
  });

  it('a reload that changes nat.stun asks the new servers at once, the public endpoint kept meanwhile; an empty list stops asking', async () => {
    const g = gw!;
    const reload = async (stun: string[]) => {
      await g.reload(labConfig(env, g.dir, { extra: { underlay: {}, nat: { stun } } }));
      return Date.now();
    };
    const at = await reload([servers[1]!]);
    const s = await g.waitStatus((d) => Date.parse(d.ts) > at && d.nat?.stun?.length === 1, 10_000);
    expect(s.nat!.stun!.map((x) => [x.server, x.mapped, x.error])).toEqual([[servers[1], `${env.NAT_WAN_IP}:8472`, null]]);
    expect(s.tunnel.publicEndpoint).toBe(`${env.NAT_WAN_IP}:8472`);
    expect(s.reload).toMatchObject({ applied: ['nat.stun'], restartNeeded: [] });

    // No servers: nothing asks any more, and the endpoint is the local one (nothing better is known).
    const off = await reload([]);
    const none = await g.waitStatus((d) => Date.parse(d.ts) > off && d.nat?.stun === undefined, 10_000);
    expect(none.nat?.mappedEndpoint).toBeUndefined(); // what is left of `nat` is the port mapping's (auto, no router offers one here)
    expect(none.tunnel.publicEndpoint).toBe(`${env.GW_UNDERLAY_IP}:8472`);
    expect(none.drops).toEqual({});

    // Both again, for the test below.
    const back = await reload(servers);
    await g.waitStatus((d) => Date.parse(d.ts) > back && d.nat?.stun?.length === 2 && d.tunnel.publicEndpoint === `${env.NAT_WAN_IP}:8472`, 10_000);
  });

  it('notices a changed mapping when every peer goes down, and asks for a port forward', async () => {
    const g = gw!;
    const before = (await g.status())!;
    const nat = (argv: string[]) => nsRun(env.NS_NAT, argv);
    // Cut the tunnel (both ways, STUN answers excepted), move the SNAT to other ports, forget every mapping.
    await nat(['iptables', '-I', 'FORWARD', '-p', 'udp', '--dport', '8472', '!', '--sport', String(STUN_PORT), '-j', 'DROP']);
    await nat(['iptables', '-t', 'nat', '-I', 'POSTROUTING', '1', '-o', env.NAT_WAN_IF, '-p', 'udp', '-j', 'MASQUERADE', '--to-ports', '40000-40100']);
    await nsExec(env.NS_NAT, ['conntrack', '-F']);

    const s = await g.waitStatus((d) => d.peers.every((p) => p.state === 'down') && d.nat?.mappedEndpoint !== before.nat?.mappedEndpoint, 20_000);
    expect(validate(s), JSON.stringify(validate.errors)).toBe(true);
    const port = Number(s.nat!.mappedEndpoint!.split(':')[1]);
    expect(s.nat!.mappedEndpoint!.startsWith(`${env.NAT_WAN_IP}:`)).toBe(true);
    expect(port).toBeGreaterThanOrEqual(40_000);
    expect(port).toBeLessThanOrEqual(40_100);
    expect(s.tunnel.publicEndpoint).toBe(s.nat!.mappedEndpoint);
    expect(s.nat!.portPreserved).toBe(false);
    expect(s.nat!.advice).toContain(`port forward of UDP 8472 to ${env.GW_UNDERLAY_IP}:8472`);
    expect(Date.parse(s.nat!.checkedAt!)).toBeGreaterThan(Date.parse(before.nat!.checkedAt!));
    expect(g.output).toMatch(/"reason":"peers down"/);

    // Reconnected: the port forward carries the tunnel again whatever the mapping.
    await nat(['iptables', '-D', 'FORWARD', '-p', 'udp', '--dport', '8472', '!', '--sport', String(STUN_PORT), '-j', 'DROP']);
    await g.waitUp(15_000);
  });
});
