/*
 * add_results (seed 003): the ways to get a coroutine's result out of a
 * loop, in the order the tutorial shows them.
 *
 *  1. loop.run_until_complete(add(3, 4)), then again with add(5, 5), on
 *     one explicit loop: each call starts the loop, runs the coroutine to
 *     its end and stops the loop again. Prints 7, then 10.
 *  2. loop.create_task(get_results()); loop.run_forever(), where
 *     get_results awaits both adds, prints "7 10" and calls loop.stop().
 *  3. asyncio.run(get_results()): the same without the boilerplate.
 *  4. Concurrency: add_slow (5 s) and add_fast (3 s) as two tasks; both
 *     start at once, fast finishes first, and the whole takes 5 s, not 8.
 */
#include "common.h"

/* async def add(x, y): return x + y  -- awaited inline, so a plain call */
static int add(int x, int y)
{
    return x + y;
}

typedef struct add_args {
    int x, y;
} add_args;

/* add(x, y) as a task body, for run_until_complete and create_task. */
static void *add_task(void *arg)
{
    const add_args *a = arg;
    return EX_INT_TO_PTR(add(a->x, a->y));
}

/* result = loop.run_until_complete(add(x, y)) */
static int run_add(rf_loop *loop, int x, int y)
{
    add_args args = {x, y};
    void *result;
    ex_check(rf_loop_run_until_complete(loop, add_task, &args, &result),
             "rf_loop_run_until_complete");
    return EX_PTR_TO_INT(result);
}

static void part1_run_until_complete(void)
{
    rf_loop *loop;
    ex_check(rf_loop_new(&loop, ex_loop_opts()), "rf_loop_new");
    int result1 = run_add(loop, 3, 4);
    int result2 = run_add(loop, 5, 5);
    printf("%d\n", result1); /* Prints 7 */
    printf("%d\n", result2); /* Prints 10 */
    ex_check(rf_loop_free(loop), "rf_loop_free");
}

/* async def get_results(): await add(3, 4); await add(5, 5); print */
static void *get_results(void *arg)
{
    (void)arg;
    int result1 = add(3, 4);
    int result2 = add(5, 5);
    printf("%d %d\n", result1, result2); /* Prints 7 10 */
    return NULL;
}

/* get_results, then loop.stop(): the only way run_forever returns. */
static void *get_results_and_stop(void *arg)
{
    get_results(arg);
    ex_check(rf_loop_stop(rf_loop_current()), "rf_loop_stop");
    return NULL;
}

static void part2_run_forever(void)
{
    rf_loop *loop;
    ex_check(rf_loop_new(&loop, ex_loop_opts()), "rf_loop_new");
    rf_task *t = rf_loop_spawn(loop, get_results_and_stop, NULL, NULL);
    if (!t)
        ex_die("rf_loop_spawn", -errno);
    rf_task_release(t); /* nobody awaits it: let it run detached */
    ex_check(rf_loop_run_forever(loop), "rf_loop_run_forever");
    ex_check(rf_loop_free(loop), "rf_loop_free"); /* finally: loop.close() */
}

/* async def add_slow / add_fast: the add with a network-like delay. */
static void *add_slow(void *arg)
{
    const add_args *a = arg;
    printf("starting slow add\n");
    sleep_s(5); /* Mimic some network delay */
    printf("result ready for slow add\n");
    return EX_INT_TO_PTR(a->x + a->y);
}

static void *add_fast(void *arg)
{
    const add_args *a = arg;
    printf("starting fast add\n");
    sleep_s(3); /* Mimic some network delay */
    printf("result ready for fast add\n");
    return EX_INT_TO_PTR(a->x + a->y);
}

/* task1 = create_task(add_slow(3, 4)); task2 = create_task(add_fast(5, 5))
 * print(await task1, await task2) */
static void *get_results_concurrently(void *arg)
{
    (void)arg;
    add_args slow_args = {3, 4}, fast_args = {5, 5};
    rf_task *task1 = ex_spawn(add_slow, &slow_args, "add_slow");
    rf_task *task2 = ex_spawn(add_fast, &fast_args, "add_fast");
    void *r1, *r2;
    ex_check(rf_join(task1, &r1), "rf_join(task1)");
    ex_check(rf_join(task2, &r2), "rf_join(task2)");
    printf("%d %d\n", EX_PTR_TO_INT(r1), EX_PTR_TO_INT(r2)); /* 7 10 */
    rf_task_release(task1);
    rf_task_release(task2);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    part1_run_until_complete();
    part2_run_forever();
    ex_run(get_results, NULL);              /* part 3: asyncio.run */
    ex_run(get_results_concurrently, NULL); /* part 4: 5 s, not 8 */
    return 0;
}
