/*
 * Signals through the ring: rf_signal_wait hands a signal to a task while
 * the loop runs the others; the runtime's own threads never take a
 * process-directed signal; a signal then a graceful shutdown is how an
 * rf_run program stops.
 */
#include "helpers.h"

#include <pthread.h>
#include <sys/signalfd.h>

static int g_ticks;

static void *ticker(void *arg)
{
    for (;;) {
        if (rf_sleep(RFT_MS) != 0)
            return NULL;
        g_ticks++;
    }
}

static void *raise_later(void *arg)
{
    RFT_CHECK_INT(rf_sleep(20 * RFT_MS), 0);
    /* Process-directed, as kill(1) sends it. */
    RFT_CHECK_INT(kill(getpid(), SIGUSR1), 0);
    return NULL;
}

static void *wait_main(void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    RFT_CHECK_INT(rf_signal_wait(NULL, NULL), -EINVAL);
    RFT_CHECK_INT(rf_signal_wait(&set, NULL), -EINVAL);
    sigaddset(&set, SIGUSR1);
    rf_task *t = rf_spawn(ticker, NULL);
    rf_task *r = rf_spawn(raise_later, NULL);
    g_ticks = 0;
    struct signalfd_siginfo si;
    memset(&si, 0, sizeof si);
    RFT_CHECK_INT(rf_signal_wait(&set, &si), SIGUSR1);
    RFT_CHECK_INT((int)si.ssi_signo, SIGUSR1);
    RFT_CHECK_INT((int)si.ssi_pid, (int)getpid());
    /* The loop ran the other tasks meanwhile. */
    RFT_CHECK(g_ticks > 0);
    /* A signal that comes while nobody waits stays pending (it is
     * blocked now) and is read by the next wait, without a wait. */
    RFT_CHECK_INT(kill(getpid(), SIGUSR1), 0);
    RFT_CHECK_INT(rf_signal_wait(&set, NULL), SIGUSR1);
    /* The deadline and cancellation end the wait. */
    rf_deadline_set(rf_now_ns() + 10 * RFT_MS);
    RFT_CHECK_INT(rf_signal_wait(&set, NULL), -ETIMEDOUT);
    rf_deadline_set(0);
    rf_cancel(t);
    RFT_CHECK_INT(rf_join(t, NULL), -ECANCELED);
    RFT_CHECK_INT(rf_join(r, NULL), 0);
    rf_task_release(t);
    rf_task_release(r);
    return NULL;
}

/* rf_signal_wait hands a process-directed signal to the waiting task; the
 * other tasks run meanwhile. */
static void test_signal_wait_hands_signal_to_task(void **state)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(rf_signal_wait(&set, NULL), -EPERM);
    rft_run(wait_main, NULL);
}

static void *worker_mask(void *arg)
{
    sigset_t *m = arg;
    pthread_sigmask(SIG_BLOCK, NULL, m);
    return NULL;
}

static void *pool_mask_main(void *arg)
{
    sigset_t m;
    sigemptyset(&m);
    RFT_CHECK_INT(rf_to_thread(worker_mask, &m, NULL), 0);
    RFT_CHECK(sigismember(&m, SIGTERM) == 1);
    RFT_CHECK(sigismember(&m, SIGINT) == 1);
    RFT_CHECK(sigismember(&m, SIGUSR1) == 1);
    /* A fault in the worker itself must still reach its handler. */
    RFT_CHECK(sigismember(&m, SIGSEGV) == 0);
    RFT_CHECK(sigismember(&m, SIGBUS) == 0);
    return NULL;
}

/* The offload pool's workers block every asynchronous signal: a SIGTERM
 * the program waits for with rf_signal_wait is never taken by one of them
 * (its default action would end the process). */
static void test_pool_threads_block_signals(void **state)
{
    rft_run(pool_mask_main, NULL);
}

/* ---- SIGTERM, then a graceful stop: the whole pattern, in a child ---- */

static int g_conn_done, g_conn_cancelled;

static void *conn(void *arg)
{
    uint64_t ms = (uint64_t)(uintptr_t)arg;
    int rc = rf_sleep(ms * RFT_MS);
    if (rc == 0)
        g_conn_done++;
    else if (rc == -ECANCELED)
        g_conn_cancelled++;
    return NULL;
}

static void *signal_main(void *arg)
{
    for (int i = 0; i < 3; i++) {
        rf_task_release(rf_spawn(conn, (void *)(uintptr_t)50));     /* within */
        rf_task_release(rf_spawn(conn, (void *)(uintptr_t)60000)); /* beyond */
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    rf_task_release(rf_spawn(raise_later, NULL)); /* SIGUSR1: not waited for */
    /* Blocked before the world may send them (rf_signal_wait blocks them
     * too, but only once it is called). */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* The parent sends SIGTERM once it sees this line. */
    printf("ready\n");
    fflush(stdout);
    int sig = rf_signal_wait(&set, NULL);
    if (sig != SIGTERM)
        return (void *)(uintptr_t)1;
    if (rf_loop_shutdown(rf_loop_current(), 500 * RFT_MS) != 0)
        return (void *)(uintptr_t)2;
    return NULL;
}

static int signal_child(void *arg)
{
    /* SIGUSR1 would kill the process: it is not part of the test. */
    signal(SIGUSR1, SIG_IGN);
    void *res = (void *)(uintptr_t)9;
    int rc = rf_run(signal_main, NULL, &res);
    if (rc != 0 || res != NULL)
        return 10 + (rc != 0);
    if (g_conn_done != 3 || g_conn_cancelled != 3)
        return 20;
    return 0;
}

static const rft_child_case children[] = {
    {"sigterm_graceful", signal_child, NULL},
};

/* The way a server stops: SIGTERM (sent by kill(1) to the process) is
 * handed to main by rf_signal_wait, main asks for a graceful shutdown and
 * returns; the connections that finish within the grace do, the others
 * are cancelled after it, and rf_run returns 0. */
static void test_sigterm_then_graceful_shutdown(void **state)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl("/proc/self/exe", "/proc/self/exe", "--child", "sigterm_graceful",
              (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char line[16] = {0};
    ssize_t n;
    do
        n = read(out[0], line, sizeof line - 1);
    while (n < 0 && errno == EINTR);
    assert_true(n > 0 && strncmp(line, "ready", 5) == 0);
    assert_int_equal(kill(pid, SIGTERM), 0);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        assert_int_equal(errno, EINTR);
    close(out[0]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "child: %s %d\n",
                WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_signal_wait_hands_signal_to_task),
    cmocka_unit_test(test_pool_threads_block_signals),
    cmocka_unit_test(test_sigterm_then_graceful_shutdown),
};

RFT_MAIN_CHILDREN(tests, children, sizeof children / sizeof children[0])
