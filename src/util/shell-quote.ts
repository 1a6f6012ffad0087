/** A word for sh: single-quoted, so that nothing in it is expanded (a ' inside is closed, escaped and reopened). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
