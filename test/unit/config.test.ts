// The config module: what an operator's file and environment turn into, and
// how every mistake in them is reported (docs/contract.md, "Config file").

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import YAML from 'yaml';
import {
  ConfigError,
  formatConfigError,
  formatConfigErrorLine,
  loadConfig,
  parseConfigText,
  type Config,
  type ConfigProblem,
} from '../../src/config/index.js';
import { buildSchema, buildValues, envAlias, envName, leaves, type SchemaTree } from '../../src/config/schema.js';
import { completeAnnotationPrefix } from '../../src/config/formats.js';
import { cidrOverlaps, parseCidr, prefixMask } from '../../src/util/ipv4.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/config');
const fixture = (name: string): string => path.join(FIXTURES, name);
const NO_ENV: NodeJS.ProcessEnv = {};
const HOST = { hostname: 'edge-1' };

/** The ConfigError a call throws; fails the test when it throws nothing or something else. */
function configError(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw new Error(`expected a ConfigError, got ${String(e)}`);
  }
  throw new Error('expected a ConfigError, but the config was accepted');
}

type Expect = [key: string, fragment: string];

function expectProblems(err: ConfigError, expected: Expect[]): void {
  const keys = err.problems.map((p) => p.key).sort();
  expect(keys, formatConfigError(err)).toEqual(expected.map(([k]) => k).sort());
  for (const [key, fragment] of expected) {
    const messages = err.problems.filter((p) => p.key === key).map((p) => p.message);
    expect(messages.some((m) => m.includes(fragment)), `${key}: ${messages.join(' | ')}`).toBe(true);
  }
}

const base = { site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' } };
const peer = (n: number, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  name: `aws-${n}`,
  publicIp: `203.0.113.${n}`,
  subnet: `10.244.${n}.0/24`,
  vtepMac: `0e:00:00:00:00:0${n}`,
  ...extra,
});

/** Every key at its schema default, built the way the program builds values, plus the three
 *  keys the minimal fixture sets. The loader must arrive at exactly this. */
const DEFAULTS: Config = (() => {
  const tree = buildSchema('edge-1');
  const raw: Record<string, unknown> = {};
  for (const { path: key, spec } of leaves(tree)) {
    const parts = key.split('.');
    let o = raw;
    for (const k of parts.slice(0, -1)) o = (o[k] ??= {}) as Record<string, unknown>;
    o[parts.at(-1)!] = spec.default;
  }
  Object.assign(raw, { site: 'lab', node: 'edge-1' });
  (raw.overlay as Record<string, unknown>).subnet = '10.244.100.0/24';
  return buildValues(tree, raw);
})();

const FULL: Config = {
  site: 'lab',
  node: 'edge-1',
  stateDir: '/srv/vxedge/state',
  runDir: '/srv/vxedge/run',
  underlay: { iface: 'eth0', address: '192.168.50.10', port: 8473, publicIp: '198.51.100.2' },
  vxlan: { vni: 42, port: 4789, mtu: 1400, vtepMac: '0e:5c:aa:00:00:01' },
  overlay: {
    device: 'vxedge0',
    mode: 'tap',
    network: parseCidr('10.42.0.0/16'),
    subnet: parseCidr('10.42.100.0/24'),
    mssClamp: false,
    strictPeers: false,
    offload: true,
    sendThread: true,
    queues: 8,
  },
  peers: [
    {
      name: 'ip-10-0-1-23.eu-west-1.compute.internal',
      publicIp: '203.0.113.10',
      port: 4789, // vxlan.port
      subnet: parseCidr('10.42.1.0/24'),
      vtepMac: '12:34:56:78:9a:bc',
    },
    { name: 'aws-2', publicIp: '203.0.113.11', port: 8472, subnet: parseCidr('10.42.2.0/24'), vtepMac: '16:34:56:78:9a:bc' },
  ],
  keepalive: { interval: 10_000, timeout: 45_000 },
  nat: {
    stun: [
      { host: 'stun.l.google.com', port: 19302 },
      { host: '192.0.2.7', port: 3478 },
    ],
    portMapping: 'pcp',
  },
  cluster: {
    source: 'etcd',
    register: false,
    kubernetes: { kubeconfig: '/etc/vxedge/kubeconfig', nodeName: 'vxedge-lab', annotationPrefix: 'example.com/net' },
    etcd: {
      endpoints: ['https://10.0.0.5:2379', 'https://10.0.0.6:2379'],
      prefix: '/flannel/network',
      ca: '/etc/vxedge/etcd-ca.pem',
      cert: '/etc/vxedge/etcd.pem',
      key: '/etc/vxedge/etcd-key.pem',
      username: 'flannel',
      passwordFile: '/etc/vxedge/etcd-password',
    },
  },
  mqtt: {
    url: 'mqtts://a1b2c3-ats.iot.eu-west-1.amazonaws.com:8883',
    proxy: 'http://proxy.site.example:3128',
    topicPrefix: 'fleet',
    interval: 90_000,
    username: 'edge',
    password: null,
    passwordFile: '/etc/vxedge/mqtt-password',
    ca: '/etc/vxedge/AmazonRootCA1.pem',
    cert: '/etc/vxedge/device.pem.crt',
    key: '/etc/vxedge/private.pem.key',
  },
  board: { led: null, releaseStartupPages: true },
  metrics: { listen: { host: '127.0.0.1', port: 9474 }, webConfig: '/etc/vxedge/web.yml' },
  log: { level: 'debug' },
};

