/*
 * long_running_tasks (seed 001): the same three waits of 2, 10 and 5 s,
 * first one after the other (17 s), then as three tasks at once (10 s,
 * the longest; 5 wakes before 10 although it was started after it).
 *
 * The seed's sequential version is plain synchronous Python. Here it is
 * the same coroutine awaited inline three times: "await coroutine" runs
 * it in the calling task, so each wait still finishes before the next
 * begins and the total is the sum.
 */
#include "common.h"

/* async def long_running_task(time_to_sleep) */
static void long_running_task(int time_to_sleep)
{
    printf("Begin sleep for %d\n", time_to_sleep);
    sleep_s(time_to_sleep);
    printf("Awake from %d\n", time_to_sleep);
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

/* task1..3 = create_task(...); await asyncio.gather(task1, task2, task3) */
static void *main_concurrent(void *arg)
{
    (void)arg;
    rf_task *tasks[] = {
        ex_spawn(long_running_task_fn, EX_INT_TO_PTR(2), "task1"),
        ex_spawn(long_running_task_fn, EX_INT_TO_PTR(10), "task2"),
        ex_spawn(long_running_task_fn, EX_INT_TO_PTR(5), "task3"),
    };
    ex_gather(tasks, EX_COUNT(tasks), NULL);
    ex_release_all(tasks, EX_COUNT(tasks));
    return NULL;
}

/* s = time.perf_counter(); asyncio.run(main()); print elapsed */
static void run_timed(rf_fn main_fn)
{
    uint64_t s = rf_now_ns();
    ex_run(main_fn, NULL);
    ex_print_execution_time(s);
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    run_timed(main_sequential); /* 17 s */
    run_timed(main_concurrent); /* 10 s */
    return 0;
}
