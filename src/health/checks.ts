// The flannel troubleshooting guide's checks, built in: each returns ok/detail and,
// when failing, the command or change that fixes it. `vxedge check` runs the
// preflight set; the running gateway puts the runtime set into the health document.
import { access, constants } from 'node:fs/promises';
import dgram from 'node:dgram';
import type { Cidr, Config } from '../config/types.js';
import { ifaceIPv4State, readSysctl, routesIPv4, type KernelNeighbour, type KernelRoute, type LinkInfo } from '../control/iproute.js';
import { vtepAddress } from '../control/device.js';
import { resolveUnderlay, type Underlay } from '../control/underlay.js';
import type { PublicEndpoint } from '../nat/public-endpoint.js';
import { cidrContains, ipToInt, isGloballyRoutable, nonGlobalKind, parseCidr } from '../util/ipv4.js';
import { WRITTEN_MS, type ClockSync } from '../util/clock-sync.js';
import { clockSays, NETWORK_TIME_FIX, utcMinute } from '../util/tls-failure.js';
import type { CheckResult } from './document.js';

export async function checkIpForward(): Promise<CheckResult> {
  const v = await readSysctl('net.ipv4.ip_forward');
  const ok = v === '1';
  return {
    name: 'ip_forward', ok, detail: `net.ipv4.ip_forward=${v ?? 'unreadable'}`,
    ...(ok ? {} : { fix: 'sysctl -w net.ipv4.ip_forward=1, and persist it in /etc/sysctl.d/ (board/ has a drop-in)' }),
  };
}

export async function checkTunDevice(): Promise<CheckResult> {
  try {
    await access('/dev/net/tun', constants.R_OK | constants.W_OK);
    return { name: 'tun', ok: true, detail: '/dev/net/tun is usable' };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // The node is there but this user may not open it: a module load would change nothing.
    const fix = code === 'EACCES' || code === 'EPERM'
      ? 'run as root or as the vxedge service (the unit grants CAP_NET_ADMIN and DeviceAllow=/dev/net/tun rw); a user needs read-write access to /dev/net/tun and CAP_NET_ADMIN'
      : 'modprobe tun (and add "tun" to /etc/modules-load.d/); under systemd allow it with DeviceAllow=/dev/net/tun rw';
    return { name: 'tun', ok: false, detail: `/dev/net/tun: ${code}`, fix };
  }
}

export async function checkUnderlay(cfg: Config): Promise<{ result: CheckResult; underlay: Underlay | null }> {
  try {
    const u = await resolveUnderlay(cfg);
    return { result: { name: 'underlay', ok: true, detail: `${u.iface} ${u.address} mtu ${u.mtu}` }, underlay: u };
  } catch (e) {
    return { result: { name: 'underlay', ok: false, detail: (e as Error).message, fix: 'set underlay.iface / underlay.address to the NIC that reaches the internet' }, underlay: null };
  }
}

export function checkMtu(deviceMtu: number, underlayMtu: number | null, underlayIface: string | null): CheckResult {
  if (underlayMtu === null) return { name: 'mtu', ok: false, detail: 'underlay MTU unknown', fix: 'fix the underlay check first' };
  const ok = deviceMtu + 50 <= underlayMtu;
  return {
    name: 'mtu', ok, detail: `device ${deviceMtu} + 50 ${ok ? '<=' : '>'} underlay ${underlayIface} ${underlayMtu}`,
    ...(ok ? {} : { fix: `set vxlan.mtu to ${underlayMtu - 50} or null (underlay MTU - 50), or raise the MTU of ${underlayIface}` }),
  };
}

/**
 * Whether the gateway could bind underlay.port. `heldBy`: the pid of this config's running
 * gateway (its status.json), whose own socket makes the port busy: then that is no fault.
 */
