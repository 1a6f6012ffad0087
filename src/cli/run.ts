// `vxedge run`: the gateway in the foreground until SIGTERM/SIGINT.
//   SIGTERM/SIGINT: stop cleanly (routes and device removed), exit 0 within 5 s.
//   The data plane stopped for good (its device deleted under it): the same stop, exit 1.
//   SIGHUP: re-read the config file; apply peer changes; keep the running config if the new one is invalid.
//     One during start-up is held (holdHangups) and acted on once the gateway is up.
// Under systemd (Type=notify): READY=1, STATUS=, RELOADING=1, STOPPING=1 and gated watchdog pings.
import { loadConfig, formatConfigError, formatConfigErrorLine } from '../config/index.js';
import { ConfigError, type Config } from '../config/types.js';
import { Gateway } from '../gateway.js';
import { OpenError } from '../dataplane/open.js';
import { nativeBinding } from '../native/index.js';
import { systemClock } from '../util/clock.js';
import { Logger } from '../util/log.js';
import { UnderlayError } from '../control/underlay.js';
import { StateError } from '../control/state.js';
import { IpCommandError } from '../control/iproute.js';
import { DeviceInUseError } from '../control/device.js';
import { SdNotify, statusText } from '../health/sd-notify.js';
import { Reloads, holdHangups } from './reloads.js';
import { StartupPages } from '../util/startup-pages.js';

const STOP_DEADLINE_MS = 4500;

export async function runGateway(cfg: Config, file: string, version: string): Promise<number> {
  const log = new Logger(cfg.log.level).child({ site: cfg.site, node: cfg.node });
  const clock = systemClock;
  const sd = new SdNotify({ log: log.child({ part: 'systemd' }), clock });
  sd.startWatchdog(); // gated on the event loop alone until the gateway is up
  const hangups = holdHangups();
  let gw: Gateway;
  let startupPages: StartupPages | null = null;
  try {
    const binding = nativeBinding();
    if (cfg.board.releaseStartupPages) {
      startupPages = new StartupPages({ releasePages: (r) => binding.releasePages(r), clock, log: log.child({ part: 'memory' }) });
      startupPages.release('loaded');
    }
    gw = await Gateway.start(cfg, { binding, clock, log, version });
  } catch (e) {
    hangups.release();
    sd.stopWatchdog();
    startupPages?.stop();
    if (
      e instanceof OpenError || e instanceof UnderlayError || e instanceof StateError ||
      e instanceof IpCommandError || e instanceof DeviceInUseError
    ) {
      log.error(e.message);
      return 1;
    }
    throw e;
  }
  sd.setLivenessCheck(() => gw.liveness());
  sd.ready(statusText(gw.health()));
  gw.on('health', (doc) => sd.status(statusText(doc)));
  startupPages?.afterReady();
  return new Promise<number>((resolve) => {
    let stopping = false;
    /** A clean stop; it exits `code` (1 for a fatal error) once done, 1 when it failed or took too long. */
    const stop = (signal: string, code = 0) => {
      if (stopping) return;
      stopping = true;
      sd.stopping();
      startupPages?.stop();
      log.info('stopping', { signal });
      const force = clock.after(STOP_DEADLINE_MS, () => {
        log.error('clean stop took too long; exiting anyway');
        resolve(1);
      }, { keepAlive: true });
      gw.stop().then(
        () => {
          force.cancel();
          resolve(code);
        },
        (e) => {
          force.cancel();
          log.error('error while stopping', { err: (e as Error).message });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // Without this a gateway whose device was deleted lived on forwarding nothing until a
    // watchdog (systemd's only) killed it: exit 1 so that any supervisor starts a fresh one.
    gw.on('fatal', (why: string) => {
      log.error(`${why}; stopping so that the service manager starts a fresh gateway (exit 1)`);
      stop('fatal', 1);
    });
    const reloadOnce = async (): Promise<void> => {
      let next: Config;
      try {
        next = loadConfig(file);
      } catch (e) {
        if (e instanceof ConfigError) {
          log.error('reload refused: the new config is invalid; keeping the running one', { problems: formatConfigError(e) });
          gw.reloadRefused(formatConfigErrorLine(e));
        } else {
          log.error('reload failed', { err: (e as Error).message });
          gw.reloadRefused((e as Error).message);
        }
        return;
      }
      log.setLevel(next.log.level);
      try {
        const r = await gw.reload(next);
        log.info('reloaded', { added: r.added, removed: r.removed, changed: r.changed, applied: r.live });
        if (r.restart.length) log.warn('some changes need a restart to take effect (systemctl restart vxedge)', { keys: r.restart });
      } catch (e) {
        log.error('reload failed', { err: (e as Error).message });
      }
    };
    // One at a time; READY=1 once after the last, never after STOPPING=1 (cli/reloads.ts).
    const reloads = new Reloads({
      reloadOnce,
      reloading: () => sd.reloading(),
      ready: () => sd.ready(statusText(gw.health())),
      stopping: () => stopping,
    });
    process.on('SIGHUP', () => void reloads.signal());
    if (hangups.release()) {
      log.info('SIGHUP during start-up: reading the config file again now that the gateway is up');
      void reloads.signal();
    }
  });
}
