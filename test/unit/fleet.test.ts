// `vxedge fleet` without a broker: topics, payload parsing (tables and fast-check: whatever a
// broker hands over never throws), the rules (worst peer, staleness, verdict), rendering, the
// options (flags over a site file's mqtt section), and the whole command against a fake MQTT
// client on a ManualClock (collection window, exit codes, MQTT 5 → 3.1.1, --watch).
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import type { IClientOptions, MqttClient } from 'mqtt';
import {
  FleetRecords, MAX_HEALTH_BYTES, buildRow, cell, fleetExitCode, fleetFilters, formatAge, parseHealth, parseStatus, parseTopic, prefixProblem,
  renderChange, renderTable, rowJson, shownReason, shownStatus, staleness, worstPeer, type GatewayRecord, type HealthInfo, type Now,
  type PeerInfo,
} from '../../src/cli/fleet-view.js';
import { FLEET_HELP, fleetOptions, readerClientOptions, runFleet, type FleetIo, type FleetOptions } from '../../src/cli/fleet.js';
import { settle } from '../support/capture-log.js';
import { ManualClock } from '../support/clock.js';

const T0 = Date.UTC(2026, 10, 24, 12, 0, 0);
const enc = (s: string) => Buffer.from(s, 'utf8');

interface DocOpts {
  site?: string;
  node?: string;
  ts?: number;
  state?: string;
  peers?: Partial<PeerInfo>[];
  checks?: { name: string; ok: boolean; detail: string }[];
  extra?: Record<string, unknown>;
}

