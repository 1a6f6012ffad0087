// Learned endpoints, kept in stateDir/endpoints.json: when a peer roamed (its frames came
// from a new address and path validation moved it there), a restart should not send it
// back to the address the config or the cluster gives, where it no longer answers. A
// learned endpoint is used only while that given address is still the one it was learned
// against: a new address from the operator or the cluster always wins.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PeerTable } from '../dataplane/peers.js';
import { LatestWriter } from '../util/atomic-file.js';
import { intToIp, ipToInt, isIPv4 } from '../util/ipv4.js';

interface Learned {
  /** The address the peer was given (config or cluster) when it moved. */
  given: string;
  /** Where path validation found it. */
  learned: string;
  at: string;
}

export class LearnedEndpoints {
  private entries = new Map<string, Learned>();
  private readonly writer: LatestWriter;

  constructor(
    private readonly stateDir: string,
    onError: (e: Error) => void,
  ) {
    this.writer = new LatestWriter(() => join(stateDir, 'endpoints.json'), onError);
  }

  /** Reads the file; a missing or unreadable one means nothing was learned. */
  async load(): Promise<void> {
    try {
      const doc = JSON.parse(await readFile(join(this.stateDir, 'endpoints.json'), 'utf8')) as Record<string, Partial<Learned>>;
      for (const [peer, e] of Object.entries(doc)) {
        if (typeof e?.given === 'string' && typeof e.learned === 'string' && isIPv4(e.given) && isIPv4(e.learned)) {
          this.entries.set(peer, { given: e.given, learned: e.learned, at: String(e.at ?? '') });
        }
      }
    } catch {
      this.entries.clear();
    }
  }

  /** Moves every peer whose given address is still the one its endpoint was learned against; returns their names. */
  apply(table: PeerTable): string[] {
    const moved: string[] = [];
    for (const s of table.slots()) {
      const name = table.names[s]!;
      const e = this.entries.get(name);
      if (!e || e.given !== table.configs[s]!.publicIp || intToIp(table.addr[s]) === e.learned) continue;
      table.setAddress(s, ipToInt(e.learned));
      moved.push(name);
    }
    return moved;
  }

  /** A peer roamed from its given address to `learned`. */
  remember(peer: string, given: string, learned: string, at: string): void {
    if (given === learned) this.entries.delete(peer);
    else this.entries.set(peer, { given, learned, at });
    this.writer.write(JSON.stringify(Object.fromEntries(this.entries), null, 2) + '\n');
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}