export async function checkPortFree(address: string, port: number, heldBy: number | null = null): Promise<CheckResult> {
  const s = dgram.createSocket({ type: 'udp4' });
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind({ address, port, exclusive: true }, () => resolve());
    });
    return { name: 'port', ok: true, detail: `udp ${address}:${port} is free` };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' && heldBy !== null) {
      return { name: 'port', ok: true, detail: `udp ${address}:${port} is held by this config's running gateway (pid ${heldBy})` };
    }
    return code === 'EADDRINUSE'
      ? {
        name: 'port', ok: false, detail: `udp ${address}:${port} is in use`,
        fix: `something already listens on UDP ${port} (a kernel flannel.1/vxlan device or another vxedge?): see \`ss -ulpn 'sport = :${port}'\` and \`ip -d link show type vxlan\``,
      }
      : { name: 'port', ok: false, detail: `udp ${address}:${port} cannot be bound: ${(e as Error).message}`, fix: 'check underlay.address and underlay.port' };
  } finally {
    s.close();
  }
}

/** The running gateway's device exists and is up, over `ip -j -d link show` (null: no such interface). Pure. */
export function deviceCheck(name: string, l: LinkInfo | null): CheckResult {
  if (!l) {
    // Only the running gateway asks (preflight classifies the name instead), so it was deleted
    // under us: the data plane has stopped reading it, and only a restart makes it again.
    return {
      name: 'device', ok: false, detail: `${name} was deleted while vxedge runs: nothing is forwarded`,
      fix: 'vxedge stops itself (exit 1) once its data plane notices, for its service manager to start a fresh one (Restart=always under systemd); else restart it, and find what deleted the device (a second vxedge or flanneld with the same overlay.device, a network manager)',
    };
  }
  const up = l.flags?.includes('UP') ?? false;
  return {
    name: 'device', ok: up, detail: `${name} ${l.linkinfo?.info_kind ?? ''} mtu ${l.mtu} ${up ? 'up' : 'down'}`.replace(/\s+/g, ' '),
    ...(up ? {} : { fix: `ip link set ${name} up` }),
  };
}

/**
 * Every peer subnet is routed through the device (and not elsewhere): of the kernel's
 * routes (read once, whatever the number of peers), the most specific one covering each
 * peer subnet must be ours.
 */
export async function checkRoutes(device: string, subnets: readonly Cidr[]): Promise<CheckResult> {
  let routes: { dst: string; dev?: string }[];
  try {
    routes = await routesIPv4();
  } catch (e) {
    return { name: 'routes', ok: false, detail: `cannot read the routing table: ${(e as Error).message}`, fix: 'is iproute2 installed?' };
  }
  return routesCheck(device, subnets, routes);
}

/**
 * The subnets with no route of exactly their prefix in the table: a route of ours someone
 * deleted, which vxedge may put back (`ip route replace`) without replacing anyone's. A route
 * of that prefix via another device is a conflict for the operator (the routes check says
 * so), and is left alone; routes more or less specific than the subnet are no obstacle (the
 * kernel picks the longest match). Pure over `ip -j -4 route show`.
 */
export function lostRoutesIn(subnets: readonly Cidr[], routes: readonly KernelRoute[]): Cidr[] {
  const table = routeTable(routes);
  return subnets.filter((s) => !table.some((r) => r.dst.prefixLen === s.prefixLen && cidrContains(r.dst, s)));
}

/**
 * The TAP peers whose neighbour entry (the peer's .0 at its VTEP MAC, permanent, as flannel
 * makes it) is gone or is no longer that: without it the kernel asks for the peer's MAC by
 * ARP, which nothing across the tunnel answers, and that peer is cut off.
 */
export function lostNeighboursIn<P extends { subnet: Cidr; vtepMac: string }>(peers: readonly P[], neighbours: readonly KernelNeighbour[]): P[] {
  const permanent = new Map<string, string>();
  for (const n of neighbours) if (n.lladdr && n.state?.includes('PERMANENT')) permanent.set(n.dst, n.lladdr.toLowerCase());
  return peers.filter((p) => permanent.get(vtepAddress(p.subnet)) !== p.vtepMac.toLowerCase());
}

