/* PATH.stats: one JSON object of a tensor's statistics (tensor_stats.h),
 * computed by one streaming pass over the tensor when first looked up and
 * kept by views.c for the mounted state.  Fields:
 *   dtype, shape, numel, min, max, mean, std, std_ddof (0: population std),
 *   l2_norm, nan, pos_inf, neg_inf, zeros, and "of": "abs" for complex.
 * Integers (and bool, as 0/1) have exact integer min and max.  A value that
 * is not finite is written as the string "nan", "inf" or "-inf" (JSON has
 * no such numbers); min, max, mean and std are null when the tensor has no
 * non-NaN element.  Statistics are of the stored values: -o dtype= does
 * not change them. */
#ifndef CKPTFS_VIEW_STATS_H
#define CKPTFS_VIEW_STATS_H

#include <stddef.h>
#include "ckpt.h"

/* Reads the whole tensor; *text is malloc'ed, ends with a newline.
 * 0 or -errno (-EINVAL: a dtype with no statistics). */
int fs_stats_json(ck_checkpoint *ck, const ck_key *k, char **text, size_t *len);

#endif
