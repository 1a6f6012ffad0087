/*
 * sender.c: the sender thread. A sendmmsg to the underlay does more than copy bytes: the
 * kernel runs the datagrams down the whole stack (UDP, IP, netfilter, the NIC's driver)
 * in the caller's time, and the JS thread cannot read the device meanwhile. With the
 * sender thread, the JS thread fills one tx_set while this thread sends the ones filled
 * before, so reading, routing and segmenting overlap with the kernel's send on a second core.
 *
 * Hand-off: the TX_SETS sets are filled and sent in ring order, so no flow is reordered.
 * The thread holds at most TX_SETS - 1 of them; the JS thread waits only when it has filled
 * the last free one, which is the back-pressure a synchronous sendmmsg gave. With two sets
 * (one in hand) one TCP stream to the pods was 13 % slower than without the thread in paired
 * runs (the JS thread waited at nearly every batch); with three it was faster, most with
 * several streams, and with eight faster again (one stream to the pods +10 %, and a ping
 * beside it faster too: the JS thread waits less often, so it reads and looks more often;
 * docs/dataplane.md "Batching and sizes"). A batch of one plain
 * datagram (a ping, a DNS answer, a keepalive) is sent on the JS thread when the sender is
 * idle: waking a sleeping thread costs more than the send itself (a prototype that handed
 * everything over added ~0.05 ms to each echo at 100/s). While the thread holds batches,
 * every datagram of a udpSend call whose flow is in none of them (tx_set.flows) is sent at
 * once, from the `express` set, and the rest goes to the thread: what overtakes a batch
 * belongs to another flow, so no flow is reordered, and a ping, a DNS answer or a keystroke
 * of an interactive TCP session read in the same batch as bulk data does not wait behind
 * up to seven batches of it (the rule of the outside path's look between batches,
 * docs/dataplane.md). Such a datagram is sent before the super-packets of its own call are
 * cut, too, held batches or not (tso.c send_early), so it does not wait for their cutting
 * either. A TCP super-packet always goes to the thread: it is the bulk. Plain
 * datagrams are copied into the set (t->copy), because their bytes live in JS buffers that
 * the next batch reuses; TCP super-packets are cut into segments in the set's scratch
 * buffer anyway.
 *
 * What sending counted (GSO messages, lost packets, errors) stays in the set until the JS
 * thread folds it into vx_state after the set came back (tx_fold): vx_state has one writer.
 * Failures cannot be returned by the udpSend that queued them; udpSendLost() hands them to
 * the data plane's drop counters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "napi_util.h"
#include "vx.h"

#define SENDER_STACK (256 * 1024) /* tx_send's frames are small; the default is 8 MiB */

struct sender {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t go;   /* JS → thread: a set was handed over, or quit */
  pthread_cond_t done; /* thread → JS: a set was sent */
  int first, n;        /* the sets handed over: sets[first], the next ones in ring order */
  int hold;            /* test hook (_senderHold): hand-overs wait, unsent */
  struct timespec hold_end; /* ... until then, when tv_sec != 0 */
  int quit;
  tx_set *sets;        /* vx_state's TX_SETS sets */
};

static void *sender_main(void *arg) {
  sender *x = arg;
  for (;;) {
    tx_set *t;
    pthread_mutex_lock(&x->mu);
    while ((x->n == 0 || x->hold) && !x->quit) {
      if (x->hold && x->hold_end.tv_sec != 0) {
        if (pthread_cond_timedwait(&x->go, &x->mu, &x->hold_end) == ETIMEDOUT) x->hold = 0;
      } else {
        pthread_cond_wait(&x->go, &x->mu);
      }
    }
    t = x->n > 0 ? &x->sets[x->first] : NULL;
    pthread_mutex_unlock(&x->mu);
    if (t == NULL) return NULL; /* quit, with nothing in hand */
    tx_send(t, t->fd, NULL);
    pthread_mutex_lock(&x->mu);
    x->first = (x->first + 1) % TX_SETS;
    x->n--;
    pthread_cond_signal(&x->done);
    pthread_mutex_unlock(&x->mu);
  }
}

/* Waits until the thread holds at most `most` sets; returns the milliseconds waited, 0 when
 * it did not have to (the clock is read only then). JS thread. */
