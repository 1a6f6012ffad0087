// `vxedge retire -c FILE [--dry-run] [--force] [--mac MAC]`: takes a site that is gone for good out of the
// cluster and the fleet. A stopping gateway leaves its Node or lease and its retained MQTT
// status in place on purpose (a restart must not move the site's routes on every node, and the
// fleet should see a stopped gateway as offline), so without this a decommissioned box stays
// in every flannel node's routes and in `vxedge fleet`, which then never exits 0 again.
//
// In order, each step a line in `vxedge check`'s format:
//   gateway  no gateway runs this config on this machine (it would register again at once);
//   mqtt     the broker's retained status is not "online" (a gateway of this site runs
//            elsewhere), unless --force;
//   cluster  the site's own Node (Kubernetes) or lease (etcd) removed (cluster/retire.ts);
//   mqtt     the retained status and health cleared (zero-length retained messages), only
//            once the cluster step succeeded, so that a site still routed stays in sight.
// --dry-run reads everything and changes nothing. --mac names the VTEP MAC of the box being
// retired when it is not this machine's: the box a replacement with a new MAC took over from,
// whose etcd lease keeps the site's subnet from the new one until its TTL. Nothing else is touched: stateDir (the
// site's VTEP MAC, the PCP nonce) stays for a box that is set up again.
import mqtt, { type MqttClient } from 'mqtt';
import { maskUrl } from '../config/formats.js';
import type { Config } from '../config/types.js';
import type { CheckResult } from '../health/document.js';
import { closeClient, connectClient, markedClientId, topics } from '../health/mqtt-options.js';
import type { ConnectIo } from '../health/mqtt-connect.js';
import { clearRetained, readRetained } from '../health/mqtt-retained.js';
import { readStatus, StatusFileError } from '../health/status-file.js';
import { readVtepMac } from '../control/state.js';
import { clusterAnnotations, siteNodeName, etcdAccess } from '../cluster/live.js';
import { subnetKey, subnetsPrefix } from '../cluster/flannel-lease.js';
import { retireLease, retireNode, type RetireOutcome } from '../cluster/retire.js';
import type { NodeApi } from '../cluster/kube-client.js';
import { leaseHex, type EtcdConnect } from '../cluster/etcd-kv.js';
import { systemClock, type Clock } from '../util/clock.js';
import { Logger } from '../util/log.js';
import { beforeStart, sourceName } from './check-cluster.js';
import { connectAsGateway } from './check-mqtt.js';
import { renderCheckLines } from './render.js';

/** Bound on the broker's answers (connect, subscribe, each publish) and on each cluster request. */
export const RETIRE_WAIT_MS = 8_000;

export interface RetireOptions {
  dryRun: boolean;
  force: boolean;
  /**
   * --mac: the VTEP MAC of the box being retired, where the site file's (vxlan.vtepMac,
   * stateDir) is another's or unknown: the box this one replaced. Normalised.
   */
  mac?: string | null;
  clock?: Clock;
  waitMs?: number;
  /** MQTT.js connect (tests: a scripted client). */
  mqttIo?: ConnectIo;
  /** The Kubernetes client for the site's kubeconfig (tests: one for the stand-in). */
  nodeApi?: (cfg: Config, clock: Clock, waitMs: number) => Promise<NodeApi>;
  /** Opens the etcd client (tests: the in-memory etcd). */
  etcdConnect?: EtcdConnect;
}

/** The client id retire connects with: the gateway's, marked, so that it takes no session over. */
export function retireClientId(cfg: Pick<Config, 'site' | 'node'>): string {
  return markedClientId(cfg.site, cfg.node, 'retire');
}

export async function retire(cfg: Config, o: RetireOptions): Promise<CheckResult[]> {
  const clock = o.clock ?? systemClock;
  const waitMs = o.waitMs ?? RETIRE_WAIT_MS;
  const lines: CheckResult[] = [];

  let running;
  try {
    running = await readStatus(cfg.runDir);
  } catch (e) {
    // Unreadable (another user's runDir) is no answer: a gateway may run.
    if (e instanceof StatusFileError) return [{ name: 'gateway', ok: false, detail: `cannot tell whether a gateway runs this config here: ${e.message}; nothing was changed` }];
    throw e;
  }
  if (o.mac) return replacedBox(cfg, o, o.mac, running?.tunnel.vtepMac ?? null, clock, waitMs);
  if (running) {
    lines.push({
      name: 'gateway', ok: false,
      detail: `a gateway runs this config on this machine (pid ${running.pid}): it would register the site again at once; nothing was changed`,
      fix: 'stop it first (systemctl stop vxedge; systemctl disable vxedge keeps it from starting again), then run vxedge retire again',
    });
    return lines;
  }
  lines.push({ name: 'gateway', ok: true, detail: `none runs this config on this machine (no live ${cfg.runDir}/status.json)` });

  let broker: MqttClient | null = null;
  try {
    if (cfg.mqtt.url) {
      const m = await brokerStep(cfg, o, clock, waitMs);
      lines.push(m.line);
      if (m.online) return lines;
      broker = m.client;
    }
    const cluster = await clusterStep(cfg, o, clock, waitMs);
    if (cluster) lines.push(cluster);
    if (broker && (!cluster || cluster.ok)) lines.push(await clearStep(cfg, broker, o.dryRun, clock, waitMs));
    else if (broker) lines.push({ name: 'mqtt', ok: false, detail: "the retained status and health were left on the broker, since the site's cluster entry is still there: the fleet keeps it in sight", fix: 'fix the cluster line, then run vxedge retire again' });
    return lines;
  } finally {
    if (broker) closeClient(broker);
  }
}

