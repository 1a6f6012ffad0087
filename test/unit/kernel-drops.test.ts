import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DropCounters } from '../../src/dataplane/drops.js';
import { deviceTxDrops, KernelDrops, netDevTxDrops } from '../../src/dataplane/kernel-drops.js';

// /proc/net/dev as Linux 6.18 prints it (dev_seq_printf_stats): a name right-aligned before
// its colon, 8 receive and 8 transmit columns; the transmit drop count is the 12th number.
const PROC_NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 123456789  98765    0    7    0     0          0         0 55555555   44444    0    3    0     0       0          0
flannel.1:12345678901234567 1  2    3    4     5          6         7        8       9   10 4321   12    13      14         15
  lan0: 1 2 3 4 5 6 7 8 9 10 11 12
`;

/** A source whose counts a test sets by hand. */
function sources(device: number | null, sockets: number[]) {
  const s = { device, sockets };
  return { s, src: { device: () => s.device, underlay: () => [...s.sockets] } };
}

describe('netDevTxDrops', () => {
  it('reads the transmit drop column of the named interface, whatever the padding', () => {
    expect(netDevTxDrops(PROC_NET_DEV, 'eth0')).toBe(3);
    expect(netDevTxDrops(PROC_NET_DEV, 'flannel.1')).toBe(4321); // no space after the colon
    expect(netDevTxDrops(PROC_NET_DEV, 'lan0')).toBe(12);
    expect(netDevTxDrops(PROC_NET_DEV, 'lo')).toBe(0);
  });

  it('is null for an interface not listed, a prefix of a listed one, or a line cut short', () => {
    expect(netDevTxDrops(PROC_NET_DEV, 'flannel.2')).toBeNull();
    expect(netDevTxDrops(PROC_NET_DEV, 'eth')).toBeNull();
    expect(netDevTxDrops(PROC_NET_DEV, 'flannel')).toBeNull();
    expect(netDevTxDrops('  eth0: 1 2 3 4 5 6 7 8 9 10 11\n', 'eth0')).toBeNull();
    expect(netDevTxDrops('  eth0: 1 2 3 4 5 6 7 8 9 10 11 x\n', 'eth0')).toBeNull();
    expect(netDevTxDrops('', 'eth0')).toBeNull();
  });

  it('finds any interface among others, with any counts (property)', () => {
    const name = fc.stringMatching(/^[a-z][a-z0-9._-]{0,14}$/);
    const counts = fc.array(fc.nat(), { minLength: 16, maxLength: 16 });
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(name, counts), { minLength: 1, maxLength: 6, selector: ([n]) => n }), fc.nat(5), (ifs, pick) => {
        const text = ifs.map(([n, c]) => `${n.padStart(9)}: ${c.join(' ')}`).join('\n');
        const [n, c] = ifs[pick % ifs.length];
        expect(netDevTxDrops(text, n)).toBe(c[11]);
      }),
    );
  });

  it('deviceTxDrops: a read that fails is null, not an exception', () => {
    expect(deviceTxDrops('eth0', () => PROC_NET_DEV)()).toBe(3);
    expect(deviceTxDrops('eth0', () => { throw new Error('ENOENT'); })()).toBeNull();
  });
});

describe('KernelDrops', () => {
  it('counts what the kernel dropped since it was created, once, into deviceQueue and underlayReceive', () => {
    const { s, src } = sources(100, [5, 7]); // dropped before vxedge took them: not counted
    const k = new KernelDrops(src);
    const d = new DropCounters();
    k.collect(d);
    expect(d.snapshot()).toEqual({});
    s.device = 130;
    s.sockets = [6, 10];
    k.collect(d);
    expect(d.snapshot()).toEqual({ deviceQueue: 30, underlayReceive: 4 });
    k.collect(d); // nothing new
    expect(d.snapshot()).toEqual({ deviceQueue: 30, underlayReceive: 4 });
  });

  it("follows a socket's 32-bit counter across its wrap", () => {
    const { s, src } = sources(null, [0xffff_fff0]);
    const k = new KernelDrops(src);
    const d = new DropCounters();
    s.sockets = [0x0000_0010];
    k.collect(d);
    expect(d.get('underlayReceive')).toBe(0x20);
  });

  it('counts all of a device count that went down (a device created anew)', () => {
    const { s, src } = sources(500, []);
    const k = new KernelDrops(src);
    const d = new DropCounters();
    s.device = 20;
    k.collect(d);
    expect(d.get('deviceQueue')).toBe(20);
    s.device = 25;
    k.collect(d);
    expect(d.get('deviceQueue')).toBe(25);
  });

  it('skips what cannot be read, and takes its first reading as the baseline', () => {
    const { s, src } = sources(null, [-1, 3]);
    const k = new KernelDrops(src);
    const d = new DropCounters();
    s.device = 40; // first readable: a baseline, not 40 drops
    s.sockets = [9, 4];
    k.collect(d);
    expect(d.snapshot()).toEqual({ underlayReceive: 1 });
    s.device = 41;
    s.sockets = [12, -1];
    k.collect(d);
    expect(d.snapshot()).toEqual({ deviceQueue: 1, underlayReceive: 4 });
    s.sockets = [13, 6]; // socket 1 readable again: its last known count (4) is the base
    k.collect(d);
    expect(d.snapshot()).toEqual({ deviceQueue: 1, underlayReceive: 7 });
  });
});
