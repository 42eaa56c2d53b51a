/*
 * Install/consumer test of ringfiber-load: built against the installed
 * header and library (find_package(ringfiber) -> ringfiber::ringfiber_load,
 * and pkg-config ringfiber-load). It needs no network: a histogram of
 * 1..1000 has its median at 500 and survives HdrHistogram's encoding, and
 * a ramp's schedule gives its integral in send times. Prints "ok".
 */
#include <ringfiber_load.h>

#include <stdio.h>
#include <stdlib.h>

int main(void)
{
    rfl_hist *h = malloc(sizeof *h), *back = malloc(sizeof *back);
    uint8_t *enc = malloc(RFL_HIST_ENCODED_MAX);
    if (!h || !back || !enc)
        return 1;
    rfl_hist_init(h);
    for (uint64_t v = 1; v <= 1000; v++)
        rfl_hist_record(h, v);
    size_t len = rfl_hist_encode(h, enc, RFL_HIST_ENCODED_MAX);
    rfl_hist_init(back);
    if (rfl_hist_percentile(h, 50) != 500 || len == 0 ||
        rfl_hist_decode_add(back, enc, len) != 0 || back->total != 1000) {
        fprintf(stderr, "load_consumer: histogram\n");
        return 1;
    }
    rfl_schedule s;
    char why[160];
    rfl_slots sl;
    unsigned n = 0;
    if (rfl_schedule_parse("100..300/1s", 0, &s, why, sizeof why) != 0)
        return 1;
    rfl_slots_init(&sl, &s, 0, 1);
    while (rfl_slots_next(&sl) != UINT64_MAX)
        n++;
    if (n < 195 || n > 205) {
        fprintf(stderr, "load_consumer: %u send times, not 200\n", n);
        return 1;
    }
    free(h);
    free(back);
    free(enc);
    puts("ok");
    return 0;
}
