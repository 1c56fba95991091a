/* The .npy view of one tensor (see view_npy.h). */
#include "view_npy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "chunk_reader.h"
#include "converted_read.h"
#include "dtype_convert.h"
#include "npy.h"
#include "view_head.h"

/* Headers for up to CK_MAX_DIMS dims of 20 digits fit in far less. */
#define NPY_HEADER_GUESS 4096

int fs_npy_view_build(const ck_key *k, ck_dtype view_dtype, fs_npy_view *out)
{
    memset(out, 0, sizeof *out);
    if (k->kind != CK_KEY_TENSOR || !ck_dtype_get(k->dtype))
        return -EINVAL;
    out->as = ck_dtype_view(k->dtype, view_dtype);
    uint64_t nbytes;
    int rc = ck_key_nbytes_as(k, out->as, &nbytes);
    if (rc)
        return rc;
    char small[NPY_HEADER_GUESS];
    char *buf = small;
    long n = ck_npy_header(out->as, k->ndim, k->shape, buf, sizeof small);
    if (n == -ENOSPC) {
        buf = malloc(CK_NPY_MAX_HEADER);
        if (!buf)
            return -ENOMEM;
        n = ck_npy_header(out->as, k->ndim, k->shape, buf, CK_NPY_MAX_HEADER);
    }
    rc = n < 0 ? (int)n : 0;
    if (!rc && __builtin_add_overflow((uint64_t)n, nbytes, &out->size))
        rc = -EOVERFLOW;
    if (!rc && !(out->header = malloc((size_t)n)))
        rc = -ENOMEM;
    if (!rc) {
        memcpy(out->header, buf, (size_t)n);
        out->header_len = (size_t)n;
        rc = fs_key_ref_init(&out->ref, k);
    }
    if (buf != small)
        free(buf);
    if (rc)
        fs_npy_view_clear(out);
    return rc;
}

void fs_npy_view_clear(fs_npy_view *v)
{
    fs_key_ref_clear(&v->ref);
    free(v->header);
    memset(v, 0, sizeof *v);
}

int fs_npy_view_read(ck_checkpoint *ck, const fs_npy_view *v, uint64_t off,
                     void *dst, size_t len, size_t *got)
{
    *got = 0;
    size_t done = fs_view_read_head(v->header, v->header_len, v->size, off, dst, &len);
    if (len == 0)
        return 0;
    uint8_t *out = dst;
    if (done < len) {
        const ck_key *k;
        int rc = fs_key_ref_get(&v->ref, &k);
        if (rc)
            return rc;
        size_t n;
        rc = ck_key_read_as(ck, k, v->as, off + done - v->header_len, out + done, len - done, &n);
        if (rc)
            return rc;
        if (n != len - done)
            return -EIO; /* the key is shorter than its dtype and shape say */
        done += n;
    }
    *got = done;
    return 0;
}
