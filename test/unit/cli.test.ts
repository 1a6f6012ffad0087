// The command line as an operator meets it: exit codes of the contract, one clear
// error block naming the bad key, never a stack trace for a user's mistake.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

  it('check --json of a file that does not load: the same block on stderr, exit 2, and one document naming every key on stdout', () => {
    const r = vxedge(['check', '-c', path.join(FIX, 'config', 'invalid-many.yaml'), '--json']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('- underlay.prot:');
    const doc = JSON.parse(r.stdout) as { ok: boolean; checks: { name: string; ok: boolean; detail: string; fix: string }[] };
    expect(doc.ok).toBe(false);
    expect(doc.checks).toHaveLength(1);
    expect(doc.checks[0]).toMatchObject({ name: 'config', ok: false, fix: 'correct each key named, then run vxedge check -c again' });
    expect(doc.checks[0]!.detail).toMatch(/^invalid config \S+invalid-many\.yaml \(\d+ problems\): underlay\.prot: /);
    expect(r.stdout).not.toContain('hunter2');
    noStack(r.stderr);
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
    expect(r.stderr).toMatch(/^vxedge: unknown option --bogus\n/);
    expect(r.stderr).toContain('Usage');
  });

  it('an argument or option the command would ignore is refused (exit 2), before anything runs', () => {
    const f = path.join(FIX, 'config', 'valid-minimal.yaml');
    for (const [args, says] of [
      [['rbac', '-c', f, 'extra-arg'], 'rbac takes no arguments, not "extra-arg"'],
      [['check', '-c', f, '--etcd'], 'check does not take --etcd'],
      [['run', '-c', f, '--node-name', 'x'], 'run does not take --node-name'],
      [['peers', 'a.json', 'b.json'], 'peers takes one FILE, not "b.json"'],
      [['status', '--node-name', 'x'], 'status does not take --node-name'],
      [['retire', '-c', f, '--json'], 'retire does not take --json'],
      [['retire', '-c', f, 'now'], 'retire takes no arguments, not "now"'],
      [['check', '-c', f, '--dry-run'], 'check does not take --dry-run'],
    ] as const) {
      const r = vxedge([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toBe(`vxedge: ${says} (vxedge --help)\n`);
      expect(r.stdout).toBe('');
    }
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
    for (const c of ['run', 'check', 'status', 'manifest', 'peers', 'rbac', 'fleet', 'retire']) expect(r.stdout).toContain(`vxedge ${c}`);
  });
  it('retire --mac that is no unicast MAC says so (exit 2)', () => {
    const r = vxedge(['retire', '-c', path.join(FIX, 'config', 'valid-minimal.yaml'), '--mac', '01:00:5e:00:00:01']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^vxedge: --mac "01:00:5e:00:00:01" is a multicast MAC; a VTEP MAC must be unicast/);
  });
  it('retire without -c says so (exit 2) and changes nothing', () => {
    const r = vxedge(['retire', '--dry-run']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('vxedge: missing -c FILE (the site config)\n');
  });
  it('status exits 1 when no gateway runs', () => {
    const r = vxedge(['status', '--run-dir', mkdtempSync(path.join(TMP, 'run-'))]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no gateway is running');
  });
  it('status --run-dir naming a file says so (exit 2) instead of "no gateway is running"', () => {
    const file = path.join(TMP, 'status-as-dir.json');
    writeFileSync(file, '{}');
    const r = vxedge(['status', '--run-dir', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`vxedge: --run-dir ${file} is a file; give the directory that holds status.json (the config's runDir, /run/vxedge by default)\n`);
  });
  it("status --run-dir wins over -c's runDir, and the file is then not read (a config mid-edit)", () => {
    const dir = mkdtempSync(path.join(TMP, 'run-'));
    writeFileSync(path.join(dir, 'status.json'), '{}');
    const broken = path.join(TMP, 'mid-edit.yaml');
    writeFileSync(broken, 'site: lab\nbogus: 1\n');
    // It read -c's runDir (here: an invalid file, exit 2) and never looked at --run-dir.
    const r = vxedge(['status', '-c', broken, '--run-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${dir}/status.json is not a vxedge health document`);
  });
  it('status names a status file that is no health document, without a stack trace (exit 1)', () => {
    const dir = mkdtempSync(path.join(TMP, 'run-'));
    writeFileSync(path.join(dir, 'status.json'), '{}');
    for (const args of [[], ['--json']]) {
      const r = vxedge(['status', '--run-dir', dir, ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${dir}/status.json is not a vxedge health document (site is not a string`);
      expect(r.stdout).toBe('');
      noStack(r.stderr);
    }
  });
});

describe('vxedge manifest', () => {
  const dir = mkdtempSync(path.join(TMP, 'manifest-'));
  const cfg = (extra: string, stateDir = `${dir}/state`) => {
    const f = path.join(dir, `site-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `site: lab\nnode: edge-1\nstateDir: ${stateDir}\nrunDir: ${dir}/run\noverlay: { subnet: 10.244.100.0/24 }\n${extra}`);
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

  it('announces the VTEP MAC the gateway keeps in stateDir, and --json works', () => {
    const state = mkdtempSync(path.join(dir, 'state-'));
    writeFileSync(path.join(state, 'vtep-mac'), '0e:5c:aa:00:00:65\n');
    const r = vxedge(['manifest', '-c', cfg('underlay: { publicIp: 198.51.100.2 }\n', state), '--json']);
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(JSON.parse(m.metadata.annotations['flannel.alpha.coreos.com/backend-data']).VtepMAC).toBe('0e:5c:aa:00:00:65');
  });

  it('never makes a VTEP MAC: without one configured or kept, it says how to get one (exit 2) and writes nothing', () => {
    const state = path.join(mkdtempSync(path.join(dir, 'none-')), 'state');
    const r = vxedge(['manifest', '-c', cfg('underlay: { publicIp: 198.51.100.2 }\n', state)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("the site's VTEP MAC is not known yet: set vxlan.vtepMac, or run this on the gateway once it has started");
    expect(r.stdout).toBe('');
    expect(existsSync(state)).toBe(false);
  });

  it('a vtep-mac file it cannot read is named, without a stack trace (exit 2)', () => {
    const state = mkdtempSync(path.join(dir, 'bad-'));
    writeFileSync(path.join(state, 'vtep-mac'), 'garbage\n');
    const r = vxedge(['manifest', '-c', cfg('underlay: { publicIp: 198.51.100.2 }\n', state)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`cannot read ${state}/vtep-mac`);
    expect(r.stderr).toContain('set vxlan.vtepMac');
    noStack(r.stderr);
  });

  it("--etcd: the etcdctl put of the site's lease as flanneld writes it (a reservation: no etcd lease); --json gives key and value; without it, an etcd site still gets its Node object, and a hint", () => {
    const etcd = 'underlay: { publicIp: 198.51.100.2 }\nvxlan: { vtepMac: "0e:5c:aa:00:00:64" }\ncluster: { source: etcd, register: false, etcd: { endpoints: [http://192.0.2.10:2379], prefix: /net/x } }\n';
    const key = '/net/x/subnets/10.244.100.0-24';
    const value = '{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:5c:aa:00:00:64"}}';
    const r = vxedge(['manifest', '-c', cfg(etcd), '--etcd']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n').filter((l) => !l.startsWith('#'))).toEqual([`etcdctl put '${key}' '${value}'`, '']);
    const j = vxedge(['manifest', '-c', cfg(etcd), '--json', '--etcd']);
    expect(JSON.parse(j.stdout)).toEqual({ key, value });
    const node = vxedge(['manifest', '-c', cfg(etcd)]);
    expect(node.code).toBe(0);
    expect(parseYaml(node.stdout).kind).toBe('Node');
    expect(node.stderr).toBe('vxedge: this site follows etcd (cluster.source): vxedge manifest -c FILE --etcd prints its lease\n');
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

  it('--kube-annotation-prefix reads the nodes of a flanneld run with that prefix, and wins over the config\'s', () => {
    const doc = JSON.parse(readFileSync(nodes, 'utf8')) as { items: { metadata: { annotations: Record<string, string> } }[] };
    for (const item of doc.items) {
      const a = item.metadata.annotations;
      for (const k of Object.keys(a).filter((k) => k.startsWith('flannel.alpha.coreos.com/'))) {
        a[k.replace('flannel.alpha.coreos.com/', 'example.com/net-')] = a[k]!;
        delete a[k];
      }
    }
    const moved = JSON.stringify(doc);
    const plain = vxedge(['peers'], moved);
    expect(JSON.parse(plain.stdout)).toEqual([]);
    expect(plain.stderr).toContain('its flannel annotations are under example.com/net- (flanneld --kube-annotation-prefix), not flannel.alpha.coreos.com/');
    expect(plain.stderr).toContain('set cluster.kubernetes.annotationPrefix (vxedge peers: --kube-annotation-prefix) to example.com/net-');
    const r = vxedge(['peers', '--kube-annotation-prefix', 'example.com/net', '-c', path.join(FIX, 'config', 'valid-minimal.yaml')], moved);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).map((p: { name: string }) => p.name)).toEqual([
      'ip-172-31-20-11.eu-west-1.compute.internal', 'ip-172-31-21-12.eu-west-1.compute.internal',
    ]);
    const bad = vxedge(['peers', '--kube-annotation-prefix', 'flannel'], moved);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('vxedge: --kube-annotation-prefix "flannel": "flannel" is not a lower-case domain name with a dot, which flannel and Kubernetes require before the "/" (e.g. "flannel.alpha.coreos.com")\n');
    expect(vxedge(['manifest', '--kube-annotation-prefix', 'example.com', '-c', path.join(FIX, 'config', 'valid-minimal.yaml')]).stderr).toContain('manifest does not take --kube-annotation-prefix');
  });

  it('exits 2 on unreadable input, saying why in words', () => {
    expect(vxedge(['peers'], 'not json').code).toBe(2);
    const missing = vxedge(['peers', '/nonexistent/nodes.json']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('vxedge: cannot read /nonexistent/nodes.json: no such file\n');
    const dir = vxedge(['peers', TMP]);
    expect(dir.code).toBe(2);
    expect(dir.stderr).toBe(`vxedge: cannot read ${TMP}: it is a directory\n`);
  });

  // Without a pipe it waited silently for input from the keyboard (the command looked hung).
  it('says the pipe is missing instead of waiting when stdin is a terminal and no FILE is given', () => {
    // script(1) runs it with a pseudo-terminal as stdin; -e passes its exit code on.
    const r = spawnSync('script', ['-qec', `node ${CLI} peers`, '/dev/null'], { encoding: 'utf8', timeout: 15_000, stdio: ['ignore', 'pipe', 'pipe'] });
    expect(r.error).toBeUndefined(); // a timeout: it waited for input
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('vxedge: peers reads `kubectl get nodes -o json` from stdin, which is a terminal here: pipe it in');
  });
});

describe('vxedge password-hash', () => {
  it('hashes the password piped in (its line end not part of it) with bcrypt, as crypt(3) checks it', async () => {
    const { nativeBinding } = await import('../../src/native/index.js');
    const r = vxedge(['password-hash', '--cost', '5'], 'pass word\n');
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^\$2b\$05\$[./A-Za-z0-9]{53}\n$/);
    expect(await nativeBinding().passwordCheck('pass word', r.stdout.trim())).toBe(true);
    expect(await nativeBinding().passwordCheck('pass word\n', r.stdout.trim())).toBe(false);
  });

  it('at a terminal: asked for twice without echo, printed only when both are the same', () => {
    const tty = (typed: string) => spawnSync('script', ['-qec', `node ${CLI} password-hash --cost 4`, '/dev/null'], { input: typed, encoding: 'utf8', timeout: 15_000 });
    const same = tty('pw one\npw one\n');
    expect(same.status).toBe(0);
    expect(same.stdout).toMatch(/Password: \r?\nAgain: \r?\n\$2b\$04\$[./A-Za-z0-9]{53}\r?\n$/);
    const differ = tty('pw one\npw two\n');
    expect(differ.status).toBe(2);
    expect(differ.stdout).toContain('vxedge: the two passwords differ; nothing printed');
    expect(differ.stdout).not.toMatch(/\$2b\$/);
  });

  it('refuses what could never be used, saying why', () => {
    const cases: [string[], string, string][] = [
      [['password-hash'], '', 'vxedge: the password is empty; nothing printed\n'],
      [['password-hash'], `${'x'.repeat(73)}\n`, 'vxedge: the password is 73 bytes; bcrypt takes at most 72; nothing printed\n'],
      [['password-hash', '--cost', '32'], 'pw\n', 'vxedge: --cost 32 is not a bcrypt cost (a whole number from 4 to 31; 10 is usual, each step doubles the time)\n'],
      [['password-hash', 'extra'], 'pw\n', 'vxedge: password-hash takes no arguments, not "extra" (vxedge --help)\n'],
      [['password-hash', '--json'], 'pw\n', 'vxedge: password-hash does not take --json (vxedge --help)\n'],
    ];
    for (const [args, input, stderr] of cases) {
      const r = vxedge(args, input);
      expect({ code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ code: 2, stdout: '', stderr });
    }
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

  it('with an etcd site file: the etcdctl script for its role and user instead (--node-name still means Kubernetes)', () => {
    const f = path.join(dir, 'etcd.yaml');
    writeFileSync(f, 'site: lab\nnode: edge-1\noverlay: { subnet: 10.244.100.0/24 }\ncluster: { source: etcd, etcd: { endpoints: [http://192.0.2.10:2379], username: site-gw, passwordFile: /etc/vxedge/etcd-password } }\n');
    const r = vxedge(['rbac', '-c', f]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^#!\/bin\/sh\n/);
    expect(r.stdout).toContain(`etcdctl role grant-permission "$role" readwrite '/coreos.com/network/subnets/10.244.100.0-24'`);
    expect(r.stdout).toContain("user='site-gw'");
    expect(r.stderr).toBe('');
    expect(parseYaml(vxedge(['rbac', '--node-name', 'other-gw']).stdout.split(/^---$/m)[2]).kind).toBe('ClusterRole');
    // No user in the file: the role alone, and why on stderr.
    writeFileSync(f, 'site: lab\nnode: edge-1\noverlay: { subnet: 10.244.100.0/24 }\ncluster: { source: etcd, etcd: { endpoints: [http://192.0.2.10:2379] } }\n');
    const none = vxedge(['rbac', '-c', f]);
    expect(none.code).toBe(0);
    expect(none.stderr).toMatch(/^vxedge: neither cluster\.etcd\.username nor cluster\.etcd\.cert is set/);
    expect(none.stdout).not.toMatch(/^user=/m);
  });

  it('follows cluster.kubernetes.nodeName, or --node-name without a config, and says what it needs otherwise', () => {
    const f = path.join(dir, 'named.yaml');
    writeFileSync(f, `site: lab\nnode: edge-1\noverlay: { subnet: 10.244.100.0/24 }\ncluster: { kubernetes: { nodeName: plant-7-gw } }\n`);
    const names = (out: string) => parseYaml(out.split(/^---$/m)[2]).rules[1].resourceNames;
    expect(names(vxedge(['rbac', '-c', f]).stdout)).toEqual(['plant-7-gw']);
    expect(names(vxedge(['rbac', '--node-name', 'other-gw']).stdout)).toEqual(['other-gw']);
    // No default: the Node name needs `site`, which has none, and a guessed name would give
    // RBAC for another Node (the gateway's writes would then fail with 403 only at run time).
    // Like run, check and manifest, rbac asks for the config, and says where the name comes from.
    const r = vxedge(['rbac']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'vxedge: rbac needs the site\'s Node name (cluster.kubernetes.nodeName, else vxedge-{site}-{node} from the config): ' +
        'give -c FILE (the site config; the package\'s is /etc/vxedge/site.yaml) or --node-name NAME\n',
    );
    const bad = vxedge(['rbac', '--node-name', 'Bad Name: x']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--node-name "Bad Name: x" is not a Kubernetes node name');
    expect(bad.stdout).toBe('');
  });
});
