/* dtype_convert: every float16 and bfloat16 value, every float8 value, and a
 * wide net of float32 edge cases, checked against a reference that works on
 * values (doubles) rather than bits: decode each format from its fields,
 * round with explicit nearest-even arithmetic, saturate to inf past the
 * largest finite value.  (frexp and ldexp come from libc.)  Failures are
 * counted per family and reported once, with the first bad input, so the
 * TAP output stays short. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dtype_convert.h"
#include "le.h"

typedef struct {
    int p;         /* significand bits, implicit one included */
    int emin;      /* exponent of the smallest normal */
    double maxfin; /* largest finite value */
} fmt;

static const fmt F16 = { 11, -14, 65504.0 };
static const fmt BF16 = { 8, -126, 0x1.fep127 };

/* v rounded to f, nearest even, inf past the range; v finite. */
static double ref_round(double v, const fmt *f)
{
    if (v == 0)
        return v;
    int ex;
    frexp(fabs(v), &ex); /* |v| = m * 2^ex, m in [0.5, 1) */
    int e = ex - 1;
    if (e < f->emin)
        e = f->emin;
    double ulp = ldexp(1.0, e - (f->p - 1));
    double q = fabs(v) / ulp; /* exact: a power-of-two scaling */
    double fl = (double)(int64_t)q, frac = q - fl;
    if (frac > 0.5 || (frac == 0.5 && ((int64_t)fl & 1)))
        fl += 1;
    double r = fl * ulp;
    if (r > f->maxfin)
        r = INFINITY;
    return v < 0 ? -r : r;
}

static double dec_f16(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return s ? -v : v;
}

static double dec_bf16(uint16_t b)
{
    int s = b >> 15, e = (b >> 7) & 255, m = b & 127;
    double v = e == 255 ? (m ? NAN : INFINITY) : e ? ldexp(128 + m, e - 134) : ldexp(m, -133);
    return s ? -v : v;
}

static double dec_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* got (decoded output) is the right answer for want? NaN: NaN of the same sign. */
static int same(double got, double want)
{
    if (isnan(want))
        return isnan(got) && !signbit(got) == !signbit(want);
    return got == want && !signbit(got) == !signbit(want);
}

/* Converts one value through the public API (so buffers, byte order and
 * the dispatch are covered, not only the scalar helpers). */
static uint32_t conv1(ck_dtype from, ck_dtype to, uint64_t in)
{
    uint8_t src[8], dst[4] = { 0 };
    ck_put_le64(src, in);
    int rc = ck_dtype_convert(from, to, src, dst, 1);
    if (rc)
        return 0xdeadbeef;
    return ck_dtype_get(to)->size == 2 ? ck_le16(dst) : ck_le32(dst);
}

static void report(const char *what, long bad, uint64_t first)
{
    if (!check_report(bad == 0, what, __FILE__, __LINE__))
        printf("#   %ld wrong, first input 0x%llx\n", bad, (unsigned long long)first);
}

