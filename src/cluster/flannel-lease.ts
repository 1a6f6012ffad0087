// flannel's etcd subnet manager layout (`--etcd-prefix`, etcd v3 API), as pure codecs:
//
//   {prefix}/config                   {"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}
//   {prefix}/subnets/10.244.1.0-24    {"PublicIP":"203.0.113.10","PublicIPv6":null,"BackendType":"vxlan",
//                                      "BackendData":{"VNI":1,"VtepMAC":"0e:11:22:33:44:55"}}
//
// A dual-stack node's key is "10.244.1.0-24&fc00::-64": only the IPv4 half matters to an IPv4
// tunnel. The value is Go's json.Marshal of flannel's LeaseAttrs (fields in declaration order,
// nil pointers as null, RawMessage compacted), which encodeLease() reproduces byte for byte so
// that our lease is indistinguishable from one flanneld wrote.
//
// What flannel's own code does, and we mirror:
//  - Go decodes JSON object keys case-insensitively ("network" fills Network) and the last
//    duplicate wins; field() does the same.
//  - Backend.Type is compared lower-cased (backend manager); a missing Backend means "udp".
//  - A peer's BackendType must be exactly "vxlan" (the VXLAN backend ignores anything else).
//  - vxlanLeaseAttrs.VNI is a uint16: a VNI above 65535 is written modulo 65536, so that is
//    what we write and what we compare.
//
// Every value comes from etcd, i.e. from any client that can write there: nothing here throws
// on input, sizes are bounded, and each rejection says what is wrong and what to do.
import { isIP } from 'node:net';
import path from 'node:path';
import type { Cidr, PeerConfig } from '../config/types.js';
import { cidrContains, cidrOverlaps, intToIp, ipToInt, isIPv4, isUnicastIPv4, prefixMask } from '../util/ipv4.js';
import { parseMac } from '../util/mac.js';
import { show } from '../util/show.js';
import { isPlainObject } from '../util/plain-object.js';

export const FLANNEL_DEFAULT_PREFIX = '/coreos.com/network';
/** flannel's VXLAN backend default (vxlan.go defaultVNI). */
export const FLANNEL_DEFAULT_VNI = 1;
/** The kernel's default VXLAN port, which flannel uses when Backend.Port is 0 or absent. */
export const FLANNEL_DEFAULT_PORT = 8472;
/** A flanneld lease value is about 150 bytes; anything much larger was not written by flannel. */
export const MAX_LEASE_VALUE_BYTES = 4096;
/** `{prefix}/config` with a generous margin for SubnetMin/Max, IPv6 fields and whitespace. */
export const MAX_CONFIG_VALUE_BYTES = 16384;

// ------------------------------------------------------------------------------------- keys

/** `{prefix}/config`, joined as flannel joins it (Go path.Join: no double or trailing slash). */
export function configKey(prefix: string): string {
  return path.posix.join(prefix, 'config');
}

/** `{prefix}/subnets/`: the range every lease key starts with. */
export function subnetsPrefix(prefix: string): string {
  return `${path.posix.join(prefix, 'subnets')}/`;
}

/** "10.244.1.0/24" -> "10.244.1.0-24" (flannel's MakeSubnetKey for an IPv4-only lease). */
export function subnetKeyText(subnet: Cidr): string {
  return `${intToIp(subnet.network)}-${subnet.prefixLen}`;
}

/** Our lease's key: `{prefix}/subnets/10.244.100.0-24`. */
export function subnetKey(prefix: string, subnet: Cidr): string {
  return subnetsPrefix(prefix) + subnetKeyText(subnet);
}

/** The peer name for a lease key: stable, readable, and a valid DNS subdomain ("etcd-10.244.1.0-24"). */
export function leaseName(subnet: Cidr): string {
  return `etcd-${subnetKeyText(subnet)}`;
}

export type SubnetKeyResult = { ok: true; subnet: Cidr; ipv6: string | null } | { ok: false; error: string };

const KEY_RE = /^([0-9.]{7,15})-([0-9]{1,2})(?:&([0-9a-fA-F:.]{2,45})-([0-9]{1,3}))?$/;

