/* Converting floating-point elements between dtypes the way torch's
 * Tensor.to(dtype) does on CPU, for the `-o dtype=` views.
 *
 * Every conversion goes through float32, as torch's does (c10::convert
 * builds a BFloat16 or Half from a float): float64 is first rounded to
 * float32, so float64 -> float16/bfloat16 rounds twice, exactly like torch
 * (1 + 2^-11 + 2^-30 in float64 becomes 1.0 in float16, not 1 + 2^-10).
 * float16, bfloat16 and the float8 formats widen to float32 exactly.
 * Narrowing rounds to nearest, ties to even; values past the target's range
 * become +-inf (float16: |x| >= 65520; bfloat16: past 0x7F7F plus half an
 * ulp); subnormal results are exact-rounded too.
 *
 * NaN stays NaN with its sign and the top bits of its payload, with the
 * quiet bit set (what IEEE hardware conversions do).  torch's own NaN bits
 * depend on the code path (0xFFFF from its AVX2 float->bfloat16 kernel,
 * 0x7FC0 from the scalar one, 0x7E00 for float16), so only NaN-ness is part
 * of the contract.
 *
 * Elements are little-endian in both buffers, which may be unaligned. */
#ifndef CKPT_DTYPE_CONVERT_H
#define CKPT_DTYPE_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "dtype.h"

/* The floating-point dtypes ck_dtype_convert reads: float64, float32,
 * float16, bfloat16 and the five float8 formats (e4m3fn, e5m2, e4m3fnuz,
 * e5m2fnuz, e8m0fnu).  Not complex (torch's is_floating_point is false for
 * it), not float4_e2m1fn_x2 (two values packed in a byte: torch has no
 * .to() for it either). */
bool ck_dtype_is_floating(ck_dtype dt);

/* The dtypes `-o dtype=` may name: bfloat16, float16, float32. */
bool ck_dtype_is_convert_target(ck_dtype dt);

/* What a view shows for a tensor stored as `stored` when the mount asks for
 * `view_dtype` (CK_DT_INVALID: no -o dtype=): view_dtype for floating
 * tensors, else stored (integers, bool, complex are never converted). */
ck_dtype ck_dtype_view(ck_dtype stored, ck_dtype view_dtype);

/* Converts n elements of `from` at src into `to` at dst (the buffers must
 * not overlap).  from must be ck_dtype_is_floating and to a convert target,
 * or from == to (a copy).  0, or -EINVAL for any other pair. */
int ck_dtype_convert(ck_dtype from, ck_dtype to, const void *src, void *dst, size_t n);

/* Widens n floating elements (ck_dtype_is_floating) to double, exactly
 * (every such value is a double).  0 or -EINVAL. */
int ck_dtype_widen_f64(ck_dtype from, const void *src, double *dst, size_t n);

/* One value, for tests and callers that convert a scalar. */
uint16_t ck_f32_to_bf16_bits(uint32_t f32_bits);
uint16_t ck_f32_to_f16_bits(uint32_t f32_bits);
uint32_t ck_f16_to_f32_bits(uint16_t f16_bits);

#endif