/**
 * --mac: the box being retired is one this machine replaced (or another that had the site's
 * subnet): only its cluster entry goes. A gateway of the site may run here, with its own MAC,
 * and the site's MQTT topics are the running gateway's now, so they are left alone.
 */
async function replacedBox(cfg: Config, o: RetireOptions, mac: string, runningMac: string | null, clock: Clock, waitMs: number): Promise<CheckResult[]> {
  if (runningMac?.toLowerCase() === mac) {
    return [{
      name: 'gateway', ok: false,
      detail: `the gateway running this config on this machine has VTEP MAC ${mac}: it is the box --mac names, and would register again at once; nothing was changed`,
      fix: 'stop it first (systemctl stop vxedge), or give --mac the MAC of the box this one replaced',
    }];
  }
  const lines: CheckResult[] = [{
    name: 'gateway', ok: true,
    detail: runningMac ? `the gateway running here has VTEP MAC ${runningMac}, not ${mac}: only the entry of the box with ${mac} is retired` : `no gateway with VTEP MAC ${mac} runs this config on this machine`,
  }];
  const cluster = await clusterStep(cfg, o, clock, waitMs);
  if (cluster) lines.push(cluster);
  if (cfg.mqtt.url) lines.push({ name: 'mqtt', ok: true, detail: `${maskUrl(cfg.mqtt.url)}: left alone with --mac: the site's status and health are its current gateway's` });
  return lines;
}

/**
 * Without the broker the cluster step still runs (its delete is conditional on the entry still
 * being the site's), so a second run, once the broker can be read, finds nothing left to remove
 * there and clears the broker.
 */
const AGAIN = 'run vxedge retire again: what it removed stays removed, and it clears the retained status and health then';

/**
 * Connects as the gateway does and reads the site's retained status: "online" means a gateway
 * of this site runs somewhere, and would register again at once (unless --force).
 */
async function brokerStep(cfg: Config, o: RetireOptions, clock: Clock, waitMs: number): Promise<{ line: CheckResult; online: boolean; client: MqttClient | null }> {
  const url = cfg.mqtt.url!;
  const where = maskUrl(url);
  const io = o.mqttIo ?? { connect: (u, opts) => connectClient(mqtt, u, opts), clock };
  const c = await connectAsGateway({ ...cfg.mqtt, url }, 'vxedge retire', retireClientId(cfg), io, waitMs);
  if (c.error !== undefined) {
    return { line: { name: 'mqtt', ok: false, detail: `${where}: ${c.error} (the retained status and health stay on the broker)`, fix: `once the broker answers, ${AGAIN}` }, online: false, client: null };
  }
  const t = topics(cfg.mqtt.topicPrefix, cfg.site, cfg.node);
  let status: string | null;
  try {
    status = (await readRetained(c.client, t.status, clock, waitMs))?.toString('utf8') ?? null;
  } catch (e) {
    closeClient(c.client);
    return { line: { name: 'mqtt', ok: false, detail: `${where}: could not read ${t.status}: ${(e as Error).message}; the retained status and health stay on the broker`, fix: `let these credentials read ${t.status} (the gateway's own may), or wait until the broker answers; then ${AGAIN}` }, online: false, client: null };
  }
  if (status === 'online' && !o.force) {
    closeClient(c.client);
    return {
      line: {
        name: 'mqtt', ok: false,
        detail: `${where}: ${t.status} says online: a gateway of this site runs somewhere and would register again at once; nothing was changed`,
        fix: 'stop that gateway first (systemctl stop vxedge on it); if it is gone and the broker kept a stale "online", run vxedge retire --force',
      },
      online: true, client: null,
    };
  }
  const said = status === null ? 'no retained status' : `retained status ${JSON.stringify(status.slice(0, 40))}`;
  return { line: { name: 'mqtt', ok: true, detail: `${where}: ${t.status}: ${said}${status === 'online' ? ' (--force)' : ''}` }, online: false, client: c.client };
}

