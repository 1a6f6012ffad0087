// The one test for "a JSON or YAML mapping": what a parsed config, health document, Node object
// or flannel lease must be before its keys are read. Not null, and not a list (both typeof
// 'object').

/** A mapping of keys (not null, not a list). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
