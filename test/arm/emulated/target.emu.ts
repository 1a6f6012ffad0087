// Runs inside the emulated ARM Node (test/arm/emulated.config.ts): first, that it IS the
// emulated target, so that the unit files run beside it prove something about ARM; then the
// places where a 32-bit target could differ from x86-64 for the TypeScript side: counters past
// 2^32 (peer and drop counters are float64, never uint32), unsigned IPv4 arithmetic at the top
// of the range, Buffer offsets and reads of values >= 2^31, and wall-clock times past 2038
// (a 32-bit time_t ends there; V8's clock must not).
import { describe, expect, it } from 'vitest';
import { DropCounters, Drop } from '../../../src/dataplane/drops.js';
import { PeerTable, STAT_RX_BYTES, STAT_RX_PACKETS, STAT_TX_BYTES, STAT_TX_PACKETS } from '../../../src/dataplane/peers.js';
import { MAX_DURATION_MS, parseDuration } from '../../../src/util/duration.js';
import { inCidr, intToIp, ipToInt, parseCidr } from '../../../src/util/ipv4.js';

const TARGET = process.env.VXARM_TARGET ?? '';
const ARCH: Record<string, string> = { arm64: 'arm64', armv7: 'arm' };

describe(`the emulated target (${TARGET})`, () => {
  it('is the ARM Node 20 under qemu-user, not the host', () => {
    expect(ARCH[TARGET], `VXARM_TARGET=${TARGET}`).toBeDefined();
    expect(process.arch).toBe(ARCH[TARGET]);
    expect(process.versions.node).toMatch(/^20\./);
    // The official builds for arm are armv7-a with hard float (what Raspberry Pi OS armhf runs).
    if (TARGET === 'armv7') expect(process.config.variables).toMatchObject({ arm_version: '7', arm_float_abi: 'hard' });
  });

  it('counts a peer past 2^32 bytes and packets without wrapping', () => {
    const t = new PeerTable([{ name: 'aws-1', publicIp: '203.0.113.10', port: 8472, subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:01:00' }]);
    const slot = t.fromAddress(ipToInt('203.0.113.10'));
    expect(slot).toBeGreaterThanOrEqual(0);
    const start = 2 ** 32 - 3000;
    t.countRx(slot, start);
    for (let i = 0; i < 3; i++) t.countRx(slot, 1450);
    t.countTx(slot, 2 ** 32 + 7, 2 ** 32 + 1);
    expect(t.stat(slot, STAT_RX_BYTES)).toBe(start + 3 * 1450);
    expect(t.stat(slot, STAT_RX_PACKETS)).toBe(4);
    expect(t.stat(slot, STAT_TX_BYTES)).toBe(2 ** 32 + 7);
    expect(t.stat(slot, STAT_TX_PACKETS)).toBe(2 ** 32 + 1);
  });

  it('counts drops past 2^32', () => {
    const d = new DropCounters();
    d.add(Drop.unknownSource, 2 ** 32 - 1);
    d.add(Drop.unknownSource, 2);
    expect(d.get('unknownSource')).toBe(2 ** 32 + 1);
    expect(JSON.parse(JSON.stringify({ n: d.get('unknownSource') })).n).toBe(4294967297);
  });

  it('keeps IPv4 addresses unsigned at the top of the range', () => {
    expect(ipToInt('255.255.255.255')).toBe(0xffffffff);
    expect(intToIp(0xcb007101)).toBe('203.0.113.1');
    expect(inCidr(ipToInt('255.255.255.254'), parseCidr('240.0.0.0/4'))).toBe(true);
    const a = Uint32Array.of(ipToInt('203.0.113.10'));
    expect(a[0]).toBe(0xcb00710a);
  });

  it('reads and writes a Buffer at large offsets, values >= 2^31 unsigned', () => {
    const b = Buffer.alloc(1 << 20);
    const off = (1 << 20) - 8;
    b.writeUInt32BE(0xfedcba98, off);
    expect(b.readUInt32BE(off)).toBe(0xfedcba98);
    expect(b.readInt32BE(off)).toBe(0xfedcba98 - 2 ** 32);
    expect(b.subarray(off).readUInt32BE(0)).toBe(0xfedcba98);
    expect(b.readBigUInt64BE(off - 8) + 0n).toBe(0n);
  });

  it('handles wall-clock time past 2038, and durations up to the 2^31 - 1 ms a timer takes', () => {
    const after2038 = 2 ** 31 * 1000 + 1000;
    expect(new Date(after2038).toISOString()).toBe('2038-01-19T03:14:09.000Z');
    expect(Date.parse('2040-02-29T12:00:00Z')).toBe(2214129600000);
    expect(Date.now()).toBeGreaterThan(Date.parse('2024-01-01T00:00:00Z'));
    expect(parseDuration('596h')).toBe(596 * 3_600_000);
    expect(MAX_DURATION_MS).toBe(2 ** 31 - 1);
    expect(() => parseDuration('597h')).toThrow(/too long/);
  });
});
