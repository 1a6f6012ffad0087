// The health document as Prometheus metrics (health/metrics.ts), and the endpoint that serves
// them (health/metrics-server.ts) on loopback. Prometheus itself parses them in the lab
// (test/lab/metrics.test.ts); here each number is checked against the document it came from,
// with a parser of the text format that follows its grammar.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import http from 'node:http';
import net from 'node:net';
import { gunzipSync } from 'node:zlib';
import { DROP_REASONS } from '../../src/dataplane/drops.js';
import type { HealthDocument } from '../../src/health/document.js';
import { metricChunks, renderMetrics } from '../../src/health/metrics.js';
import { MetricsServer } from '../../src/health/metrics-server.js';
import { parseListen } from '../../src/config/formats.js';
import { CaptureLog } from '../support/capture-log.js';
import { freePort } from '../support/free-port.js';
import { sampleHealth as doc } from '../support/health-doc.js';

interface Family {
  help: string;
  type: string;
  samples: { labels: Record<string, string>; value: number }[];
}

/**
 * The text format 0.0.4 as Prometheus reads it: HELP and TYPE once per family and before its
 * samples, then `name{label="value",...} value`, label values with \\, \" and \n escaped.
 * Throws on any line that does not fit.
 */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  expect(text.endsWith('\n')).toBe(true);
  let current: string | null = null;
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      if (families.has(m[1])) throw new Error(`second HELP for ${m[1]}`);
      families.set(m[1], { help: m[2].replace(/\\n/g, '\n').replace(/\\\\/g, '\\'), type: '', samples: [] });
      current = m[1];
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter)$/.exec(line);
    if (m) {
      if (m[1] !== current || families.get(current)!.type) throw new Error(`TYPE out of place: ${line}`);
      families.get(current)!.type = m[2];
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    if (m[1] !== current) throw new Error(`sample of ${m[1]} outside its family ${current}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value ${m[3]}`);
    families.get(current)!.samples.push({ labels, value });
  }
  return families;
}

/** The value of the one sample of `name` whose labels include `labels`. */
function value(f: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = f.get(name)?.samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  expect(hits.length).toBeLessThanOrEqual(1);
  return hits[0]?.value;
}

