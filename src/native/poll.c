/*
 * poll.c: fds watched for readability on Node's own libuv loop (uv_poll_t, no threadpool),
 * calling JS once per wakeup inside a proper async context; and close(), which stops any
 * poll on the fd first (libuv must not watch a closed fd).
 */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <uv.h>

#include "napi_util.h"
#include "vx.h"

/*
 * One pollStart(). Freed when BOTH the uv handle has closed and the JS wrapper object
 * has been finalized (or was never made), whichever comes last, so pollStop() on a
 * stale handle, or GC during a callback, never touches freed memory.
 */
struct poll_ctx {
  uv_poll_t handle;        /* first member: uv callbacks cast back to poll_ctx */
  napi_env env;
  vx_state *st;
  napi_ref callback;
  napi_async_context async;
  napi_async_cleanup_hook_handle cleanup;
  poll_ctx *next;
  int fd;
  int closing;             /* uv_close() called */
  int closed;              /* close callback ran */
  int wrapper_gone;        /* JS object finalized, or never created */
};

static const napi_type_tag POLL_TAG = {0x7678656467655f70ULL, 0x6f6c6c68616e646cULL};
static long polls_allocated; /* process-wide count of poll_ctx not yet freed (atomic) */

static void poll_close(poll_ctx *ctx);

void vx_poll_forget_fd(vx_state *st, int fd) {
  poll_ctx *p, *next;
  for (p = st->polls; p != NULL; p = next) {
    next = p->next;
    if (p->fd == fd) poll_close(p);
  }
}


/* close(fd): stops any poll on fd first (libuv must not watch a closed fd); a multi-queue
 * device's handle closes its queues too (the device goes with the last one). */
napi_value vx_close(napi_env env, napi_callback_info info) {
  static const char *fn = "close";
  GET_ARGS(1);
  int64_t fd;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  sender_sync(st); /* the sender thread may be sending on fd: never close it under a send */
  vx_poll_forget_fd(st, (int)fd);
  dev_forget(st, (int)fd);
  udp_forget(st, (int)fd);
  if (close((int)fd) < 0 && errno != EINTR) /* Linux frees the fd even on EINTR */
    THROW_SYS(env, errno, "close", "close fd %d", (int)fd);
  return NULL;
}

static void poll_free_if_done(poll_ctx *ctx) {
  if (ctx->closed && ctx->wrapper_gone) {
    __atomic_fetch_sub(&polls_allocated, 1, __ATOMIC_RELAXED);
    free(ctx);
  }
}

static void poll_closed(uv_handle_t *h) {
  poll_ctx *ctx = (poll_ctx *)h;
  napi_env env = ctx->env;
  if (ctx->callback != NULL) napi_delete_reference(env, ctx->callback);
  if (ctx->async != NULL) napi_async_destroy(env, ctx->async);
  if (ctx->cleanup != NULL) napi_remove_async_cleanup_hook(ctx->cleanup);
  ctx->callback = NULL;
  ctx->async = NULL;
  ctx->cleanup = NULL;
  ctx->closed = 1;
  poll_free_if_done(ctx);
}

/* Stop watching and start closing; idempotent. Safe inside the poll callback. */
static void poll_close(poll_ctx *ctx) {
  poll_ctx **pp;
  if (ctx->closing) return;
  ctx->closing = 1;
  for (pp = &ctx->st->polls; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == ctx) {
      *pp = ctx->next;
      break;
    }
  }
  ctx->next = NULL;
  uv_poll_stop(&ctx->handle);
  uv_close((uv_handle_t *)&ctx->handle, poll_closed);
}

static void poll_wrapper_finalize(napi_env env, void *data, void *hint) {
  poll_ctx *ctx = data;
  (void)env;
  (void)hint;
  ctx->wrapper_gone = 1;
  poll_free_if_done(ctx);
}

/* Environment teardown (process end or worker exit): close what JS left open. The hook
 * is removed in poll_closed(), which tells Node the handle is gone. */
static void poll_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  (void)handle;
  poll_close((poll_ctx *)arg);
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  poll_ctx *ctx = (poll_ctx *)h;
  napi_env env = ctx->env;
  napi_handle_scope scope;
  napi_value cb, recv, result, argv[1];
  size_t argc = 0;
  napi_status s;

  (void)events;
  if (ctx->closing) return;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, ctx->callback, &cb) == napi_ok && cb != NULL &&
      napi_get_global(env, &recv) == napi_ok) {
    if (status < 0) {
      /* libuv saw POLLERR (e.g. the TUN device was deleted) and stopped the watcher. */
      argv[0] = sys_error(env, -status, "uv_poll", "poll fd %d", ctx->fd);
      argc = argv[0] != NULL ? 1 : 0;
    }
    s = napi_make_callback(env, ctx->async, recv, cb, argc, argv, &result);
    if (s == napi_pending_exception) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  napi_close_handle_scope(env, scope);
}

