/*
 * The contract between the accept calls and a loop's graceful stop
 * (runtime/internal.h): a task waiting in rf_accept or rf_acceptor_next
 * has in_accept set (and only then), so that a stop can find and cancel
 * it; once loop->accept_stopped is set, a waiting accept ends with
 * -ESHUTDOWN and a new one returns -ESHUTDOWN at once. This test reaches
 * into the runtime's structures on purpose: the stop itself is built
 * elsewhere on top of this contract.
 */
#include "helpers.h"

#include "../runtime/internal.h"

typedef struct acc {
    int lfd;
    rf_acceptor *a;
    int res;
    int started;
} acc;

static void *accepter(void *arg)
{
    acc *x = arg;
    x->started = 1;
    x->res = x->a ? rf_acceptor_next(x->a) : rf_accept(x->lfd, NULL, NULL, 0);
    return NULL;
}

static void *stop_contract(void *arg)
{
    bool multishot = arg != NULL;
    rf_loop *l = rf_loop_current();
    int lfd;
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 8, &lfd), 0);
    acc x = {.lfd = lfd, .res = 12345};
    if (multishot)
        RFT_CHECK_INT(rf_acceptor_open(lfd, 0, &x.a), 0);
    RFT_CHECK(!rf__self()->in_accept);
    rf_task *t = rf_spawn(accepter, &x);
    RFT_CHECK(rft_yield_until(&x.started, 10));
    RFT_CHECK_INT(rf_sleep(2 * RFT_MS), 0);
    RFT_CHECK(((rf_task *)rf__untag(t))->in_accept);
    /* What a graceful stop does: stop accepting, cancel the accepters. */
    l->accept_stopped = true;
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(x.res, -ESHUTDOWN);
    RFT_CHECK(!((rf_task *)rf__untag(t))->in_accept);
    rf_task_release(t);
    /* New accepts refuse at once. */
    RFT_CHECK_INT(rf_accept(lfd, NULL, NULL, 0), -ESHUTDOWN);
    if (multishot)
        RFT_CHECK_INT(rf_acceptor_next(x.a), -ESHUTDOWN);
    RFT_CHECK(!rf__self()->in_accept);
    l->accept_stopped = false;
    if (multishot)
        rf_acceptor_close(x.a);
    rf_close(lfd);
    return NULL;
}

/* An accept that ends on cancellation or deadline clears in_accept too. */
static void *in_accept_cleared(void *arg)
{
    int lfd;
    RFT_CHECK_INT(rf_tcp_listen("127.0.0.1", 0, 8, &lfd), 0);
    rf_deadline_set(rf_now_ns() + 10 * RFT_MS);
    RFT_CHECK_INT(rf_accept(lfd, NULL, NULL, 0), -ETIMEDOUT);
    RFT_CHECK(!rf__self()->in_accept);
    RFT_CHECK_INT(rf_accept(lfd, NULL, NULL, 0), -ETIMEDOUT); /* not submitted */
    RFT_CHECK(!rf__self()->in_accept);
    rf_acceptor *a;
    RFT_CHECK_INT(rf_acceptor_open(lfd, 0, &a), 0);
    RFT_CHECK_INT(rf_acceptor_next(a), -ETIMEDOUT);
    RFT_CHECK(!rf__self()->in_accept);
    rf_deadline_set(0);
    rf_cancel(rf_self());
    RFT_CHECK_INT(rf_accept(lfd, NULL, NULL, 0), -ECANCELED);
    RFT_CHECK_INT(rf_acceptor_next(a), -ECANCELED);
    RFT_CHECK(!rf__self()->in_accept);
    RFT_CHECK_INT(rf_acceptor_close(a), 0);
    RFT_CHECK_INT(rf_close(lfd), 0);
    return NULL;
}

static void test_in_accept_cleared(void **state)
{
    rft_begin();
    assert_int_equal(rf_run(in_accept_cleared, NULL, NULL), -ECANCELED);
    rft_end();
}

static void test_accept_stop(void **state) { rft_run(stop_contract, NULL); }
static void test_acceptor_stop(void **state) { rft_run(stop_contract, (void *)1); }

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_accept_stop),
    cmocka_unit_test(test_acceptor_stop),
    cmocka_unit_test(test_in_accept_cleared),
};

RFT_MAIN(tests)
