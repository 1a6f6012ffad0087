// Which public endpoint the site announces (the Node object's public-ip, the etcd lease's
// PublicIP, the health document's tunnel.publicEndpoint), and from where it was learned:
//   1. underlay.publicIp, when the operator set it: it always wins;
//   2. the site router's external address from a port mapping (PCP, NAT-PMP, UPnP): the
//      mapping's external port is underlay.port by construction;
//   3. what STUN saw (ip:port; the port may differ, which the NAT advice explains);
//   4. the local address, as flannel does without --public-ip: right for a gateway with a
//      public address of its own, and flagged by the public_endpoint check when it is private.
import { ipToInt, isGloballyRoutable } from '../util/ipv4.js';

export type EndpointSource = 'config' | 'port-mapping' | 'stun' | 'local';

export interface EndpointFacts {
  configuredIp: string | null;
  port: number;
  /** The router's external address while a mapping is in place. */
  mappedIp: string | null;
  /** STUN's last mapped endpoint, "ip:port". */
  stun: string | null;
  /** The address the tunnel socket is bound to. */
  localIp: string;
}

export interface PublicEndpoint {
  endpoint: string;
  source: EndpointSource;
}

export function choosePublicEndpoint(f: EndpointFacts): PublicEndpoint {
  if (f.configuredIp) return { endpoint: `${f.configuredIp}:${f.port}`, source: 'config' };
  if (f.mappedIp) return { endpoint: `${f.mappedIp}:${f.port}`, source: 'port-mapping' };
  if (f.stun) return { endpoint: f.stun, source: 'stun' };
  return { endpoint: `${f.localIp}:${f.port}`, source: 'local' };
}

/**
 * The IP to announce to the cluster (Node object, etcd lease), or null: never a private
 * local address, which no AWS node could reach (the public_endpoint check says why).
 */
export function announceableIp(p: PublicEndpoint | null): string | null {
  const ip = endpointIp(p?.endpoint ?? null);
  if (!ip || !p) return null;
  return p.source !== 'local' || isGloballyRoutable(ipToInt(ip)) ? ip : null;
}

/** The IP part of "ip:port" (or null). */
export function endpointIp(endpoint: string | null): string | null {
  return endpoint ? endpoint.slice(0, endpoint.lastIndexOf(':')) : null;
}