/** A health document in the contract's shape (the fields fleet does not read included). */
function doc(o: DocOpts = {}): Record<string, unknown> {
  const peers = (o.peers ?? [{ name: 'aws-1', state: 'up', reason: null }, { name: 'aws-2', state: 'up', reason: null }]).map((p, i) => ({
    name: p.name ?? `aws-${i + 1}`, endpoint: `203.0.113.${10 + i}:8472`, subnet: `10.244.${i + 1}.0/24`, state: p.state ?? 'up',
    rttMs: 1.3, lossPct: 0, lastSeen: new Date(T0).toISOString(), rxPackets: 10, txPackets: 12, rxBytes: 980, txBytes: 1100, reason: p.reason ?? null,
  }));
  return {
    site: o.site ?? 'lab', node: o.node ?? 'edge-1', version: '0.1.0', ts: new Date(o.ts ?? T0).toISOString(), uptimeS: 3600,
    state: o.state ?? 'ok',
    tunnel: { device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:01', localEndpoint: '192.168.50.10:8472', publicEndpoint: '198.51.100.2:8472' },
    peers,
    checks: o.checks ?? [{ name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' }],
    pid: 42, drops: {},
    ...o.extra,
  };
}
const docBytes = (o: DocOpts = {}) => enc(JSON.stringify(doc(o)));

function health(o: DocOpts = {}): HealthInfo {
  const p = parseHealth(docBytes(o));
  if (!p.ok) throw new Error(p.error);
  return p.value;
}

function record(o: { status?: string | null; health?: Uint8Array | null; expiryS?: number | null; receivedAt?: number; site?: string; node?: string } = {}): GatewayRecord {
  return {
    site: o.site ?? 'lab',
    node: o.node ?? 'edge-1',
    status: o.status === null ? null : parseStatus(enc(o.status ?? 'online')),
    health: o.health === null ? null : { parsed: parseHealth(o.health ?? docBytes()), receivedAt: o.receivedAt ?? 1000, expiryS: o.expiryS ?? null },
  };
}

const NOW: Now = { wall: T0 + 5000, mono: 6000 };
const INTERVAL = 30_000;

describe('topics', () => {
  it('subscribes to every site and node under the prefix', () => {
    expect(fleetFilters('vxedge')).toEqual({ status: 'vxedge/+/+/status', health: 'vxedge/+/+/health' });
    expect(fleetFilters('corp/edge')).toEqual({ status: 'corp/edge/+/+/status', health: 'corp/edge/+/+/health' });
  });

  it.each([
    ['vxedge', 'vxedge/lab/edge-1/status', { site: 'lab', node: 'edge-1', kind: 'status' }],
    ['vxedge', 'vxedge/lab/edge-1/health', { site: 'lab', node: 'edge-1', kind: 'health' }],
    ['corp/edge', 'corp/edge/s/n/health', { site: 's', node: 'n', kind: 'health' }],
    ['vxedge', 'vxedge/lab/edge-1/other', null],
    ['vxedge', 'vxedge/lab/status', null],
    ['vxedge', 'vxedge/a/b/c/status', null],
    ['vxedge', 'vxedgeX/lab/edge-1/status', null],
    ['vxedge', 'other/lab/edge-1/status', null],
  ])('parseTopic(%s, %s)', (prefix, topic, want) => {
    expect(parseTopic(prefix, topic)).toEqual(want);
  });

  it.each([
    ['vxedge', null],
    ['corp/vxedge', null],
    ['', 'is empty'],
    ['vx/+', 'wildcard'],
    ['vx/#', 'wildcard'],
    ['/vx', 'empty topic level'],
    ['vx/', 'empty topic level'],
    ['a//b', 'empty topic level'],
  ])('prefixProblem(%j)', (prefix, want) => {
    const p = prefixProblem(prefix);
    if (want === null) expect(p).toBeNull();
    else expect(p).toContain(want);
  });
});

describe('payloads', () => {
  it.each([
    ['online', 'online'],
    ['offline', 'offline'],
  ])('status %s', (text, want) => {
    expect(parseStatus(enc(text))).toEqual({ ok: true, value: want });
  });

  it.each([
    ['Online', 'malformed status: "Online"'],
    ['online\n', 'malformed status: "online\\n"'],
    ['1', 'malformed status: "1"'],
    ['x'.repeat(65), 'malformed status: 65 bytes'],
  ])('status %j is malformed', (text, want) => {
    const p = parseStatus(enc(text));
    expect(p.ok).toBe(false);
    expect(!p.ok && p.error).toContain(want);
  });

  it('status that is not UTF-8 is malformed', () => {
    expect(parseStatus(Buffer.from([0xff, 0xfe]))).toEqual({ ok: false, error: 'malformed status: not UTF-8 text' });
  });

  it('reads the fields a row needs from a contract-shaped document', () => {
    const h = health({ state: 'degraded', peers: [{ name: 'a', state: 'up' }, { name: 'b', state: 'down', reason: 'blocked' }], checks: [
      { name: 'ip_forward', ok: true, detail: 'ok' }, { name: 'mtu', ok: false, detail: '1500 + 50 > 1500' }, { name: 'routes', ok: false, detail: 'x' },
    ] });
    expect(h).toEqual({
      site: 'lab', node: 'edge-1', ts: new Date(T0).toISOString(), tsMs: T0, state: 'degraded',
      peers: [{ name: 'a', state: 'up', reason: null }, { name: 'b', state: 'down', reason: 'blocked' }],
      failingCheck: { name: 'mtu', detail: '1500 + 50 > 1500' }, intervalS: null,
    });
  });

  it('takes intervalS when the document states it, and ignores fields it does not know', () => {
    expect(health({ extra: { intervalS: 5, futureField: { a: 1 } } }).intervalS).toBe(5);
  });

  const broken: [string, unknown, string][] = [
    ['an array', [], 'malformed health: [] is not a JSON object'],
    ['null', null, 'malformed health: null is not a JSON object'],
    ['ts missing', { ...doc(), ts: undefined }, 'ts is missing'],
    ['ts not a time', { ...doc(), ts: 'yesterday' }, 'ts is "yesterday" (expected an ISO 8601 time)'],
    ['ts a number', { ...doc(), ts: 5 }, 'ts is 5'],
    ['state unknown', { ...doc(), state: 'fine' }, 'state is "fine" (expected ok, degraded or down)'],
    ['site missing', { ...doc(), site: undefined }, 'site is missing'],
    ['peers an object', { ...doc(), peers: {} }, 'peers is {} (expected a list)'],
    ['peer not an object', { ...doc(), peers: [3] }, 'peers[0] is 3'],
    ['peer state', doc({ peers: [{}, { state: 'sideways' as never }] }), 'peers[1].state is "sideways" (expected up, down or unknown)'],
    ['peer reason a number', { ...doc(), peers: [{ name: 'a', state: 'down', reason: 7 }] }, 'peers[0].reason is 7'],
    ['peer name missing', { ...doc(), peers: [{ state: 'up' }] }, 'peers[0].name is missing'],
    ['checks a string', { ...doc(), checks: 'all good' }, 'checks is "all good" (expected a list)'],
    ['check ok missing', { ...doc(), checks: [{ name: 'mtu' }] }, 'checks[0].ok is missing'],
    ['intervalS negative', doc({ extra: { intervalS: -5 } }), 'intervalS is -5'],
    ['intervalS a string', doc({ extra: { intervalS: '30s' } }), 'intervalS is "30s"'],
  ];
  it.each(broken)('health with %s is malformed, saying what', (_name, value, want) => {
    const p = parseHealth(enc(JSON.stringify(value)));
    expect(p.ok).toBe(false);
    expect(!p.ok && p.error).toMatch(/^malformed health: /);
    expect(!p.ok && p.error).toContain(want);
  });

  it('health that is not JSON, not UTF-8 or too big is malformed', () => {
    expect(parseHealth(enc('{"site":'))).toMatchObject({ ok: false, error: expect.stringMatching(/^malformed health: not JSON \(/) });
    expect(parseHealth(Buffer.from([0x7b, 0xc3, 0x28, 0x7d]))).toEqual({ ok: false, error: 'malformed health: not UTF-8 text' });
    const big = Buffer.alloc(MAX_HEALTH_BYTES + 1, 0x20);
    expect(parseHealth(big)).toEqual({ ok: false, error: `malformed health: ${MAX_HEALTH_BYTES + 1} bytes (at most ${MAX_HEALTH_BYTES} expected)` });
  });
});

describe('rules', () => {
  const P = (name: string, state: PeerInfo['state'], reason: string | null = null): PeerInfo => ({ name, state, reason });

  it.each([
    ['all up', [P('a', 'up'), P('b', 'up')], null],
    ['no peers', [], null],
    ['down over unknown', [P('a', 'unknown', 'not probed'), P('b', 'down', 'UDP 8472 blocked')], 'b'],
    ['down without a reason still over unknown with one', [P('a', 'unknown', 'waiting'), P('b', 'down')], 'b'],
    ['a down peer that says why over one that does not', [P('a', 'down'), P('b', 'down', 'MTU')], 'b'],
    ['the first of equals', [P('a', 'down', 'x'), P('b', 'down', 'y')], 'a'],
    ['unknown when nothing is down', [P('a', 'up'), P('b', 'unknown')], 'b'],
  ])('worstPeer: %s', (_name, peers, want) => {
    expect(worstPeer(peers)?.name ?? null).toBe(want);
  });

  it('MQTT 5 expiry: current until the expiry the broker had left runs out, whatever ts says', () => {
    const h = health({ ts: T0 - 3_600_000 }); // a gateway clock an hour behind
    const rec = { receivedAt: 1000, expiryS: 90 };
    expect(staleness(h, rec, { wall: T0, mono: 1000 + 89_999 }, INTERVAL)).toEqual({ stale: false, why: null });
    const s = staleness(h, rec, { wall: T0, mono: 1000 + 90_000 }, INTERVAL);
    expect(s.stale).toBe(true);
    expect(s.why).toContain('MQTT message expiry');
  });

  it('intervalS in the document: stale after 3 × intervalS', () => {
    const h = health({ ts: T0, extra: { intervalS: 5 } });
    const rec = { receivedAt: 0, expiryS: null };
    expect(staleness(h, rec, { wall: T0 + 15_000, mono: 0 }, INTERVAL).stale).toBe(false);
    const s = staleness(h, rec, { wall: T0 + 15_001, mono: 0 }, INTERVAL);
    expect(s).toEqual({ stale: true, why: 'last health 15s old, over 3 × 5s (its intervalS)' });
  });

  it('neither: stale after 3 × the assumed interval', () => {
    const h = health({ ts: T0 });
    const rec = { receivedAt: 0, expiryS: null };
    expect(staleness(h, rec, { wall: T0 + 90_000, mono: 0 }, INTERVAL).stale).toBe(false);
    expect(staleness(h, rec, { wall: T0 + 90_001, mono: 0 }, INTERVAL)).toEqual({
      stale: true, why: 'last health 1m old, over 3 × 30s (the assumed interval)',
    });
    expect(staleness(h, rec, { wall: T0 + 20_001, mono: 0 }, 5000).stale).toBe(true);
  });

  it('an online gateway with every peer up and current health is ok', () => {
    const r = buildRow(record(), NOW, INTERVAL);
    expect(r).toEqual({
      site: 'lab', node: 'edge-1', status: 'online', state: 'ok', peersUp: 2, peersTotal: 2, worstPeer: null, reason: null,
      ts: new Date(T0).toISOString(), ageMs: 5000, stale: false, staleWhy: null, error: null, ok: true,
    });
    expect(shownStatus(r)).toBe('online');
  });

  const notOk: [string, GatewayRecord, Partial<ReturnType<typeof buildRow>>, string, string][] = [
    ['offline', record({ status: 'offline' }), { status: 'offline', state: 'ok' }, 'offline', ''],
    ['degraded', record({ health: docBytes({ state: 'degraded', peers: [{ name: 'aws-1' }, { name: 'aws-2', state: 'down', reason: 'UDP 8472 blocked' }] }) }),
      { state: 'degraded', peersUp: 1, peersTotal: 2, worstPeer: 'aws-2', reason: 'UDP 8472 blocked' }, 'online', 'aws-2: UDP 8472 blocked'],
    ['down without reasons', record({ health: docBytes({ state: 'down', peers: [{ state: 'unknown' }, { state: 'down' }] }) }),
      { peersUp: 0, worstPeer: 'aws-2', reason: 'down (no reason given)' }, 'online', 'aws-2: down (no reason given)'],
    ['degraded by a check', record({ health: docBytes({ state: 'degraded', checks: [{ name: 'mtu', ok: false, detail: 'too big' }] }) }),
      { worstPeer: null, reason: 'check mtu fails: too big' }, 'online', 'check mtu fails: too big'],
    ['stale', record({ health: docBytes({ ts: T0 - 100_000 }) }), { stale: true, status: 'online' }, 'stale', 'last health 1m old, over 3 × 30s (the assumed interval)'],
    ['online without health', record({ health: null }), { stale: true, state: null, ts: null },
      'stale', 'no health document (expired on the broker, not published yet, or over 1 MiB, which the broker does not send this reader)'],
    ['no status', record({ status: null }), { status: null, error: 'no status message' }, '-', 'no status message'],
    ['malformed status', record({ status: 'up' }), { status: null }, 'malformed', 'malformed status: "up" (expected "online" or "offline")'],
    ['malformed health', record({ health: enc('{oops') }), { stale: false, state: null }, 'online', 'malformed health: not JSON'],
    ['health of another gateway', record({ health: docBytes({ node: 'edge-2' }) }), { state: 'ok' }, 'online',
      'malformed health: it names "lab/edge-2" but is published under "lab/edge-1"'],
  ];
  it.each(notOk)('%s: not ok, shown with why', (_name, rec, fields, status, reason) => {
    const r = buildRow(rec, NOW, INTERVAL);
    expect(r).toMatchObject({ ...fields, ok: false });
    expect(shownStatus(r)).toBe(status);
    expect(shownReason(r)).toContain(reason);
    expect(fleetExitCode([buildRow(record(), NOW, INTERVAL), r])).toBe(1);
  });

  it('a gateway clock ahead of ours shows age 0, not a negative one', () => {
    expect(buildRow(record({ health: docBytes({ ts: T0 + 60_000 }) }), NOW, INTERVAL).ageMs).toBe(0);
  });

  it('exit code: 0 only when gateways were found and every one is ok', () => {
    const ok = buildRow(record(), NOW, INTERVAL);
    expect(fleetExitCode([])).toBe(1);
    expect(fleetExitCode([ok])).toBe(0);
    expect(fleetExitCode([ok, { ...ok, node: 'edge-2' }])).toBe(0);
  });
});

describe('FleetRecords', () => {
  const meta = { receivedAt: 1000, expiryS: null };

  it('keeps one record per gateway, ordered by site then node, and ignores other topics', () => {
    const f = new FleetRecords('vxedge');
    expect(f.apply('vxedge/b/n1/status', enc('online'), meta)).toBe('b/n1');
    expect(f.apply('vxedge/a/n2/status', enc('online'), meta)).toBe('a/n2');
    expect(f.apply('vxedge/a/n1/health', docBytes({ site: 'a', node: 'n1' }), meta)).toBe('a/n1');
    expect(f.apply('vxedge/a/n1/status', enc('offline'), meta)).toBe('a/n1');
    expect(f.apply('vxedge/a/n1/extra', enc('x'), meta)).toBeNull();
    expect(f.apply('elsewhere/a/n1/status', enc('online'), meta)).toBeNull();
    expect(f.rows(NOW, INTERVAL).map((r) => [r.site, r.node, r.status])).toEqual([['a', 'n1', 'offline'], ['a', 'n2', 'online'], ['b', 'n1', 'online']]);
  });

  it('an empty payload deletes that retained message; the gateway goes when both are gone', () => {
    const f = new FleetRecords('vxedge');
    f.apply('vxedge/a/n1/status', enc('online'), meta);
    f.apply('vxedge/a/n1/health', docBytes({ site: 'a', node: 'n1' }), meta);
    expect(f.apply('vxedge/a/n1/health', new Uint8Array(0), meta)).toBe('a/n1');
    expect(f.row('a/n1', NOW, INTERVAL)).toMatchObject({ status: 'online', stale: true, state: null });
    expect(f.apply('vxedge/a/n1/status', new Uint8Array(0), meta)).toBe('a/n1');
    expect(f.size).toBe(0);
    expect(f.row('a/n1', NOW, INTERVAL)).toBeNull();
    expect(f.apply('vxedge/zz/n9/status', new Uint8Array(0), meta)).toBeNull();
  });

  it('is bounded: gateways beyond the limit are counted, not kept', () => {
    const f = new FleetRecords('p', 3);
    for (let i = 0; i < 5; i++) f.apply(`p/s/n${i}/status`, enc('online'), meta);
    expect(f.size).toBe(3);
    expect(f.ignored).toBe(2);
    f.apply('p/s/n0/status', enc('offline'), meta); // known gateways still update
    expect(f.row('s/n0', NOW, INTERVAL)!.status).toBe('offline');
  });
});

describe('rendering', () => {
  it.each([
    [0, '0s'], [999, '0s'], [12_000, '12s'], [59_999, '59s'], [60_000, '1m'], [3 * 60_000 + 5000, '3m'],
    [3_599_999, '59m'], [3_600_000, '1h'], [47 * 3_600_000, '47h'], [48 * 3_600_000, '2d'], [-5000, '0s'],
  ])('formatAge(%d) = %s', (ms, want) => {
    expect(formatAge(ms)).toBe(want);
  });

  it('a table with aligned columns, the reason last, and a summary', () => {
    const rows = [
      buildRow(record({ site: 'north', node: 'gw-1', health: docBytes({ site: 'north', node: 'gw-1', ts: T0 - 7000 }) }), NOW, INTERVAL),
      buildRow(record({ site: 'north', node: 'gateway-22', status: 'offline', health: docBytes({ site: 'north', node: 'gateway-22', ts: T0 - 170_000 }) }), NOW, INTERVAL),
      buildRow(record({ site: 's', node: 'n', health: docBytes({ site: 's', node: 'n', state: 'degraded', peers: [{ name: 'aws-1' }, { name: 'aws-2', state: 'down', reason: 'UDP 8472 blocked' }] }) }), NOW, INTERVAL),
    ];
    const lines = renderTable(rows).split('\n');
    expect(lines).toEqual([
      'SITE   NODE        STATUS   STATE     PEERS  AGE  REASON',
      'north  gw-1        online   ok        2/2    12s',
      'north  gateway-22  offline  ok        2/2    2m',
      's      n           online   degraded  1/2    5s   aws-2: UDP 8472 blocked',
      '',
      '3 gateways: 1 ok, 2 not ok',
      '',
    ]);
  });

  it('gateways offline for a day or more: a line that says how a retired one is cleared', () => {
    const off = (node: string, ageMs: number) => buildRow(record({ site: 'north', node, status: 'offline', health: docBytes({ site: 'north', node, ts: T0 - ageMs }) }), NOW, INTERVAL);
    const day = 24 * 3_600_000;
    expect(renderTable([off('a', day - 10_000)])).not.toContain('for a day or more');
    const lines = renderTable([off('a', day), off('b', 3 * day), off('c', 30 * day), off('d', 40 * day), off('e', 60_000)]).split('\n');
    expect(lines.at(-2)).toBe('4 offline for a day or more (north/a, north/b, north/c, …): one retired for good can be cleared here with vxedge fleet --forget north/a, ' +
      'or taken out of the cluster too with vxedge retire -c its site file');
  });

  it('text from the broker cannot drive the terminal, and is cut', () => {
    expect(cell('a\u001b[2Jb\nc\td\u0007', 100)).toBe('a?[2Jb c d?');
    expect(cell('x'.repeat(10), 5)).toBe('xxxx…');
    const r = buildRow(record({ site: 'evil\u001b]0;x\u0007', health: null }), NOW, INTERVAL);
    expect(renderTable([r])).not.toMatch(/[\u0000-\u0009\u000b-\u001f]/);
  });

  it('--watch lines: when, then the row', () => {
    const r = buildRow(record({ status: 'offline' }), NOW, INTERVAL);
    expect(renderChange(r, T0 + 5_400)).toBe('2026-11-24T12:00:05Z  lab  edge-1  offline  ok  2/2  5s\n');
  });

  it('--json: the contract fields, then the extensions', () => {
    const r = buildRow(record({ health: docBytes({ state: 'degraded', peers: [{ name: 'aws-1', state: 'unknown' }] }) }), NOW, INTERVAL);
    expect(rowJson(r)).toEqual({
      site: 'lab', node: 'edge-1', status: 'online', state: 'degraded', peersUp: 0, peersTotal: 1, reason: 'not probed yet', ts: new Date(T0).toISOString(),
      ok: false, stale: false, ageS: 5, worstPeer: 'aws-1', error: null,
    });
  });
});

describe('untrusted input never throws (fast-check)', () => {
  const now = fc.record({ wall: fc.integer({ min: 0, max: 4e12 }), mono: fc.integer({ min: 0, max: 1e12 }) });
  const peerish = fc.record({ name: fc.anything(), state: fc.constantFrom('up', 'down', 'unknown', 'x', 1, null), reason: fc.anything() }, { requiredKeys: [] });
  const docish = fc.record({
    site: fc.oneof(fc.constant('lab'), fc.anything()), node: fc.oneof(fc.constant('edge-1'), fc.anything()),
    ts: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string(), fc.anything()),
    state: fc.oneof(fc.constantFrom('ok', 'degraded', 'down'), fc.anything()),
    peers: fc.oneof(fc.array(peerish, { maxLength: 5 }), fc.anything()),
    checks: fc.oneof(fc.array(fc.record({ name: fc.anything(), ok: fc.anything(), detail: fc.anything() }, { requiredKeys: [] }), { maxLength: 3 }), fc.anything()),
    intervalS: fc.anything(),
  }, { requiredKeys: [] });
  const payload = fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.string().map(enc), docish.map((d) => enc(JSON.stringify(d) ?? '')), fc.json().map(enc));

  it('parseStatus, parseHealth: a value or an error that says malformed', () => {
    fc.assert(fc.property(payload, (p) => {
      for (const r of [parseStatus(p), parseHealth(p)]) {
        if (!r.ok) expect(r.error).toMatch(/^malformed (status|health): /);
      }
    }), { numRuns: 2000 });
  });

  it('records, rows, the table and JSON from any sequence of messages', () => {
    const topic = fc.oneof(
      fc.tuple(fc.constantFrom('s', '', 'x\u001b'), fc.constantFrom('n', 'm'), fc.constantFrom('status', 'health')).map(([s, n, k]) => `vx/${s}/${n}/${k}`),
      fc.string(),
    );
    const msg = fc.record({ topic, payload: fc.oneof(payload, fc.constant(new Uint8Array(0))), expiryS: fc.option(fc.integer({ min: 0, max: 1e6 })) });
    fc.assert(fc.property(fc.array(msg, { maxLength: 20 }), now, fc.integer({ min: 1, max: 1e7 }), (msgs, at, interval) => {
      const f = new FleetRecords('vx', 5);
      for (const m of msgs) f.apply(m.topic, m.payload, { receivedAt: at.mono, expiryS: m.expiryS });
      const rows = f.rows(at, interval);
      const text = renderTable(rows);
      expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f]/);
      JSON.stringify(rows.map(rowJson));
      for (const r of rows) {
        expect(r.ok).toBe(r.status === 'online' && r.state === 'ok' && !r.stale && r.error === null);
        renderChange(r, at.wall);
      }
      expect(fleetExitCode(rows)).toBe(rows.length > 0 && rows.every((r) => r.ok) ? 0 : 1);
    }), { numRuns: 500 });
  });
});

