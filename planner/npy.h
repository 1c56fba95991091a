/* NumPy .npy headers (v1.0 written; v1.0/2.0/3.0 read). */
#ifndef CKPT_NPY_H
#define CKPT_NPY_H

#include <stddef.h>
#include <stdint.h>
#include "dtype.h"
#include "torch_item.h" /* CK_MAX_DIMS */

#define CK_NPY_MAX_HEADER 65536

/* Builds the v1.0 header for dtype/shape into buf (cap bytes), padded with
 * spaces and '\n' so data starts at a multiple of 64.  Returns the header
 * length (> 0) or -ENOSPC / -EINVAL.  Dtypes NumPy lacks use the same-width
 * unsigned descr. */
long ck_npy_header(ck_dtype dt, uint32_t ndim, const uint64_t *shape, char *buf, size_t cap);

typedef struct {
    ck_dtype dtype;
    int fortran_order;
    uint32_t ndim;
    uint64_t shape[CK_MAX_DIMS];
    uint64_t header_len; /* data starts here */
} ck_npy_info;

/* Parses a header from buf[0..len).  -EAGAIN if len is too short to hold the
 * whole header yet (need more bytes), -EINVAL if malformed or the descr is
 * not a little-endian/byte type we know, -ENOTSUP for fortran_order True. */
int ck_npy_parse(const uint8_t *buf, size_t len, ck_npy_info *out, char *err, size_t errlen);

#endif
