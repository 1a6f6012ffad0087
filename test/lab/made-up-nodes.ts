// Made-up cluster nodes for the scale tests (test/lab/cluster.test.ts, cluster-etcd.test.ts):
// what a flannel node announces, for as many nodes as asked, none of them clashing with the
// lab's own. Subnets are /25s spread over 10.244.0.0/16 around the lab's (.1, .2, .100);
// public IPs come from the documentation ranges and are nothing in the lab, so probes to them
// go unanswered and stay inside the lab's namespaces; VTEP MACs are 0a:cc:00:00:xx:xx.
import type { LabEnv } from './harness.js';

export interface MadeUpNode {
  subnet: string;
  publicIp: string;
  mac: string;
}

/** `count` nodes (at most 505), in a fixed order. */
export function madeUpNodes(env: LabEnv, count: number): MadeUpNode[] {
  const taken = new Set([env.AWS1_PUBLIC_IP, env.AWS2_PUBLIC_IP, env.NAT_WAN_IP, env.INET_WAN_IP]);
  const ips = [
    ...Array.from({ length: 253 }, (_, i) => `203.0.113.${i + 2}`),
    ...Array.from({ length: 252 }, (_, i) => `198.51.100.${i + 3}`),
  ].filter((ip) => !taken.has(ip));
  const subnets = Array.from({ length: 256 }, (_, x) => x).filter((x) => ![1, 2, 100].includes(x)).flatMap((x) => [`10.244.${x}.0/25`, `10.244.${x}.128/25`]);
  if (count > ips.length) throw new Error(`madeUpNodes: at most ${ips.length} nodes`);
  const hex = (v: number) => v.toString(16).padStart(2, '0');
  return Array.from({ length: count }, (_, i) => ({ subnet: subnets[i], publicIp: ips[i], mac: `0a:cc:00:00:${hex(i >> 8)}:${hex(i & 255)}` }));
}
