import { describe, expect, it } from 'vitest';
import { renderStatus, renderCheckLines } from '../../src/cli/render.js';
import type { HealthDocument } from '../../src/health/document.js';

const NOW = Date.parse('2026-12-04T12:00:00.000Z');

function doc(over: Partial<HealthDocument> = {}): HealthDocument {
  return {
    site: 'lab', node: 'edge-1', version: '0.1.0', ts: '2026-12-04T12:00:00.000Z', uptimeS: 3 * 3600, state: 'degraded',
    tunnel: {
      device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:01',
      localEndpoint: '192.168.50.10:8472', publicEndpoint: null,
    },
    peers: [
      { name: 'aws-1', endpoint: '203.0.113.10:8472', subnet: '10.244.1.0/24', state: 'up', rttMs: 1.25, lossPct: 0,
        lastSeen: '2026-12-04T11:59:58.000Z', rxPackets: 10, txPackets: 12, rxBytes: 980, txBytes: 3 * 1024 * 1024, reason: null },
      { name: 'aws-2', endpoint: '203.0.113.20:8472', subnet: '10.244.2.0/24', state: 'down', rttMs: null, lossPct: 100,
        lastSeen: null, rxPackets: 0, txPackets: 40, rxBytes: 0, txBytes: 4000,
        reason: 'no answer to keepalive probes for 90s: check that the AWS security group allows UDP 8472' },
    ],
    checks: [
      { name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' },
      { name: 'public_endpoint', ok: false, detail: 'unknown', fix: 'set underlay.publicIp' },
    ],
    pid: 1234,
    drops: {},
    ...over,
  };
}

describe('renderStatus (vxedge status for a person)', () => {
  it('shows the gateway, the tunnel, a table of peers with their reasons, and the failing checks with their fixes', () => {
    const out = renderStatus(doc(), NOW).split('\n');
    expect(out[0]).toBe('vxedge 0.1.0  site lab  node edge-1  state DEGRADED  up 3h');
    expect(out[1]).toBe('tunnel flannel.1 (tun) vni 1 mtu 1450 subnet 10.244.100.0/24 vtep 0e:5c:aa:00:00:01');
    expect(out[2]).toBe('local 192.168.50.10:8472  public unknown');
    const table = out.slice(4, 7);
    expect(table[0]).toMatch(/^PEER +STATE +ENDPOINT +SUBNET +RTT +LOSS +LAST SEEN +RX PKT +TX PKT +RX +TX$/);
    expect(table[1].split(/ {2,}/)).toEqual(['aws-1', 'up', '203.0.113.10:8472', '10.244.1.0/24', '1.25ms', '0%', '2s ago', '10', '12', '980B', '3.0MiB']);
    expect(table[2].split(/ {2,}/)).toEqual(['aws-2', 'down', '203.0.113.20:8472', '10.244.2.0/24', '-', '100%', 'never', '0', '40', '0B', '3.9KiB']);
    // Columns line up: every row's second column starts where the header's does.
    for (const r of table) expect(r.indexOf(r.split(/ {2,}/)[1], 5)).toBe(table[0].indexOf('STATE'));
    expect(out).toContain('  aws-2: no answer to keepalive probes for 90s: check that the AWS security group allows UDP 8472');
    expect(out.slice(out.indexOf('checks failing:'))).toEqual(['checks failing:', '  public_endpoint: unknown', '    fix: set underlay.publicIp', '']);
  });

  it('says every check passes and shows no drops line when nothing was dropped', () => {
    const out = renderStatus(doc({ checks: [{ name: 'ip_forward', ok: true, detail: 'ok' }] }), NOW);
    expect(out).toContain('checks: all 1 pass\n');
    expect(out).not.toContain('drops');
  });

  it("lists the drops, and says where the kernel's own were dropped", () => {
    const out = renderStatus(doc({ drops: { notForUs: 3, deviceQueue: 2000, underlayReceive: 12 } }), NOW).split('\n');
    const at = out.indexOf('drops: notForUs=3 deviceQueue=2000 underlayReceive=12');
    expect(at).toBeGreaterThan(0);
    expect(out[at + 1]).toMatch(/^ {2}deviceQueue: dropped by the kernel at the tunnel device's queue: the site sent into the tunnel faster than the gateway read$/);
    expect(out[at + 2]).toMatch(/^ {2}underlayReceive: dropped by the kernel at the tunnel sockets: /);
    expect(out[at + 3]).toBe('');
    // The gateway's own reasons need no such line: the README's table says what each means.
    expect(renderStatus(doc({ drops: { notForUs: 3 } }), NOW).trimEnd().split('\n').at(-1)).toBe('drops: notForUs=3');
    // Nor does a reason that happens to share a name with an object's own properties.
    expect(renderStatus(doc({ drops: { constructor: 1 } }), NOW).trimEnd().split('\n').at(-1)).toBe('drops: constructor=1');
  });
});

describe('renderStatus: the last reload', () => {
  // A refused SIGHUP (an invalid file) and keys waiting for a restart were in the log and
  // the JSON only: `vxedge status` after `systemctl reload` showed nothing of either.
  it('says a refused reload was refused, why, and that the running config is kept', () => {
    const out = renderStatus(doc({
      reload: { at: '2026-12-04T11:58:00.000Z', applied: [], restartNeeded: [], error: 'invalid config /etc/vxedge/site.yaml (1 problem): bogus: unknown key' },
    }), NOW);
    expect(out).toContain('\nreload at 2026-12-04T11:58:00.000Z refused, the running config kept: invalid config /etc/vxedge/site.yaml (1 problem): bogus: unknown key\n');
    expect(out).not.toContain('restart needed');
  });

  it('lists the keys that wait for a restart, also after a later refused reload', () => {
    const applied = renderStatus(doc({ reload: { at: '2026-12-04T11:58:00.000Z', applied: ['peers'], restartNeeded: ['vxlan.mtu', 'runDir'] } }), NOW);
    expect(applied).toContain('\nrestart needed to apply: vxlan.mtu, runDir (systemctl restart vxedge)\n');
    expect(applied).not.toContain('refused');
    const refused = renderStatus(doc({ reload: { at: '2026-12-04T11:59:00.000Z', applied: [], restartNeeded: ['vxlan.mtu'], error: 'x' } }), NOW);
    expect(refused).toMatch(/refused, the running config kept: x\nrestart needed to apply: vxlan\.mtu/);
  });

  it('says nothing of a reload that applied everything', () => {
    const out = renderStatus(doc({ reload: { at: '2026-12-04T11:58:00.000Z', applied: ['peers'], restartNeeded: [] } }), NOW);
    expect(out).not.toMatch(/reload|restart/);
  });
});

describe('renderStatus: the services it talks to', () => {
  // MQTT, the cluster source and the port mapping fail without failing a check (forwarding
  // goes on), so `vxedge status` said nothing of a broker or an API it could not reach.
  const mqtt = { enabled: true, connected: true, published: 12, lastError: null, queued: 0, reconnects: 0 };
  const cluster = { source: 'kubernetes' as const, connected: true, lastSync: '2026-12-04T11:59:30.000Z', nodes: 3, peers: 2, registered: true, error: null };
  const portMapping = {
    protocol: 'upnp' as const, external: '198.51.100.2:8472', lifetime: 7200, expires: '2026-12-04T14:00:00.000Z', error: null, mode: 'auto' as const,
    state: 'mapped' as const, gateway: '192.0.2.1' as string | null, routerAddress: '198.51.100.2', tried: [], renewedAt: null, retryAt: null, routerRestarts: 0,
    badAnswers: { pcp: 0, natpmp: 0, upnp: 0 }, stunAgrees: null,
  };
  const lines = (over: Partial<HealthDocument>) => renderStatus(doc(over), NOW).split('\n').filter((l) => /^(mqtt|cluster|metrics|port mapping):/.test(l));

  it('has no line for a service the config does not use', () => {
    expect(lines({})).toEqual([]);
    expect(lines({ mqtt: { ...mqtt, enabled: false, connected: false }, cluster: { ...cluster, source: 'static' }, nat: { portMapping: { ...portMapping, mode: 'off', state: 'off' } } })).toEqual([]);
  });

  it('says each one works, with what it holds', () => {
    const checks = [...doc().checks, { name: 'metrics', ok: true, detail: 'serving Prometheus metrics at http://127.0.0.1:9474/metrics' }];
    expect(lines({ mqtt, cluster, nat: { portMapping }, checks })).toEqual([
      'mqtt: connected, 12 health documents published',
      'cluster: kubernetes, connected, 3 nodes, 2 peers, registered',
      'metrics: serving Prometheus metrics at http://127.0.0.1:9474/metrics',
      'port mapping: upnp 198.51.100.2:8472 on router 192.0.2.1, until 2026-12-04T14:00:00.000Z',
    ]);
    // Not served: among the failing checks with its fix, not on a line of its own.
    const failing = renderStatus(doc({ checks: [{ name: 'metrics', ok: false, detail: 'cannot serve metrics on 127.0.0.1:9474: the port is in use', fix: 'choose another port' }] }), NOW);
    expect(failing).toContain('checks failing:\n  metrics: cannot serve metrics on 127.0.0.1:9474: the port is in use\n    fix: choose another port');
    expect(failing).not.toMatch(/^metrics:/m);
    // A document of a version before `gateway` was in it.
    expect(lines({ nat: { portMapping: { ...portMapping, gateway: undefined as unknown as null } } })).toEqual(['port mapping: upnp 198.51.100.2:8472, until 2026-12-04T14:00:00.000Z']);
  });

  it('says which one does not work, and why', () => {
    expect(lines({
      mqtt: { ...mqtt, connected: false, lastError: 'connect ECONNREFUSED 192.0.2.1:1883', queued: 1, reconnects: 2 },
      cluster: { ...cluster, source: 'etcd', connected: false, lastSync: '2026-12-04T11:55:00.000Z', error: 'etcd unreachable: 10.0.0.5:2379 refused the connection' },
      nat: { portMapping: { ...portMapping, protocol: null, external: null, state: 'failed', error: 'the router 192.0.2.1 does not answer PCP, NAT-PMP, UPnP IGD', retryAt: '2026-12-04T12:00:15.000Z' } },
    })).toEqual([
      'mqtt: NOT connected: connect ECONNREFUSED 192.0.2.1:1883 (the latest health document waits)',
      'cluster: etcd, NOT connected (last view 5m ago, kept), 3 nodes, 2 peers, registered: etcd unreachable: 10.0.0.5:2379 refused the connection',
      'port mapping: failed: the router 192.0.2.1 does not answer PCP, NAT-PMP, UPnP IGD (next try 2026-12-04T12:00:15.000Z)',
    ]);
  });

  it('counts the cluster nodes left out and names the first three with the reason', () => {
    const out = (skipped: { name: string; why: string }[]) => renderStatus(doc({ cluster: { ...cluster, nodes: 7, skipped } }), NOW).split('\n');
    const node = (n: number) => ({ name: `aws-${n}`, why: `backend-data VNI 2 is not ours (vxlan.vni 1)` });
    const two = out([node(1), node(2)]);
    expect(two.slice(two.findIndex((l) => l.startsWith('cluster:')), -1)).toEqual([
      'cluster: kubernetes, connected, 7 nodes, 2 peers, 2 left out, registered',
      '  left out: aws-1: backend-data VNI 2 is not ours (vxlan.vni 1)',
      '  left out: aws-2: backend-data VNI 2 is not ours (vxlan.vni 1)',
    ]);
    const five = out([1, 2, 3, 4, 5].map(node));
    expect(five.filter((l) => l.startsWith('  left out: ')).map((l) => l.split(':')[1].trim())).toEqual(['aws-1', 'aws-2', 'aws-3']);
    expect(five).toContain('  and 2 more left out (vxedge status --json lists every one)');
    expect(out([]).join('\n')).not.toMatch(/left out/);
  });
});

describe('renderCheckLines (vxedge check, vxedge retire)', () => {
  it('ok or FAIL, names padded to the longest, a fix under a failure only', () => {
    expect(renderCheckLines([
      { name: 'gateway', ok: true, detail: 'none runs', fix: 'never shown' },
      { name: 'mqtt', ok: false, detail: 'refused', fix: 'check the password' },
      { name: 'cluster', ok: false, detail: 'unreachable' },
    ])).toBe(
      'ok    gateway  none runs\n' +
      'FAIL  mqtt     refused\n' +
      '               fix: check the password\n' +
      'FAIL  cluster  unreachable\n',
    );
  });
});
