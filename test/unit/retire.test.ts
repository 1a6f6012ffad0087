// `vxedge retire` (src/cli/retire.ts, src/cluster/retire.ts): the site's own Node removed from
// the Kubernetes stand-in over HTTPS with the rights `vxedge rbac` grants, the site's own lease
// from the in-memory etcd, and everything else left in place and said so: a Node or lease of
// another, one whose owner cannot be told, one rewritten between the read and the delete, a
// gateway still running. The MQTT part, against real mosquitto: test/lab/mqtt.test.ts.
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retire, retireClientId } from '../../src/cli/retire.js';
import { connectNodeApi, type NodeApi } from '../../src/cluster/kube-client.js';
import { encodeLease } from '../../src/cluster/flannel-lease.js';
import { annotationsUnder, nodeManifest } from '../../src/cluster/flannel-node.js';
import { OWN_NODE_VERBS } from '../../src/cluster/rbac.js';
import { retireLease, retireNode } from '../../src/cluster/retire.js';
import { configFromObject } from '../../src/config/index.js';
import type { Config } from '../../src/config/types.js';
import { systemClock } from '../../src/util/clock.js';
import { ManualClock } from '../support/clock.js';
import { flannelNode, makeKubePki, startApiServer } from '../support/kube-harness.js';
import { FakeEtcd } from './fake-etcd.js';

