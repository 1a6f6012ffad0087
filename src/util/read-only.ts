// Why a write to stateDir or runDir failed with EROFS, in words: the systemd unit's
// ProtectSystem=strict leaves only its StateDirectory (/var/lib/vxedge) and RuntimeDirectory
// (/run/vxedge) writable, so a stateDir or runDir elsewhere (a /data partition on a board
// with a read-only root, say) needs a ReadWritePaths= drop-in. `vxedge check`, run by hand
// as root, cannot see that.

/** "; {dir} is read-only for vxedge: …" for an EROFS error, else "". */
export function readOnlyHint(e: unknown, key: 'stateDir' | 'runDir', dir: string): string {
  if ((e as NodeJS.ErrnoException | null)?.code !== 'EROFS') return '';
  return (
    `; ${dir} is read-only for vxedge: under systemd, vxedge.service (ProtectSystem=strict) may write only /var/lib/vxedge and /run/vxedge, ` +
    `so a ${key} elsewhere needs \`systemctl edit vxedge\` with [Service] ReadWritePaths=${dir}`
  );
}
