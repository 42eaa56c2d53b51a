/*
 * The one intrusive list of the runtime: circular, doubly linked, with a
 * sentinel head. Tasks alive, free records, every list of waiters (a
 * task's joiners, a queue's getters...), idle timer buckets, operations
 * in flight on a descriptor, acceptors and group members use it; the run
 * queue (a ring of task pointers, rf_loop.rq) and a timer bucket's timers
 * (an array, time.c) do not.
 * A removed node points at itself, so removing it twice is harmless; that
 * lets a waiter unlink itself without knowing whether the event it waited
 * for has already unlinked it.
 */
#ifndef RF_LIST_H
#define RF_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct rf_list {
    struct rf_list *next, *prev;
} rf_list;

#define rf_container_of(ptr, type, member)                                     \
    ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void rf_list_init(rf_list *n) { n->next = n->prev = n; }

static inline bool rf_list_empty(const rf_list *h) { return h->next == h; }

static inline void rf_list_push_back(rf_list *h, rf_list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static inline void rf_list_remove(rf_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

static inline rf_list *rf_list_pop_front(rf_list *h)
{
    rf_list *n = h->next;
    if (n == h)
        return NULL;
    rf_list_remove(n);
    return n;
}

#endif
