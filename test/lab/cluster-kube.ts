// The kube-apiserver stand-in (test/support/kube-apiserver.mjs) as a child process inside a lab
// namespace, for the end-to-end cluster tests: the gateway reaches it through the site NAT like a
// real API server on the internet. The child takes one JSON command a line on stdin and answers
// one JSON line with the same id on stdout; `call` pairs them up, each bounded in time.
//
// Users come from `vxedge rbac` itself (the ClusterRole it prints is what the gateway gets), so a
// gateway that needs more than `vxedge rbac` grants fails here as it would on a real cluster.
import type { ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT, nsSpawn, onLines, waitExit, waitForOutput } from './harness.js';
import { CLI } from './vxedge.js';
import { flannelNode } from '../support/kube-harness.js';
import type { LabEnv } from './harness.js';

const STANDIN = path.join(REPO_ROOT, 'test', 'support', 'kube-apiserver.mjs');

export interface StandInUser {
  name: string;
  token: string;
  rules: { verbs: string[]; resources?: string[]; resourceNames?: string[] }[];
}

/** The rules of the ClusterRole that `vxedge rbac --node-name NAME` prints. */
export function rbacRules(nodeName: string): StandInUser['rules'] {
  const r = spawnSync('node', [CLI, 'rbac', '--node-name', nodeName], { encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`vxedge rbac failed (${r.status}): ${r.stderr}`);
  const role = parseAllDocuments(r.stdout).map((d) => d.toJS() as { kind?: string; rules?: StandInUser['rules'] }).find((d) => d.kind === 'ClusterRole');
  if (!role?.rules?.length) throw new Error(`vxedge rbac printed no ClusterRole rules:\n${r.stdout}`);
  return role.rules;
}

export class KubeStandIn {
  /** What the child printed that was not an answer (its errors), for failure messages. */
  output = '';
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();

  private constructor(
    readonly child: ChildProcess,
    readonly dir: string,
    readonly url: string,
  ) {
    onLines(child.stdout!, (l) => this.line(l));
    child.stderr!.on('data', (b: Buffer) => (this.output += b.toString()));
    child.on('exit', () => {
      for (const [id, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new Error(`kube stand-in exited before answering command ${id}: ${this.output}`));
      }
      this.pending.clear();
    });
  }

  /**
   * Starts the stand-in in `ns` on `address:port` (certificates for that address), with `users`
   * besides its admin. It lives at most `lifetimeS` and ends when stop() closes its stdin.
   */
  static async start(o: { ns: string; address: string; port: number; dir: string; users: StandInUser[]; lifetimeS?: number }): Promise<KubeStandIn> {
    const usersFile = path.join(o.dir, 'users.json');
    writeFileSync(usersFile, JSON.stringify(o.users));
    const child = nsSpawn(o.ns, [
      'timeout', String(o.lifetimeS ?? 600),
      'node', STANDIN, '--listen', `${o.address}:${o.port}`, '--dir', o.dir, '--users', usersFile,
    ]);
    let first = '';
    const grab = (b: Buffer) => (first += b.toString());
    child.stdout!.on('data', grab);
    await waitForOutput(child, 'stdout', /\{"ready":"[^"]+"\}\n/, 30_000);
    child.stdout!.off('data', grab);
    const url = (JSON.parse(first.split('\n')[0]) as { ready: string }).ready;
    return new KubeStandIn(child, o.dir, url);
  }

  /** The kubeconfig the stand-in wrote for `user` (its token, the stand-in's CA). */
  kubeconfig(user: string): string {
    return path.join(this.dir, `kubeconfig-${user.replace(/[^A-Za-z0-9._-]/g, '_')}`);
  }

  call<T = unknown>(cmd: string, ...args: unknown[]): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        return reject(new Error(`kube stand-in is not running: ${this.output}`));
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`kube stand-in did not answer ${cmd} within 10 s`));
      }, 10_000);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.child.stdin!.write(JSON.stringify({ id, cmd, args }) + '\n');
    });
  }

  addNode(node: Record<string, unknown>): Promise<unknown> {
    return this.call('addNode', node);
  }

  /** `patch`: a JSON merge patch of the Node, as another client would apply. */
  modifyNode(name: string, patch: Record<string, unknown>): Promise<unknown> {
    return this.call('modifyNode', name, patch);
  }

  deleteNode(name: string): Promise<unknown> {
    return this.call('deleteNode', name);
  }

  async node(name: string): Promise<NodeObject | undefined> {
    return (await this.call<NodeObject[]>('nodes')).find((n) => n.metadata.name === name);
  }

  /** The log of requests clients made: { method, path, query, user, verb, name, status, servedFrom (lists) }. */
  requests(): Promise<{ method: string; path: string; query: Record<string, string>; user: string | null; verb: string | null; name: string | null; status: number; servedFrom?: 'cache' | 'etcd' }[]> {
    return this.call('requests');
  }

  /** The server stops listening and cuts every connection (an API outage); up() brings it back on the same port. */
  down(): Promise<unknown> {
    return this.call('down');
  }

  up(): Promise<unknown> {
    return this.call('up');
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.stdin!.end();
    await waitExit(this.child, 5_000).catch(() => undefined);
  }

  private line(l: string): void {
    let msg: { id?: number; ok?: boolean; result?: unknown; error?: string };
    try {
      msg = JSON.parse(l);
    } catch {
      this.output += `${l}\n`;
      return;
    }
    const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id!);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new Error(`kube stand-in: ${msg.error}`));
  }
}

export interface NodeObject {
  metadata: { name: string; annotations?: Record<string, string>; labels?: Record<string, string>; resourceVersion?: string };
  spec?: { podCIDR?: string; podCIDRs?: string[]; providerID?: string };
  status?: unknown;
}

/**
 * The lab's AWS node n (1 or 2) as flannel's kube subnet manager leaves it on the Node object;
 * `prefix`: as a flanneld run with --kube-annotation-prefix writes it (completed, "example.com/net-").
 */
export function labNode(env: LabEnv, n: 1 | 2, name = `aws-node-${n}`, prefix?: string): Record<string, unknown> {
  const e = n === 1
    ? { subnet: env.AWS1_SUBNET, publicIp: env.AWS1_PUBLIC_IP, mac: env.AWS1_VTEP_MAC }
    : { subnet: env.AWS2_SUBNET, publicIp: env.AWS2_PUBLIC_IP, mac: env.AWS2_VTEP_MAC };
  return flannelNode(name, { ...e, vni: env.VXLAN_VNI, ...(prefix ? { prefix } : {}) });
}
