// What start-up does with an interface that already has overlay.device's name: replace only
// what an earlier run (or flannel) left, refuse what belongs to a running process or to the
// site (test/lab/gateway-scenarios.ts runs the same against real devices).
import { describe, expect, it } from 'vitest';
import { classifyExistingDevice } from '../../src/control/device.js';
import type { LinkInfo } from '../../src/control/iproute.js';

const link = (linkinfo?: LinkInfo['linkinfo']): LinkInfo => ({ ifname: 'flannel.1', mtu: 1450, ...(linkinfo ? { linkinfo } : {}) });

describe('classifyExistingDevice', () => {
  it('a name nothing has is free', () => {
    expect(classifyExistingDevice('flannel.1', null)).toEqual({ action: 'free' });
  });

  it('replaces a persistent TUN/TAP and a kernel vxlan', () => {
    expect(classifyExistingDevice('flannel.1', link({ info_kind: 'tun', info_data: { persist: true } }))).toEqual({ action: 'replace', kind: 'tun' });
    expect(classifyExistingDevice('flannel.1', link({ info_kind: 'vxlan' }))).toEqual({ action: 'replace', kind: 'vxlan' });
  });

  it('refuses a TUN/TAP a running process holds', () => {
    expect(classifyExistingDevice('flannel.1', link({ info_kind: 'tun', info_data: { persist: false } }))).toMatchObject({
      action: 'in-use',
      message: expect.stringContaining('device flannel.1 is in use by another process'),
    });
  });

  it.each([
    ['bridge', link({ info_kind: 'bridge' }), 'an existing bridge device'],
    ['veth', link({ info_kind: 'veth' }), 'an existing veth device'],
    ['vlan', link({ info_kind: 'vlan' }), 'an existing vlan device'],
    ['a NIC (no link kind)', link(), 'an existing network interface'],
  ])('refuses a %s, naming overlay.device and what to do', (_what, l, phrase) => {
    expect(classifyExistingDevice('eth0', l)).toMatchObject({
      action: 'foreign',
      message: expect.stringMatching(new RegExp(`^overlay\\.device eth0 names ${phrase}, .*vxedge does not remove it: set overlay\\.device to a free name`)),
    });
  });
});
