/*
 * vx.h: the addon's one per-environment state and the functions its files share.
 *
 * Files, by job (each napi function is registered once, in addon.c's table):
 *   addon.c    module init, the registration table, lastError(), offloadStats()
 *   device.c   tunOpen, devRead, devWrite: the TUN/TAP device, plain or with virtio-net headers
 *   socket.c   udpOpen, udpSetGro, udpRecv, udpSend, udpCheckOffloads, unixDgramSend: the underlay socket
 *   poll.c     pollStart, pollStop, close: fds watched on Node's own libuv loop
 *   csum.c     checksums and the virtio_net_hdr (pure)
 *   tso.c      TSO send: super-packets cut into segments and sent with UDP_SEGMENT
 *   sender.c   the sender thread: underlay sends leave the JS thread (udpSendThread)
 *   gro.c      GRO write: TCP segments joined into super-packets for the device
 *   napi_util.c  argument checks and errors shaped like Node's
 *
 * Rules kept everywhere: no allocation per packet (everything lives in vx_state, allocated
 * once per Node environment), every offset and length from JS checked before any syscall,
 * per-packet errors counted for lastError() rather than thrown, never abort. One thread
 * besides the JS thread, and only when asked for (sender.c): it touches nothing but the
 * tx_set handed to it, and the JS thread alone writes vx_state.
 */
#ifndef VXEDGE_VX_H
#define VXEDGE_VX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/uio.h>

#include <node_api.h>

#define VNET_LEN 10                /* sizeof(struct virtio_net_hdr), no num_buffers */
#define MAX_IP 65535               /* largest IPv4 packet, hence largest TSO super-packet */
#define MMSG_BATCH 1024            /* the kernel's cap on vlen for recvmmsg/sendmmsg (UIO_MAXIOV) */
#define OF_MSGS 256                /* messages per sendmmsg of segmented output */
#define OF_PKTS 4096               /* packets per devWrite/udpSend call with offloads */
#define OF_SCRATCH (512 * 1024)    /* segmented output waiting for one sendmmsg */
#define UDP_GSO_MAX_SEGS 64        /* UDP_MAX_SEGMENTS before Linux 6.9 (128 since) */
#define UDP_GSO_MAX_BYTES 65507    /* 65535 - IPv4 header - UDP header */
#define GRO_ITEMS 64               /* open coalescing flows per write batch */
#define GRO_MAX_SEGS 64            /* segments per coalesced super-packet */
#define DEV_MAX_QUEUES 16          /* queues of one multi-queue device */
#define DEV_MAX_SETS 4             /* multi-queue devices open at once per environment */
#define UDP_MAX_SETS 4             /* underlay socket groups open at once per environment */
#define TX_SETS 8                  /* batches of underlay output: one filled, up to seven with the sender thread */

/* A sent message's control data: UDP_SEGMENT's segment size and IP_TOS (the outer ECN field,
 * sent as an int, as the kernel's ip_cmsg_send takes it). */
typedef union {
  char buf[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))];
  struct cmsghdr align;
} ctl_buf;

/* A received datagram's control data: UDP_GRO's segment size and IP_TOS (1 byte, sized as an
 * int for room to spare). */
typedef union {
  char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(int))];
  struct cmsghdr align;
} rx_ctl_buf;

/* One open coalescing flow of a GRO write batch: its head packet and what follows. */
typedef struct {
  int32_t head, tail;
  uint32_t seq_next;       /* sequence number the next segment must carry */
  uint32_t total;          /* IP length of the coalesced packet */
  uint16_t gso;            /* payload of every segment but the last */
  uint16_t segs;
  uint8_t ihl, thl;        /* thl: the TCP header's length, or 8 (UDP) */
  uint8_t proto;           /* IPPROTO_TCP or IPPROTO_UDP */
  uint8_t closed;          /* a short or PSH segment (TCP), a short datagram (UDP) ended it */
  uint8_t checked;         /* the head's checksums were verified */
  uint8_t psh;
  uint8_t vnet[VNET_LEN];
} gro_item;

