// The supervisor's pure rules that have no scenario of their own in keepalive.test.ts.
import { describe, expect, it } from 'vitest';
import { decideOnUnderlayChange, decideOnUnderlayCheck } from '../../src/control/supervisor.js';

describe('decideOnUnderlayChange', () => {
  const bound = { address: '192.0.2.10', pinned: false };
  const rediscover = (was: string, now: string) => [{ do: 'rediscover', why: `underlay addresses changed (${was || 'none'} -> ${now || 'none'})` }, { do: 'publish' }];

  it('rediscovers while the bound address stays, or while the NIC has none (a lease being renewed)', () => {
    expect(decideOnUnderlayChange('192.0.2.10', '192.0.2.10 192.0.2.77', bound)).toEqual(rediscover('192.0.2.10', '192.0.2.10 192.0.2.77'));
    expect(decideOnUnderlayChange('192.0.2.10', '', bound)).toEqual(rediscover('192.0.2.10', ''));
    // The same address back: the sockets bound to it work again.
    expect(decideOnUnderlayChange('', '192.0.2.10', bound)).toEqual(rediscover('', '192.0.2.10'));
  });

  // The sockets stay bound to the old address: the gateway forwarded nothing until restarted by hand.
  it('restarts when the bound address is gone and another took its place', () => {
    expect(decideOnUnderlayChange('192.0.2.10', '192.0.2.77', bound)).toEqual([{
      do: 'restart',
      why: 'the underlay address 192.0.2.10 the tunnel sockets are bound to is gone, and the NIC now has 192.0.2.77 (DHCP renumbering?): a fresh start binds the new one',
    }]);
    expect(decideOnUnderlayChange('', '192.0.2.77 192.0.2.78', bound)[0]).toMatchObject({ do: 'restart', why: expect.stringContaining('now has 192.0.2.77, 192.0.2.78') });
  });

  it('never restarts when underlay.address pins the address (a start would refuse it), nor without a bound address', () => {
    expect(decideOnUnderlayChange('192.0.2.10', '192.0.2.77', { ...bound, pinned: true })).toEqual(rediscover('192.0.2.10', '192.0.2.77'));
    expect(decideOnUnderlayChange('192.0.2.10', '192.0.2.77')).toEqual(rediscover('192.0.2.10', '192.0.2.77'));
  });
});

describe('decideOnUnderlayCheck', () => {
  // A router that restarts takes its LAN port down: a port mapping that failed meanwhile waited
  // for its next retry, up to 10 min away.
  it('the uplink back after the check failed: STUN again and a failed port mapping retried now; nothing otherwise', () => {
    expect(decideOnUnderlayCheck(false, true)).toEqual([{ do: 'uplink-back', why: 'the uplink is back' }]);
    expect(decideOnUnderlayCheck(null, true)).toEqual([]); // the first refresh
    expect(decideOnUnderlayCheck(true, true)).toEqual([]);
    expect(decideOnUnderlayCheck(true, false)).toEqual([]);
    expect(decideOnUnderlayCheck(false, false)).toEqual([]);
  });
});
