// What the lab tests' child drivers (etcd-child.mjs, portmap-child.mjs) share: where the
// compiled code is, one JSON object per stdout line, and the bounds every run keeps.

/** The compiled production code the children import (dist/). */
export const dist = new URL('../../dist/', import.meta.url);

/** Prints one JSON line, the children's only protocol towards the test. */
export const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

/**
 * Bounds the run: after `lifetimeMs` (default 60 s) prints {"type":"error","error":"timeout"}
 * and exits 3; an unhandled rejection prints its stack the same way and exits 4, so a test
 * never waits on a child that hung or died quietly.
 */
export function guard(lifetimeMs = 60_000) {
  setTimeout(() => {
    out({ type: 'error', error: 'timeout' });
    process.exit(3);
  }, lifetimeMs).unref();
  process.on('unhandledRejection', (e) => {
    out({ type: 'error', error: `unhandled rejection: ${e?.stack ?? e}` });
    process.exit(4);
  });
}