describe('valid files', () => {
  it('valid-minimal.yaml takes every default', () => {
    expect(loadConfig(fixture('valid-minimal.yaml'), NO_ENV)).toEqual(DEFAULTS);
  });

  it("the defaults are the contract's", () => {
    const c = DEFAULTS;
    expect([c.stateDir, c.runDir, c.underlay.port, c.vxlan.vni, c.vxlan.port, c.overlay.device, c.overlay.mode]).toEqual(
      ['/var/lib/vxedge', '/run/vxedge', 8472, 1, 8472, 'flannel.1', 'tun'],
    );
    expect([c.overlay.network.text, c.keepalive.interval, c.keepalive.timeout, c.mqtt.interval, c.mqtt.topicPrefix]).toEqual(
      ['10.244.0.0/16', 25_000, 90_000, 30_000, 'vxedge'],
    );
    expect([c.nat.portMapping, c.cluster.source, c.cluster.register, c.cluster.etcd.prefix, c.log.level]).toEqual(
      ['auto', 'static', true, '/coreos.com/network', 'info'],
    );
    expect([c.underlay.iface, c.underlay.address, c.underlay.publicIp, c.vxlan.mtu, c.vxlan.vtepMac, c.mqtt.url]).toEqual([null, null, null, null, null, null]);
    expect([c.peers, c.nat.stun, c.cluster.etcd.endpoints]).toEqual([[], [], []]);
  });

  it('valid-full.json sets every key', () => {
    expect(loadConfig(fixture('valid-full.json'), NO_ENV)).toEqual(FULL);
  });

  it('valid-full.yaml, written the YAML way, means the same as the JSON file', () => {
    expect(loadConfig(fixture('valid-full.yaml'), NO_ENV)).toEqual(FULL);
  });

  it('the same document reads the same as JSON and as YAML', () => {
    const doc = { ...base, peers: [peer(1), peer(2, { port: 4789 })], keepalive: { interval: '1.5s' } };
    const fromJson = parseConfigText(JSON.stringify(doc), 'x.json', 'json', NO_ENV);
    const fromYaml = parseConfigText(YAML.stringify(doc), 'x.yaml', 'yaml', NO_ENV);
    expect(fromYaml).toEqual(fromJson);
    expect(fromJson.keepalive.interval).toBe(1500);
    expect(fromJson.peers.map((p) => p.port)).toEqual([8472, 4789]);
  });

  it('a duration under a second needs its unit written out: "500ms" and 1500 are taken, 500 and "5" are not', () => {
    const interval = (v: unknown, env: NodeJS.ProcessEnv = NO_ENV) =>
      parseConfigText(JSON.stringify({ ...base, keepalive: v === undefined ? {} : { interval: v } }), 'x.json', 'json', env).keepalive.interval;
    expect(interval('500ms')).toBe(500);
    expect(interval(1500)).toBe(1500);
    expect(interval(0)).toBe(0); // keepalive.interval 0: probes off
    expect(interval(undefined, { VXEDGE_KEEPALIVE_INTERVAL: '750ms' })).toBe(750);
    expect(() => interval(500)).toThrow(/keepalive\.interval: 500 is 500 ms \(a bare number is milliseconds\); write "500s" for seconds, or "500ms"/);
    expect(() => interval(undefined, { VXEDGE_KEEPALIVE_INTERVAL: '5' })).toThrow(/keepalive\.interval: "5" is 5 ms .*write "5s".*\(from VXEDGE_KEEPALIVE_INTERVAL\)/);
  });

  it('a section whose keys are all commented out takes the defaults', () => {
    const cfg = parseConfigText('site: lab\nnode: edge-1\nunderlay:\nmqtt:\noverlay:\n  subnet: 10.244.100.0/24\n', 'x.yaml', 'yaml', NO_ENV);
    expect(cfg).toEqual(DEFAULTS);
  });

  it('node defaults to the host name, lower-cased', () => {
    const cfg = parseConfigText(JSON.stringify({ ...base, node: undefined }), 'x.json', 'json', NO_ENV, { hostname: 'Edge-7' });
    expect(cfg.node).toBe('edge-7');
  });

  it('a subnet at the top end of the network is inside it', () => {
    const cfg = parseConfigText(JSON.stringify({ ...base, overlay: { subnet: '10.244.255.0/24' } }), 'x.json', 'json', NO_ENV);
    expect(cfg.overlay.subnet.text).toBe('10.244.255.0/24');
  });
});

