// The addon's pure GRO entry point as the tests call it (test/native/offload.test.ts on this
// machine, test/arm/emulated/checksum.emu.ts on the ARM targets): packets laid out in one
// buffer at scattered, odd offsets, as no real batch lays them out.
import type { NativeBinding } from '../../src/native/index.js';
import { VNET_HDR_LEN } from '../../src/proto/vnet.js';

/** `_groCoalesce` over `pkts` (`udp`: join UDP datagrams too, or not; unset: the addon's default): what it writes, each behind its virtio_net_hdr. */
export function groCoalesce(native: NativeBinding, pkts: Buffer[], udp?: boolean): Buffer[] {
  const buf = Buffer.alloc(pkts.reduce((a, p) => a + p.length + 100, 0));
  const offs = new Int32Array(pkts.length);
  const lens = new Int32Array(pkts.length);
  let at = 37;
  pkts.forEach((p, i) => {
    p.copy(buf, at);
    offs[i] = at;
    lens[i] = p.length;
    at += p.length + 61;
  });
  const out = Buffer.alloc(buf.length + pkts.length * VNET_HDR_LEN);
  const ooffs = new Int32Array(pkts.length);
  const olens = new Int32Array(pkts.length);
  const n = udp === undefined ? native._groCoalesce(buf, offs, lens, pkts.length, out, ooffs, olens) : native._groCoalesce(buf, offs, lens, pkts.length, out, ooffs, olens, udp);
  if (n < 0) throw new Error(`_groCoalesce refused the batch (${n})`);
  return Array.from({ length: n }, (_, i) => Buffer.from(out.subarray(ooffs[i], ooffs[i] + olens[i])));
}
