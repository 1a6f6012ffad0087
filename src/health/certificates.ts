// The `certificates` check: the dates of every certificate the site's files give vxedge (the
// broker's CA and our client certificate, etcd's, the kubeconfig's), so that one that is
// about to end is seen weeks before the broker or the cluster starts refusing the gateway.
// A gateway whose MQTT certificate has ended can no longer say so over MQTT: the check fails
// CERT_WARN_DAYS before, while the health document still reaches the fleet.
//
// Files are read again only when they change (fileStamp); one that cannot be read is left to
// the MQTT and cluster errors, which name it already.
import { readFileSync } from 'node:fs';
import type { Config } from '../config/types.js';
import { chooseKubeconfig, kubeconfigBundle, kubeconfigCertificate, loadClientModule } from '../cluster/kubeconfig.js';
import { fileStamp } from '../util/file-stamp.js';
import { bundleValidity, certValidity, clockSays, NETWORK_TIME_FIX, utcMinute, type CertValidity, type SiteCertificate } from '../util/tls-failure.js';
import type { CheckResult } from './document.js';
import { parseBrokerUrl } from './mqtt-options.js';
import { parseWebConfig, readPem, webConfigFiles, type PemSource } from './web-config.js';

/** A certificate that ends within this many days fails the check. */
export const CERT_WARN_DAYS = 14;
const DAY_MS = 86_400_000;

/** Where certificates come from: files, read again when one of them changes. */
export interface CertSource {
  /** The files' versions (fileStamp); null when the first cannot be stat'ed (then nothing is read). */
  stamp(): string | null;
  load(): Promise<SiteCertificate[]>;
}

/** A PEM file of its own (mqtt.cert …): its first certificate (the leaf of a chain). */
function pemFile(what: string, file: string): CertSource {
  return {
    stamp: () => fileStamp(file),
    async load() {
      const v = certValidity(readFileSync(file));
      return v ? [{ what, validity: v }] : [];
    },
  };
}

/** A CA file (mqtt.ca …), perhaps a bundle: every certificate in it. */
function caFile(what: string, file: string): CertSource {
  return {
    stamp: () => fileStamp(file),
    async load() {
      return caCertificate(what, bundleValidity(readFileSync(file)));
    },
  };
}

/** The version of `file` and of the files it names (a kubeconfig's, a web configuration's); null when `file` cannot be stat'ed. */
function stampWithNamed(file: string, named: readonly string[]): string | null {
  const own = fileStamp(file);
  return own === null ? null : [own, ...named.map(fileStamp)].join(' ');
}

function caCertificate(what: string, anchors: CertValidity[]): SiteCertificate[] {
  if (anchors.length === 0) return [];
  return [{ what, validity: anchors[0], ...(anchors.length > 1 ? { anchors } : {}) }];
}

/**
 * A kubeconfig: its current context's cluster CA and user's client certificate, inline
 * (-data) or as files (made absolute by the client's loader, as the source reads them).
 */
function kubeconfigFile(file: string): CertSource {
  let named: string[] = []; // the files it names, as last read: a renewed one counts as a change
  return {
    stamp: () => stampWithNamed(file, named),
    async load() {
      const { KubeConfig } = await loadClientModule();
      const kc = new KubeConfig();
      kc.loadFromFile(file);
      const out: SiteCertificate[] = [];
      const cluster = kc.getCurrentCluster();
      const user = kc.getCurrentUser();
      named = [cluster?.caData ? undefined : cluster?.caFile, user?.certData ? undefined : user?.certFile].filter((f): f is string => !!f);
      out.push(...caCertificate(`certificate-authority of kubeconfig ${file}`, kubeconfigBundle(cluster?.caData, cluster?.caFile)));
      const v = kubeconfigCertificate(user?.certData, user?.certFile);
      if (v) out.push({ what: `client-certificate of kubeconfig ${file}`, validity: v });
      return out;
    },
  };
}

/**
 * metrics.webConfig: the metrics server's certificate and the CA its scrapers' certificates
 * must be signed by, inline or as files (relative to the web configuration, as it reads them).
 */
function webConfigFile(file: string): CertSource {
  let named: string[] = []; // the PEM files it names, as last read
  return {
    stamp: () => stampWithNamed(file, named),
    async load() {
      const c = parseWebConfig(readFileSync(file, 'utf8'), file);
      named = webConfigFiles(c).slice(1);
      if (!c.tls) return [];
      const what = (s: PemSource, key: string) => `${'file' in s ? `${key}_file` : key} of metrics.webConfig ${c.file}`;
      const out: SiteCertificate[] = [];
      const v = certValidity(readPem(c.tls.cert, 'tls_server_config.cert_file', c.file));
      if (v) out.push({ what: what(c.tls.cert, 'cert'), validity: v });
      if (c.tls.clientCa) {
        out.push(...caCertificate(what(c.tls.clientCa, 'client_ca'), bundleValidity(readPem(c.tls.clientCa, 'tls_server_config.client_ca_file', c.file))));
      }
      return out;
    },
  };
}

/**
 * The certificate sources of `cfg`: the broker's files when mqtt.url is TLS, the cluster
 * source's (etcd's files, or the kubeconfig; the in-cluster service account's CA is the
 * cluster's to rotate), the metrics server's (metrics.webConfig).
 */
