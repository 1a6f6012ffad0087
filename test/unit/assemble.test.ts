// Peer rows of the health document, built from the peer table and the keepalive's view
// without a gateway; and one peer's row on its own (what a transition's log line uses, so
// that 500 peers going down do not build 500 whole documents).
import { describe, expect, it } from 'vitest';
import type { PeerHealth } from '../../src/control/keepalive.js';
import { PeerTable } from '../../src/dataplane/peers.js';
import { localFault, peerRow, peerRows, type PeerRowContext } from '../../src/health/assemble.js';
import { ReasonMemo } from '../../src/control/reasons.js';
import { parseCidr } from '../../src/util/ipv4.js';

const peer = (n: number) => ({
  name: `aws-${String(n).padStart(3, '0')}`,
  publicIp: `203.0.113.${n}`,
  port: 8472,
  subnet: parseCidr(`10.244.${n}.0/24`),
  vtepMac: `0a:bb:00:00:${n.toString(16).padStart(2, '0')}:00`,
});

function health(state: PeerHealth['state'], over: Partial<PeerHealth> = {}): PeerHealth {
  return { state, rttMs: null, lossPct: null, pathMtuOk: null, probesSent: 0, lastSeen: 0, answeredBefore: false, heardAt: 0, ...over };
}

function context(states: Record<string, PeerHealth>, over: Partial<PeerRowContext> = {}): PeerRowContext & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    health: (name) => {
      calls.push(name);
      return states[name] ?? health('unknown');
    },
    reachable: () => null,
    keepalivesEnabled: true,
    timeoutMs: 20_000,
    siteSubnet: '10.244.100.0/24',
    nat: { local: '192.0.2.10:8472', public: '198.51.100.2:8472' },
    portMapped: false,
    monoNow: 100_000,
    ...over,
  };
}

describe('peer rows', () => {
  // Inserted out of name order: the document lists peers by name.
  const table = new PeerTable([peer(20), peer(3), peer(7)]);
  const states = {
    'aws-003': health('up', { rttMs: 1.5, lossPct: 0, pathMtuOk: true, lastSeen: Date.UTC(2026, 11, 2), answeredBefore: true, heardAt: 99_000 }),
    'aws-007': health('down', { answeredBefore: true }),
  };

  it('one row per peer, by name, with its endpoint, subnet, state and path-MTU facts', () => {
    const ctx = context(states);
    const { rows, pathMtu } = peerRows(table, ctx);
    expect(rows.map((r) => r.name)).toEqual(['aws-003', 'aws-007', 'aws-020']);
    expect(rows[0]).toMatchObject({ endpoint: '203.0.113.3:8472', subnet: '10.244.3.0/24', state: 'up', rttMs: 1.5, lossPct: 0, lastSeen: '2026-12-02T00:00:00.000Z', reason: null });
    expect(rows[2]).toMatchObject({ state: 'unknown', lastSeen: null, reason: 'waiting for the first keepalive answer' });
    expect(pathMtu).toContainEqual({ name: 'aws-003', state: 'up', pathMtuOk: true });
    // The keepalive is asked once per peer, not once per field.
    expect(ctx.calls.sort()).toEqual(['aws-003', 'aws-007', 'aws-020']);
  });

  it('a down peer behind NAT is told how AWS nodes get in, unless the router maps the port', () => {
    const natted = peerRows(table, context(states)).rows[1]!.reason!;
    expect(natted).toMatch(/^no answer to keepalive probes for 20s \(it answered before\)/);
    expect(natted).toContain('port forward to 192.0.2.10:8472');
    const mapped = peerRows(table, context(states, { portMapped: true })).rows[1]!.reason!;
    expect(mapped).not.toContain('port forward');
  });

  it('with the gateway\'s reason memo the rows are the same, round after round, as facts change and peers leave', () => {
    const t = new PeerTable([peer(20), peer(3), peer(7)]);
    const memo = new ReasonMemo();
    const rounds: [Record<string, PeerHealth>, Partial<PeerRowContext>][] = [
      [states, {}],
      [states, {}],
      [{ ...states, 'aws-020': health('down') }, {}],
      [{ ...states, 'aws-020': health('down') }, { reachable: () => false }],
      [{ ...states, 'aws-020': health('down', { heardAt: 99_000 }) }, { portMapped: true }],
      [{ ...states, 'aws-007': health('up', { answeredBefore: true }) }, { nat: null }],
    ];
    for (const [st, over] of rounds) {
      expect(peerRows(t, context(st, { ...over, reasons: memo })).rows).toEqual(peerRows(t, context(st, over)).rows);
    }
    t.remove('aws-020');
    expect(peerRows(t, context(states, { reasons: memo })).rows).toEqual(peerRows(t, context(states)).rows);
    expect(memo.size).toBe(1); // aws-007 (down); an up peer needs no reason, a removed one is forgotten
  });

  it("one peer's row is the row the whole document has for it", () => {
    for (const over of [{}, { portMapped: true }, { reachable: () => false }]) {
      const { rows } = peerRows(table, context(states, over));
      for (const s of table.slots()) {
        const ctx = context(states, over);
        const row = peerRow(table, s, ctx);
        expect(row).toEqual(rows.find((r) => r.name === row.name));
        expect(ctx.calls).toEqual([row.name]); // that peer only
      }
    }
  });
});

describe("a fault on the gateway's own side in the peers' reasons", () => {
  const up = { name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' };
  const uplink = { name: 'underlay', ok: false, detail: 'eth0 is down (administratively): nothing reaches the peers', fix: 'ip link set eth0 up' };
  const gone = { name: 'device', ok: false, detail: 'flannel.1 was deleted while vxedge runs: nothing is forwarded' };

  it('is the first failing underlay or device check, and none while they pass', () => {
    expect(localFault([up, { ...uplink, ok: true }])).toBeNull();
    expect(localFault([up, { name: 'routes', ok: false, detail: 'missing 10.244.1.0/24' }])).toBeNull();
    expect(localFault([up, uplink, gone])).toBe('eth0 is down (administratively): nothing reaches the peers (see the underlay check)');
    expect(localFault([gone])).toBe('flannel.1 was deleted while vxedge runs: nothing is forwarded (see the device check)');
  });

  it("replaces a down peer's reason and leaves up ones alone", () => {
    const table = new PeerTable([peer(3), peer(7)]);
    const states = { 'aws-003': health('up', { rttMs: 1, lossPct: 0 }), 'aws-007': health('down', { answeredBefore: true }) };
    const { rows } = peerRows(table, context(states, { localFault: localFault([uplink]), reachable: () => false }));
    expect(rows[0].reason).toBeNull();
    expect(rows[1].reason).toBe("no answer to keepalive probes for 20s (it answered before): the fault is on this side, not the node's: eth0 is down (administratively): nothing reaches the peers (see the underlay check)");
  });
});
