// probePeerCertificate (util/tls-probe.ts) against a Node TLS server on loopback: the dates it
// presents, a handshake the server sees completed (no client error: etcd logs one as a
// rejected connection), a server that never answers, and TLS files that cannot be used.
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, describe, expect, it } from 'vitest';
import { probePeerCertificate } from '../../src/util/tls-probe.js';
import { systemClock } from '../../src/util/clock.js';
import { ManualClock } from '../support/clock.js';
import { makeKubePki } from '../support/kube-harness.js';

const now = Date.now();
const pki = makeKubePki([], { notBefore: new Date(now - 86_400_000), notAfter: new Date(now + 9 * 86_400_000) });
afterAll(() => pki.remove());

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

describe('probePeerCertificate', () => {
  it('reads the dates the server presents and ends the handshake so that the server completes it', async () => {
    const server = tls.createServer({ key: pki.key, cert: pki.cert });
    const seen: string[] = [];
    server.on('secureConnection', (s) => {
      seen.push('secure');
      s.on('end', () => seen.push('end'));
      s.on('error', (e) => seen.push(`error ${e.message}`));
    });
    server.on('tlsClientError', (e) => seen.push(`client error ${e.message}`));
    const port = await listen(server);
    try {
      const v = await probePeerCertificate({ host: '127.0.0.1', port, clock: systemClock, timeoutMs: 5_000 });
      expect(Math.abs(v!.to.getTime() - (now + 9 * 86_400_000))).toBeLessThan(2_000);
      expect(Math.abs(v!.from.getTime() - (now - 86_400_000))).toBeLessThan(2_000);
      // Wait for the server's side to end, with a deadline: what it saw is the assertion.
      const deadline = Date.now() + 5_000;
      while (!seen.includes('end') && !seen.some((x) => x.includes('error')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(seen).toEqual(['secure', 'end']);
    } finally {
      server.close();
    }
  });

  it('null when the server never answers the handshake, at the timeout', async () => {
    const held: net.Socket[] = [];
    const server = net.createServer((s) => held.push(s)); // accepts, says nothing
    const port = await listen(server);
    const clock = new ManualClock();
    try {
      let result: unknown = 'pending';
      void probePeerCertificate({ host: '127.0.0.1', port, clock, timeoutMs: 5_000 }).then((v) => (result = v));
      const deadline = Date.now() + 5_000;
      while (held.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      await clock.advanceAsync(4_999);
      expect(result).toBe('pending');
      await clock.advanceAsync(1);
      expect(result).toBeNull();
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  });

  it('null, not a throw, when the TLS files cannot be used (a key that is no key)', async () => {
    await expect(probePeerCertificate({ host: '127.0.0.1', port: 9, cert: Buffer.from(pki.cert), key: Buffer.from('not a key'), clock: systemClock, timeoutMs: 1_000 }))
      .resolves.toBeNull();
  });
});