/** Zero-length retained messages on the site's health and status topics: the broker drops what it kept. */
async function clearStep(cfg: Config, client: MqttClient, dryRun: boolean, clock: Clock, waitMs: number): Promise<CheckResult> {
  const where = maskUrl(cfg.mqtt.url!);
  const t = topics(cfg.mqtt.topicPrefix, cfg.site, cfg.node);
  if (dryRun) return { name: 'mqtt', ok: true, detail: `${where}: would clear the retained ${t.status} and ${t.health}` };
  try {
    await clearRetained(client, [t.health, t.status], clock, waitMs);
  } catch (e) {
    return { name: 'mqtt', ok: false, detail: `${where}: ${(e as Error).message}`, fix: 'let these credentials publish to the topic (the gateway\'s own may), then run vxedge retire again' };
  }
  return { name: 'mqtt', ok: true, detail: `${where}: cleared the retained ${t.status} and ${t.health}: vxedge fleet no longer lists ${cfg.site}/${cfg.node}` };
}

/** The site's Node or lease removed; null for a static site. */
async function clusterStep(cfg: Config, o: RetireOptions, clock: Clock, waitMs: number): Promise<CheckResult | null> {
  const where = sourceName(cfg);
  const line = (r: RetireOutcome): CheckResult => ({ name: 'cluster', ok: r.ok, detail: `${where}: ${r.detail}`, ...(r.fix ? { fix: r.fix } : {}) });
  if (cfg.cluster.source === 'kubernetes') {
    const name = siteNodeName(cfg);
    const { chooseKubeconfig } = await import('../cluster/kubeconfig.js');
    const choice = chooseKubeconfig(cfg.cluster.kubernetes.kubeconfig);
    if (!choice && !o.nodeApi) return { name: 'cluster', ok: false, detail: `${where}: the site's Node cannot be reached`, fix: 'set cluster.kubernetes.kubeconfig (or $KUBECONFIG)' };
    let api: NodeApi | null = null;
    try {
      api = o.nodeApi ? await o.nodeApi(cfg, clock, waitMs) : await (await import('../cluster/kube-client.js')).connectNodeApi(choice!, clock, waitMs);
      return line(await retireNode(api, name, cfg.site, o.dryRun, o.mac ?? null, clusterAnnotations(cfg)));
    } catch (e) {
      const { describeKubeError, kubeErrorContext } = await import('../cluster/kube-errors.js');
      const text = api
        ? describeKubeError(e, kubeErrorContext(`${o.dryRun ? 'get' : 'delete'} node ${name}`, api, choice?.describe ?? null, clock))
        : `cannot use ${choice?.describe ?? 'the kubeconfig'}: ${(e as Error).message}`;
      return { name: 'cluster', ok: false, detail: `${where}: ${beforeStart(text)}; the Node stays` };
    } finally {
      api?.abortAll();
    }
  }
  if (cfg.cluster.source === 'etcd') {
    const e = cfg.cluster.etcd;
    const key = subnetKey(e.prefix, cfg.overlay.subnet);
    const { EtcdConnection } = await import('../cluster/etcd-connection.js');
    const conn = new EtcdConnection({
      ...etcdAccess(cfg), prefix: e.prefix, subnetsPrefix: subnetsPrefix(e.prefix), ownKey: key, register: true,
      clock, log: new Logger('error'), connect: o.etcdConnect, callTimeoutMs: waitMs, retry: { initialMs: 0, maxMs: 0 }, random: Math.random,
    });
    try {
      const kv = await conn.client();
      const mac = o.mac ?? (await readVtepMac(cfg.stateDir, cfg.vxlan.vtepMac).catch(() => null))?.mac ?? null;
      const r = await retireLease({
        get: (k) => conn.call(kv.get(k), `read ${k}`),
        deleteIf: (k, rev) => conn.call(kv.deleteIf(k, rev), `delete ${k}`),
        leaseKeys: (id) => conn.call(kv.leaseKeys(id), `read the keys of lease ${leaseHex(id)}`),
        revoke: (id) => conn.call(kv.revoke(id), `revoke lease ${leaseHex(id)}`),
      }, key, mac, o.dryRun, o.mac ? 'the VTEP MAC given with --mac' : undefined);
      return line(r);
    } catch (err) {
      return { name: 'cluster', ok: false, detail: `${where}: ${beforeStart(conn.describe(err))}; the lease stays` };
    } finally {
      await conn.stop();
    }
  }
  return null;
}

export async function runRetire(cfg: Config, o: RetireOptions): Promise<number> {
  if (o.dryRun) process.stdout.write('dry run: nothing is changed\n');
  const lines = await retire(cfg, o);
  process.stdout.write(renderCheckLines(lines));
  return lines.every((r) => r.ok) ? 0 : 1;
}
