// ECN across the tunnel (RFC 6040, as the kernel's vxlan decapsulates): a router on the
// internet path that marks congestion sets CE in the outer IPv4 header, which is all it
// can see; the decapsulator carries the mark to the inner packet, or drops the packet when
// the inner one is not ECN-capable (its sender would not understand the mark, and a drop is
// the signal it does understand). Without this a CE mark was lost at the gateway: the
// router marked instead of dropping, and the sender never heard of the congestion.
import { rewrite16 } from './tcpmss.js';

/** The ECN field's values (RFC 3168): Not-ECT, ECT(1), ECT(0), CE. */
export const ECN_NOT_ECT = 0;
export const ECN_ECT1 = 1;
export const ECN_ECT0 = 2;
export const ECN_CE = 3;

/**
 * Decapsulates the outer header's ECN field `outer` into the inner IPv4 header at `ip`, as
 * the kernel's INET_ECN_decapsulate: an inner Not-ECT packet stays as it is, and is to be
 * dropped (false) when the outer one carries CE; otherwise outer CE sets inner CE, and outer
 * ECT(1) turns an inner ECT(0) into ECT(1) (L4S, RFC 9331). The header checksum is patched
 * (RFC 1624). Nothing is allocated.
 */
export function decapsulateEcn(buf: Buffer, ip: number, outer: number): boolean {
  const tos = buf[ip + 1];
  const inner = tos & 3;
  if (inner === ECN_NOT_ECT) return outer !== ECN_CE;
  let ecn = inner;
  if (outer === ECN_CE) ecn = ECN_CE;
  else if (outer === ECN_ECT1 && inner === ECN_ECT0) ecn = ECN_ECT1;
  if (ecn !== inner) rewrite16(buf, ip, ip, (buf[ip] << 8) | (tos & 0xfc) | ecn, ip + 10);
  return true;
}