static double wait_until(sender *x, int most) {
  struct timespec a, b;
  double ms = 0;
  pthread_mutex_lock(&x->mu);
  if (x->n > most) {
    clock_gettime(CLOCK_MONOTONIC, &a);
    while (x->n > most) pthread_cond_wait(&x->done, &x->mu);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
  }
  pthread_mutex_unlock(&x->mu);
  return ms;
}

static int idle(sender *x) {
  int n;
  pthread_mutex_lock(&x->mu);
  n = x->n;
  pthread_mutex_unlock(&x->mu);
  return n == 0;
}

int sender_held_flows(vx_state *st, uint64_t flows[2]) {
  sender *x = st->snd;
  int n;
  flows[0] = flows[1] = 0;
  if (x == NULL) return 0;
  pthread_mutex_lock(&x->mu);
  n = x->n;
  /* A handed-over set's filter was written before the hand-over and is not written again
   * until the JS thread takes it back (tx_reset): the thread never writes it (tx_send
   * empties a set with tx_empty, which leaves the filter alone). */
  for (int i = 0; i < n; i++) {
    const tx_set *t = &x->sets[(x->first + i) % TX_SETS];
    flows[0] |= t->flows[0];
    flows[1] |= t->flows[1];
  }
  pthread_mutex_unlock(&x->mu);
  return n > 0;
}

int sender_express(vx_state *st, int fd) {
  tx_set *e = &st->express;
  int stop;
  for (int m = 0; m < e->nmsgs; m++) st->snd_passed += e->msg_npkt[m];
  stop = tx_send(e, fd, st->failed);
  tx_fold(st, e);
  return stop;
}

int sender_flush(vx_state *st, int fd) {
  sender *x = st->snd;
  tx_set *t = st->tx, *next = &st->sets[(t - st->sets + 1) % TX_SETS];
  double ms;
  if (t->nmsgs == 0) return 0;
  if (t->nmsgs == 1 && t->msg_npkt[0] == 1 && t->msg_seg[0] == 0 && idle(x)) {
    /* Nothing handed over can be overtaken. Sent here, a failure is udpSend's to report, as
     * without the thread (a keepalive's send that fails says so). */
    int stop = tx_send(t, fd, st->failed);
    tx_fold(st, t);
    tx_reset(t); /* sent on this thread: its flow filter goes too */
    st->snd_inline += 1;
    return stop;
  }
  /* Sets are filled and sent in ring order, so `next` is the oldest one handed over, free
   * once the thread holds at most the others. */
  ms = wait_until(x, TX_SETS - 2);
  if (ms > 0) {
    st->snd_waits += 1;
    st->snd_wait_ms += ms;
  }
  tx_fold(st, next); /* what sending it counted */
  t->fd = fd;
  pthread_mutex_lock(&x->mu);
  x->n++;
  pthread_cond_signal(&x->go);
  pthread_mutex_unlock(&x->mu);
  st->snd_handed += 1;
  st->tx = next;
  tx_reset(next);
  return 0;
}

void sender_sync(vx_state *st) {
  sender *x = st->snd;
  if (x == NULL) return;
  pthread_mutex_lock(&x->mu);
  x->hold = 0; /* a test's hold ends here: waiting under it would never end */
  pthread_cond_signal(&x->go);
  pthread_mutex_unlock(&x->mu);
  wait_until(x, 0);
  for (int i = 0; i < TX_SETS; i++) tx_fold(st, &st->sets[i]);
}

void sender_stop(vx_state *st) {
  sender *x = st->snd;
  if (x == NULL) return;
  sender_sync(st);
  pthread_mutex_lock(&x->mu);
  x->quit = 1;
  pthread_cond_signal(&x->go);
  pthread_mutex_unlock(&x->mu);
  pthread_join(x->thread, NULL);
  pthread_cond_destroy(&x->go);
  pthread_cond_destroy(&x->done);
  pthread_mutex_destroy(&x->mu);
  free(x);
  st->snd = NULL;
  /* Back to sending on the JS thread, from set 0, without copies; the other sets' scratch
   * is kept for a later start. */
  st->tx = &st->sets[0];
  st->sets[0].copy = 0;
  tx_reset(st->tx);
}

