// The validated site configuration. Every field mirrors a key of the public
// contract (shared docs interface.md); nothing else in the program reads raw
// config or environment variables.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type OverlayMode = 'tun' | 'tap';

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

export interface PeerConfig {
  name: string;
  publicIp: string; // dotted IPv4
  port: number; // default vxlan.port
  subnet: Cidr;
  vtepMac: string; // lower-case "aa:bb:cc:dd:ee:ff"
}

export interface Config {
  site: string;
  node: string;
  stateDir: string;
  runDir: string;
  underlay: {
    iface: string | null;
    address: string | null;
    port: number;
    publicIp: string | null;
  };
  vxlan: {
    vni: number;
    port: number;
    mtu: number | null;
    vtepMac: string | null;
  };
  overlay: {
    device: string;
    mode: OverlayMode;
    network: Cidr;
    subnet: Cidr;
    /** Clamp the TCP MSS of forwarded SYNs to fit the tunnel (design.md "MTU"). */
    mssClamp: boolean;
    /** Inbound filtering of design.md: known peer endpoints only, inner source inside the peer's subnet. */
    strictPeers: boolean;
    /** TUN offloads (virtio-net headers, TSO, UDP GSO/GRO), with a fallback to the plain path. */
    offload: boolean;
  };
  peers: PeerConfig[];
  keepalive: { interval: number; timeout: number }; // milliseconds
  nat: { stun: HostPort[] };
  mqtt: {
    url: string | null;
    topicPrefix: string;
    interval: number; // milliseconds
    username: string | null;
    password: string | null;
    passwordFile: string | null;
    ca: string | null;
    cert: string | null;
    key: string | null;
  };
  /** The board the gateway runs on (board/ profiles). */
  board: {
    /** Status LED name under /sys/class/leds, or an LED directory path; null: none. */
    led: string | null;
  };
  log: { level: LogLevel };
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
