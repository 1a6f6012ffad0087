// What the inside and outside paths share: the context they are built with and the one
// thing the data plane asks of either, pump() a batch. The data plane drains both alike.
import type { BulkFlows } from './bulk-flows.js';
import type { DropCounters } from './drops.js';
import type { DataplaneFds, DataplaneIo } from './io.js';
import type { PeerTable } from './peers.js';
import type { PathSettings } from './settings.js';

/** Everything a packet path works with; the data plane builds one and gives it to both. */
export interface PathContext {
  settings: PathSettings;
  io: DataplaneIo;
  fds: DataplaneFds;
  drops: DropCounters;
  /** Changed in place (add/update/remove), never replaced. */
  peers: PeerTable;
  /** The bulk TCP flows the inside path saw, for the outside path's expedite(); one shared by both. */
  bulk: BulkFlows;
}

export abstract class PacketPath {
  protected readonly s: PathSettings;
  protected readonly io: DataplaneIo;
  protected readonly fds: DataplaneFds;
  protected readonly drops: DropCounters;
  readonly peers: PeerTable;
  protected readonly bulk: BulkFlows;
  /** Packets (inside) or datagrams (outside) per call: a pump that returns this many says "read on". */
  abstract readonly batch: number;

  constructor(c: PathContext) {
    this.s = c.settings;
    this.io = c.io;
    this.fds = c.fds;
    this.drops = c.drops;
    this.peers = c.peers;
    this.bulk = c.bulk;
  }

  /** Moves one batch; returns how many packets or datagrams were read. */
  abstract pump(): number;
}
