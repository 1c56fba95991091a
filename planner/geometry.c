/* The load planner.  A tensor's image is its elements in row-major order;
 * each chunk's image is its own elements in row-major order.  A read of the
 * tensor image walks it in maximal runs that are contiguous in both images,
 * so a row-sharded tensor costs one read per chunk and a column-sharded one
 * one read per chunk row. */
#include "geometry.h"
#include "chunk_index.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ck_read_vec_free(ck_read_vec *rv)
{
    free(rv->v);
    rv->v = NULL;
    rv->n = rv->cap = 0;
}

static int read_vec_push(ck_read_vec *rv, uint32_t chunk, uint64_t src, uint64_t dst, uint64_t len)
{
    if (rv->n > 0) {
        ck_read *last = &rv->v[rv->n - 1];
        if (last->chunk == chunk && last->src_off + last->len == src &&
            last->dst_off + last->len == dst) {
            last->len += len;
            return 0;
        }
    }
    if (rv->n == rv->cap) {
        size_t cap = rv->cap ? rv->cap * 2 : 16;
        size_t bytes;
        if (__builtin_mul_overflow(cap, sizeof(ck_read), &bytes))
            return -ENOMEM;
        ck_read *v = realloc(rv->v, bytes);
        if (!v)
            return -ENOMEM;
        rv->v = v;
        rv->cap = cap;
    }
    rv->v[rv->n++] = (ck_read){ .chunk = chunk, .src_off = src, .dst_off = dst, .len = len };
    return 0;
}

int ck_shape_numel(uint32_t ndim, const uint64_t *shape, uint64_t *numel)
{
    uint64_t n = 1;
    for (uint32_t k = 0; k < ndim; k++)
        if (__builtin_mul_overflow(n, shape[k], &n))
            return -EOVERFLOW;
    *numel = n;
    return 0;
}

/* Chunk holding element idx: the hinted chunk and its successor first, as
 * sequential reads mostly stay in one chunk or move to the next; then the
 * key's index (built at open for keys with more than a few chunks), else a
 * scan (keys built by hand, as in tests). */
static long find_chunk(const ck_key *key, const uint64_t *idx, uint32_t hint)
{
    for (uint32_t t = 0; t < 2 && key->nchunks > 0; t++) {
        uint32_t c = (hint + t) % key->nchunks;
        if (ck_chunk_contains(&key->chunks[c], key->ndim, idx))
            return c;
    }
    if (key->chunk_index)
        return ck_chunk_index_find(key->chunk_index, key, idx);
    for (uint32_t c = 0; c < key->nchunks; c++)
        if (ck_chunk_contains(&key->chunks[c], key->ndim, idx))
            return c;
    return -1;
}

/* Elements from idx onwards that are contiguous in both images: the rest
 * of the chunk's innermost row, extended across every outer dimension whose
 * inner dimensions the chunk covers completely. */
static uint64_t run_elements(const ck_key *key, const ck_chunk *c, const uint64_t *idx)
{
    uint32_t n = key->ndim;
    if (n == 0)
        return 1;
    uint64_t run = c->offsets[n - 1] + c->sizes[n - 1] - idx[n - 1];
    uint64_t span = key->shape[n - 1];
    for (uint32_t k = n - 1; k > 0; k--) {
        if (c->offsets[k] != 0 || c->sizes[k] != key->shape[k])
            break;
        run += (c->offsets[k - 1] + c->sizes[k - 1] - idx[k - 1] - 1) * span;
        span *= key->shape[k - 1];
    }
    return run;
}

static int chunk_inside_shape(const ck_key *key, const ck_chunk *c)
{
    for (uint32_t k = 0; k < key->ndim; k++)
        if (c->sizes[k] > key->shape[k] || c->offsets[k] > key->shape[k] - c->sizes[k])
            return 0;
    return 1;
}

static uint64_t chunk_local_element(const ck_key *key, const ck_chunk *c, const uint64_t *idx)
{
    uint64_t off = 0;
    for (uint32_t k = 0; k < key->ndim; k++)
        off = off * c->sizes[k] + (idx[k] - c->offsets[k]);
    return off;
}

int ck_load_plan_for_range(const ck_key *key, uint64_t start, uint64_t len, ck_read_vec *out)
{
    const ck_dtype_info *dt = ck_dtype_get(key->dtype);
    if (key->kind != CK_KEY_TENSOR || !dt || key->ndim > CK_MAX_DIMS)
        return -EINVAL;
    uint64_t es = dt->size, numel, total;
    if (ck_shape_numel(key->ndim, key->shape, &numel) ||
        __builtin_mul_overflow(numel, es, &total))
        return -EOVERFLOW;
    if (start >= total || len == 0)
        return 0;
    uint64_t end = (len > total - start) ? total : start + len;

    uint64_t idx[CK_MAX_DIMS];
    uint32_t hint = 0;
    uint64_t pos = start;
    while (pos < end) {
        uint64_t e = pos / es, within = pos % es;
        for (uint32_t k = key->ndim; k-- > 0;) {
            idx[k] = e % key->shape[k];
            e /= key->shape[k];
        }
        long c = find_chunk(key, idx, hint);
        if (c < 0)
            return -EIO;
        hint = (uint32_t)c;
        const ck_chunk *ch = &key->chunks[c];
        /* Keys whose chunks fail ck_key_check_chunks are never planned by
         * ckptfs, but a chunk reaching past the shape would make the run
         * arithmetic below wrap (a zero-length run: no progress), so the
         * planner refuses it itself rather than trusting its caller. */
        if (!chunk_inside_shape(key, ch))
            return -EIO;
        /* numel fits in uint64 with es, so these products cannot overflow */
        uint64_t run_bytes = run_elements(key, ch, idx) * es - within;
        uint64_t src = chunk_local_element(key, ch, idx) * es + within;
        uint64_t n = run_bytes < end - pos ? run_bytes : end - pos;
        int rc = read_vec_push(out, (uint32_t)c, src, pos, n);
        if (rc)
            return rc;
        pos += n;
    }
    return 0;
}

