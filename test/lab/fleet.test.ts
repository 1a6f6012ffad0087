// `vxedge fleet` against a real mosquitto in the lab (scripts/labnet, prefix vxfleet):
//
//   gw [real vxedge] -- nat -- inet [mosquitto on 198.51.100.1: 1883 plain,
//                                    8883 mutual TLS + password file]
//
// Gateways are retained messages the test publishes with mosquitto_pub (every case under a
// topic prefix of its own, so cases do not see each other's gateways), plus one real gateway
// publishing through the site NAT. The command runs as it ships, `node dist/cli/main.js fleet`
// (the bundle; its fleet chunk), inside the inet namespace, and is judged by its exit code and output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { killGroup, labDown, labUp, nsExec, nsRun, nsSpawn, skipUnlessRoot, waitExit, waitFor, type LabEnv } from './harness.js';
import { makePasswordFile, makeTls, startMosquitto, stopAllBrokers, type Broker, type TlsFiles } from './mosquitto.js';
import { CLI, ensureBuilt, startGateway, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxfleet';
const FLEET = [CLI, 'fleet'];

const noStack = (s: string) => expect(s).not.toMatch(/\n\s+at .+:\d+:\d+/);

interface Peer {
  name: string;
  state: 'up' | 'down' | 'unknown';
  reason?: string | null;
}

/** A health document in the contract's shape. */
function healthDoc(site: string, node: string, o: { state?: string; peers?: Peer[]; ageS?: number; intervalS?: number } = {}): string {
  const peers = (o.peers ?? [{ name: 'aws-1', state: 'up' }, { name: 'aws-2', state: 'up' }]).map((p, i) => ({
    name: p.name, endpoint: `203.0.113.${10 * (i + 1)}:8472`, subnet: `10.244.${i + 1}.0/24`, state: p.state, rttMs: 1.1, lossPct: 0,
    lastSeen: new Date().toISOString(), rxPackets: 5, txPackets: 5, rxBytes: 500, txBytes: 500, reason: p.reason ?? null,
  }));
  return JSON.stringify({
    site, node, version: '0.1.0', ts: new Date(Date.now() - (o.ageS ?? 0) * 1000).toISOString(), uptimeS: 100, state: o.state ?? 'ok',
    tunnel: { device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:01', localEndpoint: '192.0.2.10:8472', publicEndpoint: null },
    peers,
    checks: [{ name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' }],
    pid: 1, drops: {},
    ...(o.intervalS ? { intervalS: o.intervalS } : {}),
  });
}

interface PubOptions {
  port?: number;
  /** MQTT 5 message expiry, as the gateway sets it (3 × mqtt.interval). */
  expiryS?: number;
  tls?: { ca: string; cert: string; key: string };
  user?: { name: string; password: string };
}

describe.skipIf(skipUnlessRoot(['mosquitto', 'mosquitto_pub', 'mosquitto_passwd', 'openssl']))('vxedge fleet (real mosquitto)', () => {
  let env: LabEnv;
  let dir: string;
  let tls: TlsFiles;
  let plain: Broker;
  let secure: Broker;
  let plainUrl: string;
  let secureUrl: string;
  const gateways: RunningGateway[] = [];
  const monitor = { name: 'monitor', password: 'monitor-pw' };

  /** Publishes a retained message (null: deletes the retained one), as a gateway would. */
  async function pub(topic: string, payload: string | Buffer | null, o: PubOptions = {}): Promise<void> {
    const a = ['mosquitto_pub', '-h', env.INET_WAN_IP, '-p', String(o.port ?? 1883), '-V', 'mqttv5', '-q', '1', '-r', '-t', topic];
    if (payload === null) a.push('-n');
    else if (Buffer.isBuffer(payload)) a.push('-s');
    else a.push('-m', payload);
    if (o.expiryS !== undefined) a.push('-D', 'publish', 'message-expiry-interval', String(o.expiryS));
    if (o.tls) a.push('--cafile', o.tls.ca, '--cert', o.tls.cert, '--key', o.tls.key);
    if (o.user) a.push('-u', o.user.name, '-P', o.user.password);
    await nsRun(env.NS_INET, a, { timeoutMs: 5_000, input: Buffer.isBuffer(payload) ? payload : undefined });
  }

  /** A gateway as its two retained messages (as the gateway does, only health carries an expiry). */
  async function gateway(prefix: string, site: string, node: string, status: string | null, health: string | Buffer | null, o: PubOptions = {}): Promise<void> {
    if (status !== null) await pub(`${prefix}/${site}/${node}/status`, status, { ...o, expiryS: undefined });
    if (health !== null) await pub(`${prefix}/${site}/${node}/health`, health, o);
  }

  /** `vxedge fleet ARGS` in the inet namespace, bounded. */
  async function fleet(args: string[], timeoutMs = 15_000) {
    const t0 = Date.now();
    const r = await nsExec(env.NS_INET, ['node', ...FLEET, ...args], { timeoutMs });
    return { code: r.code, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
  }

  /** The table line of one gateway, split into its columns. */
  function row(stdout: string, site: string, node: string): string[] {
    const line = stdout.split('\n').find((l) => l.startsWith(`${site} `) && l.split(/\s{2,}/)[1] === node);
    if (!line) throw new Error(`no row for ${site}/${node} in:\n${stdout}`);
    return line.split(/\s{2,}/);
  }

  beforeAll(async () => {
    ensureBuilt();
    env = await labUp({ prefix: PREFIX });
    dir = await mkdtemp(path.join(tmpdir(), 'vxedge-fleet-'));
    tls = makeTls(dir, env.INET_WAN_IP, 'monitor');
    const passwordFile = path.join(dir, 'mosquitto.passwd');
    makePasswordFile(passwordFile, { monitor: monitor.password, 'edge-1': 'edge-1-pw' });
    await writeFile(path.join(dir, 'monitor.pw'), `${monitor.password}\n`, { mode: 0o600 });
    await writeFile(path.join(dir, 'wrong.pw'), 'not-the-password\n', { mode: 0o600 });
    plain = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1883, dir, lifetimeS: 240 });
    secure = await startMosquitto({
      ns: env.NS_INET, address: env.INET_WAN_IP, port: 8883, dir, lifetimeS: 240, passwordFile,
      tls: { cafile: tls.ca, certfile: tls.serverCert, keyfile: tls.serverKey, requireCertificate: true },
    });
    plainUrl = `mqtt://${env.INET_WAN_IP}:1883`;
    secureUrl = `mqtts://${env.INET_WAN_IP}:8883`;
  });

  afterAll(async () => {
    for (const gw of gateways) await gw.cleanup().catch(() => undefined);
    await stopAllBrokers();
    if (env) await labDown(PREFIX);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every gateway online and ok: one aligned row each, exit 0', async () => {
    await gateway('allok', 'north', 'gw-1', 'online', healthDoc('north', 'gw-1'), { expiryS: 90 });
    await gateway('allok', 'north', 'gw-2', 'online', healthDoc('north', 'gw-2', { intervalS: 30 }));
    await gateway('allok', 'south', 'gw-1', 'online', healthDoc('south', 'gw-1', { ageS: 12 }));
    const r = await fleet(['--url', plainUrl, '--prefix', 'allok']);
    console.log(`fleet of 3 (plain broker): ${r.ms} ms, node start-up included`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^SITE\s+NODE\s+STATUS\s+STATE\s+PEERS\s+AGE\s+REASON$/);
    expect(lines.slice(1, 4).map((l) => l.split(/\s+/).slice(0, 5))).toEqual([
      ['north', 'gw-1', 'online', 'ok', '2/2'], ['north', 'gw-2', 'online', 'ok', '2/2'], ['south', 'gw-1', 'online', 'ok', '2/2'],
    ]);
    // Aligned: every column starts where its header does.
    for (const h of ['STATUS', 'PEERS', 'AGE']) {
      const at = lines[0].indexOf(h);
      for (const l of lines.slice(1, 4)) expect(l[at - 1] === ' ' && l[at] !== ' ', `${h} in ${JSON.stringify(l)}`).toBe(true);
    }
    expect(row(r.stdout, 'south', 'gw-1')[5]).toMatch(/^1[2-9]s$/);
    expect(r.stdout).toContain('3 gateways: 3 ok, 0 not ok');
    // How long it takes (printed above, Node's start included) is not judged here: the end after
    // 300 ms of quiet is timed in test/unit/fleet.test.ts on a ManualClock.
  });

  it('offline, degraded and stale gateways: exit 1, each row says why', async () => {
    const p = 'mixed';
    await gateway(p, 'north', 'ok-1', 'online', healthDoc('north', 'ok-1'));
    await gateway(p, 'north', 'off-1', 'offline', healthDoc('north', 'off-1', { ageS: 200 }));
    await gateway(p, 'north', 'deg-1', 'online', healthDoc('north', 'deg-1', {
      state: 'degraded',
      peers: [
        { name: 'aws-1', state: 'up' },
        { name: 'aws-3', state: 'unknown', reason: 'not probed yet' },
        { name: 'aws-2', state: 'down', reason: 'no answer to keepalive probes for 90s; check that the AWS security group allows UDP 8472' },
      ],
    }));
    await gateway(p, 'north', 'old-1', 'online', healthDoc('north', 'old-1', { ageS: 600 }));
    await gateway(p, 'north', 'old-2', 'online', healthDoc('north', 'old-2', { ageS: 20, intervalS: 5 }));
    await gateway(p, 'north', 'nohealth', 'online', null);
    const r = await fleet(['--url', plainUrl, '--prefix', p]);
    expect(r.code).toBe(1);
    expect(row(r.stdout, 'north', 'ok-1').slice(2, 5)).toEqual(['online', 'ok', '2/2']);
    expect(row(r.stdout, 'north', 'off-1').slice(2, 6)).toEqual(['offline', 'ok', '2/2', '3m']);
    const deg = row(r.stdout, 'north', 'deg-1');
    expect(deg.slice(2, 5)).toEqual(['online', 'degraded', '1/3']);
    // The down peer, not the unknown one listed before it.
    expect(deg[6]).toBe('aws-2: no answer to keepalive probes for 90s; check that the AWS security group allows UDP 8472');
    expect(row(r.stdout, 'north', 'old-1').slice(2)).toEqual(['stale', 'ok', '2/2', '10m', 'last health 10m old, over 3 × 30s (the assumed interval)']);
    const old2 = row(r.stdout, 'north', 'old-2');
    expect(old2.slice(2, 5)).toEqual(['stale', 'ok', '2/2']);
    expect(old2[6]).toMatch(/^last health 2\ds old, over 3 × 5s \(its intervalS\)$/);
    expect(row(r.stdout, 'north', 'nohealth').slice(2)).toEqual(['stale', '-', '-', '-', 'no health document (expired on the broker, not published yet, or over 1 MiB, which the broker does not send this reader)']);
    expect(r.stdout).toContain('6 gateways: 1 ok, 5 not ok');

    // The gateways' interval, when operators know it: a 1 h interval makes 10 minutes current.
    const longer = await fleet(['--url', plainUrl, '--prefix', p, '--interval', '1h']);
    expect(row(longer.stdout, 'north', 'old-1')[2]).toBe('online');
  });

  it('an MQTT 5 expiry decides, not the gateway clock; an expired health is gone from the broker', async () => {
    const p = 'expiry';
    // The gateway's clock is an hour behind, but the broker says the document is current.
    await gateway(p, 'east', 'skewed', 'online', healthDoc('east', 'skewed', { ageS: 3600 }), { expiryS: 90 });
    await gateway(p, 'east', 'expired', 'online', healthDoc('east', 'expired'), { expiryS: 1 });
    // mosquitto counts expiry in whole seconds: wait until it has dropped the document.
    const r = await waitFor(async () => {
      const x = await fleet(['--url', plainUrl, '--prefix', p]);
      return row(x.stdout, 'east', 'expired')[2] === 'stale' ? x : null;
    }, 6_000, 200);
    expect(r.code).toBe(1);
    expect(row(r.stdout, 'east', 'skewed').slice(2, 6)).toEqual(['online', 'ok', '2/2', '1h']);
    expect(row(r.stdout, 'east', 'expired').slice(2, 4)).toEqual(['stale', '-']);
  });

  it('malformed payloads are shown on their rows, never a crash', async () => {
    const p = 'malformed';
    await gateway(p, 'bad', 'status', 'maybe', healthDoc('bad', 'status'));
    await gateway(p, 'bad', 'json', 'online', '{"site": "bad", "node":');
    await gateway(p, 'bad', 'shape', 'online', JSON.stringify({ site: 'bad', node: 'shape', ts: new Date().toISOString(), state: 'ok', peers: 'none' }));
    await gateway(p, 'bad', 'binary', 'online', Buffer.from([0xff, 0x00, 0xfe, 0x1b, 0x5b, 0x32, 0x4a]));
    // Over the reader's bound: an MQTT 5 broker does not send it at all (the reader's maximum
    // packet size), so the row cannot say "malformed"; it must not say only "not published yet".
    const huge = JSON.parse(healthDoc('bad', 'huge')) as Record<string, unknown>;
    await gateway(p, 'bad', 'huge', 'online', Buffer.from(JSON.stringify({ ...huge, pad: 'x'.repeat(1_200_000) })));
    await gateway(p, 'good', 'gw', 'online', healthDoc('good', 'gw'));
    const r = await fleet(['--url', plainUrl, '--prefix', p]);
    expect(r.code).toBe(1);
    noStack(r.stderr);
    expect(row(r.stdout, 'bad', 'status').slice(2, 4)).toEqual(['malformed', 'ok']);
    expect(row(r.stdout, 'bad', 'status')[6]).toBe('malformed status: "maybe" (expected "online" or "offline")');
    expect(row(r.stdout, 'bad', 'json')[6]).toMatch(/^malformed health: not JSON \(/);
    expect(row(r.stdout, 'bad', 'shape')[6]).toBe('malformed health: peers is "none" (expected a list)');
    expect(row(r.stdout, 'bad', 'binary')[6]).toBe('malformed health: not UTF-8 text');
    expect(row(r.stdout, 'bad', 'huge').slice(2)).toEqual(['stale', '-', '-', '-', expect.stringMatching(/^no health document \(.*over 1 MiB/)]);
    expect(row(r.stdout, 'good', 'gw').slice(2, 4)).toEqual(['online', 'ok']);
    expect(r.stdout).not.toContain('\u001b');
  });

  it('--json: an array of {site, node, status, state, peersUp, peersTotal, reason, ts} plus extensions', async () => {
    const r = await fleet(['--url', plainUrl, '--prefix', 'mixed', '--json']);
    expect(r.code).toBe(1);
    const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
    expect(rows).toHaveLength(6);
    for (const x of rows) {
      expect(Object.keys(x)).toEqual(['site', 'node', 'status', 'state', 'peersUp', 'peersTotal', 'reason', 'ts', 'ok', 'stale', 'ageS', 'worstPeer', 'error']);
    }
    const by = (node: string) => rows.find((x) => x.node === node)!;
    expect(by('ok-1')).toMatchObject({ site: 'north', status: 'online', state: 'ok', peersUp: 2, peersTotal: 2, reason: null, ok: true, stale: false, worstPeer: null, error: null });
    expect(Date.parse(by('ok-1').ts as string)).toBeGreaterThan(Date.now() - 120_000);
    expect(by('deg-1')).toMatchObject({ status: 'online', state: 'degraded', peersUp: 1, peersTotal: 3, worstPeer: 'aws-2', ok: false });
    expect(by('deg-1').reason).toMatch(/UDP 8472/);
    expect(by('off-1')).toMatchObject({ status: 'offline', ok: false });
    expect(by('old-1')).toMatchObject({ status: 'online', stale: true, ok: false });
    expect(by('old-1').ageS).toBeGreaterThanOrEqual(600);
    expect(by('nohealth')).toMatchObject({ status: 'online', state: null, ts: null, stale: true, ok: false });
  });

  it('a real gateway, end to end: online and ok while it runs, offline after SIGTERM', async () => {
    const gw = await startGateway(env, { extra: { mqtt: { url: plainUrl, interval: '5s', topicPrefix: 'real' } } });
    gateways.push(gw);
    await gw.waitUp();
    // Peers coming up after the first document: a change within 5 s of it waits for the 5 s.
    await plain.waitRetained('real/lab/edge-1/health', (m) => (JSON.parse(m) as { state: string }).state === 'ok', 15_000);
    const r = await fleet(['--url', plainUrl, '--prefix', 'real', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([expect.objectContaining({ site: 'lab', node: 'edge-1', status: 'online', state: 'ok', peersUp: 2, peersTotal: 2, ok: true, stale: false })]);
    expect(await gw.stop('SIGTERM')).toBe(0);
    const after = await fleet(['--url', plainUrl, '--prefix', 'real']);
    expect(after.code).toBe(1);
    expect(row(after.stdout, 'lab', 'edge-1')[2]).toBe('offline');
  });

  it('none found: says so, exit 1', async () => {
    const r = await fleet(['--url', plainUrl, '--prefix', 'nobody']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`vxedge fleet: no gateway found: the broker at ${env.INET_WAN_IP}:1883 holds no retained nobody/+/+/status or nobody/+/+/health\n`);
  });

  it('broker unreachable: exit 2 with a clear message, also when nothing answers', async () => {
    const refused = await fleet(['--url', `mqtt://${env.INET_WAN_IP}:1999`]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toBe(`vxedge fleet: connection failed: connect ECONNREFUSED ${env.INET_WAN_IP}:1999; is the broker up and reachable at ${env.INET_WAN_IP}:1999?\n`);
    // Nobody answers at .99 on the AWS-side segment: the command gives up by itself (exit 2, not
    // killed at fleet()'s 15 s bound). That --timeout is what ends the wait, and when, is timed in
    // test/unit/fleet.test.ts ('a broker that never answers') on a ManualClock, not here on a
    // busy machine's wall clock with Node's start-up in it; the time is printed.
    const silent = await fleet(['--url', 'mqtt://203.0.113.99:1883', '--timeout', '1s']);
    console.log(`silent broker, --timeout 1s: exit ${silent.code} after ${silent.ms} ms: ${silent.stderr.trim()}`);
    expect(silent.code).toBe(2);
    expect(silent.stderr).toMatch(/^vxedge fleet: connection failed: .*is the broker up and reachable at 203\.0\.113\.99:1883\?\n$/);
  });

  it('bad arguments: exit 2, no stack trace', async () => {
    for (const args of [
      ['--url', plainUrl, '--bogus'], ['--url', plainUrl, '--prefix', 'a/+'], ['--prefix', 'x'], ['--url', 'ftp://x'],
      ['--url', plainUrl, '--forget', 'lab'], ['--url', plainUrl, '--forget', 'lab/+'], ['--url', plainUrl, '--forget', 'lab/gw-1', '--watch'],
    ]) {
      const r = await fleet(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^vxedge fleet: .+\n\(vxedge fleet --help shows the options\)\n$/);
      expect(r.stdout).toBe('');
    }
  });

  it('--forget clears a retired gateway\'s retained status and health (read back to be sure); refused for one online and current, one not there, and for credentials that may only read', async () => {
    const passwordFile = path.join(dir, 'forget.passwd');
    makePasswordFile(passwordFile, { admin: 'admin-pw', monitor: monitor.password });
    const aclFile = path.join(dir, 'forget.acl');
    await writeFile(aclFile, 'user admin\ntopic readwrite #\n\nuser monitor\ntopic read #\n');
    await writeFile(path.join(dir, 'admin.pw'), 'admin-pw\n', { mode: 0o600 });
    const b = await startMosquitto({ ns: env.NS_INET, address: env.INET_WAN_IP, port: 1886, dir, lifetimeS: 120, passwordFile, aclFile });
    try {
      const admin = { port: 1886, user: { name: 'admin', password: 'admin-pw' } };
      await gateway('forget', 'lab', 'gone', 'offline', healthDoc('lab', 'gone', { ageS: 200 }), admin);
      await gateway('forget', 'lab', 'live', 'online', healthDoc('lab', 'live'), admin);
      const as = (user: string) => ['--url', `mqtt://${env.INET_WAN_IP}:1886`, '--prefix', 'forget', '--username', user, '--password-file', path.join(dir, `${user}.pw`)];
      const held = async (node: string) => (await b.retained(`forget/lab/${node}/status`, { username: 'admin', password: 'admin-pw' })) !== null;

      const ro = await fleet([...as('monitor'), '--forget', 'lab/gone']);
      expect(ro.code, ro.stderr).toBe(1);
      expect(ro.stderr).toMatch(/^vxedge fleet: lab\/gone not forgotten: .*may these credentials publish to it/);
      expect(await held('gone')).toBe(true);
      console.log(`fleet --forget as a read-only user: ${ro.stderr.trim()}`);

      const live = await fleet([...as('admin'), '--forget', 'lab/live']);
      expect(live.code).toBe(1);
      expect(live.stderr).toContain('lab/live not forgotten: it is online and its health is current; stop that gateway first');
      expect(await held('live')).toBe(true);

      const done = await fleet([...as('admin'), '--forget', 'lab/gone', '--forget', 'lab/nope']);
      expect(done.code, done.stderr).toBe(1); // lab/nope is not there
      expect(done.stdout).toMatch(/^forgot lab\/gone \(offline, last health 3m ago\): its retained status and health are cleared; its Node or lease in the cluster is not touched/);
      expect(done.stderr).toMatch(/^vxedge fleet: lab\/nope not forgotten: the broker at \S+ holds no retained status or health under forget\/lab\/nope\/\n$/);
      expect(await held('gone')).toBe(false);
      expect(await b.retained('forget/lab/gone/health', { username: 'admin', password: 'admin-pw' })).toBeNull();
      noStack(done.stderr);

      const rest = await fleet(as('monitor'));
      expect(rest.stdout.split('\n').filter((l) => l.startsWith('lab ')).map((l) => l.split(/\s+/)[1])).toEqual(['live']);
    } finally {
      await b.stop();
    }
  });

  describe('mutual TLS + password file', () => {
    const asGateway = () => ({ port: 8883, tls: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey }, user: { name: 'edge-1', password: 'edge-1-pw' } });
    const tlsArgs = () => ['--url', secureUrl, '--ca', tls.ca, '--cert', tls.clientCert, '--key', tls.clientKey, '--username', 'monitor', '--password-file', path.join(dir, 'monitor.pw')];

    beforeAll(async () => {
      await gateway('tls', 'west', 'gw-1', 'online', healthDoc('west', 'gw-1'), { ...asGateway(), expiryS: 90 });
    });

    it('--ca, --cert/--key and --username/--password-file: exit 0', async () => {
      const r = await fleet([...tlsArgs(), '--prefix', 'tls']);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(row(r.stdout, 'west', 'gw-1').slice(2, 5)).toEqual(['online', 'ok', '2/2']);
    });

    it('a broker certificate from an unknown CA, a missing client certificate, a wrong password: exit 2, saying what to check', async () => {
      const args = tlsArgs();
      const otherCa = await fleet(args.map((a) => (a === tls.ca ? tls.otherCa : a)));
      expect(otherCa.code).toBe(2);
      expect(otherCa.stderr).toMatch(/^vxedge fleet: connection failed: TLS: .*not signed by a CA in mqtt\.ca.*; check mqtt\.ca\/cert\/key\n$/);

      const noCert = await fleet(['--url', secureUrl, '--ca', tls.ca, '--username', 'monitor', '--password-file', path.join(dir, 'monitor.pw')]);
      expect(noCert.code).toBe(2);
      expect(noCert.stderr).toMatch(/check mqtt\.ca\/cert\/key/);
      noStack(noCert.stderr);

      const wrongPw = await fleet(args.map((a) => (a.endsWith('monitor.pw') ? path.join(dir, 'wrong.pw') : a)));
      expect(wrongPw.code).toBe(2);
      expect(wrongPw.stderr).toMatch(/check mqtt\.username and mqtt\.password\/passwordFile/);

      const missing = await fleet(args.map((a) => (a.endsWith('monitor.pw') ? path.join(dir, 'absent.pw') : a)));
      expect(missing.code).toBe(2);
      expect(missing.stderr).toBe(`vxedge fleet: cannot read mqtt.passwordFile ${path.join(dir, 'absent.pw')}: no such file\n`);
    });

    it('-c FILE takes the broker, TLS, credentials and prefix from the mqtt section; flags override it', async () => {
      const site = path.join(dir, 'site.yaml');
      await writeFile(site, [
        'site: west', 'node: gw-1', 'overlay:', '  subnet: 10.244.100.0/24', 'mqtt:', `  url: ${secureUrl}`, '  topicPrefix: tls',
        `  ca: ${tls.ca}`, `  cert: ${tls.clientCert}`, `  key: ${tls.clientKey}`, '  username: monitor', `  passwordFile: ${path.join(dir, 'monitor.pw')}`, '',
      ].join('\n'));
      const r = await fleet(['-c', site]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(row(r.stdout, 'west', 'gw-1')[2]).toBe('online');
      const other = await fleet(['-c', site, '--prefix', 'elsewhere']);
      expect(other.code).toBe(1);
      expect(other.stderr).toContain('no retained elsewhere/+/+/status');
      const bad = path.join(dir, 'bad.yaml');
      await writeFile(bad, 'site: west\noverlay: { subnet: 10.244.100.0/24 }\nmqtt: { url: mqtt://x, intervall: 5s }\n');
      const invalid = await fleet(['-c', bad]);
      expect(invalid.code).toBe(2);
      expect(invalid.stderr).toContain('mqtt.intervall');
      noStack(invalid.stderr);
    });
  });

  /** Runs ARGV (vxedge fleet --watch) in the internet namespace with its output collected, then
   *  `body` against it; a failure shows that output, and the process is gone afterwards. */
  async function withWatch(argv: string[], body: (child: ChildProcess, out: () => string) => Promise<void>): Promise<void> {
    const child = nsSpawn(env.NS_INET, argv);
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    try {
      await body(child, () => out);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- vxedge fleet --watch output ---\n${out}`);
    } finally {
      killGroup(child, 'SIGKILL');
    }
  }

  it('--watch prints a line when a gateway changes; SIGINT ends it with the last state', async () => {
    const p = 'watch';
    await gateway(p, 'lab', 'w-1', 'online', healthDoc('lab', 'w-1'), { expiryS: 90 });
    await gateway(p, 'lab', 'w-2', 'online', healthDoc('lab', 'w-2'), { expiryS: 90 });
    await withWatch(['timeout', '40', 'node', ...FLEET, '--url', plainUrl, '--prefix', p, '--watch'], async (child, out) => {
      await waitFor(() => out().includes('2 gateways: 2 ok, 0 not ok'), 10_000);
      await pub(`${p}/lab/w-2/status`, 'offline');
      const offline = await waitFor(() => out().split('\n').find((l) => /^\S+Z {2}lab {2}w-2 {2}offline {2}ok {2}2\/2/.test(l)), 10_000);
      expect(Math.abs(Date.parse(offline.split(' ')[0]) - Date.now())).toBeLessThan(10_000);
      await pub(`${p}/lab/w-2/status`, 'online');
      await waitFor(() => /Z {2}lab {2}w-2 {2}online {2}ok/.test(out()), 10_000);
      // A new gateway appears; a deleted one is said to be gone.
      await gateway(p, 'lab', 'w-3', 'online', healthDoc('lab', 'w-3'), { expiryS: 90 });
      await waitFor(() => /Z {2}lab {2}w-3 {2}online {2}ok/.test(out()), 10_000);
      await pub(`${p}/lab/w-3/status`, null);
      await pub(`${p}/lab/w-3/health`, null);
      await waitFor(() => out().includes('lab/w-3  removed'), 10_000);
      expect(out().split('\n').filter((l) => l.includes('w-1'))).toHaveLength(1); // unchanged: only in the table
      process.kill(-child.pid!, 'SIGINT');
      expect(await waitExit(child, 5_000)).toBe(0);
    });
  });

  it('--watch keeps its exit code when SIGINTs keep coming while it ends (a supervisor forwarding them late)', async () => {
    const p = 'storm';
    await gateway(p, 'lab', 's-1', 'online', healthDoc('lab', 's-1'), { expiryS: 90 });
    // Without timeout(1): node is the process that ip netns exec becomes, and gets every signal.
    await withWatch(['node', ...FLEET, '--url', plainUrl, '--prefix', p, '--watch'], async (child, out) => {
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      await waitFor(() => out().includes('1 gateway: 1 ok'), 10_000);
      // The first SIGINT ends --watch; the rest land across its exit, where Node's teardown
      // had given SIGINT back its default action (9 of 10 runs died by the signal before).
      const storm = setInterval(() => {
        try {
          process.kill(child.pid!, 'SIGINT');
        } catch {
          /* gone */
        }
      }, 1);
      const end = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 10_000))]);
      clearInterval(storm);
      expect(end).toEqual({ code: 0, signal: null });
    });
  });
});