// ------------------------------------------------------------------------------------- options

describe('options', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxedge-fleet-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const site = (name: string, mqtt: Record<string, unknown> | null) => {
    const f = path.join(dir, name);
    writeFileSync(f, JSON.stringify({ site: 'lab', node: 'edge-1', overlay: { subnet: '10.244.100.0/24' }, ...(mqtt ? { mqtt } : {}) }));
    return f;
  };
  const opts = (argv: string[]) => fleetOptions(argv, {}) as FleetOptions;

  it('defaults: prefix vxedge, 2 s collection bound, 5 s timeout, 30 s assumed interval, a random reader client id', () => {
    const o = opts(['--url', 'mqtt://broker.example.com']);
    expect(o).toMatchObject({ prefix: 'vxedge', json: false, watch: false, waitMs: 2000, timeoutMs: 5000, intervalMs: 30_000 });
    expect(o.broker).toEqual({ scheme: 'mqtt', host: 'broker.example.com', port: 1883, secure: false });
    expect(o.clientId).toMatch(/^vxedge-fleet-[0-9a-f]{8}$/);
    expect(opts(['--url', 'mqtt://b']).clientId).not.toBe(o.clientId);
  });

  it('-c takes the mqtt section (broker, TLS, credentials, prefix, interval); flags override single keys', () => {
    const f = site('site.json', {
      url: 'mqtts://broker.example.com:8883', topicPrefix: 'corp', interval: '10s', ca: '/etc/ca.pem', cert: '/etc/c.pem', key: '/etc/c.key',
      username: 'edge-1', password: 'secret',
    });
    const o = opts(['-c', f]);
    expect(o.mqtt).toMatchObject({ url: 'mqtts://broker.example.com:8883', ca: '/etc/ca.pem', cert: '/etc/c.pem', key: '/etc/c.key', username: 'edge-1', password: 'secret' });
    expect(o).toMatchObject({ prefix: 'corp', intervalMs: 10_000 });
    const p = opts(['-c', f, '--prefix', 'other', '--url', 'mqtts://b2:8884', '--username', 'monitor', '--password-file', '/etc/pw', '--ca', '/x/ca.pem', '--interval', '1m']);
    expect(p.mqtt).toMatchObject({ url: 'mqtts://b2:8884', username: 'monitor', password: null, passwordFile: '/etc/pw', ca: '/x/ca.pem', cert: '/etc/c.pem' });
    expect(p).toMatchObject({ prefix: 'other', intervalMs: 60_000 });
    expect(p.broker).toMatchObject({ host: 'b2', port: 8884, secure: true });
  });

  it("--proxy is mqtt.proxy (the site file's, overridden); a URL it cannot use is a usage error, its password not echoed", () => {
    expect(opts(['--url', 'mqtts://b:443', '--proxy', 'http://u:pw@proxy.example:3128']).mqtt.proxy).toBe('http://u:pw@proxy.example:3128');
    expect(opts(['--url', 'mqtt://b']).mqtt.proxy).toBeNull();
    const f = site('proxied.json', { url: 'mqtts://b:443', proxy: 'http://proxy.example:3128' });
    expect(opts(['-c', f]).mqtt.proxy).toBe('http://proxy.example:3128');
    expect(opts(['-c', f, '--proxy', 'http://other.example:8080']).mqtt.proxy).toBe('http://other.example:8080');
    expect(() => opts(['--url', 'mqtt://b', '--proxy', 'u:secret@proxy.example:3128'])).toThrow('--proxy "u:***@proxy.example:3128" has no scheme; write "http://u:***@proxy.example:3128"');
    expect(opts(['--url', 'mqtt://b', '--proxy', 'socks5h://u:pw@p:1080']).mqtt.proxy).toBe('socks5h://u:pw@p:1080');
    expect(opts(['--url', 'mqtt://b', '--proxy', 'https://p:8443']).mqtt.proxy).toBe('https://p:8443');
    expect(() => opts(['--url', 'mqtt://b', '--proxy', 'ftp://p:8443'])).toThrow(/^--proxy ftp:\/\/p:8443: the broker is reached through an http:\/\/ or https:\/\/ proxy/);
  });

  it('--forget takes SITE/NODE, more than once; anything else, or with --watch, is a usage error naming the fix', () => {
    expect(opts(['--url', 'mqtt://b']).forget).toEqual([]);
    expect(opts(['--url', 'mqtt://b', '--forget', 'lab/edge-1', '--forget', 'north/gw-2']).forget).toEqual(['lab/edge-1', 'north/gw-2']);
    for (const bad of ['lab', 'lab/edge-1/status', 'lab/+', '#/x', '/edge-1', 'lab/']) {
      expect(() => opts(['--url', 'mqtt://b', '--forget', bad]), bad).toThrow(/^--forget "?.*"?: give one gateway as SITE\/NODE, as vxedge fleet lists it \(e\.g\. --forget lab\/edge-1\)$/);
    }
    expect(() => opts(['--url', 'mqtt://b', '--forget', 'lab/e1', '--watch'])).toThrow('--forget and --watch do not go together');
  });

  it('the VXEDGE_MQTT_* environment applies to -c, as for vxedge run', () => {
    const o = fleetOptions(['-c', site('env.json', { url: 'mqtt://a' })], { VXEDGE_MQTT_URL: 'mqtt://from-env:1999' }) as FleetOptions;
    expect(o.broker).toMatchObject({ host: 'from-env', port: 1999 });
  });

  it('the reader has no last will, bounds the packets the broker may send, and keeps TLS and credentials', () => {
    const o = opts(['--url', 'mqtts://broker.example.com:8883', '--username', 'monitor', '--client-id', 'ops-1']);
    const secrets = { password: 'pw', ca: Buffer.from('CA'), cert: Buffer.from('CERT'), key: Buffer.from('KEY') };
    const c5 = readerClientOptions(o, secrets, 5);
    expect(c5.will).toBeUndefined();
    expect(c5).toMatchObject({ clientId: 'ops-1', protocolVersion: 5, username: 'monitor', password: 'pw', servername: 'broker.example.com', rejectUnauthorized: true, connectTimeout: 5000, reconnectPeriod: 0 });
    expect(c5.properties?.maximumPacketSize).toBeGreaterThan(MAX_HEALTH_BYTES);
    expect([c5.ca, c5.cert, c5.key].map(String)).toEqual(['CA', 'CERT', 'KEY']);
    const c4 = readerClientOptions(o, secrets, 4);
    expect(c4.will).toBeUndefined();
    expect(c4.protocolVersion).toBe(4);
    expect(c4.properties).toBeUndefined();
  });
});

