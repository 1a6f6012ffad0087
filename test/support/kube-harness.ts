// Shared pieces of the Kubernetes tests: flannel Node objects as a real cluster has them,
// the stand-in API server with its certificates and kubeconfigs, a logger that keeps what it
// is told, and `drive` (from clock.ts), which moves a ManualClock on while real I/O happens
// until a condition holds (no fixed sleeps: a real-time deadline bounds it).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { drive } from './clock.js';
import { CaptureLog } from './capture-log.js';
// @ts-expect-error plain ESM JavaScript, no types
import { KubeApiServer, jsonPatch, mergePatch, rbacAllows } from './kube-apiserver.mjs';
// @ts-expect-error plain ESM JavaScript, no types
import { kubeconfig, makePki } from './kube-pki.mjs';

export { CaptureLog, KubeApiServer, drive, jsonPatch, kubeconfig, makePki, mergePatch, rbacAllows };

export interface NodeSpec {
  subnet: string;
  publicIp?: string;
  mac?: string;
  vni?: number | null;
  externalIp?: string;
  backendType?: string;
  labels?: Record<string, string>;
  /** flanneld's --kube-annotation-prefix as flannel completes it (default "flannel.alpha.coreos.com/"). */
  prefix?: string;
}

/** A Node as kube-flannel leaves it on an EKS worker. */
export function flannelNode(name: string, s: NodeSpec): Record<string, unknown> {
  const data: Record<string, unknown> = { VtepMAC: s.mac ?? '0a:bb:00:00:00:01' };
  if (s.vni !== null) data.VNI = s.vni ?? 1;
  const p = s.prefix ?? 'flannel.alpha.coreos.com/';
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/os': 'linux', ...s.labels },
      annotations: {
        [`${p}kube-subnet-manager`]: 'true',
        [`${p}backend-type`]: s.backendType ?? 'vxlan',
        [`${p}backend-data`]: JSON.stringify(data),
        [`${p}public-ip`]: s.publicIp ?? '203.0.113.10',
        'node.alpha.kubernetes.io/ttl': '0',
      },
    },
    spec: { podCIDR: s.subnet, podCIDRs: [s.subnet], providerID: `aws:///eu-west-1a/i-${name}` },
    status: {
      addresses: [
        { type: 'InternalIP', address: '172.31.0.10' },
        ...(s.externalIp ? [{ type: 'ExternalIP', address: s.externalIp }] : []),
        { type: 'Hostname', address: name },
      ],
      // What makes real Nodes heavy: the list of images on the node.
      images: Array.from({ length: 20 }, (_, i) => ({ names: [`registry.example/app-${i}@sha256:${'0'.repeat(64)}`], sizeBytes: 1e8 })),
    },
  };
}

/**
 * `node` with the weight of a real EKS worker's Node as the API server sends it (10-20 KB of
 * JSON): kubelet's 50 images with a digest and a tag each (its nodeStatusMaxImages), the
 * managedFields of kubelet, flannel and the node controller, the usual labels, conditions,
 * capacity and nodeInfo. None of it is read by vxedge; all of it crosses the wire and the parser.
 */
