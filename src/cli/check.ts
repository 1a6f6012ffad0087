// `vxedge check`: config validation (already done by the caller) plus the preflight
// checks of the flannel troubleshooting guide, one line each.
import { access, constants, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ListenAddress } from '../config/formats.js';
import type { Config, PeerConfig } from '../config/types.js';
import { CertificateReader, certificateSources, certificatesCheck } from '../health/certificates.js';
import type { CheckResult, HealthDocument } from '../health/document.js';
import { classifyExistingDevice } from '../control/device.js';
import { defaultGateway, linkDetails } from '../control/iproute.js';
import type { Underlay } from '../control/underlay.js';
import { checkClock, checkIpForward, checkMtu, checkPortFree, checkPublicEndpoint, checkTunDevice, checkUnderlay } from '../health/checks.js';
import { parseBrokerUrl } from '../health/mqtt-options.js';
import { listenFailure, protectedUrl, servingDetail, tryListen } from '../health/metrics-server.js';
import { loadWebConfig, WebConfigError, type WebConfig } from '../health/web-config.js';
import { readStatus } from '../health/status-file.js';
import { systemClock } from '../util/clock.js';
import { askClockSync } from '../util/clock-sync.js';
import { connectTarget } from '../util/http-proxy.js';
import { Logger } from '../util/log.js';
import { whyUnreadable } from '../util/why-unreadable.js';
import { clusterPreflight, type ClusterPreflight } from './check-cluster.js';
import { mqttPreflight, type MqttPreflight } from './check-mqtt.js';
import { stunPreflight } from './check-stun.js';
import { renderCheckJson, renderCheckLines } from './render.js';

/**
 * The peers a private underlay.publicIp must suit, as far as they are known before start:
 * those a start would use when the cluster could be read (the `cluster` check's peers, the
 * static ones merged with the cluster's). Else a Kubernetes source's are public by
 * construction (cluster/flannel-node.ts takes the Node's ExternalIP for a private public-ip,
 * or leaves the node out): none, so that no private underlay is seen; an etcd source's are
 * not known: the configured ones. The running check (SiteNat) judges all peers in force.
 */
export function preflightPeerAddresses(cfg: Pick<Config, 'cluster' | 'peers'>, cluster: readonly PeerConfig[] | null = null): string[] {
  if (cluster) return cluster.map((q) => q.publicIp);
  return cfg.cluster.source === 'kubernetes' ? [] : cfg.peers.map((q) => q.publicIp);
}

export async function preflight(cfg: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [{ name: 'config', ok: true, detail: `site ${cfg.site}, node ${cfg.node}, ${cfg.peers.length} peer(s)` }];
  results.push(await checkTunDevice());
  // Checking the config of a gateway that runs (before a reload or restart): its own device
  // and port are busy because it holds them, which is no fault.
  const running = await readStatus(cfg.runDir).catch(() => null);
  results.push(await checkDeviceName(cfg.overlay.device, running?.tunnel.device === cfg.overlay.device ? running.pid : null));
  const files = await checkFiles(cfg);
  if (files) results.push(files);
  results.push(checkClock(systemClock.now(), await askClockSync(), tlsPeers(cfg)));
  // The certificates line stands here, once the broker and the cluster have presented theirs.
  const fileCerts = await new CertificateReader(certificateSources(cfg)).read();
  const certsAt = results.length;
  // Asked now, answered while the checks below run (up to 10 s for a cluster or broker that does not answer).
  const cluster = clusterPreflight(cfg).catch((e: Error): ClusterPreflight => ({ check: { name: 'cluster', ok: false, detail: `could not ask the cluster: ${e.message}` }, peers: null }));
  const mqtt = mqttPreflight(cfg).catch((e: Error): MqttPreflight => ({ check: { name: 'mqtt', ok: false, detail: `could not try the broker: ${e.message}` }, presented: null }));
  results.push(await checkDirs(cfg));
  results.push(await checkIpForward());
  const { result, underlay } = await checkUnderlay(cfg);
  results.push(result);
  let pm: { check: CheckResult; offered: boolean } | null = null;
  if (underlay) {
    results.push(checkMtu(cfg.vxlan.mtu ?? underlay.mtu - 50, underlay.mtu, underlay.iface));
    const holds = running && running.tunnel.localEndpoint.endsWith(`:${cfg.underlay.port}`) ? running.pid : null;
    const port = await checkPortFree(underlay.address, cfg.underlay.port, holds);
    results.push(port);
    // The router and the STUN servers are asked at once (each takes a few seconds when silent).
    const [mapping, stun] = await Promise.all([portMappingOffered(cfg, underlay), stunPreflight(cfg, underlay, { portHeld: !port.ok || holds !== null })]);
    pm = mapping;
    if (pm) results.push(pm.check);
    if (stun) results.push(stun);
  }
  if (cfg.metrics.listen) results.push(await checkMetrics(cfg.metrics.listen, cfg.metrics.webConfig, running));
  const c = await cluster;
  if (c) results.push(c.check);
  const broker = await mqtt;
  if (broker) results.push(broker.check);
  const presented = [...(broker?.presented ? [broker.presented] : []), ...(c?.presented ?? [])];
  const certs = certificatesCheck([...fileCerts, ...presented], systemClock.now(), systemClock.synchronised?.());
  if (certs) results.splice(certsAt, 0, certs);
  const discover = [...(pm?.offered ? ['router port mapping'] : []), ...(cfg.nat.stun.length ? [`STUN (${cfg.nat.stun.map((s) => `${s.host}:${s.port}`).join(', ')})`] : [])];
  if (cfg.underlay.publicIp) {
    results.push(checkPublicEndpoint({ endpoint: `${cfg.underlay.publicIp}:${cfg.underlay.port}`, source: 'config' }, preflightPeerAddresses(cfg, c?.peers ?? null)));
  } else if (discover.length) {
    results.push({ name: 'public_endpoint', ok: true, detail: `to be discovered: ${discover.join(', then ')}` });
  } else if (underlay) {
    results.push(checkPublicEndpoint({ endpoint: `${underlay.address}:${cfg.underlay.port}`, source: 'local' }));
  } else {
    results.push({ name: 'public_endpoint', ok: false, detail: 'unknown: nothing is configured to discover it, and the local address is not known', fix: 'fix the underlay check first, or set underlay.publicIp' });
  }
  return results;
}

