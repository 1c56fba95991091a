/* Chunk index tests: for grids (in order and shuffled), staggered "brick"
 * chunkings (the sorted fallback), 0-d and empty tensors, every lookup must
 * agree with a brute-force scan of the chunks; overlaps and gaps in grid
 * chunkings must be refused with the chunks named; the load planner must
 * give the same plan with and without the index. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "check.h"
#include "chunk_index.h"
#include "geometry.h"

#define MAXD 4

typedef struct {
    ck_key key;
    ck_chunk *chunks;
    uint64_t *coords; /* offsets then sizes, MAXD each, per chunk */
    uint64_t shape[MAXD];
    uint32_t cap;
} chunking;

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void chunking_init(chunking *t, uint32_t ndim, const uint64_t *shape, uint32_t cap)
{
    memset(t, 0, sizeof *t);
    t->cap = cap;
    t->chunks = calloc(cap ? cap : 1, sizeof *t->chunks);
    t->coords = calloc((size_t)(cap ? cap : 1) * 2 * MAXD, sizeof *t->coords);
    if (ndim)
        memcpy(t->shape, shape, ndim * sizeof *shape);
    t->key.fqn = "t";
    t->key.kind = CK_KEY_TENSOR;
    t->key.dtype = CK_DT_FLOAT32;
    t->key.ndim = ndim;
    t->key.shape = t->shape;
    t->key.chunks = t->chunks;
}

static void chunking_add(chunking *t, const uint64_t *off, const uint64_t *size)
{
    uint32_t i = t->key.nchunks++;
    uint64_t *o = t->coords + (size_t)i * 2 * MAXD, *s = o + MAXD;
    if (t->key.ndim) {
        memcpy(o, off, t->key.ndim * sizeof *off);
        memcpy(s, size, t->key.ndim * sizeof *size);
    }
    t->chunks[i].offsets = o;
    t->chunks[i].sizes = s;
}

static void chunking_free(chunking *t)
{
    free(t->chunks);
    free(t->coords);
}

static void shuffle(chunking *t)
{
    for (uint32_t i = t->key.nchunks; i > 1; i--) {
        uint32_t j = (uint32_t)(next_rand() % i);
        ck_chunk c = t->chunks[i - 1];
        t->chunks[i - 1] = t->chunks[j];
        t->chunks[j] = c;
    }
}

/* A grid: dimension k cut at cuts[k][0..ncuts[k]). */
static void make_grid(chunking *t, uint32_t ndim, const uint64_t *shape, uint64_t cuts[][64],
                      const uint32_t *ncuts)
{
    uint32_t total = 1;
    for (uint32_t k = 0; k < ndim; k++)
        total *= ncuts[k] + 1;
    chunking_init(t, ndim, shape, total);
    uint32_t at[MAXD] = { 0 };
    for (uint32_t n = 0; n < total; n++) {
        uint64_t off[MAXD], size[MAXD];
        for (uint32_t k = 0; k < ndim; k++) {
            uint64_t lo = at[k] ? cuts[k][at[k] - 1] : 0;
            uint64_t hi = at[k] < ncuts[k] ? cuts[k][at[k]] : shape[k];
            off[k] = lo;
            size[k] = hi - lo;
        }
        chunking_add(t, off, size);
        for (uint32_t k = ndim; k-- > 0;) {
            if (++at[k] <= ncuts[k])
                break;
            at[k] = 0;
        }
    }
}

static long brute_find(const ck_key *key, const uint64_t *idx)
{
    for (uint32_t c = 0; c < key->nchunks; c++) {
        const ck_chunk *ch = &key->chunks[c];
        int in = 1;
        for (uint32_t k = 0; k < key->ndim; k++)
            if (idx[k] < ch->offsets[k] || idx[k] >= ch->offsets[k] + ch->sizes[k])
                in = 0;
        if (in)
            return c;
    }
    return -1;
}

/* Every element (or 2000 random ones for big tensors), and a few past the
 * shape, must be found where the scan finds them. */
