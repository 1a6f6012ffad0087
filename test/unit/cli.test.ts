// The command line as an operator meets it: exit codes of the contract, one clear
// error block naming the bad key, never a stack trace for a user's mistake.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { CLI, ensureBuilt } from '../lab/vxedge.js';
import { loadConfig } from '../../src/config/index.js';

const FIX = path.join(import.meta.dirname, '..', 'fixtures');

function vxedge(args: string[], input?: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync('node', [CLI, ...args], { input, encoding: 'utf8', env: { PATH: process.env.PATH, ...env }, timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function noStack(s: string) {
  expect(s).not.toMatch(/\n\s+at .+\(.+:\d+:\d+\)/);
}

beforeAll(() => ensureBuilt());

/** Every directory this file makes lives in here, removed at the end. */
const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-cli-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('vxedge check with invalid configs', () => {
  const dir = mkdtempSync(path.join(TMP, 'check-'));
  const file = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const table: [string, string, string[]][] = [
    ['typo.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.100.0/24 }\nunderlay: { prot: 8472 }\n', ['underlay.prot', 'did you mean "underlay.port"']],
    ['missing-site.yaml', 'node: e1\noverlay: { subnet: 10.244.100.0/24 }\n', ['site']],
    ['missing-subnet.json', '{"site":"lab","node":"e1"}', ['overlay.subnet']],
    ['outside.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.245.0.0/24 }\n', ['overlay.subnet', 'overlay.network']],
    ['overlap.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.1.0/24 }\npeers: [{ name: a, publicIp: 203.0.113.10, subnet: 10.244.1.0/24, vtepMac: "0a:bb:00:00:01:00" }]\n', ['peers[0].subnet']],
    ['badmac.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.100.0/24 }\npeers: [{ name: a, publicIp: 203.0.113.10, subnet: 10.244.1.0/24, vtepMac: "zz:bb" }]\n', ['peers[0].vtepMac']],
    ['mtu.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.100.0/24 }\nvxlan: { mtu: 100000 }\n', ['vxlan.mtu']],
    ['vni.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.100.0/24 }\nvxlan: { vni: 16777216 }\n', ['vxlan.vni']],
    ['duration.yaml', 'site: lab\nnode: e1\noverlay: { subnet: 10.244.100.0/24 }\nkeepalive: { interval: soon }\n', ['keepalive.interval']],
    ['syntax.yaml', 'site: lab\n  node: [\n', ['syntax.yaml']],
    ['syntax.json', '{"site": "lab",', ['syntax.json']],
    ['empty.yaml', '', ['empty.yaml']],
    ['ext.toml', 'site = "lab"', ['.toml']],
  ];
  for (const [name, text, fragments] of table) {
    it(`${name}: exit 2 naming ${fragments[0]}`, () => {
      const r = vxedge(['check', '-c', file(name, text)]);
      expect(r.code).toBe(2);
      for (const f of fragments) expect(r.stderr).toContain(f);
      expect(r.stdout).toBe('');
      noStack(r.stderr);
    });
  }

  it('reports every problem of a file at once', () => {
    const r = vxedge(['check', '-c', path.join(FIX, 'config', 'invalid-many.yaml')]);
    expect(r.code).toBe(2);
    for (const k of ['underlay.prot', 'site', 'vxlan.vni', 'vxlan.mtu', 'overlay.mode', 'overlay.subnet', 'keepalive.timeout', 'mqtt.url']) {
      expect(r.stderr).toContain(`- ${k}:`);
    }
    expect(r.stderr).not.toContain('hunter2');
  });

  it('a missing file is a config error, not a crash', () => {
    const r = vxedge(['run', '-c', path.join(dir, 'nope.yaml')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nope.yaml');
    noStack(r.stderr);
  });

  it('environment overrides are validated and named', () => {
    const r = vxedge(['check', '-c', path.join(FIX, 'config', 'valid-minimal.yaml')], undefined, { VXEDGE_UNDERLAY_PORT: 'eighty' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('VXEDGE_UNDERLAY_PORT');
  });

  it('unknown commands and options exit 2 with the usage', () => {
    expect(vxedge(['frobnicate']).code).toBe(2);
    const r = vxedge(['run', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage');
  });
});

describe('vxedge --version, --help, status', () => {
  it('prints the version', () => {
    const r = vxedge(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^vxedge \d+\.\d+\.\d+/);
  });
  it('prints help', () => {
    const r = vxedge(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['run', 'check', 'status', 'manifest', 'peers']) expect(r.stdout).toContain(`vxedge ${c}`);
  });
  it('status exits 1 when no gateway runs', () => {
    const r = vxedge(['status', '--run-dir', mkdtempSync(path.join(TMP, 'run-'))]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no gateway is running');
  });
});

describe('vxedge manifest', () => {
  const dir = mkdtempSync(path.join(TMP, 'manifest-'));
  const cfg = (extra: string) => {
    const f = path.join(dir, `site-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `site: lab\nnode: edge-1\nstateDir: ${dir}/state\nrunDir: ${dir}/run\noverlay: { subnet: 10.244.100.0/24 }\n${extra}`);
    return f;
  };

  it('prints the Node object flannel nodes will program a route for', () => {
    const r = vxedge(['manifest', '-c', cfg('underlay: { publicIp: 198.51.100.2 }\nvxlan: { vtepMac: "0e:5c:aa:00:00:64" }\n')]);
    expect(r.code).toBe(0);
    const m = parseYaml(r.stdout);
    expect(m.kind).toBe('Node');
    expect(m.metadata.name).toBe('vxedge-lab-edge-1');
    expect(m.spec.podCIDR).toBe('10.244.100.0/24');
    const a = m.metadata.annotations;
    expect(a['flannel.alpha.coreos.com/kube-subnet-manager']).toBe('true');
    expect(a['flannel.alpha.coreos.com/backend-type']).toBe('vxlan');
    expect(JSON.parse(a['flannel.alpha.coreos.com/backend-data'])).toEqual({ VNI: 1, VtepMAC: '0e:5c:aa:00:00:64' });
    expect(a['flannel.alpha.coreos.com/public-ip']).toBe('198.51.100.2');
  });

  it('keeps the generated VTEP MAC stable across runs, and --json works', () => {
    const f = cfg('underlay: { publicIp: 198.51.100.2 }\n');
    const a = JSON.parse(vxedge(['manifest', '-c', f, '--json']).stdout);
    const b = JSON.parse(vxedge(['manifest', '-c', f, '--json']).stdout);
    const mac = JSON.parse(a.metadata.annotations['flannel.alpha.coreos.com/backend-data']).VtepMAC;
    expect(mac).toMatch(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/);
    expect(b).toEqual(a);
  });

  it('exits 2 when the public IP is unknown', () => {
    const r = vxedge(['manifest', '-c', cfg('')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('underlay.publicIp');
  });
});

describe('vxedge peers', () => {
  const nodes = path.join(FIX, 'kubectl', 'nodes-eks-flannel.json');

  it('turns kubectl get nodes -o json into peers, naming every skipped node', () => {
    const r = vxedge(['peers', nodes]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      { name: 'ip-172-31-20-11.eu-west-1.compute.internal', publicIp: '203.0.113.10', subnet: '10.244.1.0/24', vtepMac: 'e6:7c:02:8e:e8:7e' },
      { name: 'ip-172-31-21-12.eu-west-1.compute.internal', publicIp: '203.0.113.20', subnet: '10.244.2.0/24', vtepMac: '0a:bb:00:00:02:00' },
      { name: 'vxedge-lab-edge-1', publicIp: '198.51.100.2', subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:64' },
    ]);
    expect(r.stderr).toContain('skipped ip-172-31-22-13.eu-west-1.compute.internal: backend-type is "wireguard"');
    expect(r.stderr).toContain('skipped ip-172-31-23-14.eu-west-1.compute.internal: annotation');
    expect(r.stderr).toContain('skipped f5-bigip-vxlan: backend-data is not valid JSON');
  });

  it('reads stdin and leaves out the gateway itself when given its config', () => {
    const { readFileSync } = require('node:fs') as typeof import('node:fs');
    const r = vxedge(['peers', '-c', path.join(FIX, 'config', 'valid-minimal.yaml')], readFileSync(nodes, 'utf8'));
    expect(r.code).toBe(0);
    const names = JSON.parse(r.stdout).map((p: { name: string }) => p.name);
    expect(names).not.toContain('vxedge-lab-edge-1');
    expect(r.stderr).toContain('skipped vxedge-lab-edge-1: this gateway itself');
  });

  it('the output is a valid peers list for the config', () => {
    const r = vxedge(['peers', nodes]);
    const dir = mkdtempSync(path.join(TMP, 'peers-'));
    const f = path.join(dir, 'site.json');
    const peers = JSON.parse(r.stdout).filter((p: { name: string }) => !p.name.startsWith('vxedge-'));
    writeFileSync(f, JSON.stringify({ site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, underlay: { publicIp: '198.51.100.2' }, peers }));
    // Loaded in-process: `vxedge check` would go on to the preflight, which binds the port and
    // asks the host's router for port mappings, not this test's business.
    const cfg = loadConfig(f, {});
    expect(cfg.peers.map((p) => p.name)).toEqual(peers.map((p: { name: string }) => p.name));
    expect(cfg.peers.length).toBeGreaterThan(0);
  });

  it('exits 2 on unreadable input', () => {
    expect(vxedge(['peers'], 'not json').code).toBe(2);
    expect(vxedge(['peers', '/nonexistent/nodes.json']).code).toBe(2);
  });
});

describe('vxedge rbac', () => {
  const dir = mkdtempSync(path.join(TMP, 'rbac-'));

  it('prints least privilege for the site\'s own Node: create/list/watch nodes, the rest only by name', () => {
    const f = path.join(dir, 'site.yaml');
    writeFileSync(f, `site: lab\nnode: edge-1\noverlay: { subnet: 10.244.100.0/24 }\ncluster: { source: kubernetes }\n`);
    const r = vxedge(['rbac', '-c', f]);
    expect(r.code).toBe(0);
    const docs = r.stdout.split(/^---$/m).map((d) => parseYaml(d));
    expect(docs.map((d) => d.kind)).toEqual(['ServiceAccount', 'Secret', 'ClusterRole', 'ClusterRoleBinding']);
    const role = docs[2];
    expect(role.rules).toEqual([
      { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch', 'create'] },
      { apiGroups: [''], resources: ['nodes'], resourceNames: ['vxedge-lab-edge-1'], verbs: ['get', 'patch', 'update', 'delete'] },
    ]);
    expect(docs[3].subjects[0].name).toBe(docs[0].metadata.name);
  });

  it('follows cluster.kubernetes.nodeName, or --node-name without a config, and says what it needs otherwise', () => {
    const f = path.join(dir, 'named.yaml');
    writeFileSync(f, `site: lab\nnode: edge-1\noverlay: { subnet: 10.244.100.0/24 }\ncluster: { kubernetes: { nodeName: plant-7-gw } }\n`);
    const names = (out: string) => parseYaml(out.split(/^---$/m)[2]).rules[1].resourceNames;
    expect(names(vxedge(['rbac', '-c', f]).stdout)).toEqual(['plant-7-gw']);
    expect(names(vxedge(['rbac', '--node-name', 'other-gw']).stdout)).toEqual(['other-gw']);
    const r = vxedge(['rbac']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('-c FILE');
  });
});
