// metrics.listen against a real Prometheus (Debian's `prometheus`), in the lab:
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge, metrics on its LAN address]
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)    |
//  pod2 -- aws2 [kernel flannel.1] --/                                               host [prometheus, scraping every second]
//
// A Prometheus on the site's LAN scrapes the gateway: the target is up with no scrape error
// (Prometheus's own parser took every line), its queries give the numbers status.json gives
// (peers up, packets sent to pod1's node after pings, every drop reason), and `promtool check
// metrics` finds nothing to lint. `vxedge check` beside the gateway counts the port as the
// gateway's; with another program on the port it says so and how to find it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { killGroup, labDown, labUp, nsHttpGet, nsSpawn, ping, run, skipUnlessRoot, waitExit, waitFor, type LabEnv } from './harness.js';
import { checkCommand, startGateway, writeLabConfig, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxpm';
const METRICS_PORT = 9474;
const PROMETHEUS = '127.0.0.1:9090';
/** Prometheus's lifetime bound (`timeout`), should the test never stop it. */
const PROMETHEUS_LIFETIME_S = 300;

interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

describe.skipIf(skipUnlessRoot(['prometheus', 'promtool']))('metrics.listen: scraped by a real Prometheus', () => {
  let env: LabEnv;
  let gw: RunningGateway;
  let prometheus: ChildProcess;
  let promDir: string;
  let promLog = '';

  /** An instant query's result, from Prometheus's HTTP API. */
  async function query(expr: string): Promise<PromSample[]> {
    const r = await nsHttpGet(env.NS_HOST, `http://${PROMETHEUS}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const doc = JSON.parse(r.body) as { status: string; data?: { result: PromSample[] }; error?: string };
    if (doc.status !== 'success') throw new Error(`query ${expr}: ${doc.error}`);
    return doc.data!.result;
  }

  /** The number of the one series `expr` gives, or null while there is none. */
  async function scalar(expr: string): Promise<number | null> {
    const res = await query(expr);
    expect(res.length).toBeLessThanOrEqual(1);
    return res.length ? Number(res[0].value[1]) : null;
  }

  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
    gw = await startGateway(env, { extra: { metrics: { listen: `${env.GW_LAN_IP}:${METRICS_PORT}` } } });
    gw.context = () => `\n--- prometheus ---\n${promLog.slice(-3000)}`;
    await gw.waitUp();
    promDir = mkdtempSync(path.join(tmpdir(), `${PREFIX}-prometheus-`));
    const config = path.join(promDir, 'prometheus.yml');
    writeFileSync(config, [
      'global: { scrape_interval: 1s, scrape_timeout: 1s }',
      'scrape_configs:',
      '  - job_name: vxedge',
      `    static_configs: [{ targets: ["${env.GW_LAN_IP}:${METRICS_PORT}"] }]`,
    ].join('\n'));
    prometheus = nsSpawn(env.NS_HOST, [
      'timeout', String(PROMETHEUS_LIFETIME_S), 'prometheus', `--config.file=${config}`, `--storage.tsdb.path=${path.join(promDir, 'data')}`,
      `--web.listen-address=${PROMETHEUS}`, '--log.level=warn',
    ]);
    for (const s of [prometheus.stdout!, prometheus.stderr!]) s.on('data', (b: Buffer) => (promLog += b.toString()));
    await gw.until(async () => (await nsHttpGet(env.NS_HOST, `http://${PROMETHEUS}/-/ready`).catch(() => null))?.status === 200, 'prometheus ready', 30_000, 250);
  }, 120_000);

  afterAll(async () => {
    if (prometheus) {
      killGroup(prometheus, 'SIGKILL');
      await waitExit(prometheus, 5_000).catch(() => undefined);
    }
    if (promDir) rmSync(promDir, { recursive: true, force: true });
    await gw?.cleanup();
    await labDown(PREFIX);
  }, 60_000);

  it('Prometheus scrapes the gateway without an error, and its numbers are those of status.json', async () => {
    const target = await gw.until(async () => {
      const r = JSON.parse((await nsHttpGet(env.NS_HOST, `http://${PROMETHEUS}/api/v1/targets`)).body) as {
        data: { activeTargets: { health: string; lastError: string; scrapeUrl: string }[] };
      };
      const t = r.data.activeTargets[0];
      return t && t.health !== 'unknown' ? t : null;
    }, 'the first scrape', 20_000, 250);
    expect(target).toEqual(expect.objectContaining({ health: 'up', lastError: '', scrapeUrl: `http://${env.GW_LAN_IP}:${METRICS_PORT}/metrics` }));

    // Packets to pod1 cross the tunnel to aws-1: its transmit counter moves by at least that many.
    const before = await gw.until(() => scalar('vxedge_peer_transmit_packets_total{peer="aws-1"}'), 'aws-1\'s transmit counter', 10_000, 250);
    const pings = await ping(env.NS_HOST, env.POD1_IP, { count: 20, intervalMs: 50 });
    expect(pings.received).toBe(20);
    await gw.until(async () => ((await scalar('vxedge_peer_transmit_packets_total{peer="aws-1"}')) ?? 0) >= before + 20, 'the pings counted', 15_000, 250);

    const status = (await gw.status())!;
    const up = await query('vxedge_peer_up');
    expect(up.map((s) => [s.metric.peer, s.value[1]]).sort()).toEqual(status.peers.map((p) => [p.name, p.state === 'up' ? '1' : '0']).sort());
    expect(up.every((s) => s.metric.job === 'vxedge' && s.metric.instance === `${env.GW_LAN_IP}:${METRICS_PORT}`)).toBe(true);
    expect(await scalar('vxedge_state{state="ok"}')).toBe(status.state === 'ok' ? 1 : 0);
    expect(await scalar(`vxedge_info{site="lab",node="edge-1",version="${status.version}"}`)).toBe(1);
    expect(await scalar(`vxedge_tunnel_info{device="${status.tunnel.device}",subnet="${env.GW_SUBNET}",public_endpoint="${status.tunnel.publicEndpoint}"}`)).toBe(1);
    // Prometheus's value is at most 1 s older than this status.json, which is at most 2 s old: the same within the pings' pace.
    const tx = Number(await scalar('vxedge_peer_transmit_packets_total{peer="aws-1"}'));
    const docTx = status.peers.find((p) => p.name === 'aws-1')!.txPackets;
    expect(Math.abs(tx - docTx)).toBeLessThan(20);
    expect(await scalar('count(vxedge_drops_total)')).toBe(18);
    expect(await scalar('vxedge_check_ok{check="metrics"}')).toBe(1);
    expect(status.checks.find((c) => c.name === 'metrics')).toEqual({ name: 'metrics', ok: true, detail: `serving Prometheus metrics at http://${env.GW_LAN_IP}:${METRICS_PORT}/metrics` });
    expect(await scalar('vxedge_memory_peak_resident_bytes')).toBeGreaterThan(20 * 2 ** 20);
    expect(await scalar('up{job="vxedge"}')).toBe(1);
  });

  it('promtool finds nothing to lint in what the gateway serves', async () => {
    const r = await nsHttpGet(env.NS_HOST, `http://${env.GW_LAN_IP}:${METRICS_PORT}/metrics`);
    expect(r.status).toBe(200);
    expect(r.body).toMatch(/^vxedge_peer_up\{peer="aws-2"\} 1$/m);
    const lint = await run(['promtool', 'check', 'metrics'], { input: r.body });
    expect({ code: lint.code, out: lint.stdout + lint.stderr }).toEqual({ code: 0, out: '' });
  });

  it('vxedge check: the port held by the running gateway is no fault; held by another program, it says which port and how to find the holder', async () => {
    const held = await checkCommand(env.NS_GW, gw.configFile, 'metrics');
    expect(held.line.replace(/ +/g, ' ')).toBe(
      `ok metrics ${env.GW_LAN_IP}:${METRICS_PORT} is held by this config's running gateway (pid ${(await gw.status())!.pid}), serving http://${env.GW_LAN_IP}:${METRICS_PORT}/metrics`,
    );
    // Another site file on the gateway's box, naming a port a program here listens on.
    const dir = mkdtempSync(path.join(tmpdir(), `${PREFIX}-check-`));
    const other = nsSpawn(env.NS_GW, ['timeout', '60', 'python3', '-c', 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1", 9475)); s.listen(); print("ready", flush=True); time.sleep(60)']);
    try {
      let out = '';
      other.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      await waitFor(() => out.includes('ready'), 10_000);
      const file = await writeLabConfig(env, dir, 'other.json', { extra: { metrics: { listen: 9475 } } });
      const busy = await checkCommand(env.NS_GW, file, 'metrics');
      expect(busy.line.replace(/ +/g, ' ')).toBe([
        'FAIL metrics cannot serve metrics on 127.0.0.1:9475: the port is in use',
        " fix: another program listens on TCP 9475 (`ss -ltnp 'sport = :9475'` names it): stop it, or choose another port in metrics.listen",
      ].join('\n'));
      expect(busy.code).toBe(1);
    } finally {
      killGroup(other, 'SIGKILL');
      await waitExit(other, 5_000).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
