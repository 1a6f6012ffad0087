/*
 * pages.c: gives back the pages of mapped files that start-up touched and the gateway
 * no longer uses (docs/memory.md, "Start-up pages").
 *
 * Node's binary is ~100 MB mapped; starting it touches ~30 MB of its code and read-only
 * data (the bootstrap, the module loader, the compiler's first passes), and the kernel maps
 * more around each page touched (fault-around, whole large folios on newer kernels). All of
 * that counts in the resident set for the life of the process, although most of it is not
 * used again. madvise(MADV_DONTNEED) on such a mapping drops the process's page table
 * entries only: the pages stay in the page cache, and a page that is used again is mapped
 * back by a minor fault, without I/O. Unmapped, clean page cache is what the kernel reclaims
 * first when the board runs short of memory.
 *
 * That is only safe for a private mapping that was never written: dropping a copied-on-
 * write page would lose what was written to it (the relocated data of a library, say).
 * JavaScript picks the mappings from /proc/self/smaps (not writable, private, Anonymous: 0,
 * util/startup-pages.ts); this file only checks the ranges' shape and makes the call.
 * Not the hot path: called a few times at start-up.
 */
#define _GNU_SOURCE /* struct mmsghdr in vx.h: before any system header */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "napi_util.h"
#include "vx.h"

/* releasePages(ranges: Float64Array of [start, length] pairs) -> bytes advised. */
napi_value vx_release_pages(napi_env env, napi_callback_info info) {
  static const char fn[] = "releasePages";
  GET_ARGS_OF(1, vx_state);
  double *r;
  size_t n;
  ARG_TYPED(0, "ranges", napi_float64_array, &r, &n);
  if (n % 2 != 0) THROW_RANGE(env, "%s: ranges holds [start, length] pairs; got %zu numbers", fn, n);
  const uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  /* User addresses are below 2^48 on 64-bit targets (x86-64, arm64), so exact in a double,
   * and below 2^32 on armhf, where a larger double would not convert to a pointer. */
  const double top = sizeof(uintptr_t) >= 8 ? 281474976710656.0 : 4294967296.0;
  for (size_t i = 0; i < n; i += 2) {
    double start = r[i], len = r[i + 1];
    /* In range first (NaN fails too), then whole pages: the conversions are exact. */
    if (!(start > 0 && len > 0 && start + len <= top) || (double)(uint64_t)start != start ||
        (double)(uint64_t)len != len || (uint64_t)start % page != 0 || (uint64_t)len % page != 0)
      THROW_RANGE(env, "%s: range %zu (%.0f, %.0f) is not a page-aligned range of user addresses", fn, i / 2,
                  start, len);
  }
  int64_t total = 0;
  for (size_t i = 0; i < n; i += 2) {
    if (madvise((void *)(uintptr_t)r[i], (size_t)r[i + 1], MADV_DONTNEED) != 0)
      THROW_SYS(env, errno, "madvise", "madvise %#jx+%.0f", (uintmax_t)(uintptr_t)r[i], r[i + 1]);
    total += (int64_t)r[i + 1];
  }
  return int_result(env, total);
}