describe('renderMetrics (the health document as Prometheus metrics)', () => {
  it('carries the document\'s numbers under Prometheus names, counters as _total, in base units', () => {
    const f = parseExposition(renderMetrics(doc()));
    expect(value(f, 'vxedge_info', { version: '0.1.0', site: 'lab', node: 'edge-1' })).toBe(1);
    expect(f.get('vxedge_state')!.samples.map((s) => [s.labels.state, s.value])).toEqual([['ok', 0], ['degraded', 1], ['down', 0]]);
    expect(value(f, 'vxedge_uptime_seconds')).toBe(3600);
    expect(value(f, 'vxedge_health_timestamp_seconds')).toBe(Date.parse('2026-12-07T12:00:00Z') / 1000);
    expect(value(f, 'vxedge_tunnel_info', { device: 'flannel.1', mode: 'tun', vni: '1', public_endpoint: '198.51.100.7:8472' })).toBe(1);
    expect(value(f, 'vxedge_tunnel_mtu_bytes')).toBe(1450);
    expect(value(f, 'vxedge_peers')).toBe(2);
    expect(value(f, 'vxedge_peer_info', { peer: 'aws-1', subnet: '10.244.1.0/24', endpoint: '203.0.113.10:8472' })).toBe(1);
    expect(value(f, 'vxedge_peer_up', { peer: 'aws-1' })).toBe(1);
    expect(value(f, 'vxedge_peer_up', { peer: 'aws-2' })).toBe(0);
    expect(value(f, 'vxedge_peer_state', { peer: 'aws-2', state: 'unknown' })).toBe(1);
    expect(value(f, 'vxedge_peer_state', { peer: 'aws-2', state: 'down' })).toBe(0);
    expect(value(f, 'vxedge_peer_rtt_seconds', { peer: 'aws-1' })).toBe(0.00125);
    expect(value(f, 'vxedge_peer_loss_ratio', { peer: 'aws-1' })).toBe(0.025);
    expect(value(f, 'vxedge_peer_last_seen_timestamp_seconds', { peer: 'aws-1' })).toBe(Date.parse('2026-12-07T11:59:58Z') / 1000);
    expect(value(f, 'vxedge_peer_transmit_bytes_total', { peer: 'aws-1' })).toBe(3 * 2 ** 40);
    expect(value(f, 'vxedge_peer_receive_packets_total', { peer: 'aws-1' })).toBe(10);
    expect(value(f, 'vxedge_peer_transmit_packets_total', { peer: 'aws-2' })).toBe(40);
    expect(value(f, 'vxedge_check_ok', { check: 'public_endpoint' })).toBe(0);
    expect(value(f, 'vxedge_check_ok', { check: 'ip_forward' })).toBe(1);
    for (const [name, fam] of f) {
      expect(fam.type === 'counter', name).toBe(name.endsWith('_total'));
      expect(fam.help, name).not.toBe('');
    }
  });

  it('leaves out what is not known rather than saying 0 (a peer not answered yet has no RTT, loss or last sign of life)', () => {
    const f = parseExposition(renderMetrics(doc()));
    for (const name of ['vxedge_peer_rtt_seconds', 'vxedge_peer_loss_ratio', 'vxedge_peer_last_seen_timestamp_seconds']) {
      expect(f.get(name)!.samples.map((s) => s.labels.peer), name).toEqual(['aws-1']);
    }
  });

  it('counts every drop reason, 0 for those that did not happen, so that rate() sees the first drop', () => {
    const f = parseExposition(renderMetrics(doc()));
    expect(f.get('vxedge_drops_total')!.samples.map((s) => s.labels.reason)).toEqual([...DROP_REASONS]);
    expect(value(f, 'vxedge_drops_total', { reason: 'noPeer' })).toBe(7);
    expect(value(f, 'vxedge_drops_total', { reason: 'deviceQueue' })).toBe(3);
    expect(value(f, 'vxedge_drops_total', { reason: 'wrongVni' })).toBe(0);
  });

  it('has the MQTT, cluster, port mapping, reload and memory families only where the document has those parts', () => {
    const bare = parseExposition(renderMetrics(doc()));
    for (const name of ['vxedge_mqtt_connected', 'vxedge_cluster_connected', 'vxedge_port_mapping_up', 'vxedge_reload_refused', 'process_resident_memory_bytes']) {
      expect(bare.has(name), name).toBe(false);
    }
    const full = parseExposition(renderMetrics(doc({
      mqtt: { enabled: true, connected: true, published: 7, lastError: null, queued: 0, reconnects: 1 },
      cluster: { source: 'kubernetes', connected: false, lastSync: '2026-12-07T11:00:00.000Z', nodes: 500, peers: 498, registered: true, error: 'x', skipped: [{ name: 'n1', why: 'no public-ip' }] },
      nat: {
        portMapping: {
          protocol: 'pcp', external: '198.51.100.7:8472', lifetime: 7200, expires: '2026-12-07T14:00:00.000Z', error: null, mode: 'auto', state: 'mapped',
          gateway: '192.168.50.1', routerAddress: '198.51.100.7', tried: [], renewedAt: null, retryAt: null, routerRestarts: 2, badAnswers: { pcp: 0, natpmp: 0, upnp: 0 }, stunAgrees: null,
        },
      },
      reload: { at: '2026-12-07T11:30:00.000Z', applied: [], restartNeeded: ['runDir'], error: 'invalid' },
      memory: { rssMb: 50.5, peakMb: 52.7, heapUsedMb: 8, heapTotalMb: 10, externalMb: 1 },
    })));
    expect(value(full, 'vxedge_mqtt_connected')).toBe(1);
    expect(value(full, 'vxedge_mqtt_published_total')).toBe(7);
    expect(value(full, 'vxedge_mqtt_reconnects_total')).toBe(1);
    expect(value(full, 'vxedge_cluster_connected', { source: 'kubernetes' })).toBe(0);
    expect(value(full, 'vxedge_cluster_nodes')).toBe(500);
    expect(value(full, 'vxedge_cluster_skipped_nodes')).toBe(1);
    expect(value(full, 'vxedge_cluster_registered')).toBe(1);
    expect(value(full, 'vxedge_cluster_last_sync_timestamp_seconds')).toBe(Date.parse('2026-12-07T11:00:00Z') / 1000);
    expect(value(full, 'vxedge_port_mapping_up', { protocol: 'pcp' })).toBe(1);
    expect(value(full, 'vxedge_port_mapping_expiry_timestamp_seconds')).toBe(Date.parse('2026-12-07T14:00:00Z') / 1000);
    expect(value(full, 'vxedge_port_mapping_router_restarts_total')).toBe(2);
    expect(value(full, 'vxedge_reload_refused')).toBe(1);
    expect(value(full, 'vxedge_reload_restart_needed')).toBe(1);
    expect(value(full, 'process_resident_memory_bytes')).toBe(Math.round(50.5 * 2 ** 20));
    expect(value(full, 'vxedge_memory_peak_resident_bytes')).toBe(Math.round(52.7 * 2 ** 20));
    // MQTT configured off: no MQTT family, rather than a broker forever "not connected".
    expect(parseExposition(renderMetrics(doc({ mqtt: { enabled: false, connected: false, published: 0, lastError: null, queued: 0, reconnects: 0 } }))).has('vxedge_mqtt_connected')).toBe(false);
  });

  it('comes in pieces of at most one family of the peers, which the server writes with the event loop free between them', () => {
    const many = doc({ peers: Array.from({ length: 500 }, (_, i) => ({ ...doc().peers[0], name: `node-${i}` })) });
    const pieces = [...metricChunks(many)];
    expect(pieces.join('')).toBe(renderMetrics(many));
    // peer_info, peer_state (three lines a peer) and the eight families of PEER_FAMILIES each on their own
    expect(pieces.filter((p) => p.split('\n').length > 500)).toHaveLength(10);
    expect(Math.max(...pieces.map((p) => p.split('\n').length))).toBeLessThanOrEqual(3 * 500 + 3);
  });

  it('writes any peer or check name so that it reads back the same (quotes, backslashes, new lines, any Unicode)', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }), fc.string({ maxLength: 20, unit: 'binary' }), (peer, check) => {
        const d = doc();
        d.peers = [{ ...d.peers[0], name: peer }];
        d.checks = [{ name: check, ok: true, detail: '' }];
        const f = parseExposition(renderMetrics(d));
        expect(f.get('vxedge_peer_up')!.samples).toEqual([{ labels: { peer }, value: 1 }]);
        expect(f.get('vxedge_check_ok')!.samples).toEqual([{ labels: { check }, value: 1 }]);
      }),
    );
  });
});

