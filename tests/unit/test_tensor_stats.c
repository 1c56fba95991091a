/* tensor_stats: the streaming accumulator against a naive two-pass
 * reference in long double, exact counts and integer extremes, NaN/inf
 * rules, and data fed in odd-sized pieces (the result must not depend on
 * how a tensor is cut into reads). */
#include <math.h> /* macros and builtins only: no libm is linked */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "le.h"
#include "tensor_stats.h"

static int close_rel(double got, double want, double tol)
{
    if (want == 0)
        return fabs(got) <= tol;
    return fabs(got - want) <= tol * fabs(want);
}

/* stats of n float32 values fed in pieces of `piece` elements */
static void stats_f32(const float *v, size_t n, size_t piece, ck_tensor_stats *out)
{
    ck_stats_acc a;
    ck_stats_init(&a, CK_DT_FLOAT32);
    uint8_t *b = malloc(n * 4 + 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        ck_put_le32(b + 1 + 4 * i, u); /* unaligned on purpose */
    }
    for (size_t i = 0; i < n; i += piece)
        ck_stats_add(&a, b + 1 + 4 * i, n - i < piece ? n - i : piece);
    ck_stats_finish(&a, out);
    free(b);
}

static void test_float_moments(void)
{
    /* a large offset and small spread: a one-pass sum of squares would lose
     * every digit of the variance here */
    size_t n = 100003;
    float *v = malloc(n * sizeof *v);
    uint64_t r = 12345;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)(1e4 + (double)(r >> 40) / (double)(1ull << 24));
    }
    long double s = 0, mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        s += v[i];
        if (v[i] < mn) mn = v[i];
        if (v[i] > mx) mx = v[i];
    }
    long double mean = s / n, m2 = 0, ss = 0;
    for (size_t i = 0; i < n; i++) {
        m2 += (v[i] - mean) * (v[i] - mean);
        ss += (long double)v[i] * v[i];
    }
    /* compared squared: the tests link no libm (sqrt) either */
    double var = (double)(m2 / n), ssq = (double)ss;
    size_t pieces[] = { 1, 7, 4096, 4097, 100003 };
    for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
        ck_tensor_stats st;
        stats_f32(v, n, pieces[p], &st);
        CHECK_EQ_INT(st.numel, n);
        CHECK(st.min == (double)mn && st.max == (double)mx);
        CHECK(close_rel(st.mean, (double)mean, 1e-14));
        CHECK(close_rel(st.std * st.std, var, 1e-9));
        CHECK(close_rel(st.l2 * st.l2, ssq, 1e-13));
        CHECK_EQ_INT(st.nan + st.pos_inf + st.neg_inf + st.zeros, 0);
    }
    free(v);
}

static void test_float_specials(void)
{
    float v[] = { 1.0f, NAN, -0.0f, 0.0f, 3.0f, -NAN, 2.0f };
    ck_tensor_stats st;
    stats_f32(v, 7, 3, &st);
    CHECK_EQ_INT(st.numel, 7);
    CHECK_EQ_INT(st.nan, 2);
    CHECK_EQ_INT(st.zeros, 2);
    CHECK(st.min == -0.0 && st.max == 3.0); /* NaN ignored, like nanmin */
    CHECK(close_rel(st.mean, 6.0 / 5, 1e-15));
    /* population std of {1,0,0,3,2}: mean 1.2, var (0.04+1.44+1.44+3.24+0.64)/5 */
    CHECK(close_rel(st.std * st.std, 6.8 / 5, 1e-14));
    CHECK(close_rel(st.l2 * st.l2, 14.0, 1e-14));

    float w[] = { 1.0f, INFINITY, 2.0f };
    stats_f32(w, 3, 2, &st);
    CHECK_EQ_INT(st.pos_inf, 1);
    CHECK(isinf(st.max) && st.max > 0 && st.min == 1.0);
    CHECK(isinf(st.mean) && st.mean > 0);
    CHECK(isnan(st.std));
    CHECK(isinf(st.l2));
    float x[] = { -INFINITY, INFINITY, 5.0f };
    stats_f32(x, 3, 3, &st);
    CHECK_EQ_INT(st.pos_inf, 1);
    CHECK_EQ_INT(st.neg_inf, 1);
    CHECK(isnan(st.mean));
    CHECK(isinf(st.min) && st.min < 0);
    float y[] = { NAN, NAN };
    stats_f32(y, 2, 1, &st);
    CHECK(!st.has_values);
    CHECK_EQ_INT(st.nan, 2);
    stats_f32(y, 0, 1, &st);
    CHECK(!st.has_values);
    CHECK_EQ_INT(st.numel, 0);
}