typedef struct poll_ctx poll_ctx;

/* One batch of underlay output (tso.c), built on the JS thread and sent there or by the
 * sender thread (sender.c): message m carries packets msg_pkt[m] .. + msg_npkt[m], in
 * iovs[msg_iov0[m] ..]; one iov of segments (TSO), or one iov per datagram (joined).
 * TX_SETS exist so that one is filled while the sender thread has the others. What its sending
 * counted stays here until the JS thread folds it into vx_state (tx_fold). */
typedef struct {
  int nmsgs, niovs;
  int fd;                           /* where it goes: set when handed to the sender thread */
  int copy;                         /* plain datagrams are copied into scratch, not referenced */
  uint64_t flows[2];                /* with copy: the flows queued here, a Bloom filter (flow_bits) */
  struct mmsghdr msgs[OF_MSGS];
  struct iovec iovs[MMSG_BATCH];
  struct sockaddr_in names[OF_MSGS];
  ctl_buf ctls[OF_MSGS];
  int32_t msg_pkt[OF_MSGS];
  int32_t msg_npkt[OF_MSGS];
  int32_t msg_iov0[OF_MSGS];
  uint16_t msg_seg[OF_MSGS];
  uint8_t msg_tos[OF_MSGS];         /* the outer TOS byte (only its ECN bits are ever set) */
  uint8_t msg_open[OF_MSGS];        /* more datagrams of the same size and destination may join */
  uint32_t msg_bytes[OF_MSGS];
  struct mmsghdr split_msgs[UDP_GSO_MAX_SEGS * 2];
  struct iovec split_iovs[UDP_GSO_MAX_SEGS * 2];
  ctl_buf split_ctl;                /* the split datagrams' IP_TOS */
  uint8_t *scratch;                 /* OF_SCRATCH bytes */
  size_t used;
  /* counted while sending; folded into vx_state by the JS thread */
  double sent_gso, lost_pkts, errors;
  int last_errno, refused_gso;
} tx_set;

typedef struct sender sender;

/* A multi-queue TUN/TAP device (device.c). JS holds `handle`, an epoll fd over the queues'
 * fds, as the device's one fd: readable when any queue is. A queue is a separate packet
 * ring in the kernel, and the kernel keeps each flow on one queue, so a reader that takes
 * the queues in turn lets a ping pass a bulk TCP stream instead of waiting behind it.
 * An underlay socket group (socket.c) has the same shape: SO_REUSEPORT sockets on one port,
 * among which the kernel spreads datagrams by their source address and port. */
typedef struct {
  int handle;              /* the epoll fd; n == 0: slot free */
  int n;
  unsigned rr;             /* where the next read starts, for fairness between calls */
  int tap;                 /* frames carry an Ethernet header in front of the IP packet */
  uint32_t bulk;           /* devices: queues written bulk TCP since the last full devRead */
  int fds[DEV_MAX_QUEUES];
} dev_set;

