// The alerting rules shipped for Prometheus (docs/prometheus/vxedge-alerts.yml), checked by
// Prometheus's own `promtool` (Debian's `prometheus`, which scripts/setup installs): the file
// loads, and its rule tests (test/fixtures/prometheus/vxedge-alerts.test.yml: series as two
// gateways' scrapes would give them) fire each alert where it should, not before its `for`,
// with its words. The metric names they use are checked against what the gateway serves.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { haveTool, skipUnless } from '../lab/harness.js';
import { renderMetrics } from '../../src/health/metrics.js';
import { sampleHealth } from '../support/health-doc.js';

const ROOT = path.join(import.meta.dirname, '..', '..');
const RULES = path.join(ROOT, 'docs', 'prometheus', 'vxedge-alerts.yml');
const TESTS = path.join(ROOT, 'test', 'fixtures', 'prometheus', 'vxedge-alerts.test.yml');
const SCRAPE = path.join(ROOT, 'docs', 'prometheus', 'vxedge-scrape.yml');

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

describe('docs/prometheus/vxedge-scrape.yml', () => {
  it.skipIf(noPromtool)('loads in Prometheus with the rules beside it (its files moved to a directory of the test\'s)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vx-scrape-'));
    try {
      // promtool reads the files a config names: the example's, made here (empty PEMs load as config).
      const text = readFileSync(SCRAPE, 'utf8').replaceAll('/etc/prometheus/vxedge/', `${dir}/`);
      const named = [...text.matchAll(new RegExp(`${dir}/([\\w.-]+)`, 'g'))].map((m) => m[1]);
      expect(new Set(named)).toEqual(new Set(['gateways-ca.crt', 'scraper.crt', 'scraper.key', 'password', 'gateways.yml']));
      for (const f of named) writeFileSync(path.join(dir, f), f === 'gateways.yml' ? '- targets: ["192.0.2.10:9474"]\n' : '');
      writeFileSync(path.join(dir, 'prometheus.yml'), `rule_files: [${RULES}]\n${text}`);
      const r = promtool('check', 'config', path.join(dir, 'prometheus.yml'));
      expect(r).toEqual({ code: 0, out: expect.stringContaining('SUCCESS: 1 rule files found') });
      // The job is the one the rules' `up{job="vxedge"}` looks for.
      expect(text).toMatch(/job_name: vxedge\n/);
      expect(readFileSync(RULES, 'utf8')).toContain('up{job="vxedge"}');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
