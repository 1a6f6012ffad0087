/*
 * crypt.c: bcrypt for the metrics endpoint's basic auth (metrics.webConfig's
 * basic_auth_users), by the system's crypt(3), on libuv's thread pool.
 *
 * Why C: a bcrypt check is meant to be slow (cost 10: ~70 ms here, several times that on a
 * board). On the JS thread it would hold every packet that long, once per scrape with a new
 * password and once per wrong guess from anyone on the LAN. A worker thread running
 * bcryptjs kept the loop free but cost 14 MB of peak and 8 MB of lasting resident memory
 * (a second V8 isolate), a fifth of the board's budget, for one check per gateway run.
 * libxcrypt (Debian's libcrypt1, Essential: login and passwd link it) knows bcrypt's $2b$,
 * $2y$ and $2a$, and crypt_rn() is reentrant, so a thread-pool job checks it with 32 KB of
 * scratch and nothing else.
 *
 * libcrypt is opened with dlopen when first used, not linked: the cross-built addon then
 * needs no libcrypt for its build architecture, and a system without it fails these two
 * calls (ENOSYS) rather than the whole addon's load.
 */
#define _GNU_SOURCE /* struct mmsghdr in vx.h: before any system header */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "napi_util.h"
#include "vx.h"

/* libxcrypt's prototypes (crypt.h), declared here so that no header is needed to build. */
typedef char *(*crypt_rn_fn)(const char *phrase, const char *setting, void *data, int size);
typedef char *(*crypt_gensalt_rn_fn)(const char *prefix, unsigned long count, const char *rbytes, int nrbytes,
                                     char *output, int output_size);

/* sizeof(struct crypt_data) in libxcrypt's ABI. */
#define CRYPT_DATA_SIZE 32768
/* A bcrypt hash is 60 characters; anything crypt(3) makes fits in CRYPT_OUTPUT_SIZE (384). */
#define HASH_MAX 384
/* Longer is no password anyone types (bcrypt reads only the first 72 bytes; the JS side
 * refuses more, as Go's bcrypt does). */
#define PASSWORD_MAX 1024

static pthread_once_t crypt_once = PTHREAD_ONCE_INIT;
static crypt_rn_fn crypt_rn_p;
static crypt_gensalt_rn_fn crypt_gensalt_rn_p;
static char crypt_load_error[160];

static void crypt_load(void) {
  void *h = dlopen("libcrypt.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    snprintf(crypt_load_error, sizeof crypt_load_error, "%s", e != NULL ? e : "libcrypt.so.1 not found");
    return;
  }
  crypt_rn_p = (crypt_rn_fn)dlsym(h, "crypt_rn");
  crypt_gensalt_rn_p = (crypt_gensalt_rn_fn)dlsym(h, "crypt_gensalt_rn");
  if (crypt_rn_p == NULL || crypt_gensalt_rn_p == NULL)
    snprintf(crypt_load_error, sizeof crypt_load_error, "libcrypt.so.1 has no crypt_rn/crypt_gensalt_rn (not libxcrypt)");
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int hashing;                 /* 1: make a hash of password with cost; 0: check password against hash */
  unsigned long cost;
  char password[PASSWORD_MAX + 1];
  char hash[HASH_MAX];         /* in: the hash to check against; out: the hash made */
  int matches;
  int err;                     /* errno of the failure, 0 when none */
  const char *syscall;
} crypt_job;

/* Equal strings, in time that depends on the length of b alone (b: the stored hash). */
static int same_string(const char *a, const char *b) {
  size_t n = strlen(b);
  unsigned char diff = strlen(a) != n;
  for (size_t i = 0; i < n; i++) diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
  return diff == 0;
}

