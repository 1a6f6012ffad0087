// Waiting in the native child scenarios: for a condition, with a deadline, never for a fixed
// time before an assertion (the watchdog of each child bounds the whole run).
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls until cond() holds; throws naming `what` after ms. */
export async function until(cond, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}
