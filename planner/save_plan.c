/* The save planner (see save_plan.h).  The load planner already knows how a
 * byte range of a tensor splits into chunk pieces, so the chunks a change
 * touches are the chunks of the load plan of the changed ranges; gathering a
 * chunk's image walks the other way, chunk order to tensor order. */
#include "save_plan.h"

#include <errno.h>
#include <string.h>

#include "geometry.h"

int ck_save_plan_chunks(const ck_key *key, const ck_byte_range *ranges, size_t n,
                        uint8_t *rewrite)
{
    if (key->kind != CK_KEY_TENSOR)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        uint64_t lo = ranges[i].lo, hi = ranges[i].hi;
        if (hi > key->nbytes)
            hi = key->nbytes;
        if (lo >= hi)
            continue;
        ck_read_vec plan = { 0 };
        int rc = ck_load_plan_for_range(key, lo, hi - lo, &plan);
        for (size_t j = 0; !rc && j < plan.n; j++)
            rewrite[plan.v[j].chunk] = 1;
        ck_read_vec_free(&plan);
        if (rc)
            return rc;
    }
    return 0;
}

int ck_chunk_image_len(const ck_key *key, const ck_chunk *c, uint64_t *len)
{
    const ck_dtype_info *dt = ck_dtype_get(key->dtype);
    uint64_t numel;
    if (!dt)
        return -EINVAL;
    if (ck_shape_numel(key->ndim, c->sizes, &numel) ||
        __builtin_mul_overflow(numel, (uint64_t)dt->size, len))
        return -EOVERFLOW;
    return 0;
}

int ck_chunk_image_read(const ck_key *key, const ck_chunk *c, uint64_t off, void *dst, size_t len,
                        ck_tensor_read_fn read, void *read_ctx)
{
    uint64_t total, end;
    int rc = ck_chunk_image_len(key, c, &total);
    if (rc)
        return rc;
    if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > total)
        return -EINVAL;
    if (len == 0)
        return 0;
    uint32_t n = key->ndim;
    uint64_t es = ck_dtype_get(key->dtype)->size;
    if (n == 0)
        return read(read_ctx, off, dst, len);
    /* Dimensions after k0 are whole in the chunk, so each index of the
     * outer dimensions [0, k0) is one run of s[k0] * inner elements.
     * Every product below is bounded by the tensor's numel (checked when
     * the key was built), hence cannot overflow. */
    uint32_t k0 = n - 1;
    while (k0 > 0 && c->offsets[k0] == 0 && c->sizes[k0] == key->shape[k0])
        k0--;
    uint64_t tstride[CK_MAX_DIMS];
    tstride[n - 1] = 1;
    for (uint32_t k = n - 1; k > 0; k--)
        tstride[k - 1] = tstride[k] * key->shape[k];
    uint64_t run = c->sizes[k0] * tstride[k0];
    uint8_t *out = dst;
    uint64_t pos = off;
    while (pos < end) {
        uint64_t e = pos / es, within_byte = pos % es;
        uint64_t outer = e / run, within = e % run;
        /* chunk-local index of the outer dimensions -> tensor element */
        uint64_t t = c->offsets[k0] * tstride[k0] + within;
        for (uint32_t k = k0; k-- > 0;) {
            uint64_t idx = outer % c->sizes[k];
            outer /= c->sizes[k];
            t += (c->offsets[k] + idx) * tstride[k];
        }
        uint64_t avail = (run - within) * es - within_byte;
        uint64_t take = avail < end - pos ? avail : end - pos;
        rc = read(read_ctx, t * es + within_byte, out, (size_t)take);
        if (rc)
            return rc;
        out += take;
        pos += take;
    }
    return 0;
}

uint32_t ck_default_transforms(const ck_checkpoint *ck)
{
    int seen = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (k->kind != CK_KEY_TENSOR)
            continue;
        for (uint32_t j = 0; j < k->nchunks; j++) {
            if (!(k->chunks[j].transforms & CK_TF_ZSTD))
                return 0;
            seen = 1;
        }
    }
    return seen ? CK_TF_ZSTD : 0;
}
