/*
 * long_running_tasks (seed 001): the same three waits of 2, 10 and 5 s,
 * first one after the other (17 s), then as three tasks at once (10 s,
 * the longest; 5 wakes before 10 although it was started after it).
 *
 * The seed's sequential version is plain synchronous Python. Here it is
 * the same coroutine awaited inline three times: "await coroutine" runs
 * it in the calling task, so each wait still finishes before the next
 * begins and the total is the sum.
 *
 * With --blocking, the first run is the seed's synchronous program made
 * the wrong way: three tasks, but each sleeps with time.sleep, blocking
 * the loop's thread, so they run one after the other (17 s) although
 * they were started together; the second run is the concurrent one
 * (10 s).
 */
#include "common.h"

/* async def long_running_task(time_to_sleep) */
static void long_running_task(int time_to_sleep)
{
    printf("Begin sleep for %d\n", time_to_sleep);
    sleep_s(time_to_sleep);
    printf("Awake from %d\n", time_to_sleep);
}

/* def long_running_task(time_to_sleep) with time.sleep: blocks the
 * loop's thread. */
static void *blocking_task_fn(void *arg)
{
    int time_to_sleep = EX_PTR_TO_INT(arg);
    printf("Begin sleep for %d\n", time_to_sleep);
    block_s(time_to_sleep);
    printf("Awake from %d\n", time_to_sleep);
    return NULL;
}

/* The same, as a task body: arg carries the seconds. */
static void *long_running_task_fn(void *arg)
{
    long_running_task(EX_PTR_TO_INT(arg));
    return NULL;
}

/* await long_running_task(2); ...(10); ...(5) */
static void *main_sequential(void *arg)
{
    (void)arg;
    long_running_task(2);
    long_running_task(10);
    long_running_task(5);
    return NULL;
}

/* task1..3 = create_task(...); await asyncio.gather(task1, task2, task3)
 * arg: the task body. */
static void *main_tasks(void *arg)
{
    rf_fn fn = *(rf_fn *)arg;
    rf_task *tasks[] = {
        ex_spawn(fn, EX_INT_TO_PTR(2), "task1"),
        ex_spawn(fn, EX_INT_TO_PTR(10), "task2"),
        ex_spawn(fn, EX_INT_TO_PTR(5), "task3"),
    };
    ex_gather(tasks, EX_COUNT(tasks), NULL);
    ex_release_all(tasks, EX_COUNT(tasks));
    return NULL;
}

/* s = time.perf_counter(); asyncio.run(main()); print elapsed */
static void run_timed(rf_fn main_fn, void *arg)
{
    uint64_t s = ex_now();
    ex_run(main_fn, arg);
    ex_print_execution_time(s);
}

int main(int argc, char **argv)
{
    bool blocking = false;
    const ex_option opts[] = {
        {"--blocking", NULL, "first run: three tasks that block the thread "
                             "(17 s)", &blocking, NULL, NULL},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    rf_fn blocking_fn = blocking_task_fn, concurrent_fn = long_running_task_fn;
    if (blocking)
        run_timed(main_tasks, &blocking_fn); /* 17 s: tasks, but blocked */
    else
        run_timed(main_sequential, NULL); /* 17 s */
    run_timed(main_tasks, &concurrent_fn); /* 10 s */
    return 0;
}
