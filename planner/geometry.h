/* Chunk geometry and the load planner: which chunk bytes make up a byte
 * range of a tensor's row-major image. */
#ifndef CKPT_GEOMETRY_H
#define CKPT_GEOMETRY_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

typedef struct {
    uint32_t chunk;   /* index into key->chunks */
    uint64_t src_off; /* byte offset in the chunk's row-major image */
    uint64_t dst_off; /* byte offset in the tensor's row-major image */
    uint64_t len;     /* bytes */
} ck_read;

typedef struct {
    ck_read *v;
    size_t n, cap;
} ck_read_vec;

void ck_read_vec_free(ck_read_vec *rv);

/* Appends to out the reads that cover bytes [start, start+len) of key's
 * image (clipped to its size).  Contiguous runs are merged: a row-sharded
 * tensor yields one read per chunk touched.  Returns 0, -EIO if some byte
 * is covered by no chunk, -ENOMEM, -EOVERFLOW. */
int ck_load_plan_for_range(const ck_key *key, uint64_t start, uint64_t len, ck_read_vec *out);

/* Whether chunk c holds element idx (ndim coordinates). */
static inline int ck_chunk_contains(const ck_chunk *c, uint32_t ndim, const uint64_t *idx)
{
    for (uint32_t k = 0; k < ndim; k++)
        if (idx[k] < c->offsets[k] || idx[k] - c->offsets[k] >= c->sizes[k])
            return 0;
    return 1;
}

/* numel of a shape with overflow check: 0 or -EOVERFLOW. */
int ck_shape_numel(uint32_t ndim, const uint64_t *shape, uint64_t *numel);

/* Room for any shape ck_format_shape writes: 20 digits and a separator per
 * dimension, the brackets and the NUL. */
#define CK_SHAPE_STR_MAX (CK_MAX_DIMS * 21 + 3)

/* The shape as "[3,4]" ("[]" for a scalar): the value of the
 * user.ckpt.shape xattr, and how messages show shapes.  Returns its length,
 * or -ERANGE if it does not fit in cap (buf then holds a terminated
 * prefix, enough for a message). */
int ck_format_shape(char *buf, size_t cap, uint32_t ndim, const uint64_t *shape);

#endif