static int lookups_agree(const chunking *t, const ck_chunk_index *ix)
{
    uint64_t numel = 1;
    for (uint32_t k = 0; k < t->key.ndim; k++)
        numel *= t->shape[k];
    uint64_t probes = numel < 5000 ? numel : 2000;
    for (uint64_t p = 0; p < probes; p++) {
        uint64_t e = numel < 5000 ? p : next_rand() % numel, idx[MAXD];
        for (uint32_t k = t->key.ndim; k-- > 0;) {
            idx[k] = e % t->shape[k];
            e /= t->shape[k];
        }
        if (ck_chunk_index_find(ix, &t->key, idx) != brute_find(&t->key, idx))
            return 0;
    }
    for (uint32_t k = 0; k < t->key.ndim; k++) {
        uint64_t idx[MAXD] = { 0 };
        idx[k] = t->shape[k];
        if (ck_chunk_index_find(ix, &t->key, idx) != -1)
            return 0;
    }
    return 1;
}

static void test_grids(void)
{
    uint64_t cuts[MAXD][64];
    for (int round = 0; round < 40; round++) {
        uint32_t ndim = 1 + (uint32_t)(next_rand() % MAXD), ncuts[MAXD];
        uint64_t shape[MAXD];
        for (uint32_t k = 0; k < ndim; k++) {
            shape[k] = 1 + next_rand() % (ndim == 1 ? 5000 : 40);
            /* distinct ascending cuts strictly inside (0, shape) */
            uint32_t want = (uint32_t)(next_rand() % 8), n = 0;
            for (uint64_t v = 1; v < shape[k] && n < want; v++)
                if (next_rand() % (shape[k] / (want + 1) + 1) == 0)
                    cuts[k][n++] = v;
            ncuts[k] = n;
        }
        chunking t;
        make_grid(&t, ndim, shape, cuts, ncuts);
        if (round % 2)
            shuffle(&t);
        char err[256] = "";
        ck_chunk_index *ix;
        int rc = ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        if (!rc) {
            CHECK(ck_chunk_index_is_grid(ix));
            CHECK(lookups_agree(&t, ix));
            ck_chunk_index_free(ix);
        }
        chunking_free(&t);
    }
}

/* 10,000 row chunks listed in reverse and shuffled: the case that made the
 * planner scan. */
static void test_many_rows(void)
{
    uint64_t shape[2] = { 10000, 3 };
    chunking t;
    chunking_init(&t, 2, shape, 10000);
    for (uint64_t r = 10000; r-- > 0;) {
        uint64_t off[2] = { r, 0 }, size[2] = { 1, 3 };
        chunking_add(&t, off, size);
    }
    shuffle(&t);
    ck_arena *a = ck_arena_new();
    ck_chunk_index *ix;
    char err[256] = "";
    CHECK_EQ_INT(ck_chunk_index_build(a, &t.key, &ix, err, sizeof err), 0);
    CHECK(ck_chunk_index_is_grid(ix));
    CHECK(lookups_agree(&t, ix));
    /* the plan with the index equals the plan without it */
    ck_read_vec with = { 0 }, without = { 0 };
    CHECK_EQ_INT(ck_load_plan_for_range(&t.key, 7, 100000, &without), 0);
    t.key.chunk_index = ix;
    CHECK_EQ_INT(ck_load_plan_for_range(&t.key, 7, 100000, &with), 0);
    CHECK_EQ_INT(with.n, without.n);
    CHECK(with.n == without.n && memcmp(with.v, without.v, with.n * sizeof *with.v) == 0);
    ck_read_vec_free(&with);
    ck_read_vec_free(&without);
    ck_arena_free(a);
    chunking_free(&t);
}

/* Bricks: every row cut at its own random column boundaries, so the grid of
 * all boundaries has many more cells than there are chunks: the sorted
 * fallback serves these. */
