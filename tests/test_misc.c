/*
 * The small things: rf_strerror and rf_err_name never NULL, rf_version
 * matches the header.
 */
#include "helpers.h"

#include <limits.h>

static void test_strerror_never_null(void **state)
{
    for (int e = -5000; e <= 5000; e++) {
        const char *s = rf_strerror(e);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    static const int odd[] = {INT_MIN, INT_MIN + 1, INT_MAX, -INT_MAX, 1 << 20, -(1 << 20)};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *s = rf_strerror(odd[i]);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
}

static void test_strerror_distinguishes(void **state)
{
    /* The codes the API returns have their own texts. */
    static const int codes[] = {-EINVAL, -EPERM, -ENOSYS, -ENOMEM, -EBUSY, -EXDEV,
                                -EDEADLK, -ECANCELED, -ETIMEDOUT, -ESRCH};
    enum { N = sizeof codes / sizeof codes[0] };
    char copy[N][256];
    for (int i = 0; i < N; i++)
        snprintf(copy[i], sizeof copy[i], "%s", rf_strerror(codes[i]));
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(copy[i], copy[j]);
}

/* rf_err_name, as uv_err_name: the errno's name, for logs and tests. */
static void test_err_name(void **state)
{
    assert_string_equal(rf_err_name(-ECANCELED), "ECANCELED");
    assert_string_equal(rf_err_name(-ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(rf_err_name(-ESRCH), "ESRCH");
    assert_string_equal(rf_err_name(-EAGAIN), "EAGAIN");
    assert_string_equal(rf_err_name(ECANCELED), "ECANCELED"); /* either sign */
    assert_string_equal(rf_err_name(0), "0");
    static const int odd[] = {INT_MIN, INT_MAX, -4096, 1 << 20, -4095};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        assert_non_null(rf_err_name(odd[i]));
    assert_string_equal(rf_err_name(INT_MIN), "UNKNOWN");
    assert_string_equal(rf_err_name(-4096), "UNKNOWN");
}

static void test_version(void **state)
{
    assert_int_equal(rf_version(), RINGFIBER_VERSION_HEX);
    assert_int_equal(RINGFIBER_VERSION_HEX,
                     (RINGFIBER_VERSION_MAJOR << 16) | (RINGFIBER_VERSION_MINOR << 8) |
                         RINGFIBER_VERSION_PATCH);
    assert_int_equal(rf_version() >> 16, RINGFIBER_VERSION_MAJOR);
    assert_int_equal((rf_version() >> 8) & 0xff, RINGFIBER_VERSION_MINOR);
    assert_int_equal(rf_version() & 0xff, RINGFIBER_VERSION_PATCH);
}

static void test_constants(void **state)
{
    assert_true(RF_MIN_STACK_SIZE <= RF_DEFAULT_STACK_SIZE);
    assert_int_equal(RF_NSEC_PER_SEC, 1000 * RF_NSEC_PER_MSEC);
    assert_int_equal(RF_NSEC_PER_MSEC, 1000 * RF_NSEC_PER_USEC);
    assert_true(RF_GUARD_MADVISE != RF_GUARD_MPROTECT);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_strerror_never_null),
    cmocka_unit_test(test_strerror_distinguishes),
    cmocka_unit_test(test_err_name),
    cmocka_unit_test(test_version),
    cmocka_unit_test(test_constants),
};

RFT_MAIN(tests)
