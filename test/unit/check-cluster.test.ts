// `vxedge check`'s cluster line (src/cli/check-cluster.ts): the real etcd source over an
// in-memory etcd (fake-etcd.ts) on a ManualClock, asked once with registration off. What the
// line says for a usable cluster, for one whose nodes are all left out, for an empty prefix,
// for a net-conf that is not VXLAN, and for an etcd that never answers; and that nothing is
// ever written. The same line against a real etcd and the Kubernetes stand-in: test/lab.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { beforeStart, clusterPreflight, CLUSTER_CHECK_WAIT_MS, judged, sourceName, type ClusterPreflight } from '../../src/cli/check-cluster.js';
import { EtcdSource } from '../../src/cluster/etcd.js';
import { encodeLease } from '../../src/cluster/flannel-lease.js';
import { configFromObject } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { CaptureLog, settle } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';
import { FakeEtcd } from './fake-etcd.js';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-check-cluster-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}';
const SITE_MAC = '0e:5c:aa:00:00:01';
const key = (subnet: string) => `${PREFIX}/subnets/${subnet}`;
const lease = (ip: string, mac: string, vni = 1) => encodeLease({ publicIp: ip, vni, vtepMac: mac });

function config(extra: Record<string, unknown> = {}): Config {
  return configFromObject({
    site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, vxlan: { vtepMac: SITE_MAC },
    stateDir: path.join(TMP, 'state'), runDir: path.join(TMP, 'run'),
    cluster: { source: 'etcd', register: true, etcd: { endpoints: ['http://192.0.2.10:2379'] } },
    ...extra,
  }, 'site.yaml', {});
}

/** Runs the preflight against `fake` (or a connect that never completes), moving the clock until it answers. */
async function ask(
  cfg: Config, fake: FakeEtcd | 'never' | Record<string, FakeEtcd | 'never'>, clock: ManualClock, auth?: { username: string; passwordFile: string }, probeCertificate?: ConstructorParameters<typeof EtcdSource>[0]['probeCertificate'],
): Promise<{ r: ClusterPreflight | null; elapsedMs: number; sources: EtcdSource[] }> {
  const sources: EtcdSource[] = [];
  const start = clock.monotonic();
  let r: ClusterPreflight | null | undefined;
  const p = clusterPreflight(cfg, {
    clock,
    load: async (c, o) => {
      const f = fake instanceof FakeEtcd || fake === 'never' ? fake : fake[c.cluster.etcd.endpoints.join(',')];
      const s = new EtcdSource({
        endpoints: c.cluster.etcd.endpoints, prefix: c.cluster.etcd.prefix, network: c.overlay.network, subnet: c.overlay.subnet, vni: c.vxlan.vni,
        register: o.register, callTimeoutMs: o.requestTimeoutMs, clock: o.clock, log: new CaptureLog(), backoff: { random: () => 0.5 }, auth,
        connect: f === 'never' ? () => new Promise(() => undefined) : async () => f, probeCertificate,
      });
      sources.push(s);
      return s;
    },
  }).then((v) => (r = v));
  for (let t = 0; r === undefined && t < 2 * CLUSTER_CHECK_WAIT_MS; t += 100) {
    await settle();
    if (r === undefined) clock.advance(100);
  }
  await p;
  return { r: r!, elapsedMs: clock.monotonic() - start, sources };
}

function etcdWith(clock: ManualClock, leases: [string, string][], conf: string | null = CONFIG): FakeEtcd {
  const fake = new FakeEtcd(clock);
  if (conf !== null) fake.put(`${PREFIX}/config`, conf);
  for (const [subnet, value] of leases) fake.put(key(subnet), value);
  return fake;
}