typedef struct vx_state {
  /* lastError() */
  int last_errno;          /* last per-packet errno (0: none yet) */
  double error_count;      /* per-packet errors so far */
  /* poll.c: poll handles not yet closing */
  poll_ctx *polls;
  /* device.c: the open multi-queue devices */
  dev_set devs[DEV_MAX_SETS];
  /* socket.c: the open underlay socket groups, each the same shape as a multi-queue device */
  dev_set socks[UDP_MAX_SETS];
  /* offloadStats() */
  int gso_off;             /* UDP_SEGMENT was refused: one datagram per segment from now on */
  int uso_write;           /* the kernel has GSO_UDP_L4 for a TUN, written and read (tunOpen's probe) */
  double tso_packets, tso_segments, uso_packets, uso_segments, gso_messages, gso_refused, csum_completed;
  double gro_datagrams, coalesced_writes, coalesced_segments, csum_rejects;
  double look_reads, look_left;  /* devRead looks: packets read, ready queues left alone */
  /* socket.c: recvmmsg scratch */
  struct mmsghdr msgs[MMSG_BATCH];
  struct iovec iovs[MMSG_BATCH];
  struct sockaddr_in names[MMSG_BATCH];
  rx_ctl_buf ctls[MMSG_BATCH];
  /* tso.c: queued output, in tx (one of sets; the other sets' scratch is allocated when the
   * sender thread starts), and which of a udpSend call's packets failed */
  tx_set *tx;
  tx_set sets[TX_SETS];
  tx_set express;          /* datagrams sent at once past the batches the sender thread holds (sender.c) */
  int express_ok;          /* for this udpSend call: the sender thread holds batches */
  uint64_t held_flows[2];  /* for this udpSend call: flows in those batches and queued for the thread */
  uint8_t failed[OF_PKTS];
  int64_t failed_n;        /* the packets of the last udpSend call that `failed` describes (udpSendFailed) */
  uint8_t early[OF_PKTS];  /* for this udpSend call: sent before its super-packets were cut (tso.c send_early) */
  /* sender.c: the sender thread, NULL while underlay sends are made on the JS thread */
  sender *snd;
  double snd_lost;         /* packets the sender thread could not send, not yet taken by JS */
  double snd_handed, snd_inline; /* batches handed to the thread / sent on the JS thread */
  double snd_passed;       /* datagrams sent at once past batches of other flows the thread held */
  double snd_waits, snd_wait_ms; /* hand-overs that found every batch taken, and the time they waited */
  /* gro.c: coalescing plan of one write batch */
  int nitems;
  gro_item items[GRO_ITEMS];
  int32_t link[OF_PKTS];
  int16_t item_of[OF_PKTS];
  uint8_t role[OF_PKTS];
  struct iovec wiov[GRO_MAX_SEGS + 2];
  int32_t po[OF_PKTS], pl[OF_PKTS]; /* private copy of a write batch's packet list */
} vx_state;

/* Remember a per-packet error for lastError(). */
static inline void note_error(vx_state *st, int err) {
  st->last_errno = err;
  st->error_count += 1;
}

/* Offsets and lengths are checked once up front for a clean error, then read exactly once
 * more where used: a SharedArrayBuffer-backed array could change in between. */
#define READ_ONCE(x) (*(volatile const int32_t *)&(x))

#define GET_ARGS(n) GET_ARGS_OF(n, vx_state)
#define GET_ARGS_OPT(n, max) GET_ARGS_UPTO(n, max, vx_state)

/* tso.c: sends set t on fd (either thread). Per-packet failures go to `failed` when given,
 * else are counted in t->lost_pkts; returns 0 or the errno that stopped it early. */
int tx_send(tx_set *t, int fd, uint8_t *failed);
/* tso.c: empties t for the next batch. */
void tx_reset(tx_set *t);
/* tso.c, JS thread: moves what sending t counted into st. */
void tx_fold(vx_state *st, tx_set *t);
/* sender.c, JS thread: sends st->tx: handed to the sender thread (st->tx becomes the next
 * set; returns 0) or, when it is idle and the batch is one plain datagram, here (returns
 * as tx_send, failures in st->failed). */
int sender_flush(vx_state *st, int fd);
/* sender.c, JS thread: whether the sender thread holds batches (then datagrams of other
 * flows may be sent at once, past them), with the flows of those batches ORed into
 * flows[0..1] (tx_set.flows). */
int sender_held_flows(vx_state *st, uint64_t flows[2]);
/* sender.c, JS thread: sends st->express now (as tx_send, failures in st->failed). */
int sender_express(vx_state *st, int fd);
/* sender.c, JS thread: waits until the sender thread has nothing in hand and folds its
 * counts into st (before a close, a counter read, or its stop). No-op without it. */
void sender_sync(vx_state *st);
/* sender.c: stops and joins the sender thread (environment teardown). */
void sender_stop(vx_state *st);

/* poll.c: stop watching every poll on fd (before it is closed). */
void vx_poll_forget_fd(vx_state *st, int fd);
/* device.c: the set among `sets` whose handle is `handle`, or NULL; forget closes its fds and
 * frees the slot (the caller closes the handle). Multi-queue devices and socket groups. */
