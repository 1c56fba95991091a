/* Floating-point conversions with torch's rounding (see dtype_convert.h).
 * Narrowing is done on the bits, not with the FPU, so the result does not
 * depend on the rounding mode, on x87 excess precision or on the compiler. */
#include "dtype_convert.h"

#include <errno.h>
#include <math.h> /* NAN, INFINITY: no libm function is called */
#include <string.h>
#include "le.h"

bool ck_dtype_is_floating(ck_dtype dt)
{
    switch (dt) {
    case CK_DT_FLOAT64: case CK_DT_FLOAT32: case CK_DT_FLOAT16: case CK_DT_BFLOAT16:
    case CK_DT_FLOAT8_E4M3FN: case CK_DT_FLOAT8_E5M2: case CK_DT_FLOAT8_E4M3FNUZ:
    case CK_DT_FLOAT8_E5M2FNUZ: case CK_DT_FLOAT8_E8M0FNU:
        return true;
    default:
        return false;
    }
}

bool ck_dtype_is_convert_target(ck_dtype dt)
{
    return dt == CK_DT_BFLOAT16 || dt == CK_DT_FLOAT16 || dt == CK_DT_FLOAT32;
}

ck_dtype ck_dtype_view(ck_dtype stored, ck_dtype view_dtype)
{
    if (ck_dtype_is_convert_target(view_dtype) && ck_dtype_is_floating(stored))
        return view_dtype;
    return stored;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* static inline so the conversion loops inline (and vectorise) them */
static inline uint16_t f32_to_bf16(uint32_t x)
{
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u); /* NaN: sign, top payload, quiet */
    /* Adding 0x7FFF plus the kept lsb rounds half to even; a carry out of
     * the mantissa bumps the exponent, up to inf, as it should. */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline uint16_t f32_to_f16(uint32_t x)
{
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520: halfway past 65504 rounds to even, inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* >= 2^-14: a normal float16 */
        uint32_t h = (a - 0x38000000u) >> 13; /* exponent rebiased 127 -> 15 */
        uint32_t rem = a & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    /* Subnormal float16: the value in units of 2^-24.  A float32 below
     * 2^-25 (exponent field < 102, float32 subnormals included) is nearer
     * to 0 than to 2^-24. */
    uint32_t e = a >> 23;
    if (e < 102)
        return sign;
    uint32_t m = (a & 0x7fffffu) | 0x800000u; /* value = m * 2^(e-150) */
    uint32_t shift = 126 - e;                 /* 14..24 */
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u)))
        h++; /* may reach 0x400, the smallest normal: still right */
    return (uint16_t)(sign | h);
}

uint16_t ck_f32_to_bf16_bits(uint32_t x)
{
    return f32_to_bf16(x);
}

uint16_t ck_f32_to_f16_bits(uint32_t x)
{
    return f32_to_f16(x);
}

static inline uint32_t f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f)
        return sign | 0x7f800000u | (m << 13);
    if (e)
        return sign | ((e + 112) << 23) | (m << 13);
    if (!m)
        return sign;
    /* subnormal: m * 2^-24, normalised */
    int shift = __builtin_clz(m) - 21; /* bring the leading 1 to bit 10 */
    m <<= shift;
    return sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
}

uint32_t ck_f16_to_f32_bits(uint16_t h)
{
    return f16_to_f32(h);
}

/* float8: 1 sign bit (none for e8m0), ebits of exponent, mbits of
 * mantissa.  fnuz: NaN is 0x80 alone, no inf, no -0, bias one higher. */
typedef struct {
    int ebits, mbits, bias;
    bool has_inf; /* e5m2: IEEE-like inf and NaNs */
    bool fnuz;
    bool e4m3fn; /* NaN only at S.1111.111 */
} f8_format;

