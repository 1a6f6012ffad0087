// Logs go to stdout/stderr: one JSON object a line when not a TTY (journald, fleet
// log shippers), a short human line on a terminal. Levels as in the config contract.
import type { LogLevel } from '../config/types.js';

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export class Logger {
  constructor(
    private level: LogLevel = 'info',
    private readonly json = !process.stderr.isTTY,
    private readonly bindings: Fields = {},
  ) {}

  setLevel(level: LogLevel): void {
    this.level = level;
  }

  child(bindings: Fields): Logger {
    const l = new Logger(this.level, this.json, { ...this.bindings, ...bindings });
    return l;
  }

  debug(msg: string, fields?: Fields): void {
    this.write('debug', msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.write('info', msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.write('warn', msg, fields);
  }
  error(msg: string, fields?: Fields): void {
    this.write('error', msg, fields);
  }

  private write(level: LogLevel, msg: string, fields?: Fields): void {
    if (ORDER[level] < ORDER[this.level]) return;
    const all = { ...this.bindings, ...fields };
    const stream = ORDER[level] >= ORDER.warn ? process.stderr : process.stdout;
    if (this.json) {
      stream.write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...all }) + '\n');
    } else {
      const extra = Object.entries(all)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      stream.write(`${level.padEnd(5)} ${msg}${extra ? ' ' + extra : ''}\n`);
    }
  }
}