/* pollStart(fd, onReadable) -> PollHandle */
napi_value vx_poll_start(napi_env env, napi_callback_info info) {
  static const char *fn = "pollStart";
  GET_ARGS(2);
  int64_t fd;
  napi_valuetype t;
  napi_value obj, name, resource, v;
  uv_loop_t *loop;
  poll_ctx *ctx;
  int rc;

  ARG_INT(0, "fd", 0, INT_MAX, &fd);
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    THROW_TYPE(env, "%s: onReadable must be a function", fn);
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return NULL;

  ctx = calloc(1, sizeof *ctx);
  if (ctx == NULL) THROW_SYS(env, ENOMEM, "calloc", "pollStart");
  ctx->env = env;
  ctx->st = st;
  ctx->fd = (int)fd;
  if (napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "VXEDGE_POLL", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_object(env, &obj) != napi_ok || napi_create_int32(env, (int32_t)fd, &v) != napi_ok ||
      napi_set_named_property(env, obj, "fd", v) != napi_ok ||
      napi_type_tag_object(env, obj, &POLL_TAG) != napi_ok ||
      napi_async_init(env, resource, name, &ctx->async) != napi_ok) {
    free(ctx);
    return NULL;
  }
  if (napi_create_reference(env, argv[1], 1, &ctx->callback) != napi_ok) {
    napi_async_destroy(env, ctx->async);
    free(ctx);
    return NULL;
  }
  rc = uv_poll_init(loop, &ctx->handle, (int)fd); /* EEXIST if fd is already polled */
  if (rc != 0) {
    napi_delete_reference(env, ctx->callback);
    napi_async_destroy(env, ctx->async);
    free(ctx);
    THROW_SYS(env, -rc, "uv_poll_init", "poll fd %d", (int)fd);
  }
  /* From here on the handle belongs to the loop: failures go through uv_close. */
  __atomic_fetch_add(&polls_allocated, 1, __ATOMIC_RELAXED);
  ctx->next = st->polls;
  st->polls = ctx;
  rc = uv_poll_start(&ctx->handle, UV_READABLE, poll_cb);
  if (rc == 0 && napi_add_async_cleanup_hook(env, poll_env_cleanup, ctx, &ctx->cleanup) != napi_ok)
    rc = UV_ENOMEM;
  if (rc == 0 && napi_wrap(env, obj, ctx, poll_wrapper_finalize, NULL, NULL) != napi_ok)
    rc = UV_ENOMEM;
  if (rc != 0) {
    ctx->wrapper_gone = 1;
    poll_close(ctx);
    THROW_SYS(env, -rc, "uv_poll_start", "poll fd %d", (int)fd);
  }
  return obj;
}

/* pollStop(handle): idempotent; safe from inside the handle's own callback. */
napi_value vx_poll_stop(napi_env env, napi_callback_info info) {
  static const char *fn = "pollStop";
  GET_ARGS(1);
  napi_valuetype t;
  bool ok = false;
  void *ctx = NULL;

  if (napi_typeof(env, argv[0], &t) != napi_ok || t != napi_object ||
      napi_check_object_type_tag(env, argv[0], &POLL_TAG, &ok) != napi_ok || !ok ||
      napi_unwrap(env, argv[0], &ctx) != napi_ok || ctx == NULL)
    THROW_TYPE(env, "%s: handle must be a PollHandle returned by pollStart", fn);
  poll_close((poll_ctx *)ctx);
  return NULL;
}

/* _pollCounts() -> { open, allocated }: poll handles not yet stopped in this environment,
 * and poll records not yet freed in the process. For the leak test. */
napi_value vx_poll_counts(napi_env env, napi_callback_info info) {
  static const char *fn = "_pollCounts";
  GET_ARGS(0);
  int open = 0;
  napi_value res, v;
  for (poll_ctx *p = st->polls; p != NULL; p = p->next) open++;
  if (napi_create_object(env, &res) != napi_ok) return NULL;
  if (napi_create_int32(env, open, &v) == napi_ok) napi_set_named_property(env, res, "open", v);
  if (napi_create_int64(env, __atomic_load_n(&polls_allocated, __ATOMIC_RELAXED), &v) == napi_ok)
    napi_set_named_property(env, res, "allocated", v);
  return res;
}

