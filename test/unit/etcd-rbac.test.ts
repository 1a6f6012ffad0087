// `vxedge rbac` for an etcd site (src/cluster/etcd-rbac.ts): what the role is granted, which
// user gets it, and what the script does, run by sh against a stand-in etcdctl that records
// every call (its `user get` answers as told). The same script against a real etcd, and a
// gateway living with exactly those rights: test/lab/cluster-etcd.test.ts ("vxedge rbac").
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { etcdGrants, etcdRbacScript, etcdUserFor } from '../../src/cluster/etcd-rbac.js';
import { configFromObject } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { makePki } from '../support/kube-harness.js';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-etcd-rbac-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

function config(etcd: Record<string, unknown>): Config {
  return configFromObject({
    site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' }, vxlan: { vtepMac: '0e:5c:aa:00:00:01' },
    cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'], ...etcd } },
  }, 'site.yaml', {});
}

/**
 * Runs `script` with sh and an etcdctl of our own first in PATH: it appends its arguments (one
 * per line, NUL-separated words) to a log, fails `user get` unless `userExists`, and fails
 * `role get` (no role yet). stdin is not a terminal.
 */
function runScript(script: string, userExists: boolean): { code: number | null; stderr: string; calls: string[][] } {
  const dir = mkdtempSync(path.join(TMP, 'run-'));
  const log = path.join(dir, 'calls');
  writeFileSync(path.join(dir, 'etcdctl'), [
    '#!/bin/sh',
    `for a in "$@"; do printf '%s\\0' "$a" >> '${log}'; done; printf '\\n' >> '${log}'`,
    `[ "$1 $2" = "user get" ] && exit ${userExists ? 0 : 1}`,
    '[ "$1 $2" = "role get" ] && exit 1',
    'exit 0',
  ].join('\n'));
  chmodSync(path.join(dir, 'etcdctl'), 0o755);
  writeFileSync(path.join(dir, 'script.sh'), script);
  const r = spawnSync('sh', [path.join(dir, 'script.sh')], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}` }, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 });
  let text = '';
  try {
    text = readFileSync(log, 'utf8');
  } catch {
    /* no call */
  }
  const calls = text.split('\n').filter(Boolean).map((l) => l.split('\0').filter((w, i, a) => i < a.length - 1 || w !== ''));
  return { code: r.status, stderr: r.stderr, calls };
}

describe('vxedge rbac for etcd', () => {
  it("grants read on the network's config and every lease, and write on the site's own lease key only", () => {
    expect(etcdGrants('/coreos.com/network', parseCidr('10.244.100.0/24'))).toEqual([
      { permission: 'read', key: '/coreos.com/network/config', prefix: false },
      { permission: 'read', key: '/coreos.com/network/subnets/', prefix: true },
      { permission: 'readwrite', key: '/coreos.com/network/subnets/10.244.100.0-24', prefix: false },
    ]);
  });

  it('a password user: the role is made and granted; a user that does not exist is not made without a terminal, and the script says how', () => {
    const cfg = config({ prefix: '/flannel/net', username: 'site-gw', passwordFile: '/etc/vxedge/etcd-password' });
    const { user, note } = etcdUserFor(cfg);
    expect([user, note]).toEqual([{ name: 'site-gw', login: 'password' }, null]);
    const script = etcdRbacScript({ site: cfg.site, node: cfg.node, prefix: cfg.cluster.etcd.prefix, subnet: cfg.overlay.subnet, user });
    expect(spawnSync('sh', ['-n'], { input: script }).status).toBe(0);

    const existing = runScript(script, true);
    expect(existing.code, existing.stderr).toBe(0);
    expect(existing.calls).toEqual([
      ['role', 'get', 'vxedge-lab-edge-1'],
      ['role', 'add', 'vxedge-lab-edge-1'],
      ['role', 'grant-permission', 'vxedge-lab-edge-1', 'read', '/flannel/net/config'],
      ['role', 'grant-permission', 'vxedge-lab-edge-1', 'read', '--prefix=true', '/flannel/net/subnets/'],
      ['role', 'grant-permission', 'vxedge-lab-edge-1', 'readwrite', '/flannel/net/subnets/10.244.100.0-24'],
      ['user', 'get', 'site-gw'],
      ['user', 'grant-role', 'site-gw', 'vxedge-lab-edge-1'],
    ]);

    const missing = runScript(script, false);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('user site-gw does not exist: create it with etcdctl user add site-gw');
    expect(missing.calls.some((c) => c[0] === 'user' && c[1] !== 'get')).toBe(false);
  });

  it("a client certificate: its common name is the user, made without a password; a name with quotes stays one word", () => {
    const pki = makePki(path.join(TMP, 'pki'), { clients: [{ cn: "o'brien gw" }] }) as { clients: Record<string, { certFile: string; keyFile: string }> };
    const c = pki.clients["o'brien gw"];
    const cfg = config({ cert: c.certFile, key: c.keyFile });
    const { user, note } = etcdUserFor(cfg);
    expect([user, note]).toEqual([{ name: "o'brien gw", login: 'certificate' }, null]);
    const r = runScript(etcdRbacScript({ site: cfg.site, node: cfg.node, prefix: cfg.cluster.etcd.prefix, subnet: cfg.overlay.subnet, user }), false);
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls.slice(-3)).toEqual([
      ['user', 'get', "o'brien gw"],
      ['user', 'add', "o'brien gw", '--no-password'],
      ['user', 'grant-role', "o'brien gw", 'vxedge-lab-edge-1'],
    ]);
  });

  it('no user configured, or a certificate that cannot be read: the role alone, and a note saying why', () => {
    const none = etcdUserFor(config({}));
    expect(none.user).toBeNull();
    expect(none.note).toMatch(/neither cluster\.etcd\.username nor cluster\.etcd\.cert is set/);
    const gone = path.join(TMP, 'nothing.pem');
    const unreadable = etcdUserFor(config({ cert: gone, key: gone }));
    expect(unreadable.user).toBeNull();
    expect(unreadable.note).toMatch(new RegExp(`cannot read the common name of cluster\\.etcd\\.cert ${gone.replace(/[.]/g, '\\.')} \\(.*\\): etcd takes it as the user name`));
    const script = etcdRbacScript({ site: 'lab', node: 'edge-1', prefix: '/coreos.com/network', subnet: parseCidr('10.244.100.0/24'), user: null });
    const r = runScript(script, false);
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls.map((c) => c.slice(0, 2).join(' '))).toEqual(['role get', 'role add', 'role grant-permission', 'role grant-permission', 'role grant-permission']);
    expect(script).toContain('etcdctl user grant-role USER "$role"');
  });
});