describe('metrics.listen', () => {
  it('takes HOST:PORT with an IP address, [IPv6]:PORT, or a port alone (127.0.0.1), a YAML number too', () => {
    expect(parseListen('0.0.0.0:9474')).toEqual({ host: '0.0.0.0', port: 9474 });
    expect(parseListen('[::1]:9474')).toEqual({ host: '::1', port: 9474 });
    expect(parseListen('9474')).toEqual({ host: '127.0.0.1', port: 9474 });
    expect(parseListen(9474)).toEqual({ host: '127.0.0.1', port: 9474 });
  });

  it('says what is wrong with anything else, and what it takes', () => {
    expect(() => parseListen('http://127.0.0.1:9474/metrics')).toThrow(/is not an address to listen on \(an address to listen on, not a URL\); expected HOST:PORT/);
    expect(() => parseListen('gw.example:9474')).toThrow(/\(an IP address, not a host name: the one to listen on\)/);
    expect(() => parseListen('300.1.1.1:9474')).toThrow(/"300.1.1.1" is not an IP address/);
    expect(() => parseListen('[fe80::zz]:9474')).toThrow(/is not an address to listen on/);
    expect(() => parseListen('127.0.0.1:70000')).toThrow(/port 70000 is out of range 1..65535/);
    expect(() => parseListen('127.0.0.1:0')).toThrow(/port 0 is out of range/);
    expect(() => parseListen('::1:9474')).toThrow(/is not an address to listen on/);
  });
});

/** GET (or another method) on loopback; the body un-gzipped when it came gzipped. */
function request(port: number, path: string, o: { method?: string; gzip?: boolean } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, method: o.method ?? 'GET', headers: o.gzip ? { 'Accept-Encoding': 'gzip' } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject); // a page cut halfway ("aborted")
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        const body = res.headers['content-encoding'] === 'gzip' ? gunzipSync(raw).toString() : raw.toString();
        resolve({ status: res.statusCode!, headers: res.headers, body });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A MetricsServer on a free loopback port, started, for `fn`; closed after it. */
async function serving(fn: (m: MetricsServer, port: number, log: CaptureLog) => Promise<void>): Promise<number> {
  const port = await freePort();
  const log = new CaptureLog();
  const m = new MetricsServer({ listen: { host: '127.0.0.1', port }, log });
  await m.start();
  try {
    await fn(m, port, log);
  } finally {
    await m.close();
  }
  return port;
}

