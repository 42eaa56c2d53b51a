/*
 * count_numbers (seed 004, "Sleeping beauty"): what an await actually
 * gives up, shown in four runs of the same two counters.
 *
 *   async def count_numbers(label, iterations):
 *       for i in range(iterations):
 *           print(f"Running from {label}: {i}")
 *           await asyncio.sleep(0.5)
 *
 *   async def main():
 *       print("Running f1")
 *       f1 = count_numbers("f1", 3)                     # a coroutine
 *       f2 = asyncio.create_task(count_numbers("f2", 3))  # a task
 *       await f1
 *       print("Running f2")
 *       await f2
 *
 * 1. As above: awaiting the coroutine f1 runs it inline, but each sleep
 *    inside it gives the loop a turn, so the task f2 interleaves with it.
 * 2. f2 counts to 10 and is never awaited: main returns after f1, and
 *    rf_run (asyncio.run) cancels f2. Exactly where is a matter of
 *    timing: f2's sleeps end microseconds after f1's, so in practice the
 *    loop wakes both in the same scheduler pass, and that pass still runs
 *    f2 after main has returned (as asyncio runs every callback already
 *    ready). So f2 prints iteration 3, starts its fourth sleep, and that
 *    sleep is what the cancellation interrupts. On a loaded machine the
 *    thread can be preempted between the two sleeps for longer than the
 *    timer slack; then f2's sleep ends in a later pass, after main has
 *    returned, and the cancellation interrupts its third sleep instead.
 *    asyncio has the same race; either way f2 never finishes.
 * 3. sleep(0), i.e. rf_yield(): only a turn of the loop, no waiting, yet
 *    the interleaving is the same as in 1.
 * 4. No sleep at all: f1 never gives the loop a turn, so it runs to the
 *    end before f2 even starts.
 */
#include "common.h"

typedef enum pause_kind {
    PAUSE_SLEEP, /* await asyncio.sleep(0.5) */
    PAUSE_YIELD, /* await asyncio.sleep(0) */
    PAUSE_NONE,  /* the sleep commented out */
} pause_kind;

typedef struct counter {
    const char *label;
    int iterations;
    pause_kind pause;
    int done; /* iterations finished, for the report after part 2 */
} counter;

/* The await at the end of each iteration. 0, or -ECANCELED. */
static int pause_once(pause_kind pause)
{
    switch (pause) {
    case PAUSE_SLEEP:
        return sleep_s(0.5);
    case PAUSE_YIELD: {
        int rc = rf_yield();
        if (rc != 0 && rc != -ECANCELED)
            ex_die("rf_yield", rc);
        return rc;
    }
    case PAUSE_NONE:
        break;
    }
    return 0;
}

/* async def count_numbers(label, iterations) */
static void count_numbers(counter *c)
{
    for (int i = 0; i < c->iterations; i++) {
        printf("Running from %s: %d\n", c->label, i);
        if (pause_once(c->pause) == -ECANCELED) {
            /* Python raises CancelledError out of the sleep here. */
            printf("%s cancelled during the sleep of iteration %d\n",
                   c->label, i);
            return;
        }
        c->done = i + 1;
    }
}

static void *count_numbers_task(void *arg)
{
    count_numbers(arg);
    return NULL;
}

/* The two counters one run of main() uses. They live in the C main()'s
 * frame, not in the task main's: in part 2 f2 outlives the task main. */
typedef struct run {
    counter f1, f2;
    bool await_f2;
} run;

static void *count_main(void *arg)
{
    run *r = arg;
    printf("Running f1\n");
    rf_task *f2 = ex_spawn(count_numbers_task, &r->f2, "f2");
    count_numbers(&r->f1); /* await f1: a coroutine runs inline */
    printf("Running f2\n");
    if (r->await_f2)
        ex_check(rf_join(f2, NULL), "rf_join(f2)");
    /* Dropping the handle does not stop f2. If it was not awaited it is
     * still counting, and rf_run cancels it after this function returns. */
    rf_task_release(f2);
    return NULL;
}

static void run_counters(int f2_iterations, pause_kind pause, bool await_f2)
{
    run r = {
        .f1 = {"f1", 3, pause, 0},
        .f2 = {"f2", f2_iterations, pause, 0},
        .await_f2 = await_f2,
    };
    ex_run(count_main, &r);
    if (!await_f2)
        printf("rf_run returned; f2 completed %d of its %d iterations\n",
               r.f2.done, r.f2.iterations);
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    run_counters(3, PAUSE_SLEEP, true);

    printf("\n--- f2 counts to 10 and is never awaited ---\n");
    run_counters(10, PAUSE_SLEEP, false);

    printf("\n--- asyncio.sleep(0), i.e. rf_yield(): a turn, no wait ---\n");
    run_counters(3, PAUSE_YIELD, true);

    printf("\n--- no sleep at all: f1 never lets f2 run ---\n");
    run_counters(3, PAUSE_NONE, true);
    return 0;
}
