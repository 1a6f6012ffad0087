// Driver for test/lab/portmap.test.ts: the production PortMapper (compiled, dist/) runs here,
// in a child started inside the site's LAN namespace (`ip netns exec NS node portmap-child.mjs ...`),
// because the router it talks to lives on that LAN.
//
//   node portmap-child.mjs run '<options JSON>'    starts a PortMapper with the options (mode, gateway,
//                                                  localAddress, port, lifetimeS, checkIntervalS); prints
//                                                  one JSON line per change of status() ({"type":"status"},
//                                                  polled every 50 ms, so renewals show) and per external
//                                                  address ({"type":"address"}); on {"cmd":"stop"} (stdin)
//                                                  or SIGTERM it stops, which deletes the mapping, prints
//                                                  {"type":"stopped","status":...} and exits 0
//   node portmap-child.mjs probe '<options JSON>'  runs probe() and prints {"type":"probe","results":[...]}
//   node portmap-child.mjs once '<options JSON>'   start, wait until mapped or failed (or 10 s), stop;
//                                                  prints {"type":"once","status":...} (mode off: at once)
//
// Lines of the mapper's own log are JSON too but carry "level" instead of "type". Every run is
// bounded: a watchdog prints {"type":"error","error":"timeout"} and exits 3 (default after 60 s).
import { createInterface } from 'node:readline';
import { dist, guard, out } from './child-io.mjs';

const scenario = process.argv[2];
const opts = process.argv[3] ? JSON.parse(process.argv[3]) : {};
guard(opts.lifetimeMs);

const { PortMapper } = await import(new URL('nat/portmap/portmapper.js', dist));
const { systemClock } = await import(new URL('util/clock.js', dist));
const { Logger } = await import(new URL('util/log.js', dist));

const pm = new PortMapper({
  mode: opts.mode ?? 'auto',
  gateway: opts.gateway,
  localAddress: opts.localAddress,
  port: opts.port ?? 8472,
  lifetimeS: opts.lifetimeS,
  checkIntervalS: opts.checkIntervalS,
  clock: systemClock,
  log: new Logger(opts.logLevel ?? 'info', true),
});
pm.onExternalAddress((ip) => out({ type: 'address', ip }));

if (scenario === 'probe') {
  out({ type: 'probe', results: await pm.probe() });
  process.exit(0);
} else if (scenario === 'once') {
  pm.start();
  const end = Date.now() + 10_000;
  while (!['mapped', 'failed', 'off'].includes(pm.status().state) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  const status = pm.status();
  await pm.stop();
  out({ type: 'once', status });
  process.exit(0);
} else if (scenario === 'run') {
  let last = '';
  const poll = setInterval(() => {
    const s = pm.status();
    const key = JSON.stringify(s);
    if (key !== last) {
      last = key;
      out({ type: 'status', status: s });
    }
  }, 50);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(poll);
    await pm.stop();
    out({ type: 'stopped', status: pm.status() });
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (JSON.parse(l).cmd === 'stop') void stop();
  });
  pm.start();
} else {
  out({ type: 'error', error: `unknown scenario ${scenario}` });
  process.exit(2);
}
