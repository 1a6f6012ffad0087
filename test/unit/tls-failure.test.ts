// The shared words of a TLS failure (src/util/tls-failure.ts): causes from real error texts
// (Node's, OpenSSL's through Node, gRPC's around them), the clock's reading, and our own client
// certificate's dates when the peer refused it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { certValidity, clockSays, explainTls, NETWORK_TIME_FIX, opensslReason, peerCertValidity, utcMinute, validityProblem, type TlsWords } from '../../src/util/tls-failure.js';

const FIXTURES = path.join(import.meta.dirname, '..', 'fixtures', 'tls');
const WORDS: TlsWords = { peer: 'the broker', ca: 'mqtt.ca', cert: 'mqtt.cert', key: 'mqtt.key', host: 'mqtt.url', files: 'check mqtt.ca/cert/key' };
const NOW = Date.UTC(2026, 11, 6, 11, 20, 34);

/** As grpc-js reports etcd refusing a client certificate (seen with etcd 3.4, December 6). */
const GRPC_BAD_CERT =
  '14 UNAVAILABLE: No connection established. Last error: 802C43E3ED7F0000:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:' +
  '../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 42 (2026-12-06T11:20:34.759Z). Resolution note: ';

describe('certValidity', () => {
  it("reads a certificate's dates from its PEM; anything else is null", () => {
    expect(certValidity(readFileSync(path.join(FIXTURES, 'ended-2020-01-02.crt')))).toEqual({
      from: new Date('2020-01-01T00:00:00Z'), to: new Date('2020-01-02T00:00:00Z'),
    });
    expect(certValidity(readFileSync(path.join(FIXTURES, 'starts-2099-01-01.crt'), 'utf8'))?.from).toEqual(new Date('2099-01-01T00:00:00Z'));
    expect(certValidity('not a certificate')).toBeNull();
    expect(certValidity(Buffer.alloc(0))).toBeNull();
  });
});

describe('peerCertValidity', () => {
  it("a TLS socket's peer certificate dates as Node gives them; anything else is null", () => {
    const socket = (c: unknown) => ({ getPeerCertificate: () => c });
    expect(peerCertValidity(socket({ valid_from: 'Jan  1 00:00:00 2026 GMT', valid_to: 'Dec 31 23:59:59 2026 GMT' }))).toEqual({
      from: new Date('2026-01-01T00:00:00Z'), to: new Date('2026-12-31T23:59:59Z'),
    });
    expect(peerCertValidity(socket({}))).toBeNull(); // a socket whose handshake is not done: {}
    expect(peerCertValidity(socket({ valid_from: 'soon', valid_to: 'later' }))).toBeNull();
    expect(peerCertValidity({})).toBeNull(); // a plain socket, a WebSocket stream
    expect(peerCertValidity(null)).toBeNull();
  });
});

describe('validityProblem', () => {
  const v = { from: new Date('2026-01-01T00:00:00Z'), to: new Date('2026-12-31T00:00:00Z') };
  it('names the end passed or the start not reached; both ends themselves are inside', () => {
    expect(validityProblem(v, v.to.getTime() + 1, 'it')).toBe('it expired on 2026-12-31 00:00 UTC');
    expect(validityProblem(v, v.from.getTime() - 1, 'it')).toBe('it is valid only from 2026-01-01 00:00 UTC');
    expect(validityProblem(v, v.to.getTime(), 'it')).toBeNull();
    expect(validityProblem(v, v.from.getTime(), 'it')).toBeNull();
  });
});

describe('opensslReason', () => {
  it("takes OpenSSL's reason wherever it stands: at the start (Node) or inside gRPC's words", () => {
    expect(opensslReason('80AC6A85B77F0000:error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 48\n'))
      .toBe('tlsv1 alert unknown ca');
    expect(opensslReason(GRPC_BAD_CERT)).toBe('sslv3 alert bad certificate');
    expect(opensslReason('certificate has expired')).toBeNull();
  });

  it('never throws, and what it returns is part of the text (fast-check)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => {
      const r = opensslReason(s);
      return r === null || s.includes(r);
    }));
  });
});

