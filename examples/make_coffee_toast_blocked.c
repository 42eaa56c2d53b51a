/*
 * make_coffee_toast_blocked (seed 002): water and beans are prepared
 * concurrently (3 s), then brewing by hand *blocks*: brew_coffee is a
 * plain function that sleeps the thread (time.sleep), so nothing else can
 * run meanwhile, and the toast can only start afterwards:
 * 3 + 1 + 0.9 = 4.90 s.
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

/* def brew_coffee(ingredients): a plain, blocking function. */
static const char *brew_coffee(void *const *ingredients, size_t n)
{
    char list[256];
    ex_str_list(list, sizeof list, ingredients, n);
    printf("Brew coffee manually with %s starts\n", list);
    block_s(1); /* blocking! a real nanosleep of the loop's thread */
    printf("Brew coffee manually with %s ends\n", list);
    return "Coffee ready!";
}

/* async def toast_bread(), awaited inline below, so a plain call. */
static const char *toast_bread(void)
{
    printf("Toast bread starts\n");
    sleep_s(0.9);
    printf("Toast bread ends\n");
    return "Toast bread ready!";
}

static void *make_coffee_toast(void *arg)
{
    (void)arg;
    uint64_t start = ex_now();
    /* result = await asyncio.gather(boil_water(), grind_coffee_bean()) */
    rf_task *tasks[] = {
        ex_spawn(boil_water, NULL, "boil_water"),
        ex_spawn(grind_coffee_bean, NULL, "grind_coffee_bean"),
    };
    void *result[4];
    ex_gather(tasks, EX_COUNT(tasks), result);
    ex_release_all(tasks, EX_COUNT(tasks));
    /* result.append(brew_coffee(result)) */
    result[2] = ex_str(brew_coffee(result, 2));
    /* result.append(await toast_bread()) */
    result[3] = ex_str(toast_bread());
    ex_print_executed(start); /* 4.90 secs */
    ex_print_str_list(result, 4);
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(make_coffee_toast, NULL);
    return 0;
}
