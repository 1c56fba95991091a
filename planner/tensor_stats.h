/* Summary statistics of a tensor (the PATH.stats view), in one streaming
 * pass with bounded memory.
 *
 * What is computed, per element kind:
 * - floating (dtype_convert.h's ck_dtype_is_floating): every element is
 *   widened to double exactly.  NaN, +inf, -inf and zeros (+0 and -0) are
 *   counted.  min and max are over the non-NaN elements (numpy's nanmin,
 *   nanmax: infinities included); mean, std and l2 over the non-NaN ones
 *   too, so one +inf makes mean +inf, std NaN and l2 +inf, +inf and -inf
 *   together make mean NaN (numpy's nanmean/nanstd on the same values).
 * - integers and bool (bool as 0/1): min, max and the sum are exact (64-bit
 *   extremes, a 128-bit sum); mean is that sum divided by numel, rounded
 *   once; std and l2 are computed in double.
 * - complex: the statistics of |z| (numpy's abs, that is hypot(re, im)):
 *   min, max, mean, std of the magnitudes, l2 = sqrt(sum |z|^2) (numpy's
 *   linalg.norm); nan counts elements with a NaN part, pos_inf those with an
 *   infinite part (|z| = +inf), zeros those equal to 0+0j.
 * - float4_e2m1fn_x2 and the quantized dtypes have no statistics (their
 *   bytes are not the values).
 *
 * std is the population standard deviation (numpy's default, ddof=0),
 * sqrt(sum (x - mean)^2 / n).  Mean and variance are merged per block of
 * 4096 elements with Chan et al.'s pairwise update (each block's own sum of
 * squared deviations taken around its own mean), which keeps them accurate
 * over billions of elements without a division per element; l2 is
 * accumulated scaled by the largest magnitude seen, so it never overflows
 * where the norm itself is finite.  (float64 values beyond 1e154 may still
 * make std overflow.) */
#ifndef CKPT_TENSOR_STATS_H
#define CKPT_TENSOR_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

#define CK_STATS_BLOCK 4096

typedef enum { CK_STATS_FLOAT, CK_STATS_SIGNED, CK_STATS_UNSIGNED, CK_STATS_COMPLEX } ck_stats_kind;

typedef struct {
    ck_dtype dtype;
    ck_stats_kind kind;
    uint64_t numel, nan, pos_inf, neg_inf, zeros;
    /* exact extremes and sum of integer kinds */
    int64_t imin, imax;
    uint64_t umin, umax;
    __int128 isum;
    /* non-NaN, finite values (floats), all values (integers), |z| (complex) */
    uint64_t n;
    double fmin, fmax;
    double mean, m2;      /* Chan: running mean, sum of squared deviations */
    double l2_scale, l2_ssq; /* l2 = l2_scale * sqrt(l2_ssq) */
    /* values not yet merged: blocks are always whole, so the result does
     * not depend on how the tensor was cut into ck_stats_add calls */
    double pend[CK_STATS_BLOCK];
    size_t npend;
} ck_stats_acc;

typedef struct {
    ck_dtype dtype;
    ck_stats_kind kind;
    uint64_t numel, nan, pos_inf, neg_inf, zeros;
    bool has_values; /* false when every element is NaN (or there are none) */
    /* integers (CK_STATS_SIGNED / UNSIGNED): exact min and max */
    int64_t imin, imax;
    uint64_t umin, umax;
    /* every kind (for integers min/max are the exact ones, as double) */
    double min, max, mean, std, l2;
} ck_tensor_stats;

bool ck_stats_supported(ck_dtype dt);
/* 0, or -EINVAL when dt has no statistics. */
int ck_stats_init(ck_stats_acc *a, ck_dtype dt);
/* Adds n elements (little-endian, any alignment). */
void ck_stats_add(ck_stats_acc *a, const void *elems, size_t n);
/* Merges what is pending and fills out; a may take more elements after. */
void ck_stats_finish(ck_stats_acc *a, ck_tensor_stats *out);

/* Reads the whole tensor in blocks through the load planner and returns
 * its statistics; 0 or -errno (-EINVAL: no statistics for its dtype). */
int ck_key_stats(ck_checkpoint *ck, const ck_key *key, ck_tensor_stats *out);

#endif
