/*
 * gather_tasks (seed 002): three tasks of 2, 4 and 1 s run at once, so
 * the whole gather takes as long as the longest one, 4 s, and the
 * results come back in the order the tasks were given, not the order
 * they finished in.
 *
 *   result = await asyncio.gather(task_a(), task_b(), task_c())
 */
#include "common.h"

static void *task_a(void *arg)
{
    (void)arg;
    printf("Task A starts\n");
    sleep_s(2); /* 2 secs non-blocking task */
    printf("Task A ends\n");
    return ex_str("A1");
}

static void *task_b(void *arg)
{
    (void)arg;
    printf("Task B starts\n");
    sleep_s(4); /* 4 secs non-blocking task */
    printf("Task B ends\n");
    return ex_str("B2");
}

static void *task_c(void *arg)
{
    (void)arg;
    printf("Task C starts\n");
    sleep_s(1); /* 1 sec non-blocking task */
    printf("Task C ends\n");
    return ex_str("C3");
}

static void *gather_tasks(void *arg)
{
    (void)arg;
    uint64_t start = ex_now();
    /* gather() wraps each coroutine in a task, in argument order. */
    rf_task *tasks[] = {ex_spawn(task_a, NULL, "task_a"),
                        ex_spawn(task_b, NULL, "task_b"),
                        ex_spawn(task_c, NULL, "task_c")};
    void *result[EX_COUNT(tasks)];
    ex_gather(tasks, EX_COUNT(tasks), result);
    ex_print_executed(start); /* 4 secs */
    ex_print_str_list(result, EX_COUNT(result));
    ex_release_all(tasks, EX_COUNT(tasks));
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(gather_tasks, NULL);
    return 0;
}