// ----------------------------------------------------------------- the command, with a fake client

class FakeClient extends EventEmitter {
  connected = false;
  subscribed: string[] = [];
  ended = false;
  stream = { destroy: () => {} };
  private subCb: ((err: Error | null, granted: unknown) => void) | null = null;
  constructor(
    readonly url: string,
    readonly opts: IClientOptions,
  ) {
    super();
  }
  subscribe(topics: string[], _o: unknown, cb: (err: Error | null, granted: unknown) => void): void {
    this.subscribed = topics;
    this.subCb = cb;
  }
  end(_force?: boolean, _o?: unknown, cb?: () => void): void {
    const was = this.connected;
    this.connected = false;
    this.ended = true;
    cb?.();
    if (was) this.emit('close');
  }
  // What a broker would do:
  accept(): void {
    this.connected = true;
    this.emit('connect', {});
  }
  refuse(err: Error & { code?: string | number }): void {
    this.emit('error', err);
    this.emit('close');
  }
  suback(err: Error | null = null): void {
    this.subCb!(err, []);
  }
  send(topic: string, payload: string | Uint8Array, expiryS?: number): void {
    const b = typeof payload === 'string' ? enc(payload) : Buffer.from(payload);
    this.emit('message', topic, b, { properties: expiryS === undefined ? {} : { messageExpiryInterval: expiryS } });
  }
  drop(): void {
    this.connected = false;
    this.emit('close');
  }
}

