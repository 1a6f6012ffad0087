// `vxedge check`: config validation (already done by the caller) plus the preflight
// checks of the flannel troubleshooting guide, one line each.
import type { Config } from '../config/types.js';
import type { CheckResult } from '../health/document.js';
import { checkIpForward, checkMtu, checkPortFree, checkPublicEndpoint, checkTunDevice, checkUnderlay } from '../health/checks.js';

export async function preflight(cfg: Config): Promise<CheckResult[]> {
  const results: CheckResult[] = [{ name: 'config', ok: true, detail: `site ${cfg.site}, node ${cfg.node}, ${cfg.peers.length} peer(s)` }];
  results.push(await checkTunDevice());
  results.push(await checkIpForward());
  const { result, underlay } = await checkUnderlay(cfg);
  results.push(result);
  if (underlay) {
    results.push(checkMtu(cfg.vxlan.mtu ?? underlay.mtu - 50, underlay.mtu, underlay.iface));
    results.push(await checkPortFree(underlay.address, cfg.underlay.port));
  }
  results.push(
    cfg.underlay.publicIp || cfg.nat.stun.length === 0
      ? checkPublicEndpoint(cfg.underlay.publicIp ? `${cfg.underlay.publicIp}:${cfg.underlay.port}` : null)
      : { name: 'public_endpoint', ok: true, detail: `to be discovered via STUN (${cfg.nat.stun.map((s) => `${s.host}:${s.port}`).join(', ')})` },
  );
  return results;
}

export async function runCheck(cfg: Config): Promise<number> {
  const results = await preflight(cfg);
  const w = Math.max(...results.map((r) => r.name.length));
  for (const r of results) {
    process.stdout.write(`${r.ok ? 'ok  ' : 'FAIL'}  ${r.name.padEnd(w)}  ${r.detail}\n`);
    if (!r.ok && r.fix) process.stdout.write(`      ${' '.repeat(w)}  fix: ${r.fix}\n`);
  }
  return results.every((r) => r.ok) ? 0 : 1;
}
