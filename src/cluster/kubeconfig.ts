// Which kubeconfig the Kubernetes source uses, and the one module of the official client that
// reads it. Apart from kube-client.ts, so that what only needs to know the file (the
// certificates check, LiveMembership's preload) does not load the HTTP client with it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { bundleValidity, certValidity, type CertValidity } from '../util/tls-failure.js';

export interface KubeconfigChoice {
  /** What to load: a file, or the in-cluster service account. */
  kind: 'file' | 'in-cluster';
  file: string | null;
  /** For error messages: where the credentials come from. */
  describe: string;
}

/**
 * cluster.kubernetes.kubeconfig, else $KUBECONFIG (its first existing entry: we follow one
 * cluster, so merging several files as kubectl does buys nothing), else the in-cluster
 * service account. Null when none applies.
 */
export function chooseKubeconfig(configured: string | null, env: NodeJS.ProcessEnv = process.env): KubeconfigChoice | null {
  if (configured) return { kind: 'file', file: configured, describe: `kubeconfig ${configured} (cluster.kubernetes.kubeconfig)` };
  const fromEnv = (env.KUBECONFIG ?? '').split(path.delimiter).filter(Boolean);
  if (fromEnv.length > 0) {
    const file = fromEnv.find((f) => existsSync(f)) ?? fromEnv[0];
    return { kind: 'file', file, describe: `kubeconfig ${file} ($KUBECONFIG)` };
  }
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) {
    return { kind: 'in-cluster', file: null, describe: 'the in-cluster service account (/var/run/secrets/kubernetes.io/serviceaccount)' };
  }
  return null;
}

/** The module of the client we use; loading it early (LiveMembership.preload) is safe. */
export function loadClientModule() {
  return import('@kubernetes/client-node/dist/config.js');
}

/**
 * The dates of a certificate a kubeconfig holds inline (`…-data`, base64 PEM) or names as a file
 * (made absolute by KubeConfig's loader); null when it holds none. Throws when the file cannot
 * be read.
 */
export function kubeconfigCertificate(data: string | undefined, file: string | undefined): CertValidity | null {
  const pem = kubeconfigPem(data, file);
  return pem ? certValidity(pem) : null;
}

/** The same for a CA (certificate-authority(-data)), which may be a bundle: each certificate's validity. */
export function kubeconfigBundle(data: string | undefined, file: string | undefined): CertValidity[] {
  const pem = kubeconfigPem(data, file);
  return pem ? bundleValidity(pem) : [];
}

function kubeconfigPem(data: string | undefined, file: string | undefined): Buffer | null {
  if (data) return Buffer.from(data, 'base64');
  return file ? readFileSync(file) : null;
}