describe('invalid files on disk', () => {
  const rows: Array<[file: string, expected: Expect[]]> = [
    ['invalid-typo.yaml', [['underlay.prot', 'did you mean "underlay.port"?']]],
    ['invalid-subnet.yaml', [['overlay.subnet', 'is not inside overlay.network 10.244.0.0/16']]],
    [
      'invalid-peers.json',
      [
        ['peers[1].vtepMac', 'is not a MAC address (expected aa:bb:cc:dd:ee:ff)'],
        ['peers[2].name', 'is already the name of peers[0]'],
        ['peers[2].subnet', 'overlaps peers[0].subnet 10.244.1.0/24'],
        ['peers[2].vtepMac', "this site's own vxlan.vtepMac"],
        ['peers[3].vtepMAC', 'did you mean "peers[3].vtepMac"?'],
        ['peers[3].vtepMac', 'is required'],
      ],
    ],
    [
      'invalid-many.yaml',
      [
        ['site', '"Lab" is not a valid id'],
        ['underlay.prot', 'did you mean "underlay.port"?'],
        ['vxlan.vni', 'expected a VNI 1..16777215'],
        ['vxlan.mtu', 'expected an MTU 576..9000'],
        ['overlay.mode', '"tunnel" is not one of "tun", "tap"'],
        ['overlay.subnet', 'has host bits set; did you mean 10.244.100.0/24?'],
        ['keepalive.timeout', 'unknown unit "d"'],
        ['mqtt.url', 'use mqtt://, mqtts://, ws:// or wss://'],
        ['mqtt.password', 'keep only one of them'],
        ['mqtt.key', 'is required when mqtt.cert is set'],
      ],
    ],
    ['invalid-syntax.yaml', [['(file)', 'YAML syntax error at line 3, column 11']]],
    ['invalid-syntax.json', [['(file)', 'JSON syntax error at line 3, column 45']]],
    ['empty.yaml', [['(file)', 'the file is empty']]],
    ['does-not-exist.yaml', [['(file)', 'cannot read the file: no such file']]],
    ['valid-minimal.conf', [['(file)', 'unknown file type ".conf"; use .json, .yaml or .yml']]],
  ];

  it.each(rows)('%s', (file, expected) => {
    const err = configError(() => loadConfig(fixture(file), NO_ENV));
    expect(err.source).toBe(fixture(file));
    expectProblems(err, expected);
  });

  // The file's type is told by its name, but a path that is no file at all says so first: a
  // directory (`-c /etc/vxedge`, or one named like a config) or a missing file whatever its name.
  it('a directory or a missing file is named as such before its extension is judged', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-cfgdir-'));
    try {
      const named = path.join(dir, 'site.yaml');
      mkdirSync(named);
      for (const d of [dir, named]) {
        expectProblems(configError(() => loadConfig(d, NO_ENV)), [['(file)', `cannot read the file: it is a directory; give the config file itself, e.g. ${path.join(d, 'site.yaml')}`]]);
      }
      // ... also below a file, which the kernel refuses with ENOTDIR rather than ENOENT
      writeFileSync(path.join(dir, 'notes'), 'not a directory\n');
      for (const f of ['no-such-site', 'no-such-site.conf', 'notes/site', 'notes/site.yaml']) {
        expectProblems(configError(() => loadConfig(path.join(dir, f), NO_ENV)), [['(file)', 'cannot read the file: no such file']]);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a JSON file with comments is told that JSON has none, and where to put them', () => {
    for (const c of ['// the lab', '/* the lab */', '# the lab']) {
      const err = configError(() => parseConfigText(`{\n  ${c}\n  "site": "lab"\n}`, 'site.json', 'json', NO_ENV));
      expectProblems(err, [['(file)', 'JSON syntax error at line 2, column 3']]);
      expect(err.problems[0].message).toMatch(/; JSON has no comments: write the file as YAML \(site\.yaml, # comments; the same keys\)$/);
    }
    // A syntax error without a comment gets no such hint.
    expect(configError(() => parseConfigText('{"site": "lab",}', 'site.json', 'json', NO_ENV)).problems[0].message).not.toMatch(/comments/);
  });

  it('a YAML file of several documents is named as such', () => {
    const err = configError(() => parseConfigText('site: lab\n---\nnode: e1\n', 'site.yaml', 'yaml', NO_ENV));
    expectProblems(err, [['(file)', 'YAML syntax error at line 2, column 1: the file holds several YAML documents ("---" between them); a site file is one document']]);
  });

  // JSON.parse keeps the last of two equal keys: a second "peers" silently dropped the first list.
  it('refuses a key given twice in one mapping, in JSON as in YAML, naming the key and where', () => {
    const keep = 'keep one (merging what both hold)';
    const json = '{"site": "lab",\n "overlay": {"subnet": "10.244.100.0/24"},\n "peers": [],\n "peers": []}';
    expectProblems(configError(() => parseConfigText(json, 'site.json', 'json', NO_ENV)), [['(file)', `duplicate key "peers" at line 4, column 2: a key may appear once in each mapping, and the later would silently replace the earlier; ${keep}`]]);
    const nested = '{"site": "lab", "overlay": {"subnet": "10.244.100.0/24", "sub\\"net": 1, "sub\\"net": 2}}';
    expectProblems(configError(() => parseConfigText(nested, 'site.json', 'json', NO_ENV)), [['(file)', 'duplicate key "sub\\"net" at line 1, column 73']]);
    const yaml = 'site: lab\noverlay:\n  subnet: 10.244.100.0/24\n  subnet: 10.244.101.0/24\n';
    expectProblems(configError(() => parseConfigText(yaml, 'site.yaml', 'yaml', NO_ENV)), [['(file)', 'duplicate key "subnet" at line 4, column 3']]);
    // The same key in two mappings is no duplicate.
    expect(parseConfigText('{"site": "lab", "overlay": {"subnet": "10.244.100.0/24"}, "underlay": {"port": 8472}, "vxlan": {"port": 8472}}', 'site.json', 'json', NO_ENV).vxlan.port).toBe(8472);
  });

  // The yaml library's document model of a JSON file with 500 peers took the gateway's start-up
  // peak from 53 to 58 MB (docs/memory.md): a JSON site file is read without the library.
  it('a JSON site file, duplicate keys or not, is never handed to the yaml library', () => {
    const spies = (['parse', 'parseDocument', 'parseAllDocuments'] as const).map((m) => vi.spyOn(YAML, m));
    try {
      const peers = Array.from({ length: 500 }, (_, i) => ({ name: `n${i}`, publicIp: `203.0.113.${(i % 250) + 1}`, subnet: `10.244.${i % 250}.0/24`, vtepMac: `0e:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` }));
      const text = JSON.stringify({ site: 'lab', overlay: { subnet: '10.244.255.0/24' }, peers });
      expect(() => parseConfigText(text, 'site.json', 'json', NO_ENV)).not.toThrow(/duplicate/);
      expect(() => parseConfigText(text.replace('"peers"', '"site":"x","peers"'), 'site.json', 'json', NO_ENV)).toThrow(/duplicate key "site"/);
      for (const spy of spies) expect(spy).not.toHaveBeenCalled();
      parseConfigText('site: lab\noverlay:\n  subnet: 10.244.100.0/24\n', 'site.yaml', 'yaml', NO_ENV);
      expect(spies[0]).toHaveBeenCalledTimes(1); // the spies do see a YAML file's parse
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  // A peers list pasted with one mistake gives a problem per peer: 60 000 lines helped nobody,
  // and the one-line form goes into the health document of a refused reload.
  it('lists the first 100 problems in the block and 10 in the line, and counts the rest', () => {
    const peers = Array.from({ length: 150 }, (_, i) => ({ ...peer(i + 101), vtepMac: 'zz' })); // 10.244.101-250: none is the site's
    const err = configError(() => parseConfigText(JSON.stringify({ ...base, peers }), 'site.yaml', 'json', NO_ENV));
    const block = formatConfigError(err).split('\n');
    expect(block[0]).toBe('vxedge: invalid config site.yaml (150 problems):');
    expect(block).toHaveLength(1 + 100 + 1);
    expect(block[100]).toMatch(/^ {2}- peers\[99\]\.vtepMac: /);
    expect(block[101]).toBe('  - and 50 more; fix these first (the rest are often the same mistake) and run vxedge check -c again');
    const line = formatConfigErrorLine(err);
    expect(line.match(/peers\[\d+\]\.vtepMac: /g)).toHaveLength(10);
    expect(line).toContain('and 140 more');
    // A short list is whole in both.
    const few = configError(() => parseConfigText(JSON.stringify({ ...base, peers: peers.slice(0, 3) }), 'site.yaml', 'json', NO_ENV));
    expect(formatConfigError(few).split('\n')).toHaveLength(4);
    expect(formatConfigErrorLine(few)).not.toContain('more');
  });

  it('reports the whole block for invalid-many.yaml, secrets masked, no stack', () => {
    const text = formatConfigError(configError(() => loadConfig(fixture('invalid-many.yaml'), NO_ENV)));
    const lines = text.split('\n');
    expect(lines[0]).toBe(`vxedge: invalid config ${fixture('invalid-many.yaml')} (10 problems):`);
    expect(lines.slice(1).every((l) => l.startsWith('  - '))).toBe(true);
    expect(text).toContain('  - underlay.prot: unknown key; did you mean "underlay.port"?');
    expect(text).toContain('  - overlay.subnet: 10.244.100.5/24 has host bits set; did you mean 10.244.100.0/24?');
    expect(text).not.toContain('hunter2');
    expect(text).not.toMatch(/\n\s+at /);
  });

  it('puts the block on one line for the health document of a refused reload, secrets masked', () => {
    const line = formatConfigErrorLine(configError(() => loadConfig(fixture('invalid-many.yaml'), NO_ENV)));
    expect(line).toMatch(new RegExp(`^invalid config ${fixture('invalid-many.yaml').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(10 problems\\): underlay\\.prot: unknown key; did you mean "underlay\\.port"\\?; `));
    expect(line).toContain('; overlay.subnet: 10.244.100.5/24 has host bits set; did you mean 10.244.100.0/24?');
    expect(line).not.toContain('\n');
    expect(line).not.toContain('hunter2');
  });
});

describe('invalid documents, as JSON and as YAML', () => {
  const rows: Array<[what: string, doc: Record<string, unknown>, expected: Expect[]]> = [
    ['site missing', { overlay: base.overlay, node: 'edge-1' }, [['site', 'is required']]],
    ['overlay.subnet missing', { site: 'lab', node: 'edge-1' }, [['overlay.subnet', 'is required']]],
    ['site not an id', { ...base, site: 'my site' }, [['site', 'is not a valid id']]],
    ['site too long', { ...base, site: 'a'.repeat(64) }, [['site', 'at most 63 characters']]],
    ['unknown top-level key', { ...base, sites: 'x' }, [['sites', 'did you mean "site"?']]],
    ['leaf at the wrong level', { ...base, port: 8472 }, [['port', '"underlay.port" or "vxlan.port"']]],
    ['unknown key, nothing close', { ...base, flux: 1 }, [['flux', 'unknown key']]],
    ['section given a value', { ...base, underlay: 'eth0' }, [['underlay', 'is not a section']]],
    ['key given a mapping', { ...base, underlay: { port: { value: 1 } } }, [['underlay.port', 'is not a port']]],
    ['port out of range', { ...base, underlay: { port: 70000 } }, [['underlay.port', 'expected a port 1..65535']]],
    ['port zero', { ...base, vxlan: { port: 0 } }, [['vxlan.port', 'expected a port 1..65535']]],
    ['key set to null', { ...base, vxlan: { port: null } }, [['vxlan.port', 'leave it out for the default 8472']]],
    ['vni zero', { ...base, vxlan: { vni: 0 } }, [['vxlan.vni', '1..16777215']]],
    ['vni too big', { ...base, vxlan: { vni: 16777216 } }, [['vxlan.vni', '1..16777215']]],
    ['mtu too small', { ...base, vxlan: { mtu: 500 } }, [['vxlan.mtu', '576..9000']]],
    ['mtu not an integer', { ...base, vxlan: { mtu: 1400.5 } }, [['vxlan.mtu', '576..9000']]],
    ['multicast VTEP MAC', { ...base, vxlan: { vtepMac: '01:00:5e:00:00:01' } }, [['vxlan.vtepMac', 'multicast']]],
    ['all-zero VTEP MAC', { ...base, vxlan: { vtepMac: '00:00:00:00:00:00' } }, [['vxlan.vtepMac', 'all-zero']]],
    ['bad address', { ...base, underlay: { address: '192.168.1.300' } }, [['underlay.address', 'is not an IPv4 address']]],
    ['leading zero in address', { ...base, underlay: { address: '192.168.01.1' } }, [['underlay.address', 'is not an IPv4 address']]],
    ['loopback public IP', { ...base, underlay: { publicIp: '127.0.0.1' } }, [['underlay.publicIp', 'cannot be a public endpoint']]],
    ['iface name too long', { ...base, underlay: { iface: 'a-very-long-interface' } }, [['underlay.iface', 'not a network interface name']]],
    ['device with a slash', { ...base, overlay: { ...base.overlay, device: 'a/b' } }, [['overlay.device', 'not a network interface name']]],
    ['network without prefix', { ...base, overlay: { ...base.overlay, network: '10.244.0.0' } }, [['overlay.network', 'add the prefix length']]],
    [
      'subnet outside the network',
      { ...base, overlay: { network: '10.244.0.0/16', subnet: '10.245.0.0/24' } },
      [['overlay.subnet', "pick a subnet of the cluster's pod network"]],
    ],
    ['mode', { ...base, overlay: { ...base.overlay, mode: 'TUN' } }, [['overlay.mode', 'is not one of "tun", "tap"']]],
    ['mssClamp not a boolean', { ...base, overlay: { ...base.overlay, mssClamp: 'sometimes' } }, [['overlay.mssClamp', 'true or false']]],
    ['releaseStartupPages not a boolean', { ...base, board: { releaseStartupPages: 'later' } }, [['board.releaseStartupPages', 'true or false']]],
    ['no device queue', { ...base, overlay: { ...base.overlay, queues: 0 } }, [['overlay.queues', 'is out of range: expected a queue count 1..16']]],
    ['too many device queues', { ...base, overlay: { ...base.overlay, queues: 64 } }, [['overlay.queues', 'is out of range: expected a queue count 1..16']]],
    ['device queues not a number', { ...base, overlay: { ...base.overlay, queues: 'many' } }, [['overlay.queues', 'is not a queue count 1..16']]],
    ['peers not a list', { ...base, peers: peer(1) }, [['peers', 'is not a list of peers']]],
    ['peer not a mapping', { ...base, peers: ['aws-1'] }, [['peers[0]', 'is not a peer']]],
    ['peer missing fields', { ...base, peers: [{ name: 'aws-1' }] }, [
      ['peers[0].publicIp', 'is required'],
      ['peers[0].subnet', 'is required'],
      ['peers[0].vtepMac', 'is required'],
    ]],
    ['peer unknown key', { ...base, peers: [peer(1, { iface: 'eth0' })] }, [['peers[0].iface', 'unknown key']]],
    ['peer bad port', { ...base, peers: [peer(1, { port: 0 })] }, [['peers[0].port', 'leave it out for vxlan.port']]],
    ['peer bad name', { ...base, peers: [peer(1, { name: 'AWS_1' })] }, [['peers[0].name', 'not a Kubernetes node name']]],
    ['peer bad public IP', { ...base, peers: [peer(1, { publicIp: '203.0.113' })] }, [['peers[0].publicIp', 'is not an IPv4 address']]],
    ['peer subnet host bits', { ...base, peers: [peer(1, { subnet: '10.244.1.5/24' })] }, [['peers[0].subnet', 'did you mean 10.244.1.0/24?']]],
    ['peer subnet outside', { ...base, peers: [peer(1, { subnet: '10.0.1.0/24' })] }, [['peers[0].subnet', 'not inside overlay.network']]],
    ['peer subnet is ours', { ...base, peers: [peer(1, { subnet: '10.244.100.0/24' })] }, [['peers[0].subnet', "overlaps this site's overlay.subnet"]]],
    ['peer subnets overlap', { ...base, peers: [peer(1, { subnet: '10.244.0.0/22' }), peer(2)] }, [['peers[1].subnet', 'overlaps peers[0].subnet 10.244.0.0/22']]],
    ['peer names repeat', { ...base, peers: [peer(1), peer(2, { name: 'aws-1' })] }, [['peers[1].name', 'must be unique']]],
    ['peer MACs repeat', { ...base, peers: [peer(1), peer(2, { vtepMac: '0E-00-00-00-00-01' })] }, [['peers[1].vtepMac', 'vtepMac of peers[0]']]],
    [
      'peer has our MAC',
      { ...base, vxlan: { vtepMac: '0e:00:00:00:00:01' }, peers: [peer(1)] },
      [['peers[0].vtepMac', "this site's own vxlan.vtepMac"]],
    ],
    ['duration unit', { ...base, keepalive: { interval: '25 seconds' } }, [['keepalive.interval', 'unknown unit "seconds"']]],
    ['duration negative', { ...base, keepalive: { interval: -5 } }, [['keepalive.interval', 'negative']]],
    ['duration zero', { ...base, mqtt: { interval: 0 } }, [['mqtt.interval', 'longer than 0']]],
    ['duration a bare number under a second', { ...base, keepalive: { interval: 5 } }, [['keepalive.interval', 'is 5 ms (a bare number is milliseconds); write "5s" for seconds, or "5ms" if milliseconds are meant']]],
    ['timeout not above interval', { ...base, keepalive: { interval: '30s', timeout: '30s' } }, [['keepalive.timeout', 'must be longer than keepalive.interval (30s)']]],
    ['node id that makes a bad Node name', { ...base, node: 'edge-' }, [['node', '"edge-" makes the site\'s Node name "vxedge-lab-edge-", which Kubernetes refuses']]],
    [
      'tunnel device is the underlay NIC',
      { ...base, underlay: { iface: 'eth0' }, overlay: { ...base.overlay, device: 'eth0' } },
      [['overlay.device', '"eth0" is also underlay.iface']],
    ],
    ['stun entry', { ...base, nat: { stun: ['stun.example.com:0'] } }, [['nat.stun[0]', 'is not host:port']]],
    ['stun not a list', { ...base, nat: { stun: 3478 } }, [['nat.stun', 'is not a list']]],
    ['mqtt scheme', { ...base, mqtt: { url: 'tcp://broker:1883' } }, [['mqtt.url', 'has scheme "tcp"']]],
    ['mqtt url garbage', { ...base, mqtt: { url: 'mqtt://bro ker:1883' } }, [['mqtt.url', 'is not a URL']]],
    ['mqtt url without scheme', { ...base, mqtt: { url: 'broker.example.com:1883' } }, [['mqtt.url', 'has no scheme; write "mqtt://broker.example.com:1883" (or mqtts:// for TLS)']]],
    [
      'etcd endpoint without scheme',
      { ...base, cluster: { source: 'etcd', etcd: { endpoints: ['10.0.0.5:2379'] } } },
      [['cluster.etcd.endpoints[0]', 'has no scheme; write "https://10.0.0.5:2379" (or http:// without TLS)']],
    ],
    ['mqtt url without scheme, credentials masked', { ...base, mqtt: { url: 'u:secret@broker:1883' } }, [['mqtt.url', '"mqtt://u:***@broker:1883"']]],
    ['mqtt proxy without scheme, credentials masked', { ...base, mqtt: { proxy: 'site:secret@proxy.example:3128' } }, [['mqtt.proxy', 'has no scheme; write "http://site:***@proxy.example:3128"']]],
    ['mqtt proxy over TLS with a path', { ...base, mqtt: { proxy: 'https://proxy.example:8443/x' } }, [['mqtt.proxy', 'https://proxy.example:8443/x: a proxy is named by host and port alone']]],
    ['mqtt proxy another scheme', { ...base, mqtt: { proxy: 'ftp://proxy.example:2121' } }, [['mqtt.proxy', "an http:// or https:// proxy (HTTP CONNECT) or a socks5://, socks5h://, socks4:// or socks4a:// one"]]],
    ['mqtt proxy SOCKS4 with a password', { ...base, mqtt: { proxy: 'socks4://site:pw@proxy.example:1080' } }, [['mqtt.proxy', 'SOCKS4 carries a user id and no password; use socks5://']]],
    ['mqtt proxy garbage, credentials masked', { ...base, mqtt: { proxy: 'http://u:secret@bad host:1' } }, [['mqtt.proxy', '"http://u:***@bad host:1" is not a URL']]],
    ['mqtt password and file', { ...base, mqtt: { password: 'x', passwordFile: '/p' } }, [['mqtt.password', 'keep only one']]],
    ['mqtt key without cert', { ...base, mqtt: { key: '/k' } }, [['mqtt.cert', 'is required when mqtt.key is set']]],
    ['mqtt topic wildcard', { ...base, mqtt: { topicPrefix: 'a/#' } }, [['mqtt.topicPrefix', 'wildcard']]],
    ['metrics web config without an address', { ...base, metrics: { webConfig: '/etc/vxedge/web.yml' } }, [['metrics.listen', 'is required when metrics.webConfig is set: the web configuration protects the address metrics.listen serves']]],
    ['mqtt username a number', { ...base, mqtt: { username: 1234 } }, [['mqtt.username', 'quote it in YAML']]],
    ['log level', { ...base, log: { level: 'verbose' } }, [['log.level', 'is not one of "debug", "info", "warn", "error"']]],
    ['stateDir empty', { ...base, stateDir: '' }, [['stateDir', 'is not a usable path']]],
    [
      'annotation prefix with two slashes',
      { ...base, cluster: { kubernetes: { annotationPrefix: 'example.com/a/b' } } },
      [['cluster.kubernetes.annotationPrefix', '"example.com/a/b" has more than one "/": flannel takes a domain, optionally followed by "/" and a name (e.g. "example.com/net")']],
    ],
    [
      'annotation prefix not a domain',
      { ...base, cluster: { kubernetes: { annotationPrefix: 'flannel' } } },
      [['cluster.kubernetes.annotationPrefix', '"flannel": "flannel" is not a lower-case domain name with a dot, which flannel and Kubernetes require before the "/" (e.g. "flannel.alpha.coreos.com")']],
    ],
  ];

  describe.each(['json', 'yaml'] as const)('%s', (format) => {
    it.each(rows)('%s', (_what, doc, expected) => {
      const text = format === 'json' ? JSON.stringify(doc) : YAML.stringify(doc);
      const err = configError(() => parseConfigText(text, `site.${format}`, format, NO_ENV));
      expectProblems(err, expected);
    });
  });

  // The peers are checked against each other in one pass with maps (a file of 60 000 peers
  // took 141 s pairwise); the messages must stay those of the pairwise rule: each peer against
  // every one before it, the twin named by its first position.
  describe('peers against each other', () => {
    const pairwise = (peers: { name: string; subnet: string; vtepMac: string }[]): [string, string][] => {
      const site = parseCidr(base.overlay.subnet);
      const out: [string, string][] = [];
      peers.forEach((p, n) => {
        const before = peers.slice(0, n);
        const name = before.findIndex((q) => q.name === p.name);
        if (name >= 0) out.push([`peers[${n}].name`, `"${p.name}" is already the name of peers[${name}]`]);
        const s = parseCidr(p.subnet);
        const twin = before.findIndex((q) => cidrOverlaps(parseCidr(q.subnet), s));
        if (cidrOverlaps(site, s)) out.push([`peers[${n}].subnet`, "overlaps this site's overlay.subnet"]);
        else if (twin >= 0) out.push([`peers[${n}].subnet`, `overlaps peers[${twin}].subnet ${before[twin].subnet}`]);
        const mac = before.findIndex((q) => q.vtepMac === p.vtepMac);
        if (mac >= 0) out.push([`peers[${n}].vtepMac`, `vtepMac of peers[${mac}]`]);
      });
      return out;
    };
    // Few names, MACs and prefixes in 10.244.96.0/20 (the site's 10.244.100.0/24 among them),
    // so that most lists repeat and nest.
    const peerArb = fc.record({
      name: fc.constantFrom('aws-1', 'aws-2', 'aws-3', 'aws-4'),
      subnet: fc.tuple(fc.integer({ min: 20, max: 26 }), fc.integer({ min: 0, max: 4095 })).map(([len, at]) => {
        const net = (((10 << 24) | (244 << 16) | (96 << 8)) + (at << 2)) & prefixMask(len);
        return `10.244.${(net >>> 8) & 255}.${net & 255}/${len}`;
      }),
      vtepMac: fc.constantFrom('0e:00:00:00:00:01', '0e:00:00:00:00:02', '0e:00:00:00:00:03'),
    });

    it('report what the pairwise rule reports, twin by twin', () => {
      fc.assert(
        fc.property(fc.array(peerArb, { minLength: 1, maxLength: 12 }), (list) => {
          const peers = list.map((p, i) => ({ ...p, publicIp: `203.0.113.${i + 1}` }));
          const expected = pairwise(peers);
          if (expected.length === 0) {
            expect(() => parseConfigText(JSON.stringify({ ...base, peers }), 'site.json', 'json', NO_ENV, HOST)).not.toThrow();
            return;
          }
          const err = configError(() => parseConfigText(JSON.stringify({ ...base, peers }), 'site.json', 'json', NO_ENV, HOST));
          expect(err.problems.map((p) => p.key)).toEqual(expected.map(([k]) => k));
          err.problems.forEach((p, i) => expect(p.message).toContain(expected[i][1]));
        }),
        { numRuns: 400 },
      );
    });

    it('take time linear in the number of peers: 4 times the peers, not 16 times the time', () => {
      const refused = (n: number): { ms: number; err: ConfigError } => {
        const peers = Array.from({ length: n }, (_, i) => ({
          name: 'aws-1',
          publicIp: `203.0.113.${(i % 250) + 1}`,
          subnet: '10.244.1.0/24',
          vtepMac: '0e:00:00:00:00:01',
        }));
        const text = JSON.stringify({ ...base, peers });
        // CPU time, not wall time: a busy machine that takes the CPU away from this process
        // between the two runs does not change the ratio.
        const started = process.cpuUsage();
        const err = configError(() => parseConfigText(text, 'site.json', 'json', NO_ENV, HOST));
        const used = process.cpuUsage(started);
        return { ms: (used.user + used.system) / 1000, err };
      };
      refused(2_000); // compiled before it is timed
      const small = refused(10_000);
      const large = refused(40_000);
      // Pairwise, 40 000 peers with one name, MAC and subnet took 24 s here against 1.5 s for
      // 10 000; in one pass 3 s against 0.8. A ratio, so that a slower machine passes too.
      expect(large.ms / small.ms).toBeLessThan(8);
      expect(large.err.problems).toHaveLength(3 * 39_999);
      expect(large.err.problems.at(-1)).toMatchObject({ key: 'peers[39999].vtepMac' });
    }, 60_000);
  });

  it('a host name that is not a node id asks to set node explicitly', () => {
    const doc = { site: 'lab', overlay: base.overlay };
    const err = configError(() => parseConfigText(JSON.stringify(doc), 'x.json', 'json', NO_ENV, { hostname: 'pi.local' }));
    expectProblems(err, [['node', 'set "node" explicitly']]);
  });

  it('a top-level list, a scalar or a comment-only file is refused', () => {
    for (const text of ['- site: lab\n', '42\n', '# nothing yet\n']) {
      expectProblems(configError(() => parseConfigText(text, 'x.yaml', 'yaml', NO_ENV)), [['(file)', 'expected a mapping of settings']]);
    }
  });

  it('prototype-shaped keys are unknown keys, not pollution', () => {
    const text = '{"__proto__": {"polluted": true}, "constructor": 1, "site": "lab", "node": "n", "overlay": {"subnet": "10.244.1.0/24"}}';
    expectProblems(configError(() => parseConfigText(text, 'x.json', 'json', NO_ENV)), [
      ['__proto__', 'unknown key'],
      ['constructor', 'unknown key'],
    ]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('duplicate YAML keys are a syntax error', () => {
    const err = configError(() => parseConfigText('site: lab\nsite: lab2\n', 'x.yaml', 'yaml', NO_ENV));
    expectProblems(err, [['(file)', 'line 2, column 1']]);
  });
});

describe('environment', () => {
  const yaml = YAML.stringify({ ...base, mqtt: { url: 'mqtt://broker:1883' } });
  const load = (env: NodeJS.ProcessEnv): Config => parseConfigText(yaml, 'site.yaml', 'yaml', env);

  it('overrides the file, key by key', () => {
    const cfg = load({
      VXEDGE_OVERLAY_MODE: 'tap',
      VXEDGE_UNDERLAY_PORT: '8473',
      VXEDGE_UNDERLAY_PUBLIC_IP: '198.51.100.2',
      VXEDGE_VXLAN_VTEP_MAC: '0E-5C-AA-00-00-01',
      VXEDGE_KEEPALIVE_INTERVAL: '10s',
      VXEDGE_OVERLAY_MSS_CLAMP: 'false',
      VXEDGE_OVERLAY_STRICT_PEERS: 'no',
      VXEDGE_BOARD_RELEASE_STARTUP_PAGES: 'false',
      VXEDGE_NAT_STUN: 'stun.example.com, 192.0.2.1:19302',
      VXEDGE_MQTT_URL: '',
      VXEDGE_VXLAN_MTU: '1400',
      VXEDGE_LOG_LEVEL: 'warn',
      VXEDGE_NODE: 'edge-2',
      HOME: '/root',
    });
    expect(cfg.overlay.mode).toBe('tap');
    expect(cfg.underlay.port).toBe(8473);
    expect(cfg.underlay.publicIp).toBe('198.51.100.2');
    expect(cfg.vxlan.vtepMac).toBe('0e:5c:aa:00:00:01');
    expect(cfg.keepalive.interval).toBe(10_000);
    expect(cfg.overlay.mssClamp).toBe(false);
    expect(cfg.overlay.strictPeers).toBe(false);
    expect(cfg.board.releaseStartupPages).toBe(false);
    expect(cfg.nat.stun).toEqual([
      { host: 'stun.example.com', port: 3478 },
      { host: '192.0.2.1', port: 19302 },
    ]);
    expect(cfg.mqtt.url).toBeNull(); // an empty variable unsets a nullable key
    expect(cfg.vxlan.mtu).toBe(1400);
    expect(cfg.log.level).toBe('warn');
    expect(cfg.node).toBe('edge-2');
  });

  it('VXEDGE_PEERS takes a JSON list, and its peers are checked like the file', () => {
    const cfg = load({ VXEDGE_PEERS: JSON.stringify([peer(1), peer(2, { port: 4789 })]), VXEDGE_VXLAN_PORT: '8999' });
    expect(cfg.peers).toEqual([
      { name: 'aws-1', publicIp: '203.0.113.1', port: 8999, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0e:00:00:00:00:01' },
      { name: 'aws-2', publicIp: '203.0.113.2', port: 4789, subnet: parseCidr('10.244.2.0/24'), vtepMac: '0e:00:00:00:00:02' },
    ]);
    const err = configError(() => load({ VXEDGE_PEERS: JSON.stringify([peer(1), peer(1)]) }));
    expectProblems(err, [
      ['peers[1].name', 'must be unique'],
      ['peers[1].subnet', 'overlaps peers[0]'],
      ['peers[1].vtepMac', 'vtepMac of peers[0]'],
    ]);
  });

  it('VXEDGE_NAT_STUN may also be a JSON list', () => {
    expect(load({ VXEDGE_NAT_STUN: '["a.example:1", "b.example"]' }).nat.stun.map((s) => s.port)).toEqual([1, 3478]);
  });

  it('names the variable when its value is bad', () => {
    const err = configError(() =>
      load({ VXEDGE_PEERS: '[{"name": ', VXEDGE_UNDERLAY_PORT: '84x', VXEDGE_OVERLAY_MODE: 'l2', VXEDGE_KEEPALIVE_TIMEOUT: '5s' }),
    );
    expectProblems(err, [
      ['peers', 'is not a JSON list of peers'],
      ['underlay.port', '(from VXEDGE_UNDERLAY_PORT)'],
      ['overlay.mode', '(from VXEDGE_OVERLAY_MODE)'],
      ['keepalive.timeout', 'must be longer than keepalive.interval'],
    ]);
    expect(err.problems.find((p) => p.key === 'peers')?.message).toContain('(from VXEDGE_PEERS)');
  });

  it('a VXEDGE_ variable that looks like a typo of a key is reported; others are ignored', () => {
    const err = configError(() => load({ VXEDGE_MQTT_ULR: 'mqtt://x', VXEDGE_CONFIG: '/etc/vxedge/site.yaml' }));
    expectProblems(err, [['VXEDGE_MQTT_ULR', 'did you mean "VXEDGE_MQTT_URL"?']]);
  });

  it('also takes the path upper-cased as it is (VXEDGE_<PATH> of the contract) for a camel-case key', () => {
    const cfg = load({ VXEDGE_UNDERLAY_PUBLICIP: '198.51.100.7', VXEDGE_VXLAN_VTEPMAC: '0e:5c:aa:00:00:07', VXEDGE_OVERLAY_MSSCLAMP: 'false' });
    expect(cfg.underlay.publicIp).toBe('198.51.100.7');
    expect(cfg.vxlan.vtepMac).toBe('0e:5c:aa:00:00:07');
    expect(cfg.overlay.mssClamp).toBe(false);
    // Both spellings with one value are one setting; a bad value names the variable it came from.
    expect(load({ VXEDGE_UNDERLAY_PUBLICIP: '198.51.100.7', VXEDGE_UNDERLAY_PUBLIC_IP: '198.51.100.7' }).underlay.publicIp).toBe('198.51.100.7');
    expectProblems(configError(() => load({ VXEDGE_UNDERLAY_PUBLICIP: '198.51.100.300' })), [['underlay.publicIp', '(from VXEDGE_UNDERLAY_PUBLICIP)']]);
  });

  it('refuses both spellings of a variable with different values', () => {
    const err = configError(() => load({ VXEDGE_UNDERLAY_PUBLICIP: '198.51.100.7', VXEDGE_UNDERLAY_PUBLIC_IP: '198.51.100.8' }));
    expectProblems(err, [['VXEDGE_UNDERLAY_PUBLICIP', 'so is VXEDGE_UNDERLAY_PUBLIC_IP, to another value (both set underlay.publicIp): unset one']]);
  });

  it('a typo of the upper-cased spelling is reported too', () => {
    expectProblems(configError(() => load({ VXEDGE_UNDERLAY_PUBLICPI: '198.51.100.7' })), [['VXEDGE_UNDERLAY_PUBLICPI', 'did you mean']]);
  });

  it('can supply a required key the file lacks', () => {
    const cfg = parseConfigText('site: lab\nnode: n\n', 'x.yaml', 'yaml', { VXEDGE_OVERLAY_SUBNET: '10.244.7.0/24' });
    expect(cfg.overlay.subnet.text).toBe('10.244.7.0/24');
  });
});

describe('errors', () => {
  it('collects every problem into one ConfigError', () => {
    const doc = {
      site: 'lab',
      node: 'edge-1',
      underlay: { prot: 8472 },
      overlay: { subnet: '10.245.0.0/24' },
      peers: [peer(1), peer(2, { vtepMac: 'zz:00:00:00:00:02' })],
    };
    const err = configError(() => parseConfigText(YAML.stringify(doc), '/etc/vxedge/site.yaml', 'yaml', NO_ENV));
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('ConfigError');
    expect(formatConfigError(err)).toBe(
      [
        'vxedge: invalid config /etc/vxedge/site.yaml (3 problems):',
        '  - underlay.prot: unknown key; did you mean "underlay.port"?',
        '  - peers[1].vtepMac: "zz:00:00:00:00:02" is not a MAC address (expected aa:bb:cc:dd:ee:ff)',
        `  - overlay.subnet: "10.245.0.0/24" is not inside overlay.network 10.244.0.0/16; pick a subnet of the cluster's pod network`,
      ].join('\n'),
    );
  });

  it('says "1 problem" for one', () => {
    const err = configError(() => parseConfigText('site: lab\n', 'x.yaml', 'yaml', NO_ENV, HOST));
    expect(formatConfigError(err).split('\n')[0]).toBe('vxedge: invalid config x.yaml (1 problem):');
  });

  it('never shows the MQTT password, in the value or in the block', () => {
    const secret = 's3cr3t-passw0rd';
    // Each case, and the problem that carries the secret with its value masked.
    const cases: [object, string, unknown][] = [
      [{ ...base, mqtt: { password: secret, passwordFile: '/p' } }, 'mqtt.password', '***'],
      [{ ...base, mqtt: { password: 123456 } }, 'mqtt.password', '***'],
      [{ ...base, mqtt: { url: `mqtt://user:${secret}@broker.example.com`, password: ['x'] }, vxlan: { vni: 0 } }, 'mqtt.password', '***'],
      [{ ...base, mqtt: { url: `http://user:${secret}@broker.example.com` } }, 'mqtt.url', 'http://user:***@broker.example.com'],
      [{ ...base, mqtt: { proxy: `socks5://user:${secret}@proxy.example:1080/x` } }, 'mqtt.proxy', 'socks5://user:***@proxy.example:1080/x'],
    ];
    for (const [doc, key, masked] of cases) {
      const err = configError(() => parseConfigText(JSON.stringify(doc), 'x.json', 'json', NO_ENV));
      const text = formatConfigError(err) + JSON.stringify(err.problems) + err.message;
      expect(text).not.toContain(secret);
      expect(text).not.toContain('123456');
      const problem = err.problems.find((p: ConfigProblem) => p.key === key);
      expect(problem, `${key} in ${formatConfigError(err)}`).toBeDefined();
      expect(problem!.value).toBe(masked);
    }
  });

  it('formats a hand-made error and masks a password value that slipped into a message', () => {
    const err = new ConfigError('site.yaml', [{ key: 'mqtt.password', value: 'pw123', message: '"pw123" is wrong' }]);
    expect(formatConfigError(err)).toBe('vxedge: invalid config site.yaml (1 problem):\n  - mqtt.password: "***" is wrong');
  });
});

describe('schema', () => {
  // The config table of the public contract (docs/contract.md). Keys beyond it are
  // extensions, marked so in the schema (and the README's reference says so).
  const CONTRACT_KEYS = [
    'site', 'node', 'stateDir', 'runDir',
    'underlay.iface', 'underlay.address', 'underlay.port', 'underlay.publicIp',
    'vxlan.vni', 'vxlan.port', 'vxlan.mtu', 'vxlan.vtepMac',
    'overlay.device', 'overlay.mode', 'overlay.network', 'overlay.subnet',
    'peers', 'keepalive.interval', 'keepalive.timeout', 'nat.stun', 'nat.portMapping',
    'cluster.source', 'cluster.register', 'cluster.kubernetes.kubeconfig', 'cluster.kubernetes.nodeName',
    'cluster.etcd.endpoints', 'cluster.etcd.prefix', 'cluster.etcd.ca', 'cluster.etcd.cert', 'cluster.etcd.key',
    'cluster.etcd.username', 'cluster.etcd.passwordFile',
    'mqtt.url', 'mqtt.topicPrefix', 'mqtt.interval', 'mqtt.username', 'mqtt.password', 'mqtt.passwordFile',
    'mqtt.ca', 'mqtt.cert', 'mqtt.key', 'log.level',
  ];
  const tree: SchemaTree = buildSchema('edge-1');

  it('has every contract key, marks every other key an extension, and gives each a doc, format and env', () => {
    const all = leaves(tree);
    const paths = all.map((l) => l.path);
    expect(paths.filter((p) => CONTRACT_KEYS.includes(p)).sort()).toEqual([...CONTRACT_KEYS].sort());
    expect(all.filter((l) => !CONTRACT_KEYS.includes(l.path) && !l.spec.extension).map((l) => l.path)).toEqual([]);
    expect(all.filter((l) => CONTRACT_KEYS.includes(l.path) && l.spec.extension).map((l) => l.path)).toEqual([]);
    for (const { path: key, spec, env } of all) {
      expect(spec.doc.length, key).toBeGreaterThan(5);
      expect(spec.format.name, key).toBeTruthy();
      expect(env, key).toMatch(/^VXEDGE_[A-Z0-9_]+$/);
    }
    // Every variable sets one key: no two keys share a name or an upper-cased alias.
    const names = all.flatMap((l) => [...new Set([l.env, envAlias(l.path)])].map((name) => [name, l.path]));
    const owners = new Map<string, string[]>();
    for (const [name, key] of names) owners.set(name, [...(owners.get(name) ?? []), key]);
    expect([...owners].filter(([, keys]) => keys.length > 1)).toEqual([]);
  });

  it.each([
    ['mqtt.url', 'VXEDGE_MQTT_URL'],
    ['underlay.publicIp', 'VXEDGE_UNDERLAY_PUBLIC_IP'],
    ['stateDir', 'VXEDGE_STATE_DIR'],
    ['vxlan.vtepMac', 'VXEDGE_VXLAN_VTEP_MAC'],
    ['mqtt.passwordFile', 'VXEDGE_MQTT_PASSWORD_FILE'],
    ['overlay.mssClamp', 'VXEDGE_OVERLAY_MSS_CLAMP'],
    ['peers', 'VXEDGE_PEERS'],
  ])('%s is set by %s', (key, env) => {
    expect(envName(key)).toBe(env);
  });

  it('marks mqtt.password sensitive', () => {
    expect(leaves(tree).find((l) => l.path === 'mqtt.password')?.spec.sensitive).toBe(true);
  });
});

describe('cluster.kubernetes.annotationPrefix: flanneld --kube-annotation-prefix', () => {
  // flannel's own table (pkg/subnet/kube/annotations_test.go), then the keys the API server refuses.
  const completed: [string, string][] = [
    ['flannel.alpha.coreos.com', 'flannel.alpha.coreos.com/'],
    ['flannel.alpha.coreos.com/', 'flannel.alpha.coreos.com/'],
    ['flannel.alpha.coreos.com/prefix', 'flannel.alpha.coreos.com/prefix-'],
    ['flannel.alpha.coreos.com/prefix-', 'flannel.alpha.coreos.com/prefix-'],
    ['org.com', 'org.com/'],
    ['org9.com', 'org9.com/'],
    ['org.com/9', 'org.com/9-'],
    ['org.com/a_b', 'org.com/a_b-'],
  ];
  it.each(completed)('%s is completed as flannel does: %s', (given, want) => expect(completeAnnotationPrefix(given)).toBe(want));

  const refused: [string, RegExp][] = [
    ['org', /"org" is not a lower-case domain name with a dot/],
    ['org/', /"org" is not a lower-case domain name/],
    ['org/prefix', /"org" is not a lower-case domain name/],
    ['org.COM', /"org\.COM" is not a lower-case domain name/],
    ['org.com/PREFIX', /the name after "\/", "PREFIX", must start with a lower-case letter or digit/],
    ['org.com/a/b', /has more than one "\/"/],
    // flannel takes these (its pattern is anchored at the end only); Kubernetes refuses the keys.
    ['Org.com', /"Org\.com" is not a lower-case domain name/],
    ['org_x.com', /"org_x\.com" is not a lower-case domain name/],
    ['org.com/-x', /the name after "\/", "-x", must start/],
    ['', /"" is not a lower-case domain name/],
    [`org.com/${'a'.repeat(42)}`, /too long: flannel's annotation "org\.com\/a{42}-public-ipv6-overwrite" would have a name of 64 characters, and Kubernetes allows 63$/],
  ];
  it.each(refused)('%j is refused: %s', (given, why) => expect(() => completeAnnotationPrefix(given)).toThrow(why));
  it('a name of 41 characters fits (41 + "-" + "public-ipv6-overwrite" = 63)', () => expect(completeAnnotationPrefix(`org.com/${'a'.repeat(41)}`)).toBe(`org.com/${'a'.repeat(41)}-`));

  it('defaults to flannel\'s, is kept as written, and is read from the environment', () => {
    expect(DEFAULTS.cluster.kubernetes.annotationPrefix).toBe('flannel.alpha.coreos.com');
    const doc = JSON.stringify({ ...base, cluster: { source: 'kubernetes', kubernetes: { annotationPrefix: 'example.com/net' } } });
    expect(parseConfigText(doc, 'site.json', 'json', NO_ENV).cluster.kubernetes.annotationPrefix).toBe('example.com/net');
    const env = { VXEDGE_CLUSTER_KUBERNETES_ANNOTATION_PREFIX: 'example.org' };
    expect(parseConfigText(doc, 'site.json', 'json', env).cluster.kubernetes.annotationPrefix).toBe('example.org');
  });
});

describe('cluster.kubernetes.annotationPrefix: every prefix taken makes keys the API server takes', () => {
  // apimachinery's IsQualifiedName: an optional DNS-1123 subdomain prefix (at most 253), "/",
  // and a name of at most 63 that starts and ends alphanumeric.
  const QUALIFIED = /^(?:([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)\/)?([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
  const qualified = (key: string) => {
    const m = QUALIFIED.exec(key);
    return m !== null && (m[1] ?? '').length <= 253 && m[5]!.length <= 63;
  };
  const NAMES = ['kube-subnet-manager', 'backend-type', 'backend-data', 'backend-v6-data', 'public-ip', 'public-ip-overwrite', 'public-ipv6', 'public-ipv6-overwrite', 'node-public-ip', 'node-public-ipv6'];
  const piece = fc.stringMatching(/^[a-zA-Z0-9_.\/-]{0,12}$/);
  // Near misses of a good prefix: lower-case labels (some starting or ending with "-"), a name
  // of up to 45 (some too long, some starting with "_"), an optional "-" or "/" at the end.
  const label = fc.oneof({ weight: 5, arbitrary: fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?$/) }, { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9-]{1,8}$/) });
  const name = fc.oneof(
    { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,30}[-/]?$/) },
    { weight: 2, arbitrary: fc.stringMatching(/^[a-z0-9][a-z0-9-]{38,46}$/) }, // around the longest that fits (41)
    { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9_-]{0,45}\/?$/) },
  );
  const plausible = fc.tuple(fc.array(label, { minLength: 1, maxLength: 4 }), fc.option(name)).map(
    ([labels, name]) => labels.join('.') + (name === null ? '' : `/${name}`),
  );

  it('accepted: every flannel key qualified, and completing again changes nothing; refused: an Error that quotes the value', () => {
    let accepted = 0;
    let refused = 0;
    fc.assert(fc.property(fc.oneof(plausible, piece, fc.tuple(piece, piece).map(([a, b]) => `${a}.${b}`), fc.string({ maxLength: 80 })), (given) => {
      let done: string;
      try {
        done = completeAnnotationPrefix(given);
      } catch (e) {
        refused++;
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message.startsWith(JSON.stringify(given).slice(0, 20))).toBe(true);
        return;
      }
      accepted++;
      for (const n of NAMES) expect(qualified(done + n), done + n).toBe(true);
      expect(completeAnnotationPrefix(done)).toBe(done);
    }), { numRuns: 2000 });
    // Both ways were taken often enough to mean something.
    expect(accepted).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(100);
  });
});
