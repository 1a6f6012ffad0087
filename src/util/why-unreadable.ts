// Why a file the operator named could not be read, in words: "cannot read mqtt.ca /x: no
// such file" says what to fix, "ENOENT" makes them look it up. One wording for every file a
// config or a command names (the site config, TLS files, password files, kubectl's output).

/** The reason a read (or stat) of a named file failed: words for the usual codes, else the error's message. */
export function whyUnreadable(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  switch (err.code) {
    case 'ENOENT':
    case 'ENOTDIR': // a parent on the path is a file
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'it is a directory';
    default:
      return err.message;
  }
}
