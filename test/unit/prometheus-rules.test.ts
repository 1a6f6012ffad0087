// The alerting rules shipped for Prometheus (docs/prometheus/vxedge-alerts.yml), checked by
// Prometheus's own `promtool` (Debian's `prometheus`, which scripts/setup installs): the file
// loads, and its rule tests (test/fixtures/prometheus/vxedge-alerts.test.yml: series as two
// gateways' scrapes would give them) fire each alert where it should, not before its `for`,
// with its words. The metric names they use are checked against what the gateway serves.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { haveTool, skipUnless } from '../lab/harness.js';
import { renderMetrics } from '../../src/health/metrics.js';
import type { HealthDocument } from '../../src/health/document.js';

const ROOT = path.join(import.meta.dirname, '..', '..');
const RULES = path.join(ROOT, 'docs', 'prometheus', 'vxedge-alerts.yml');
const TESTS = path.join(ROOT, 'test', 'fixtures', 'prometheus', 'vxedge-alerts.test.yml');

const noPromtool = skipUnless(haveTool('promtool') ? null : 'promtool is not installed (Debian package prometheus)', 'promtool');

function promtool(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { cwd: path.dirname(TESTS), encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('docs/prometheus/vxedge-alerts.yml', () => {
  it.skipIf(noPromtool)('loads in Prometheus and passes its rule tests', () => {
    expect(promtool('check', 'rules', RULES)).toEqual({ code: 0, out: expect.stringContaining('SUCCESS: 9 rules found') });
    expect(promtool('test', 'rules', TESTS)).toEqual({ code: 0, out: expect.stringContaining('SUCCESS') });
  });

  it('names only metrics the gateway serves', () => {
    const served = new Set(Array.from(
      renderMetrics({
        site: 's', node: 'n', version: '0', ts: '2026-12-07T00:00:00Z', uptimeS: 1, state: 'ok',
        tunnel: { device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.9.0/24', vtepMac: '0e:00:00:00:00:01', localEndpoint: '192.0.2.1:8472', publicEndpoint: null },
        peers: [{ name: 'p', endpoint: '203.0.113.1:8472', subnet: '10.244.1.0/24', state: 'up', rttMs: 1, lossPct: 0, lastSeen: '2026-12-07T00:00:00Z', rxPackets: 0, txPackets: 0, rxBytes: 0, txBytes: 0, reason: null }],
        checks: [], pid: 1, drops: {},
        mqtt: { enabled: true, connected: true, published: 0, lastError: null, queued: 0, reconnects: 0 },
        cluster: { source: 'etcd', connected: true, lastSync: null, nodes: 1, peers: 1, registered: true, error: null },
        memory: { rssMb: 1, peakMb: 1, heapUsedMb: 1, heapTotalMb: 1, externalMb: 1 },
      } satisfies HealthDocument).matchAll(/^# TYPE (\S+)/gm),
      (m) => m[1],
    ));
    // vxedge_check_ok has no sample without checks; it is served with every document that has any.
    served.add('vxedge_check_ok');
    const named = [...readFileSync(RULES, 'utf8').matchAll(/expr: .*/g)].flatMap((m) => [...m[0].matchAll(/\b(vxedge_[a-z_]+)/g)].map((n) => n[1]));
    expect(named.length).toBe(8);
    expect(named.filter((n) => !served.has(n))).toEqual([]);
  });
});