/* 2^e for -1022 <= e <= 1023, built from its bits (no libm: ldexp). */
static double pow2(int e)
{
    uint64_t u = (uint64_t)(e + 1023) << 52;
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static const f8_format F8_E4M3FN = { 4, 3, 7, false, false, true };
static const f8_format F8_E5M2 = { 5, 2, 15, true, false, false };
static const f8_format F8_E4M3FNUZ = { 4, 3, 8, false, true, false };
static const f8_format F8_E5M2FNUZ = { 5, 2, 16, false, true, false };

static float f8_to_f32(const f8_format *f, uint8_t b)
{
    bool neg = b & 0x80u;
    unsigned e = (b >> f->mbits) & ((1u << f->ebits) - 1), m = b & ((1u << f->mbits) - 1);
    unsigned emax = (1u << f->ebits) - 1;
    if (f->fnuz && b == 0x80u)
        return NAN;
    if (f->has_inf && e == emax)
        return m ? (neg ? -NAN : NAN) : (neg ? -INFINITY : INFINITY);
    if (f->e4m3fn && e == emax && m == (1u << f->mbits) - 1)
        return neg ? -NAN : NAN;
    /* exact: at most 4 significant bits, exponent well inside float32 */
    float v = e ? (float)((double)(m | (1u << f->mbits)) * pow2((int)e - f->bias - f->mbits))
                : (float)((double)m * pow2(1 - f->bias - f->mbits));
    return neg ? -v : v;
}

static float e8m0_to_f32(uint8_t b)
{
    return b == 0xffu ? NAN : (float)pow2((int)b - 127); /* 2^-127: a float32 subnormal, exact */
}

/* Element i of src as float32 bits, exactly (float64: rounded once). */
static uint32_t load_f32_bits(ck_dtype from, const uint8_t *src, size_t i)
{
    switch (from) {
    case CK_DT_FLOAT64: {
        uint64_t u = ck_le64(src + 8 * i);
        double d;
        memcpy(&d, &u, sizeof d);
        return f32_bits((float)d); /* IEEE round to nearest even; NaN payload kept */
    }
    case CK_DT_FLOAT32: return ck_le32(src + 4 * i);
    case CK_DT_FLOAT16: return f16_to_f32(ck_le16(src + 2 * i));
    case CK_DT_BFLOAT16: return (uint32_t)ck_le16(src + 2 * i) << 16;
    case CK_DT_FLOAT8_E4M3FN: return f32_bits(f8_to_f32(&F8_E4M3FN, src[i]));
    case CK_DT_FLOAT8_E5M2: return f32_bits(f8_to_f32(&F8_E5M2, src[i]));
    case CK_DT_FLOAT8_E4M3FNUZ: return f32_bits(f8_to_f32(&F8_E4M3FNUZ, src[i]));
    case CK_DT_FLOAT8_E5M2FNUZ: return f32_bits(f8_to_f32(&F8_E5M2FNUZ, src[i]));
    case CK_DT_FLOAT8_E8M0FNU: return f32_bits(e8m0_to_f32(src[i]));
    default: return 0; /* callers check ck_dtype_is_floating first */
    }
}

int ck_dtype_convert(ck_dtype from, ck_dtype to, const void *src, void *dst, size_t n)
{
    const ck_dtype_info *fi = ck_dtype_get(from);
    if (!fi)
        return -EINVAL;
    if (from == to) {
        if (n > SIZE_MAX / fi->size)
            return -EOVERFLOW;
        memcpy(dst, src, n * fi->size);
        return 0;
    }
    if (!ck_dtype_is_floating(from) || !ck_dtype_is_convert_target(to))
        return -EINVAL;
    const uint8_t *s = src;
    uint8_t *d = dst;
    /* float32 sources, the common case, get loops of their own: with the
     * source dispatch out of the loop the compiler keeps them tight */
    if (from == CK_DT_FLOAT32 && to == CK_DT_BFLOAT16) {
        for (size_t i = 0; i < n; i++)
            ck_put_le16(d + 2 * i, f32_to_bf16(ck_le32(s + 4 * i)));
        return 0;
    }
    if (from == CK_DT_FLOAT32 && to == CK_DT_FLOAT16) {
        for (size_t i = 0; i < n; i++)
            ck_put_le16(d + 2 * i, f32_to_f16(ck_le32(s + 4 * i)));
        return 0;
    }
    switch (to) {
    case CK_DT_FLOAT32:
        for (size_t i = 0; i < n; i++)
            ck_put_le32(d + 4 * i, load_f32_bits(from, s, i));
        break;
    case CK_DT_BFLOAT16:
        for (size_t i = 0; i < n; i++)
            ck_put_le16(d + 2 * i, f32_to_bf16(load_f32_bits(from, s, i)));
        break;
    case CK_DT_FLOAT16:
        for (size_t i = 0; i < n; i++)
            ck_put_le16(d + 2 * i, f32_to_f16(load_f32_bits(from, s, i)));
        break;
    default:
        return -EINVAL;
    }
    return 0;
}

int ck_dtype_widen_f64(ck_dtype from, const void *src, double *dst, size_t n)
{
    if (!ck_dtype_is_floating(from))
        return -EINVAL;
    const uint8_t *s = src;
    if (from == CK_DT_FLOAT64) {
        for (size_t i = 0; i < n; i++) {
            uint64_t u = ck_le64(s + 8 * i);
            memcpy(&dst[i], &u, sizeof u);
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = (double)f32_from_bits(load_f32_bits(from, s, i));
    return 0;
}