/* Starts the thread; 0 or an errno. Signals stay with the JS thread: Node handles them. */
static int sender_start(vx_state *st) {
  sender *x;
  pthread_attr_t attr;
  sigset_t all, old;
  int err;
  for (int i = 1; i < TX_SETS; i++)
    if (st->sets[i].scratch == NULL && (st->sets[i].scratch = malloc(OF_SCRATCH)) == NULL) return ENOMEM;
  if ((x = calloc(1, sizeof *x)) == NULL) return ENOMEM;
  x->sets = st->sets;
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->go, NULL);
  pthread_cond_init(&x->done, NULL);
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, SENDER_STACK);
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  err = pthread_create(&x->thread, &attr, sender_main, x);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    pthread_cond_destroy(&x->go);
    pthread_cond_destroy(&x->done);
    pthread_mutex_destroy(&x->mu);
    free(x);
    return err;
  }
  st->tx = &st->sets[0]; /* x->first is 0: the ring starts at set 0 */
  tx_reset(st->tx);
  for (int i = 0; i < TX_SETS; i++) st->sets[i].copy = 1;
  st->snd = x;
  return 0;
}

/* udpSendThread(on) -> boolean: starts (true) or stops (false, after everything handed to
 * it was sent) the sender thread; returns whether it runs. Throws when it cannot start. */
napi_value vx_udp_send_thread(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSendThread";
  GET_ARGS(1);
  bool on;
  napi_value res;
  if (napi_get_value_bool(env, argv[0], &on) != napi_ok) THROW_TYPE(env, "%s: on must be a boolean", fn);
  if (on && st->snd == NULL) {
    int err = sender_start(st);
    if (err != 0) THROW_SYS(env, err, "pthread_create", "%s: cannot start the sender thread", fn);
  } else if (!on) {
    sender_stop(st);
  }
  napi_get_boolean(env, st->snd != NULL, &res);
  return res;
}

/* udpSendLost() -> number: packets the sender thread could not send (socket full, an error)
 * since the last call, after everything handed to it was sent. 0 without the thread. */
napi_value vx_udp_send_lost(napi_env env, napi_callback_info info) {
  static const char *fn = "udpSendLost";
  GET_ARGS(0);
  napi_value res;
  sender_sync(st);
  if (napi_create_double(env, st->snd_lost, &res) != napi_ok) return NULL;
  st->snd_lost = 0;
  return res;
}

/* _senderHold(on[, ms]): test entry point. While on, the thread sends nothing it is handed
 * (and what may pass it still does), so a test can hold batches in its hands; off lets it go
 * on, as does anything that waits for the thread (close, lastError, offloadStats,
 * udpSendLost). A test must not hand over more than TX_SETS - 1 batches under a plain hold:
 * the next would wait for the thread forever. With `ms` the hold ends by itself that many
 * milliseconds later (CLOCK_REALTIME, which pthread_cond_timedwait uses), so a test can make
 * a hand-over wait and see it counted. No-op without the thread. */
napi_value vx_sender_hold(napi_env env, napi_callback_info info) {
  static const char *fn = "_senderHold";
  GET_ARGS_OPT(1, 2);
  bool on;
  double ms = 0;
  napi_valuetype t;
  if (napi_get_value_bool(env, argv[0], &on) != napi_ok) THROW_TYPE(env, "%s: on must be a boolean", fn);
  if (argc > 1 && napi_typeof(env, argv[1], &t) == napi_ok && t != napi_undefined &&
      (napi_get_value_double(env, argv[1], &ms) != napi_ok || !(ms > 0 && ms < 60000)))
    THROW_TYPE(env, "%s: ms must be a number of milliseconds above 0 and below 60000", fn);
  if (st->snd != NULL) {
    struct timespec end = {0, 0};
    if (on && ms > 0) {
      long long ns;
      clock_gettime(CLOCK_REALTIME, &end);
      ns = end.tv_nsec + (long long)(ms * 1e6);
      end.tv_sec += (time_t)(ns / 1000000000LL);
      end.tv_nsec = (long)(ns % 1000000000LL);
    }
    pthread_mutex_lock(&st->snd->mu);
    st->snd->hold = on;
    st->snd->hold_end = end;
    pthread_cond_signal(&st->snd->go);
    pthread_mutex_unlock(&st->snd->mu);
  }
  return NULL;
}
