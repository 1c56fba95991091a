/* libFuzzer target: chunk geometry and the load planner.
 *
 * The input is decoded into one tensor key (ndim <= 4) and its chunks.  In
 * "grid" mode the chunks are a real tiling (the cells of per-dimension
 * cuts, in an input-chosen order), optionally damaged afterwards; in "raw"
 * mode offsets and sizes come straight from the input (overlaps, gaps,
 * chunks past the shape, 2^40-element and 2^64-wrapping sizes).
 *
 * ck_key_check_chunks judges the key.  When it passes, plans for ranges
 * derived from the input must cover the range exactly, in order, with no
 * overlap, every source range inside its chunk's image, and (for short
 * ranges) every byte must come from the one chunk that holds its element, at
 * the right place.  When it fails, planning must still return (no crash, no
 * hang): ckptfs never plans such keys, but a slip there must not be fatal. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geometry.h"

#define MAX_NDIM 4
#define MAX_CHUNKS 48
#define ORACLE_MAX_BYTES 4096u  /* ranges checked byte by byte */
#define RANGE_MAX_BYTES 65536u  /* longest range planned */
#define WHOLE_MAX_BYTES (1u << 20) /* tensors this small are also planned whole */

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static uint8_t take8(input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static uint64_t take64(input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)take8(in) << (8 * i);
    return v;
}

/* Mostly small numbers, sometimes powers of two up to 2^63 (2^40-element
 * dimensions), sometimes any 64-bit value. */
static uint64_t take_dim(input *in)
{
    uint8_t b = take8(in);
    switch (b >> 6) {
    case 0:
    case 1:
        return b & 0x0f;
    case 2:
        return (uint64_t)1 << (b & 0x3f);
    default:
        return take64(in);
    }
}

typedef struct {
    ck_key key;
    ck_chunk chunks[MAX_CHUNKS];
    uint64_t offs[MAX_CHUNKS][MAX_NDIM];
    uint64_t sizes[MAX_CHUNKS][MAX_NDIM];
    uint64_t shape[MAX_NDIM];
} fuzz_key;

static void add_chunk(fuzz_key *fk, const uint64_t *off, const uint64_t *sz)
{
    uint32_t i = fk->key.nchunks++;
    memcpy(fk->offs[i], off, sizeof fk->offs[i]);
    memcpy(fk->sizes[i], sz, sizeof fk->sizes[i]);
    fk->chunks[i].offsets = fk->offs[i];
    fk->chunks[i].sizes = fk->sizes[i];
}

/* Per-dimension cuts; every cell of the grid is one chunk. */
static void build_grid(fuzz_key *fk, input *in)
{
    uint32_t nd = fk->key.ndim;
    uint64_t cuts[MAX_NDIM][5];
    uint32_t ncuts[MAX_NDIM];
    uint64_t cells = 1;
    for (uint32_t k = 0; k < nd; k++) {
        uint32_t want = take8(in) % 4; /* inner cut points */
        uint64_t len = fk->shape[k];
        cuts[k][0] = 0;
        ncuts[k] = 1;
        for (uint32_t j = 0; j < want && len > 0; j++) {
            uint64_t r = take64(in), c = len == UINT64_MAX ? r : r % (len + 1);
            if (c > cuts[k][ncuts[k] - 1])
                cuts[k][ncuts[k]++] = c;
        }
        if (cuts[k][ncuts[k] - 1] != len || ncuts[k] == 1)
            cuts[k][ncuts[k]++] = len;
        cells *= ncuts[k] - 1;
    }
    if (cells > MAX_CHUNKS)
        return; /* leave nchunks = 0: a "no chunks" key */
    uint64_t rot = cells ? take8(in) % cells : 0;
    for (uint64_t n = 0; n < cells; n++) {
        uint64_t cell = (n + rot) % cells, rest = cell;
        uint64_t off[MAX_NDIM] = { 0 }, sz[MAX_NDIM] = { 0 };
        for (uint32_t k = nd; k-- > 0;) {
            uint64_t span = ncuts[k] - 1, j = rest % span;
            rest /= span;
            off[k] = cuts[k][j];
            sz[k] = cuts[k][j + 1] - cuts[k][j];
        }
        add_chunk(fk, off, sz);
    }
    /* 0-d tensors: the single chunk has no dims */
}

static void build_raw(fuzz_key *fk, input *in)
{
    uint32_t n = take8(in) % (MAX_CHUNKS + 1);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off[MAX_NDIM] = { 0 }, sz[MAX_NDIM] = { 0 };
        for (uint32_t k = 0; k < fk->key.ndim; k++) {
            off[k] = take_dim(in);
            sz[k] = take_dim(in);
        }
        add_chunk(fk, off, sz);
    }
}

static uint64_t chunk_numel(const ck_key *key, const ck_chunk *c)
{
    uint64_t n;
    return ck_shape_numel(key->ndim, c->sizes, &n) ? UINT64_MAX : n;
}

