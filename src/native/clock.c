/*
 * clock.c: whether network time has set the system clock, as the kernel knows it.
 *
 * A board without a battery-backed clock starts at a saved date (fake-hwclock) or a built-in
 * one, and until a time daemon has set it every TLS peer of the gateway (etcd, the API
 * server, the broker) can look "not yet valid" or "expired". chrony, ntpd and
 * systemd-timesyncd all clear STA_UNSYNC in the kernel's time status once they discipline
 * the clock (and the kernel sets it again when nothing has for a while), so that flag
 * answers "is this clock kept by network time" whatever the daemon; no file says it for all
 * three (timedated's NTPSynchronized, over D-Bus, makes this same call), and Node has no
 * binding for adjtimex(2).
 * Not the hot path: `vxedge check` and the TLS explanations read it once.
 */
#define _GNU_SOURCE /* struct mmsghdr in vx.h: before any system header */
#include <errno.h>
#include <sys/timex.h>

#include "napi_util.h"
#include "vx.h"

static void set_number(napi_env env, napi_value obj, const char *name, double n) {
  napi_value v;
  if (napi_create_double(env, n, &v) == napi_ok) napi_set_named_property(env, obj, name, v);
}

/* clockState() -> { state, status, maxErrorUs, estErrorUs }: adjtimex with modes 0, a read
 * that needs no privilege. `state` is its return (TIME_OK .. TIME_ERROR), `status` the
 * STA_* bits; JS decides what they mean (util/clock-sync.ts). */
napi_value vx_clock_state(napi_env env, napi_callback_info info) {
  static const char fn[] = "clockState";
  GET_ARGS_OF(0, vx_state);
  struct timex tx = {0};
  int state = adjtimex(&tx);
  if (state < 0) THROW_SYS(env, errno, "adjtimex", "adjtimex");
  napi_value res;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  set_number(env, res, "state", state);
  set_number(env, res, "status", tx.status);
  set_number(env, res, "maxErrorUs", (double)tx.maxerror);
  set_number(env, res, "estErrorUs", (double)tx.esterror);
  return res;
}
