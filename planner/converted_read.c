/* Converted reads of a tensor (see converted_read.h). */
#include "converted_read.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "chunk_reader.h"
#include "dtype_convert.h"

/* Source bytes read per step: big enough that per-read planning is noise,
 * small enough to stay in cache while it is converted. */
#define CONVERT_BLOCK_ELEMS 32768

int ck_key_nbytes_as(const ck_key *key, ck_dtype as, uint64_t *out)
{
    const ck_dtype_info *d = ck_dtype_get(as == CK_DT_INVALID ? key->dtype : as);
    if (!d)
        return -EINVAL;
    if (__builtin_mul_overflow(key->numel, (uint64_t)d->size, out))
        return -EOVERFLOW;
    return 0;
}

int ck_key_read_as(ck_checkpoint *ck, const ck_key *key, ck_dtype as, uint64_t off, void *dst,
                   size_t len, size_t *got)
{
    *got = 0;
    if (as == CK_DT_INVALID || as == key->dtype)
        return ck_key_read(ck, key, off, dst, len, got);
    if (key->kind != CK_KEY_TENSOR || !ck_dtype_is_floating(key->dtype) ||
        !ck_dtype_is_convert_target(as))
        return -EINVAL;
    if (key->error)
        return key->error;
    size_t isz = ck_dtype_get(key->dtype)->size, osz = ck_dtype_get(as)->size;
    uint64_t size;
    int rc = ck_key_nbytes_as(key, as, &size);
    if (rc)
        return rc;
    if (off >= size || len == 0)
        return 0;
    if (len > size - off)
        len = (size_t)(size - off);
    uint8_t *src = malloc(CONVERT_BLOCK_ELEMS * isz);
    uint8_t *cvt = malloc(CONVERT_BLOCK_ELEMS * osz);
    if (!src || !cvt) {
        free(src);
        free(cvt);
        return -ENOMEM;
    }
    /* Output bytes [off, off+len) lie in elements [first, last); the ends
     * may be cut mid-element. */
    uint64_t first = off / osz, last = (off + len + osz - 1) / osz;
    uint8_t *out = dst;
    size_t done = 0;
    for (uint64_t e = first; !rc && e < last;) {
        size_t n = last - e < CONVERT_BLOCK_ELEMS ? (size_t)(last - e) : CONVERT_BLOCK_ELEMS;
        size_t rd;
        rc = ck_key_read(ck, key, e * isz, src, n * isz, &rd);
        if (!rc && rd != n * isz)
            rc = -EIO; /* the key is shorter than its dtype and shape say */
        if (!rc)
            rc = ck_dtype_convert(key->dtype, as, src, cvt, n);
        if (rc)
            break;
        /* the part of these n converted elements that the request covers */
        uint64_t blk_begin = e * osz, blk_end = (e + n) * osz;
        uint64_t from = off + done > blk_begin ? off + done : blk_begin;
        uint64_t to = off + len < blk_end ? off + len : blk_end;
        memcpy(out + done, cvt + (from - blk_begin), (size_t)(to - from));
        done += (size_t)(to - from);
        e += n;
    }
    free(src);
    free(cvt);
    if (!rc)
        *got = done;
    return rc;
}