static void test_narrow_floats(void)
{
    /* bfloat16 and float16 widened exactly: 0x3f81 = 1 + 2^-7,
     * 0x0001 (float16) = 2^-24 */
    uint8_t b[4];
    ck_put_le16(b, 0x3f81);
    ck_put_le16(b + 2, 0xff80); /* -inf */
    ck_stats_acc a;
    ck_tensor_stats st;
    ck_stats_init(&a, CK_DT_BFLOAT16);
    ck_stats_add(&a, b, 2);
    ck_stats_finish(&a, &st);
    CHECK(st.max == 1 + 0x1p-7);
    CHECK_EQ_INT(st.neg_inf, 1);
    ck_put_le16(b, 0x0001);
    ck_put_le16(b + 2, 0x7bff);
    ck_stats_init(&a, CK_DT_FLOAT16);
    ck_stats_add(&a, b, 2);
    ck_stats_finish(&a, &st);
    CHECK(st.min == 0x1p-24 && st.max == 65504.0);
    uint8_t e = 0x7e; /* e4m3fn 448 */
    ck_stats_init(&a, CK_DT_FLOAT8_E4M3FN);
    ck_stats_add(&a, &e, 1);
    ck_stats_finish(&a, &st);
    CHECK(st.max == 448.0 && st.mean == 448.0 && st.std == 0);
}

static void test_integers(void)
{
    uint8_t b[8 * 4];
    ck_put_le64(b, (uint64_t)INT64_MAX);
    ck_put_le64(b + 8, (uint64_t)INT64_MAX);
    ck_put_le64(b + 16, (uint64_t)INT64_MIN);
    ck_put_le64(b + 24, 0);
    ck_stats_acc a;
    ck_tensor_stats st;
    ck_stats_init(&a, CK_DT_INT64);
    ck_stats_add(&a, b, 4);
    ck_stats_finish(&a, &st);
    CHECK(st.kind == CK_STATS_SIGNED);
    CHECK(st.imin == INT64_MIN && st.imax == INT64_MAX);
    CHECK_EQ_INT(st.zeros, 1);
    /* exact sum: 2*MAX + MIN = MAX - 1 = 2^63 - 2, over 4 */
    CHECK(st.mean == (double)((long double)(INT64_MAX - 1) / 4));

    for (int i = 0; i < 4; i++)
        ck_put_le64(b + 8 * i, UINT64_MAX - (uint64_t)i);
    ck_stats_init(&a, CK_DT_UINT64);
    ck_stats_add(&a, b, 4);
    ck_stats_finish(&a, &st);
    CHECK(st.umax == UINT64_MAX && st.umin == UINT64_MAX - 3);

    int8_t i8[] = { -128, 127, 0, -1, 5 };
    ck_stats_init(&a, CK_DT_INT8);
    ck_stats_add(&a, i8, 5);
    ck_stats_finish(&a, &st);
    CHECK(st.imin == -128 && st.imax == 127);
    CHECK(st.mean == 3.0 / 5);
    double m = 0.6, var = ((-128 - m) * (-128 - m) + (127 - m) * (127 - m) + m * m +
                           (-1 - m) * (-1 - m) + (5 - m) * (5 - m)) / 5;
    CHECK(close_rel(st.std * st.std, var, 1e-14));
    CHECK(close_rel(st.l2 * st.l2, 128.0 * 128 + 127 * 127 + 1 + 25, 1e-14));

    uint8_t bo[] = { 1, 0, 1, 1 };
    ck_stats_init(&a, CK_DT_BOOL);
    ck_stats_add(&a, bo, 4);
    ck_stats_finish(&a, &st);
    CHECK(st.umin == 0 && st.umax == 1 && st.mean == 0.75 && st.zeros == 1);
}

static void test_complex(void)
{
    float c[] = { 3, 4, 0, 0, NAN, 1, INFINITY, 0, 0, -1 };
    uint8_t b[sizeof c];
    memcpy(b, c, sizeof c);
    ck_stats_acc a;
    ck_tensor_stats st;
    ck_stats_init(&a, CK_DT_COMPLEX64);
    ck_stats_add(&a, b, 5);
    ck_stats_finish(&a, &st);
    CHECK(st.kind == CK_STATS_COMPLEX);
    CHECK_EQ_INT(st.nan, 1);
    CHECK_EQ_INT(st.pos_inf, 1);
    CHECK_EQ_INT(st.zeros, 1);
    CHECK(st.min == 0 && isinf(st.max));
    ck_stats_init(&a, CK_DT_COMPLEX64);
    ck_stats_add(&a, b, 2); /* |3+4j| = 5, |0| = 0 */
    ck_stats_finish(&a, &st);
    CHECK(st.max == 5 && st.mean == 2.5 && st.std == 2.5 && st.l2 == 5);
}

static void test_unsupported(void)
{
    ck_stats_acc a;
    CHECK(ck_stats_init(&a, CK_DT_QINT8) < 0);
    CHECK(ck_stats_init(&a, CK_DT_FLOAT4_E2M1FN_X2) < 0);
    CHECK(!ck_stats_supported(CK_DT_INVALID));
}

int main(void)
{
    test_float_moments();
    test_float_specials();
    test_narrow_floats();
    test_integers();
    test_complex();
    test_unsupported();
    return check_done();
}