/** The routes check over a routing table (`ip -j -4 route show`), pure for tests. */
export function routesCheck(device: string, subnets: readonly Cidr[], routes: readonly KernelRoute[]): CheckResult {
  const table = routeTable(routes);
  const wrong: string[] = [];
  for (const s of subnets) {
    let best: { dst: Cidr; dev: string } | null = null;
    for (const r of table) {
      if (cidrContains(r.dst, s) && (!best || r.dst.prefixLen > best.dst.prefixLen)) best = r;
    }
    if (best?.dev !== device) wrong.push(`${s.text} via ${best?.dev || 'nothing'}`);
  }
  const ok = wrong.length === 0;
  return {
    name: 'routes', ok,
    detail: ok ? `${subnets.length} peer subnet(s) routed via ${device}` : `not via ${device}: ${wrong.slice(0, 5).join(', ')}${wrong.length > 5 ? `, and ${wrong.length - 5} more` : ''}`,
    ...(ok ? {} : { fix: `remove conflicting routes (ip route show ${wrong[0]?.split(' ')[0]}); vxedge installs its own` }),
  };
}

/** The IPv4 routes as prefixes with their device (`default` is 0.0.0.0/0); unparsable ones left out. */
function routeTable(routes: readonly KernelRoute[]): { dst: Cidr; dev: string }[] {
  const out: { dst: Cidr; dev: string }[] = [];
  for (const r of routes) {
    const dst = r.dst === 'default' ? parseCidr('0.0.0.0/0') : toCidr(r.dst);
    if (dst) out.push({ dst, dev: r.dev ?? '' });
  }
  return out;
}

function toCidr(dst: string): Cidr | null {
  try {
    return parseCidr(dst.includes('/') ? dst : `${dst}/32`);
  } catch {
    return null;
  }
}

/**
 * Is the underlay NIC up, with a carrier, and our address still on it? A NIC that is down
 * loses every peer at once, and their reasons (no answer, host unreachable) would point at
 * the nodes; this check says the fault is here. An address change (DHCP, renumbering) may
 * change the public mapping too; `addresses` lets the caller notice it.
 */
export async function checkUnderlayAddress(u: Underlay, port: number): Promise<{ result: CheckResult; addresses: string }> {
  let link: { addresses: string[]; flags: string[] } | null;
  try {
    link = await ifaceIPv4State(u.iface);
  } catch {
    link = { addresses: [], flags: [] };
  }
  return { result: underlayLinkCheck(u, port, link), addresses: (link?.addresses ?? []).join(' ') };
}

/** The running underlay check over `ip -j addr show dev <iface>` (null: no such interface), pure for tests. */
export function underlayLinkCheck(u: Underlay, port: number, link: { addresses: string[]; flags: string[] } | null): CheckResult {
  const lost = 'nothing reaches the peers';
  if (link === null) {
    return { name: 'underlay', ok: false, detail: `${u.iface} no longer exists: ${lost}`, fix: `bring ${u.iface} back (a USB adapter replugged, its driver loaded): with ${u.address} again the tunnel works at once (its sockets are bound to that address); with another address vxedge stops for a fresh start, unless underlay.address pins ${u.address}` };
  }
  if (link.flags.length > 0 && !link.flags.includes('UP')) {
    return {
      name: 'underlay', ok: false, detail: `${u.iface} is down (administratively): ${lost}`,
      fix: `ip link set ${u.iface} up, or ask what manages it (networkd, NetworkManager, dhcpcd); its default route must come back too (ip -4 route show default)`,
    };
  }
  if (link.flags.includes('NO-CARRIER')) {
    return {
      name: 'underlay', ok: false, detail: `${u.iface} has no carrier (no link to the switch or router): ${lost}`,
      fix: `check ${u.iface}'s cable, the switch or router port it is plugged into, or its Wi-Fi association (ip link show ${u.iface})`,
    };
  }
  const now = link.addresses.join(' ');
  return link.addresses.includes(u.address)
    ? { name: 'underlay', ok: true, detail: `${u.iface} ${u.address}:${port}` }
    : {
        name: 'underlay', ok: false, detail: `${u.address} is no longer on ${u.iface} (now: ${now || 'none'})`,
        fix: 'its sockets are bound to the old address: vxedge stops for a fresh start (exit 1) once another address is on the NIC, unless underlay.address pins the old one (then give it back, or change underlay.address and restart)',
      };
}

