// Where a fresh health document goes: MQTT (at once when the gateway's or a peer's state
// changed, changes that keep coming at most every 5 s; else on its interval), the status LED, status.json, and the gateway's own
// listeners (systemd STATUS=). It also logs the gateway's state changes, once each.
import type { Logger } from '../util/log.js';
import type { HealthDocument } from './document.js';
import type { StatusLed } from './led.js';
import type { HealthPublisher } from './mqtt.js';
import type { StatusFile } from './status-file.js';

/** The states that make a document "changed": the gateway's and every peer's. */
export function stateKey(doc: HealthDocument): string {
  return `${doc.state} ${doc.peers.map((p) => `${p.name}=${p.state}`).join(',')}`;
}

export class HealthReporter {
  private lastState: string | null = null;
  private lastKey = '';
  private readonly listeners: ((doc: HealthDocument, changed: boolean) => void)[] = [];

  constructor(
    private readonly o: {
      publisher: Pick<HealthPublisher, 'update'>;
      led: Pick<StatusLed, 'show'> | null;
      status: Pick<StatusFile, 'write'>;
      log: Logger;
    },
  ) {}

  onDocument(fn: (doc: HealthDocument, changed: boolean) => void): void {
    this.listeners.push(fn);
  }

  report(doc: HealthDocument): void {
    if (doc.state !== this.lastState) {
      this.o.log.info('gateway state', { state: doc.state, was: this.lastState });
      this.lastState = doc.state;
    }
    const key = stateKey(doc);
    const changed = key !== this.lastKey;
    this.lastKey = key;
    this.o.publisher.update(doc, changed);
    this.o.led?.show(doc.state);
    for (const fn of this.listeners) fn(doc, changed);
    this.o.status.write(doc);
  }
}
