/* napi_util.c: see napi_util.h. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg, strerror_r (GNU): before any system header */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <net/if.h>

#include <uv.h>

#include "napi_util.h"

/* errno -> 'EADDRINUSE' and 'address already in use', as Node says them. libuv knows most
 * names; the TUN driver's EBADFD ("device detached") is one it does not. */
void errno_strings(int err, char *code, size_t ncode, char *text, size_t ntext) {
  uv_err_name_r(-err, code, ncode);
  uv_strerror_r(-err, text, ntext);
  if (strncmp(code, "Unknown", 7) != 0) return;
  snprintf(code, ncode, err == EBADFD ? "EBADFD" : err == EREMOTEIO ? "EREMOTEIO" : "E%d", err);
  {
    const char *msg = strerror_r(err, text, ntext); /* GNU variant: may not use text */
    if (msg != text) snprintf(text, ntext, "%s", msg);
  }
  if (text[0] >= 'A' && text[0] <= 'Z' && !(text[1] >= 'A' && text[1] <= 'Z')) text[0] += 'a' - 'A';
}

/* An Error like Node's own system errors: message "<what>: <strerror> (<CODE>)",
 * properties code ('EADDRINUSE'), errno (positive) and syscall ('bind'). */
napi_value sys_error(napi_env env, int err, const char *syscall, const char *fmt, ...) {
  char what[160], text[96], code[48], msg[320];
  va_list ap;
  napi_value e = NULL, m, v;

  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  errno_strings(err, code, sizeof code, text, sizeof text);
  snprintf(msg, sizeof msg, "%s: %s (%s)", what, text, code);

  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
  if (napi_create_error(env, v, m, &e) != napi_ok) return NULL;
  if (napi_create_int32(env, err, &v) == napi_ok) napi_set_named_property(env, e, "errno", v);
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, e, "syscall", v);
  return e;
}

void throw_fmt(napi_env env, int range, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (range) napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  else napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
}

/* Errors that concern the fd itself, not one packet: thrown when nothing moved yet. */
int fd_fatal(int err) {
  return err == EBADF || err == EBADFD || err == ENOTSOCK || err == EFAULT;
}

int too_few_args(napi_env env, const char *fn, size_t argc, size_t n) {
  if (argc >= n) return 0;
  throw_fmt(env, 0, "%s: expected %d arguments, got %d", fn, (int)n, (int)argc);
  return 1;
}

/* An integral Number in [min, max]. Returns 0, or -1 with an exception pending. */
int arg_int(napi_env env, const char *fn, napi_value v, const char *name, int64_t min,
                   int64_t max, int64_t *out) {
  napi_valuetype t;
  double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) {
    throw_fmt(env, 0, "%s: %s must be a number", fn, name);
    return -1;
  }
  napi_get_value_double(env, v, &d);
  if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d) {
    throw_fmt(env, 1, "%s: %s must be an integer in [%lld, %lld], got %g", fn, name,
              (long long)min, (long long)max, d);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

static const char *typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_uint8_array: return "a Buffer or Uint8Array";
    case napi_int32_array: return "an Int32Array";
    case napi_uint32_array: return "a Uint32Array";
    case napi_uint16_array: return "a Uint16Array";
    default: return "a typed array";
  }
}

/* A typed array of exactly `want` type; *len is in elements. */
int arg_typed(napi_env env, const char *fn, napi_value v, const char *name,
                     napi_typedarray_type want, void **data, size_t *len) {
  bool is;
  napi_typedarray_type t;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) != napi_ok || t != want) {
    throw_fmt(env, 0, "%s: %s must be %s", fn, name, typed_name(want));
    return -1;
  }
  if (*len > 0 && *data == NULL) { /* detached buffer */
    throw_fmt(env, 0, "%s: %s is detached", fn, name);
    return -1;
  }
  return 0;
}

int arg_typed_or_null(napi_env env, const char *fn, napi_value v, const char *name,
                      napi_typedarray_type want, void **data, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined)) {
    *data = NULL;
    *len = 0;
    return 0;
  }
  return arg_typed(env, fn, v, name, want, data, len);
}

int arg_bool(napi_env env, const char *fn, napi_value v, const char *name, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) {
    throw_fmt(env, 0, "%s: %s must be a boolean", fn, name);
    return -1;
  }
  return napi_get_value_bool(env, v, out) == napi_ok ? 0 : -1;
}

int arg_ifname(napi_env env, const char *fn, napi_value v, char *out, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    throw_fmt(env, 0, "%s: name must be a string", fn);
    return -1;
  }
  memset(out, 0, IFNAMSIZ);
  napi_get_value_string_utf8(env, v, NULL, 0, len);
  if (*len >= IFNAMSIZ) {
    throw_fmt(env, 1, "%s: interface name is %zu bytes long, Linux allows at most %d", fn, *len, IFNAMSIZ - 1);
    return -1;
  }
  napi_get_value_string_utf8(env, v, out, IFNAMSIZ, len);
  if (strlen(out) != *len) {
    throw_fmt(env, 1, "%s: interface name contains a NUL", fn);
    return -1;
  }
  return 0;
}

napi_value int_result(napi_env env, int64_t n) {
  napi_value r = NULL;
  napi_create_int64(env, n, &r);
  return r;
}

int check_packets(napi_env env, const char *fn, size_t buflen, const int32_t *offs,
                         const int32_t *lens, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (offs[i] < 0 || lens[i] < 0 || (int64_t)offs[i] + lens[i] > (int64_t)buflen) {
      throw_fmt(env, 1, "%s: packet %lld [%d, +%d) is outside the buffer (%zu bytes)", fn,
                (long long)i, offs[i], lens[i], buflen);
      return -1;
    }
  }
  return 0;
}