/**
 * The metrics endpoint as the gateway would serve it: metrics.webConfig loads (its files read,
 * the certificate matched to its key), and metrics.listen can be had.
 */
export async function checkMetrics(listen: ListenAddress, webConfig: string | null, running: HealthDocument | null): Promise<CheckResult> {
  let web: WebConfig | null = null;
  if (webConfig !== null) {
    try {
      web = loadWebConfig(webConfig).config;
    } catch (e) {
      if (!(e instanceof WebConfigError)) throw e;
      return { name: 'metrics', ok: false, detail: e.message, fix: e.fix };
    }
  }
  const serves = running?.checks.some((x) => x.name === 'metrics' && x.ok && x.detail === servingDetail(listen, web));
  return checkMetricsListen(listen, serves ? running!.pid : null, web);
}

/**
 * metrics.listen can be had: listened on and let go at once. Beside a gateway of this config
 * that serves its metrics (`heldBy`, its pid), the port in use is its own.
 */
export async function checkMetricsListen(listen: ListenAddress, heldBy: number | null, web: WebConfig | null = null): Promise<CheckResult> {
  const url = protectedUrl(listen, web);
  const at = connectTarget(listen.host, listen.port);
  const e = await tryListen(listen);
  if (!e) return { name: 'metrics', ok: true, detail: `${at} is free: the gateway will serve Prometheus metrics at ${url}` };
  if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' && heldBy !== null) {
    return { name: 'metrics', ok: true, detail: `${at} is held by this config's running gateway (pid ${heldBy}), serving ${url}` };
  }
  return { name: 'metrics', ok: false, ...listenFailure(e, listen) };
}

/** The peers whose certificates this machine's clock judges: what a wrong clock breaks. */
export function tlsPeers(cfg: Pick<Config, 'mqtt' | 'cluster'>): string[] {
  return [
    ...(cfg.mqtt.url !== null && parseBrokerUrl(cfg.mqtt.url).secure ? ['the broker'] : []),
    ...(cfg.cluster.source === 'kubernetes' ? ['the API server'] : []),
    ...(cfg.cluster.source === 'etcd' && cfg.cluster.etcd.endpoints.some((e) => /^https:/i.test(e)) ? ['etcd'] : []),
  ];
}

/**
 * `json`: one document, `{ok, checks}`, each check as the health document's (name, ok,
 * detail, fix), for provisioning tools that gate a rollout on it; the exit code is the same.
 */
export async function runCheck(cfg: Config, json = false): Promise<number> {
  const results = await preflight(cfg);
  process.stdout.write(json ? renderCheckJson(results) : renderCheckLines(results));
  return results.every((r) => r.ok) ? 0 : 1;
}

/** The files the config names that a run would read (only those of the parts in use): each
 *  must be there and readable by this user. Under systemd the gateway runs as user vxedge. */
