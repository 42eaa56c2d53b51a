/*
 * hello_async: the tutorials' first program (seeds 000 and 002).
 *
 *   async def main():
 *       print('Hello ...')
 *       await asyncio.sleep(1)
 *       print('... World!')
 *   asyncio.run(main())
 */
#include "common.h"

static void *hello_main(void *arg)
{
    (void)arg;
    printf("Hello ...\n");
    sleep_s(1);
    printf("... World!\n");
    return NULL;
}

int main(int argc, char **argv)
{
    ex_parse_args(argc, argv, NULL);
    ex_run(hello_main, NULL);
    return 0;
}