describe('vxedge check: the cluster line (etcd)', () => {
  it('a static site has no cluster line', async () => {
    expect(await clusterPreflight(config({ cluster: { source: 'static' } }))).toBeNull();
  });

  it('counts the leases and the peers, names what is left out and why, and writes nothing though cluster.register is on', async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, [
      ['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')],
      ['10.244.2.0-24', lease('203.0.113.20', '0e:00:00:00:02:01')],
      ['10.244.3.0-24', lease('203.0.113.30', SITE_MAC)],
      ['10.244.4.0-24', lease('203.0.113.40', '0e:00:00:00:04:01', 7)],
    ]);
    const { r, elapsedMs, sources } = await ask(config(), fake, clock);
    expect(r!.check.ok).toBe(true);
    expect(r!.check.detail).toMatch(/^etcd http:\/\/192\.0\.2\.10:2379 \(prefix \/coreos\.com\/network\): 4 lease\(s\), 2 peer\(s\) from the cluster; left out: /);
    // The source's own rule (VNI) and the merge's (the site's own VTEP MAC), both named.
    expect(r!.check.detail).toMatch(/etcd-10\.244\.4\.0-24 \([^)]*VNI 7/);
    expect(r!.check.detail).toMatch(/etcd-10\.244\.3\.0-24 \(its VTEP MAC 0e:5c:aa:00:00:01 is this site's own/);
    expect(r!.peers!.map((p) => p.publicIp).sort()).toEqual(['203.0.113.10', '203.0.113.20']);
    expect(elapsedMs).toBeLessThan(1_000); // answered at the first list, not at the wait's end
    expect(fake.puts).toEqual([]);
    expect(fake.value(key('10.244.100.0-24'))).toBeUndefined();
  });

  it('static peers are counted beside the cluster\'s and win a conflict, as at start', async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')], ['10.244.2.0-24', lease('203.0.113.20', '0e:00:00:00:02:01')]]);
    const cfg = config({ peers: [{ name: 'aws-x', publicIp: '203.0.113.99', subnet: '10.244.1.0/24', vtepMac: '0e:00:00:00:99:01' }] });
    const { r } = await ask(cfg, fake, clock);
    expect(r!.check).toMatchObject({ ok: true, detail: expect.stringMatching(/2 lease\(s\), 1 peer\(s\) from the cluster and 1 static; left out: etcd-10\.244\.1\.0-24 \(its subnet 10\.244\.1\.0\/24 overlaps the static peer aws-x/) });
    expect(r!.peers!.map((p) => p.name)).toEqual(['aws-x', 'etcd-10.244.2.0-24']);
  });

  it("the site's subnet held by another VTEP MAC: registration would be refused, so the line fails naming the holder; the site's own lease passes", async () => {
    const clock = new ManualClock();
    const peers: [string, string][] = [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')]];
    const foreign = etcdWith(clock, [...peers, ['10.244.100.0-24', lease('203.0.113.66', '0a:dd:00:00:00:66')]]);
    const { r } = await ask(config(), foreign, clock);
    expect(r!.check.ok).toBe(false);
    expect(r!.check.detail).toMatch(/1 peer\(s\) from the cluster; the site's subnet 10\.244\.100\.0\/24 is held in etcd by another node \(PublicIP 203\.0\.113\.66, VtepMAC 0a:dd:00:00:00:66; key \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24\): registering the site \(cluster\.register\) would be refused\. If that node is alive, give this site a free overlay\.subnet/);
    expect(foreign.puts).toEqual([]);
    // With registration off, nothing would be written, so nothing would be refused.
    const off = new ManualClock();
    const { r: r2 } = await ask(config({ cluster: { source: 'etcd', register: false, etcd: { endpoints: ['http://192.0.2.10:2379'] } } }), etcdWith(off, [...peers, ['10.244.100.0-24', lease('203.0.113.66', '0a:dd:00:00:00:66')]]), off);
    expect(r2!.check.ok).toBe(true);
    // The site's own lease (its VTEP MAC) from an earlier start.
    const mine = new ManualClock();
    const { r: r3 } = await ask(config(), etcdWith(mine, [...peers, ['10.244.100.0-24', lease('198.51.100.2', SITE_MAC)]]), mine);
    expect(r3!.check).toMatchObject({ ok: true, detail: expect.stringMatching(/this site's own lease is there: etcd-10\.244\.100\.0-24 \(holds the site's own subnet 10\.244\.100\.0\/24 \(PublicIP 198\.51\.100\.2, VtepMAC 0e:5c:aa:00:00:01\)\)$/) });
  });

  it('a user that may read but not write the subnets: registration would fail, so the line fails saying what to grant; asked without writing', async () => {
    const peers: [string, string][] = [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')]];
    const auth = { username: 'site-gw', passwordFile: path.join(TMP, 'pw') };
    const clock = new ManualClock();
    const ro = etcdWith(clock, peers);
    ro.readOnly.push(`${PREFIX}/subnets/`);
    const { r } = await ask(config(), ro, clock, auth);
    expect(r!.check.ok).toBe(false);
    expect(r!.check.detail).toMatch(/1 peer\(s\) from the cluster; etcd user "site-gw" may not write \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24: registering the site \(cluster\.register\) would fail \(permission denied\); grant its role write access to that key \(etcdctl role grant-permission ROLE readwrite \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24; vxedge rbac -c FILE prints every command\), or set cluster\.register to false and write the site's lease yourself \(vxedge manifest -c FILE --etcd prints it\)$/);
    expect(ro.calls.mayPut).toBe(1);
    expect(ro.puts).toEqual([]);
    expect(ro.value(key('10.244.100.0-24'))).toBeUndefined();
    // Without a user name (a client certificate), the line says whose name etcd goes by.
    const cert = new ManualClock();
    const ro2 = etcdWith(cert, peers);
    ro2.readOnly.push(`${PREFIX}/`);
    const { r: r2 } = await ask(config(), ro2, cert);
    expect(r2!.check.detail).toMatch(/this client \(the etcd user its certificate names\) may not write/);
    // With registration off nothing is written, so nothing is asked.
    const off = new ManualClock();
    const ro3 = etcdWith(off, peers);
    ro3.readOnly.push(`${PREFIX}/`);
    const { r: r3 } = await ask(config({ cluster: { source: 'etcd', register: false, etcd: { endpoints: ['http://192.0.2.10:2379'] } } }), ro3, off);
    expect(r3!.check.ok).toBe(true);
    expect(ro3.calls.mayPut).toBe(0);
    // A write permission granted: passes, having asked.
    const rw = new ManualClock();
    const ok = etcdWith(rw, peers);
    const { r: r4 } = await ask(config(), ok, rw);
    expect(r4!.check.ok).toBe(true);
    expect(ok.calls.mayPut).toBe(1);
    // An etcd that fails the question (not a refusal): nothing can be told, the line stands on the list.
    const flaky = new ManualClock();
    const f = etcdWith(flaky, peers);
    f.failNext('mayPut', 'unavailable', '14 UNAVAILABLE: connection reset');
    const { r: r5 } = await ask(config(), f, flaky);
    expect(r5!.check.ok).toBe(true);
  });

  it('every lease left out: fails, naming the reasons and the keys to compare', async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01', 2)], ['10.244.2.0-24', lease('203.0.113.20', '0e:00:00:00:02:01', 2)]]);
    const { r } = await ask(config(), fake, clock);
    expect(r!.check.ok).toBe(false);
    expect(r!.check.detail).toMatch(/2 lease\(s\), 0 peer\(s\) from the cluster: no peer to reach; left out: etcd-10\.244\.1\.0-24 \([^)]*VNI 2/);
    expect(r!.check.fix).toMatch(/overlay\.network and vxlan\.vni/);
    expect(r!.check.fix).not.toMatch(/annotationPrefix/);
  });

  it('no lease under the prefix: fails, asking whether the prefix is flanneld\'s', async () => {
    const clock = new ManualClock();
    const { r } = await ask(config(), etcdWith(clock, []), clock);
    expect(r!.check).toMatchObject({ ok: false, detail: expect.stringMatching(/0 lease\(s\), 0 peer\(s\) from the cluster: no peer to reach$/), fix: expect.stringMatching(/cluster\.etcd\.prefix .*--etcd-prefix/) });
  });

  it("a net-conf that is not VXLAN: fails with the source's own sentence at once", async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')]], '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}');
    const { r, elapsedMs } = await ask(config(), fake, clock);
    expect(r!.check.ok).toBe(false);
    expect(r!.check.detail).toMatch(/^etcd http:\/\/192\.0\.2\.10:2379 \(prefix \/coreos\.com\/network\): .*host-gw/);
    expect(r!.peers).toBeNull();
    expect(elapsedMs).toBeLessThan(1_000);
  });

  it('an etcd that never answers: fails when the wait is over, not before, naming the endpoints; a stop that hangs is not waited for', async () => {
    const clock = new ManualClock();
    const { r, elapsedMs } = await ask(config(), 'never', clock);
    // The wait, then at most 2 s for the source to stop (its connection never completed, so its stop never ends).
    expect(elapsedMs).toBeGreaterThanOrEqual(CLUSTER_CHECK_WAIT_MS);
    expect(elapsedMs).toBeLessThanOrEqual(CLUSTER_CHECK_WAIT_MS + 2_000 + 100);
    expect(r!.check).toMatchObject({ ok: false, detail: expect.stringMatching(/: no answer within 10 s$/), fix: expect.stringMatching(/reaches http:\/\/192\.0\.2\.10:2379/) });
  });

  it("calls that time out end in the source's sentence, naming the endpoint, before the wait is over", async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, []);
    fake.hang = true;
    const { r, elapsedMs } = await ask(config(), fake, clock);
    expect(r!.check).toMatchObject({ ok: false, detail: 'etcd http://192.0.2.10:2379 (prefix /coreos.com/network): etcd at http://192.0.2.10:2379 did not answer in time (list /coreos.com/network/subnets/: no answer within 8s): it is unreachable, overloaded, or cut off from the rest of its cluster; list every member in cluster.etcd.endpoints' });
    expect(elapsedMs).toBeLessThan(CLUSTER_CHECK_WAIT_MS);
  });

  describe('several members, each asked on its own', () => {
    const A = 'http://192.0.2.10:2379';
    const B = 'http://192.0.2.11:2379';
    const two = config({ cluster: { source: 'etcd', register: false, etcd: { endpoints: [A, B] } } });
    const leases: [string, string][] = [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')]];

    it('one whose calls time out: the line passes with the peers of the other, and names the one that did not serve', async () => {
      const clock = new ManualClock();
      const a = etcdWith(clock, leases);
      a.hang = true;
      const { r, elapsedMs, sources } = await ask(two, { [A]: a, [B]: etcdWith(clock, leases) }, clock);
      expect(sources).toHaveLength(2);
      expect(r!.check).toEqual({
        name: 'cluster', ok: true,
        detail: `etcd ${A},${B} (prefix /coreos.com/network): 1 lease(s), 1 peer(s) from the cluster; 1 of 2 members did not serve (the gateway goes on with the others): etcd at ${A} did not answer in time (list /coreos.com/network/subnets/: no answer within 8s): it is unreachable, overloaded, or cut off from the rest of its cluster`,
      });
      expect(r!.peers!.map((p) => p.publicIp)).toEqual(['203.0.113.10']);
      expect(elapsedMs).toBeLessThan(CLUSTER_CHECK_WAIT_MS);
    });

    it('one never reached: named with the wait once it is over', async () => {
      const clock = new ManualClock();
      const { r, elapsedMs } = await ask(two, { [A]: etcdWith(clock, leases), [B]: 'never' }, clock);
      expect(r!.check.ok).toBe(true);
      expect(r!.check.detail).toMatch(new RegExp(`1 peer\\(s\\) from the cluster; 1 of 2 members did not serve \\(the gateway goes on with the others\\): ${B}: no answer within 10 s$`));
      expect(elapsedMs).toBeGreaterThanOrEqual(CLUSTER_CHECK_WAIT_MS);
    });

    it('none serving: fails with what each said; the same sentence from each is said once', async () => {
      const clock = new ManualClock();
      const a = etcdWith(clock, leases);
      a.hang = true;
      const { r } = await ask(two, { [A]: a, [B]: 'never' }, clock);
      expect(r!.check).toMatchObject({
        ok: false,
        detail: `etcd ${A},${B} (prefix /coreos.com/network): etcd at ${A} did not answer in time (list /coreos.com/network/subnets/: no answer within 8s): it is unreachable, overloaded, or cut off from the rest of its cluster; ${B}: no answer within 10 s`,
        fix: expect.stringMatching(/reaches http:\/\/192\.0\.2\.10:2379, http:\/\/192\.0\.2\.11:2379/),
      });
      const same = new ManualClock();
      const hostGw = '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}';
      const { r: r2 } = await ask(two, { [A]: etcdWith(same, leases, hostGw), [B]: etcdWith(same, leases, hostGw) }, same);
      expect(r2!.check.ok).toBe(false);
      expect(r2!.check.detail.match(/host-gw/g)).toHaveLength(1);
    });
  });

  it("etcd's members' certificates, read by the source's handshake, are handed on for the certificates line once read", async () => {
    const clock = new ManualClock();
    const fake = etcdWith(clock, [['10.244.1.0-24', lease('203.0.113.10', '0e:00:00:00:01:01')]]);
    const validity = { from: new Date('2026-01-01T00:00:00Z'), to: new Date('2026-12-01T00:00:00Z') };
    // Each handshake answers 3 s after the view: the line waits for it.
    const probe = (o: { host: string; port: number }) => new Promise<typeof validity>((resolve) => clock.after(3_000, () => resolve(validity)));
    const cfg = config({ cluster: { source: 'etcd', register: false, etcd: { endpoints: ['https://192.0.2.10:2379', 'https://192.0.2.11:2379'] } } });
    const { r, elapsedMs } = await ask(cfg, fake, clock, undefined, probe);
    expect(r?.check.ok).toBe(true);
    expect(elapsedMs).toBeGreaterThanOrEqual(3_000);
    expect(r?.presented).toEqual([
      { what: "etcd's certificate (https://192.0.2.10:2379)", validity, presented: true },
      { what: "etcd's certificate (https://192.0.2.11:2379)", validity, presented: true },
    ]);
  });

  it("the running gateway's words (peers kept, the next retry) are taken out of a source's error", () => {
    expect(beforeStart('cannot reach etcd at X (list: refused); the last known peers stay in use; retrying in 1.5s')).toBe('cannot reach etcd at X (list: refused)');
    expect(beforeStart('the config at /p/config is not VXLAN; retrying in 30s')).toBe('the config at /p/config is not VXLAN');
    expect(beforeStart('the API server at X is shedding load (429 …) and refused to list nodes; retrying later')).toBe('the API server at X is shedding load (429 …) and refused to list nodes');
    expect(beforeStart('etcd at X is out of space (…): … (etcdctl alarm disarm); peers are still followed')).toBe('etcd at X is out of space (…): … (etcdctl alarm disarm)');
    expect(beforeStart('kubernetes: 403 on list nodes: run `vxedge rbac`')).toBe('kubernetes: 403 on list nodes: run `vxedge rbac`');
  });
});

