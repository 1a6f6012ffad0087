// The running gateway's checks that are pure functions of what `ip` reports.
import { describe, expect, it } from 'vitest';
import { deviceCheck, lostNeighboursIn, lostRoutesIn, underlayLinkCheck } from '../../src/health/checks.js';
import { parseCidr } from '../../src/util/ipv4.js';

const u = { iface: 'eth0', address: '192.0.2.10', mtu: 1500 };
const UP = ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'];

describe('underlay check (running)', () => {
  it('passes with the NIC up, a carrier and our address on it', () => {
    expect(underlayLinkCheck(u, 8472, { addresses: ['192.0.2.10'], flags: UP })).toEqual({ name: 'underlay', ok: true, detail: 'eth0 192.0.2.10:8472' });
  });

  // `ip link set eth0 down` keeps the address: the check passed while every peer went down
  // with reasons that blamed the nodes ("host unreachable (is the node running ...)").
  it('fails when the NIC is administratively down, though the address is still on it', () => {
    const r = underlayLinkCheck(u, 8472, { addresses: ['192.0.2.10'], flags: ['BROADCAST', 'MULTICAST'] });
    expect(r.ok).toBe(false);
    expect(r.detail).toBe('eth0 is down (administratively): nothing reaches the peers');
    expect(r.fix).toMatch(/^ip link set eth0 up/);
  });

  it('fails when the NIC has no carrier (cable, switch port, Wi-Fi)', () => {
    const r = underlayLinkCheck(u, 8472, { addresses: ['192.0.2.10'], flags: ['NO-CARRIER', 'BROADCAST', 'MULTICAST', 'UP'] });
    expect(r.ok).toBe(false);
    expect(r.detail).toBe('eth0 has no carrier (no link to the switch or router): nothing reaches the peers');
    expect(r.fix).toContain("eth0's cable");
  });

  it('fails when the NIC is gone, and when our address left it', () => {
    expect(underlayLinkCheck(u, 8472, null)).toMatchObject({ ok: false, detail: 'eth0 no longer exists: nothing reaches the peers' });
    expect(underlayLinkCheck(u, 8472, null).fix).toMatch(/^bring eth0 back .*with 192\.0\.2\.10 again the tunnel works at once .*with another address vxedge stops for a fresh start/);
    expect(underlayLinkCheck(u, 8472, { addresses: ['192.0.2.99'], flags: UP })).toMatchObject({
      ok: false, detail: '192.0.2.10 is no longer on eth0 (now: 192.0.2.99)', fix: 'its sockets are bound to the old address: vxedge stops for a fresh start (exit 1) once another address is on the NIC, unless underlay.address pins the old one (then give it back, or change underlay.address and restart)',
    });
  });
});

describe('device check (running)', () => {
  // It said "is vxedge running? see its log" from inside the running gateway, after something
  // had deleted its device (`ip link del flannel.1`) and the data plane had stopped.
  it('says a missing device was deleted under the running gateway, and that a restart makes it again', () => {
    const r = deviceCheck('flannel.1', null);
    expect(r).toMatchObject({ name: 'device', ok: false, detail: 'flannel.1 was deleted while vxedge runs: nothing is forwarded' });
    expect(r.fix).toMatch(/^vxedge stops itself \(exit 1\) once its data plane notices, for its service manager to start a fresh one/);
  });

  it('passes a device that is up, and fails one that is down with the command', () => {
    expect(deviceCheck('flannel.1', { ifname: 'flannel.1', mtu: 1450, flags: ['POINTOPOINT', 'UP'], linkinfo: { info_kind: 'tun' } }))
      .toEqual({ name: 'device', ok: true, detail: 'flannel.1 tun mtu 1450 up' });
    expect(deviceCheck('flannel.1', { ifname: 'flannel.1', mtu: 1450, flags: ['POINTOPOINT'], linkinfo: { info_kind: 'tun' } }))
      .toEqual({ name: 'device', ok: false, detail: 'flannel.1 tun mtu 1450 down', fix: 'ip link set flannel.1 up' });
  });
});

describe('lost peer routes (put back by the gateway)', () => {
  const subnets = ['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24'].map(parseCidr);
  it('are the subnets with no route of exactly their prefix, whatever else covers them', () => {
    const routes = [
      { dst: 'default', dev: 'eth0' },
      { dst: '10.244.0.0/16', dev: 'lan0' }, // broader: our /24 was more specific, and is gone
      { dst: '10.244.1.0/24', dev: 'flannel.1' }, // ours, in place
      { dst: '10.244.3.128/25', dev: 'lan0' }, // more specific, someone's: no obstacle to ours
      { dst: '10.244.4.0/24', dev: 'lan0' }, // the same prefix via another device: a conflict, left alone
    ];
    expect(lostRoutesIn(subnets, routes).map((c) => c.text)).toEqual(['10.244.2.0/24', '10.244.3.0/24']);
    expect(lostRoutesIn(subnets, [])).toHaveLength(4);
    expect(lostRoutesIn(subnets, subnets.map((c) => ({ dst: c.text, dev: 'flannel.1' })))).toEqual([]);
  });
});

describe('lost TAP neighbours (put back by the gateway)', () => {
  const peer = (n: number, vtepMac: string) => ({ name: `aws-${n}`, subnet: parseCidr(`10.244.${n}.0/24`), vtepMac });
  const peers = [peer(1, '0e:00:00:00:00:01'), peer(2, '0e:00:00:00:00:02'), peer(3, '0e:00:00:00:00:03'), peer(4, '0e:00:00:00:00:04')];
  it('are the peers whose .0 is not a permanent neighbour at their VTEP MAC', () => {
    const neighbours = [
      { dst: '10.244.1.0', lladdr: '0E:00:00:00:00:01', state: ['PERMANENT'] }, // ours, in place (case aside)
      { dst: '10.244.2.0', lladdr: '0e:00:00:00:00:02', state: ['STALE'] }, // made non-permanent: it would age out
      { dst: '10.244.3.0', lladdr: '0e:00:00:00:00:99', state: ['PERMANENT'] }, // another MAC
      // 10.244.4.0: deleted
      { dst: '10.244.9.0', state: ['FAILED'] }, // not a peer's
    ];
    expect(lostNeighboursIn(peers, neighbours).map((p) => p.name)).toEqual(['aws-2', 'aws-3', 'aws-4']);
    expect(lostNeighboursIn(peers, [])).toHaveLength(4);
    expect(lostNeighboursIn(peers, peers.map((p) => ({ dst: `10.244.${p.name.slice(4)}.0`, lladdr: p.vtepMac, state: ['PERMANENT'] })))).toEqual([]);
  });
});