export function withEksWeight(node: Record<string, unknown>): Record<string, unknown> {
  const n = structuredClone(node) as { metadata: Record<string, any>; status: Record<string, any> };
  const name = n.metadata.name as string;
  n.metadata.uid = '6f0c2a4e-8d3b-4c1e-9a7f-0b1c2d3e4f5a';
  n.metadata.resourceVersion = '123456789';
  n.metadata.creationTimestamp = '2026-11-30T08:15:42Z';
  n.metadata.labels = {
    ...n.metadata.labels,
    'beta.kubernetes.io/arch': 'amd64', 'beta.kubernetes.io/instance-type': 'm6i.xlarge', 'beta.kubernetes.io/os': 'linux',
    'eks.amazonaws.com/capacityType': 'ON_DEMAND', 'eks.amazonaws.com/nodegroup': 'workers-eu-west-1a',
    'eks.amazonaws.com/nodegroup-image': 'ami-0123456789abcdef0', 'eks.amazonaws.com/sourceLaunchTemplateId': 'lt-0123456789abcdef0',
    'failure-domain.beta.kubernetes.io/region': 'eu-west-1', 'failure-domain.beta.kubernetes.io/zone': 'eu-west-1a',
    'k8s.io/cloud-provider-aws': '0123456789abcdef0123456789abcdef', 'kubernetes.io/arch': 'amd64', 'kubernetes.io/hostname': name,
    'node.kubernetes.io/instance-type': 'm6i.xlarge', 'topology.kubernetes.io/region': 'eu-west-1', 'topology.kubernetes.io/zone': 'eu-west-1a',
  };
  n.metadata.annotations = { ...n.metadata.annotations, 'alpha.kubernetes.io/provided-node-ip': '172.31.0.10', 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' };
  const fields = (keys: string[]) => Object.fromEntries(keys.map((k) => [`f:${k}`, {}]));
  n.metadata.managedFields = ['kubelet', 'flanneld', 'kube-controller-manager', 'aws-cloud-controller-manager'].map((manager, i) => ({
    manager, operation: 'Update', apiVersion: 'v1', time: '2026-12-01T10:00:00Z', ...(i === 0 ? { subresource: 'status' } : {}), fieldsType: 'FieldsV1',
    fieldsV1: {
      'f:metadata': { 'f:annotations': fields(Object.keys(n.metadata.annotations)), 'f:labels': fields(Object.keys(n.metadata.labels)) },
      'f:status': { 'f:conditions': Object.fromEntries(['DiskPressure', 'MemoryPressure', 'PIDPressure', 'Ready'].map((t) => [`k:{"type":"${t}"}`, fields(['lastHeartbeatTime', 'lastTransitionTime', 'message', 'reason', 'status'])])), 'f:images': {}, 'f:nodeInfo': fields(['architecture', 'bootID', 'containerRuntimeVersion', 'kernelVersion', 'kubeProxyVersion', 'kubeletVersion', 'machineID', 'operatingSystem', 'osImage', 'systemUUID']) },
    },
  }));
  n.status.capacity = { cpu: '4', 'ephemeral-storage': '83873772Ki', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '15896676Ki', pods: '58' };
  n.status.allocatable = { cpu: '3920m', 'ephemeral-storage': '76224326324', 'hugepages-1Gi': '0', 'hugepages-2Mi': '0', memory: '14880868Ki', pods: '58' };
  n.status.conditions = ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
    type, status: type === 'Ready' ? 'True' : 'False', lastHeartbeatTime: '2026-12-06T03:00:00Z', lastTransitionTime: '2026-11-30T08:16:10Z',
    reason: type === 'Ready' ? 'KubeletReady' : `KubeletHasNo${type}`, message: type === 'Ready' ? 'kubelet is posting ready status' : `kubelet has no ${type.toLowerCase()}`,
  }));
  n.status.daemonEndpoints = { kubeletEndpoint: { Port: 10250 } };
  n.status.nodeInfo = {
    architecture: 'amd64', bootID: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0', containerRuntimeVersion: 'containerd://1.7.22', kernelVersion: '6.1.115-126.197.amzn2023.x86_64',
    kubeProxyVersion: 'v1.31.2-eks-7f9249a', kubeletVersion: 'v1.31.2-eks-7f9249a', machineID: 'ec2f0123456789abcdef0123456789ab', operatingSystem: 'linux',
    osImage: 'Amazon Linux 2023.6.20241111', systemUUID: 'ec2f0123-4567-89ab-cdef-0123456789ab',
  };
  n.status.images = Array.from({ length: 50 }, (_, i) => ({
    names: [`602401143452.dkr.ecr.eu-west-1.amazonaws.com/team-${i % 7}/service-${i}@sha256:${(i * 7919).toString(16).padStart(64, 'a')}`, `602401143452.dkr.ecr.eu-west-1.amazonaws.com/team-${i % 7}/service-${i}:v1.${i}.0`],
    sizeBytes: 50_000_000 + i * 1_000_003,
  }));
  return n;
}

/** n nodes with subnets 10.(100+x/256).(x%256).0/24 (so a network of 10.0.0.0/8), EC2-like endpoints, distinct MACs. */
export function manyNodes(n: number, from = 1): Record<string, unknown>[] {
  const hex = (v: number) => v.toString(16).padStart(2, '0');
  return Array.from({ length: n }, (_, i) => {
    const x = from + i;
    return flannelNode(`ip-172-31-${x >> 8}-${x & 255}`, {
      subnet: `10.${100 + (x >> 8)}.${x & 255}.0/24`,
      publicIp: `52.${x >> 8}.${x & 255}.10`,
      mac: `0a:bb:00:00:${hex(x >> 8)}:${hex(x & 255)}`,
    });
  });
}

export interface ApiUser {
  name: string;
  token?: string;
  cn?: string;
  rules?: { verbs: string[]; resources?: string[]; resourceNames?: string[] }[];
}

export interface KubePki {
  dir: string;
  caFile: string;
  ca: string;
  cert: string;
  key: string;
  clients: Record<string, { certFile: string; keyFile: string }>;
}

/** A client certificate's common name, and its dates when they are not now to 2 days from now. */
export type PkiClient = string | { cn: string; notBefore: Date; notAfter: Date };

/** A CA, a server certificate for 127.0.0.1 and client certificates, in a temporary directory. */
export function makeKubePki(clients: PkiClient[] = [], serverDates?: { notBefore: Date; notAfter: Date }): KubePki & { remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxk8s-'));
  const pki = makePki(dir, { clients: clients.map((c) => (typeof c === 'string' ? { cn: c } : c)), serverDates }) as KubePki;
  return { ...pki, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The stand-in on 127.0.0.1; `kubeconfigFor` writes kubeconfigs next to the PKI. */
export async function startApiServer(pki: KubePki, users: ApiUser[], opts: { retain?: number } = {}) {
  const server = new KubeApiServer({ pki, users, retain: opts.retain });
  const url: string = await server.start();
  return {
    server,
    url,
    kubeconfigFor(auth: { token?: string; certFile?: string; keyFile?: string; exec?: Record<string, unknown> }, serverUrl = url): string {
      return kubeconfig(path.join(pki.dir, `kubeconfig-${++kubeconfigs}`), { server: serverUrl, caFile: pki.caFile, ...auth });
    },
  };
}

let kubeconfigs = 0;
