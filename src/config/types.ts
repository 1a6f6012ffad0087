// Types of the validated site configuration. `Config` itself is derived from the schema
// (schema.ts): every field mirrors a key of the public contract (docs/contract.md) or a
// documented extension, and nothing else in the program reads raw config or environment
// variables.
import type { Schema, ValueOf } from './schema.js';

export type Config = ValueOf<Schema>;

export type LogLevel = Config['log']['level'];
export type OverlayMode = Config['overlay']['mode'];

/** An IPv4 prefix, kept both as text and as numbers for the data plane. */
export interface Cidr {
  text: string; // canonical "a.b.c.d/len"
  network: number; // uint32, host bits zero
  prefixLen: number; // 0..32
  mask: number; // uint32
}

export interface HostPort {
  host: string;
  port: number;
}

/** A peer: one flannel node (from the peers list or a cluster source). */
export interface PeerConfig {
  name: string;
  publicIp: string; // dotted IPv4
  port: number; // default vxlan.port
  subnet: Cidr;
  vtepMac: string; // lower-case "aa:bb:cc:dd:ee:ff"
}

/** One problem with one key, for the single error block printed on exit 2. */
export interface ConfigProblem {
  key: string; // dotted path, e.g. "peers[1].subnet"
  value: unknown; // what was given (secrets masked)
  message: string; // what is expected / what to do
}

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly problems: ConfigProblem[],
  ) {
    super(`invalid config ${source}: ${problems.map((p) => `${p.key}: ${p.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}
