// Builds and sends one in-tunnel ICMP echo to a peer's VTEP address: the keepalive
// probe, and the path-validation probe of roaming (sent to a candidate address).
import { ETHERTYPE_IPV4, writeEthernetHeader } from '../proto/ethernet.js';
import { PROBE_IP_LEN, writeEchoRequest } from '../proto/icmp.js';
import { ENCAP_LEN, VXLAN_HEADER_LEN, writeVxlanHeader } from '../proto/vxlan.js';
import type { Dataplane } from '../dataplane/dataplane.js';

export class ProbeSender {
  private readonly pkt = Buffer.alloc(ENCAP_LEN + 9216);

  constructor(private readonly dp: Dataplane) {}

  /**
   * Sends an echo request carrying the 8-byte `token` (which the reply must carry back) to
   * the VTEP address of the peer in `slot`, at its current endpoint or at `addr` (a roaming
   * candidate), `size` bytes of inner IPv4 (default: minimal). False if the socket refused it.
   */
  send(slot: number, ident: number, seq: number, token: Buffer, addr?: number, size = PROBE_IP_LEN): boolean {
    const t = this.dp.peers;
    const s = this.dp.settings;
    writeVxlanHeader(this.pkt, 0, s.vni);
    writeEthernetHeader(this.pkt, VXLAN_HEADER_LEN, t.macs, 6 * slot, s.vtepMac, ETHERTYPE_IPV4);
    const len = ENCAP_LEN + writeEchoRequest(this.pkt, ENCAP_LEN, s.vtepIp, t.net[slot], ident, seq, token, Math.min(size, this.pkt.length - ENCAP_LEN));
    if (!this.dp.sendControl(this.pkt, 0, len, addr ?? t.addr[slot], t.port[slot])) return false;
    t.countTx(slot, len);
    return true;
  }
}