function command(argv: string[], files: Record<string, string> = {}) {
  const clock = new ManualClock({ wall: T0 + 5000 });
  const clients: FakeClient[] = [];
  let out = '';
  let err = '';
  let interrupt: () => void = () => {};
  const io: Partial<FleetIo> = {
    stdout: (s) => void (out += s),
    stderr: (s) => void (err += s),
    clock,
    env: {},
    random: () => 0.5,
    connect: (url, opts) => {
      const c = new FakeClient(url, opts);
      clients.push(c);
      return c as unknown as MqttClient;
    },
    readFile: async (p) => {
      if (p in files) return Buffer.from(files[p]);
      throw Object.assign(new Error('nope'), { code: 'ENOENT' });
    },
    interrupted: () => ({ promise: new Promise<void>((r) => (interrupt = r)), dispose: () => {} }),
  };
  let code: number | null = null;
  const done = runFleet(argv, io).then((c) => (code = c));
  return {
    clock, clients, done, interrupt: () => interrupt(),
    get code() { return code; }, get out() { return out; }, get err() { return err; },
    get last() { return clients[clients.length - 1]; },
  };
}

const URL_ = ['--url', 'mqtt://broker.test:1883'];

describe('vxedge fleet (fake broker)', () => {
  it('--help', async () => {
    const c = command(['--help']);
    expect(await c.done).toBe(0);
    expect(c.out).toBe(FLEET_HELP);
  });

  it.each([
    [[], 'no broker: give --url URL'],
    [['--url'], "Option '--url <value>' argument missing"],
    [['--url', 'mqtt://b', '--bogus'], "Unknown option '--bogus'"],
    [['--url', 'mqtt://b', 'extra'], "Unexpected argument 'extra'"],
    [['--url', 'http://b'], '--url has scheme "http"'],
    [['--url', 'not a url'], '--url is not a URL'],
    [['--url', 'mqtt://b', '--prefix', 'vx/#'], '--prefix "vx/#" contains an MQTT wildcard'],
    [['--url', 'mqtt://b', '--wait', 'soon'], '--wait: "soon" is not a duration'],
    [['--url', 'mqtt://b', '--timeout', '0'], '--timeout "0" is too short'],
    [['--url', 'mqtts://b', '--cert', '/c.pem'], '--cert needs --key'],
    [['-c', '/nonexistent/site.yaml'], '/nonexistent/site.yaml'],
  ])('bad arguments %j: exit 2, says what', async (argv, want) => {
    const c = command(argv);
    expect(await c.done).toBe(2);
    expect(c.err).toContain(want);
    expect(c.err).not.toMatch(/\n\s+at /);
    expect(c.clients).toHaveLength(0);
  });

  it('collects until the broker has been quiet for 300 ms after the SUBACK, prints, exits 0', async () => {
    const c = command(URL_);
    await settle();
    c.last.accept();
    await settle();
    expect(c.last.subscribed).toEqual(['vxedge/+/+/status', 'vxedge/+/+/health']);
    expect(c.last.opts).toMatchObject({ protocolVersion: 5, clean: true });
    c.last.suback();
    c.last.send('vxedge/lab/edge-1/status', 'online');
    c.clock.advance(200);
    c.last.send('vxedge/lab/edge-1/health', docBytes(), 90);
    c.clock.advance(299);
    await settle();
    expect(c.code).toBeNull();
    c.clock.advance(1);
    expect(await c.done).toBe(0);
    expect(c.out).toContain('lab   edge-1  online  ok     2/2    5s');
    expect(c.out).toContain('1 gateway: 1 ok, 0 not ok');
    expect(c.last.ended).toBe(true);
  });

  it('a steady stream of messages is cut at --wait', async () => {
    const c = command([...URL_, '--wait', '1s', '--json']);
    await settle();
    c.last.accept();
    await settle();
    c.last.suback();
    for (let i = 0; i < 9; i++) {
      c.last.send(`vxedge/s/n${i}/status`, 'offline');
      c.clock.advance(100);
    }
    await settle();
    expect(c.code).toBeNull();
    c.clock.advance(100);
    expect(await c.done).toBe(1);
    const rows = JSON.parse(c.out) as { node: string; status: string }[];
    expect(rows.map((r) => r.node)).toEqual(['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8']);
  });

  it('none found: says so, exit 1', async () => {
    const c = command([...URL_, '--prefix', 'empty']);
    await settle();
    c.last.accept();
    await settle();
    c.last.suback();
    c.clock.advance(300);
    expect(await c.done).toBe(1);
    expect(c.out).toBe('');
    expect(c.err).toContain('no gateway found: the broker at broker.test:1883 holds no retained empty/+/+/status or empty/+/+/health');
  });

  it('broker unreachable: exit 2 with the cause and what to check', async () => {
    const c = command(URL_);
    await settle();
    c.last.refuse(Object.assign(new Error('connect ECONNREFUSED 192.0.2.1:1883'), { code: 'ECONNREFUSED' }));
    expect(await c.done).toBe(2);
    expect(c.err).toBe('vxedge fleet: connection failed: connect ECONNREFUSED 192.0.2.1:1883; is the broker up and reachable at broker.test:1883?\n');
  });

  it('a broker that never answers: exit 2 after the timeout', async () => {
    const c = command([...URL_, '--timeout', '2s']);
    await settle();
    c.clock.advance(2999);
    await settle();
    expect(c.code).toBeNull();
    c.clock.advance(1);
    expect(await c.done).toBe(2);
    expect(c.err).toContain('no answer within 2s; is the broker up and reachable at broker.test:1883?');
  });

  it('a broker without MQTT 5 gets 3.1.1', async () => {
    const c = command(URL_);
    await settle();
    c.last.refuse(Object.assign(new Error('Connection refused: Unsupported protocol version'), { code: 132 }));
    await settle();
    expect(c.clients).toHaveLength(2);
    expect(c.last.opts.protocolVersion).toBe(4);
    c.last.accept();
    await settle();
    c.last.suback();
    c.last.send('vxedge/lab/edge-1/status', 'online');
    c.last.send('vxedge/lab/edge-1/health', docBytes());
    c.clock.advance(300);
    expect(await c.done).toBe(0);
  });

  it('bad credentials and a refused subscription: exit 2', async () => {
    const a = command(URL_);
    await settle();
    a.last.refuse(Object.assign(new Error('Connection refused: Not authorized'), { code: 135 }));
    expect(await a.done).toBe(2);
    expect(a.err).toContain('check mqtt.username and mqtt.password/passwordFile');

    const b = command(URL_);
    await settle();
    b.last.accept();
    await settle();
    b.last.suback(Object.assign(new Error('Subscribe error: Not authorized'), { code: 135 }));
    expect(await b.done).toBe(2);
    expect(b.err).toContain('refused the subscription to vxedge/+/+/status and vxedge/+/+/health (Subscribe error: Not authorized); this user needs read access to vxedge/#');
  });

  it('an unreadable password file: exit 2 naming it', async () => {
    const c = command([...URL_, '--username', 'u', '--password-file', '/etc/vxedge/pw']);
    expect(await c.done).toBe(2);
    expect(c.err).toBe('vxedge fleet: cannot read mqtt.passwordFile /etc/vxedge/pw: no such file\n');
  });

  it('a proxy variable that cannot be used (wss://): exit 2 naming it, no stack trace', async () => {
    vi.stubEnv('HTTPS_PROXY', 'socks5://p:1080');
    try {
      const c = command(['--url', 'wss://broker.test/mqtt']);
      expect(await c.done).toBe(2);
      expect(c.err).toBe('vxedge fleet: HTTPS_PROXY=socks5://p:1080: the MQTT broker over WebSocket is reached through an http:// or https:// proxy only (HTTP CONNECT); set it to http://HOST:PORT, or unset it\n');
      expect(c.clients).toHaveLength(0);
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('the password file is read and sent', async () => {
    const c = command([...URL_, '--username', 'u', '--password-file', '/pw'], { '/pw': 's3cret\n' });
    await settle();
    expect(c.last.opts).toMatchObject({ username: 'u', password: 's3cret' });
  });

  it('--watch: a line per change (staleness included), until interrupted; the exit code is the last state', async () => {
    const c = command([...URL_, '--watch', '--interval', '5s']);
    await settle();
    c.last.accept();
    await settle();
    c.last.suback();
    c.last.send('vxedge/lab/edge-1/status', 'online');
    c.last.send('vxedge/lab/edge-1/health', docBytes({ ts: T0 + 5000 }));
    c.clock.advance(300);
    await settle();
    expect(c.out).toContain('lab   edge-1  online  ok     2/2    0s');
    const table = c.out;
    // The same state again (a periodic republish) is no change.
    c.last.send('vxedge/lab/edge-1/health', docBytes({ ts: T0 + 6000 }));
    c.clock.advance(2000);
    expect(c.out).toBe(table);
    c.last.send('vxedge/lab/edge-1/health', docBytes({ ts: T0 + 7500, state: 'degraded', peers: [{ name: 'aws-1' }, { name: 'aws-2', state: 'down', reason: 'blocked' }] }));
    expect(c.out.slice(table.length)).toBe('2026-11-24T12:00:07Z  lab  edge-1  online  degraded  1/2  0s  aws-2: blocked\n');
    // No health for 3 × 5 s: stale, without any message (seen at the next 1 s tick).
    const before = c.out.length;
    c.clock.advance(15_000); // 12:00:22.3, the document 14.8 s old
    expect(c.out.length).toBe(before);
    c.clock.advance(1000);
    expect(c.out.slice(before)).toMatch(/^2026-11-24T12:00:23Z {2}lab {2}edge-1 {2}stale {2}degraded {2}1\/2 {2}15s {2}aws-2: blocked\n$/);
    c.interrupt();
    expect(await c.done).toBe(1);
  });

  it('--watch --json: one object a line; a lost connection is retried with backoff', async () => {
    const c = command([...URL_, '--watch', '--json']);
    await settle();
    c.last.accept();
    await settle();
    c.last.suback();
    c.last.send('vxedge/lab/edge-1/status', 'online');
    c.last.send('vxedge/lab/edge-1/health', docBytes({ ts: T0 + 5000 }), 90);
    c.clock.advance(300);
    await settle();
    const first = c.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ site: 'lab', node: 'edge-1', status: 'online', ok: true, at: '2026-11-24T12:00:05.300Z' });

    c.last.drop();
    expect(c.err).toContain('connection to broker.test:1883 lost; reconnecting');
    c.clock.advance(999); // backoff 1 s (random 0.5: no jitter)
    await settle();
    expect(c.clients).toHaveLength(1);
    c.clock.advance(1);
    await settle();
    expect(c.clients).toHaveLength(2);
    c.last.accept();
    await settle();
    c.last.suback();
    c.last.send('vxedge/lab/edge-1/status', 'offline');
    c.clock.advance(300);
    await settle();
    expect(c.err).toContain('reconnected to the broker at broker.test:1883');
    const lines = c.out.trim().split('\n');
    expect(JSON.parse(lines[lines.length - 1])).toMatchObject({ status: 'offline', ok: false });
    c.last.send('vxedge/lab/edge-1/status', 'online');
    c.interrupt();
    expect(await c.done).toBe(0);
  });

  it('--watch ends with 2 when the broker is gone at the end', async () => {
    const c = command([...URL_, '--watch']);
    await settle();
    c.last.accept();
    await settle();
    c.last.suback();
    c.clock.advance(300);
    await settle();
    c.last.drop();
    c.interrupt();
    expect(await c.done).toBe(2);
    expect(c.err).toContain('not connected to the broker at broker.test:1883 at the end');
  });
});
