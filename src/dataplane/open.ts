// Opening the data plane's two file descriptors, with the fallbacks and the words an
// operator needs when it fails. Offloads (overlay.offload, TUN only): the device is opened
// with virtio-net headers and TSO and the socket gets UDP_GRO; each falls back to the
// plain path, with the reason, when the kernel refuses (old kernel, qemu-user, ...).
// UDP_SEGMENT (used on every path: bursts to one peer leave as one send) and UDP_GRO are
// also checked end to end before use, since a syscall translator such as qemu-user may
// accept them and silently lose their control messages (udpCheckOffloads, socket.c).
import { TUN_F_CSUM, TUN_F_TSO4, type NativeBinding, type TunHandle } from '../native/index.js';

/** Offloads asked of the TUN driver: partial checksums and IPv4 TSO. (The addon adds
 *  TUN_F_USO4/6 where the kernel has them, native/device.c; TSO6 is pointless: IPv4 only.) */
export const TUN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4;

export class OpenError extends Error {
  override name = 'OpenError';
}

export interface OpenedDevice {
  tun: TunHandle;
  /** true: opened with virtio-net headers and TSO. */
  vnetHdr: boolean;
  /** Why offloads are off, when they were wanted or are impossible; null when on or not wanted. */
  offloadOff: string | null;
  /** Why the device has one queue although more were asked for; null otherwise. */
  queuesOff: string | null;
}

/**
 * Opens the overlay device with `queues` queues: TUN with offloads when `offload` is set,
 * falling back to the plain device (and saying why) when the kernel refuses; TAP always
 * plain. A kernel (or syscall translator) that refuses a multi-queue device gets one
 * queue, also with the reason.
 */
export function openDevice(b: Pick<NativeBinding, 'tunOpen'>, name: string, mode: 'tun' | 'tap', offload: boolean, queues = 1): OpenedDevice {
  const tap = mode === 'tap';
  let queuesOff: string | null = null;
  const attempt = (offloads: number): TunHandle => {
    if (queues > 1) {
      try {
        return b.tunOpen(name, tap, offloads, queues);
      } catch (e) {
        queuesOff = `the kernel refused ${queues} device queues: ${(e as Error).message}`;
      }
    }
    return b.tunOpen(name, tap, offloads, 1);
  };
  const open = (offloads: number) => explain(() => attempt(offloads), `open ${mode.toUpperCase()} device ${name}`);
  const opened = (tun: TunHandle, vnetHdr: boolean, offloadOff: string | null): OpenedDevice => ({ tun, vnetHdr, offloadOff, queuesOff });
  if (!offload) return opened(open(0), false, null);
  if (tap) return opened(open(0), false, 'TAP mode has no offloads (TUN only)');
  try {
    return opened(attempt(TUN_OFFLOADS), true, null);
  } catch (e) {
    queuesOff = null; // the plain attempt asks again
    return opened(open(0), false, `the kernel refused TUN offloads: ${(e as Error).message}`);
  }
}

/** Opens the tunnel's UDP socket (VXLAN, keepalives and STUN share it): with `sockets` > 1 a
 *  group of SO_REUSEPORT sockets among which the kernel spreads the peers' flows, read in turn. */
export function openUnderlaySocket(b: Pick<NativeBinding, 'udpOpen'>, address: number, addressText: string, port: number, bufBytes: number, sockets = 1): number {
  return explain(() => b.udpOpen(address, port, bufBytes, sockets), `bind UDP ${addressText}:${port}`);
}

/** Turns on UDP_GRO unless the start-up check saw it fail (`checked`); returns null, or why it stays off. */
export function enableUdpGro(b: Pick<NativeBinding, 'udpSetGro'>, fd: number, checked: string | null = null): string | null {
  if (checked !== null) return checked;
  try {
    b.udpSetGro(fd, true);
    return null;
  } catch (e) {
    return `the kernel refused UDP_GRO: ${(e as Error).message}`;
  }
}

/** Runs a set-up call; a system error becomes an OpenError that says what to do. */
function explain<T>(fn: () => T, what: string): T {
  try {
    return fn();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const hint =
      code === 'EPERM' || code === 'EACCES'
        ? 'vxedge needs CAP_NET_ADMIN (run as root, or with AmbientCapabilities=CAP_NET_ADMIN under systemd)'
        : code === 'EADDRINUSE'
          ? 'another process holds the port: a kernel vxlan device (flannel.1) or another vxedge? see `ss -ulpn` and `ip -d link show type vxlan`'
          : code === 'ENOENT'
            ? '/dev/net/tun is missing: modprobe tun'
            : code === 'EADDRNOTAVAIL'
              ? 'the address is not on this machine: check underlay.address'
              : 'see the error code';
    throw new OpenError(`cannot ${what}: ${(e as Error).message}; ${hint}`);
  }
}
