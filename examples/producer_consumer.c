/*
 * producer_consumer: producers and consumers over a bounded queue, the
 * asyncio.Queue pattern, with task_done/join and a close at the end.
 *
 *   queue = asyncio.Queue(maxsize=64)
 *   producers = [create_task(produce(queue, n)) for ...]
 *   async with asyncio.TaskGroup() as tg:
 *       for ...: tg.create_task(consume(queue))
 *       await asyncio.gather(*producers)
 *       await queue.join()      # every item processed
 *       queue.shutdown()        # consumers leave their loop
 *
 * Producers wait while the queue is full, consumers while it is empty;
 * each put hands its item to exactly one waiting consumer. The consumers
 * run in an rf_group: if one failed, the group would cancel the others.
 * At the end it prints the throughput (items per second through the
 * queue, on this one thread).
 *
 * Options: --producers P, --consumers C, --items N (per producer),
 * --capacity K.
 */
#include "common.h"

typedef struct shared {
    rf_queue queue;
    long items_per_producer;
    uint64_t sum;       /* of every item consumed */
    long consumed;
    long stopped;       /* consumers that saw the close */
} shared;

typedef struct producer {
    shared *s;
    long id;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    shared *s = p->s;
    long base = p->id * s->items_per_producer;
    for (long i = 0; i < s->items_per_producer; i++) {
        /* Items are numbers here; real code would queue pointers. */
        ex_check(rf_queue_put(&s->queue, (void *)(uintptr_t)(base + i + 1)),
                 "rf_queue_put");
    }
    return NULL;
}

static void *consume(void *arg)
{
    shared *s = arg;
    for (;;) {
        void *item;
        int rc = rf_queue_get(&s->queue, &item);
        if (rc == -EPIPE) { /* closed, and nothing left */
            s->stopped++;
            return NULL;
        }
        if (rc != 0)
            return RF_ERR_PTR(rc); /* fails the group */
        s->sum += (uintptr_t)item - 1;
        s->consumed++;
        ex_check(rf_queue_task_done(&s->queue), "rf_queue_task_done");
    }
}

typedef struct config {
    long producers, consumers, items, capacity;
} config;

static void *pc_main(void *arg)
{
    const config *c = arg;
    shared s = {.items_per_producer = c->items};
    ex_check(rf_queue_init(&s.queue, (size_t)c->capacity, NULL),
             "rf_queue_init");
    printf("%ld producers, %ld consumers, queue of %ld, %ld items\n",
           c->producers, c->consumers, c->capacity, c->producers * c->items);

    uint64_t start = rf_now_ns();
    rf_group consumers;
    ex_check(rf_group_init(&consumers), "rf_group_init");
    for (long i = 0; i < c->consumers; i++) {
        rf_spawn_options o = {.name = "consumer"};
        if (!rf_group_spawn(&consumers, consume, &s, &o))
            ex_die("rf_group_spawn", -errno);
    }
    producer *ps = calloc((size_t)c->producers, sizeof(*ps));
    rf_task **pt = calloc((size_t)c->producers, sizeof(*pt));
    if (!ps || !pt)
        ex_die("calloc", -ENOMEM);
    for (long i = 0; i < c->producers; i++) {
        ps[i] = (producer){&s, i};
        pt[i] = ex_spawn(produce, &ps[i], "producer");
    }
    ex_gather(pt, (size_t)c->producers, NULL);
    ex_check(rf_queue_join(&s.queue), "rf_queue_join");
    long total = c->producers * c->items;
    uint64_t expect = (uint64_t)total * (uint64_t)(total - 1) / 2;
    printf("all %ld items processed (join returned); sum %s\n", s.consumed,
           s.sum == expect && s.consumed == total ? "as expected" : "WRONG");
    ex_check(rf_queue_close(&s.queue), "rf_queue_close");
    ex_check(rf_group_wait(&consumers), "rf_group_wait");
    double secs = ex_elapsed_s(start);
    printf("consumers stopped at close: %ld of %ld\n", s.stopped,
           c->consumers);
    printf("%.2f seconds, %.2f M items/s\n", secs,
           secs > 0 ? (double)total / secs / 1e6 : 0.0);

    rf_group_fini(&consumers);
    ex_release_all(pt, (size_t)c->producers);
    free(pt);
    free(ps);
    ex_check(rf_queue_fini(&s.queue), "rf_queue_fini");
    return s.sum == expect && s.consumed == total ? NULL : RF_ERR_PTR(-EIO);
}

int main(int argc, char **argv)
{
    config c = {.producers = 4, .consumers = 4, .items = 250000,
                .capacity = 64};
    const ex_option opts[] = {
        {"--producers", "P", "producer tasks (default 4)", NULL, NULL,
         &c.producers},
        {"--consumers", "C", "consumer tasks (default 4)", NULL, NULL,
         &c.consumers},
        {"--items", "N", "items per producer (default 250000)", NULL, NULL,
         &c.items},
        {"--capacity", "K", "queue capacity (default 64)", NULL, NULL,
         &c.capacity},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    if (c.producers < 1 || c.consumers < 1 || c.items < 1 ||
        c.capacity < 0 || c.producers > 100000 || c.consumers > 100000 ||
        c.items > 100000000 || c.capacity > 1000000)
        ex_bad_arg(opts, "values out of range", NULL);
    void *res = ex_run(pc_main, &c);
    return res == NULL ? 0 : 1;
}
