// Brings up the tunnel itself, in the order that keeps a running gateway safe:
//   underlay (NIC, address, MTU) -> VTEP MAC (stateDir) -> the UDP port (a second vxedge,
//   or a kernel vxlan on it, fails here before anything is touched) -> a leftover device
//   removed -> UDP_SEGMENT/UDP_GRO checked end to end (each off, with the reason, when it
//   does not work here) -> the TUN/TAP device (offloads, or the plain path with the reason)
//   -> its address, MTU and queue -> the sender thread (overlay.sendThread) -> the data
//   plane polling both fds.
// Peers are added afterwards through peer-sync.ts. close() takes it down in reverse.
import { availableParallelism } from 'node:os';
import type { Config } from '../config/types.js';
import { Dataplane } from '../dataplane/dataplane.js';
import { deviceTxDrops, KernelDrops } from '../dataplane/kernel-drops.js';
import { enableUdpGro, openDevice, openUnderlaySocket } from '../dataplane/open.js';
import { PeerTable } from '../dataplane/peers.js';
import type { PathSettings } from '../dataplane/settings.js';
import type { NativeBinding } from '../native/index.js';
import type { Clock } from '../util/clock.js';
import { ipToInt } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { macToBytes } from '../util/mac.js';
import { OverlayDevice, removeLeftoverDevice, vtepAddress } from './device.js';
import { loadOrCreateVtepMac } from './state.js';
import { resolveUnderlay, type Underlay } from './underlay.js';

const SOCKET_BUFFER_BYTES = 4 << 20;
/** Packets per batch across every boundary. */
const BATCH = 64;

export interface Tunnel {
  underlay: Underlay;
  vtepMac: string;
  mtu: number;
  /** The device's name as the kernel has it. */
  deviceName: string;
  /** The device's queues (cfg.overlay.queues, or 1 when the kernel refused more). */
  queues: number;
  device: OverlayDevice;
  dataplane: Dataplane;
  /** Stops the data plane and closes both fds (closing the last fd of a TUN/TAP removes it). */
  close(): void;
}

export async function openTunnel(cfg: Config, binding: NativeBinding, clock: Clock, log: Logger): Promise<Tunnel> {
  const underlay = await resolveUnderlay(cfg);
  const { mac, source } = await loadOrCreateVtepMac(cfg.stateDir, cfg.vxlan.vtepMac);
  const mtu = cfg.vxlan.mtu ?? underlay.mtu - 50;
  if (mtu + 50 > underlay.mtu) {
    log.warn('device MTU + 50 exceeds the underlay MTU: large packets will be fragmented or lost', { mtu, underlayMtu: underlay.mtu });
  }
  const undo: (() => void)[] = [];
  try {
    // As many underlay sockets as device queues: a peer's kernel VXLAN sends each inner flow
    // from its own source port, so its answers need not queue behind a bulk flow's backlog.
    const udpFd = openUnderlaySocket(binding, ipToInt(underlay.address), underlay.address, cfg.underlay.port, SOCKET_BUFFER_BYTES, cfg.overlay.queues);
    undo.push(() => binding.close(udpFd));
    // Before the data plane relies on them: under a syscall translator (qemu-user) a lost
    // UDP_SEGMENT cmsg would send every burst as one oversized datagram, a lost UDP_GRO cmsg
    // would turn coalesced frames into one bad frame. The check turns segmentation off itself.
    const udpCheck = binding.udpCheckOffloads();
    if (udpCheck.segment) log.warn('UDP segmentation off: every datagram is sent on its own', { reason: udpCheck.segment });
    await removeLeftoverDevice(cfg.overlay.device, log);
    const opened = openDevice(binding, cfg.overlay.device, cfg.overlay.mode, cfg.overlay.offload, cfg.overlay.queues);
    const tun = opened.tun;
    undo.push(() => binding.close(tun.fd));
    if (opened.queuesOff) log.warn('one device queue: a bulk flow can delay every other one', { reason: opened.queuesOff });
    if (opened.offloadOff && cfg.overlay.mode === 'tun') {
      log.warn('TUN offloads off: the plain data plane moves one packet per syscall', { reason: opened.offloadOff });
    }
    const groOff = opened.vnetHdr ? enableUdpGro(binding, udpFd, udpCheck.gro) : null;
    if (groOff) log.warn('UDP GRO off: datagrams are received one by one', { reason: groOff });
    const udpGro = opened.vnetHdr && groOff === null;

    const device = new OverlayDevice({ name: tun.name, mode: cfg.overlay.mode, mtu, vtepMac: mac, subnet: cfg.overlay.subnet }, log);
    await device.configure();

    const settings: PathSettings = {
      tap: cfg.overlay.mode === 'tap',
      vni: cfg.vxlan.vni,
      mtu,
      vtepMac: macToBytes(mac),
      vtepIp: cfg.overlay.subnet.network,
      mssClamp: cfg.overlay.mssClamp,
      maxMss: mtu - 40,
      strictPeers: cfg.overlay.strictPeers,
      batch: BATCH,
      vnetHdr: opened.vnetHdr,
      udpGro,
    };
    const dataplane = new Dataplane(settings, binding, { device: tun.fd, underlay: udpFd }, new PeerTable(), log, clock);
    const offloadOff = !cfg.overlay.offload ? 'overlay.offload is false' : (opened.offloadOff ?? groOff);
    dataplane.offloadOff = [offloadOff, udpCheck.segment].filter((r) => r !== null).join('; ') || null;
    dataplane.kernelDrops = new KernelDrops({ device: deviceTxDrops(tun.name), underlay: () => binding.udpDrops(udpFd) });
    const sendThread = startSendThread(binding, cfg.overlay.sendThread, log);
    undo.push(() => binding.udpSendThread(false));
    dataplane.start();
    undo.push(() => dataplane.stop());
    log.info('tunnel up', {
      device: tun.name, mode: cfg.overlay.mode, queues: tun.queues, mtu, vtepMac: mac, vtepMacSource: source, vtep: vtepAddress(cfg.overlay.subnet),
      underlay: `${underlay.iface} ${underlay.address}:${cfg.underlay.port}`,
      sendThread,
      offload: opened.vnetHdr ? `tso+csum${udpCheck.segment ? '' : ', udp gso'}${udpGro ? '+gro' : ''}` : 'off',
      udpCheck: { segment: udpCheck.segment ?? 'ok', gro: udpCheck.gro ?? 'ok' },
    });
    return {
      underlay, vtepMac: mac, mtu, deviceName: tun.name, queues: tun.queues, device, dataplane,
      close: () => {
        for (const u of undo.reverse()) u();
        undo.length = 0;
      },
    };
  } catch (e) {
    for (const u of undo.reverse()) u();
    throw e;
  }
}

/** The addon's sender thread (overlay.sendThread): only with a second core to run it on. */
function startSendThread(binding: NativeBinding, wanted: boolean, log: Logger): boolean {
  if (!wanted || availableParallelism() < 2) return false;
  try {
    return binding.udpSendThread(true);
  } catch (e) {
    log.warn('sender thread not started: every underlay send is made on the main thread', { reason: (e as Error).message });
    return false;
  }
}
