// What a SIGHUP's new config changes, key by key, from the schema's full key list: the
// keys a reload applies live (marked `live` in schema.ts) and the ones that need a restart.
// Nothing is silently ignored: the gateway applies the first and reports the second in its
// log and health document.
import { buildSchema, leaves } from './schema.js';
import type { Config } from './types.js';

export interface ReloadPlan {
  /** Changed keys a reload applies now. */
  live: string[];
  /** Changed keys that take effect only after a restart. */
  restart: string[];
}

const KEYS = leaves(buildSchema('-'));

function valueAt(c: Config, path: string): string {
  let v: unknown = c;
  for (const k of path.split('.')) v = (v as Record<string, unknown>)[k];
  return JSON.stringify(v);
}

export function reloadPlan(running: Config, next: Config): ReloadPlan {
  const plan: ReloadPlan = { live: [], restart: [] };
  for (const { path, spec } of KEYS) {
    if (valueAt(running, path) === valueAt(next, path)) continue;
    (spec.live ? plan.live : plan.restart).push(path);
  }
  return plan;
}
