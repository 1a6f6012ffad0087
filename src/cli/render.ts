// `vxedge status` for a person: the gateway line, a table of peers, failing checks; and the
// one-line-per-check form of `vxedge check` and `vxedge retire`.
import type { CheckResult, HealthDocument } from '../health/document.js';

/** `ok  ` or `FAIL`, the name padded to the longest, the detail; under a failure, its fix. */
export function renderCheckLines(results: readonly CheckResult[]): string {
  const w = Math.max(...results.map((r) => r.name.length));
  let out = '';
  for (const r of results) {
    out += `${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(w)}  ${r.detail}\n`;
    if (!r.ok && r.fix) out += `      ${' '.repeat(w)}  fix: ${r.fix}\n`;
  }
  return out;
}

/** The same as one document, `{ok, checks}`, for `vxedge check --json`. */
export function renderCheckJson(results: readonly CheckResult[]): string {
  return JSON.stringify({ ok: results.every((r) => r.ok), checks: results }, null, 2) + '\n';
}

export function renderStatus(d: HealthDocument, now = Date.now()): string {
  const lines: string[] = [];
  const t = d.tunnel;
  lines.push(`vxedge ${d.version}  site ${d.site}  node ${d.node}  state ${d.state.toUpperCase()}  up ${fmtDuration(d.uptimeS)}`);
  lines.push(`tunnel ${t.device} (${t.mode}) vni ${t.vni} mtu ${t.mtu} subnet ${t.subnet} vtep ${t.vtepMac}`);
  lines.push(`local ${t.localEndpoint}  public ${t.publicEndpoint ?? 'unknown'}`);
  lines.push('');
  const rows = [['PEER', 'STATE', 'ENDPOINT', 'SUBNET', 'RTT', 'LOSS', 'LAST SEEN', 'RX PKT', 'TX PKT', 'RX', 'TX']];
  for (const p of d.peers) {
    rows.push([
      p.name, p.state, p.endpoint, p.subnet,
      p.rttMs === null ? '-' : `${p.rttMs.toFixed(p.rttMs < 10 ? 2 : 0)}ms`,
      p.lossPct === null ? '-' : `${p.lossPct}%`,
      p.lastSeen ? ago(p.lastSeen, now) : 'never',
      String(p.rxPackets), String(p.txPackets), fmtBytes(p.rxBytes), fmtBytes(p.txBytes),
    ]);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  for (const r of rows) lines.push(r.map((v, c) => v.padEnd(widths[c])).join('  ').trimEnd());
  for (const p of d.peers) if (p.reason) lines.push(`  ${p.name}: ${p.reason}`);
  const failing = d.checks.filter((c) => !c.ok);
  lines.push('');
  lines.push(failing.length ? 'checks failing:' : `checks: all ${d.checks.length} pass`);
  for (const c of failing) lines.push(`  ${c.name}: ${c.detail}${c.fix ? `\n    fix: ${c.fix}` : ''}`);
  // A reload that changed nothing visible must still show: `systemctl reload` reports success either way.
  const r = d.reload;
  if (r?.error) lines.push(`reload at ${r.at} refused, the running config kept: ${r.error}`);
  if (r?.restartNeeded.length) lines.push(`restart needed to apply: ${r.restartNeeded.join(', ')} (systemctl restart vxedge)`);
  lines.push(...serviceLines(d, now));
  const drops = Object.entries(d.drops ?? {});
  if (drops.length) lines.push(`drops: ${drops.map(([k, v]) => `${k}=${v}`).join(' ')}`);
  // The kernel's own drops name no packet the gateway saw: say where they happened.
  for (const [k] of drops) if (Object.hasOwn(KERNEL_DROPS, k)) lines.push(`  ${k}: ${KERNEL_DROPS[k]}`);
  return lines.join('\n') + '\n';
}

/** Nodes left out by the cluster source that `vxedge status` and `vxedge check` name; the rest are counted. */
export const SKIPPED_SHOWN = 3;

/**
 * One line for each service the gateway talks to, when configured: the MQTT broker, the
 * cluster source, the metrics endpoint, the router's port mapping. Their failures leave forwarding alone, so no
 * check fails for them and they would otherwise show only in the JSON.
 */
function serviceLines(d: HealthDocument, now: number): string[] {
  const out: string[] = [];
  const m = d.mqtt;
  if (m?.enabled) {
    out.push(m.connected
      ? `mqtt: connected, ${m.published} health document${m.published === 1 ? '' : 's'} published${m.reconnects ? `, ${m.reconnects} reconnect${m.reconnects === 1 ? '' : 's'}` : ''}`
      : `mqtt: NOT connected${m.lastError ? `: ${m.lastError}` : ''}${m.queued ? ' (the latest health document waits)' : ''}`);
  }
  const c = d.cluster;
  if (c && c.source !== 'static') {
    const view = `${c.nodes} node${c.nodes === 1 ? '' : 's'}, ${c.peers} peer${c.peers === 1 ? '' : 's'}`;
    const age = c.lastSync ? ` (last view ${ago(c.lastSync, now)}, kept)` : ' (no view yet)';
    const left = c.skipped?.length ? `, ${c.skipped.length} left out` : '';
    out.push(`cluster: ${c.source}, ${c.connected ? 'connected' : `NOT connected${age}`}, ${view}${left}, ${c.registered ? 'registered' : 'NOT registered'}${c.error ? `: ${c.error}` : ''}`);
    // Each node left out is a node whose pods the site does not reach: the first few with the
    // reason, the rest counted (the JSON lists every one).
    for (const s of c.skipped?.slice(0, SKIPPED_SHOWN) ?? []) out.push(`  left out: ${s.name}: ${s.why}`);
    if ((c.skipped?.length ?? 0) > SKIPPED_SHOWN) out.push(`  and ${c.skipped!.length - SKIPPED_SHOWN} more left out (vxedge status --json lists every one)`);
  }
  // Where the metrics are served (a failure is among the failing checks above).
  const metrics = d.checks.find((x) => x.name === 'metrics' && x.ok);
  if (metrics) out.push(`metrics: ${metrics.detail}`);
  const pm = d.nat?.portMapping;
  if (pm && pm.mode !== 'off') {
    out.push(pm.external
      ? `port mapping: ${pm.protocol} ${pm.external}${pm.gateway ? ` on router ${pm.gateway}` : ''}${pm.expires ? `, until ${pm.expires}` : ''}`
      : `port mapping: ${pm.state}${pm.error ? `: ${pm.error}` : ''}${pm.retryAt ? ` (next try ${pm.retryAt})` : ''}`);
  }
  return out;
}

const KERNEL_DROPS: Record<string, string> = {
  deviceQueue: "dropped by the kernel at the tunnel device's queue: the site sent into the tunnel faster than the gateway read",
  underlayReceive: 'dropped by the kernel at the tunnel sockets: the peers sent faster than the gateway read, or the UDP checksum was bad',
};

/** "5m ago" for an ISO 8601 time (never negative: a clock a little ahead of the writer's). */
function ago(iso: string, now: number): string {
  return `${fmtDuration(Math.max(0, Math.round((now - Date.parse(iso)) / 1000)))} ago`;
}

function fmtDuration(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n}${u[i]}`;
}
