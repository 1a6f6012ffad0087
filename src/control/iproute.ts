// The kernel's routing state is programmed with iproute2, the same tool an operator
// uses to inspect it, so what vxedge does can be replayed by hand. This is control
// plane only (a handful of calls at start, stop and on peer changes).
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { endianness } from 'node:os';

export class IpCommandError extends Error {
  constructor(
    readonly args: string[],
    readonly stderr: string,
  ) {
    super(`ip ${args.join(' ')}: ${stderr.trim() || 'failed'}`);
    this.name = 'IpCommandError';
  }
}

export function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new IpCommandError(args, stderr || err.message));
      else resolve(stdout);
    });
  });
}

/**
 * Runs many `ip` commands in one process (`ip -force -batch -`): 500 routes cost one fork
 * and one netlink conversation instead of 500 processes (11-14 s on a Pi-class box). With
 * -force every line is tried; the error names the lines that failed.
 */
export function ipBatch(commands: string[][]): Promise<void> {
  if (commands.length === 0) return Promise.resolve();
  for (const c of commands) {
    // One command per line, arguments split on blanks: nothing we pass may contain either.
    if (c.some((a) => a === '' || /[\s"'\\]/.test(a))) throw new Error(`ip batch: unsafe argument in ${JSON.stringify(c)}`);
  }
  return new Promise((resolve, reject) => {
    const child = execFile('ip', ['-force', '-batch', '-'], { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new IpCommandError(['-batch', `(${commands.length} commands)`], stderr || err.message));
      else resolve();
    });
    child.stdin?.on('error', () => undefined); // ip died early: the callback reports it
    child.stdin?.end(commands.map((c) => c.join(' ')).join('\n') + '\n');
  });
}

async function ipJson<T>(args: string[]): Promise<T[]> {
  const out = await ip(['-j', ...args]);
  return out.trim() ? (JSON.parse(out) as T[]) : [];
}

export async function linkExists(name: string): Promise<boolean> {
  try {
    await ip(['link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

export interface LinkInfo {
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string; info_data?: { persist?: boolean } };
}

export async function linkDetails(name: string): Promise<LinkInfo | null> {
  try {
    const [l] = await ipJson<LinkInfo>(['-d', 'link', 'show', 'dev', name]);
    return l ?? null;
  } catch {
    return null;
  }
}

/**
 * The gateway of the IPv4 default route through `iface` (the site router), or null. Read from
 * /proc/net/route (this network namespace's main table) rather than with `ip`: the running
 * checks read it at every refresh, and a Pi pays a process per `ip`.
 */
export async function defaultGateway(iface: string): Promise<string | null> {
  return defaultGatewayIn(await readFile('/proc/net/route', 'utf8').catch(() => ''), iface);
}

/**
 * The gateway of `iface`'s default route in /proc/net/route's text: the one of the lowest
 * metric, as the kernel chooses (RTF_UP and RTF_GATEWAY set; the address is the network-order
 * word printed as a host-endian number: reversed on the little-endian boards). Null when
 * there is none; lines it cannot read are passed over.
 */
export function defaultGatewayIn(text: string, iface: string, littleEndian = endianness() === 'LE'): string | null {
  let best: string | null = null;
  let bestMetric = Infinity;
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || f[0] !== iface || f[1] !== '00000000' || f[7] !== '00000000') continue;
    const flags = parseInt(f[3]!, 16);
    const metric = Number(f[6]);
    if ((flags & 0x3) !== 0x3 || !/^[0-9A-Fa-f]{8}$/.test(f[2]!) || !Number.isInteger(metric) || metric >= bestMetric) continue;
    const n = parseInt(f[2]!, 16);
    const bytes = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
    best = (littleEndian ? bytes.reverse() : bytes).join('.');
    bestMetric = metric;
  }
  return best;
}

/** The interface of the IPv4 default route, or null. */
export async function defaultRouteIface(): Promise<string | null> {
  const routes = await ipJson<{ dev?: string }>(['-4', 'route', 'show', 'default']);
  return routes.find((r) => r.dev)?.dev ?? null;
}

/** IPv4 addresses of an interface, primary first. */
export async function ifaceIPv4(name: string): Promise<string[]> {
  return (await ifaceIPv4State(name))?.addresses ?? [];
}

/** An interface's IPv4 addresses (primary first) and link flags (`UP`, `NO-CARRIER`, ...); null when it does not exist. */
export async function ifaceIPv4State(name: string): Promise<{ addresses: string[]; flags: string[] } | null> {
  let links;
  try {
    links = await ipJson<{ flags?: string[]; addr_info?: { family: string; local: string; secondary?: boolean }[] }>(['addr', 'show', 'dev', name]);
  } catch (e) {
    if (e instanceof IpCommandError && /does not exist/.test(e.stderr)) return null;
    throw e;
  }
  if (links.length === 0) return null;
  // Without -4: a link with no IPv4 address is still listed, with its flags.
  const infos = links.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === 'inet');
  const addresses = [...infos.filter((a) => !a.secondary), ...infos.filter((a) => a.secondary)].map((a) => a.local);
  return { addresses, flags: links[0].flags ?? [] };
}

/** The interface that holds `address`, or null. */
export async function ifaceOfAddress(address: string): Promise<string | null> {
  const links = await ipJson<{ ifname: string; addr_info?: { local: string }[] }>(['-4', 'addr', 'show']);
  return links.find((l) => l.addr_info?.some((a) => a.local === address))?.ifname ?? null;
}

export async function ifaceMtu(name: string): Promise<number> {
  return Number((await readFile(`/sys/class/net/${name}/mtu`, 'utf8')).trim());
}

/** One route of `ip -j -4 route show`, the fields vxedge reads. */
export interface KernelRoute {
  dst: string;
  dev?: string;
  gateway?: string;
}

/** The main IPv4 routing table. */
export async function routesIPv4(): Promise<KernelRoute[]> {
  return ipJson(['-4', 'route', 'show']);
}

/** One entry of `ip -j -4 neigh show`, the fields vxedge reads. */
export interface KernelNeighbour {
  dst: string;
  lladdr?: string;
  state?: string[];
}

/** The IPv4 neighbours of one device. */
export async function neighboursIPv4(dev: string): Promise<KernelNeighbour[]> {
  return ipJson(['-4', 'neigh', 'show', 'dev', dev]);
}

/** Sets a per-device sysctl; false when the knob does not exist (e.g. IPv6 disabled). */
export async function deviceSysctl(family: 'ipv4' | 'ipv6', dev: string, key: string, value: string): Promise<boolean> {
  try {
    await writeFile(`/proc/sys/net/${family}/conf/${dev}/${key}`, value);
    return true;
  } catch {
    return false;
  }
}

export async function readSysctl(path: string): Promise<string | null> {
  try {
    return (await readFile(`/proc/sys/${path.replace(/\./g, '/')}`, 'utf8')).trim();
  } catch {
    return null;
  }
}
