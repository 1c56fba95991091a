/* PATH.npy: a NumPy v1.0 header followed by the tensor's bytes, read on
 * demand through the load planner; nothing is copied when it is built. */
#ifndef CKPTFS_VIEW_NPY_H
#define CKPTFS_VIEW_NPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "view_key.h"

typedef struct {
    fs_key_ref ref;
    ck_dtype as; /* the dtype shown (-o dtype=), ref.dtype when not converted */
    char *header;
    size_t header_len;
    uint64_t size; /* header_len + the tensor's nbytes */
} fs_npy_view;

/* k must be a tensor key with a known dtype; view_dtype: the mount's
 * -o dtype= (CK_DT_INVALID: none), applied to floating tensors. */
int fs_npy_view_build(const ck_key *k, ck_dtype view_dtype, fs_npy_view *out);
void fs_npy_view_clear(fs_npy_view *v);
int fs_npy_view_read(ck_checkpoint *ck, const fs_npy_view *v, uint64_t off,
                     void *dst, size_t len, size_t *got);

#endif
