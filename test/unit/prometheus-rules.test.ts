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
import { sampleHealth } from '../support/health-doc.js';

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
      renderMetrics(sampleHealth({
        mqtt: { enabled: true, connected: true, published: 0, lastError: null, queued: 0, reconnects: 0 },
        cluster: { source: 'etcd', connected: true, lastSync: null, nodes: 1, peers: 1, registered: true, error: null },
        memory: { rssMb: 1, peakMb: 1, heapUsedMb: 1, heapTotalMb: 1, externalMb: 1 },
      })).matchAll(/^# TYPE (\S+)/gm),
      (m) => m[1],
    ));
    const named = [...readFileSync(RULES, 'utf8').matchAll(/expr: .*/g)].flatMap((m) => [...m[0].matchAll(/\b(vxedge_[a-z_]+)/g)].map((n) => n[1]));
    expect(named.length).toBe(8);
    expect(named.filter((n) => !served.has(n))).toEqual([]);
  });
});
