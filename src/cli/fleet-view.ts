// `vxedge fleet`, the pure half: from what a broker holds retained under
//   {prefix}/{site}/{node}/status   "online" / "offline"
//   {prefix}/{site}/{node}/health   the JSON health document
// to one row per gateway, the verdict (exit code), and the table / JSON shown to people and
// monitoring. No I/O and no clock here: the caller passes `now`, so every rule can be tested
// on fixed times (test/unit/fleet.test.ts).
//
// Everything a broker hands over is untrusted (any client allowed to publish under the prefix
// can write anything there): payloads are size-bounded and decoded defensively, only the few
// fields the row needs are checked, and anything else is shown on that gateway's row as
// "malformed: …" instead of failing the whole command. Fields this version does not know are
// ignored, so that newer gateways' documents keep being read.
//
// Staleness ("is this health still current?"), in order of trust:
//   1. MQTT 5 message expiry: the gateway publishes health with an expiry of 3 × mqtt.interval,
//      and a broker delivers a retained message with the expiry time it has left. That needs no
//      agreement between clocks (edge boxes without an RTC may be far off), and the broker
//      itself drops the document once it runs out, so the gateway then has no health at all.
//   2. `intervalS` in the document (the publishing period, when the gateway states it):
//      stale when `ts` is older than 3 × intervalS.
//   3. The interval the operator says the fleet uses (default 30 s, the config default).
import { formatDuration } from '../util/duration.js';
import { show } from '../util/show.js';
import { isPlainObject } from '../util/plain-object.js';

export type GatewayStatus = 'online' | 'offline';
export type GatewayState = 'ok' | 'degraded' | 'down';
export type PeerState = 'up' | 'down' | 'unknown';

/** The publishing period is multiplied by this to call a health document stale (as the gateway's expiry). */
export const STALE_FACTOR = 3;
/** The gateway's documents are a few KiB; a large cluster's a few tens. Bigger payloads are refused unread. */
export const MAX_HEALTH_BYTES = 1024 * 1024;
const MAX_STATUS_BYTES = 64;
/** Gateways kept at most; beyond that, new ones are counted, not stored (memory stays bounded). */
export const MAX_GATEWAYS = 10_000;

export interface Now {
  /** Wall time, ms since the epoch (ages against the documents' `ts`). */
  wall: number;
  /** Monotonic ms (expiry deadlines, measured from when a message arrived). */
  mono: number;
}

export interface PeerInfo {
  name: string;
  state: PeerState;
  reason: string | null;
}