int ck_format_shape(char *buf, size_t cap, uint32_t ndim, const uint64_t *shape)
{
    if (cap == 0)
        return -ERANGE;
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (uint32_t k = 0; k < ndim && used < cap; k++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%" PRIu64, k ? "," : "", shape[k]);
    if (used < cap)
        used += (size_t)snprintf(buf + used, cap - used, "]");
    return used < cap && used <= INT_MAX ? (int)used : -ERANGE;
}

static int chunks_overlap(const ck_chunk *a, const ck_chunk *b, uint32_t ndim)
{
    for (uint32_t k = 0; k < ndim; k++) {
        if (a->sizes[k] == 0 || b->sizes[k] == 0)
            return 0;
        if (a->offsets[k] + a->sizes[k] <= b->offsets[k] ||
            b->offsets[k] + b->sizes[k] <= a->offsets[k])
            return 0;
    }
    return 1;
}

/* Up to this many chunks overlaps are looked for pair by pair; above it a
 * grid-shaped chunking is checked exactly through its chunk index, and other
 * chunkings up to OVERLAP_CHECK_MAX_CHUNKS pair by pair.  Past that the test
 * is skipped: in-bounds chunks whose element counts add up to the tensor's
 * can then only hide an overlap paired with a gap, and the gap makes its
 * reads fail with EIO. */
#define PAIRWISE_CHECK_MAX_CHUNKS 64
#define OVERLAP_CHECK_MAX_CHUNKS 4096

/* 0 when no two chunks overlap (or the test is skipped), else -EINVAL. */
static int check_overlaps(const ck_key *key, char *err, size_t errlen)
{
    if (key->nchunks > PAIRWISE_CHECK_MAX_CHUNKS) {
        ck_chunk_index *ix;
        int rc = ck_chunk_index_build(NULL, key, &ix, err, errlen);
        if (rc)
            return rc == -ENOMEM ? rc : -EINVAL;
        int grid = ck_chunk_index_is_grid(ix);
        ck_chunk_index_free(ix);
        if (grid || key->nchunks > OVERLAP_CHECK_MAX_CHUNKS)
            return 0;
    }
    for (uint32_t i = 0; i < key->nchunks; i++)
        for (uint32_t j = i + 1; j < key->nchunks; j++)
            if (chunks_overlap(&key->chunks[i], &key->chunks[j], key->ndim)) {
                snprintf(err, errlen, "key %s: chunks %u and %u overlap", key->fqn, i, j);
                return -EINVAL;
            }
    return 0;
}

int ck_key_check_chunks(const ck_key *key, char *err, size_t errlen)
{
    char a[256], b[256];
    if (key->kind != CK_KEY_TENSOR)
        return 0;
    uint64_t numel, sum = 0;
    if (ck_shape_numel(key->ndim, key->shape, &numel)) {
        snprintf(err, errlen, "key %s: shape has too many elements", key->fqn);
        return -EOVERFLOW;
    }
    if (key->nchunks == 0 && numel > 0) {
        snprintf(err, errlen, "key %s: no chunks", key->fqn);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < key->nchunks; i++) {
        const ck_chunk *c = &key->chunks[i];
        uint64_t cn;
        for (uint32_t k = 0; k < key->ndim; k++) {
            uint64_t hi;
            if (__builtin_add_overflow(c->offsets[k], c->sizes[k], &hi) || hi > key->shape[k]) {
                ck_format_shape(a, sizeof a, key->ndim, c->offsets);
                ck_format_shape(b, sizeof b, key->ndim, key->shape);
                snprintf(err, errlen, "key %s: chunk %u at %s exceeds shape %s", key->fqn, i, a, b);
                return -EINVAL;
            }
        }
        if (ck_shape_numel(key->ndim, c->sizes, &cn) || __builtin_add_overflow(sum, cn, &sum)) {
            snprintf(err, errlen, "key %s: chunk sizes overflow", key->fqn);
            return -EOVERFLOW;
        }
    }
    int rc = check_overlaps(key, err, errlen);
    if (rc)
        return rc;
    if (sum != numel) {
        snprintf(err, errlen, "key %s: chunks hold %" PRIu64 " of %" PRIu64 " elements",
                 key->fqn, sum, numel);
        return -EINVAL;
    }
    return 0;
}