export async function checkFiles(cfg: Config): Promise<CheckResult | null> {
  const named = ([
    ...(cfg.mqtt.url ? [['mqtt.passwordFile', cfg.mqtt.passwordFile], ['mqtt.ca', cfg.mqtt.ca], ['mqtt.cert', cfg.mqtt.cert], ['mqtt.key', cfg.mqtt.key]] : []),
    ...(cfg.cluster.source === 'kubernetes' ? [['cluster.kubernetes.kubeconfig', cfg.cluster.kubernetes.kubeconfig]] : []),
    ...(cfg.cluster.source === 'etcd'
      ? [['cluster.etcd.ca', cfg.cluster.etcd.ca], ['cluster.etcd.cert', cfg.cluster.etcd.cert], ['cluster.etcd.key', cfg.cluster.etcd.key], ['cluster.etcd.passwordFile', cfg.cluster.etcd.passwordFile]]
      : []),
  ] as [string, string | null][]).filter((e): e is [string, string] => e[1] !== null);
  if (named.length === 0) return null;
  const bad: string[] = [];
  for (const [key, file] of named) {
    try {
      // access() alone passes a directory, which the run's read then refuses (EISDIR).
      if ((await stat(file)).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      await access(file, constants.R_OK);
    } catch (e) {
      bad.push(`${key} ${file}: ${whyUnreadable(e)}`);
    }
  }
  return bad.length
    ? { name: 'files', ok: false, detail: bad.join('; '), fix: 'correct the path, or let the user vxedge runs as (vxedge under systemd) read the file' }
    : { name: 'files', ok: true, detail: `readable: ${named.map(([k, f]) => `${k} ${f}`).join(', ')}` };
}

/** stateDir and runDir: there and writable, or creatable (the unit and tmpfiles make them). */
export async function checkDirs(cfg: Config): Promise<CheckResult> {
  const bad: string[] = [];
  for (const [key, dir] of [['stateDir', cfg.stateDir], ['runDir', cfg.runDir]] as const) {
    // The nearest existing ancestor decides: a run creates what is missing below it.
    let at = dir;
    while (!(await exists(at)) && path.dirname(at) !== at) at = path.dirname(at);
    const where = at === dir ? '' : `${at} `;
    try {
      // A file where a directory belongs passes access(W_OK) as root; the run's mkdir or write then fails.
      if (!(await stat(at)).isDirectory()) {
        bad.push(`${key} ${dir}: ${where}is a file, not a directory`);
        continue;
      }
      await access(at, constants.W_OK | constants.X_OK);
    } catch (e) {
      bad.push(`${key} ${dir}: ${where}${whyUnreadable(e)}`);
    }
  }
  return bad.length
    ? { name: 'dirs', ok: false, detail: `not writable: ${bad.join('; ')}`, fix: 'run as root or as the vxedge service (its unit makes both directories), or point the keys at directories this user may write' }
    : { name: 'dirs', ok: true, detail: `writable: stateDir ${cfg.stateDir}, runDir ${cfg.runDir}` };
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

/**
 * Whether `run` can have overlay.device's name: free, or left over and to be replaced, or
 * held by this config's running gateway (`heldBy`, its pid), which a restart takes over.
 */
async function checkDeviceName(name: string, heldBy: number | null): Promise<CheckResult> {
  const found = classifyExistingDevice(name, await linkDetails(name));
  if (found.action === 'in-use' && heldBy !== null) {
    return { name: 'device', ok: true, detail: `${name} is held by this config's running gateway (pid ${heldBy})` };
  }
  switch (found.action) {
    case 'free':
      return { name: 'device', ok: true, detail: `${name}: no such interface yet` };
    case 'replace':
      return { name: 'device', ok: true, detail: `${name}: a ${found.kind} device left over, to be replaced at start` };
    case 'in-use':
      return { name: 'device', ok: false, detail: found.message, fix: 'stop the other gateway (vxedge status), or set overlay.device to another name' };
    case 'foreign':
      return { name: 'device', ok: false, detail: found.message, fix: `\`ip -d link show ${name}\` says what it is; give overlay.device a name no interface has` };
  }
}

/**
 * Does the site router offer port mapping? Asks each protocol once, without mapping
 * anything (PortMapper.probe). A protocol named in nat.portMapping that is not offered
 * fails; `auto` with nothing offered only says what that means.
 */
async function portMappingOffered(cfg: Config, u: Underlay): Promise<{ check: CheckResult; offered: boolean } | null> {
  const mode = cfg.nat.portMapping;
  if (mode === 'off') return null;
  const router = await defaultGateway(u.iface);
  if (!router) {
    return { offered: false, check: { name: 'port_mapping', ok: mode === 'auto', detail: `no default gateway on ${u.iface}: there is no router to ask`, fix: 'check the default route' } };
  }
  const { PortMapper } = await import('../nat/portmap/portmapper.js');
  const pm = new PortMapper({ mode, gateway: router, localAddress: u.address, port: cfg.underlay.port, clock: systemClock, log: new Logger('error') });
  const found = await pm.probe();
  const detail = `router ${router}: ` + found.map((f) => `${f.protocol} ${f.ok ? 'offered' : 'not offered'} (${f.detail})`).join('; ');
  const ok = mode === 'auto' ? true : found.some((f) => f.protocol === mode && f.ok);
  const none = !found.some((f) => f.ok);
  const check: CheckResult = {
    name: 'port_mapping', ok,
    detail: mode === 'auto' && none ? `${detail}; AWS nodes need a manual UDP ${cfg.underlay.port} forward or the srcport pin` : detail,
    ...(ok ? {} : { fix: `the router does not offer ${mode}: set nat.portMapping to auto, or forward UDP ${cfg.underlay.port} to ${u.address} by hand and set it to off` }),
  };
  return { check, offered: found.some((f) => f.ok && (mode === 'auto' || f.protocol === mode)) };
}
