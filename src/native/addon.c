/*
 * addon.c: the small native part of vxedge (plain C, Node-API, libuv): module init with
 * the one registration table, and the two diagnostics that read the shared state.
 *
 * It does only what Node cannot do by itself (docs/native.md):
 *   1. open a TUN/TAP device (open + ioctl TUNSETIFF, offloads) and a non-blocking UDP socket;
 *   2. watch an fd for readability on Node's own libuv loop, calling JS once per wakeup;
 *   3. move packets in batches between the kernel and ONE big Buffer addressed by offsets:
 *      readv()/write() loops on the device, recvmmsg()/sendmmsg() on the socket;
 *   4. the per-byte work of the offloads: TSO segmentation and checksums (tso.c), TCP
 *      coalescing (gro.c);
 *   5. send to the underlay from a second thread, beside the JS thread (sender.c).
 * Everything else (framing, VXLAN headers, peers, policy) is TypeScript. The one JS-side
 * declaration of this table is `NativeBinding` in src/native/index.ts: keep them in step.
 *
 * Errors: wrong arguments throw TypeError/RangeError (code ERR_INVALID_ARG_TYPE /
 * ERR_OUT_OF_RANGE); failing set-up syscalls throw an Error with code/errno/syscall
 * (THROW_SYS); per-packet errors never throw: they are remembered per Node environment
 * (main thread or worker) with a running count, for lastError().
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <stdlib.h>

#include "napi_util.h"
#include "vx.h"

/* lastError() -> { errno, code, count } */
static napi_value last_error(napi_env env, napi_callback_info info) {
  static const char *fn = "lastError";
  GET_ARGS(0);
  char code[48] = "", text[96];
  napi_value res, v;

  sender_sync(st); /* the sender thread's errors count too */
  if (st->last_errno != 0) errno_strings(st->last_errno, code, sizeof code, text, sizeof text);
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  if (napi_create_int32(env, st->last_errno, &v) == napi_ok) napi_set_named_property(env, res, "errno", v);
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, res, "code", v);
  if (napi_create_double(env, st->error_count, &v) == napi_ok) napi_set_named_property(env, res, "count", v);
  return res;
}

/* offloadStats() -> counters of the offload paths since start (per environment). */
static napi_value offload_stats(napi_env env, napi_callback_info info) {
  static const char *fn = "offloadStats";
  GET_ARGS(0);
  napi_value res, v;
  sender_sync(st);
  if (napi_create_object(env, &res) != napi_ok) return NULL;
#define STAT(name, val) \
  if (napi_create_double(env, (val), &v) == napi_ok) napi_set_named_property(env, res, name, v)
  STAT("tsoPackets", st->tso_packets);
  STAT("tsoSegments", st->tso_segments);
  STAT("usoPackets", st->uso_packets);
  STAT("usoSegments", st->uso_segments);
  STAT("gsoMessages", st->gso_messages);
  STAT("gsoRefused", st->gso_refused);
  STAT("gsoOff", st->gso_off);
  STAT("csumCompleted", st->csum_completed);
  STAT("groDatagrams", st->gro_datagrams);
  STAT("coalescedWrites", st->coalesced_writes);
  STAT("coalescedSegments", st->coalesced_segments);
  STAT("csumRejects", st->csum_rejects);
  STAT("lookReads", st->look_reads);
  STAT("lookLeft", st->look_left);
  STAT("usoWrite", st->uso_write);
  STAT("sendThread", st->snd != NULL);
  STAT("sendHanded", st->snd_handed);
  STAT("sendInline", st->snd_inline);
  STAT("sendPassed", st->snd_passed);
  STAT("sendWaits", st->snd_waits);
  STAT("sendWaitMs", st->snd_wait_ms);
#undef STAT
  return res;
}

static void state_finalize(napi_env env, void *data, void *hint) {
  vx_state *st = data;
  (void)env;
  (void)hint;
  sender_stop(st);
  for (int i = 0; i < TX_SETS; i++) free(st->sets[i].scratch);
  free(st);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  vx_state *st = calloc(1, sizeof *st);
  if (st == NULL || (st->sets[0].scratch = malloc(OF_SCRATCH)) == NULL ||
      napi_set_instance_data(env, st, state_finalize, NULL) != napi_ok) {
    if (st != NULL) free(st->sets[0].scratch);
    free(st);
    napi_throw_error(env, "ENOMEM", "vxedge_native: out of memory");
    return NULL;
  }
  st->tx = &st->sets[0];
#define FN(name, cb) {name, NULL, cb, NULL, NULL, NULL, napi_enumerable, st}
  const napi_property_descriptor props[] = {
      /* device.c */
      FN("tunOpen", vx_tun_open), FN("devRead", vx_dev_read), FN("devWrite", vx_dev_write),
      /* socket.c */
      FN("udpOpen", vx_udp_open), FN("udpSetGro", vx_udp_set_gro), FN("udpRecv", vx_udp_recv),
      FN("udpSend", vx_udp_send), FN("udpSendFailed", vx_udp_send_failed), FN("udpCheckOffloads", vx_udp_check_offloads), FN("udpDrops", vx_udp_drops),
      FN("unixDgramSend", vx_unix_dgram_send),
      /* sender.c */
      FN("udpSendThread", vx_udp_send_thread), FN("udpSendLost", vx_udp_send_lost),
      /* poll.c */
      FN("pollStart", vx_poll_start), FN("pollStop", vx_poll_stop), FN("close", vx_close),
      /* diagnostics */
      FN("lastError", last_error), FN("offloadStats", offload_stats),
      /* pages.c */
      FN("releasePages", vx_release_pages),
      /* clock.c */
      FN("clockState", vx_clock_state),
      /* crypt.c */
      FN("passwordCheck", vx_password_check), FN("passwordHash", vx_password_hash),
      /* netlink.c */
      FN("netlinkOpen", vx_netlink_open), FN("netlinkRead", vx_netlink_read),
      /* test entry points: pure, no fd */
      FN("_pollCounts", vx_poll_counts), FN("_tsoSegment", vx_tso_segment), FN("_groCoalesce", vx_gro_coalesce),
      FN("_senderHold", vx_sender_hold),
  };
#undef FN
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