static void test_f16_bf16_exhaustive(void)
{
    long bad[4] = { 0 };
    uint64_t first[4] = { 0 };
#define BAD(i, x) do { if (!bad[i]++) first[i] = (x); } while (0)
    for (uint32_t x = 0; x < 65536; x++) {
        double h = dec_f16((uint16_t)x), b = dec_bf16((uint16_t)x);
        /* widening is exact, NaN payloads kept (float16: shifted up) */
        uint32_t hf = conv1(CK_DT_FLOAT16, CK_DT_FLOAT32, x);
        if (!same(dec_f32(hf), h) || (isnan(h) && (hf & 0x7fffff) >> 13 != (x & 0x3ff)))
            BAD(0, x);
        uint32_t bf = conv1(CK_DT_BFLOAT16, CK_DT_FLOAT32, x);
        if (!same(dec_f32(bf), b) || bf != x << 16)
            BAD(1, x);
        /* narrowing across: through float32, rounded once */
        double want = isnan(h) || isinf(h) ? h : ref_round(h, &BF16);
        if (!same(dec_bf16((uint16_t)conv1(CK_DT_FLOAT16, CK_DT_BFLOAT16, x)), want))
            BAD(2, x);
        want = isnan(b) || isinf(b) ? b : ref_round(b, &F16);
        if (!same(dec_f16((uint16_t)conv1(CK_DT_BFLOAT16, CK_DT_FLOAT16, x)), want))
            BAD(3, x);
    }
    report("float16 -> float32 exact, all 65536", bad[0], first[0]);
    report("bfloat16 -> float32 exact, all 65536", bad[1], first[1]);
    report("float16 -> bfloat16 nearest-even, all 65536", bad[2], first[2]);
    report("bfloat16 -> float16 nearest-even, all 65536", bad[3], first[3]);
    /* and back: every float16/bfloat16 survives a trip through float32 */
    long rt = 0;
    for (uint32_t x = 0; x < 65536; x++) {
        uint16_t h = ck_f32_to_f16_bits(ck_f16_to_f32_bits((uint16_t)x));
        uint16_t b = ck_f32_to_bf16_bits(x << 16);
        int hn = ((x >> 10) & 31) == 31 && (x & 1023), bn = ((x >> 7) & 255) == 255 && (x & 127);
        /* a NaN comes back quiet, with sign and payload otherwise kept */
        if (h != (hn ? (x | 0x200) : x) || b != (bn ? (x | 0x40) : x))
            rt++;
    }
    report("float16 and bfloat16 round-trip through float32", rt, 0);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void check_f32(uint32_t u, long *bad, uint64_t *first)
{
    double v = dec_f32(u);
    double wb = isnan(v) || isinf(v) ? v : ref_round(v, &BF16);
    double wh = isnan(v) || isinf(v) ? v : ref_round(v, &F16);
    if (!same(dec_bf16((uint16_t)conv1(CK_DT_FLOAT32, CK_DT_BFLOAT16, u)), wb) && !bad[0]++)
        first[0] = u;
    if (!same(dec_f16((uint16_t)conv1(CK_DT_FLOAT32, CK_DT_FLOAT16, u)), wh) && !bad[1]++)
        first[1] = u;
}

static void test_f32_edges(void)
{
    long bad[2] = { 0 };
    uint64_t first[2] = { 0 };
    /* every exponent, with mantissas at and around both targets' rounding
     * points (bfloat16 keeps 7 bits, float16 10, its subnormals fewer) */
    static const uint32_t mant[] = {
        0, 1, 2, 0x7fffff, 0x7ffffe, 0x400000, 0x3fffff, 0x400001,
        0x8000, 0x7fff, 0x8001, 0x18000, 0x17fff, 0x18001, 0x10000, 0x1ffff,
        0x1000, 0xfff, 0x1001, 0x3000, 0x2fff, 0x3001, 0x2000, 0x7fe000, 0x7ff000, 0x7fefff,
        0x200000, 0x100000, 0x80000, 0x40000, 0x600000, 0x500000, 0x280000, 0x180000,
    };
    long n = 0;
    for (uint32_t e = 0; e < 256; e++)
        for (size_t i = 0; i < sizeof mant / sizeof mant[0]; i++)
            for (uint32_t s = 0; s < 2; s++) {
                check_f32((s << 31) | (e << 23) | mant[i], bad, first);
                n++;
            }
    /* float16's subnormal range and its border, every mantissa bit pattern
     * in steps (exponents 101..113) */
    for (uint32_t e = 101; e <= 113; e++)
        for (uint32_t m = 0; m < 0x800000; m += 0x101)
            check_f32((e << 23) | m, bad, first), n++;
    /* a million random bit patterns */
    for (int i = 0; i < 1000000; i++)
        check_f32(rnd32(), bad, first), n++;
    report("float32 -> bfloat16 nearest-even (edges, subnormals, random)", bad[0], first[0]);
    report("float32 -> float16 nearest-even (edges, subnormals, random)", bad[1], first[1]);
    printf("# %ld float32 inputs\n", n);

    /* the named cases, by bits */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x477fefffu), 0x7bff); /* just under 65520 */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x477ff000u), 0x7c00); /* 65520: tie -> even = inf */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0xc77ff000u), 0xfc00);
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x33000000u), 0x0000); /* 2^-25: tie -> 0 */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x33000001u), 0x0001); /* above the tie */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x33c00000u), 0x0002); /* 1.5 * 2^-24: tie -> 2 */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x387fe000u), 0x0400); /* rounds up into the normals */
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x7f800000u), 0x7c00);
    CHECK_EQ_INT(ck_f32_to_f16_bits(0x7fc00000u), 0x7e00);
    CHECK_EQ_INT(ck_f32_to_f16_bits(0xff800001u), 0xfe00); /* signalling NaN: quiet, sign kept */
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x3f808000u), 0x3f80); /* tie, even below */
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x3f818000u), 0x3f82); /* tie, even above */
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x7f7fffffu), 0x7f80); /* max float32 -> inf */
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x7f7f7fffu), 0x7f7f);
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x00008000u), 0x0000); /* smallest subnormal tie */
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x00018000u), 0x0002);
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0x7f800001u), 0x7fc0);
    CHECK_EQ_INT(ck_f32_to_bf16_bits(0xffc12345u), 0xffc1);
}

