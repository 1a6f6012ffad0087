// Which NIC and address carry the tunnel (flannel's --iface logic, simplified):
// underlay.iface, else the NIC of the default route; underlay.address, else that
// NIC's first IPv4 address. The NIC's MTU sizes the overlay device.
import type { Config } from '../config/types.js';
import { defaultRouteIface, ifaceIPv4, ifaceMtu, ifaceOfAddress } from './iproute.js';

export interface Underlay {
  iface: string;
  address: string;
  mtu: number;
}

export class UnderlayError extends Error {
  override name = 'UnderlayError';
}

export async function resolveUnderlay(cfg: Config): Promise<Underlay> {
  let iface = cfg.underlay.iface;
  if (!iface && cfg.underlay.address) {
    iface = await ifaceOfAddress(cfg.underlay.address);
    if (!iface) throw new UnderlayError(`underlay.address ${cfg.underlay.address} is not an address of this machine; check \`ip -4 addr\` or set it to null`);
  }
  if (!iface) {
    iface = await defaultRouteIface();
    if (!iface) throw new UnderlayError('no IPv4 default route, so the underlay NIC is unknown; set underlay.iface (e.g. eth0) or add a default route');
  }
  let mtu: number;
  try {
    mtu = await ifaceMtu(iface);
  } catch {
    throw new UnderlayError(`underlay.iface ${iface} does not exist; check \`ip link\``);
  }
  const address = cfg.underlay.address ?? (await ifaceIPv4(iface))[0];
  if (!address) throw new UnderlayError(`${iface} has no IPv4 address; configure one or set underlay.iface to the NIC that reaches the internet`);
  return { iface, address, mtu };
}
