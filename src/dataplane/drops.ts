// Why a packet was dropped. The per-packet path never throws: it bumps one of these
// counters and moves on. Numeric indices keep the hot path to one typed-array store;
// the names are what `status` and the health document show.

export const DROP_REASONS = [
  // outside: from the underlay
  'oversize', // datagram (outside) or packet (inside) larger than its room: truncated by the kernel
  'short', // shorter than VXLAN + Ethernet + IPv4 headers
  'badFlags', // VXLAN I flag not set
  'reservedBits', // a VXLAN reserved or unknown flag bit set (the kernel drops these too)
  'wrongVni',
  'unknownSource', // outer source address is no peer's endpoint
  'notForUs', // inner destination MAC is not our VTEP MAC
  'foreignMac', // inner source MAC is not the sending peer's VTEP MAC
  'notIPv4', // inner EtherType / IP version is not IPv4
  'badIPv4', // inconsistent IPv4 header or length
  'spoofedSource', // inner source address outside the sending peer's subnet
  'ceNotEct', // the outer header carries CE (congestion on the path), the inner packet is not ECN-capable: dropped (RFC 6040)
  'deviceWrite', // the device refused the packet
  // inside: from the device
  'noPeer', // no peer subnet contains the destination
  'underlaySend', // the UDP socket refused the datagram
  'internal', // a bug caught by the batch safety net
  // counted by the kernel before vxedge read the packet (kernel-drops.ts; read with each health document)
  'deviceQueue', // the device's queue was full: the site sent into the tunnel faster than vxedge read
  'underlayReceive', // a tunnel socket's receive buffer was full (or the UDP checksum was bad)
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export const Drop = Object.fromEntries(DROP_REASONS.map((r, i) => [r, i])) as { [K in DropReason]: number };

export class DropCounters {
  readonly counts = new Float64Array(DROP_REASONS.length);

  add(reason: number, n = 1): void {
    this.counts[reason] += n;
  }

  get(reason: DropReason): number {
    return this.counts[Drop[reason]];
  }

  total(): number {
    let t = 0;
    for (const c of this.counts) t += c;
    return t;
  }

  /** Non-zero counters by name, for status output. */
  snapshot(): Partial<Record<DropReason, number>> {
    const out: Partial<Record<DropReason, number>> = {};
    DROP_REASONS.forEach((name, i) => {
      if (this.counts[i] > 0) out[name] = this.counts[i];
    });
    return out;
  }
}
