// The process exit codes every command shares (README "Command line"): 0 done / healthy,
// 1 it ran and failed (or the gateway is not healthy), 2 the input was wrong (config, flags,
// a bad file): fix the input, a retry will not help. `vxedge fleet` has its own meanings.
export const EXIT_OK = 0;
export const EXIT_FAIL = 1;
/** Bad config or command-line input. */
export const EXIT_USAGE = 2;
