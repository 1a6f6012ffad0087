// What a failed TLS handshake means, in words an operator acts on, for each of vxedge's TLS
// clients (the broker, the Kubernetes API server, etcd), each naming its own config keys.
//
// Two causes are in no file an error names. A wrong clock: a board without a battery-backed
// clock starts in the past (or at the date fake-hwclock saved) until its first network-time
// sync, and every certificate is then "not yet valid", or one saved long ago looks expired.
// And our own client certificate past its end (kubeadm's last a year): the server only says
// "bad certificate". So the words carry the clock's reading, and our client certificate's
// dates when they are the cause, read from the file we were given.
import { X509Certificate } from 'node:crypto';

/** A certificate's validity period. */
export interface CertValidity {
  from: Date;
  to: Date;
}

/** A certificate the site uses, by where it is set or who presented it, and its dates. */
export interface SiteCertificate {
  /** "mqtt.cert", "client-certificate of kubeconfig /etc/vxedge/kubeconfig", "the broker's certificate". */
  what: string;
  validity: CertValidity;
  /** A server presented it (the broker's, the API server's, etcd's): its operator renews it, not the site. */
  presented?: boolean;
  /**
   * A CA file that holds several certificates (a bundle): each is a trust anchor of its own, so
   * the file serves while one of them is valid. `validity` is then its first certificate's.
   */
  anchors?: CertValidity[];
}

/** A validity from the dates as OpenSSL prints them ("Jan  1 00:00:00 2026 GMT"); null if either is none. */
function datesOf(validFrom: string, validTo: string): CertValidity | null {
  const from = new Date(validFrom);
  const to = new Date(validTo);
  return Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) ? null : { from, to };
}

/** The validity of the first certificate in `pem`; null if it holds none that parses. */
export function certValidity(pem: string | Buffer): CertValidity | null {
  try {
    const c = new X509Certificate(pem);
    return datesOf(c.validFrom, c.validTo);
  } catch {
    return null;
  }
}

/** The validity of each certificate in `pem`, in order (a CA bundle); those that do not parse are left out. */
export function bundleValidity(pem: string | Buffer): CertValidity[] {
  const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g);
  if (!blocks) return [certValidity(pem)].filter((v): v is CertValidity => v !== null); // DER
  return blocks.map((b) => certValidity(b)).filter((v): v is CertValidity => v !== null);
}

/**
 * The validity of the certificate a TLS peer presented on `socket` (a TLSSocket, or anything
 * else: then null), as Node read it in the handshake.
 */
export function peerCertValidity(socket: unknown): CertValidity | null {
  const s = socket as { getPeerCertificate?: () => { valid_from?: string; valid_to?: string } | null } | null;
  if (typeof s?.getPeerCertificate !== 'function') return null;
  const c = s.getPeerCertificate();
  return c?.valid_from && c.valid_to ? datesOf(c.valid_from, c.valid_to) : null;
}

/** A wall time as a log reader takes it in: "2026-12-06 11:20 UTC". */
export function utcMinute(t: Date | number): string {
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : `${d.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

/**
 * "this machine's clock says …": beside every cause a wrong clock could be, with the
 * kernel's word on whether network time keeps it when that is known (util/clock-sync.ts).
 */
export function clockSays(nowMs: number, synchronised?: boolean | null): string {
  return `this machine's clock says ${utcMinute(nowMs)}${syncWords(synchronised)}`;
}

/** ", kept by network time" / " and network time does not keep it" / "" when not known. */
export function syncWords(synchronised: boolean | null | undefined): string {
  if (synchronised === true) return ', kept by network time';
  if (synchronised === false) return ' and network time does not keep it';
  return '';
}

/** Why `what` (a certificate) is not valid at `nowMs`; null when it is. */
export function validityProblem(v: CertValidity, nowMs: number, what: string): string | null {
  if (nowMs > v.to.getTime()) return `${what} expired on ${utcMinute(v.to)}`;
  if (nowMs < v.from.getTime()) return `${what} is valid only from ${utcMinute(v.from)}`;
  return null;
}

/**
 * OpenSSL's reason in an error's text: "sslv3 alert bad certificate" of
 * "80AC…:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:../deps/…",
 * wherever it stands (gRPC puts it after its own words); null when there is none.
 */
export function opensslReason(text: string): string | null {
  const m = /[0-9A-F]+:error:[0-9A-F]+:[^:\n]*:[^:\n]*:([^:\n]+):/i.exec(text);
  return m ? m[1] : null;
}

/** What a client names in its words: the peer, and where each of its TLS settings is. */
export interface TlsWords {
  /** "the broker", "the API server", "etcd". */
  peer: string;
  /** Where its CA is set: "mqtt.ca". */
  ca: string;
  /** Where our client certificate and key are set: "mqtt.cert" / "mqtt.key". */
  cert: string;
  key: string;
  /** Where the host it was asked for is: "mqtt.url". */
  host: string;
  /** What to check when nothing more precise is known: "check mqtt.ca/cert/key". */
  files: string;
}