/** The parts of a health document a fleet row shows. */
export interface HealthInfo {
  site: string;
  node: string;
  ts: string;
  tsMs: number;
  state: GatewayState;
  peers: PeerInfo[];
  /** The first failing check, if any: a gateway can be degraded with every peer up. */
  failingCheck: { name: string; detail: string } | null;
  /** The publishing period in seconds, when the document states it. */
  intervalS: number | null;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

export interface HealthRecord {
  parsed: Parsed<HealthInfo>;
  /** Monotonic ms of arrival. */
  receivedAt: number;
  /** MQTT 5 message expiry the broker had left for it, in seconds; null without one. */
  expiryS: number | null;
}

/** What the broker has retained for one gateway, parsed once on arrival. */
export interface GatewayRecord {
  site: string;
  node: string;
  status: Parsed<GatewayStatus> | null;
  health: HealthRecord | null;
}

export interface FleetRow {
  site: string;
  node: string;
  /** The retained status when well-formed; null when absent or malformed. */
  status: GatewayStatus | null;
  state: GatewayState | null;
  peersUp: number | null;
  peersTotal: number | null;
  /** The worst peer (down before unknown), or null. */
  worstPeer: string | null;
  /** Why the gateway is not ok: the worst peer's reason, else the first failing check. */
  reason: string | null;
  ts: string | null;
  /** now − ts (never negative: a gateway clock ahead of ours shows 0). */
  ageMs: number | null;
  /** The health is missing or older than its limit (see the header). */
  stale: boolean;
  /** Why it is stale, in words. */
  staleWhy: string | null;
  /** Malformed or missing payloads, in words ("malformed health: …"). */
  error: string | null;
  ok: boolean;
}

/**
 * The `--json` shape: the row's fields (the contract's site … ok, then the extensions stale,
 * worstPeer, error; rowJson() writes them in that order), with the age in whole seconds.
 */
export type FleetRowJson = Pick<FleetRow, 'site' | 'node' | 'status' | 'state' | 'peersUp' | 'peersTotal' | 'reason' | 'ts' | 'ok' | 'stale' | 'worstPeer' | 'error'> & {
  ageS: number | null;
};

// ------------------------------------------------------------------------------- topics

export type TopicKind = 'status' | 'health';

/** The two subscriptions: every site and node under the prefix. */
export function fleetFilters(prefix: string): { status: string; health: string } {
  return { status: `${prefix}/+/+/status`, health: `${prefix}/+/+/health` };
}

/** Why a topic prefix cannot be subscribed under, or null when it can. */
export function prefixProblem(prefix: string): string | null {
  if (prefix === '') return 'is empty';
  if (/[+#\0]/.test(prefix)) return 'contains an MQTT wildcard (+ or #) or NUL; give the literal first topic level(s)';
  if (prefix.split('/').some((l) => l === '')) return 'has an empty topic level (a leading, trailing or double "/")';
  return null;
}

/** site, node and kind of a topic under `prefix`, or null for anything else. */
export function parseTopic(prefix: string, topic: string): { site: string; node: string; kind: TopicKind } | null {
  if (!topic.startsWith(`${prefix}/`)) return null;
  const rest = topic.slice(prefix.length + 1).split('/');
  if (rest.length !== 3) return null;
  const [site, node, kind] = rest;
  if (kind !== 'status' && kind !== 'health') return null;
  return { site, node, kind };
}

// ----------------------------------------------------------------------------- payloads

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decode(payload: Uint8Array, what: string, max: number): Parsed<string> {
  if (payload.length > max) return { ok: false, error: `malformed ${what}: ${payload.length} bytes (at most ${max} expected)` };
  try {
    return { ok: true, value: utf8.decode(payload) };
  } catch {
    return { ok: false, error: `malformed ${what}: not UTF-8 text` };
  }
}

export function parseStatus(payload: Uint8Array): Parsed<GatewayStatus> {
  const text = decode(payload, 'status', MAX_STATUS_BYTES);
  if (!text.ok) return text;
  const v = text.value;
  if (v === 'online' || v === 'offline') return { ok: true, value: v };
  return { ok: false, error: `malformed status: ${show(v)} (expected "online" or "offline")` };
}


class Shape extends Error {}

function field<T>(o: Record<string, unknown>, key: string, at: string, ok: (v: unknown) => v is T, expected: string): T {
  const v = Object.hasOwn(o, key) ? o[key] : undefined;
  if (!ok(v)) throw new Shape(`${at}${key} is ${v === undefined ? 'missing' : show(v)} (expected ${expected})`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isReason = (v: unknown): v is string | null | undefined => v === undefined || v === null || typeof v === 'string';
const isState = (v: unknown): v is GatewayState => v === 'ok' || v === 'degraded' || v === 'down';
const isPeerState = (v: unknown): v is PeerState => v === 'up' || v === 'down' || v === 'unknown';
const isArray = (v: unknown): v is unknown[] => Array.isArray(v);

/** Reads the fields a row needs from a health payload; any other field is ignored. */
export function parseHealth(payload: Uint8Array): Parsed<HealthInfo> {
  const text = decode(payload, 'health', MAX_HEALTH_BYTES);
  if (!text.ok) return text;
  let doc: unknown;
  try {
    doc = JSON.parse(text.value);
  } catch (e) {
    return { ok: false, error: `malformed health: not JSON (${(e as Error).message.split('\n')[0].slice(0, 80)})` };
  }
  if (!isPlainObject(doc)) return { ok: false, error: `malformed health: ${show(doc)} is not a JSON object` };
  try {
    const ts = field(doc, 'ts', '', isString, 'an ISO 8601 time');
    const tsMs = Date.parse(ts);
    if (!Number.isFinite(tsMs)) throw new Shape(`ts is ${show(ts)} (expected an ISO 8601 time)`);
    const peers = field(doc, 'peers', '', isArray, 'a list').map((p, i): PeerInfo => {
      const at = `peers[${i}].`;
      if (!isPlainObject(p)) throw new Shape(`peers[${i}] is ${show(p)} (expected an object)`);
      return {
        name: field(p, 'name', at, isString, 'a string'),
        state: field(p, 'state', at, isPeerState, 'up, down or unknown'),
        reason: field(p, 'reason', at, isReason, 'a string or null') ?? null,
      };
    });
    let failingCheck: HealthInfo['failingCheck'] = null;
    const checks = Object.hasOwn(doc, 'checks') ? field(doc, 'checks', '', isArray, 'a list') : [];
    checks.forEach((c, i) => {
      const at = `checks[${i}].`;
      if (!isPlainObject(c)) throw new Shape(`checks[${i}] is ${show(c)} (expected an object)`);
      const ok = field(c, 'ok', at, (v): v is boolean => typeof v === 'boolean', 'true or false');
      const name = field(c, 'name', at, isString, 'a string');
      const detail = Object.hasOwn(c, 'detail') ? field(c, 'detail', at, isString, 'a string') : '';
      if (!ok && !failingCheck) failingCheck = { name, detail };
    });
    let intervalS: number | null = null;
    if (Object.hasOwn(doc, 'intervalS')) {
      intervalS = field(doc, 'intervalS', '', (v): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0, 'a number of seconds > 0');
    }
    return {
      ok: true,
      value: {
        site: field(doc, 'site', '', isString, 'a string'),
        node: field(doc, 'node', '', isString, 'a string'),
        ts,
        tsMs,
        state: field(doc, 'state', '', isState, 'ok, degraded or down'),
        peers,
        failingCheck,
        intervalS,
      },
    };
  } catch (e) {
    if (e instanceof Shape) return { ok: false, error: `malformed health: ${e.message}` };
    throw e;
  }
}

// -------------------------------------------------------------------------------- rules

const PEER_RANK: Record<PeerState, number> = { down: 0, unknown: 2, up: 99 };

/**
 * The peer that best explains why a gateway is not ok: a down peer before an unknown one (not
 * probed yet), one that says why before one that does not, then document order. Null when
 * every peer is up.
 */
export function worstPeer(peers: PeerInfo[]): PeerInfo | null {
  let best: PeerInfo | null = null;
  let bestRank = PEER_RANK.up;
  for (const p of peers) {
    const rank = PEER_RANK[p.state] + (p.reason ? 0 : 1);
    if (p.state !== 'up' && rank < bestRank) {
      best = p;
      bestRank = rank;
    }
  }
  return best;
}

/** Is this health still current? (see the header for the three ways to tell). */
export function staleness(h: HealthInfo, rec: { receivedAt: number; expiryS: number | null }, now: Now, assumedIntervalMs: number): { stale: boolean; why: string | null } {
  if (rec.expiryS !== null) {
    const overMs = now.mono - (rec.receivedAt + rec.expiryS * 1000);
    return overMs >= 0 ? { stale: true, why: `health expired ${formatAge(overMs)} ago (MQTT message expiry)` } : { stale: false, why: null };
  }
  const intervalMs = h.intervalS !== null ? h.intervalS * 1000 : assumedIntervalMs;
  const ageMs = now.wall - h.tsMs;
  if (ageMs <= STALE_FACTOR * intervalMs) return { stale: false, why: null };
  const basis = h.intervalS !== null ? 'its intervalS' : 'the assumed interval';
  return { stale: true, why: `last health ${formatAge(ageMs)} old, over ${STALE_FACTOR} × ${formatDuration(Math.round(intervalMs))} (${basis})` };
}

/**
 * Why a gateway with a status has no health. A document over MAX_HEALTH_BYTES is one: an MQTT 5
 * broker does not send a message over the reader's maximum packet size, and says nothing.
 */
const NO_HEALTH = `no health document (expired on the broker, not published yet, or over ${MAX_HEALTH_BYTES / 1024 / 1024} MiB, which the broker does not send this reader)`;

export function buildRow(rec: GatewayRecord, now: Now, assumedIntervalMs: number): FleetRow {
  const errors: string[] = [];
  const status = rec.status?.ok ? rec.status.value : null;
  if (rec.status === null) errors.push('no status message');
  else if (!rec.status.ok) errors.push(rec.status.error);

  const row: FleetRow = {
    site: rec.site, node: rec.node, status, state: null, peersUp: null, peersTotal: null, worstPeer: null, reason: null,
    ts: null, ageMs: null, stale: true, staleWhy: NO_HEALTH, error: null, ok: false,
  };
  const h = rec.health?.parsed;
  if (h && !h.ok) {
    // Whether it is current cannot be told; the row says what is wrong with it instead.
    errors.push(h.error);
    row.stale = false;
    row.staleWhy = null;
  } else if (h?.ok) {
    const d = h.value;
    if (d.site !== rec.site || d.node !== rec.node) {
      errors.push(`malformed health: it names ${show(`${d.site}/${d.node}`)} but is published under ${show(`${rec.site}/${rec.node}`)}`);
    }
    row.state = d.state;
    row.peersTotal = d.peers.length;
    row.peersUp = d.peers.filter((p) => p.state === 'up').length;
    const worst = worstPeer(d.peers);
    if (worst) {
      row.worstPeer = worst.name;
      row.reason = worst.reason ?? (worst.state === 'down' ? 'down (no reason given)' : 'not probed yet');
    } else if (d.failingCheck) {
      row.reason = `check ${d.failingCheck.name} fails${d.failingCheck.detail ? `: ${d.failingCheck.detail}` : ''}`;
    }
    row.ts = d.ts;
    row.ageMs = Math.max(0, now.wall - d.tsMs);
    const s = staleness(d, rec.health!, now, assumedIntervalMs);
    row.stale = s.stale;
    row.staleWhy = s.why;
  }
  row.error = errors.length ? errors.join('; ') : null;
  row.ok = row.error === null && status === 'online' && !row.stale && row.state === 'ok';
  return row;
}

/** 0: gateways found and every one online, current and ok; 1: otherwise (also: none found). */
export function fleetExitCode(rows: FleetRow[]): 0 | 1 {
  return rows.length > 0 && rows.every((r) => r.ok) ? 0 : 1;
}

// ------------------------------------------------------------------------------ records

/**
 * The retained state of the fleet as messages arrive. An empty payload is how MQTT deletes a
 * retained message: that half of the gateway is forgotten, and the gateway with it once both
 * are gone. At most `max` gateways are kept; messages for more are counted in `ignored`.
 */
export class FleetRecords {
  private readonly byKey = new Map<string, GatewayRecord>();
  ignored = 0;

  constructor(
    readonly prefix: string,
    readonly max = MAX_GATEWAYS,
  ) {}

  /**
   * Applies one message; returns the key ("site/node") of the gateway it touched, or null when
   * the topic is not a gateway's. Never throws.
   */
  apply(topic: string, payload: Uint8Array, meta: { receivedAt: number; expiryS: number | null }): string | null {
    const t = parseTopic(this.prefix, topic);
    if (!t) return null;
    // Topic levels cannot contain "/", so this key is unique.
    const key = `${t.site}/${t.node}`;
    let rec = this.byKey.get(key);
    if (payload.length === 0) {
      if (!rec) return null;
      if (t.kind === 'status') rec.status = null;
      else rec.health = null;
      if (!rec.status && !rec.health) this.byKey.delete(key);
      return key;
    }
    if (!rec) {
      if (this.byKey.size >= this.max) {
        this.ignored++;
        return null;
      }
      rec = { site: t.site, node: t.node, status: null, health: null };
      this.byKey.set(key, rec);
    }
    if (t.kind === 'status') rec.status = parseStatus(payload);
    else rec.health = { parsed: parseHealth(payload), receivedAt: meta.receivedAt, expiryS: meta.expiryS };
    return key;
  }

  get size(): number {
    return this.byKey.size;
  }

  row(key: string, now: Now, assumedIntervalMs: number): FleetRow | null {
    const rec = this.byKey.get(key);
    return rec ? buildRow(rec, now, assumedIntervalMs) : null;
  }

  /** Every gateway, ordered by site, then node. */
  rows(now: Now, assumedIntervalMs: number): FleetRow[] {
    return [...this.byKey.values()]
      .sort((a, b) => cmp(a.site, b.site) || cmp(a.node, b.node))
      .map((r) => buildRow(r, now, assumedIntervalMs));
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------- rendering

/** 12s, 3m, 5h, 2d: the age of a document at a glance. */
export function formatAge(ms: number): string {
  const s = Math.floor(Math.max(0, ms) / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 48 * 3600) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/**
 * Text from the broker as one terminal-safe line: control characters (which could move the
 * cursor or recolour the terminal) become "?", line breaks and tabs a space; cut at `max`.
 */
export function cell(s: string, max: number): string {
  const clean = s.replace(/[\t\n\r]/g, ' ').replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

/** The STATUS column: online, offline, stale (online but no current health), malformed or "-". */
export function shownStatus(r: FleetRow): string {
  if (r.status === 'online') return r.stale ? 'stale' : 'online';
  if (r.status === 'offline') return 'offline';
  return r.error?.startsWith('malformed status') ? 'malformed' : '-';
}

/** The REASON column: what is wrong with a payload, else which peer is worst and why, else why stale. */
export function shownReason(r: FleetRow): string {
  if (r.error) return r.error;
  if (r.worstPeer) return `${r.worstPeer}: ${r.reason}`;
  if (r.reason) return r.reason;
  if (r.status === 'online' && r.stale) return r.staleWhy ?? '';
  return '';
}

const HEADER = ['SITE', 'NODE', 'STATUS', 'STATE', 'PEERS', 'AGE', 'REASON'];
/** How long a gateway's last health may be old while it is offline before the table suggests it may be retired. */
export const LONG_OFFLINE_MS = 24 * 3_600_000;

function cells(r: FleetRow): string[] {
  return [
    // An empty topic level is legal MQTT, but would leave a hole in the table.
    cell(r.site, 64) || '""',
    cell(r.node, 64) || '""',
    shownStatus(r),
    r.state ?? '-',
    r.peersTotal === null ? '-' : `${r.peersUp}/${r.peersTotal}`,
    r.ageMs === null ? '-' : formatAge(r.ageMs),
    cell(shownReason(r), 400),
  ];
}

/** Aligned columns (the free-text reason last), then one summary line. */
export function renderTable(rows: FleetRow[]): string {
  const table = [HEADER, ...rows.map(cells)];
  const widths = HEADER.map((_, c) => Math.max(...table.map((r) => r[c].length)));
  const lines = table.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd());
  const bad = rows.filter((r) => !r.ok).length;
  lines.push('', `${rows.length} gateway${rows.length === 1 ? '' : 's'}: ${rows.length - bad} ok, ${bad} not ok`);
  // A box retired without `vxedge retire` stays offline here for good, and keeps the exit code at 1.
  const gone = rows.filter((r) => r.status === 'offline' && r.ageMs !== null && r.ageMs >= LONG_OFFLINE_MS);
  if (gone.length) {
    const first = `${gone[0].site}/${gone[0].node}`;
    lines.push(`${gone.length} offline for a day or more (${gone.slice(0, 3).map((r) => `${r.site}/${r.node}`).join(', ')}${gone.length > 3 ? ', …' : ''}): ` +
      `one retired for good can be cleared here with vxedge fleet --forget ${first}, or taken out of the cluster too with vxedge retire -c its site file`);
  }
  return lines.join('\n') + '\n';
}

/** One line for --watch: when, then the row's cells. */
export function renderChange(r: FleetRow, wallMs: number): string {
  return `${isoSeconds(wallMs)}  ${cells(r).join('  ').trimEnd()}\n`;
}

/** One line for --watch when a gateway's retained messages were both deleted. */
export function renderRemoved(key: string, wallMs: number): string {
  return `${isoSeconds(wallMs)}  ${cell(key, 130)}  removed (no retained status or health left)\n`;
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

export function rowJson(r: FleetRow): FleetRowJson {
  return {
    site: r.site, node: r.node, status: r.status, state: r.state, peersUp: r.peersUp, peersTotal: r.peersTotal, reason: r.reason, ts: r.ts,
    ok: r.ok, stale: r.stale, ageS: r.ageMs === null ? null : Math.floor(r.ageMs / 1000), worstPeer: r.worstPeer, error: r.error,
  };
}

/** What --watch compares to tell a change: everything shown but the age. */
export function rowSignature(r: FleetRow): string {
  return JSON.stringify([r.status, r.stale, r.state, r.peersUp, r.peersTotal, r.worstPeer, r.reason, r.error]);
}
