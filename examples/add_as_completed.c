/*
 * add_as_completed (seed 003): consume results as they become ready
 * instead of all at once.
 *
 *   for cor in asyncio.as_completed(cors):
 *       print(await cor)
 *
 * The seed warns that the order "can change based on which co-routine
 * finishes first": its adds do not wait at all, so they finish in
 * whatever order the loop happens to run them. To make this example's
 * output deterministic (and testable), each add here sleeps a different
 * time, longest first, so they finish in the reverse of the input order:
 * 9, 10, 9, 5. That also shows that the order is by completion, not by
 * submission.
 */
#include "common.h"

typedef struct add_job {
    int x, y;
    double delay_s; /* distinct per job: fixes the completion order */
} add_job;

static void *add(void *arg)
{
    const add_job *job = arg;
    sleep_s(job->delay_s);
    return EX_INT_TO_PTR(job->x + job->y);
}

static void *get_results(void *arg)
{
    (void)arg;
    add_job inputs[] = {
        {2, 3, 2.0}, {4, 5, 1.5}, {5, 5, 1.0}, {7, 2, 0.5}};
    enum { N = EX_COUNT(inputs) };
    rf_task *tasks[N];
    for (size_t i = 0; i < N; i++)
        tasks[i] = ex_spawn(add, &inputs[i], "add");

    rf_as_completed ac;
    ex_check(rf_as_completed_init(&ac, tasks, N), "rf_as_completed_init");
    rf_task *t;
    void *result;
    int status, rc;
    while ((rc = rf_as_completed_next(&ac, &t, &result, &status)) > 0) {
        ex_check(status, "add"); /* nothing here is ever cancelled */
        printf("%d\n", EX_PTR_TO_INT(result));
    }
    if (rc < 0)
        ex_die("rf_as_completed_next", rc);
    rf_as_completed_fini(&ac);
    ex_release_all(tasks, N);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(get_results, NULL);
    return 0;
}
