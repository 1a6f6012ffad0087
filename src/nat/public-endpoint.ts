// Which public endpoint the site announces (the Node object's public-ip, the etcd lease's
// PublicIP, the health document's tunnel.publicEndpoint), and from where it was learned:
//   1. underlay.publicIp, when the operator set it: it always wins;
//   2. the site router's external address from a port mapping (PCP, NAT-PMP, UPnP): the
//      mapping's external port is underlay.port by construction;
//   3. what STUN saw (ip:port; the port may differ, which the NAT advice explains);
//   4. unknown.
export type EndpointSource = 'config' | 'port-mapping' | 'stun';

export interface EndpointFacts {
  configuredIp: string | null;
  port: number;
  /** The router's external address while a mapping is in place. */
  mappedIp: string | null;
  /** STUN's last mapped endpoint, "ip:port". */
  stun: string | null;
}

export interface PublicEndpoint {
  endpoint: string | null;
  source: EndpointSource | null;
}

export function choosePublicEndpoint(f: EndpointFacts): PublicEndpoint {
  if (f.configuredIp) return { endpoint: `${f.configuredIp}:${f.port}`, source: 'config' };
  if (f.mappedIp) return { endpoint: `${f.mappedIp}:${f.port}`, source: 'port-mapping' };
  if (f.stun) return { endpoint: f.stun, source: 'stun' };
  return { endpoint: null, source: null };
}

/** The IP part of "ip:port" (or null). */
export function endpointIp(endpoint: string | null): string | null {
  return endpoint ? endpoint.slice(0, endpoint.lastIndexOf(':')) : null;
}
