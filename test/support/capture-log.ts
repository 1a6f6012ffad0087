// Test helpers with no I/O: a Logger that keeps its lines, and a way to let pending
// asynchronous work run before asserting on it.

import { Logger, type Fields } from '../../src/util/log.js';
import type { LogLevel } from '../../src/config/types.js';

/** Keeps every line instead of printing it; child() shares the list. */
export class CaptureLog extends Logger {
  constructor(readonly lines: { level: LogLevel; msg: string; fields?: Fields }[] = []) {
    super('debug', true);
  }
  override child(): Logger {
    return this;
  }
  override debug(msg: string, fields?: Fields): void {
    this.lines.push({ level: 'debug', msg, fields });
  }
  override info(msg: string, fields?: Fields): void {
    this.lines.push({ level: 'info', msg, fields });
  }
  override warn(msg: string, fields?: Fields): void {
    this.lines.push({ level: 'warn', msg, fields });
  }
  override error(msg: string, fields?: Fields): void {
    this.lines.push({ level: 'error', msg, fields });
  }
}

/** Lets every pending promise chain and immediate run, `rounds` turns of the event loop deep
 *  (fakes that answer asynchronously need a few). */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}
