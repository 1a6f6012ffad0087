// metrics.webConfig against a real Prometheus (Debian's, Go's TLS and basic auth), in the lab:
//
//  pod1 -- aws1 [kernel flannel.1] --\                         /-- gw [vxedge, metrics over TLS on its LAN address]
//                                      inet -- nat (MASQUERADE + UDP 8472 forward)    |
//  pod2 -- aws2 [kernel flannel.1] --/                                               host [prometheus: three jobs]
//
// The gateway serves https:// with client certificates verified (RequireAndVerifyClientCert,
// a CA of the test's own) and basic auth, the password hashed by `vxedge password-hash`.
// Prometheus scrapes it three ways: with its certificate and the right password (up, and its
// numbers are status.json's), with the wrong password (down: 401), and without a certificate
// (down: the handshake refused). `vxedge check` says how the endpoint is protected, and the
// certificates check dates the web configuration's certificates.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { makePki } from '../support/kube-pki.mjs';
import { killGroup, labDown, labUp, nsHttpGet, nsSpawn, run, skipUnlessRoot, waitExit, type LabEnv } from './harness.js';
import { checkCommand, CLI, startGateway, type RunningGateway } from './vxedge.js';

const PREFIX = 'vxpt';
const METRICS_PORT = 9474;
const PROMETHEUS = '127.0.0.1:9090';
const PROMETHEUS_LIFETIME_S = 300;
const PASSWORD = 'scrape me, please';

interface Target {
  labels: { job: string };
  health: string;
  lastError: string;
  scrapeUrl: string;
}

describe.skipIf(skipUnlessRoot(['prometheus']))('metrics.webConfig: TLS, client certificates and basic auth, scraped by a real Prometheus', () => {
  let env: LabEnv;
  let gw: RunningGateway;
  let prometheus: ChildProcess;
  let dir: string;
  let promLog = '';

  /** Prometheus's HTTP API at `p`, its JSON. */
  async function api<T>(p: string): Promise<T> {
    return JSON.parse((await nsHttpGet(env.NS_HOST, `http://${PROMETHEUS}${p}`)).body) as T;
  }

  beforeAll(async () => {
    env = await labUp({ prefix: PREFIX });
    dir = mkdtempSync(path.join(tmpdir(), `${PREFIX}-web-`));
    const pki = makePki(path.join(dir, 'pki'), { ips: [env.GW_LAN_IP], clients: [{ cn: 'prometheus' }] });
    const hashed = await run(['node', CLI, 'password-hash'], { input: `${PASSWORD}\n` });
    expect(hashed.code, hashed.stderr).toBe(0);
    const webConfig = path.join(pki.dir, 'web.yml');
    writeFileSync(webConfig, [
      'tls_server_config:',
      '  cert_file: server.crt',
      '  key_file: server.key',
      '  client_ca_file: ca.crt',
      '  client_auth_type: RequireAndVerifyClientCert',
      'basic_auth_users:',
      `  prometheus: "${hashed.stdout.trim()}"`,
    ].join('\n'));
    gw = await startGateway(env, { extra: { metrics: { listen: `${env.GW_LAN_IP}:${METRICS_PORT}`, webConfig } } });
    gw.context = () => `\n--- prometheus ---\n${promLog.slice(-3000)}`;
    await gw.waitUp();

    const job = (name: string, tlsConfig: string, password: string) => [
      `  - job_name: ${name}`,
      '    scheme: https',
      `    tls_config: ${tlsConfig}`,
      `    basic_auth: { username: prometheus, password: "${password}" }`,
      `    static_configs: [{ targets: ["${env.GW_LAN_IP}:${METRICS_PORT}"] }]`,
    ];
    const withCert = `{ ca_file: ${pki.caFile}, cert_file: ${pki.clients.prometheus.certFile}, key_file: ${pki.clients.prometheus.keyFile} }`;
    const config = path.join(dir, 'prometheus.yml');
    writeFileSync(config, [
      'global: { scrape_interval: 1s, scrape_timeout: 1s }',
      'scrape_configs:',
      ...job('good', withCert, PASSWORD),
      ...job('wrong-password', withCert, 'guess'),
      ...job('no-certificate', `{ ca_file: ${pki.caFile} }`, PASSWORD),
    ].join('\n'));
    prometheus = nsSpawn(env.NS_HOST, [
      'timeout', String(PROMETHEUS_LIFETIME_S), 'prometheus', `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=${PROMETHEUS}`, '--log.level=warn',
    ]);
    for (const s of [prometheus.stdout!, prometheus.stderr!]) s.on('data', (b: Buffer) => (promLog += b.toString()));
    await gw.until(async () => (await api<{ status: string }>('/api/v1/status/buildinfo').catch(() => null))?.status === 'success', 'prometheus ready', 30_000, 250);
  }, 120_000);

  afterAll(async () => {
    if (prometheus) {
      killGroup(prometheus, 'SIGKILL');
      await waitExit(prometheus, 5_000).catch(() => undefined);
    }
    await gw?.cleanup();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await labDown(PREFIX);
  }, 60_000);

  it('with its certificate and the password Prometheus is let in; a wrong password gets 401, no certificate no connection', async () => {
    const targets = await gw.until(async () => {
      const r = await api<{ data: { activeTargets: Target[] } }>('/api/v1/targets');
      const t = r.data.activeTargets;
      return t.length === 3 && t.every((x) => x.health !== 'unknown') ? Object.fromEntries(t.map((x) => [x.labels.job, x])) : null;
    }, 'the first scrape of each job', 20_000, 250);
    expect(targets.good).toEqual(expect.objectContaining({ health: 'up', lastError: '', scrapeUrl: `https://${env.GW_LAN_IP}:${METRICS_PORT}/metrics` }));
    expect(targets['wrong-password'].health).toBe('down');
    expect(targets['wrong-password'].lastError).toMatch(/401 Unauthorized/);
    expect(targets['no-certificate'].health).toBe('down');
    expect(targets['no-certificate'].lastError).toMatch(/certificate required|remote error: tls|EOF|connection reset/);

    const status = (await gw.status())!;
    const up = (await api<{ data: { result: { metric: Record<string, string>; value: [number, string] }[] } }>(
      `/api/v1/query?query=${encodeURIComponent('vxedge_peer_up{job="good"}')}`)).data.result;
    expect(up.map((s) => [s.metric.peer, s.value[1]]).sort()).toEqual(status.peers.map((p) => [p.name, p.state === 'up' ? '1' : '0']).sort());
    expect(status.checks.find((c) => c.name === 'metrics')).toEqual({
      name: 'metrics', ok: true,
      detail: `serving Prometheus metrics at https://${env.GW_LAN_IP}:${METRICS_PORT}/metrics (TLS, client certificates verified, basic auth (1 user))`,
    });
    // The server's certificate and the client CA are dated with the site's others.
    expect(status.checks.find((c) => c.name === 'certificates')?.detail).toMatch(/^(cert|client_ca)_file of metrics\.webConfig \S+ ends on .* \(2 certificates, the first to end\)$/);
  });

  it('vxedge check beside the gateway: the port is its own, and how it is protected', async () => {
    const held = await checkCommand(env.NS_GW, gw.configFile, 'metrics');
    expect(held.line.replace(/ +/g, ' ')).toBe(
      `ok metrics ${env.GW_LAN_IP}:${METRICS_PORT} is held by this config's running gateway (pid ${(await gw.status())!.pid}), ` +
      `serving https://${env.GW_LAN_IP}:${METRICS_PORT}/metrics (TLS, client certificates verified, basic auth (1 user))`,
    );
  });
});
