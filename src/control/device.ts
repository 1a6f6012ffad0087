// The overlay device and the kernel state around it, programmed as flannel programs
// flannel.1 (docs/dataplane.md "Kernel state: flannel.1 and its peers"), so the site's
// kernel routes to the cluster exactly as a flannel node's would:
//   - address <our subnet>.0/32 on the device;
//   - TUN: one `dev` route per peer subnet; we build the inner Ethernet ourselves;
//   - TAP: device MAC = our VTEP MAC, a permanent neighbour <peer subnet>.0 -> peer
//     VTEP MAC and a route `<peer subnet> via <peer subnet>.0 onlink` per peer; the
//     kernel addresses frames and we only look up the MAC.
// Routes vanish with the device when our fd closes (even after a crash), but a clean
// stop removes them explicitly first so nothing depends on that.
import type { Cidr, OverlayMode, PeerConfig } from '../config/types.js';
import { intToIp } from '../util/ipv4.js';
import type { Logger } from '../util/log.js';
import { deviceSysctl, ip, ipBatch, linkDetails, type LinkInfo } from './iproute.js';

export interface DeviceSpec {
  name: string;
  mode: OverlayMode;
  mtu: number;
  vtepMac: string;
  subnet: Cidr;
}

export function vtepAddress(subnet: Cidr): string {
  return intToIp(subnet.network);
}

export class DeviceInUseError extends Error {
  override name = 'DeviceInUseError';
}

/**
 * What start-up does with an existing device of overlay.device's name:
 *   - `free`: there is none;
 *   - `replace`: a persistent TUN/TAP (a crashed run, or one made by hand) or a kernel vxlan
 *     (flannel's own flannel.1 on a box that ran flannel before): removed, then made anew;
 *   - `in-use`: a TUN/TAP that is not persistent exists only while a process holds it open,
 *     so it belongs to a running program (another vxedge?);
 *   - `foreign`: any other kind (a NIC, a bridge, a veth, a VLAN...) is the site's own, and
 *     removing it could cut the box off its network.
 * The last two are refused with `message`, which names the key to change.
 */
export type ExistingDevice =
  | { action: 'free' }
  | { action: 'replace'; kind: string }
  | { action: 'in-use' | 'foreign'; kind: string; message: string };

export function classifyExistingDevice(name: string, l: LinkInfo | null): ExistingDevice {
  if (!l) return { action: 'free' };
  // No linkinfo at all: a physical NIC (its driver registers no link kind).
  const kind = l.linkinfo?.info_kind ?? 'device';
  if (kind === 'tun') {
    if (l.linkinfo?.info_data?.persist === false) {
      return {
        action: 'in-use', kind,
        message: `device ${name} is in use by another process (is another vxedge running? see \`vxedge status\`); stop it or set overlay.device`,
      };
    }
    return { action: 'replace', kind };
  }
  if (kind === 'vxlan') return { action: 'replace', kind };
  return {
    action: 'foreign', kind,
    message: `overlay.device ${name} names an existing ${kind === 'device' ? 'network interface' : `${kind} device`}, not a TUN/TAP or VXLAN device left by an earlier run; vxedge does not remove it: set overlay.device to a free name (flannel's is flannel.1)`,
  };
}

/** Removes a leftover device of that name (classifyExistingDevice), or refuses to start. */
export async function removeLeftoverDevice(name: string, log: Logger): Promise<void> {
  const found = classifyExistingDevice(name, await linkDetails(name));
  if (found.action === 'free') return;
  if (found.action !== 'replace') throw new DeviceInUseError(found.message);
  log.warn('replacing existing device left over from an earlier run', { device: name, kind: found.kind });
  await ip(['link', 'del', 'dev', name]);
}

export class OverlayDevice {
  private readonly routed = new Map<string, PeerConfig>();

  constructor(
    readonly spec: DeviceSpec,
    private readonly log: Logger,
  ) {}

  /** Brings the freshly opened device up with its MTU, MAC (TAP) and address. */
  async configure(): Promise<void> {
    const { name, mode, mtu, vtepMac, subnet } = this.spec;
    // Tunnel no IPv6 neighbour discovery or MLD noise: flannel's VXLAN carries IPv4 only.
    await deviceSysctl('ipv6', name, 'disable_ipv6', '1');
    // TUN/TAP queues default to 500 packets: a TCP burst from a fast LAN overflows
    // that before we are scheduled (measured: 4484 drops in 5 s of iperf3 at 1450 MTU,
    // none at 2000), so give bursts the room a NIC's ring would.
    const link = ['link', 'set', 'dev', name, 'mtu', String(mtu), 'txqueuelen', '2000'];
    if (mode === 'tap') link.push('address', vtepMac);
    await ip(link);
    await ip(['link', 'set', 'dev', name, 'up']);
    await ip(['addr', 'replace', `${vtepAddress(subnet)}/32`, 'dev', name]);
  }

  /** Sets the device up again (someone set it down, and the kernel dropped its routes with it). */
  async setUp(): Promise<void> {
    await ip(['link', 'set', 'dev', this.spec.name, 'up']);
  }

  /**
   * Makes the kernel route each peer's subnet through the tunnel, in one `ip -batch`
   * (TAP: a permanent neighbour for the peer's .0 first, as flannel orders them).
   * Idempotent (replace): a peer whose subnet or MAC changed is simply added again.
   */
  async addPeers(peers: readonly PeerConfig[]): Promise<void> {
    const { name, mode } = this.spec;
    const cmds: string[][] = [];
    for (const p of peers) {
      const gw = vtepAddress(p.subnet);
      if (mode === 'tap') {
        cmds.push(['neigh', 'replace', gw, 'lladdr', p.vtepMac, 'dev', name, 'nud', 'permanent']);
        cmds.push(['route', 'replace', p.subnet.text, 'via', gw, 'dev', name, 'onlink']);
      } else {
        cmds.push(['route', 'replace', p.subnet.text, 'dev', name]);
      }
    }
    await ipBatch(cmds);
    for (const p of peers) this.routed.set(p.name, p);
  }

  /** Removes the peers' routes (and TAP neighbours); ones already gone are no error. */
  async removePeers(peers: readonly PeerConfig[]): Promise<void> {
    const { name, mode } = this.spec;
    const cmds: string[][] = [];
    for (const p of peers) {
      cmds.push(['route', 'del', p.subnet.text, 'dev', name]);
      if (mode === 'tap') cmds.push(['neigh', 'del', vtepAddress(p.subnet), 'dev', name]);
      this.routed.delete(p.name);
    }
    // -force tries every line; a route that is already gone fails harmlessly.
    await ipBatch(cmds).catch((e) => this.log.debug('some routes were already gone', { err: String(e) }));
  }

  /** Removes every route and neighbour we installed; the device itself goes when its fd is closed. */
  async teardown(): Promise<void> {
    await this.removePeers([...this.routed.values()]);
  }

  peers(): PeerConfig[] {
    return [...this.routed.values()];
  }
}
