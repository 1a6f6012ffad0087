// The etcd cluster source (src/cluster/etcd.ts) against an in-memory etcd (fake-etcd.ts) on a
// ManualClock: following (list, watch, churn, compaction, outages, config checks) and keeping
// our own lease (exact value, TTL and renewal, conflicts, re-puts). Also the adapter's error
// sorting and the prefix range (src/cluster/etcd-grpc-kv.ts, etcd-kv.ts).
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ETCD_DEFAULTS, EtcdSource, type EtcdSourceOptions } from '../../src/cluster/etcd.js';
import { EtcdKvError, prefixRangeEnd } from '../../src/cluster/etcd-kv.js';
import { classifyEtcdError, connectEtcdGrpc } from '../../src/cluster/etcd-grpc-kv.js';
import { ProtoError } from '../../src/cluster/etcd-proto.js';
import { GrpcConnectError, GrpcStatusError } from '../../src/cluster/grpc-h2.js';
import { encodeLease } from '../../src/cluster/flannel-lease.js';
import type { ClusterView, OwnLease } from '../../src/cluster/types.js';
import { parseCidr } from '../../src/util/ipv4.js';
import { CaptureLog, settle } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';
import { FakeEtcd } from './fake-etcd.js';

const PREFIX = '/coreos.com/network';
const CONFIG_KEY = `${PREFIX}/config`;
const CONFIG = '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}';
const OWN_KEY = `${PREFIX}/subnets/10.244.100.0-24`;
const ENDPOINTS = ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'];
const OUR_MAC = '0e:5c:aa:00:00:01';
const OWN: OwnLease = { name: 'vxedge-lab-edge-1', subnet: parseCidr('10.244.100.0/24'), vni: 1, vtepMac: OUR_MAC, publicIp: '198.51.100.2' };
const OUR_VALUE = '{"PublicIP":"198.51.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:5c:aa:00:00:01"}}';

const key = (subnet: string) => `${PREFIX}/subnets/${subnet}`;
const value = (ip: string, mac: string, type = 'vxlan') => encodeLease({ publicIp: ip, vni: 1, vtepMac: mac }).replace('"vxlan"', JSON.stringify(type));

/**
 * Moves the clock forward in steps, letting async work run between them. Keep steps shorter
 * than the call timeout (15 s): within one step, timers run before any answer can arrive.
 * Not ManualClock.advanceAsync on purpose: that lets async work run after every timer, and over
 * the days of clock time some tests here span, it made this file 20 times slower (10 s).
 */
async function run(clock: ManualClock, ms: number, step = 100): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    clock.advance(Math.min(step, ms - t));
    await settle();
  }
}

function setup(opts: Partial<EtcdSourceOptions> = {}, config: string | null = CONFIG) {
  const clock = new ManualClock();
  const fake = new FakeEtcd(clock);
  if (config !== null) fake.put(CONFIG_KEY, config);
  const log = new CaptureLog();
  const src = new EtcdSource({
    endpoints: ENDPOINTS,
    prefix: PREFIX,
    network: parseCidr('10.244.0.0/16'),
    subnet: parseCidr('10.244.100.0/24'),
    vni: 1,
    port: 8472,
    register: true,
    clock,
    log,
    connect: async () => fake,
    backoff: { random: () => 0.5 },
    ...opts,
  });
  const views: ClusterView[] = [];
  src.onView((v) => views.push(v));
  return { clock, fake, src, views, log };
}

const peerNames = (v: ClusterView | undefined) => v?.peers.map((p) => p.name);

