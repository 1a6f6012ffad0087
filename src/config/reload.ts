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

type Tree = Record<string, unknown>;

function valueAt(c: Config, path: string): unknown {
  let v: unknown = c;
  for (const k of path.split('.')) v = (v as Tree)[k];
  return v;
}

/** `tree` with the leaf at `path` set to `value`: the objects along the path copied, the rest shared. */
function setAt(tree: Tree, [key, ...rest]: string[], value: unknown): Tree {
  return { ...tree, [key!]: rest.length > 0 ? setAt(tree[key!] as Tree, rest, value) : value };
}

export function reloadPlan(running: Config, next: Config): ReloadPlan {
  const plan: ReloadPlan = { live: [], restart: [] };
  for (const { path, spec } of KEYS) {
    if (JSON.stringify(valueAt(running, path)) === JSON.stringify(valueAt(next, path))) continue;
    (spec.live ? plan.live : plan.restart).push(path);
  }
  return plan;
}

/**
 * The config in force after a reload: `running` with the keys a reload applies (`live`, the
 * plan's) taken from `next`; a key that needs a restart keeps its running value. `running` is
 * not changed.
 */
export function withLive(running: Config, next: Config, live: readonly string[]): Config {
  let out = running as unknown as Tree;
  for (const path of live) out = setAt(out, path.split('.'), valueAt(next, path));
  return out as unknown as Config;
}
