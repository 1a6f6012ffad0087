// What both paths need to know about our own VTEP; fixed for the life of a device.
export interface PathSettings {
  tap: boolean;
  vni: number;
  /** Device MTU: the largest inner IPv4 packet. */
  mtu: number;
  /** Our VTEP MAC, 6 bytes. */
  vtepMac: Buffer;
  /** Our VTEP address (the subnet's .0), numeric. */
  vtepIp: number;
  mssClamp: boolean;
  /** MSS that fits the tunnel: mtu - 40. */
  maxMss: number;
  /** Inbound filtering (docs/dataplane.md "Outside path"): frames only from known endpoints,
   *  with inner sources in the sending peer's subnet. */
  strictPeers: boolean;
  /** Packets per batch across every boundary. */
  batch: number;
  /** The TUN device was opened with offloads (virtio-net headers, TSO): reads may be TCP
   *  super-packets, cut into segments by the underlay's sendVnet; writes are coalesced. */
  vnetHdr?: boolean;
  /** The underlay socket has UDP_GRO: one received datagram may hold several frames. */
  udpGro?: boolean;
}