export function certificateSources(cfg: Config, env: NodeJS.ProcessEnv = process.env): CertSource[] {
  const out: CertSource[] = [];
  const m = cfg.mqtt;
  if (m.url !== null && parseBrokerUrl(m.url).secure) {
    if (m.ca !== null) out.push(caFile('mqtt.ca', m.ca));
    if (m.cert !== null) out.push(pemFile('mqtt.cert', m.cert));
  }
  const c = cfg.cluster;
  if (c.source === 'etcd') {
    if (c.etcd.ca !== null) out.push(caFile('cluster.etcd.ca', c.etcd.ca));
    if (c.etcd.cert !== null) out.push(pemFile('cluster.etcd.cert', c.etcd.cert));
  }
  if (c.source === 'kubernetes') {
    const choice = chooseKubeconfig(c.kubernetes.kubeconfig, env);
    if (choice?.file) out.push(kubeconfigFile(choice.file));
  }
  if (cfg.metrics.listen && cfg.metrics.webConfig) out.push(webConfigFile(cfg.metrics.webConfig));
  return out;
}

/** Reads the sources' certificates, each file again only when it changed. */
export class CertificateReader {
  private readonly cache = new Map<CertSource, { stamp: string; certs: SiteCertificate[] }>();

  constructor(private readonly sources: readonly CertSource[]) {}

  async read(): Promise<SiteCertificate[]> {
    const out: SiteCertificate[] = [];
    for (const s of this.sources) {
      const stamp = s.stamp();
      if (stamp === null) continue;
      let hit = this.cache.get(s);
      if (hit?.stamp !== stamp) {
        const certs = await this.load(s);
        // Stamped after the load: a kubeconfig's stamp then covers the files it names.
        hit = { stamp: s.stamp() ?? stamp, certs };
        this.cache.set(s, hit);
      }
      out.push(...hit.certs);
    }
    return out;
  }

  private async load(s: CertSource): Promise<SiteCertificate[]> {
    try {
      return await s.load();
    } catch {
      return []; // unreadable or not a certificate: the connection's own error says so
    }
  }
}

/** The `certificates` check of `certs` at `nowMs`; null when the site uses none. */
export function certificatesCheck(certs: readonly SiteCertificate[], nowMs: number, synchronised?: boolean | null): CheckResult | null {
  if (certs.length === 0) return null;
  const byEnd = certs.map((c) => serving(c, nowMs)).sort((a, b) => a.validity.to.getTime() - b.validity.to.getTime());
  const problems: string[] = [];
  const fixes: string[] = [];
  for (const c of byEnd) {
    const to = c.validity.to.getTime();
    const renew = c.presented ? `have its operator renew ${c.what}` : `renew ${c.what}`;
    if (nowMs > to) {
      problems.push(`${c.what} expired on ${utcMinute(to)}`);
      fixes.push(renew);
    } else if (nowMs < c.validity.from.getTime()) {
      problems.push(`${c.what} is valid only from ${utcMinute(c.validity.from)} (${clockSays(nowMs, synchronised)})`);
      // A clock network time keeps is right: the certificate was issued to start later.
      fixes.push(synchronised === true ? `${renew}: it starts in the future`
        : synchronised === false ? NETWORK_TIME_FIX : "set this machine's clock (timedatectl), or renew it if the clock is right");
    } else if (to - nowMs < CERT_WARN_DAYS * DAY_MS) {
      problems.push(`${c.what} ends on ${utcMinute(to)}, ${inDays(to - nowMs)}`);
      fixes.push(`${renew} before then`);
    }
  }
  if (problems.length > 0) {
    return { name: 'certificates', ok: false, detail: problems.join('; '), fix: [...new Set(fixes)].join('; ') };
  }
  const first = byEnd[0];
  const others = byEnd.length > 1 ? ` (${byEnd.length} certificates, the first to end)` : '';
  return { name: 'certificates', ok: true, detail: `${first.what} ends on ${utcMinute(first.validity.to)}, ${inDays(first.validity.to.getTime() - nowMs)}${others}` };
}

/**
 * A CA bundle as the check dates it, named as one of several: by the certificate in it that is
 * valid now and ends last (the file serves until then); with none valid now, by the one that
 * starts soonest (a clock in the past, or a bundle made too early), else by the one that
 * ended last. Anything else as it is.
 */
function serving(c: SiteCertificate, nowMs: number): SiteCertificate {
  if (!c.anchors) return c;
  const latestEnd = (l: CertValidity[]) => l.reduce((a, b) => (b.to.getTime() > a.to.getTime() ? b : a));
  const valid = c.anchors.filter((v) => v.from.getTime() <= nowMs && nowMs <= v.to.getTime());
  const future = c.anchors.filter((v) => nowMs < v.from.getTime());
  const n = c.anchors.length;
  if (valid.length === 0 && future.length > 0) {
    const first = future.reduce((a, b) => (b.from.getTime() < a.from.getTime() ? b : a));
    return { what: `${c.what} (the first of its ${n} certificates to start)`, validity: first };
  }
  return { what: `${c.what} (the last of its ${n} certificates to end)`, validity: latestEnd(valid.length > 0 ? valid : c.anchors) };
}

function inDays(ms: number): string {
  const d = Math.floor(ms / DAY_MS);
  if (d >= 1) return `in ${d} day${d === 1 ? '' : 's'}`;
  const h = Math.floor(ms / 3_600_000);
  return h >= 1 ? `in ${h} hour${h === 1 ? '' : 's'}` : 'within the hour';
}
