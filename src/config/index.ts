export type { Cidr, Config, ConfigProblem, HostPort, LogLevel, OverlayMode, PeerConfig } from './types.js';
export { ConfigError } from './types.js';
export { configFromObject, formatConfigError, formatConfigErrorLine, loadConfig, parseConfigText } from './load.js';
export type { ConfigFormat, LoadOptions } from './load.js';
export { buildSchema, envName } from './schema.js';
export { DEFAULT_STUN_PORT } from './formats.js';
