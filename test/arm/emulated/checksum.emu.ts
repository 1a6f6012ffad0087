// Runs inside the emulated ARM Node (test/arm/emulated.config.ts), on the addon cross-built
// for the target (scripts/arm-test passes its path as VXARM_ADDON): the Internet checksums of
// the offload paths, which src/native/csum.h sums with NEON on arm64 and with plain 64-bit
// arithmetic on armv7 (x86-64's SSE2 is tested by test/native/offload.test.ts). Any payload
// length (odd ones, those that leave 1..31 bytes after the 32-byte blocks) and any header
// values: every segment _tsoSegment cuts verifies in TypeScript's own sum, the segments joined
// again by _groCoalesce give the payload back, and a segment with one byte changed is never
// joined (its checksum fails: it is written as it came, for the kernel to drop).
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { NativeBinding } from '../../../src/native/index.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, VNET_HDR_LEN, writeVnetHeader } from '../../../src/proto/vnet.js';
import { groCoalesce } from '../../support/native-offload.js';
import { tcp, tcpChecksumOk } from '../../unit/packets.js';

const ADDON = process.env.VXARM_ADDON ?? '';
const ACK = 0x10;
const ENCAP = Buffer.from('0800000000000100' + '0abb00000100' + '0e5caa000064' + '0800', 'hex'); // VXLAN + inner Ethernet
const TS_OPTS = Buffer.from('0101080a0001e2400000abcd', 'hex');

describe(`Internet checksums in the addon for ${process.env.VXARM_TARGET ?? '?'}`, () => {
  it('is the addon built for this target', () => {
    expect(ADDON, 'VXARM_ADDON').toMatch(/\.node$/);
  });

  it('TSO segments verify, GRO joins them back, and a segment with a changed byte is not joined', () => {
    const native = createRequire(import.meta.url)(ADDON) as NativeBinding;
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9000 }), fc.integer({ min: 1, max: 1460 }), fc.ipV4(), fc.ipV4(),
        fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffffffff }), fc.boolean(),
        (len, gsoDrawn, src, dst, sport, seq, id, seed, allOnes) => {
          // At most 44 segments: all of them fit one joined packet of at most 64 KB again.
          const gso = Math.max(gsoDrawn, Math.ceil(len / 44));
          const payload = Buffer.alloc(len, 0xff);
          let x = seed;
          if (!allOnes) for (let i = 0; i < len; i++) payload[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
          const pkt = tcp(src, dst, ACK, TS_OPTS, payload, { sport, seq, id });
          // NEEDS_CSUM: the checksum field holds the pseudo-header's sum, as the kernel leaves it.
          const buf = Buffer.alloc(64 + ENCAP.length + pkt.length);
          ENCAP.copy(buf, 64);
          pkt.copy(buf, 64 + ENCAP.length);
          const vnet = Buffer.alloc(VNET_HDR_LEN * 2);
          writeVnetHeader(vnet, VNET_HDR_LEN, { flags: VNET_F_NEEDS_CSUM, gsoType: VNET_GSO_TCPV4, hdrLen: 52, gsoSize: gso, csumStart: 20, csumOffset: 16 });
          const out = Buffer.alloc(ENCAP.length * 64 + pkt.length * 2 + 64 * 60);
          const offs = new Int32Array(64);
          const lens = new Int32Array(64);
          const n = native._tsoSegment(buf, 64, ENCAP.length + pkt.length, vnet, VNET_HDR_LEN, ENCAP.length, out, offs, lens);
          expect(n).toBe(Math.ceil(len / gso));
          const segs = Array.from({ length: n }, (_, i) => Buffer.from(out.subarray(offs[i] + ENCAP.length, offs[i] + lens[i])));
          for (const s of segs) expect(tcpChecksumOk(s)).toBe(true);
          expect(Buffer.concat(segs.map((s) => s.subarray(52))).equals(payload)).toBe(true);

          const joined = groCoalesce(native, segs);
          expect(Buffer.concat(joined.map((w) => w.subarray(VNET_HDR_LEN + 52))).equals(payload)).toBe(true);
          expect(joined).toHaveLength(1);
          // One byte changed in one segment: that segment is written alone, exactly as it came.
          const k = (seed >>> 8) % n;
          const at = 52 + ((seed >>> 16) % (segs[k].length - 52));
          const bad = segs.map((s) => Buffer.from(s));
          bad[k][at] ^= 1 + (seed & 0x7f);
          const w = groCoalesce(native, bad);
          expect(w.some((p) => p[1] === 0 && p.subarray(VNET_HDR_LEN).equals(bad[k]))).toBe(true);
        },
      ),
      { numRuns: 150, seed: 0x0c5e },
    );
  }, 120_000);
});
