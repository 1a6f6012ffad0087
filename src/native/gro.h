/* gro.h: GRO write (gro.c), called by devWrite (device.c) on a device with virtio-net headers. */
#ifndef VXEDGE_GRO_H
#define VXEDGE_GRO_H

#include "vx.h"

/* d: the multi-queue device whose handle is fd, or NULL. */
int64_t gro_write(napi_env env, vx_state *st, int fd, dev_set *d, uint8_t *buf, size_t buflen,
                  const int32_t *offs, const int32_t *lens, int64_t n);

#endif
