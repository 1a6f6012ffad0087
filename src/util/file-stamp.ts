// A file's version as far as a reader that keeps what it read cares: inode, size and mtime.
// The cluster clients compare it after a failure to see whether the operator fixed (or
// rotated) a file they read at start (kubeconfig; etcd TLS and password files).
import { statSync } from 'node:fs';

/** "inode:size:mtime" of `file`; null when it cannot be stat'ed. */
export function fileStamp(file: string): string | null {
  try {
    const st = statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return null;
  }
}
