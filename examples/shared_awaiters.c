/*
 * shared_awaiters (seed 004, "Callables"): three tasks await one
 * expensive task. A task keeps a list of waiters, not a single one, so
 * all three resume when it finishes, and all three get its result.
 *
 *   task = asyncio.create_task(some_expensive_task())
 *   await asyncio.gather(task1(task), task2(task), task3(task))
 *
 * Here each waiter also returns what it awaited, and main prints the
 * gathered list, to show that the one result, 42, reached all three.
 */
#include "common.h"

static void *some_expensive_task(void *arg)
{
    (void)arg;
    printf("Starting expensive task\n");
    sleep_s(2);
    printf("Finished expensive task\n");
    return EX_INT_TO_PTR(42);
}

typedef struct waiter {
    int number;       /* 1 for task1, ... */
    rf_task *awaited; /* the shared expensive task */
} waiter;

/* async def taskN(task): print(...); return await task */
static void *waiter_task(void *arg)
{
    const waiter *w = arg;
    printf("Task%d waiting for expensive task to complete\n", w->number);
    void *result;
    /* Joining takes no reference: any number of tasks may join. */
    ex_check(rf_join(w->awaited, &result), "rf_join(expensive task)");
    return result;
}

static void *shared_main(void *arg)
{
    (void)arg;
    rf_task *task = ex_spawn(some_expensive_task, NULL, "expensive");
    waiter waiters[] = {{1, task}, {2, task}, {3, task}};
    enum { N = EX_COUNT(waiters) };
    rf_task *tasks[N];
    for (size_t i = 0; i < N; i++)
        tasks[i] = ex_spawn(waiter_task, &waiters[i], "waiter");
    void *results[N];
    ex_gather(tasks, N, results);
    ex_print_int_list(results, N); /* [42, 42, 42] */
    ex_release_all(tasks, N);
    rf_task_release(task);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(shared_main, NULL);
    return 0;
}
