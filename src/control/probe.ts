// Builds and sends one in-tunnel ICMP echo to a peer's VTEP address: the keepalive
// probe, and the path-validation probe of roaming (sent to a candidate address).
import { randomBytes } from 'node:crypto';
import { ETHERTYPE_IPV4, writeEthernetHeader } from '../proto/ethernet.js';
import { PROBE_IP_LEN, writeEchoRequest } from '../proto/icmp.js';
import { ENCAP_LEN, VXLAN_HEADER_LEN, writeVxlanHeader } from '../proto/vxlan.js';
import type { Dataplane } from '../dataplane/dataplane.js';

export class ProbeSender {
  private readonly pkt = Buffer.alloc(ENCAP_LEN + 9216);

  constructor(private readonly dp: Dataplane) {}

  /**
   * Sends an echo request to peer `idx`'s VTEP address, at its current endpoint or at
   * `addr` (a roaming candidate), `size` bytes of inner IPv4 (default: minimal). Returns
   * the 8-byte token the reply must carry, or null if the socket refused the datagram.
   */
  send(idx: number, ident: number, seq: number, addr?: number, size = PROBE_IP_LEN): Buffer | null {
    const t = this.dp.peers;
    const s = this.dp.settings;
    const token = randomBytes(8);
    writeVxlanHeader(this.pkt, 0, s.vni);
    writeEthernetHeader(this.pkt, VXLAN_HEADER_LEN, t.macs, 6 * idx, s.vtepMac, ETHERTYPE_IPV4);
    const len = ENCAP_LEN + writeEchoRequest(this.pkt, ENCAP_LEN, s.vtepIp, t.net[idx], ident, seq, token, Math.min(size, this.pkt.length - ENCAP_LEN));
    if (!this.dp.sendControl(this.pkt, 0, len, addr ?? t.addr[idx], t.port[idx])) return null;
    t.countTx(idx, len);
    return token;
  }
}