static void crypt_execute(napi_env env, void *data) {
  crypt_job *job = data;
  (void)env;
  pthread_once(&crypt_once, crypt_load);
  if (crypt_rn_p == NULL) {
    job->err = ENOSYS;
    job->syscall = "dlopen";
    return;
  }
  void *scratch = calloc(1, CRYPT_DATA_SIZE);
  if (scratch == NULL) {
    job->err = ENOMEM;
    job->syscall = "crypt_rn";
    return;
  }
  if (job->hashing) {
    char setting[HASH_MAX];
    if (crypt_gensalt_rn_p("$2b$", job->cost, NULL, 0, setting, sizeof setting) == NULL) {
      job->err = errno ? errno : EINVAL;
      job->syscall = "crypt_gensalt_rn";
    } else {
      const char *out = crypt_rn_p(job->password, setting, scratch, CRYPT_DATA_SIZE);
      if (out == NULL || out[0] == '*') {
        job->err = errno ? errno : EINVAL;
        job->syscall = "crypt_rn";
      } else {
        snprintf(job->hash, sizeof job->hash, "%s", out);
      }
    }
  } else {
    /* A setting crypt(3) does not know gives NULL (EINVAL) or a "*0"/"*1" failure token. */
    errno = 0;
    const char *out = crypt_rn_p(job->password, job->hash, scratch, CRYPT_DATA_SIZE);
    if (out == NULL || out[0] == '*') {
      job->err = errno ? errno : EINVAL;
      job->syscall = "crypt_rn";
    } else {
      job->matches = same_string(out, job->hash);
    }
  }
  memset(scratch, 0, CRYPT_DATA_SIZE); /* it held the password's key schedule */
  free(scratch);
}

static void crypt_complete(napi_env env, napi_status status, void *data) {
  crypt_job *job = data;
  napi_value result = NULL;
  if (status != napi_ok) {
    napi_reject_deferred(env, job->deferred, sys_error(env, ECANCELED, "crypt", "crypt: cancelled"));
  } else if (job->err != 0) {
    napi_value e = job->err == ENOSYS
                       ? sys_error(env, ENOSYS, job->syscall, "libcrypt (libxcrypt) cannot be used: %s", crypt_load_error)
                       : sys_error(env, job->err, job->syscall, "%s", job->syscall);
    napi_reject_deferred(env, job->deferred, e);
  } else if (job->hashing) {
    if (napi_create_string_utf8(env, job->hash, NAPI_AUTO_LENGTH, &result) == napi_ok)
      napi_resolve_deferred(env, job->deferred, result);
  } else {
    if (napi_get_boolean(env, job->matches, &result) == napi_ok) napi_resolve_deferred(env, job->deferred, result);
  }
  napi_delete_async_work(env, job->work);
  memset(job->password, 0, sizeof job->password);
  free(job);
}

/* Reads a string argument into out[cap]; a longer one, or one with a NUL, is a RangeError. */
static int arg_cstring(napi_env env, const char *fn, napi_value v, const char *name, char *out, size_t cap) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_fmt(env, 0, "%s: %s must be a string", fn, name);
    return -1;
  }
  if (len >= cap) {
    throw_fmt(env, 1, "%s: %s is %zu bytes; at most %zu", fn, name, len, cap - 1);
    return -1;
  }
  napi_get_value_string_utf8(env, v, out, cap, &len);
  if (strlen(out) != len) {
    throw_fmt(env, 1, "%s: %s holds a NUL byte", fn, name);
    return -1;
  }
  return 0;
}

static napi_value queue(napi_env env, crypt_job *job, const char *name) {
  napi_value promise, resource_name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, crypt_execute, crypt_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    return NULL;
  }
  return promise;
}

/* passwordCheck(password, hash) -> Promise<boolean>: whether crypt(password, hash) is hash. */
napi_value vx_password_check(napi_env env, napi_callback_info info) {
  static const char fn[] = "passwordCheck";
  GET_ARGS_OF(2, vx_state);
  crypt_job *job = calloc(1, sizeof *job);
  if (job == NULL) THROW_SYS(env, ENOMEM, "calloc", "passwordCheck");
  if (arg_cstring(env, fn, argv[0], "password", job->password, sizeof job->password) != 0 ||
      arg_cstring(env, fn, argv[1], "hash", job->hash, sizeof job->hash) != 0) {
    free(job);
    return NULL;
  }
  return queue(env, job, "vxedge:passwordCheck");
}

/* passwordHash(password, cost) -> Promise<string>: a new bcrypt ($2b$) hash of password. */
napi_value vx_password_hash(napi_env env, napi_callback_info info) {
  static const char fn[] = "passwordHash";
  GET_ARGS_OF(2, vx_state);
  int64_t cost;
  ARG_INT(1, "cost", 4, 31, &cost);
  crypt_job *job = calloc(1, sizeof *job);
  if (job == NULL) THROW_SYS(env, ENOMEM, "calloc", "passwordHash");
  if (arg_cstring(env, fn, argv[0], "password", job->password, sizeof job->password) != 0) {
    free(job);
    return NULL;
  }
  job->hashing = 1;
  job->cost = (unsigned long)cost;
  return queue(env, job, "vxedge:passwordHash");
}