/**
 * The endpoint AWS nodes are told to send to. A failure when it is not globally routable
 * (private, CGNAT, loopback, link-local, …; util/ipv4.ts `isGloballyRoutable`, which counts
 * the documentation ranges the lab uses as public) and came from the local address (nothing
 * found a public one: no publicIp, no port mapping, no STUN answer) or from underlay.publicIp
 * (a mistake: the router's LAN side, or a CGNAT address the ISP gave it). The configured
 * address is still announced as given (the operator's word wins), and the loader takes any
 * unicast one: this check is where reachability is judged, as for the local address.
 * Port mapping never yields a private address (the mapper drops it), and what STUN saw is
 * by definition where the internet sees us.
 */
export function checkPublicEndpoint(p: PublicEndpoint, peerAddrs: readonly string[] = []): CheckResult {
  const ip = p.endpoint.slice(0, p.endpoint.lastIndexOf(':'));
  const global = isGloballyRoutable(ipToInt(ip));
  if (p.source === 'local' && !global) {
    return {
      name: 'public_endpoint', ok: false,
      detail: `only the local address ${p.endpoint} is known, and it is private: AWS nodes cannot be told where to send`,
      fix: 'set underlay.publicIp to the site router\'s public address, or configure nat.stun servers (or let the router map the port: nat.portMapping)',
    };
  }
  if (p.source === 'config' && !global) {
    // A private underlay end to end (a VPN or Direct Connect to the VPC): the peers are at
    // private addresses too, so a private underlay.publicIp is what they can reach. `peerAddrs`:
    // the peers in force when running (the cluster's too: SiteNat), the configured ones before.
    if (peerAddrs.length > 0 && peerAddrs.every((a) => !isGloballyRoutable(ipToInt(a)))) {
      return { name: 'public_endpoint', ok: true, detail: `${p.endpoint} (underlay.publicIp; a private underlay: every peer's publicIp is private too)` };
    }
    const kind = nonGlobalKind(ip);
    return {
      name: 'public_endpoint', ok: false,
      detail: `underlay.publicIp ${ip} is not reachable from the internet (${kind}): AWS nodes told to send to ${p.endpoint} cannot`,
      fix: kind.startsWith('carrier-grade')
        ? 'the site router is itself behind the ISP\'s NAT: set underlay.publicIp to null and configure nat.stun, which learns where the internet sees the site (docs/nat.md "Ways in", way 2), or ask the ISP for a public address'
        : 'set underlay.publicIp to the site router\'s public (WAN) address, or to null to discover it (nat.portMapping, nat.stun)',
    };
  }
  return { name: 'public_endpoint', ok: true, detail: `${p.endpoint} (${p.source === 'config' ? 'underlay.publicIp' : p.source})` };
}

/**
 * Path MTU toward the peers, from the keepalive's full-size probes (inner packet = device
 * MTU, DF set inside; the outer may be fragmented, as the kernel's vxlan allows): a peer
 * that answers small probes but not full-size ones sits behind a path that loses large
 * or fragmented frames, and TCP stalls there while ping works.
 */
