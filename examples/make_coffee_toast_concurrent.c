/*
 * make_coffee_toast_concurrent (seed 002): with a brewing machine, brew
 * is a coroutine that waits without blocking, so after water and beans
 * (3 s) it runs alongside the toast: 3 + max(1, 0.9) = 4.00 s.
 */
#include "common.h"

static void *boil_water(void *arg)
{
    (void)arg;
    printf("Boil water starts\n");
    sleep_s(3);
    printf("Boil water ends\n");
    return ex_str("Boiled water");
}

static void *grind_coffee_bean(void *arg)
{
    (void)arg;
    printf("Grind coffee bean starts\n");
    sleep_s(2);
    printf("Grind coffee bean ends\n");
    return ex_str("Ground coffee");
}

/* async def brew_coffee(ingredients): arg points to the two results of
 * the first gather. */
static void *brew_coffee(void *arg)
{
    char list[256];
    ex_str_list(list, sizeof list, arg, 2);
    printf("Brew coffee automatically with %s starts\n", list);
    sleep_s(1);
    printf("Brew coffee automatically with %s ends\n", list);
    return ex_str("Coffee ready!");
}

static void *toast_bread(void *arg)
{
    (void)arg;
    printf("Toast bread starts\n");
    sleep_s(0.9);
    printf("Toast bread ends\n");
    return ex_str("Toast bread ready!");
}

/* await asyncio.gather(a(arg_a), b(arg_b)) into results[0..2) */
static void gather2(rf_fn a, void *arg_a, const char *name_a, rf_fn b,
                    void *arg_b, const char *name_b, void **results)
{
    rf_task *tasks[] = {ex_spawn(a, arg_a, name_a), ex_spawn(b, arg_b, name_b)};
    ex_gather(tasks, EX_COUNT(tasks), results);
    ex_release_all(tasks, EX_COUNT(tasks));
}

static void *make_coffee_toast(void *arg)
{
    (void)arg;
    uint64_t start = ex_now();
    /* result1 + result2, stored side by side */
    void *result[4];
    gather2(boil_water, NULL, "boil_water", grind_coffee_bean, NULL,
            "grind_coffee_bean", &result[0]);
    gather2(brew_coffee, &result[0], "brew_coffee", toast_bread, NULL,
            "toast_bread", &result[2]);
    ex_print_executed(start); /* 4.00 secs */
    ex_print_str_list(result, 4);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(make_coffee_toast, NULL);
    return 0;
}
