/* Stubs of the Node-API and libuv calls the packet files reference, so that they link into a
 * standalone harness (scripts/fuzz-native). Throws are recorded, nothing else happens. */
#include <stdio.h>
#include <string.h>
#include <node_api.h>

int shim_thrown;
#define OK return napi_ok
napi_status napi_throw(napi_env e, napi_value v) { (void)e; (void)v; shim_thrown++; OK; }
napi_status napi_throw_range_error(napi_env e, const char *c, const char *m) { (void)e; (void)c; (void)m; shim_thrown++; OK; }
napi_status napi_throw_type_error(napi_env e, const char *c, const char *m) { (void)e; (void)c; (void)m; shim_thrown++; OK; }
napi_status napi_create_error(napi_env e, napi_value c, napi_value m, napi_value *r) { (void)e; (void)c; (void)m; *r = NULL; return napi_generic_failure; }
napi_status napi_create_string_utf8(napi_env e, const char *s, size_t n, napi_value *r) { (void)e; (void)s; (void)n; *r = NULL; OK; }
napi_status napi_create_int32(napi_env e, int32_t v, napi_value *r) { (void)e; (void)v; *r = NULL; OK; }
napi_status napi_create_int64(napi_env e, int64_t v, napi_value *r) { (void)e; (void)v; *r = NULL; OK; }
napi_status napi_create_double(napi_env e, double v, napi_value *r) { (void)e; (void)v; *r = NULL; OK; }
napi_status napi_create_object(napi_env e, napi_value *r) { (void)e; *r = NULL; OK; }
napi_status napi_create_array_with_length(napi_env e, size_t n, napi_value *r) { (void)e; (void)n; *r = NULL; OK; }
napi_status napi_set_named_property(napi_env e, napi_value o, const char *k, napi_value v) { (void)e; (void)o; (void)k; (void)v; OK; }
napi_status napi_set_element(napi_env e, napi_value o, uint32_t i, napi_value v) { (void)e; (void)o; (void)i; (void)v; OK; }
napi_status napi_get_boolean(napi_env e, bool b, napi_value *r) { (void)e; (void)b; *r = NULL; OK; }
napi_status napi_get_null(napi_env e, napi_value *r) { (void)e; *r = NULL; OK; }
#define NOPE return napi_generic_failure
napi_status napi_get_cb_info(napi_env e, napi_callback_info i, size_t *a, napi_value *v, napi_value *t, void **d) { (void)e; (void)i; (void)a; (void)v; (void)t; (void)d; NOPE; }
napi_status napi_get_typedarray_info(napi_env e, napi_value v, napi_typedarray_type *t, size_t *l, void **d, napi_value *b, size_t *o) { (void)e; (void)v; (void)t; (void)l; (void)d; (void)b; (void)o; NOPE; }
napi_status napi_get_value_bool(napi_env e, napi_value v, bool *r) { (void)e; (void)v; (void)r; NOPE; }
napi_status napi_get_value_double(napi_env e, napi_value v, double *r) { (void)e; (void)v; (void)r; NOPE; }
napi_status napi_get_value_string_utf8(napi_env e, napi_value v, char *b, size_t n, size_t *r) { (void)e; (void)v; (void)b; (void)n; (void)r; NOPE; }
napi_status napi_is_typedarray(napi_env e, napi_value v, bool *r) { (void)e; (void)v; (void)r; NOPE; }
napi_status napi_typeof(napi_env e, napi_value v, napi_valuetype *r) { (void)e; (void)v; (void)r; NOPE; }
char *uv_err_name_r(int err, char *buf, size_t n) { snprintf(buf, n, "Unknown %d", err); return buf; }
char *uv_strerror_r(int err, char *buf, size_t n) { snprintf(buf, n, "error %d", err); return buf; }
