/*
 * offload.h: the offload half of vxedge's native addon (src/native/offload.c), registered
 * next to the plain functions by vxedge_native.c's module init.
 */
#ifndef VXEDGE_OFFLOAD_H
#define VXEDGE_OFFLOAD_H

#include <node_api.h>

/*
 * Adds tunOpenVnet, udpSetGro, devReadVnet, devWriteVnet, udpRecvGro, udpSendVnet,
 * offloadStats and the pure test entry points _tsoSegment / _groCoalesce to `exports`.
 * last_errno/error_count are the addon's per-environment record of per-packet errors,
 * shared so that one lastError() covers both files. Returns napi_ok or the failing status
 * (with an exception pending).
 */
napi_status vx_offload_register(napi_env env, napi_value exports, int *last_errno, double *error_count);

#endif
