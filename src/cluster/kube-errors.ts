// What went wrong talking to the Kubernetes API, in words an operator acts on. Failures come
// in several shapes: {code, body} from a call or a watch that did not get a 2xx (kube-client's
// KubeHttpError, shaped as the official client's ApiException; the body is the Status object
// as text, absent on 401, plain text on a 429), Node's network and TLS errors {code}, spawn
// errors from an exec credential plugin, and our own request timeouts. Each becomes one
// sentence: what failed, why, and the fix.
import { show } from '../util/show.js';
import type { NodeApi } from './kube-client.js';
import { clockSays, explainTls, opensslReason, validityProblem, type TlsContext } from '../util/tls-failure.js';
import type { Clock } from '../util/clock.js';

export interface KubeErrorContext {
  /** What we tried, as "<verb> <resource>", e.g. "list nodes", "patch node vxedge-lab-edge-1". */
  action: string;
  /** The API server URL, when known. */
  server: string | null;
  /** Where the credentials come from, e.g. "kubeconfig /etc/vxedge/kubeconfig". */
  credentials: string;
  /** The clock and the client certificate's dates, which a 401 or a TLS failure may be about. */
  tls?: TlsContext;
  /** The exec credential plugin's command, whose token a 401 may be about; null or absent: none. */
  execCommand?: string | null;
}

/**
 * The context of a failed `action` on `api` (null: not connected yet) with credentials from
 * `credentials` (a KubeconfigChoice's describe; null: unknown), read on `clock`.
 */
export function kubeErrorContext(
  action: string, api: Pick<NodeApi, 'server' | 'clientCert' | 'execCommand'> | null, credentials: string | null, clock: Pick<Clock, 'now' | 'synchronised'>,
): KubeErrorContext {
  return {
    action, server: api?.server ?? null, credentials: credentials ?? 'the kubeconfig',
    tls: { nowMs: clock.now(), synchronised: clock.synchronised?.() ?? null, clientCert: api?.clientCert ?? null }, execCommand: api?.execCommand ?? null,
  };
}

/** Our request timeout: the client sees it as an AbortError. */
export class KubeTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`no answer within ${Math.round(ms / 1000)} s`);
    this.name = 'KubeTimeoutError';
  }
}

const RBAC_FIX = 'grant it with `vxedge rbac -c FILE | kubectl apply -f -`';

const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT']);
const CUT = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE']);
/** Node's verification codes that util/tls-failure.ts's causes leave to the general words here. */
const UNTRUSTED = new Set(['CERT_SIGNATURE_FAILURE']);

type Errorish = { code?: unknown; body?: unknown; message?: unknown; syscall?: unknown; path?: unknown; name?: unknown };

/** `body` as an object, if it is one (text or object). */
function statusObject(body: unknown): object | null {
  let s: unknown = body;
  if (typeof body === 'string') {
    try {
      s = JSON.parse(body);
    } catch {
      return null;
    }
  }
  return typeof s === 'object' && s !== null ? s : null;
}

/** The Status object's message and reason, if `body` is one (text or object). */
function statusOf(body: unknown): { message?: string; reason?: string } {
  const s = statusObject(body);
  if (!s) return {};
  const { message, reason } = s as { message?: unknown; reason?: unknown };
  return { message: typeof message === 'string' ? message.slice(0, 300) : undefined, reason: typeof reason === 'string' ? reason : undefined };
}

/**
 * A Status saying the requested resourceVersion is newer than the server's (504 Timeout, cause
 * ResourceVersionTooLarge; API servers 1.17.0-1.18.5 said it in the message alone), as a
 * watch's ERROR event carries it.
 */
export function isTooLargeResourceVersion(status: unknown): boolean {
  const s = status as { message?: unknown; details?: { causes?: unknown } } | null;
  const causes = Array.isArray(s?.details?.causes) ? (s.details.causes as { reason?: unknown }[]) : [];
  return causes.some((c) => c?.reason === 'ResourceVersionTooLarge') || (typeof s?.message === 'string' && s.message.startsWith('Too large resource version'));
}

/** An API call that failed with that Status (its body). */
export function failedTooLarge(err: unknown): boolean {
  return httpStatusOf(err) === 504 && isTooLargeResourceVersion(statusObject((err as Errorish | null)?.body));
}

/**
 * The longest Retry-After we wait for. kube-apiserver asks for 1 s, doubling to 32 s while its
 * API Priority and Fairness keeps shedding load (and 5 s or so while it shuts down); a longer
 * ask, from a proxy in front of it, must not leave the site's view stale for long.
 */
export const MAX_RETRY_AFTER_MS = 60_000;

/**
 * A Retry-After header (RFC 9110 §10.2.3: delay-seconds, or an HTTP-date in its preferred
 * IMF-fixdate form) as ms from `nowMs`, 0 for a date already past; null when absent or neither.
 */