describe('EtcdSource: following the leases', () => {
  it('lists, emits a view, and follows adds, removes and changes; bursts make one view', async () => {
    const { clock, fake, src, views } = setup({ register: false });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'), fake.grantLease(86_400));
    fake.put(key('10.244.2.0-24'), value('203.0.113.20', '0e:00:00:00:02:01', 'host-gw'));
    src.start();
    await settle();
    expect(views).toHaveLength(1);
    expect(views[0].nodes).toBe(2);
    expect(views[0].peers).toEqual([{ name: 'etcd-10.244.1.0-24', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0e:00:00:00:01:01' }]);
    expect(views[0].skipped).toEqual([{ name: 'etcd-10.244.2.0-24', why: expect.stringMatching(/BackendType "host-gw" is not "vxlan"/) }]);
    expect(src.status()).toEqual({ source: 'etcd', connected: true, lastSync: new Date(clock.now()).toISOString(), nodes: 2, registered: false, error: null });

    // A burst: two joins and a leave inside the coalescing window -> one view.
    fake.put(key('10.244.3.0-24'), value('203.0.113.30', '0e:00:00:00:03:01'));
    fake.put(key('10.244.4.0-24'), value('203.0.113.40', '0e:00:00:00:04:01'));
    fake.del(key('10.244.1.0-24'));
    await settle();
    expect(views).toHaveLength(1);
    await run(clock, ETCD_DEFAULTS.coalesceMs);
    expect(views).toHaveLength(2);
    expect(peerNames(views[1])).toEqual(['etcd-10.244.3.0-24', 'etcd-10.244.4.0-24']);

    // A node's public IP changes.
    fake.put(key('10.244.3.0-24'), value('203.0.113.33', '0e:00:00:00:03:01'));
    await run(clock, 200);
    expect(views).toHaveLength(3);
    expect(views[2].peers.find((p) => p.name === 'etcd-10.244.3.0-24')?.publicIp).toBe('203.0.113.33');

    // The same value written again changes nothing we use: no view.
    fake.put(key('10.244.3.0-24'), value('203.0.113.33', '0e:00:00:00:03:01'));
    await run(clock, 200);
    expect(views).toHaveLength(3);
    expect(fake.puts).toHaveLength(0);
  });

  it("a lease rewritten into one flannel cannot use keeps its last good value, as flanneld's watch does, until it is deleted", async () => {
    // flanneld's watch skips an event it cannot parse, and its VXLAN backend a lease of another
    // type: the nodes keep routing to that node, and so does the site.
    const { clock, fake, src, views } = setup({ register: false });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    fake.put(key('10.244.2.0-24'), value('203.0.113.20', '0e:00:00:00:02:01'));
    src.start();
    await settle();
    const good = views[0].peers.find((p) => p.name === 'etcd-10.244.1.0-24');
    expect(good).toBeDefined();
    for (const bad of ['{"PublicIP":', value('203.0.113.10', '0e:00:00:00:01:01', 'host-gw'), value('203.0.113.10', '0e:00:00:00:01:01').replace('"203.0.113.10"', '"not-an-ip"'), value('203.0.113.10', '0e:00:00:00:01:01').replace('"0e:00:00:00:01:01"', '"zz"')]) {
      const n = views.length;
      fake.put(key('10.244.1.0-24'), bad);
      await run(clock, 200);
      expect(views.length, bad).toBe(n + 1);
      expect(views.at(-1)!.peers.find((p) => p.name === 'etcd-10.244.1.0-24'), bad).toEqual(good);
      expect(views.at(-1)!.skipped.find((s) => s.name === 'etcd-10.244.1.0-24')?.why).toMatch(/; its last good lease stays in use, as flannel's nodes keep it, until the node or its lease is deleted$/);
    }
    // Another VNI is not kept: that node's flannel.1 drops our frames.
    fake.put(key('10.244.1.0-24'), encodeLease({ publicIp: '203.0.113.10', vni: 2, vtepMac: '0e:00:00:00:01:01' }));
    await run(clock, 200);
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.2.0-24']);
    fake.del(key('10.244.1.0-24'));
    await run(clock, 200);
    expect(views.at(-1)!.nodes).toBe(1);
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.2.0-24']);
  });

  it("a node whose lease expires is gone from the next view", async () => {
    const { clock, fake, src, views } = setup({ register: false });
    const l = fake.grantLease(5);
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'), l);
    src.start();
    await settle();
    expect(peerNames(views[0])).toEqual(['etcd-10.244.1.0-24']);
    await run(clock, 5_300);
    expect(views.at(-1)?.peers).toEqual([]);
    expect(views.at(-1)?.nodes).toBe(0);
  });

  it('one peer per IPv4 subnet when a dual-stack key shadows a plain one', async () => {
    const { fake, src, views } = setup({ register: false });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    fake.put(key('10.244.1.0-24&fc00::-64'), value('203.0.113.11', '0e:00:00:00:01:02'));
    src.start();
    await settle();
    expect(peerNames(views[0])).toEqual(['etcd-10.244.1.0-24']);
    expect(views[0].skipped).toEqual([{ name: `etcd-10.244.1.0-24 (${key('10.244.1.0-24&fc00::-64')})`, why: expect.stringMatching(/same IPv4 subnet 10\.244\.1\.0\/24/) }]);
  });

  it('a watch that fell behind compaction lists again and catches up', async () => {
    const { fake, src, views, log } = setup({ register: false });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    // Between our list and our watch, a node joins and etcd compacts its history.
    fake.beforeWatch = () => {
      fake.beforeWatch = null;
      fake.put(key('10.244.2.0-24'), value('203.0.113.20', '0e:00:00:00:02:01'));
      fake.compact();
    };
    src.start();
    await settle();
    expect(fake.calls.range).toBe(2);
    expect(fake.calls.watch).toBe(4); // the leases and the config, twice
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.1.0-24', 'etcd-10.244.2.0-24']);
    expect(src.status()).toMatchObject({ connected: true, error: null });
    expect(log.lines.filter((l) => l.level === 'warn' && /fell behind compaction/.test(l.msg))).toHaveLength(1);
    expect(fake.openWatches).toBe(2);
  });

  it('an outage keeps the last view, retries with growing jittered delays, and resyncs', async () => {
    const { clock, fake, src, views } = setup({ register: false });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    src.start();
    await settle();
    expect(views).toHaveLength(1);

    fake.setDown(true);
    await settle();
    const st = src.status();
    expect(st.connected).toBe(false);
    expect(st.error).toMatch(/^cannot reach etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 \(watch \/coreos\.com\/network\/subnets\/: connection refused\); the last known peers stay in use; retrying in 750ms$/);
    // While down: attempts at growing intervals (1 s doubling, times 0.75 here), capped at 30 s.
    const attempts: number[] = [];
    let seen = fake.calls.range;
    for (let t = 0; t < 120_000; t += 250) {
      await run(clock, 250, 250);
      if (fake.calls.range !== seen) {
        seen = fake.calls.range;
        attempts.push(t);
      }
    }
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
    expect(gaps.slice(0, 4)).toEqual([1_500, 3_000, 6_000, 12_000]);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(22_500 + 250);
    expect(views).toHaveLength(1); // the last view stays in force: no empty view was emitted
    expect(src.status().lastSync).not.toBeNull();

    // Something changed meanwhile; etcd comes back.
    fake.put(key('10.244.2.0-24'), value('203.0.113.20', '0e:00:00:00:02:01'));
    fake.setDown(false);
    await run(clock, 30_000, 500);
    expect(src.status()).toMatchObject({ connected: true, error: null, nodes: 2 });
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.1.0-24', 'etcd-10.244.2.0-24']);
  });

  it('a call that never answers times out, counts as not connected, and is said as a member that did not answer', async () => {
    const { clock, fake, src, views } = setup({ register: false, callTimeoutMs: 5_000 });
    fake.hang = true;
    src.start();
    await run(clock, 4_900);
    expect(src.status().error).toBeNull();
    await run(clock, 200);
    expect(src.status().error).toMatch(
      /^etcd at .* did not answer in time \(list \/coreos\.com\/network\/subnets\/: no answer within 5s\): it is unreachable, overloaded, or cut off from the rest of its cluster; .*the last known peers stay in use/,
    );
    expect(src.status().connected).toBe(false);
    fake.hang = false;
    await run(clock, 2_000);
    expect(src.status().connected).toBe(true);
    expect(views).toHaveLength(1);
  });

  it('a watch that etcd never confirms is given up and set up again', async () => {
    const { clock, fake, src, views } = setup({ register: false, callTimeoutMs: 5_000 });
    fake.hangWatch = true;
    src.start();
    await settle();
    expect(views).toHaveLength(1);
    expect(src.status().connected).toBe(true);
    await run(clock, 5_100);
    expect(src.status()).toMatchObject({ connected: false, error: expect.stringMatching(/^etcd at .* did not answer in time \(watch \/coreos\.com\/network\/subnets\/: not confirmed within 5s\)/) });
    fake.hangWatch = false;
    await run(clock, 2_000);
    expect(src.status()).toMatchObject({ connected: true, error: null });
    expect(fake.calls.watch).toBe(4); // the leases and the config, twice
    expect(fake.openWatches).toBe(2);
  });

  it('a listener that throws is logged and does not stop the others', async () => {
    const { fake, src, views, log } = setup({ register: false });
    const second: ClusterView[] = [];
    src.onView(() => {
      throw new Error('boom');
    });
    src.onView((v) => second.push(v));
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    src.start();
    await settle();
    expect(views).toHaveLength(1);
    expect(second).toHaveLength(1);
    expect(log.lines.some((l) => l.level === 'error' && /listener failed/.test(l.msg))).toBe(true);
  });
});

describe('EtcdSource: the config in etcd', () => {
  it.each([
    [null, /etcd has no flannel config at \/coreos\.com\/network\/config: is cluster\.etcd\.prefix flanneld's --etcd-prefix\?.*etcdctl put/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', /Backend\.Type "host-gw": vxedge speaks flannel's VXLAN backend only/],
    ['{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}', /does not hold overlay\.subnet 10\.244\.100\.0\/24/],
    ['{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}', /set vxlan\.vni to 2/],
  ])('%s: a clear error, not connected, no view, nothing written; fixed config -> follows', async (config, re) => {
    const { clock, fake, src, views } = setup({}, config);
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(src.status()).toMatchObject({ connected: false, registered: false });
    expect(src.status().error).toMatch(re);
    expect(src.status().error).toMatch(/retrying in/);
    expect(views).toHaveLength(0);
    await run(clock, 10_000);
    expect(fake.calls.get).toBeGreaterThan(2); // it keeps checking
    expect(fake.puts).toHaveLength(0);

    fake.put(CONFIG_KEY, CONFIG);
    await run(clock, 30_000, 500);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
    expect(views.at(-1)).toEqual({ nodes: 1, peers: [], skipped: [] });
  });

  it('a config changed at runtime is checked again at once: a mismatch is an error with the fix and the last view stays; fixed: following again', async () => {
    // flanneld reads the config at its start only, so a changed Backend.Port reaches the nodes as
    // they restart: vxedge kept sending to the old port, saying connected, until some failure made
    // it read the config again.
    const { clock, fake, src, views, log } = setup({});
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    src.setOwnLease(OWN);
    src.start();
    await run(clock, 1_000);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
    const before = views.length;

    const ranges = fake.calls.range;
    fake.put(CONFIG_KEY, CONFIG); // the same config written again: nothing to check again
    await run(clock, 1_000);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
    expect(views).toHaveLength(before);
    expect(fake.calls.range).toBe(ranges);

    fake.put(CONFIG_KEY, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":4789}}');
    await run(clock, 1_000);
    expect(src.status()).toMatchObject({ connected: false, error: expect.stringMatching(/Backend\.Port 4789 but vxlan\.port is 8472: set vxlan\.port to 4789/) });
    expect(views).toHaveLength(before);
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.1.0-24']);
    expect(log.lines.some((l) => l.level === 'info' && /\/coreos\.com\/network\/config changed/.test(l.msg))).toBe(true);

    fake.del(CONFIG_KEY); // deleted: the same, with the fix for a missing config
    await run(clock, 5_000);
    expect(src.status().error).toMatch(/etcd has no flannel config at \/coreos\.com\/network\/config/);

    fake.put(CONFIG_KEY, CONFIG);
    await run(clock, 30_000, 500);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
    expect(fake.openWatches).toBe(2); // the leases and the config, nothing left over
  });

  it('warns once when overlay.network differs from the cluster Network', async () => {
    const { clock, fake, src, log } = setup({ register: false }, '{"Network":"10.244.0.0/14","Backend":{"Type":"vxlan"}}');
    src.start();
    await settle();
    fake.setDown(true);
    await settle();
    fake.setDown(false);
    await run(clock, 5_000, 500);
    expect(fake.calls.range).toBe(2); // synced twice
    expect(src.status()).toMatchObject({ connected: true, error: null });
    expect(log.lines.filter((l) => /overlay\.network is 10\.244\.0\.0\/16/.test(l.msg))).toHaveLength(1);
  });
});

describe('EtcdSource: errors name the fix', () => {
  it.each([
    ['auth', 'etcdserver: authentication failed, invalid user ID or password', { username: 'flannel', passwordFile: '/etc/vxedge/etcd.pw' },
      /etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 refused user "flannel" \(.*\): check cluster\.etcd\.username and the password in cluster\.etcd\.passwordFile/],
    ['auth', 'etcdserver: user name is empty', undefined, /requires authentication .*set cluster\.etcd\.username and cluster\.etcd\.passwordFile, or a client certificate/],
    ['permission', 'etcdserver: permission denied', { username: 'site', passwordFile: '/p' },
      /etcd denied read \/coreos\.com\/network\/config to user "site" .*grant it read access to \/coreos\.com\/network\/config and \/coreos\.com\/network\/subnets\/ and write access to \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24 \(vxedge rbac -c FILE prints the etcdctl commands\)/],
    ['unavailable', '14 UNAVAILABLE: etcdserver: no leader', undefined,
      /^etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 has no leader \(read \/coreos\.com\/network\/config: 14 UNAVAILABLE: etcdserver: no leader\): the member is cut off from the rest of its cluster, or the cluster lost its quorum; the next member in cluster\.etcd\.endpoints is asked; the last known peers stay in use/],
    // grpc-h2's two deadlines: one while connecting is unreachable; one on a connection is a member that did not answer.
    ['timeout', '4 DEADLINE_EXCEEDED: no connection to http://10.0.0.1:2379 within 5000 ms', undefined,
      /^cannot reach etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 \(read \/coreos\.com\/network\/config: 4 DEADLINE_EXCEEDED: no connection to .*\); the last known peers stay in use/],
    ['timeout', '4 DEADLINE_EXCEEDED: no answer from http://10.0.0.1:2379 within 5000 ms', undefined,
      /^etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 did not answer in time \(read \/coreos\.com\/network\/config: 4 DEADLINE_EXCEEDED: no answer from .*\): it is unreachable, overloaded, or cut off from the rest of its cluster; the next member in cluster\.etcd\.endpoints is asked; the last known peers stay in use/],
    ['tls', 'unable to verify the first certificate', undefined, /TLS to etcd at .* failed .*check cluster\.etcd\.ca .*cluster\.etcd\.cert and cluster\.etcd\.key/],
    ['setup', 'cannot read cluster.etcd.ca /nope: no such file', undefined, /^cannot read cluster\.etcd\.ca \/nope: no such file; retrying in/],
    ['busy', '8 RESOURCE_EXHAUSTED: etcdserver: too many requests', undefined,
      /^etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 is overloaded \(read \/coreos\.com\/network\/config: 8 RESOURCE_EXHAUSTED: etcdserver: too many requests: it has not applied what it committed\); retrying in/],
  ] as const)('%s: %s', async (kind, message, auth, re) => {
    const { fake, src } = setup({ auth });
    fake.failNext('get', kind, message);
    src.start();
    await settle();
    expect(src.status().connected).toBe(false);
    expect(src.status().error).toMatch(re);
  });

  it('no leader with one endpoint: there is no other member to ask, so the words say to list them all', async () => {
    const { fake, src } = setup({ endpoints: ['http://10.0.0.1:2379'] });
    fake.failNext('get', 'unavailable', '14 UNAVAILABLE: etcdserver: no leader');
    src.start();
    await settle();
    expect(src.status().error).toMatch(/^etcd at http:\/\/10\.0\.0\.1:2379 has no leader .*or the cluster lost its quorum; list every member in cluster\.etcd\.endpoints; the last known peers stay in use/);
  });

  it("TLS as Node reports it: the short cause, the clock's reading, and cluster.etcd.cert's end when etcd refused it", async () => {
    // The messages as the adapter passes them on (etcd 3.4 in the lab, December 7).
    const badCert =
      '802C43E3ED7F0000:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 42\n';
    const fixture = (f: string) => path.join(import.meta.dirname, '..', 'fixtures', 'tls', f);
    const cases: [string, string | null, RegExp][] = [
      ['certificate is not yet valid', null,
        /^TLS to etcd at http:\/\/10\.0\.0\.1:2379, http:\/\/10\.0\.0\.2:2379 failed \(certificate is not yet valid\): etcd's certificate is not valid yet, or this machine's clock is wrong: it says 2026-11-24 12:00 UTC; check this machine's clock \(timedatectl/],
      [badCert, fixture('ended-2020-01-02.crt'),
        /failed \(sslv3 alert bad certificate\): etcd refused our client certificate: the one in cluster\.etcd\.cert expired on 2020-01-02 00:00 UTC, and this machine's clock says 2026-11-24 12:00 UTC; renew cluster\.etcd\.cert/],
      // Valid by our clock: etcd's clock, or a CA etcd does not trust.
      [badCert, null, /failed \(sslv3 alert bad certificate\): etcd refused the client certificate in cluster\.etcd\.cert; check cluster\.etcd\.ca .*cluster\.etcd\.cert and cluster\.etcd\.key/],
      // A certificate file that cannot be read is the connection's own error; the words stay general.
      [badCert, '/nonexistent/cert.pem', /etcd refused the client certificate in cluster\.etcd\.cert; check/],
      // A TLS failure of no known cause: OpenSSL's reason, and every file to check.
      ['C0BC3F8D5F7F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:354:\n', null,
        /failed \(wrong version number\): check cluster\.etcd\.ca .*, and that the endpoints use https:\/\/; retrying in/],
    ];
    for (const [message, cert, re] of cases) {
      const { fake, src } = setup({ tls: cert ? { ca: null, cert, key: '/k' } : undefined });
      fake.failNext('get', 'tls', message.replace(/\s+/g, ' '));
      src.start();
      await settle();
      expect(src.status().error).toMatch(re);
      await src.stop();
    }
  });

  it('a client that cannot be set up is an error and a retry, not a crash', async () => {
    const clock = new ManualClock();
    let attempts = 0;
    const src = new EtcdSource({
      endpoints: ['ftp://x'], prefix: PREFIX, network: parseCidr('10.244.0.0/16'), subnet: parseCidr('10.244.100.0/24'), vni: 1,
      register: false, clock, log: new CaptureLog(), backoff: { random: () => 0.5 },
      connect: async () => {
        attempts++;
        throw new EtcdKvError('setup', 'cluster.etcd.endpoints: "ftp://x" is not an http:// or https:// URL');
      },
    });
    src.start();
    await settle();
    expect(src.status().error).toMatch(/^cluster\.etcd\.endpoints: "ftp:\/\/x" is not an http/);
    await run(clock, 2_000);
    expect(attempts).toBe(2);
    await src.stop();
  });

  it('TLS files changed after a TLS failure are read again: a new client at the next retry, none while they stay the same', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vxh1-etcd-'));
    try {
      const ca = path.join(dir, 'ca.crt');
      writeFileSync(ca, 'the old CA\n');
      let connects = 0;
      const { clock, fake, src, views } = setup({
        tls: { ca, cert: null, key: null },
        connect: async () => {
          const kv = Object.create(fake) as FakeEtcd;
          // The client made with the old CA cannot talk to etcd; a new one can.
          if (++connects === 1) kv.get = async () => { throw new EtcdKvError('tls', 'unable to verify the first certificate'); };
          return kv;
        },
      });
      src.start();
      await settle();
      expect(src.status().error).toMatch(/^TLS to etcd at .* check cluster\.etcd\.ca/);
      await run(clock, 10_000);
      expect(connects).toBe(1);
      expect(fake.calls.get).toBe(0);
      writeFileSync(ca, 'the new CA, as the error asked\n');
      await run(clock, 35_000, 500);
      expect(connects).toBe(2);
      expect(src.status()).toMatchObject({ connected: true, error: null });
      expect(views).toHaveLength(1);
      await src.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the clock set while a failed sync waits out its backoff: synced at once, on the same client; one in sync is left alone', async () => {
    let connects = 0;
    let clockRight = false;
    const { clock, fake, src, views, log } = setup({
      backoff: { initialMs: 20_000, maxMs: 30_000, random: () => 0.999 },
      connect: async () => {
        connects++;
        const kv = Object.create(fake) as FakeEtcd;
        // TLS fails while this machine's clock is in the past.
        kv.get = async (k) => {
          if (!clockRight) throw new EtcdKvError('tls', 'certificate is not yet valid');
          return fake.get(k);
        };
        return kv;
      },
    });
    const said = () => log.lines.filter((l) => l.msg === 'etcd: trying again now: the clock was set').length;
    src.start();
    await settle();
    expect(src.status().error).toMatch(/^TLS to etcd at .*not valid yet/);
    await run(clock, 2_000);
    expect(views).toHaveLength(0);
    clockRight = true;
    src.clockStepped();
    expect(said()).toBe(1);
    await run(clock, 200);
    expect(src.status()).toMatchObject({ connected: true, error: null });
    expect(views).toHaveLength(1);
    // In sync: nothing waits, nothing is said, the client and its watches stay.
    const watches = fake.calls.watch;
    src.clockStepped();
    await run(clock, 2_000);
    expect([connects, said(), fake.calls.watch]).toEqual([1, 1, watches]);
    await src.stop();
  });

  it('the clock set while a failed write of our lease waits out its backoff: written at once', async () => {
    let connects = 0;
    const { clock, fake, src, log } = setup({
      backoff: { initialMs: 20_000, maxMs: 30_000, random: () => 0.999 },
      connect: async () => (connects++, fake),
    });
    fake.failNext('putIf', 'unavailable', '14 UNAVAILABLE: connection reset');
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(src.status().error).toMatch(/^cannot register/);
    await run(clock, 2_000);
    expect(src.status().registered).toBe(false);
    src.clockStepped();
    await run(clock, 200);
    expect(src.status()).toMatchObject({ registered: true, error: null });
    expect(connects).toBe(1);
    expect(log.lines.map((l) => l.msg)).toContain('etcd: trying again now: the clock was set');
    await src.stop();
  });

  it('refuses an empty endpoint list and a TTL etcd would not grant', () => {
    expect(() => setup({ endpoints: [] })).toThrow(/cluster\.etcd\.endpoints is empty/);
    expect(() => setup({ leaseTtlS: 1 })).toThrow(/leaseTtlS 1/);
  });
});

describe('EtcdSource: our lease', () => {
  async function registered(opts: Partial<EtcdSourceOptions> = {}) {
    const s = setup(opts);
    s.src.setOwnLease(OWN);
    s.src.start();
    await settle();
    const stored = s.fake.store.get(OWN_KEY);
    return { ...s, stored, leaseId: stored?.lease ?? 0n };
  }

  it("writes flanneld's exact value on a 24 h lease, and renews it an hour before expiry", async () => {
    const { clock, fake, src, views, stored, leaseId } = await registered();
    expect(stored?.value).toBe(OUR_VALUE);
    expect(fake.leases.get(leaseId)?.ttlS).toBe(86_400);
    expect(fake.puts).toEqual([{ key: OWN_KEY, value: OUR_VALUE, lease: leaseId, expect: 0n, ok: true }]);
    expect(src.status()).toMatchObject({ registered: true, error: null, nodes: 1 });
    // Our own lease is neither a peer nor a skipped node.
    await run(clock, 200);
    expect(views.at(-1)).toEqual({ nodes: 1, peers: [], skipped: [] });

    await run(clock, 23 * 3_600_000 - 60_000, 10_000);
    expect(fake.calls.keepAliveOnce).toBe(0);
    await run(clock, 120_000, 10_000);
    expect(fake.calls.keepAliveOnce).toBe(1);
    await run(clock, 2 * 86_400_000, 10_000);
    expect(fake.calls.keepAliveOnce).toBe(3);
    expect(fake.store.get(OWN_KEY)).toMatchObject({ value: OUR_VALUE, lease: leaseId });
    expect(fake.calls.grant).toBe(1);
    expect(fake.puts).toHaveLength(1);
    expect(src.status().registered).toBe(true);
  });

  it('renews a short lease at half its TTL', async () => {
    const { clock, fake, leaseId } = await registered({ leaseTtlS: 5 });
    await run(clock, 20_000);
    expect(fake.calls.keepAliveOnce).toBe(8);
    expect(fake.store.get(OWN_KEY)?.lease).toBe(leaseId);
  });

  it('nothing is written before our public IP is known, nor with register false', async () => {
    const a = setup();
    a.src.setOwnLease({ ...OWN, publicIp: null });
    a.src.start();
    await run(a.clock, 1_000);
    expect(a.fake.calls.grant + a.fake.puts.length).toBe(0);
    expect(a.src.status().registered).toBe(false);
    a.src.setOwnLease(OWN);
    await settle();
    expect(a.fake.value(OWN_KEY)).toBe(OUR_VALUE);

    const b = setup({ register: false });
    b.src.setOwnLease(OWN);
    b.src.start();
    await run(b.clock, 1_000);
    expect(b.fake.calls.grant + b.fake.puts.length).toBe(0);
  });

  it("never takes another node's subnet; the error names the holder; registers once the key is free", async () => {
    const { clock, fake, src, views, log } = setup();
    const theirs = fake.grantLease(86_400);
    const theirValue = value('203.0.113.99', '0e:00:00:00:99:99');
    fake.put(OWN_KEY, theirValue, theirs);
    src.setOwnLease(OWN);
    src.start();
    await run(clock, 60_000);
    expect(fake.value(OWN_KEY)).toBe(theirValue);
    expect(fake.puts).toHaveLength(0);
    expect(fake.calls.grant).toBe(0);
    const st = src.status();
    expect(st).toMatchObject({ connected: true, registered: false });
    expect(st.error).toContain('held in etcd by another node (PublicIP 203.0.113.99, VtepMAC 0e:00:00:00:99:99; key /coreos.com/network/subnets/10.244.100.0-24)');
    expect(st.error).toContain('give this site a free overlay.subnet');
    expect(st.error).toContain('etcdctl del /coreos.com/network/subnets/10.244.100.0-24');
    expect(views[0].skipped).toEqual([{ name: 'etcd-10.244.100.0-24', why: expect.stringMatching(/site's own subnet .*203\.0\.113\.99/) }]);
    expect(log.lines.filter((l) => /held in etcd by another node/.test(l.msg))).toHaveLength(1);

    fake.revokeLease(theirs); // that node is gone: its lease ends
    await run(clock, 200);
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE);
    expect(src.status()).toMatchObject({ registered: true, error: null });
    expect(views.at(-1)?.skipped).toEqual([]);
  });

  it.each([
    ['a dual-stack key for our subnet', '10.244.100.0-24&fc00:0:0:64::-64'],
    ['a larger subnet around ours', '10.244.100.0-23'],
  ])("never writes next to another node's lease on our subnet under another key (%s); registers once it is gone", async (_what, keyText) => {
    const { clock, fake, src } = setup();
    const theirs = fake.grantLease(86_400);
    fake.put(key(keyText), value('203.0.113.99', '0e:00:00:00:99:99'), theirs);
    src.setOwnLease(OWN);
    src.start();
    await run(clock, 60_000);
    expect(fake.puts).toHaveLength(0);
    expect(fake.store.has(OWN_KEY)).toBe(false);
    const st = src.status();
    expect(st).toMatchObject({ connected: true, registered: false });
    expect(st.error).toContain(`held in etcd by another node (PublicIP 203.0.113.99, VtepMAC 0e:00:00:00:99:99; key ${key(keyText)})`);
    expect(st.error).toContain(`etcdctl del ${key(keyText)}`);

    fake.revokeLease(theirs); // that node is gone
    await run(clock, 200);
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE);
    expect(src.status()).toMatchObject({ registered: true, error: null });
  });

  it('two writers: the one who loses the compare does not overwrite, and gives back its lease', async () => {
    const { fake, src } = setup();
    const theirValue = value('203.0.113.98', '0e:00:00:00:98:98');
    fake.beforePutIf = () => {
      fake.beforePutIf = null;
      fake.put(OWN_KEY, theirValue, fake.grantLease(86_400));
    };
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(fake.puts).toMatchObject([{ key: OWN_KEY, expect: 0n, ok: false }]);
    expect(fake.value(OWN_KEY)).toBe(theirValue);
    expect(src.status().error).toMatch(/held in etcd by another node \(PublicIP 203\.0\.113\.98/);
    expect(fake.calls.revoke).toBe(1);
    expect(fake.leases.size).toBe(1); // only theirs
  });

  it('a key that changes under every compare (another writer with our MAC, e.g. a cloned box) is an error in the health, retried, and clears when it stops', async () => {
    const { clock, fake, src } = setup();
    const stale = value('198.51.100.77', OWN.vtepMac); // ours by its MAC, not what we want
    let n = 0;
    fake.beforePutIf = () => {
      // Bounded, so that a write war (each of its writes answered at once) ends and fails below.
      if (++n <= 100) fake.put(OWN_KEY, stale);
    };
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(fake.puts.filter((p) => !p.ok)).toHaveLength(3);
    expect(src.status()).toMatchObject({ registered: false });
    expect(src.status().error).toMatch(/^cannot register \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24: another writer changed it in each of 3 attempts \(a second gateway .*VTEP MAC\?.*\); retrying in/);
    // The other writer again, between our passes: its write comes back as a watch event,
    // which waits for the backoff instead of starting a pass (no write war).
    const puts = fake.puts.length;
    fake.put(OWN_KEY, value('198.51.100.78', OWN.vtepMac));
    await settle();
    expect(fake.puts.length).toBe(puts);
    fake.beforePutIf = null; // the other writer stops
    await run(clock, 2_000);
    expect(n).toBe(3);
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE);
    expect(src.status()).toMatchObject({ registered: true, error: null });
  });

  it('our key deleted by someone: written again on the same lease', async () => {
    const { clock, fake, src, leaseId } = await registered();
    fake.del(OWN_KEY);
    await run(clock, 200);
    expect(fake.store.get(OWN_KEY)).toMatchObject({ value: OUR_VALUE, lease: leaseId });
    expect(fake.calls.grant).toBe(1);
    expect(src.status().registered).toBe(true);
  });

  it('our lease revoked (key deleted with it): a new lease, the key written again', async () => {
    const { clock, fake, src, leaseId, log } = await registered();
    fake.revokeLease(leaseId);
    await run(clock, 200);
    const now = fake.store.get(OWN_KEY);
    expect(now?.value).toBe(OUR_VALUE);
    expect(now?.lease).not.toBe(leaseId);
    expect(fake.leases.has(now!.lease)).toBe(true);
    expect(fake.calls.grant).toBe(2);
    expect(src.status().registered).toBe(true);
    expect(log.lines.some((l) => /lease is gone/.test(l.msg))).toBe(true);
  });

  it('our lease expired during an outage: registered goes false, and the key is written again when etcd is back', async () => {
    const { clock, fake, src, leaseId, views } = await registered({ leaseTtlS: 10 });
    fake.put(key('10.244.1.0-24'), value('203.0.113.10', '0e:00:00:00:01:01'));
    await run(clock, 200);
    const before = views.length;
    fake.setDown(true);
    await run(clock, 15_000);
    expect(fake.store.has(OWN_KEY)).toBe(false); // etcd deleted it with the lease
    expect(src.status()).toMatchObject({ connected: false, registered: false });
    expect(views).toHaveLength(before);
    fake.setDown(false);
    await run(clock, 30_000, 500);
    const now = fake.store.get(OWN_KEY);
    expect(now?.value).toBe(OUR_VALUE);
    expect(now?.lease).not.toBe(leaseId);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
    expect(peerNames(views.at(-1))).toEqual(['etcd-10.244.1.0-24']);
  });

  it('renewal through a long outage backs off, also after the lease has run out (no call a second), and warns once per stage', async () => {
    const { clock, fake, src, log } = await registered({ leaseTtlS: 600, renewMarginS: 60 });
    fake.setDown(true);
    await run(clock, 600_000, 500); // the renewal starts failing at 540 s; the lease runs out at 600 s
    expect(src.status().registered).toBe(false);
    const atExpiry = fake.calls.keepAliveOnce;
    await run(clock, 600_000, 500);
    // The plain backoff (1 s doubling to 30 s, jitter 0.5: 22.5 s at most) is some 27 calls in 600 s.
    expect(fake.calls.keepAliveOnce - atExpiry).toBeLessThan(40);
    const warns = log.lines.filter((l) => l.level === 'warn' && l.msg.startsWith('cannot renew our etcd lease'));
    expect(warns.map((l) => /it may have expired/.test(l.msg))).toEqual([false, true]);
    fake.setDown(false);
    await run(clock, 60_000, 500);
    expect(src.status()).toMatchObject({ connected: true, registered: true, error: null });
  });

  it('a renewal that finds the lease gone (TTL 0) moves the key to a new lease', async () => {
    const { clock, fake, src, leaseId } = await registered({ leaseTtlS: 10 });
    fake.leases.delete(leaseId); // the lease vanished but the key is still there (as after a restore)
    await run(clock, 6_000);
    const now = fake.store.get(OWN_KEY);
    expect(now?.lease).not.toBe(leaseId);
    expect(fake.leases.has(now!.lease)).toBe(true);
    expect(fake.puts.at(-1)).toMatchObject({ ok: true, expect: expect.any(BigInt) });
    expect(fake.puts.at(-1)!.expect).not.toBe(0n);
    expect(src.status().registered).toBe(true);
  });

  it('setOwnLease with a new public IP or a new MAC rewrites our value', async () => {
    const { clock, fake, src, leaseId } = await registered();
    src.setOwnLease({ ...OWN, publicIp: '198.51.100.77' });
    await run(clock, 200);
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE.replace('198.51.100.2', '198.51.100.77'));
    src.setOwnLease({ ...OWN, publicIp: '198.51.100.77', vtepMac: '0e:5c:aa:00:00:02' });
    await run(clock, 200);
    expect(fake.value(OWN_KEY)).toContain('"VtepMAC":"0e:5c:aa:00:00:02"');
    expect(fake.store.get(OWN_KEY)?.lease).toBe(leaseId);
    expect(fake.puts.map((p) => p.ok)).toEqual([true, true, true]);
    expect(src.status()).toMatchObject({ registered: true, error: null });
    // The same lease again (the gateway repeats itself): nothing to do.
    src.setOwnLease({ ...OWN, publicIp: '198.51.100.77', vtepMac: '0e:5c:aa:00:00:02' });
    await run(clock, 200);
    expect(fake.puts).toHaveLength(3);
    // The public IP becoming unknown again leaves the announcement alone.
    src.setOwnLease({ ...OWN, publicIp: null, vtepMac: '0e:5c:aa:00:00:02' });
    await run(clock, 200);
    expect(fake.puts).toHaveLength(3);
    expect(src.status().registered).toBe(true);
  });

  it('setOwnLease with another subnet is refused with a reason', async () => {
    const { src, fake } = await registered();
    src.setOwnLease({ ...OWN, subnet: parseCidr('10.244.101.0/24') });
    await settle();
    expect(src.status().error).toMatch(/restart the gateway to move the site to another subnet/);
    expect(fake.puts).toHaveLength(1);
  });

  it('a restart finds our key from the previous run and adopts its live lease: no write', async () => {
    const { clock, fake, src } = setup({ leaseTtlS: 60 });
    const earlier = fake.grantLease(60);
    fake.put(OWN_KEY, OUR_VALUE, earlier);
    await run(clock, 20_000); // the previous run died 20 s ago
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(fake.puts).toHaveLength(0);
    expect(fake.calls.grant).toBe(0);
    expect(fake.calls.keepAliveOnce).toBe(1);
    expect(src.status().registered).toBe(true);
    await run(clock, 120_000, 1_000);
    expect(fake.store.get(OWN_KEY)?.lease).toBe(earlier);
  });

  it('a restart with a new public IP rewrites our key on its lease (the MAC says it is ours)', async () => {
    const { fake, src } = setup();
    const earlier = fake.grantLease(86_400);
    fake.put(OWN_KEY, OUR_VALUE.replace('198.51.100.2', '198.51.100.1'), earlier);
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(fake.store.get(OWN_KEY)).toMatchObject({ value: OUR_VALUE, lease: earlier });
    expect(fake.puts).toHaveLength(1);
  });

  it("an operator's permanent reservation with our MAC stays permanent", async () => {
    const { clock, fake, src } = setup();
    fake.put(OWN_KEY, OUR_VALUE.replace('198.51.100.2', '198.51.100.1')); // no lease
    src.setOwnLease(OWN);
    src.start();
    await run(clock, 2 * 86_400_000, 10_000);
    expect(fake.store.get(OWN_KEY)).toMatchObject({ value: OUR_VALUE, lease: 0n });
    expect(fake.calls.grant + fake.calls.keepAliveOnce).toBe(0);
    expect(src.status().registered).toBe(true);
  });

  it('write errors are retried and named; permission names the key to grant', async () => {
    const { clock, fake, src } = setup({ auth: { username: 'site', passwordFile: '/p' } });
    fake.failNext('putIf', 'permission', 'etcdserver: permission denied');
    src.setOwnLease(OWN);
    src.start();
    await settle();
    expect(src.status().error).toMatch(/^cannot register \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24: etcd denied write .* to user "site" .*write access to \/coreos\.com\/network\/subnets\/10\.244\.100\.0-24 \(vxedge rbac -c FILE prints the etcdctl commands\); retrying in/);
    expect(src.status().connected).toBe(true);
    await run(clock, 1_000);
    expect(src.status()).toMatchObject({ registered: true, error: null });
  });

  it('stop(): no more calls or timers, the key is left to its TTL, the lease is not revoked', async () => {
    const { clock, fake, src } = await registered({ leaseTtlS: 60 });
    await src.stop();
    expect(fake.closed).toBe(true);
    expect(fake.openWatches).toBe(0);
    const calls = { ...fake.calls };
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE);
    await run(clock, 30_000, 1_000);
    expect(fake.calls).toEqual(calls);
    expect(fake.value(OWN_KEY)).toBe(OUR_VALUE);
    await run(clock, 40_000, 1_000);
    expect(fake.store.has(OWN_KEY)).toBe(false); // the TTL freed it
    expect(fake.calls.revoke).toBe(0);
  });

  it('stop() while the client is still connecting closes it when it arrives', async () => {
    const clock = new ManualClock();
    const fake = new FakeEtcd(clock);
    let release!: () => void;
    const src = new EtcdSource({
      endpoints: ENDPOINTS, prefix: PREFIX, network: parseCidr('10.244.0.0/16'), subnet: parseCidr('10.244.100.0/24'), vni: 1,
      register: false, clock, log: new CaptureLog(),
      connect: () => new Promise((r) => (release = () => r(fake))),
    });
    src.start();
    await settle();
    const stopped = src.stop();
    release();
    await stopped;
    await settle();
    expect(fake.closed).toBe(true);
    expect(fake.calls.get).toBe(0);
  });
});

describe('etcd adapter helpers', () => {
  it('prefixRangeEnd is the first key after every key with the prefix', () => {
    expect(prefixRangeEnd(Buffer.from('/coreos.com/network/subnets/')).toString()).toBe('/coreos.com/network/subnets0');
    expect([...prefixRangeEnd(Buffer.from([0x61, 0xff, 0xff]))]).toEqual([0x62]);
    expect([...prefixRangeEnd(Buffer.from([0xff]))]).toEqual([0]);
  });

  // etcd's statuses as etcd 3.4 sends them (code and message), and Node's words for the connection.
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:2379'), { code: 'ECONNREFUSED' });
  it.each([
    [new GrpcStatusError(5, 'etcdserver: requested lease not found'), 'lease-not-found'],
    [new GrpcStatusError(7, 'etcdserver: permission denied'), 'permission'],
    [new GrpcStatusError(3, 'etcdserver: authentication failed, invalid user ID or password'), 'auth'],
    [new GrpcStatusError(3, 'etcdserver: user name is empty'), 'auth'],
    [new GrpcStatusError(16, 'etcdserver: invalid auth token'), 'auth'],
    [new GrpcConnectError('http://127.0.0.1:2379', refused), 'unavailable'],
    [new GrpcConnectError('https://127.0.0.1:2379', new Error('self-signed certificate in certificate chain')), 'tls'],
    [new GrpcStatusError(4, 'no answer from http://127.0.0.1:2379 within 5000 ms'), 'timeout'],
    [Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), 'unavailable'],
    [new GrpcStatusError(14, 'Received RST_STREAM with code 2'), 'unavailable'],
    [new GrpcStatusError(14, 'etcdserver: no leader'), 'unavailable'],
    [new Error('keepalive ping to http://127.0.0.1:2379 not answered within 10 s'), 'unavailable'],
    [new GrpcStatusError(11, 'etcdserver: mvcc: required revision is a future revision'), 'other'],
    [new GrpcStatusError(8, 'etcdserver: mvcc: database space exceeded'), 'nospace'],
    [new GrpcStatusError(8, 'etcdserver: too many requests'), 'busy'],
    [new ProtoError('a varint longer than 10 bytes'), 'other'],
    ['a string', 'other'],
  ])('%s -> %s', (err, kind) => {
    const e = classifyEtcdError(err);
    expect(e).toBeInstanceOf(EtcdKvError);
    expect(e.kind).toBe(kind);
  });

  it('an answer that is not a message says so', () => {
    expect(classifyEtcdError(new ProtoError('a varint longer than 10 bytes')).message).toBe('etcd sent a message that cannot be read: a varint longer than 10 bytes');
  });
});

describe('connectEtcdGrpc: the files the config names', () => {
  // Read before any connection is tried, so no server is needed: a file that cannot be read
  // is a setup error naming the key, the path and why, in words.
  const connect = (o: { tls?: { ca: string | null; cert: string | null; key: string | null }; auth?: { username: string; passwordFile: string } }) =>
    connectEtcdGrpc({ endpoints: ['https://127.0.0.1:2379'], clock: new ManualClock(), callTimeoutMs: 1000, ...o });

  it('a missing CA, a directory as a client key, a missing password file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-etcd-files-'));
    try {
      writeFileSync(path.join(dir, 'cert.pem'), 'x');
      await expect(connect({ tls: { ca: path.join(dir, 'ca.pem'), cert: null, key: null } })).rejects.toThrow(
        new EtcdKvError('setup', `cannot read cluster.etcd.ca ${path.join(dir, 'ca.pem')}: no such file`),
      );
      await expect(connect({ tls: { ca: null, cert: path.join(dir, 'cert.pem'), key: dir } })).rejects.toThrow(
        `cannot read cluster.etcd.key ${dir}: it is a directory`,
      );
      await expect(connect({ auth: { username: 'site', passwordFile: path.join(dir, 'pw') } })).rejects.toThrow(
        `cannot read cluster.etcd.passwordFile ${path.join(dir, 'pw')}: no such file`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