/* Which chunk holds element e, and its index within the chunk's image. */
static int locate(const ck_key *key, uint64_t e, uint32_t *chunk, uint64_t *local)
{
    uint64_t idx[MAX_NDIM];
    for (uint32_t k = key->ndim; k-- > 0;) {
        idx[k] = e % key->shape[k];
        e /= key->shape[k];
    }
    int found = 0;
    for (uint32_t c = 0; c < key->nchunks; c++) {
        const ck_chunk *ch = &key->chunks[c];
        int in = 1;
        for (uint32_t k = 0; k < key->ndim && in; k++)
            in = idx[k] >= ch->offsets[k] && idx[k] - ch->offsets[k] < ch->sizes[k];
        if (!in)
            continue;
        if (found++)
            return -1; /* two chunks: check_chunks should have refused */
        uint64_t l = 0;
        for (uint32_t k = 0; k < key->ndim; k++)
            l = l * ch->sizes[k] + (idx[k] - ch->offsets[k]);
        *chunk = c;
        *local = l;
    }
    return found == 1 ? 0 : -1;
}

static void fail(const char *what, uint64_t start, uint64_t len)
{
    fprintf(stderr, "plan for [%llu,+%llu): %s\n", (unsigned long long)start,
            (unsigned long long)len, what);
    __builtin_trap();
}

static void check_plan(const ck_key *key, uint64_t es, uint64_t total, uint64_t start,
                       uint64_t len)
{
    ck_read_vec rv = { 0 };
    int rc = ck_load_plan_for_range(key, start, len, &rv);
    if (rc) {
        if (rc == -ENOMEM) {
            ck_read_vec_free(&rv);
            return;
        }
        fail("refused although the chunks tile the tensor", start, len);
    }
    uint64_t end = start >= total ? start : (len > total - start ? total : start + len);
    uint64_t pos = start;
    for (size_t i = 0; i < rv.n; i++) {
        const ck_read *r = &rv.v[i];
        if (r->dst_off != pos || r->len == 0 || r->len > end - pos)
            fail("reads do not cover the range in order without overlap", start, len);
        if (r->chunk >= key->nchunks)
            fail("chunk index out of range", start, len);
        uint64_t cbytes, cn = chunk_numel(key, &key->chunks[r->chunk]);
        if (__builtin_mul_overflow(cn, es, &cbytes) || r->src_off > cbytes ||
            r->len > cbytes - r->src_off)
            fail("source range outside the chunk's image", start, len);
        pos += r->len;
    }
    if (pos != end)
        fail("reads stop short of the range", start, len);

    if (end - start > ORACLE_MAX_BYTES)
        goto out;
    for (size_t i = 0; i < rv.n; i++) {
        const ck_read *r = &rv.v[i];
        for (uint64_t b = 0; b < r->len; b++) {
            uint64_t t = r->dst_off + b, local;
            uint32_t chunk;
            if (locate(key, t / es, &chunk, &local))
                fail("element not held by exactly one chunk", start, len);
            if (chunk != r->chunk || local * es + t % es != r->src_off + b)
                fail("byte taken from the wrong place", start, len);
        }
    }
out:
    ck_read_vec_free(&rv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input in = { data, size };
    fuzz_key *fk = calloc(1, sizeof *fk);
    if (!fk)
        return 0;
    ck_key *key = &fk->key;
    uint8_t mode = take8(&in);
    key->fqn = "fuzz";
    key->kind = CK_KEY_TENSOR;
    key->ndim = take8(&in) % (MAX_NDIM + 1);
    static const ck_dtype dts[] = { CK_DT_UINT8, CK_DT_BFLOAT16, CK_DT_FLOAT32, CK_DT_FLOAT64,
                                    CK_DT_COMPLEX128 };
    key->dtype = dts[take8(&in) % (sizeof dts / sizeof *dts)];
    key->shape = fk->shape;
    key->chunks = fk->chunks;
    for (uint32_t k = 0; k < key->ndim; k++)
        fk->shape[k] = (mode & 2) ? take_dim(&in) : take8(&in) % 13;
    if (mode & 1)
        build_raw(fk, &in);
    else
        build_grid(fk, &in);
    if ((mode & 4) && key->nchunks > 0 && key->ndim > 0) {
        /* damage one chunk of a tiling: a gap, an overlap or an overrun */
        uint32_t c = take8(&in) % key->nchunks, k = take8(&in) % key->ndim;
        fk->offs[c][k] += (int8_t)take8(&in);
        fk->sizes[c][k] += (int8_t)take8(&in);
    }
    uint64_t es = ck_dtype_get(key->dtype)->size, numel = 0, total = 0;
    int shape_ok = ck_shape_numel(key->ndim, key->shape, &numel) == 0 &&
                   !__builtin_mul_overflow(numel, es, &total);
    key->numel = numel;
    key->nbytes = total;

    char err[512] = "";
    int rc = ck_key_check_chunks(key, err, sizeof err);
    if (rc && (!err[0] || strchr(err, '\n')))
        fail("refusal without a one-line reason", 0, 0);

    for (int r = 0; r < 4; r++) {
        uint64_t start = take64(&in), len;
        uint8_t how = take8(&in);
        if (total)
            start = (how & 1) ? total - 1 - start % (total < 64 ? total : 64) : start % total;
        len = (uint64_t)take8(&in) << (how >> 5 & 7) | take8(&in);
        if (len > RANGE_MAX_BYTES)
            len = RANGE_MAX_BYTES;
        if ((how & 2) && total <= WHOLE_MAX_BYTES)
            len = UINT64_MAX; /* past the end: clipped to the tensor */
        if (!rc && shape_ok) {
            check_plan(key, es, total, start, len);
        } else {
            ck_read_vec rv = { 0 };
            (void)ck_load_plan_for_range(key, start, len, &rv);
            ck_read_vec_free(&rv);
        }
    }
    free(fk);
    return 0;
}
