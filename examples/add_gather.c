/*
 * add_gather (seed 003): gather() over tasks created at run time from a
 * list of inputs; the results come back in input order.
 *
 *   tasks = [asyncio.create_task(add(x, y)) for x, y in inputs]
 *   print(await asyncio.gather(*tasks))  # Prints [5, 9, 10, 9]
 */
#include "common.h"

typedef struct pair {
    int x, y;
} pair;

/* async def add(x, y): return x + y */
static void *add(void *arg)
{
    const pair *p = arg;
    return EX_INT_TO_PTR(p->x + p->y);
}

static void *get_results(void *arg)
{
    (void)arg;
    pair inputs[] = {{2, 3}, {4, 5}, {5, 5}, {7, 2}};
    enum { N = EX_COUNT(inputs) };
    rf_task *tasks[N];
    for (size_t i = 0; i < N; i++)
        tasks[i] = ex_spawn(add, &inputs[i], "add");
    void *results[N];
    ex_gather(tasks, N, results);
    ex_print_int_list(results, N); /* Prints [5, 9, 10, 9] */
    ex_release_all(tasks, N);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(get_results, NULL);
    return 0;
}
