/*
 * make_coffee_wrong (seed 002): gather() runs the three steps at once,
 * which is fast (3 s, the longest step) but wrong: brewing needs the
 * boiled water and the ground coffee, and here it finishes first.
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

static void *brew_coffee(void *arg)
{
    (void)arg;
    printf("Brew coffee manually starts\n");
    sleep_s(1);
    printf("Brew coffee manually ends\n");
    return ex_str("Coffee not ready!");
}

static void *make_coffee(void *arg)
{
    (void)arg;
    uint64_t start = ex_now();
    rf_task *tasks[] = {
        ex_spawn(boil_water, NULL, "boil_water"),
        ex_spawn(grind_coffee_bean, NULL, "grind_coffee_bean"),
        ex_spawn(brew_coffee, NULL, "brew_coffee"),
    };
    void *result[EX_COUNT(tasks)];
    ex_gather(tasks, EX_COUNT(tasks), result);
    ex_print_executed(start); /* 3 secs */
    ex_print_str_list(result, EX_COUNT(result));
    ex_release_all(tasks, EX_COUNT(tasks));
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(make_coffee, NULL);
    return 0;
}
