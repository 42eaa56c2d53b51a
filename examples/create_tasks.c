/*
 * create_tasks (seed 002): create_task() schedules a task but does not
 * run it; the creator goes on ("Do other work here...") and the tasks
 * start only when it awaits. Both then sleep at once: 4 s in all.
 *
 *   t_a = asyncio.create_task(task_a())
 *   t_b = asyncio.create_task(task_b())
 *   result_a = await t_a
 *   result_b = await t_b
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

static void *create_tasks(void *arg)
{
    (void)arg;
    uint64_t start = ex_now();

    rf_task *t_a = ex_spawn(task_a, NULL, "task_a");
    printf("Task A created...\n");
    rf_task *t_b = ex_spawn(task_b, NULL, "task_b");
    printf("Task B created...\n");

    printf("Do other work here...\n");

    void *results[2];
    ex_check(rf_join(t_a, &results[0]), "rf_join(t_a)");
    ex_check(rf_join(t_b, &results[1]), "rf_join(t_b)");

    ex_print_executed(start); /* 4 secs */
    ex_print_str_list(results, 2);
    rf_task_release(t_a);
    rf_task_release(t_b);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(create_tasks, NULL);
    return 0;
}