describe('explainTls', () => {
  const ctx = { nowMs: NOW };
  it("the peer's certificate and the clock: the clock's reading is in the words", () => {
    expect(explainTls('certificate is not yet valid CERT_NOT_YET_VALID', WORDS, ctx)).toEqual({
      why: "the broker's certificate is not valid yet, or this machine's clock is wrong: it says 2026-12-06 11:20 UTC",
      fix: "check this machine's clock (timedatectl; a board without a battery-backed clock needs network time first)",
    });
    expect(explainTls('certificate has expired', WORDS, ctx)).toEqual({
      why: "the broker's certificate has expired, or this machine's clock is wrong: it says 2026-12-06 11:20 UTC",
      fix: "check this machine's clock (timedatectl), else the broker's certificate needs renewing",
    });
    // Without a context (no clock to read), the same advice without the reading.
    expect(explainTls('CERT_HAS_EXPIRED', WORDS)?.why).toBe("the broker's certificate has expired, or this machine's clock is wrong");
  });

  it("what the kernel says of the clock's sync decides which is blamed: a kept clock is right, an unkept one is the first suspect", () => {
    const kept = { nowMs: NOW, synchronised: true };
    expect(explainTls('certificate has expired', WORDS, kept)).toEqual({
      why: "the broker's certificate has expired (this machine's clock says 2026-12-06 11:20 UTC, kept by network time)",
      fix: "the broker's certificate needs renewing",
    });
    expect(explainTls('CERT_NOT_YET_VALID', WORDS, kept)).toEqual({
      why: "the broker's certificate is not valid yet (this machine's clock says 2026-12-06 11:20 UTC, kept by network time)",
      fix: "the broker's certificate starts in the future: issue it again from now, or wait until it starts",
    });
    const unkept = { nowMs: NOW, synchronised: false };
    expect(explainTls('CERT_NOT_YET_VALID', WORDS, unkept)).toEqual({
      why: "the broker's certificate is not valid yet, or this machine's clock is wrong: it says 2026-12-06 11:20 UTC and network time does not keep it",
      fix: NETWORK_TIME_FIX,
    });
    expect(explainTls('certificate has expired', WORDS, unkept)?.fix).toBe(`${NETWORK_TIME_FIX}, else the broker's certificate needs renewing`);
    expect(NETWORK_TIME_FIX).toMatch(/^give this machine network time \(`timedatectl set-ntp true`, or chrony\) until `timedatectl` says "System clock synchronized: yes"/);
    // Not known (null, as when the addon cannot be loaded): the words without it, as above.
    expect(explainTls('CERT_NOT_YET_VALID', WORDS, { nowMs: NOW, synchronised: null })).toEqual(explainTls('CERT_NOT_YET_VALID', WORDS, ctx));
    // Our own certificate refused: the clock's words carry the sync too.
    const ended = certValidity(readFileSync(path.join(FIXTURES, 'ended-2020-01-02.crt')));
    expect(explainTls(GRPC_BAD_CERT, WORDS, { ...unkept, clientCert: ended })?.why).toBe(
      "the broker refused our client certificate: the one in mqtt.cert expired on 2020-01-02 00:00 UTC, and this machine's clock says 2026-12-06 11:20 UTC and network time does not keep it",
    );
    expect(clockSays(NOW, true)).toBe("this machine's clock says 2026-12-06 11:20 UTC, kept by network time");
    expect(clockSays(NOW)).toBe("this machine's clock says 2026-12-06 11:20 UTC");
  });

  it('the CA, the name, and the alerts a peer sends about our certificate', () => {
    const why = (text: string) => explainTls(text, WORDS, ctx)?.why;
    expect(why('unable to verify the first certificate')).toBe("the broker's certificate is not signed by a CA in mqtt.ca");
    expect(why('self-signed certificate in certificate chain')).toBe("the broker's certificate is not signed by a CA in mqtt.ca");
    expect(why('x ERR_TLS_CERT_ALTNAME_INVALID')).toBe("the broker's certificate does not name the host of mqtt.url");
    expect(why('tlsv1 alert unknown ca')).toBe('the broker does not trust the client certificate in mqtt.cert');
    expect(why('tlsv13 alert certificate required')).toBe('the broker requires a client certificate: set mqtt.cert and mqtt.key');
    expect(why(GRPC_BAD_CERT)).toBe('the broker refused the client certificate in mqtt.cert');
    expect(why('sslv3 alert certificate expired')).toBe('the broker says the client certificate has expired or was revoked');
    expect(explainTls('read ECONNRESET', WORDS, ctx)).toBeNull();
  });

  it("a refused client certificate that our clock says is out of its dates: that is the why, with both dates", () => {
    const ended = certValidity(readFileSync(path.join(FIXTURES, 'ended-2020-01-02.crt')));
    const future = certValidity(readFileSync(path.join(FIXTURES, 'starts-2099-01-01.crt')));
    for (const alert of [GRPC_BAD_CERT, 'sslv3 alert certificate expired', 'tlsv1 alert unknown ca']) {
      expect(explainTls(alert, WORDS, { nowMs: NOW, clientCert: ended })).toEqual({
        why: "the broker refused our client certificate: the one in mqtt.cert expired on 2020-01-02 00:00 UTC, and this machine's clock says 2026-12-06 11:20 UTC",
        fix: "renew mqtt.cert (or, if this machine's clock is what is wrong, set it: timedatectl)",
      });
    }
    expect(explainTls(GRPC_BAD_CERT, WORDS, { nowMs: NOW, clientCert: future })?.why).toBe(
      "the broker refused our client certificate: the one in mqtt.cert is valid only from 2099-01-01 00:00 UTC, and this machine's clock says 2026-12-06 11:20 UTC",
    );
    // Our certificate's dates are no cause of the peer's own certificate failing, nor of a missing one.
    expect(explainTls('certificate has expired', WORDS, { nowMs: NOW, clientCert: ended })?.why).toMatch(/^the broker's certificate has expired/);
    expect(explainTls('tlsv13 alert certificate required', WORDS, { nowMs: NOW, clientCert: ended })?.why).toMatch(/requires a client certificate/);
  });

  it('never throws on any text (fast-check)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), fc.integer({ min: 0, max: 2 ** 42 }), (s, now) => {
      const e = explainTls(s, WORDS, { nowMs: now, clientCert: { from: new Date(0), to: new Date(1) } });
      return e === null || (e.why.length > 0 && e.fix.length > 0);
    }));
  });

  it('utcMinute: a minute in UTC; a time that is none is shown as given', () => {
    expect(utcMinute(Date.UTC(2026, 0, 2, 3, 4, 59))).toBe('2026-01-02 03:04 UTC');
    expect(utcMinute(Number.NaN)).toBe('NaN');
  });
});