static void test_f64_double_rounding(void)
{
    /* torch rounds float64 to float32 first: these differ from one rounding */
    uint64_t u;
    double d = 1 + 0x1p-11 + 0x1p-30;
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_FLOAT16, u), 0x3c00);
    d = 1 + 0x1p-8 + 0x1p-40;
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_BFLOAT16, u), 0x3f80);
    d = 65520.0 - 0x1p-20; /* float32: 65520 -> float16 inf */
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_FLOAT16, u), 0x7c00);
    d = 1e-300;
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_FLOAT32, u), 0);
    d = -1e300;
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_BFLOAT16, u), 0xff80);
    d = 0.1;
    memcpy(&u, &d, sizeof u);
    CHECK_EQ_INT(conv1(CK_DT_FLOAT64, CK_DT_FLOAT32, u), 0x3dcccccd);
}

/* float8 reference: from the format's fields. */
static double dec_f8(uint8_t b, int ebits, int mbits, int bias, int kind)
{
    /* kind 0: e4m3fn (NaN S.1111.111), 1: e5m2 (IEEE), 2: fnuz (NaN 0x80) */
    int s = b >> 7, e = (b >> mbits) & ((1 << ebits) - 1), m = b & ((1 << mbits) - 1);
    if (kind == 2 && b == 0x80)
        return NAN;
    if (kind == 1 && e == (1 << ebits) - 1)
        return m ? (s ? -NAN : NAN) : (s ? -INFINITY : INFINITY);
    if (kind == 0 && e == 15 && m == 7)
        return s ? -NAN : NAN;
    double v = e ? ldexp((1 << mbits) + m, e - bias - mbits) : ldexp(m, 1 - bias - mbits);
    return s ? -v : v;
}

static void test_float8(void)
{
    static const struct {
        ck_dtype dt;
        int ebits, mbits, bias, kind;
        const char *name;
    } f8[] = {
        { CK_DT_FLOAT8_E4M3FN, 4, 3, 7, 0, "float8_e4m3fn" },
        { CK_DT_FLOAT8_E5M2, 5, 2, 15, 1, "float8_e5m2" },
        { CK_DT_FLOAT8_E4M3FNUZ, 4, 3, 8, 2, "float8_e4m3fnuz" },
        { CK_DT_FLOAT8_E5M2FNUZ, 5, 2, 16, 2, "float8_e5m2fnuz" },
    };
    for (size_t k = 0; k < 4; k++) {
        long bad = 0;
        uint64_t first = 0;
        for (uint32_t b = 0; b < 256; b++) {
            double want = dec_f8((uint8_t)b, f8[k].ebits, f8[k].mbits, f8[k].bias, f8[k].kind);
            if (!same(dec_f32(conv1(f8[k].dt, CK_DT_FLOAT32, b)), want) && !bad++)
                first = b;
            double wb = isnan(want) || isinf(want) ? want : ref_round(want, &BF16);
            if (!same(dec_bf16((uint16_t)conv1(f8[k].dt, CK_DT_BFLOAT16, b)), wb) && !bad++)
                first = b;
        }
        char what[96];
        snprintf(what, sizeof what, "%s -> float32/bfloat16, all 256", f8[k].name);
        report(what, bad, first);
    }
    /* landmarks stated by the formats' definitions */
    CHECK(dec_f32(conv1(CK_DT_FLOAT8_E4M3FN, CK_DT_FLOAT32, 0x7e)) == 448.0);
    CHECK(dec_f32(conv1(CK_DT_FLOAT8_E4M3FN, CK_DT_FLOAT32, 0x01)) == 0x1p-9);
    CHECK(dec_f32(conv1(CK_DT_FLOAT8_E5M2, CK_DT_FLOAT32, 0x7b)) == 57344.0);
    CHECK(isinf(dec_f32(conv1(CK_DT_FLOAT8_E5M2, CK_DT_FLOAT32, 0xfc))));
    CHECK(dec_f32(conv1(CK_DT_FLOAT8_E4M3FNUZ, CK_DT_FLOAT32, 0x7f)) == 240.0);
    CHECK(dec_f32(conv1(CK_DT_FLOAT8_E5M2FNUZ, CK_DT_FLOAT32, 0x01)) == 0x1p-17);
    CHECK(isnan(dec_f32(conv1(CK_DT_FLOAT8_E5M2FNUZ, CK_DT_FLOAT32, 0x80))));
    /* e8m0fnu: 2^(b-127), 0xff NaN */
    long bad = 0;
    for (uint32_t b = 0; b < 255; b++)
        bad += dec_f32(conv1(CK_DT_FLOAT8_E8M0FNU, CK_DT_FLOAT32, b)) != ldexp(1.0, (int)b - 127);
    report("float8_e8m0fnu -> float32, 0..254 are 2^(b-127)", bad, 0);
    CHECK(isnan(dec_f32(conv1(CK_DT_FLOAT8_E8M0FNU, CK_DT_FLOAT32, 0xff))));
    CHECK_EQ_INT(conv1(CK_DT_FLOAT8_E8M0FNU, CK_DT_FLOAT16, 0x7f + 16), 0x7c00); /* 65536: inf */
}

