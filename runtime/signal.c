/*
 * Signals. A program on ringfiber takes its signals the way the loop takes
 * everything else: through the ring. rf_signal_wait blocks the signals it
 * is given in the calling thread, reads a signalfd with rf_read (the task
 * suspends, the loop runs on) and hands the signal to the task. Nothing
 * runs in a signal handler and no wait anywhere is interrupted.
 *
 * A process-directed signal goes to any thread that does not block it.
 * The runtime's own threads (the offload pool's workers, the stall
 * detector's watchdog) therefore start with every asynchronous signal
 * blocked (rf__thread_create), so that a signal a program waits for with
 * rf_signal_wait is never taken, with its default action, by one of them.
 * The synchronous ones (a fault in the thread itself) stay unblocked: a
 * blocked SIGSEGV would kill the process without running any handler.
 */
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "internal.h"

static void async_signals(sigset_t *set)
{
    sigfillset(set);
    static const int sync_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE,
                                    SIGTRAP, SIGSYS,  SIGABRT};
    for (size_t i = 0; i < sizeof sync_sigs / sizeof sync_sigs[0]; i++)
        sigdelset(set, sync_sigs[i]);
}

int rf__thread_create(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t block, old;
    async_signals(&block);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static bool set_is_empty(const sigset_t *set)
{
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(set, sig) == 1)
            return false;
    return true;
}

int rf_signal_wait(const sigset_t *set, struct signalfd_siginfo *info)
{
    if (!set || set_is_empty(set))
        return -EINVAL;
    if (!rf__self())
        return -EPERM;
    /* Blocked for good: a signal that comes between two waits stays
     * pending and is read by the next one. */
    int rc = pthread_sigmask(SIG_BLOCK, set, NULL);
    if (rc)
        return -rc;
    int fd = signalfd(-1, set, SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct signalfd_siginfo si;
    ssize_t n;
    do
        n = rf_read(fd, &si, sizeof si, -1);
    while (n == -EINTR || n == -EAGAIN);
    /* rf_read has returned: nothing of ours is in flight on fd. */
    close(fd);
    if (n < 0)
        return (int)n;
    if (n != (ssize_t)sizeof si)
        return -EIO;
    if (info)
        *info = si;
    return (int)si.ssi_signo;
}