dev_set *fd_set_find(dev_set *sets, int nsets, int handle);
void fd_set_forget(dev_set *sets, int nsets, int handle);
/* device.c: a free slot among `sets`, or NULL. */
dev_set *fd_set_free(dev_set *sets, int nsets);
/* device.c: makes d an epoll fd over fds[0..n) (member i reported as i); returns the handle,
 * or -1 with errno and *step ("epoll_create1", "epoll_ctl") set and nothing left open. */
int fd_set_watch(dev_set *d, const int *fds, int n, const char **step);
/* device.c: d's members with data waiting, into out, from a first one that moves on at every
 * call so that none is always first; the count, or -1 with errno set. */
int fd_set_ready(dev_set *d, int *out);
/* device.c: the multi-queue device whose handle is fd, or NULL (a plain fd). */
dev_set *dev_find(vx_state *st, int fd);
/* device.c: the queue a packet (IPv4, or a frame on TAP) of this flow is written to: the
 * same for both directions of a flow; fd itself when d is NULL. */
int dev_queue_fd(const dev_set *d, int fd, const uint8_t *pkt, size_t len);
/* device.c: dev_queue_fd for a write of `segs` packets joined into one: a queue written bulk
 * TCP is marked in d->bulk, which a devRead look leaves alone. */
int dev_write_fd(dev_set *d, int fd, const uint8_t *pkt, size_t len, int segs);
/* device.c: closes the queues of the multi-queue device whose handle is fd (before fd). */
void dev_forget(vx_state *st, int fd);
/* socket.c: the fd that sends for fd (a socket group's first member; else fd itself). */
int udp_send_fd(vx_state *st, int fd);
/* socket.c: the socket group whose handle is fd, or NULL. */
dev_set *udp_group(vx_state *st, int fd);
/* socket.c: fd is a socket group's handle: close its members (the caller closes fd). */
void udp_forget(vx_state *st, int fd);

/* Every napi function of the addon; registered in addon.c. */
napi_value vx_tun_open(napi_env env, napi_callback_info info);
napi_value vx_dev_read(napi_env env, napi_callback_info info);
napi_value vx_dev_write(napi_env env, napi_callback_info info);
napi_value vx_udp_open(napi_env env, napi_callback_info info);
napi_value vx_udp_set_gro(napi_env env, napi_callback_info info);
napi_value vx_udp_drops(napi_env env, napi_callback_info info);
napi_value vx_udp_check_offloads(napi_env env, napi_callback_info info);
napi_value vx_udp_recv(napi_env env, napi_callback_info info);
napi_value vx_udp_send(napi_env env, napi_callback_info info);
napi_value vx_udp_send_failed(napi_env env, napi_callback_info info);
napi_value vx_unix_dgram_send(napi_env env, napi_callback_info info);
napi_value vx_poll_start(napi_env env, napi_callback_info info);
napi_value vx_poll_stop(napi_env env, napi_callback_info info);
napi_value vx_close(napi_env env, napi_callback_info info);
napi_value vx_poll_counts(napi_env env, napi_callback_info info);
napi_value vx_tso_segment(napi_env env, napi_callback_info info);
napi_value vx_gro_coalesce(napi_env env, napi_callback_info info);
napi_value vx_release_pages(napi_env env, napi_callback_info info);
napi_value vx_clock_state(napi_env env, napi_callback_info info);
napi_value vx_password_check(napi_env env, napi_callback_info info);
napi_value vx_password_hash(napi_env env, napi_callback_info info);
napi_value vx_netlink_open(napi_env env, napi_callback_info info);
napi_value vx_netlink_read(napi_env env, napi_callback_info info);
napi_value vx_udp_send_thread(napi_env env, napi_callback_info info);
napi_value vx_udp_send_lost(napi_env env, napi_callback_info info);
napi_value vx_sender_hold(napi_env env, napi_callback_info info);

#endif
