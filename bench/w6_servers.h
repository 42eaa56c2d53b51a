/*
 * The W6 echo servers, each run in a thread of its own by w6_echo.cc:
 * serve(lfd, nconns) accepts exactly nconns connections on the listening
 * socket lfd (which stays the caller's), echoes on each until the peer
 * closes it, and returns once all are closed: 0, or a negative errno.
 */
#ifndef RINGFIBER_BENCH_W6_SERVERS_H
#define RINGFIBER_BENCH_W6_SERVERS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*w6_server_fn)(int lfd, int nconns);

/* ringfiber: one task per connection, rf_recv / rf_send (w6_ringfiber.c). */
int w6_ringfiber_serve(int lfd, int nconns);
/* Variants that measure the I/O options (see w6_ringfiber.c). */
int w6_raw_serve(int lfd, int nconns);
int w6_pollfirst_serve(int lfd, int nconns);
int w6_fixed_serve(int lfd, int nconns);
/* The public server on a loop with RF_LOOP_WAKE_AT_ONCE. */
int w6_at_once_serve(int lfd, int nconns);
/* The public server on a loop with RF_LOOP_RECV_MULTISHOT. */
int w6_multishot_serve(int lfd, int nconns);

/* The loop counters of the last ringfiber server run, over its whole life
 * (accepts and warm-up included). */
int w6_ringfiber_last_stats(uint64_t *enters, uint64_t *sqes,
                            uint64_t *switches);

#ifdef __cplusplus
}
#endif

#endif