/** Parses the part of a lease key after `{prefix}/subnets/`. Never throws. */
export function parseSubnetKey(text: string): SubnetKeyResult {
  const bad = (why: string): SubnetKeyResult => ({
    ok: false,
    error: `key ${show(text)} is not a flannel subnet key (${why}; expected <network>-<length>, e.g. 10.244.1.0-24)`,
  });
  if (typeof text !== 'string') return bad('not text');
  const m = KEY_RE.exec(text);
  if (!m) return bad('unrecognised form');
  const [, ip, lenText, ip6, len6Text] = m;
  const prefixLen = Number(lenText);
  if (!isIPv4(ip) || prefixLen > 32 || (lenText.length > 1 && lenText[0] === '0')) return bad('bad IPv4 network');
  const mask = prefixMask(prefixLen);
  const network = ipToInt(ip);
  if ((network & mask) >>> 0 !== network) return bad(`host bits set in ${ip}/${prefixLen}`);
  let ipv6: string | null = null;
  if (ip6 !== undefined) {
    if (isIP(ip6) !== 6 || Number(len6Text) > 128) return bad('bad IPv6 network');
    ipv6 = `${ip6}/${len6Text}`;
  }
  return { ok: true, subnet: { text: `${ip}/${prefixLen}`, network, prefixLen, mask }, ipv6 };
}

// ------------------------------------------------------------------------------ JSON access

type JsonObject = Record<string, unknown>;


/** obj[name] the way Go's encoding/json fills a struct field: keys match case-insensitively, the last one wins. */
function field(obj: JsonObject, name: string): unknown {
  const want = name.toLowerCase();
  let value: unknown;
  for (const k of Object.keys(obj)) if (k.toLowerCase() === want) value = obj[k];
  return value;
}

/** JSON.parse of untrusted text with a size bound; returns an error text instead of throwing. */
function parseJsonObject(text: unknown, maxBytes: number, what: string): { ok: true; obj: JsonObject } | { ok: false; error: string } {
  if (typeof text !== 'string') return { ok: false, error: `${what} is not text` };
  if (Buffer.byteLength(text) > maxBytes) return { ok: false, error: `${what} is ${Buffer.byteLength(text)} bytes, more than the ${maxBytes} any flannel value needs` };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return { ok: false, error: `${what} is not JSON (${(e as Error).message})` };
  }
  if (!isPlainObject(doc)) return { ok: false, error: `${what} is not a JSON object: ${show(text)}` };
  return { ok: true, obj: doc };
}

// ------------------------------------------------------------------------- {prefix}/config

/** What vxedge needs from flannel's network config. */
export interface FlannelNetConfig {
  network: Cidr;
  /** SubnetLen as given (0: flannel picks /24, or network+2 for small networks). */
  subnetLen: number;
  /** Backend.Type lower-cased ("udp" when Backend is missing, as flannel decides). */
  backendType: string;
  /** Backend.VNI, default 1. */
  vni: number;
  /** Backend.Port, 8472 when 0 or absent. */
  port: number;
  /** Whether Backend and Backend.VNI were written (for messages about defaults). */
  backendGiven: boolean;
  vniGiven: boolean;
}

/** What the site is configured with, to check flannel's config against. */
export interface OurNetwork {
  /** overlay.network */
  network: Cidr;
  /** overlay.subnet */
  subnet: Cidr;
  /** vxlan.vni */
  vni: number;
  /** vxlan.port */
  port: number;
}

export type NetConfigResult =
  | { ok: true; config: FlannelNetConfig; warnings: string[] }
  | { ok: false; error: string };

