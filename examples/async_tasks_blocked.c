/*
 * async_tasks_blocked (seed 000): task_a "sleeps" with time.sleep, which
 * blocks the thread the loop runs on. While it blocks, nothing else can
 * run, so task_b only starts after it: 1 s + 2 s = 3 s instead of 2 s.
 *
 * With --reverse, gather gets task_b first: task_b starts its 2 s
 * non-blocking sleep, then task_a blocks for 1 s *during* that sleep, so
 * the total is back to 2 s. "If you understand why this happened, you
 * understand asyncio."
 *
 * With --offload, task_a hands its blocking sleep to a worker thread
 * (rf_to_thread, asyncio.to_thread): the loop stays free, task_b runs
 * meanwhile, and the total is 2 s in either order.
 *
 * Run it with RINGFIBER_STALL_MS=100 in the environment and the stall
 * detector names the culprit on stderr: task_a held the loop for 1 s.
 */
#include "common.h"

static bool offload;

/* time.sleep(1), as a function a worker thread can run. */
static void *blocking_sleep(void *arg)
{
    block_s(*(const double *)arg);
    return NULL;
}

static void *task_a(void *arg)
{
    (void)arg;
    printf("Task A starts\n");
    if (offload) {
        /* await asyncio.to_thread(time.sleep, 1) */
        double seconds = 1;
        ex_check(rf_to_thread(blocking_sleep, &seconds, NULL), "rf_to_thread");
    } else {
        block_s(1); /* 1 sec BLOCKING task! (a real nanosleep of the thread) */
    }
    printf("Task A ends\n");
    return ex_str("A1");
}

static void *task_b(void *arg)
{
    (void)arg;
    printf("Task B starts\n");
    sleep_s(2); /* 2 secs non-blocking task */
    printf("Task B ends\n");
    return ex_str("B2");
}

static void *run_tasks_async_blocked(void *arg)
{
    bool reverse = *(const bool *)arg;
    uint64_t start = ex_now();
    /* gather() turns its arguments into tasks in argument order, and
     * tasks start in the order they were created. */
    rf_task *tasks[2];
    if (!reverse) {
        tasks[0] = ex_spawn(task_a, NULL, "task_a");
        tasks[1] = ex_spawn(task_b, NULL, "task_b");
    } else {
        tasks[0] = ex_spawn(task_b, NULL, "task_b");
        tasks[1] = ex_spawn(task_a, NULL, "task_a");
    }
    void *result[2];
    ex_gather(tasks, 2, result);
    ex_print_executed(start); /* 3 secs! (2 secs with --reverse) */
    ex_print_str_list(result, 2);
    ex_release_all(tasks, 2);
    return NULL;
}

int main(int argc, char **argv)
{
    bool reverse = false;
    const ex_option opts[] = {
        {"--reverse", NULL, "gather(task_b(), task_a()): 2 s instead of 3 s",
         &reverse, NULL, NULL},
        {"--offload", NULL, "task_a's blocking sleep runs on a worker "
                            "thread: 2 s", &offload, NULL, NULL},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    ex_run(run_tasks_async_blocked, &reverse);
    return 0;
}
