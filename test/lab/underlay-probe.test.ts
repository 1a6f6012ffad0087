// The underlay ping that explains why a peer is down (control/underlay-probe.ts), with real
// raw sockets in a namespace of its own: answered, unanswered, and many at once over one
// socket (an ICMP raw socket sees every echo reply of the host, so a socket per ping would
// hand each of N pings all N replies).
//
//   vxup-a: lo 127.0.0.1, up0 192.0.2.1/24 -- up1 (no address: 192.0.2.99 is on-link, but nobody answers)
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from './vxedge.js';
import { addNamespace, deleteNamespaces, nsRun, REPO_ROOT, skipUnlessRoot } from './harness.js';
import type { UnderlayPingResult } from '../../src/control/underlay-probe.js';

const PREFIX = 'vxup';
const NS = `${PREFIX}-a`;
const CHILD = path.join(REPO_ROOT, 'test', 'lab', 'underlay-probe-child.mjs');

interface ChildOut {
  results: UnderlayPingResult[];
  mostRawSockets: number;
  openAfter: number;
  rawAfter: number;
}

function ip(...args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

async function pingAll(addrs: string[]): Promise<ChildOut> {
  return JSON.parse(await nsRun(NS, ['node', CHILD, ...addrs], { timeoutMs: 15_000 })) as ChildOut;
}

describe.skipIf(skipUnlessRoot(['ip']))('underlay ping (raw ICMP socket)', () => {
  beforeAll(async () => {
    ensureBuilt();
    deleteNamespaces(PREFIX); // a killed earlier run's
    addNamespace(NS);
    ip('-n', NS, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1');
    ip('-n', NS, 'addr', 'add', '192.0.2.1/24', 'dev', 'up0');
    ip('-n', NS, 'link', 'set', 'up0', 'up');
    ip('-n', NS, 'link', 'set', 'up1', 'up');
  });
  afterAll(() => {
    deleteNamespaces(PREFIX);
  });

  it('an answering host is reachable with an RTT; a silent one is not, without an error', async () => {
    const out = await pingAll(['192.0.2.1', '192.0.2.99']);
    expect(out.results).toHaveLength(2);
    expect(out.results[0]).toMatchObject({ reachable: true, error: null });
    expect(out.results[0]!.rttMs).toBeGreaterThan(0);
    expect(out.results[1]).toEqual({ reachable: false, rttMs: null, error: null });
  });

  it('200 pings at once share one raw socket, each gets its own answer, and the socket closes after', async () => {
    const addrs = Array.from({ length: 200 }, (_, i) => (i % 4 === 3 ? '192.0.2.99' : i % 2 ? '127.0.0.1' : '192.0.2.1'));
    const out = await pingAll(addrs);
    expect(out.results).toHaveLength(200); // one result per ping, in order: an empty or short list must not pass below
    out.results.forEach((r, i) => expect(r.reachable, `ping ${i} to ${addrs[i]}`).toBe(addrs[i] !== '192.0.2.99'));
    expect(out.mostRawSockets).toBe(1);
    expect(out.openAfter).toBe(0);
    expect(out.rawAfter).toBe(0);
  });
});
