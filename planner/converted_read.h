/* Reading a tensor's bytes as another dtype (the `-o dtype=` views): bytes
 * [off, off+len) of the converted image map to the source elements that
 * hold them, which are read in bounded blocks through the load planner and
 * converted (dtype_convert.h).  Nothing is converted ahead of time and the
 * memory used does not depend on the tensor's size. */
#ifndef CKPT_CONVERTED_READ_H
#define CKPT_CONVERTED_READ_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

/* Size of a tensor's image as `as` (numel * element size); -EOVERFLOW. */
int ck_key_nbytes_as(const ck_key *key, ck_dtype as, uint64_t *out);

/* Like ck_key_read (chunk_reader.h) for a tensor key, but the image is that
 * of the tensor converted to `as`.  as == key->dtype (or CK_DT_INVALID) is a
 * plain read; other pairs must be ck_dtype_convert's (else -EINVAL). */
int ck_key_read_as(ck_checkpoint *ck, const ck_key *key, ck_dtype as, uint64_t off, void *dst,
                   size_t len, size_t *got);

#endif