export function checkPathMtu(mtu: number, peers: { name: string; state: string; pathMtuOk: boolean | null }[]): CheckResult {
  const bad = peers.filter((p) => p.state === 'up' && p.pathMtuOk === false).map((p) => p.name);
  const good = peers.filter((p) => p.pathMtuOk === true).map((p) => p.name);
  if (bad.length) {
    return {
      name: 'path_mtu', ok: false,
      detail: `${bad.join(', ')} answer${bad.length === 1 ? 's' : ''} small probes but not ${mtu}-byte ones: the path loses large or fragmented packets`,
      fix: `lower vxlan.mtu (e.g. ${Math.max(576, mtu - 100)}), keep overlay.mssClamp on, or allow IP fragments on the path`,
    };
  }
  return { name: 'path_mtu', ok: true, detail: good.length ? `${mtu}-byte probes answered by ${good.join(', ')}` : 'no full-size probe answered yet' };
}

/**
 * The `clock` line of `vxedge check`: what this machine's clock says, and whether network
 * time keeps it (`sync`, util/clock-sync.ts; an Error: the kernel could not be asked). It
 * fails only on a clock that cannot be right (before this code was written: never set). A
 * clock no daemon keeps passes with that said, because its host may keep it (a VM, a
 * container, a battery-backed clock); `tlsPeers` ("the broker", "etcd") are what it risks.
 */
export function checkClock(nowMs: number, sync: ClockSync | Error, tlsPeers: readonly string[]): CheckResult {
  if (nowMs < WRITTEN_MS) {
    return {
      name: 'clock', ok: false,
      detail: `${clockSays(nowMs)}, before this vxedge was written (${utcMinute(WRITTEN_MS).slice(0, 10)}): it has not been set` +
        (tlsPeers.length ? `, and every certificate of ${tlsPeers.join(', ')} looks not yet valid` : '') +
        // Without TLS too: the health document's ts, by which a fleet reader without MQTT 5's
        // message expiry judges it stale, and the log's times.
        '; the times it publishes and logs are wrong too',
      fix: NETWORK_TIME_FIX,
    };
  }
  if (sync instanceof Error) {
    return { name: 'clock', ok: true, detail: `${clockSays(nowMs)}; whether network time keeps it is not known (${sync.message})` };
  }
  if (sync.source === 'timesyncd') {
    return {
      name: 'clock', ok: true,
      detail: `${clockSays(nowMs, true)} (systemd-timesyncd last synchronised it at ${utcMinute(sync.lastSyncMs)}; the kernel would not say: ${sync.kernelRefused})`,
    };
  }
  const risk = tlsPeers.length ? `; if it is off, TLS to ${tlsPeers.join(', ')} fails on certificate dates` : '';
  if (sync.source === 'chrony') {
    const t = sync.tracking;
    const refused = `the kernel would not say: ${sync.kernelRefused}`;
    if (sync.synchronised) {
      const update = t.refTimeMs === null ? '' : `, last updated ${utcMinute(t.refTimeMs)}`;
      const off = `${formatMs(Math.abs(t.offsetS) * 1000)} ${t.offsetS > 0 ? 'fast' : 'slow'}`;
      return { name: 'clock', ok: true, detail: `${clockSays(nowMs, true)} (chronyd: stratum ${t.stratum} from ${t.reference}${update}, ${off}; ${refused})` };
    }
    return {
      name: 'clock', ok: true,
      detail: `${clockSays(nowMs, false)}: chronyd runs but is not synchronised (no source it trusts; \`chronyc sources\` says why)${risk} (${refused})`,
    };
  }
  if (sync.synchronised) {
    return { name: 'clock', ok: true, detail: `${clockSays(nowMs, true)} (estimated error ${formatMs(sync.estErrorMs)})` };
  }
  return { name: 'clock', ok: true, detail: `${clockSays(nowMs, false)}: right only if something else sets it (a VM's host, a battery-backed clock)${risk}` };
}

function formatMs(ms: number): string {
  return ms < 1 ? `${Math.round(ms * 1000)} µs` : ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(1)} s`;
}
