/*
 * napi_util.h: what every file of the addon needs to talk to JavaScript the same way: argument checks that throw TypeError/RangeError with
 * Node's codes, system errors shaped like Node's own (code, errno, syscall), and the
 * bounds check of a packet list against its buffer.
 */
#ifndef VXEDGE_NAPI_UTIL_H
#define VXEDGE_NAPI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <node_api.h>

/* errno -> 'EADDRINUSE' and 'address already in use', as Node says them. */
void errno_strings(int err, char *code, size_t ncode, char *text, size_t ntext);
/* An Error like Node's system errors: "<what>: <strerror> (<CODE>)" with code/errno/syscall. */
napi_value sys_error(napi_env env, int err, const char *syscall, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Throws TypeError (range 0, ERR_INVALID_ARG_TYPE) or RangeError (range 1, ERR_OUT_OF_RANGE). */
void throw_fmt(napi_env env, int range, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Errors that concern the fd itself, not one packet: thrown when nothing moved yet. */
int fd_fatal(int err);
int too_few_args(napi_env env, const char *fn, size_t argc, size_t n);
/* An integral Number in [min, max]. Returns 0, or -1 with an exception pending. */
int arg_int(napi_env env, const char *fn, napi_value v, const char *name, int64_t min, int64_t max,
            int64_t *out);
/* A typed array of exactly `want` type; *len is in elements. 0, or -1 with an exception pending. */
int arg_typed(napi_env env, const char *fn, napi_value v, const char *name, napi_typedarray_type want,
              void **data, size_t *len);
/* Like arg_typed, but null (or undefined) is allowed: *data = NULL, *len = 0. */
int arg_typed_or_null(napi_env env, const char *fn, napi_value v, const char *name, napi_typedarray_type want,
                      void **data, size_t *len);
/* A boolean. 0, or -1 with an exception pending. */
int arg_bool(napi_env env, const char *fn, napi_value v, const char *name, bool *out);
/* An interface name that fits IFNAMSIZ (copied into out[IFNAMSIZ]); "" lets the kernel choose. */
int arg_ifname(napi_env env, const char *fn, napi_value v, char *out, size_t *len);
napi_value int_result(napi_env env, int64_t n);
/* Every packet [offs[i], offs[i]+lens[i]) for i < n lies inside the buffer; else RangeError. */
int check_packets(napi_env env, const char *fn, size_t buflen, const int32_t *offs, const int32_t *lens,
                  int64_t n);

/* Throw a system error and return NULL from the calling napi function. */
#define THROW_SYS(env, err, syscall, ...)                              \
  do {                                                                 \
    napi_value e_ = sys_error((env), (err), (syscall), __VA_ARGS__);   \
    if (e_ != NULL) napi_throw((env), e_);                             \
    return NULL;                                                       \
  } while (0)

#define THROW_TYPE(env, ...) do { throw_fmt((env), 0, __VA_ARGS__); return NULL; } while (0)
#define THROW_RANGE(env, ...) do { throw_fmt((env), 1, __VA_ARGS__); return NULL; } while (0)

/* Declares argc/argv and `st` (the per-environment state of type state_type) for a
 * napi function named by `fn` that takes n to max arguments (argc: how many were given,
 * at most max), and returns on too few arguments. */
#define GET_ARGS_UPTO(n, max, state_type)                                            \
  size_t argc = (max);                                                               \
  napi_value argv[(max) > 0 ? (max) : 1];                                            \
  state_type *st;                                                                    \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, (void **)&st) != napi_ok)       \
    return NULL;                                                                     \
  if (too_few_args(env, fn, argc, (n))) return NULL;                                 \
  if (argc > (max)) argc = (max);                                                    \
  (void)st

#define GET_ARGS_OF(n, state_type) GET_ARGS_UPTO(n, n, state_type)

#define ARG_INT(i, name, min, max, out) \
  if (arg_int(env, fn, argv[i], name, (min), (max), (out)) != 0) return NULL
#define ARG_TYPED(i, name, type, data, len) \
  if (arg_typed(env, fn, argv[i], name, (type), (void **)(data), (len)) != 0) return NULL
#define ARG_TYPED_OR_NULL(i, name, type, data, len) \
  if (arg_typed_or_null(env, fn, argv[i], name, (type), (void **)(data), (len)) != 0) return NULL
#define ARG_BOOL(i, name, out) \
  if (arg_bool(env, fn, argv[i], name, (out)) != 0) return NULL

#endif