const TMP = mkdtempSync(path.join(tmpdir(), 'vxedge-retire-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

const NAME = 'vxedge-lab-e1';
const SITE_MAC = '0e:5c:aa:00:00:01';
const PREFIX = '/coreos.com/network';
const KEY = `${PREFIX}/subnets/10.244.100.0-24`;
const ours = () => nodeManifest({ name: NAME, site: 'lab', subnet: '10.244.100.0/24', publicIp: '198.51.100.7', vtepMac: SITE_MAC, vni: 1 });

let dirs = 0;
function config(extra: Record<string, unknown>): Config {
  const d = path.join(TMP, `site-${++dirs}`);
  return configFromObject({
    site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, stateDir: path.join(d, 'state'), runDir: path.join(d, 'run'), ...extra,
  }, 'site.yaml', {});
}

describe('vxedge retire: the site\'s Node (Kubernetes stand-in)', () => {
  const pki = makeKubePki();
  let api: Awaited<ReturnType<typeof startApiServer>>;
  let node: NodeApi;
  beforeAll(async () => {
    // The rights `vxedge rbac` grants on the site's own Node, and nothing else.
    api = await startApiServer(pki, [{ name: 'gw', token: 'gw-token', rules: [{ verbs: [...OWN_NODE_VERBS], resourceNames: [NAME] }] }]);
    const { chooseKubeconfig } = await import('../../src/cluster/kubeconfig.js');
    node = await connectNodeApi(chooseKubeconfig(api.kubeconfigFor({ token: 'gw-token' }))!, systemClock, 8_000);
  });
  afterAll(async () => {
    await api.server.stop();
    pki.remove();
  });
  const has = (name: string) => api.server.nodes.has(name) as boolean;

  it('removes the site\'s own Node, with the rights vxedge rbac grants; a dry run and a second run remove nothing', async () => {
    api.server.addNode(ours());
    const dry = await retireNode(node, NAME, 'lab', true);
    expect(dry).toEqual({ ok: true, removed: true, detail: `would remove Node ${NAME} (10.244.100.0/24, public IP 198.51.100.7)` });
    expect(has(NAME)).toBe(true);
    const r = await retireNode(node, NAME, 'lab', false);
    expect(r.ok && r.removed).toBe(true);
    expect(r.detail).toMatch(/^removed Node vxedge-lab-e1 \(10\.244\.100\.0\/24, public IP 198\.51\.100\.7\)/);
    expect(has(NAME)).toBe(false);
    // The delete named the Node it read: its uid went with the request.
    expect(await retireNode(node, NAME, 'lab', false)).toEqual({ ok: true, removed: false, detail: `no Node ${NAME}: nothing to remove` });
  });

  it('leaves a Node that is not this site\'s gateway, saying whose it is', async () => {
    api.server.addNode(flannelNode(NAME, { subnet: '10.244.7.0/24' }));
    const r = await retireNode(node, NAME, 'lab', false);
    expect(r).toMatchObject({ ok: false, removed: false });
    expect(r.detail).toContain('is not this site\'s gateway (not labelled vxedge.io/gateway=true): left in place');
    expect(r.fix).toContain(`kubectl delete node ${NAME}`);
    api.server.deleteNode(NAME);

    api.server.addNode(nodeManifest({ name: NAME, site: 'other', subnet: '10.244.100.0/24', publicIp: '198.51.100.9', vtepMac: SITE_MAC, vni: 1 }));
    const o = await retireNode(node, NAME, 'lab', false);
    expect(o.ok).toBe(false);
    expect(o.detail).toContain('(the gateway of site "other")');
    expect(has(NAME)).toBe(true);
    api.server.deleteNode(NAME);
  });

  it('leaves a Node that changed between the read and the delete (a gateway still writing it)', async () => {
    api.server.addNode(ours());
    const racing: Pick<NodeApi, 'get' | 'delete'> = {
      get: async (name) => {
        const n = await node.get(name);
        // A running gateway patches its Node (a new public IP) right after the read.
        api.server.modifyNode(NAME, { metadata: { annotations: { 'flannel.alpha.coreos.com/public-ip': '198.51.100.8' } } });
        return n;
      },
      delete: (name, pre) => node.delete(name, pre),
    };
    const r = await retireNode(racing, NAME, 'lab', false);
    expect(r).toMatchObject({ ok: false, removed: false });
    expect(r.detail).toContain('changed between reading and removing it: left in place');
    expect(r.fix).toContain('systemctl stop vxedge');
    expect(has(NAME)).toBe(true);
    api.server.deleteNode(NAME);
  });

  it('--mac: the Node goes only while it holds that VTEP MAC; one a replacement patched is no longer that box\'s', async () => {
    api.server.addNode(ours());
    const moved = await retireNode(node, NAME, 'lab', false, '0e:5c:aa:00:00:99');
    expect(moved).toEqual({ ok: true, removed: false, detail: `Node ${NAME} (10.244.100.0/24, public IP 198.51.100.7) holds VtepMAC ${SITE_MAC}, not 0e:5c:aa:00:00:99: a gateway that replaced that box has it now; nothing to remove` });
    expect(has(NAME)).toBe(true);
    expect(await retireNode(node, NAME, 'lab', false, SITE_MAC.toUpperCase())).toMatchObject({ ok: true, removed: true });
    expect(has(NAME)).toBe(false);
  });

  it('under cluster.kubernetes.annotationPrefix: the public IP and, with --mac, the VTEP MAC are read under it', async () => {
    const keys = annotationsUnder('example.com/net');
    api.server.addNode(nodeManifest({ name: NAME, site: 'lab', subnet: '10.244.100.0/24', publicIp: '198.51.100.7', vtepMac: SITE_MAC, vni: 1, annotations: keys }));
    const cfg = config({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig: api.kubeconfigFor({ token: 'gw-token' }), annotationPrefix: 'example.com/net' } } });
    const other = await retire(cfg, { dryRun: false, force: false, mac: '0e:5c:aa:00:00:99' });
    expect(other[1]).toMatchObject({ name: 'cluster', ok: true });
    expect(other[1].detail).toContain(`Node ${NAME} (10.244.100.0/24, public IP 198.51.100.7) holds VtepMAC ${SITE_MAC}, not 0e:5c:aa:00:00:99`);
    expect(has(NAME)).toBe(true);
    const lines = await retire(cfg, { dryRun: false, force: false, mac: SITE_MAC });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['cluster', true]]);
    expect(lines[1].detail).toMatch(/^.*removed Node vxedge-lab-e1 \(10\.244\.100\.0\/24, public IP 198\.51\.100\.7\)/);
    expect(has(NAME)).toBe(false);
  });

  it('through retire(): a refused delete is the API server\'s words, and the Node stays', async () => {
    api.server.addNode(ours());
    const cfg = config({ cluster: { source: 'kubernetes', kubernetes: { kubeconfig: api.kubeconfigFor({ token: 'gw-token' }), nodeName: 'vxedge-lab-other' } } });
    // The Node name the site file names is one these credentials have no rights on.
    const lines = await retire(cfg, { dryRun: false, force: false });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['cluster', false]]);
    expect(lines[1].detail).toMatch(/403|forbidden|may not/i);
    expect(lines[1].detail).toMatch(/the Node stays$/);
    expect(has(NAME)).toBe(true);
    api.server.deleteNode(NAME);
  });
});