/** What the operator's machine knows besides the error: the clock, and our certificate's dates. */
export interface TlsContext {
  nowMs: number;
  /** Whether network time keeps the clock (Clock.synchronised); absent or null: not known. */
  synchronised?: boolean | null;
  /** Our client certificate's validity, when one is set and readable. */
  clientCert?: CertValidity | null;
}

export interface TlsExplanation {
  why: string;
  fix: string;
}

type Cause = 'expired' | 'notYetValid' | 'untrusted' | 'name' | 'unknownCa' | 'required' | 'refused' | 'refusedExpired';

/** By OpenSSL's reason or Node's code, in the text of the error (message and code). */
const CAUSES: [RegExp, Cause][] = [
  [/alert unknown ca/i, 'unknownCa'],
  [/alert certificate required/i, 'required'],
  [/alert (bad certificate|certificate unknown|unsupported certificate)/i, 'refused'],
  [/alert certificate (expired|revoked)/i, 'refusedExpired'],
  [/self[- ]signed|unable to (verify|get (local )?issuer)|UNABLE_TO_(VERIFY|GET_ISSUER)|SELF_SIGNED/i, 'untrusted'],
  [/CERT_HAS_EXPIRED|certificate has expired/i, 'expired'],
  [/CERT_NOT_YET_VALID|not yet valid/i, 'notYetValid'],
  [/ALTNAME_INVALID|Hostname\/IP does not match|HOSTNAME_MISMATCH/i, 'name'],
];

/** Node's codes for a peer certificate its check refused (the broker's, a proxy's). */
export const TLS_VERIFY_CODES: ReadonlySet<string> = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED', 'CERT_REJECTED', 'CERT_SIGNATURE_FAILURE', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** What to do about a clock that network time does not keep. */
export const NETWORK_TIME_FIX =
  'give this machine network time (`timedatectl set-ntp true`, or chrony) until `timedatectl` says "System clock synchronized: yes": ' +
  'a board without a battery-backed clock is right only from then on';

/** The explanation of a TLS failure whose text (message, code) is `text`; null when the cause is not one we know. */
export function explainTls(text: string, w: TlsWords, ctx?: TlsContext): TlsExplanation | null {
  const cause = CAUSES.find(([re]) => re.test(text))?.[1];
  if (!cause) return null;
  const says = ctx ? `: it says ${utcMinute(ctx.nowMs)}${syncWords(ctx.synchronised)}` : '';
  // The peer refused our certificate: if our clock says it is out of its dates, that is why.
  const ours = ctx?.clientCert ? validityProblem(ctx.clientCert, ctx.nowMs, `the one in ${w.cert}`) : null;
  if (ours && (cause === 'refused' || cause === 'refusedExpired' || cause === 'unknownCa')) {
    return { why: `${w.peer} refused our client certificate: ${ours}, and ${clockSays(ctx!.nowMs, ctx!.synchronised)}`, fix: `renew ${w.cert} (or, if this machine's clock is what is wrong, set it: timedatectl)` };
  }
  switch (cause) {
    case 'unknownCa':
      return { why: `${w.peer} does not trust the client certificate in ${w.cert}`, fix: w.files };
    case 'required':
      return { why: `${w.peer} requires a client certificate: set ${w.cert} and ${w.key}`, fix: w.files };
    case 'refused':
      return { why: `${w.peer} refused the client certificate in ${w.cert}`, fix: w.files };
    case 'refusedExpired':
      return { why: `${w.peer} says the client certificate has expired or was revoked`, fix: w.files };
    case 'untrusted':
      return { why: `${w.peer}'s certificate is not signed by a CA in ${w.ca}`, fix: w.files };
    case 'expired':
      // A clock that network time keeps is right: the certificate is what is wrong.
      if (ctx?.synchronised === true) {
        return { why: `${w.peer}'s certificate has expired (${clockSays(ctx.nowMs, true)})`, fix: `${w.peer}'s certificate needs renewing` };
      }
      return { why: `${w.peer}'s certificate has expired, or this machine's clock is wrong${says}`, fix: ctx?.synchronised === false ? `${NETWORK_TIME_FIX}, else ${w.peer}'s certificate needs renewing` : `check this machine's clock (timedatectl), else ${w.peer}'s certificate needs renewing` };
    case 'notYetValid':
      if (ctx?.synchronised === true) {
        return {
          why: `${w.peer}'s certificate is not valid yet (${clockSays(ctx.nowMs, true)})`,
          fix: `${w.peer}'s certificate starts in the future: issue it again from now, or wait until it starts`,
        };
      }
      return {
        why: `${w.peer}'s certificate is not valid yet, or this machine's clock is wrong${says}`,
        fix: ctx?.synchronised === false ? NETWORK_TIME_FIX : "check this machine's clock (timedatectl; a board without a battery-backed clock needs network time first)",
      };
    case 'name':
      return { why: `${w.peer}'s certificate does not name the host of ${w.host}`, fix: `put in ${w.host} a host name (or address) that ${w.peer}'s certificate names` };
  }
}