export function parseRetryAfter(value: unknown, nowMs: number): number | null {
  if (typeof value !== 'string') return null;
  const v = value.trim();
  if (/^[0-9]+$/.test(v)) return Math.min(Number(v), 1e9) * 1000;
  // An IMF-fixdate ("Sun, 06 Dec 2026 09:30:00 GMT"), what servers send (Go's http.TimeFormat);
  // Date.parse alone would read almost any text as some date.
  if (!/^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$/.test(v)) return null;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

/** The wait a failed request's server asked for (429 or 5xx with Retry-After, as client-go honours it), in ms; null when it asked none. */
export function retryAfterOf(err: unknown): number | null {
  const http = httpStatusOf(err);
  if (http === null || (http !== 429 && http < 500)) return null;
  const ms = (err as { retryAfterMs?: unknown }).retryAfterMs;
  return typeof ms === 'number' && ms >= 0 ? ms : null;
}

/** The HTTP status of an API failure, or null for a failure below HTTP. */
export function httpStatusOf(err: unknown): number | null {
  const e = (err ?? {}) as Errorish;
  const code = typeof e.code === 'number' ? e.code : null;
  return code !== null && code >= 100 && code < 600 ? code : null;
}

export function describeKubeError(err: unknown, ctx: KubeErrorContext): string {
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as Errorish;
  const at = ctx.server ? ` at ${ctx.server}` : '';
  const http = httpStatusOf(err);
  if (http !== null) {
    const st = statusOf(e.body);
    if (http === 401) {
      // kube-apiserver asks for a client certificate but does not require one: one it cannot
      // verify (past its end, or before its start by the server's clock) is a 401, not a TLS error.
      const cert = ctx.tls?.clientCert ? validityProblem(ctx.tls.clientCert, ctx.tls.nowMs, `the client certificate in ${ctx.credentials}`) : null;
      if (cert) {
        return `the API server${at} rejected our credentials (401 Unauthorized) when we tried to ${ctx.action}: ${cert}, and ${clockSays(ctx.tls!.nowMs, ctx.tls!.synchronised)}: ` +
          "renew it (a new kubeconfig from the cluster's admin), or set this machine's clock if that is what is wrong (timedatectl)";
      }
      // An exec plugin's token may carry our clock: EKS's (aws eks get-token) is a presigned
      // STS request dated by it, which STS, and so the API server, refuses when it is far off.
      const exec = ctx.execCommand && ctx.tls
        ? `; its exec plugin's token (${ctx.execCommand}) may be dated by this machine's clock, and ${clockSays(ctx.tls.nowMs, ctx.tls.synchronised)}: if that is wrong, set it (timedatectl)`
        : '';
      return `the API server${at} rejected our credentials (401 Unauthorized) when we tried to ${ctx.action}: check the token, client certificate or exec plugin in ${ctx.credentials}${exec}`;
    }
    if (http === 403) {
      // kube-apiserver: `nodes is forbidden: User "x" cannot list resource "nodes" in API group "" at the cluster scope`
      const m = /cannot (\w+) resource "([^"]+)"/.exec(st.message ?? '');
      const what = m ? `${m[1]} ${m[2]}` : ctx.action;
      return `not allowed to ${what} (403 Forbidden${st.message ? `: ${st.message}` : ''}): ${RBAC_FIX}`;
    }
    const detail = st.message ? `: ${st.message}` : '';
    // kube-apiserver's API Priority and Fairness (or --max-requests-inflight) sheds load with
    // a 429, a plain-text body and a Retry-After, which the source waits for (retryAfterOf).
    if (http === 429) return `the API server${at} is shedding load (429 Too Many Requests, its API Priority and Fairness) and refused to ${ctx.action}; retrying later`;
    if (http >= 500) return `the API server${at} failed to ${ctx.action} (${http}${detail}); retrying`;
    return `${ctx.action} failed: ${http} ${st.reason ?? ''}${detail}`.replace(/ +/g, ' ');
  }
  if (err instanceof KubeTimeoutError || e.name === 'AbortError') {
    return `the API server${at} did not answer when we tried to ${ctx.action} (${e.message}): check the network path to it`;
  }
  const code = typeof e.code === 'string' ? e.code : '';
  if (typeof e.syscall === 'string' && e.syscall.startsWith('spawn')) {
    return `cannot run the exec credential plugin ${show(e.path ?? e.syscall.slice(6))} (${code || e.message}): install it or fix users[].user.exec.command in ${ctx.credentials}`;
  }
  const message = typeof e.message === 'string' ? e.message : String(err);
  const tlsCode = code || (/reason: (\S+)/.exec(message)?.[1] ?? '');
  const tls = explainTls(`${message} ${tlsCode}`, {
    peer: 'the API server', ca: 'certificate-authority(-data)', cert: 'client-certificate(-data)', key: 'client-key(-data)',
    host: `the server URL of ${ctx.credentials}`, files: `check certificate-authority(-data) and the server name in ${ctx.credentials}`,
  }, ctx.tls);
  if (tls) return `TLS to the API server${at} failed (${opensslReason(message) ?? (tlsCode || message)}): ${tls.why}; ${tls.fix}`;
  if (UNTRUSTED.has(tlsCode) || /certificate|self[- ]signed/i.test(message)) {
    return `the API server${at} presented a certificate we do not trust (${tlsCode || message}): check certificate-authority(-data) and the server name in ${ctx.credentials}`;
  }
  if (CUT.has(code) || message === 'Premature close') {
    return `lost the connection to the API server${at} during ${ctx.action} (${code || message}); reconnecting`;
  }
  if (UNREACHABLE.has(code) || e.name === 'FetchError') {
    return `cannot reach the API server${at} (${code || message}) to ${ctx.action}: check the server URL in ${ctx.credentials} and the network path to it`;
  }
  return `${ctx.action} failed: ${message}`;
}