static void test_bricks(void)
{
    int sorted = 0;
    for (int round = 0; round < 10; round++) {
        uint64_t rows = 8 + next_rand() % 20, cols = 64;
        uint64_t shape[2] = { rows, cols };
        chunking t;
        chunking_init(&t, 2, shape, (uint32_t)(rows * cols));
        for (uint64_t r = 0; r < rows; r++) {
            uint64_t c = 0;
            while (c < cols) {
                uint64_t w = 1 + next_rand() % 15;
                if (w > cols - c)
                    w = cols - c;
                uint64_t off[2] = { r, c }, size[2] = { 1, w };
                chunking_add(&t, off, size);
                c += w;
            }
        }
        shuffle(&t);
        ck_chunk_index *ix;
        char err[256] = "";
        CHECK_EQ_INT(ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err), 0);
        CHECK(lookups_agree(&t, ix));
        sorted += !ck_chunk_index_is_grid(ix);
        ck_chunk_index_free(ix);
        chunking_free(&t);
    }
    CHECK(sorted > 0); /* the fallback was exercised */
}

static void test_faults(void)
{
    uint64_t cuts[MAXD][64] = { { 3, 6 }, { 2 } };
    uint32_t ncuts[MAXD] = { 2, 1 };
    uint64_t shape[2] = { 10, 4 };
    char err[256];
    ck_chunk_index *ix;

    chunking t;
    make_grid(&t, 2, shape, cuts, ncuts);
    t.coords[2 * MAXD * 2 + MAXD] += 1; /* chunk 2 (rows 3-5) grows into chunk 4 (6-9) */
    err[0] = 0;
    CHECK_EQ_INT(ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "overlap") != NULL);
    /* and ck_key_check_chunks says the same for keys past its pairwise limit */
    chunking_free(&t);

    make_grid(&t, 2, shape, cuts, ncuts);
    t.key.nchunks--; /* the last chunk is missing: a gap */
    err[0] = 0;
    CHECK_EQ_INT(ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "lies in no chunk") != NULL);
    chunking_free(&t);

    /* 200 row chunks, one duplicated over its neighbour: ck_key_check_chunks
     * finds the overlap through the index (above its pairwise limit). */
    uint64_t big[2] = { 200, 2 };
    chunking_init(&t, 2, big, 200);
    for (uint64_t r = 0; r < 200; r++) {
        uint64_t off[2] = { r == 150 ? 149 : r, 0 }, size[2] = { 1, 2 };
        chunking_add(&t, off, size);
    }
    err[0] = 0;
    CHECK(ck_key_check_chunks(&t.key, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "overlap") != NULL || strstr(err, "no chunk") != NULL);
    chunking_free(&t);
}

static void test_degenerate(void)
{
    char err[256];
    ck_chunk_index *ix;
    chunking t;
    /* 0-d: one chunk with no coordinates */
    chunking_init(&t, 0, NULL, 1);
    chunking_add(&t, NULL, NULL);
    CHECK_EQ_INT(ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err), 0);
    CHECK_EQ_INT(ck_chunk_index_find(ix, &t.key, NULL), 0);
    ck_chunk_index_free(ix);
    chunking_free(&t);
    /* an empty tensor: chunks of size 0, nothing to find */
    uint64_t shape[2] = { 0, 5 };
    chunking_init(&t, 2, shape, 2);
    uint64_t off[2] = { 0, 0 }, size[2] = { 0, 5 };
    chunking_add(&t, off, size);
    chunking_add(&t, off, size);
    CHECK_EQ_INT(ck_chunk_index_build(NULL, &t.key, &ix, err, sizeof err), 0);
    uint64_t idx[2] = { 0, 0 };
    CHECK_EQ_INT(ck_chunk_index_find(ix, &t.key, idx), -1);
    ck_chunk_index_free(ix);
    chunking_free(&t);
}

int main(void)
{
    test_grids();
    test_many_rows();
    test_bricks();
    test_faults();
    test_degenerate();
    return check_done();
}
