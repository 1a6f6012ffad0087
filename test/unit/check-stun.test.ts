// `vxedge check`'s stun line (src/cli/check-stun.ts): one round through real UDP sockets on
// the loopback to a small Binding responder in this file, and the verdicts read from a round.
// The same through the lab's NAT against coturn: test/lab/stun.test.ts.
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { judge, stunPreflight } from '../../src/cli/check-stun.js';
import { configFromObject } from '../../src/config/index.js';
import type { StunResult } from '../../src/nat/stun-client.js';
import { bindingSuccess } from '../support/stun.js';

const cfg = (stun: string[], port: number, publicIp: string | null = null) =>
  configFromObject({ site: 'lab', node: 'e1', overlay: { subnet: '10.244.100.0/24' }, underlay: { port, publicIp }, nat: { stun } }, 'site.yaml', {});

describe('vxedge check: the stun line', () => {
  let server: dgram.Socket;
  let serverPort = 0;
  const seenFrom: number[] = [];
  beforeAll(async () => {
    server = dgram.createSocket('udp4');
    server.on('message', (msg, from) => {
      seenFrom.push(from.port);
      server.send(bindingSuccess(msg, from.address, from.port), from.port, from.address);
    });
    await new Promise<void>((r) => server.bind(0, '127.0.0.1', () => r()));
    serverPort = server.address().port;
  });
  afterAll(() => server.close());

  it('no nat.stun, no line', async () => {
    expect(await stunPreflight(cfg([], 8472), { address: '127.0.0.1' })).toBeNull();
  });

  it('asks from the tunnel port when it is free, and reads the answer as the gateway does', async () => {
    const probe = dgram.createSocket('udp4');
    await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
    const port = probe.address().port; // a port known to be free once closed
    probe.close();
    const line = await stunPreflight(cfg([`127.0.0.1:${serverPort}`], port), { address: '127.0.0.1' });
    expect(seenFrom.at(-1)).toBe(port);
    // The loopback is no NAT: what the server saw is the local endpoint.
    expect(line).toMatchObject({ name: 'stun', ok: true, detail: `from 127.0.0.1:${port}: 127.0.0.1:${serverPort} saw 127.0.0.1:${port}; no NAT: 127.0.0.1 is public; AWS nodes reach the gateway directly at 127.0.0.1:8472 (allow UDP 8472 from them).` });
  });

  it('asks from another port when the tunnel port is taken, and says so instead of judging the NAT', async () => {
    const holder = dgram.createSocket('udp4');
    await new Promise<void>((r) => holder.bind(0, '127.0.0.1', () => r()));
    const port = holder.address().port;
    try {
      const line = await stunPreflight(cfg([`127.0.0.1:${serverPort}`], port), { address: '127.0.0.1' });
      expect(seenFrom.at(-1)).not.toBe(port);
      expect(line).toMatchObject({ ok: true, detail: expect.stringMatching(new RegExp(`^from 127\\.0\\.0\\.1:\\d+ \\(${port} is taken here: a running gateway's mapping is in vxedge status\\): 127\\.0\\.0\\.1:${serverPort} saw 127\\.0\\.0\\.1:\\d+$`)) });
    } finally {
      holder.close();
    }
  });

  it('judges a round: nobody answered fails with what to check; a NAT that does not keep the port says a forward is needed', () => {
    const c = cfg(['198.51.100.1:3478'], 8472);
    const round = (mapped: string | null): StunResult => ({
      servers: [{ server: '198.51.100.1:3478', mapped, error: mapped ? null : 'no answer to 3 requests', rttMs: mapped ? 10 : null }],
      publicEndpoint: mapped, portPreserved: mapped ? mapped.endsWith(':8472') : null, mappingVaries: null, at: 0, reason: 'start',
    });
    expect(judge(c, '192.0.2.10', 8472, round(null))).toMatchObject({
      ok: false, detail: 'from 192.0.2.10:8472: 198.51.100.1:3478 no answer (no answer to 3 requests)', fix: expect.stringContaining('UDP to the STUN servers'),
    });
    expect(judge(c, '192.0.2.10', 8472, round('198.51.100.2:40001'))).toMatchObject({
      ok: true, detail: expect.stringContaining('the NAT does not preserve the port (local 8472, public 40001): AWS nodes always send to port 8472, so the site router needs a port forward of UDP 8472 to 192.0.2.10:8472'),
    });
  });
});