/** Go's net.ParseCIDR as flannel's IP4Net uses it: host bits are allowed and dropped. */
function parseFlannelCidr(v: unknown): Cidr | null {
  if (typeof v !== 'string') return null;
  const slash = v.indexOf('/');
  if (slash < 0) return null;
  const ip = v.slice(0, slash);
  const lenText = v.slice(slash + 1);
  if (!isIPv4(ip) || !/^(0|[1-9][0-9]?)$/.test(lenText) || Number(lenText) > 32) return null;
  const prefixLen = Number(lenText);
  const mask = prefixMask(prefixLen);
  const network = (ipToInt(ip) & mask) >>> 0;
  return { text: `${intToIp(network)}/${prefixLen}`, network, prefixLen, mask };
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

/** Parses `{prefix}/config` as flannel does. Never throws. */
export function parseNetConfig(text: unknown, key = 'the flannel config'): { ok: true; config: FlannelNetConfig } | { ok: false; error: string } {
  const j = parseJsonObject(text, MAX_CONFIG_VALUE_BYTES, key);
  if (!j.ok) return { ok: false, error: `${j.error}; write flannel's net-conf JSON there, e.g. {"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}` };
  const obj = j.obj;
  if (field(obj, 'EnableIPv4') === false) {
    return { ok: false, error: `${key} has EnableIPv4 false: vxedge carries IPv4 only; the cluster needs an IPv4 Network` };
  }
  const networkRaw = field(obj, 'Network');
  const network = parseFlannelCidr(networkRaw);
  if (!network) return { ok: false, error: `${key} has Network ${show(networkRaw)}, not an IPv4 CIDR such as "10.244.0.0/16"` };
  const subnetLenRaw = field(obj, 'SubnetLen');
  if (subnetLenRaw !== undefined && !isUint(subnetLenRaw, 32)) {
    return { ok: false, error: `${key} has SubnetLen ${show(subnetLenRaw)}, not a prefix length 0..32` };
  }
  const backend = field(obj, 'Backend');
  let backendType = 'udp';
  let vni = FLANNEL_DEFAULT_VNI;
  let port = FLANNEL_DEFAULT_PORT;
  let vniGiven = false;
  const backendGiven = backend !== undefined && backend !== null;
  if (backendGiven) {
    if (!isPlainObject(backend)) return { ok: false, error: `${key} has Backend ${show(backend)}, not an object such as {"Type":"vxlan"}` };
    const type = field(backend, 'Type');
    if (type !== undefined && typeof type !== 'string') return { ok: false, error: `${key} has Backend.Type ${show(type)}, not a string` };
    backendType = (type ?? '').toLowerCase();
    const vniRaw = field(backend, 'VNI');
    if (vniRaw !== undefined) {
      if (!isUint(vniRaw, 0xffffff)) return { ok: false, error: `${key} has Backend.VNI ${show(vniRaw)}, not a VNI 0..16777215` };
      vni = vniRaw;
      vniGiven = true;
    }
    const portRaw = field(backend, 'Port');
    if (portRaw !== undefined) {
      if (!isUint(portRaw, 65535)) return { ok: false, error: `${key} has Backend.Port ${show(portRaw)}, not a UDP port` };
      if (portRaw !== 0) port = portRaw;
    }
  }
  const subnetLen = (subnetLenRaw as number | undefined) ?? 0;
  return { ok: true, config: { network, subnetLen, backendType, vni, port, backendGiven, vniGiven } };
}

/**
 * Checks flannel's config against the site's: the VXLAN backend, a Network that holds
 * overlay.subnet, the same VNI and port. Each mismatch is one error naming what to change.
 */
export function checkNetConfig(text: unknown, ours: OurNetwork, key = 'the flannel config'): NetConfigResult {
  const parsed = parseNetConfig(text, key);
  if (!parsed.ok) return parsed;
  const c = parsed.config;
  const errors: string[] = [];
  if (c.backendType !== 'vxlan') {
    const given = c.backendGiven ? `has Backend.Type ${show(c.backendType)}` : 'has no Backend, which flannel takes as "udp"';
    errors.push(`${key} ${given}: vxedge speaks flannel's VXLAN backend only; the cluster must use {"Backend":{"Type":"vxlan"}}`);
  }
  if (!cidrContains(c.network, ours.subnet)) {
    errors.push(`${key} has Network ${c.network.text}, which does not hold overlay.subnet ${ours.subnet.text}: pick a site subnet inside ${c.network.text}`);
  }
  if (c.vni !== ours.vni) {
    const which = c.vniGiven ? `Backend.VNI ${c.vni}` : `no Backend.VNI (flannel's default ${c.vni})`;
    errors.push(`${key} has ${which} but vxlan.vni is ${ours.vni}: set vxlan.vni to ${c.vni}`);
  }
  if (c.port !== ours.port) {
    errors.push(`${key} has Backend.Port ${c.port} but vxlan.port is ${ours.port}: set vxlan.port to ${c.port}`);
  }
  if (errors.length > 0) return { ok: false, error: errors.join('; ') };
  const warnings: string[] = [];
  if (c.network.text !== ours.network.text) {
    warnings.push(`${key} has Network ${c.network.text} but overlay.network is ${ours.network.text}: leases outside overlay.network are left out; set overlay.network to ${c.network.text}`);
  }
  if (c.subnetLen !== 0 && c.subnetLen !== ours.subnet.prefixLen) {
    warnings.push(`${key} has SubnetLen ${c.subnetLen} but overlay.subnet is a /${ours.subnet.prefixLen}: flannel nodes accept it, but keep the site subnet outside SubnetMin..SubnetMax so flannel never hands it to a new node`);
  }
  return { ok: true, config: c, warnings };
}

// ---------------------------------------------------------------------------- lease values

/** A lease value's fields, as far as they could be read. */
export interface LeaseAttrs {
  publicIp: string | null;
  backendType: string | null;
  /** VtepMAC normalised ("aa:bb:..."), or null when missing or not a unicast MAC. */
  vtepMac: string | null;
  /** VtepMAC as written (for messages). */
  vtepMacRaw: unknown;
  vni: number | null;
}

/** Reads a lease value's fields without judging them. Never throws. */
export function parseLeaseAttrs(value: unknown): { ok: true; attrs: LeaseAttrs } | { ok: false; error: string } {
  const j = parseJsonObject(value, MAX_LEASE_VALUE_BYTES, 'the lease value');
  if (!j.ok) return j;
  const publicIp = field(j.obj, 'PublicIP');
  const backendType = field(j.obj, 'BackendType');
  const data = field(j.obj, 'BackendData');
  const macRaw = isPlainObject(data) ? field(data, 'VtepMAC') : undefined;
  const vni = isPlainObject(data) ? field(data, 'VNI') : undefined;
  let vtepMac: string | null = null;
  try {
    vtepMac = typeof macRaw === 'string' ? parseMac(macRaw) : null;
  } catch {
    vtepMac = null;
  }
  return {
    ok: true,
    attrs: {
      publicIp: typeof publicIp === 'string' ? publicIp : null,
      backendType: typeof backendType === 'string' ? backendType : null,
      vtepMac,
      vtepMacRaw: macRaw,
      vni: isUint(vni, 0xffffff) ? vni : null,
    },
  };
}

/** The VtepMAC a lease value holds, normalised; null when it holds none that can be read. */
export function leaseVtepMac(value: unknown): string | null {
  const p = parseLeaseAttrs(value);
  return p.ok ? p.attrs.vtepMac : null;
}

/** "PublicIP 203.0.113.10, VtepMAC 0e:..": who holds a lease, for messages. */
export function describeHolder(value: unknown): string {
  const p = parseLeaseAttrs(value);
  if (!p.ok) return `a value that is not a flannel lease: ${show(value)}`;
  return `PublicIP ${p.attrs.publicIp ?? show(null)}, VtepMAC ${p.attrs.vtepMac ?? show(p.attrs.vtepMacRaw)}`;
}

/** The VNI as flannel's uint16 lease field carries it. */
export function leaseVni(vni: number): number {
  return vni & 0xffff;
}

export interface OwnLeaseValue {
  publicIp: string;
  vni: number;
  vtepMac: string;
}

/** Our lease value, byte for byte as flanneld writes it (Go json.Marshal of LeaseAttrs). */
export function encodeLease(l: OwnLeaseValue): string {
  if (!isIPv4(l.publicIp)) throw new Error(`${show(l.publicIp)} is not an IPv4 address to announce`);
  const mac = parseMac(l.vtepMac);
  if (!Number.isInteger(l.vni) || l.vni < 0 || l.vni > 0xffffff) throw new Error(`${show(l.vni)} is not a VNI`);
  return `{"PublicIP":"${l.publicIp}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":${leaseVni(l.vni)},"VtepMAC":"${mac}"}}`;
}

// ------------------------------------------------------------------------ lease -> peer

export interface LeaseContext {
  /** overlay.network: leases outside it are left out. */
  network: Cidr;
  /** overlay.subnet: the site's own; never a peer. */
  ownSubnet: Cidr;
  /** vxlan.vni */
  vni: number;
  /** vxlan.port: the port every peer listens on. */
  port: number;
}

export type SkipCode = 'key' | 'own' | 'overlap' | 'network' | 'malformed' | 'backend' | 'public-ip' | 'mac' | 'vni';

export type LeaseVerdict =
  | { kind: 'peer'; peer: PeerConfig }
  | { kind: 'skip'; name: string; code: SkipCode; why: string };

/**
 * Judges one lease as flannel's VXLAN backend would program it: `keyText` is the key after
 * `{prefix}/subnets/`, `value` its value. Never throws.
 */
export function leaseToPeer(keyText: string, value: unknown, ctx: LeaseContext): LeaseVerdict {
  const key = parseSubnetKey(keyText);
  if (!key.ok) {
    const shown = String(keyText).length > 64 ? `${String(keyText).slice(0, 61)}...` : String(keyText);
    return { kind: 'skip', name: `etcd-${shown}`, code: 'key', why: `${key.error}: not written by flannel; delete it` };
  }
  const subnet = key.subnet;
  const name = leaseName(subnet);
  const skip = (code: SkipCode, why: string): LeaseVerdict => ({ kind: 'skip', name, code, why });

  if (subnet.network === ctx.ownSubnet.network && subnet.prefixLen === ctx.ownSubnet.prefixLen) {
    return skip('own', `holds the site's own subnet ${subnet.text} (${describeHolder(value)})`);
  }
  if (cidrOverlaps(subnet, ctx.ownSubnet)) {
    return skip('overlap', `subnet ${subnet.text} overlaps the site's subnet ${ctx.ownSubnet.text} (${describeHolder(value)}): ` +
      'give the site a subnet no node uses');
  }
  if (!cidrContains(ctx.network, subnet)) {
    return skip('network', `subnet ${subnet.text} is outside overlay.network ${ctx.network.text}: set overlay.network to the cluster's Network`);
  }

  const parsed = parseLeaseAttrs(value);
  if (!parsed.ok) return skip('malformed', `${parsed.error}: not a lease flanneld wrote; fix or delete the key`);
  const a = parsed.attrs;
  if (a.backendType !== 'vxlan') {
    return skip('backend', `BackendType ${show(a.backendType ?? null)} is not "vxlan": flannel's VXLAN nodes ignore this lease, and so does vxedge`);
  }
  if (a.publicIp === null || !isIPv4(a.publicIp) || !isUnicastIPv4(ipToInt(a.publicIp))) {
    return skip('public-ip', `PublicIP ${show(a.publicIp)} is not a usable IPv4 address: start that node's flanneld with --public-ip`);
  }
  if (a.vtepMac === null) {
    return skip('mac', `BackendData.VtepMAC ${show(a.vtepMacRaw ?? null)} is not a unicast MAC address: not a lease flanneld wrote; fix or delete the key`);
  }
  if (a.vni === null) return skip('vni', 'BackendData has no VNI: not a lease flanneld wrote; fix or delete the key');
  if (a.vni !== leaseVni(ctx.vni)) {
    return skip('vni', `VNI ${a.vni} differs from vxlan.vni ${ctx.vni}: this node is on another VXLAN network; if the whole cluster uses VNI ${a.vni}, set vxlan.vni to it`);
  }
  return { kind: 'peer', peer: { name, publicIp: a.publicIp, port: ctx.port, subnet, vtepMac: a.vtepMac } };
}