describe('vxedge check: the cluster line (Kubernetes, dual-stack flannel)', () => {
  const kube = () => config({ cluster: { source: 'kubernetes', register: true } });
  const peer = { name: 'aws-a', publicIp: '203.0.113.1', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0e:00:00:00:01:01' };
  const own = { name: 'vxedge-lab-e1', why: 'this gateway itself' };

  it('fails naming the dual-stack nodes and the fix, though every node is a peer', () => {
    const r = judged(kube(), 'kubernetes (kubeconfig k)', { nodes: 2, peers: [peer], skipped: [own], dualStack: ['aws-a'] }, SITE_MAC);
    expect(r.check).toEqual({
      name: 'cluster', ok: false,
      detail: 'kubernetes (kubeconfig k): 2 Node(s), 1 peer(s) from the cluster; 1 flannel node(s) run dual-stack (aws-a: flannel.alpha.coreos.com/public-ipv6 set) ' +
        'and route nothing to this site: flanneld with EnableIPv6 skips a Node without an IPv6 public IP and podCIDR, and the site announces IPv4 only',
      fix: expect.stringMatching(/^vxedge carries IPv4 only: set "EnableIPv6": false in flannel's net-conf\.json/),
    });
    expect(r.peers).toEqual([peer]);
  });

  it('every Node left out: the fix names the annotation prefix beside the network and the VNI, and the dual-stack and, in a cluster under another prefix, the keys under it', () => {
    const kubeNet = config({ cluster: { source: 'kubernetes', register: true, kubernetes: { annotationPrefix: 'example.com/net' } } });
    const other = { name: 'aws-a', why: 'its flannel annotations are under flannel.alpha.coreos.com/ (flanneld --kube-annotation-prefix), not example.com/net-, …' };
    const r = judged(kubeNet, 'kubernetes (kubeconfig k)', { nodes: 2, peers: [], skipped: [own, other] }, SITE_MAC);
    expect(r.check).toMatchObject({ ok: false, detail: expect.stringContaining('2 Node(s), 0 peer(s) from the cluster: no peer to reach; left out: aws-a (its flannel annotations are under') });
    expect(r.check.fix).toBe(
      "every node was left out, each for the reason named: overlay.network and vxlan.vni must be the cluster's (flannel's net-conf.json), " +
        "and cluster.kubernetes.annotationPrefix its flanneld's --kube-annotation-prefix",
    );
    const dual = judged(kubeNet, 'kubernetes (kubeconfig k)', { nodes: 2, peers: [peer], skipped: [own], dualStack: ['aws-a'] }, SITE_MAC);
    expect(dual.check.detail).toContain('(aws-a: example.com/net-public-ipv6 set)');
    expect(dual.check.fix).toMatch(/kubectl annotate nodes --all example\.com\/net-public-ipv6- example\.com\/net-backend-v6-data-$/);
  });

  it('the line names the source, and the annotation prefix when it is not flannel\'s default', () => {
    expect(sourceName(config({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig: '/k' } } }))).toBe('kubernetes (kubeconfig /k)');
    expect(sourceName(config({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig: '/k', annotationPrefix: 'flannel.alpha.coreos.com/' } } }))).toBe('kubernetes (kubeconfig /k)');
    expect(sourceName(config({ cluster: { source: 'kubernetes', kubernetes: { annotationPrefix: 'example.com/net' } } }))).toBe(
      'kubernetes ($KUBECONFIG or the in-cluster service account, annotations under example.com/net-)',
    );
  });

  it('passes without them, naming the site\'s own Node', () => {
    const r = judged(kube(), 'kubernetes (kubeconfig k)', { nodes: 2, peers: [peer], skipped: [own] }, SITE_MAC);
    expect(r.check).toEqual({ name: 'cluster', ok: true, detail: "kubernetes (kubeconfig k): 2 Node(s), 1 peer(s) from the cluster; this site's own Node is there: vxedge-lab-e1 (this gateway itself)" });
  });
});
