// `vxedge run`: the gateway in the foreground until SIGTERM/SIGINT.
//   SIGTERM/SIGINT: stop cleanly (routes and device removed), exit 0 within 5 s.
//   SIGHUP: re-read the config file; apply peer changes; keep the running config if the new one is invalid.
import { loadConfig, formatConfigError } from '../config/index.js';
import { ConfigError, type Config } from '../config/types.js';
import { Gateway, GatewayError } from '../gateway.js';
import { Logger } from '../util/log.js';
import { UnderlayError } from '../control/underlay.js';
import { StateError } from '../control/state.js';
import { IpCommandError } from '../control/iproute.js';

const STOP_DEADLINE_MS = 4500;

export async function runGateway(cfg: Config, file: string, version: string): Promise<number> {
  const log = new Logger(cfg.log.level).child({ site: cfg.site, node: cfg.node });
  let gw: Gateway;
  try {
    gw = await Gateway.start(cfg, log, version);
  } catch (e) {
    if (e instanceof GatewayError || e instanceof UnderlayError || e instanceof StateError || e instanceof IpCommandError) {
      log.error(e.message);
      return 1;
    }
    throw e;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { signal });
      const force = setTimeout(() => {
        log.error('clean stop took too long; exiting anyway');
        resolve(1);
      }, STOP_DEADLINE_MS);
      gw.stop().then(
        () => {
          clearTimeout(force);
          resolve(0);
        },
        (e) => {
          clearTimeout(force);
          log.error('error while stopping', { err: (e as Error).message });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      let next: Config;
      try {
        next = loadConfig(file);
      } catch (e) {
        if (e instanceof ConfigError) {
          log.error('reload refused: the new config is invalid; keeping the running one', { problems: formatConfigError(e) });
          return;
        }
        log.error('reload failed', { err: (e as Error).message });
        return;
      }
      log.setLevel(next.log.level);
      gw.reload(next).then(
        (r) => {
          log.info('reloaded', { added: r.added, removed: r.removed, changed: r.changed });
          if (r.restartNeeded.length) log.warn('some changes need a restart to take effect', { keys: r.restartNeeded });
        },
        (e) => log.error('reload failed', { err: (e as Error).message }),
      );
    });
  });
}
