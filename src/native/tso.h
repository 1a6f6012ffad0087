/* tso.h: TSO send (tso.c), called by udpSend (socket.c) for packets read with a virtio_net_hdr. */
#ifndef VXEDGE_TSO_H
#define VXEDGE_TSO_H

#include "vx.h"

/* Makes h carry its control messages (in ctl): UDP_SEGMENT when seg != 0 (the kernel cuts the
 * send into datagrams of `seg` bytes), IP_TOS when tos != 0 (the socket's own TOS is 0);
 * none when both are 0. */
void put_control(struct msghdr *h, ctl_buf *ctl, uint16_t seg, uint8_t tos);

int64_t tso_send(napi_env env, vx_state *st, int fd, uint8_t *buf, size_t buflen, const int32_t *offs,
                 const int32_t *lens, const uint32_t *addrs, const uint16_t *ports, const uint8_t *vnet,
                 size_t nvnet, const int32_t *vidx, int64_t encap, int64_t n);

#endif
