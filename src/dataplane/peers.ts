// The peer table as the data plane sees it: flat typed arrays indexed by peer number,
// so that routing a packet (longest-prefix match on the destination), recognising a
// sender (outer source address) and counting traffic allocate nothing.
// The table is rebuilt, not mutated, when the set of peers changes; counters of peers
// that survive a rebuild are carried over by name.

import type { PeerConfig } from '../config/types.js';
import { ipToInt } from '../util/ipv4.js';
import { macToBytes } from '../util/mac.js';

export const STAT_RX_PACKETS = 0;
export const STAT_RX_BYTES = 1;
export const STAT_TX_PACKETS = 2;
export const STAT_TX_BYTES = 3;
const STATS_PER_PEER = 4;

export interface PeerEntry {
  name: string;
  subnet: PeerConfig['subnet'];
  vtepMac: string;
  endpoint: { address: number; port: number };
}

export class PeerTable {
  readonly size: number;
  readonly names: string[];
  readonly subnetText: string[];
  /** Peer subnets sorted by prefix length, longest first: the first match wins. */
  private readonly lpmNet: Uint32Array;
  private readonly lpmMask: Uint32Array;
  private readonly lpmPeer: Int32Array;
  readonly net: Uint32Array;
  readonly mask: Uint32Array;
  /** VTEP MACs, 6 bytes per peer. */
  readonly macs: Buffer;
  /** Current outer destination of each peer (roaming may change the address, never the port). */
  readonly addr: Uint32Array;
  readonly port: Uint16Array;
  readonly stats: Float64Array;
  /** Time (ms since epoch, per batch) of the last valid frame from each peer: proof of life. */
  readonly lastRx: Float64Array;
  private readonly byAddr = new Map<number, number>();

  constructor(peers: readonly PeerConfig[]) {
    this.size = peers.length;
    this.names = peers.map((p) => p.name);
    this.subnetText = peers.map((p) => p.subnet.text);
    this.net = Uint32Array.from(peers.map((p) => p.subnet.network));
    this.mask = Uint32Array.from(peers.map((p) => p.subnet.mask));
    this.macs = Buffer.alloc(6 * peers.length);
    peers.forEach((p, i) => macToBytes(p.vtepMac, this.macs, 6 * i));
    this.addr = Uint32Array.from(peers.map((p) => ipToInt(p.publicIp)));
    this.port = Uint16Array.from(peers.map((p) => p.port));
    this.stats = new Float64Array(STATS_PER_PEER * peers.length);
    this.lastRx = new Float64Array(peers.length);
    const order = peers.map((_, i) => i).sort((a, b) => peers[b].subnet.prefixLen - peers[a].subnet.prefixLen);
    this.lpmNet = Uint32Array.from(order.map((i) => this.net[i]));
    this.lpmMask = Uint32Array.from(order.map((i) => this.mask[i]));
    this.lpmPeer = Int32Array.from(order);
    this.reindexAddrs();
  }

  /** Peer whose subnet holds `ip` (longest prefix), or -1. */
  route(ip: number): number {
    for (let i = 0; i < this.lpmPeer.length; i++) {
      if (((ip & this.lpmMask[i]) >>> 0) === this.lpmNet[i]) return this.lpmPeer[i];
    }
    return -1;
  }

  /** Peer whose current endpoint address is `addr`, or -1. */
  fromAddress(addr: number): number {
    const p = this.byAddr.get(addr);
    return p === undefined ? -1 : p;
  }

  /** Peer whose VTEP MAC sits at buf[off..off+6), or -1. */
  fromMac(buf: Buffer, off: number): number {
    const m = this.macs;
    for (let p = 0, o = 0; p < this.size; p++, o += 6) {
      if (
        buf[off] === m[o] && buf[off + 1] === m[o + 1] && buf[off + 2] === m[o + 2] &&
        buf[off + 3] === m[o + 3] && buf[off + 4] === m[o + 4] && buf[off + 5] === m[o + 5]
      ) {
        return p;
      }
    }
    return -1;
  }

  inSubnet(p: number, ip: number): boolean {
    return ((ip & this.mask[p]) >>> 0) === this.net[p];
  }

  countRx(p: number, bytes: number): void {
    const s = p * STATS_PER_PEER;
    this.stats[s + STAT_RX_PACKETS]++;
    this.stats[s + STAT_RX_BYTES] += bytes;
  }

  /** `packets` > 1: a TCP super-packet that leaves as that many datagrams. */
  countTx(p: number, bytes: number, packets = 1): void {
    const s = p * STATS_PER_PEER;
    this.stats[s + STAT_TX_PACKETS] += packets;
    this.stats[s + STAT_TX_BYTES] += bytes;
  }

  stat(p: number, which: number): number {
    return this.stats[p * STATS_PER_PEER + which];
  }

  /** Moves a peer's endpoint to a new address (after path validation). */
  setAddress(p: number, addr: number): void {
    this.addr[p] = addr;
    this.reindexAddrs();
  }

  indexOf(name: string): number {
    return this.names.indexOf(name);
  }

  /** Copies counters (and roamed addresses) of same-named peers from an older table. */
  inherit(old: PeerTable): void {
    for (let p = 0; p < this.size; p++) {
      const o = old.indexOf(this.names[p]);
      if (o < 0) continue;
      for (let k = 0; k < STATS_PER_PEER; k++) this.stats[p * STATS_PER_PEER + k] = old.stats[o * STATS_PER_PEER + k];
      this.lastRx[p] = old.lastRx[o];
    }
  }

  private reindexAddrs(): void {
    this.byAddr.clear();
    for (let p = 0; p < this.size; p++) this.byAddr.set(this.addr[p], p);
  }
}