static void test_api(void)
{
    CHECK(ck_dtype_is_floating(CK_DT_FLOAT8_E4M3FN));
    CHECK(ck_dtype_is_floating(CK_DT_FLOAT64));
    CHECK(!ck_dtype_is_floating(CK_DT_COMPLEX64));
    CHECK(!ck_dtype_is_floating(CK_DT_INT32));
    CHECK(!ck_dtype_is_floating(CK_DT_FLOAT4_E2M1FN_X2));
    CHECK(!ck_dtype_is_floating(CK_DT_BOOL));
    CHECK(ck_dtype_is_convert_target(CK_DT_BFLOAT16));
    CHECK(!ck_dtype_is_convert_target(CK_DT_FLOAT64));
    CHECK_EQ_INT(ck_dtype_view(CK_DT_FLOAT32, CK_DT_BFLOAT16), CK_DT_BFLOAT16);
    CHECK_EQ_INT(ck_dtype_view(CK_DT_INT64, CK_DT_BFLOAT16), CK_DT_INT64);
    CHECK_EQ_INT(ck_dtype_view(CK_DT_COMPLEX64, CK_DT_FLOAT16), CK_DT_COMPLEX64);
    CHECK_EQ_INT(ck_dtype_view(CK_DT_FLOAT16, CK_DT_INVALID), CK_DT_FLOAT16);
    uint8_t a[16] = { 0 }, b[16];
    CHECK_EQ_INT(ck_dtype_convert(CK_DT_INT32, CK_DT_FLOAT16, a, b, 1), -EINVAL);
    CHECK_EQ_INT(ck_dtype_convert(CK_DT_FLOAT32, CK_DT_FLOAT64, a, b, 1), -EINVAL);
    CHECK_EQ_INT(ck_dtype_convert(CK_DT_INT32, CK_DT_INT32, a, b, 2), 0);
    /* unaligned buffers, several elements, little-endian both ways */
    uint8_t src[1 + 3 * 4], dst[1 + 3 * 2];
    ck_put_le32(src + 1, 0x3f800000u); /* 1.0 */
    ck_put_le32(src + 5, 0xc0000000u); /* -2.0 */
    ck_put_le32(src + 9, 0x3eaaaaabu); /* 1/3 */
    CHECK_EQ_INT(ck_dtype_convert(CK_DT_FLOAT32, CK_DT_FLOAT16, src + 1, dst + 1, 3), 0);
    CHECK_EQ_INT(ck_le16(dst + 1), 0x3c00);
    CHECK_EQ_INT(ck_le16(dst + 3), 0xc000);
    CHECK_EQ_INT(ck_le16(dst + 5), 0x3555);
    double w[3];
    CHECK_EQ_INT(ck_dtype_widen_f64(CK_DT_FLOAT32, src + 1, w, 3), 0);
    CHECK(w[0] == 1.0 && w[1] == -2.0 && w[2] == (double)(1.0f / 3.0f));
    CHECK_EQ_INT(ck_dtype_widen_f64(CK_DT_INT8, src, w, 1), -EINVAL);
}

int main(void)
{
    test_f16_bf16_exhaustive();
    test_f32_edges();
    test_f64_double_rounding();
    test_float8();
    test_api();
    return check_done();
}
