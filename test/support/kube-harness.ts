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
}

/** A Node as kube-flannel leaves it on an EKS worker. */
export function flannelNode(name: string, s: NodeSpec): Record<string, unknown> {
  const data: Record<string, unknown> = { VtepMAC: s.mac ?? '0a:bb:00:00:00:01' };
  if (s.vni !== null) data.VNI = s.vni ?? 1;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: { 'kubernetes.io/os': 'linux', ...s.labels },
      annotations: {
        'flannel.alpha.coreos.com/kube-subnet-manager': 'true',
        'flannel.alpha.coreos.com/backend-type': s.backendType ?? 'vxlan',
        'flannel.alpha.coreos.com/backend-data': JSON.stringify(data),
        'flannel.alpha.coreos.com/public-ip': s.publicIp ?? '203.0.113.10',
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

/** A CA, a server certificate for 127.0.0.1 and client certificates, in a temporary directory. */
export function makeKubePki(clientCns: string[] = []): KubePki & { remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxk8s-'));
  const pki = makePki(dir, { clients: clientCns.map((cn) => ({ cn })) }) as KubePki;
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
