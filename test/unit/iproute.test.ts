// control/iproute.ts defaultGatewayIn: the site router read from /proc/net/route's text, as the
// running checks read it at every refresh.
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { defaultGatewayIn } from '../../src/control/iproute.js';

const HEAD = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n';
const row = (iface: string, dest: string, gw: string, flags: string, metric: number, mask: string) =>
  `${iface}\t${dest}\t${gw}\t${flags}\t0\t0\t${metric}\t${mask}\t0\t0\t0                                                                               \n`;
/** 192.0.2.1 as the kernel prints it on a little-endian machine. */
const LE_192_0_2_1 = '010200C0';

describe('defaultGatewayIn (/proc/net/route)', () => {
  it("names the default route's gateway of the interface asked for, the lowest metric first, as the kernel chooses", () => {
    const text = HEAD +
      row('wlan0', '00000000', '0101A8C0', '0003', 600, '00000000') + // another interface's default
      row('eth0', '000200C0', '00000000', '0001', 0, '00FFFFFF') + // the LAN's own route
      row('eth0', '00000000', 'FE0200C0', '0003', 200, '00000000') + // a backup router
      row('eth0', '00000000', LE_192_0_2_1, '0003', 100, '00000000');
    expect(defaultGatewayIn(text, 'eth0', true)).toBe('192.0.2.1');
    expect(defaultGatewayIn(text, 'wlan0', true)).toBe('192.168.1.1');
    expect(defaultGatewayIn(text, 'eth1', true)).toBeNull();
    // A big-endian machine prints the same address the other way round.
    expect(defaultGatewayIn(HEAD + row('eth0', '00000000', 'C0000201', '0003', 0, '00000000'), 'eth0', false)).toBe('192.0.2.1');
  });

  it('passes over routes that are not a usable default through a gateway', () => {
    const text = HEAD +
      row('eth0', '00000000', '00000000', '0001', 0, '00000000') + // on-link default (a point-to-point uplink): no router to ask
      row('eth0', '00000000', LE_192_0_2_1, '0002', 0, '00000000') + // not up
      row('eth0', '0000000A', LE_192_0_2_1, '0003', 0, '000000FF'); // not a default route
    expect(defaultGatewayIn(text, 'eth0', true)).toBeNull();
    expect(defaultGatewayIn('', 'eth0', true)).toBeNull();
  });

  it('never throws on any text, and answers a dotted quad or null', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), fc.boolean(), (text, le) => {
        const r = defaultGatewayIn(HEAD + text, 'eth0', le);
        expect(r === null || /^\d{1,3}(\.\d{1,3}){3}$/.test(r)).toBe(true);
      }),
    );
  });

  it("reads this machine's table as `ip route` shows it", async () => {
    const { defaultGateway } = await import('../../src/control/iproute.js');
    const routes = JSON.parse(execFileSync('ip', ['-j', '-4', 'route', 'show', 'default'], { encoding: 'utf8' }) || '[]') as { dev?: string; gateway?: string; metric?: number }[];
    const first = routes.filter((r) => r.gateway && r.dev).sort((a, b) => (a.metric ?? 0) - (b.metric ?? 0))[0];
    if (first) expect(await defaultGateway(first.dev!)).toBe(first.gateway);
    expect(await defaultGateway('lo')).toBeNull();
  });
});
