// Basic auth for the metrics endpoint (metrics.webConfig's basic_auth_users), as the
// toolkit does it: the password checked against the user's bcrypt hash, the answer kept for
// the same user, hash and password, so that a Prometheus scraping every 15 s pays bcrypt
// once; an unknown user checked against a decoy hash, so that the time of a refusal does not
// say whether the user exists.
//
// bcrypt runs in the addon on libuv's thread pool (native/crypt.c), one check at a time:
// the event loop, and the packets on it, never wait for it, and a client that guesses
// passwords gets the thread pool's one check after another, not every core.
import { createHash } from 'node:crypto';

/** Whether `password` is the one `hash` was made from (crypt(3) of the two). */
export type PasswordCheck = (password: string, hash: string) => Promise<boolean>;

/** bcrypt (cost 10) of a random password nobody kept: what an unknown user is checked against. */
const DECOY_HASH = '$2b$10$mmi6wJBn.VqZtiRW60S/8umvI/rLIEZAHXT7VKu..jdMSSlgEkGn2';
/** bcrypt reads 72 bytes; Go's refuses a longer password rather than cut it, and so do we (and `vxedge password-hash`). */
export const MAX_PASSWORD_BYTES = 72;
/** Answers kept (user, hash, password -> yes or no): a few scrapers' worth, and a bound on a guesser's. */
const CACHE_ENTRIES = 64;

/** The user and password of an `Authorization: Basic` header; null when it is not one. */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } | null {
  if (!header) return null;
  const m = /^Basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header);
  if (!m) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return null;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

export class BasicAuth {
  private readonly answers = new Map<string, boolean>();
  /** The check running now: the next waits for it. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly check: PasswordCheck) {}

  /**
   * Whether the request's `Authorization` header names one of `users` with its password.
   * `gone` says whether the client left while its check waited for its turn (then it is not run).
   */
  async allows(header: string | undefined, users: ReadonlyMap<string, string>, gone: () => boolean = () => false): Promise<boolean> {
    const creds = parseBasicAuth(header);
    if (!creds) return false;
    const known = users.get(creds.user);
    const hash = known ?? DECOY_HASH;
    const key = createHash('sha256').update(`${creds.user}\0${hash}\0${creds.password}`).digest('base64');
    const kept = this.answers.get(key);
    if (kept !== undefined) return kept && known !== undefined;
    if (Buffer.byteLength(creds.password) > MAX_PASSWORD_BYTES || creds.password.includes('\0')) return false;
    const turn = this.queue.then(async () => (gone() ? null : this.check(creds.password, hash)));
    this.queue = turn.catch(() => undefined);
    const ok = await turn;
    if (ok === null) return false;
    if (this.answers.size >= CACHE_ENTRIES) this.answers.delete(this.answers.keys().next().value!);
    this.answers.set(key, ok);
    return ok && known !== undefined;
  }

  /** Forgets every answer (the users or their hashes changed). */
  clear(): void {
    this.answers.clear();
  }
}

/** A token bucket: `burst` requests at once, then one per `intervalMs` (Go's rate.Limiter as the toolkit sets it). */
export class RateLimit {
  private tokens: number;
  private at: number;

  constructor(
    private readonly intervalMs: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.at = now();
  }

  /** Takes a token if there is one. */
  allow(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (t - this.at) / this.intervalMs);
    this.at = t;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