describe('vxedge retire: the site\'s lease (in-memory etcd)', () => {
  const lease = (mac: string) => encodeLease({ publicIp: '198.51.100.7', vni: 1, vtepMac: mac });

  it('removes the lease that holds the site\'s VTEP MAC; a dry run removes nothing', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    expect((await retireLease(fake, KEY, SITE_MAC, true)).detail).toBe(`would remove lease ${KEY} (PublicIP 198.51.100.7, VtepMAC ${SITE_MAC})`);
    expect(await fake.get(KEY)).not.toBeNull();
    const r = await retireLease(fake, KEY, SITE_MAC.toUpperCase(), false);
    expect(r).toMatchObject({ ok: true, removed: true });
    expect(await fake.get(KEY)).toBeNull();
    expect(await retireLease(fake, KEY, SITE_MAC, false)).toEqual({ ok: true, removed: false, detail: `no lease ${KEY}: nothing to remove` });
  });

  it('leaves another node\'s lease, and one whose owner cannot be told here', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease('0e:00:00:00:07:07'));
    const r = await retireLease(fake, KEY, SITE_MAC, false);
    expect(r).toMatchObject({ ok: false, removed: false });
    expect(r.detail).toContain(`(PublicIP 198.51.100.7, VtepMAC 0e:00:00:00:07:07) does not hold this site's VTEP MAC (${SITE_MAC}): left in place`);
    const u = await retireLease(fake, KEY, null, false);
    expect(u.ok).toBe(false);
    expect(u.fix).toContain(`etcdctl del ${KEY}`);
    expect(fake.calls.deleteIf).toBe(0);
    expect(await fake.get(KEY)).not.toBeNull();
  });

  it("revokes the etcd lease the key was on once nothing else is attached, so that it does not linger for its TTL; one holding other keys is left", async () => {
    const fake = new FakeEtcd(new ManualClock());
    const ours = fake.grantLease(86_400);
    fake.put(KEY, lease(SITE_MAC), ours);
    const r = await retireLease(fake, KEY, SITE_MAC, false);
    expect(r).toMatchObject({ ok: true, removed: true });
    expect(r.detail).toMatch(new RegExp(`: flannel's nodes drop their route to the site at the lease's delete event; its etcd lease ${ours.toString(16)} revoked$`));
    expect(fake.leases.has(ours)).toBe(false);
    expect(fake.calls.revoke).toBe(1);

    // Someone attached another key to the same lease: revoking it would delete that key too.
    const shared = fake.grantLease(86_400);
    fake.put(KEY, lease(SITE_MAC), shared);
    fake.put('/other/key', 'kept', shared);
    const s2 = await retireLease(fake, KEY, SITE_MAC, false);
    expect(s2.detail).toMatch(new RegExp(`; its etcd lease ${shared.toString(16)} is left to its TTL: it holds 1 other key\\(s\\) \\(/other/key\\)$`));
    expect(fake.value('/other/key')).toBe('kept');
    expect(fake.calls.revoke).toBe(1);
  });

  it('a lease that ended meanwhile, or one that cannot be asked about: the key is removed all the same, and the line says so', async () => {
    const fake = new FakeEtcd(new ManualClock());
    const ended = fake.grantLease(60);
    fake.put(KEY, lease(SITE_MAC), ended);
    fake.leases.delete(ended); // its TTL ran out between the read and the revoke (the key with it, in etcd; here only the lease)
    expect((await retireLease(fake, KEY, SITE_MAC, false)).detail).toMatch(/; its etcd lease [0-9a-f]+ had already ended$/);
    const l = fake.grantLease(60);
    fake.put(KEY, lease(SITE_MAC), l);
    fake.failNext('leaseKeys', 'permission', 'etcdserver: permission denied');
    const r = await retireLease(fake, KEY, SITE_MAC, false);
    expect(r).toMatchObject({ ok: true, removed: true });
    expect(r.detail).toMatch(/; its etcd lease [0-9a-f]+ is left to its TTL \(etcdserver: permission denied\)$/);
    expect(fake.calls.revoke).toBe(0);
    // A key on no lease (etcdctl put without --lease): nothing more to say.
    fake.put(KEY, lease(SITE_MAC));
    expect((await retireLease(fake, KEY, SITE_MAC, false)).detail).toMatch(/delete event$/);
  });

  it('leaves a lease rewritten between the read and the delete', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    const racing = {
      get: async (k: string) => {
        const e = await fake.get(k);
        fake.put(KEY, lease(SITE_MAC)); // the running gateway's renewal rewrote it
        return e;
      },
      deleteIf: fake.deleteIf.bind(fake),
      leaseKeys: fake.leaseKeys.bind(fake),
      revoke: fake.revoke.bind(fake),
    };
    const r = await retireLease(racing, KEY, SITE_MAC, false);
    expect(r).toMatchObject({ ok: false, removed: false });
    expect(r.detail).toContain('changed between reading and removing it');
    expect(await fake.get(KEY)).not.toBeNull();
  });

  it('through retire(): the MAC from stateDir, the lease removed; etcd down is said as for check, and nothing is removed', async () => {
    const clock = new ManualClock();
    const fake = new FakeEtcd(clock);
    fake.put(KEY, lease(SITE_MAC));
    const cfg = config({ cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } } });
    mkdirSync(cfg.stateDir, { recursive: true });
    writeFileSync(path.join(cfg.stateDir, 'vtep-mac'), `${SITE_MAC}\n`);
    fake.setDown(true);
    const down = await retire(cfg, { dryRun: false, force: false, clock, etcdConnect: async () => fake });
    expect(down[1]).toMatchObject({ name: 'cluster', ok: false });
    expect(down[1].detail).toMatch(/^etcd http:\/\/192\.0\.2\.10:2379 \(prefix \/coreos\.com\/network\): cannot reach etcd at http:\/\/192\.0\.2\.10:2379 \(read \S+: .*\); the lease stays$/);
    expect(down[1].detail).not.toContain('last known peers');
    expect(fake.calls.deleteIf).toBe(0);
    const up = new FakeEtcd(clock); // retire closed the first client, as it closes every one
    up.put(KEY, lease(SITE_MAC));
    const lines = await retire(cfg, { dryRun: false, force: false, clock, etcdConnect: async () => up });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['cluster', true]]);
    expect(lines[1].detail).toContain(`removed lease ${KEY}`);
    expect(up.store.has(KEY)).toBe(false);
    expect(up.closed).toBe(true);
  });

  it('the broker unreachable: the lease still goes, the mqtt line fails and says to run it again once the broker answers', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    const cfg = config({ vxlan: { vtepMac: SITE_MAC }, cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } }, mqtt: { url: 'mqtt://192.0.2.20:1883' } });
    const refused = Object.assign(new Error('connect ECONNREFUSED 192.0.2.20:1883'), { code: 'ECONNREFUSED', address: '192.0.2.20', port: 1883 });
    const mqttIo = { clock: new ManualClock(), connect: () => { throw refused; } };
    const lines = await retire(cfg, { dryRun: false, force: false, etcdConnect: async () => fake, mqttIo });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['mqtt', false], ['cluster', true]]);
    expect(lines[1].detail).toBe('mqtt://192.0.2.20:1883: connect ECONNREFUSED 192.0.2.20:1883; is the broker up and reachable at 192.0.2.20:1883? (the retained status and health stay on the broker)');
    expect(lines[1].fix).toBe('once the broker answers, run vxedge retire again: what it removed stays removed, and it clears the retained status and health then');
    expect(lines[2].detail).toContain(`removed lease ${KEY}`);
    expect(fake.store.has(KEY)).toBe(false);
  });

  it('the broker refusing the status subscription: the lease still goes, and the fix names the read right, not the broker\'s reachability', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    const cfg = config({ vxlan: { vtepMac: SITE_MAC }, cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } }, mqtt: { url: 'mqtt://192.0.2.20:1883' } });
    // Connects, then answers the SUBACK with 0x87 (not authorized), as an ACL that may not read does.
    class Refusing extends EventEmitter {
      subscribe(topic: string, _o: unknown, cb: (err: Error | null, granted: { topic: string; qos: number }[]) => void) {
        queueMicrotask(() => cb(null, [{ topic, qos: 0x87 }]));
      }
      end() {}
    }
    const mqttIo = { clock: new ManualClock(), connect: () => { const c = new Refusing(); queueMicrotask(() => c.emit('connect')); return c as unknown as MqttClient; } };
    const lines = await retire(cfg, { dryRun: false, force: false, etcdConnect: async () => fake, mqttIo });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['mqtt', false], ['cluster', true]]);
    expect(lines[1].detail).toBe('mqtt://192.0.2.20:1883: could not read vxedge/lab/e1/status: the broker refused the subscription (0x87): may these credentials read vxedge/lab/e1/status?; the retained status and health stay on the broker');
    expect(lines[1].fix).toBe("let these credentials read vxedge/lab/e1/status (the gateway's own may), or wait until the broker answers; then run vxedge retire again: what it removed stays removed, and it clears the retained status and health then");
    expect(fake.store.has(KEY)).toBe(false);
  });

  it('refuses while this config\'s gateway runs here, and touches nothing', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    const cfg = config({ vxlan: { vtepMac: SITE_MAC }, cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } } });
    mkdirSync(cfg.runDir, { recursive: true });
    writeFileSync(path.join(cfg.runDir, 'status.json'), JSON.stringify({ site: 'lab', node: 'e1', version: '0', state: 'ok', uptimeS: 1, pid: process.pid, tunnel: {}, peers: [], checks: [] }));
    const lines = await retire(cfg, { dryRun: false, force: true, etcdConnect: async () => fake });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ name: 'gateway', ok: false });
    expect(lines[0].detail).toContain(`(pid ${process.pid})`);
    expect(lines[0].fix).toContain('systemctl stop vxedge');
    expect(fake.calls.get + fake.calls.deleteIf).toBe(0);
  });

  it('--mac: a replaced box\'s lease goes although this machine\'s gateway runs with another MAC; the MQTT topics are left to it; its own MAC is refused', async () => {
    const OLD = '0e:5c:aa:00:00:99';
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(OLD));
    const cfg = config({ vxlan: { vtepMac: SITE_MAC }, cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } }, mqtt: { url: 'mqtt://192.0.2.20:1883' } });
    mkdirSync(cfg.runDir, { recursive: true });
    const status = (mac: string) => JSON.stringify({ site: 'lab', node: 'e1', version: '0', state: 'degraded', uptimeS: 1, pid: process.pid, tunnel: { vtepMac: mac }, peers: [], checks: [] });
    writeFileSync(path.join(cfg.runDir, 'status.json'), status(SITE_MAC));
    // Without --mac, the gateway running here stops it before anything is read.
    const plain = await retire({ ...cfg, mqtt: { ...cfg.mqtt, url: null } }, { dryRun: false, force: false, etcdConnect: async () => fake });
    expect(plain[0]).toMatchObject({ name: 'gateway', ok: false });
    const mqttIo = { clock: new ManualClock(), connect: () => { throw new Error('retire --mac must not connect to the broker'); } };
    const lines = await retire(cfg, { dryRun: false, force: false, mac: OLD, etcdConnect: async () => fake, mqttIo });
    expect(lines.map((l) => [l.name, l.ok])).toEqual([['gateway', true], ['cluster', true], ['mqtt', true]]);
    expect(lines[0].detail).toBe(`the gateway running here has VTEP MAC ${SITE_MAC}, not ${OLD}: only the entry of the box with ${OLD} is retired`);
    expect(lines[1].detail).toContain(`removed lease ${KEY} (PublicIP 198.51.100.7, VtepMAC ${OLD})`);
    expect(lines[2].detail).toContain('left alone with --mac');
    expect(fake.store.has(KEY)).toBe(false);

    // --mac naming the box that runs here, or a lease that holds another MAC: left in place.
    const again = new FakeEtcd(new ManualClock());
    again.put(KEY, lease(SITE_MAC));
    const self = await retire(cfg, { dryRun: false, force: false, mac: SITE_MAC, etcdConnect: async () => again, mqttIo });
    expect(self).toHaveLength(1);
    expect(self[0]).toMatchObject({ name: 'gateway', ok: false });
    expect(self[0].detail).toContain(`has VTEP MAC ${SITE_MAC}: it is the box --mac names`);
    const other = await retire(cfg, { dryRun: false, force: false, mac: OLD, etcdConnect: async () => again, mqttIo });
    expect(other[1]).toMatchObject({ name: 'cluster', ok: false });
    expect(other[1].detail).toContain(`does not hold the VTEP MAC given with --mac (${OLD}): left in place`);
    expect(again.store.has(KEY)).toBe(true);
  });

  it('a status.json that cannot be read is no "none runs": nothing is changed', async () => {
    const fake = new FakeEtcd(new ManualClock());
    fake.put(KEY, lease(SITE_MAC));
    const cfg = config({ vxlan: { vtepMac: SITE_MAC }, cluster: { source: 'etcd', etcd: { endpoints: ['http://192.0.2.10:2379'] } } });
    mkdirSync(cfg.runDir, { recursive: true });
    writeFileSync(path.join(cfg.runDir, 'status.json'), '{"site": "lab", "pid": ');
    const lines = await retire(cfg, { dryRun: false, force: false, etcdConnect: async () => fake });
    expect(lines).toEqual([{ name: 'gateway', ok: false, detail: expect.stringMatching(/^cannot tell whether a gateway runs this config here: \S+status\.json is not JSON .*; nothing was changed$/) }]);
    expect(fake.calls.get).toBe(0);
  });

  it('connects under the gateway\'s client id marked -retire, within the 128-byte limit', () => {
    expect(retireClientId({ site: 'lab', node: 'e1' })).toBe('vxedge-lab-e1-retire');
    const id = retireClientId({ site: 's'.repeat(60), node: 'n'.repeat(60) });
    expect(id.endsWith('-retire')).toBe(true);
    expect(Buffer.byteLength(id)).toBeLessThanOrEqual(128);
  });

  it('a static site without MQTT has nothing to retire but says no gateway runs', async () => {
    expect(await retire(config({}), { dryRun: false, force: false })).toEqual([{ name: 'gateway', ok: true, detail: expect.stringContaining('none runs this config') }]);
  });
});
