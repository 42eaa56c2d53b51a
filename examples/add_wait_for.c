/*
 * add_wait_for (seed 003): wait at most 3 s for an add that takes a
 * random 1..4 s (random.randrange(1, 5)); past the deadline the add is
 * cancelled and a fallback is used instead.
 *
 *   try:
 *       result = await asyncio.wait_for(add(3, 4), timeout=3)
 *   except asyncio.exceptions.TimeoutError:
 *       result = "fallback payload"
 *   print(result)
 *
 * Prints 7 (delay 1 or 2 s) or "fallback payload" (delay 4 s; a delay of
 * exactly 3 s also times out, since the deadline is set before the add
 * starts its sleep). --seed N makes the random delay reproducible and
 * --delay S forces it.
 */
#include "common.h"

#include <limits.h>

#define NO_SEED LONG_MIN /* --seed not given */

static void *add(void *arg)
{
    double delay_s = *(const double *)arg;
    /* function can do work between 1 second to 4 seconds */
    if (sleep_s(delay_s) == -ECANCELED)
        return NULL; /* wait_for gave up on us: there is no result */
    return EX_INT_TO_PTR(3 + 4);
}

static void *get_results(void *arg)
{
    rf_task *t = ex_spawn(add, arg, "add");
    void *result = NULL;
    int rc = rf_wait_for(t, ex_ns(3), &result);
    rf_task_release(t);
    if (rc == -ETIMEDOUT) {
        printf("fallback payload\n");
        return NULL;
    }
    ex_check(rc, "rf_wait_for");
    printf("%d\n", EX_PTR_TO_INT(result));
    return NULL;
}

/* random.randrange(1, 5): 1, 2, 3 or 4 seconds. Seeded from the clock
 * unless --seed was given. */
static double random_delay(long seed)
{
    srand(seed != NO_SEED ? (unsigned)seed : (unsigned)rf_now_ns());
    return 1 + rand() % 4;
}

int main(int argc, char **argv)
{
    long seed = NO_SEED;
    double delay_s = NAN; /* NaN: not given (the parser rejects NaN) */
    const ex_option opts[] = {
        {"--seed", "N", "seed for the random delay: reproducible runs", NULL,
         NULL, &seed},
        {"--delay", "S", "make add take S seconds, not 1..4 at random", NULL,
         &delay_s, NULL},
        {0},
    };
    ex_parse_args(argc, argv, opts);
    if (isnan(delay_s))
        delay_s = random_delay(seed);
    else if (delay_s < 0)
        ex_bad_arg(opts, "--delay must not be negative", NULL);
    ex_run(get_results, &delay_s);
    return 0;
}
