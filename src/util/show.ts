// A value as it appears in an error message: strings quoted, structures as JSON, long
// values cut. Config values come from YAML/JSON/the environment, so this must not throw
// on anything (an object whose toString is not a function, a cyclic structure).
export function show(v: unknown): string {
  let text: string;
  if (typeof v === 'string') text = JSON.stringify(v);
  else if (v === undefined || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') text = String(v);
  else {
    try {
      text = JSON.stringify(v) ?? Object.prototype.toString.call(v);
    } catch {
      text = Object.prototype.toString.call(v);
    }
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