describe('MetricsServer (GET /metrics on loopback)', () => {
  it('serves the latest document, gzipped when asked, after a 503 while there is none yet', async () => {
    const port = await serving(async (m, port, log) => {
      expect(m.check()).toEqual({ name: 'metrics', ok: true, detail: `serving Prometheus metrics at http://127.0.0.1:${port}/metrics` });
      const early = await request(port, '/metrics');
      expect(early.status).toBe(503);
      expect(early.headers['retry-after']).toBe('2');
      m.update(doc());
      const plain = await request(port, '/metrics');
      expect(plain.status).toBe(200);
      expect(plain.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
      expect(plain.body).toBe(renderMetrics(doc()));
      m.update(doc({ state: 'ok' }));
      const zipped = await request(port, '/metrics?x=1', { gzip: true });
      expect(zipped.headers['content-encoding']).toBe('gzip');
      expect(zipped.body).toBe(renderMetrics(doc({ state: 'ok' })));
      const head = await request(port, '/metrics', { method: 'HEAD' });
      expect([head.status, head.body, head.headers['content-type']]).toEqual([200, '', 'text/plain; version=0.0.4; charset=utf-8']);
      expect((await request(port, '/')).body).toMatch(/at \/metrics/);
      expect((await request(port, '/other')).status).toBe(404);
      const post = await request(port, '/metrics', { method: 'POST' });
      expect([post.status, post.headers.allow]).toEqual([405, 'GET, HEAD']);
      expect(log.lines.filter((e) => e.msg === 'metrics scraped')).toHaveLength(1);
    });
    await expect(request(port, '/metrics')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('a port in use: the check fails saying so and how to find the holder, once in the log; taken when it is free again', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as net.AddressInfo).port;
    const log = new CaptureLog();
    const m = new MetricsServer({ listen: { host: '127.0.0.1', port }, log });
    try {
      await m.start();
      await m.start();
      expect(m.check()).toEqual({
        name: 'metrics', ok: false, detail: `cannot serve metrics on 127.0.0.1:${port}: the port is in use`,
        fix: `another program listens on TCP ${port} (\`ss -ltnp 'sport = :${port}'\` names it): stop it, or choose another port in metrics.listen`,
      });
      expect(log.lines.filter((e) => e.level === 'warn')).toHaveLength(1);
      await new Promise((r) => holder.close(r));
      await m.start();
      expect(m.check().ok).toBe(true);
      expect(log.lines.map((e) => e.msg)).toContain('metrics served again');
      m.update(doc());
      expect((await request(port, '/metrics')).status).toBe(200);
    } finally {
      holder.close();
      await m.close();
    }
  });

  it('a document that cannot be rendered cuts the page (the scraper counts the scrape failed) and is logged, never the gateway\'s end', async () => {
    await serving(async (m, port, log) => {
      m.update({ ...doc(), peers: null } as unknown as HealthDocument);
      await expect(request(port, '/metrics')).rejects.toThrow(/aborted|socket hang up/);
      expect(log.lines.filter((l) => l.msg === 'metrics scrape failed')).toHaveLength(1);
      m.update(doc());
      expect((await request(port, '/metrics')).body).toBe(renderMetrics(doc()));
    });
  });

  it('a scraper that stops reading halfway: a stop cuts it and ends its page (nothing left waiting for a drain that never comes)', async () => {
    const port = await freePort();
    const m = new MetricsServer({ listen: { host: '127.0.0.1', port }, log: new CaptureLog() });
    await m.start();
    // ~15 MB of text, more than loopback's socket buffers hold (a few MB), asked for and never read.
    m.update(doc({ peers: Array.from({ length: 15_000 }, (_, i) => ({ ...doc().peers[0], name: `node-${i}.eu-west-1.compute.internal` })) }));
    const client = net.connect(port, '127.0.0.1');
    const firstBytes = new Promise<void>((r) => client.once('data', () => (client.pause(), r())));
    client.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
    await firstBytes;
    await new Promise((r) => setTimeout(r, 100)); // the server fills the buffers and waits for a drain
    const closed = m.close().then(() => 'closed');
    expect(await Promise.race([closed, new Promise((r) => setTimeout(() => r('still waiting'), 5_000))])).toBe('closed');
    client.destroy();
  });

  it('an address this machine does not have: says so, and what to use instead', async () => {
    const m = new MetricsServer({ listen: { host: '192.0.2.77', port: 9474 }, log: new CaptureLog() });
    await m.start();
    expect(m.check()).toEqual({
      name: 'metrics', ok: false, detail: 'cannot serve metrics on 192.0.2.77:9474: this machine has no address 192.0.2.77',
      fix: 'use an address of this machine in metrics.listen (`ip -br addr`), 0.0.0.0 for all of them, or 127.0.0.1',
    });
    await m.close();
  });
});
