// `vxedge check`'s `stun` line: one round to the servers in nat.stun, from the tunnel's own
// address and port when they are free (so the mapping is the one the gateway will get), else
// from another port of that address (a gateway holds the port). The gateway's STUN client
// does the round (nat/stun-client.ts), with fewer retransmissions than at run time, and the
// answer is read the gateway's way: where the site is seen, and which way in that leaves
// (natAdvice). Nothing but Binding requests leaves the box.
import dgram from 'node:dgram';
import type { Config } from '../config/types.js';
import type { Underlay } from '../control/underlay.js';
import type { CheckResult } from '../health/document.js';
import { StunClient, natAdvice, type StunResult } from '../nat/stun-client.js';
import { systemClock, type Clock } from '../util/clock.js';
import { intToIp, ipToInt } from '../util/ipv4.js';

/**
 * Retransmissions for a command someone waits for: requests at 0, 0.5 and 1.5 s and 2 s for
 * the last answer, 3.5 s for a server that never answers (RFC 8489's defaults take 39.5 s).
 */
const CHECK_RTO = { rtoMs: 500, rc: 3, rm: 4 } as const;

export interface StunPreflightOptions {
  clock?: Clock;
  /** The tunnel port is held by this config's running gateway: ask from another port. */
  portHeld?: boolean;
}

/** The `stun` check; null without nat.stun servers. */
export async function stunPreflight(cfg: Config, underlay: Pick<Underlay, 'address'>, o: StunPreflightOptions = {}): Promise<CheckResult | null> {
  if (cfg.nat.stun.length === 0) return null;
  let sock: dgram.Socket;
  try {
    sock = await openSocket(underlay.address, o.portHeld ? 0 : cfg.underlay.port);
  } catch (e) {
    return { name: 'stun', ok: false, detail: `cannot ask from ${underlay.address}: ${(e as Error).message}` };
  }
  try {
    const port = sock.address().port;
    const client = new StunClient({
      servers: cfg.nat.stun, localPort: port, software: 'vxedge', clock: o.clock ?? systemClock, ...CHECK_RTO,
      send: (buf, off, len, addr, p) => {
        sock.send(buf, off, len, p, intToIp(addr));
        return true;
      },
    });
    sock.on('message', (msg, from) => client.handle(msg, 0, msg.length, ipToInt(from.address), from.port));
    const r = await new Promise<StunResult>((resolve) => {
      client.onResult(resolve);
      client.start();
    });
    client.stop();
    return judge(cfg, underlay.address, port, r);
  } finally {
    sock.close();
  }
}

/** What one round says, in the words of the running gateway's `nat.advice`. */
export function judge(cfg: Config, address: string, port: number, r: StunResult): CheckResult {
  const servers = r.servers.map((s) => `${s.server} ${s.mapped ? `saw ${s.mapped}` : `no answer (${s.error})`}`).join('; ');
  if (!r.publicEndpoint) {
    return {
      name: 'stun', ok: false, detail: `from ${address}:${port}: ${servers}`,
      fix: 'check that UDP to the STUN servers is allowed out of the site, and the names and ports in nat.stun',
    };
  }
  if (port !== cfg.underlay.port) {
    // Another port's mapping says where the site is, not how the NAT treats the tunnel's port.
    return { name: 'stun', ok: true, detail: `from ${address}:${port} (${cfg.underlay.port} is taken here: a running gateway's mapping is in vxedge status): ${servers}` };
  }
  const advice = natAdvice(r, { localAddress: address, localPort: port, vxlanPort: cfg.vxlan.port, publicIp: cfg.underlay.publicIp });
  return { name: 'stun', ok: true, detail: `from ${address}:${port}: ${servers}; ${advice}` };
}

/** A socket bound to address:port, or to another port of the address when that one is taken. */
async function openSocket(address: string, port: number): Promise<dgram.Socket> {
  const open = (p: number) => new Promise<dgram.Socket>((resolve, reject) => {
    const sock = dgram.createSocket({ type: 'udp4' });
    sock.once('error', (e) => {
      sock.close();
      reject(e);
    });
    sock.bind({ address, port: p, exclusive: true }, () => {
      sock.removeAllListeners('error');
      sock.on('error', () => undefined); // a send error is the round's to report (no answer)
      resolve(sock);
    });
  });
  try {
    return await open(port);
  } catch (e) {
    if (port === 0 || (e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
    return open(0);
  }
}
