/* Load planner tests: for many chunkings, every byte range reassembled from
 * chunk images through the plan must equal the same range of the tensor
 * image, built here independently by walking every element. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "geometry.h"

#define MAXC 256

typedef struct {
    ck_key key;
    ck_chunk chunks[MAXC];
    uint64_t offs[MAXC][8], sizes[MAXC][8], shape[8];
    uint8_t *image;          /* tensor image, element e holds pattern(e) */
    uint8_t *chunk_img[MAXC];
} fixture;

static uint8_t pattern(uint64_t byte) { return (uint8_t)(byte * 131 + (byte >> 8) * 7 + 1); }

/* Chunking given per dimension as lists of cut points: a full grid. */
static void make_grid(fixture *f, uint32_t ndim, const uint64_t *shape, const uint64_t *const *cuts,
                      const uint32_t *ncuts, ck_dtype dt)
{
    memset(f, 0, sizeof *f);
    f->key.fqn = "t";
    f->key.kind = CK_KEY_TENSOR;
    f->key.dtype = dt;
    f->key.ndim = ndim;
    memcpy(f->shape, shape, ndim * sizeof *shape);
    f->key.shape = f->shape;
    uint32_t counter[8] = { 0 };
    uint32_t n = 0;
    for (;;) {
        for (uint32_t k = 0; k < ndim; k++) {
            uint64_t lo = counter[k] ? cuts[k][counter[k] - 1] : 0;
            uint64_t hi = counter[k] < ncuts[k] ? cuts[k][counter[k]] : shape[k];
            f->offs[n][k] = lo;
            f->sizes[n][k] = hi - lo;
        }
        f->chunks[n].offsets = f->offs[n];
        f->chunks[n].sizes = f->sizes[n];
        n++;
        uint32_t k = ndim;
        while (k > 0) {
            k--;
            if (++counter[k] <= ncuts[k])
                break;
            counter[k] = 0;
            if (k == 0)
                goto done;
        }
        if (ndim == 0)
            break;
    }
done:
    f->key.nchunks = n;
    f->key.chunks = f->chunks;
}

static uint64_t esize(const fixture *f) { return ck_dtype_get(f->key.dtype)->size; }

/* Builds the tensor image and each chunk's image by brute force. */
static void fill_images(fixture *f)
{
    uint64_t numel = 1, es = esize(f);
    for (uint32_t k = 0; k < f->key.ndim; k++)
        numel *= f->shape[k];
    f->image = malloc(numel * es + 1);
    for (uint64_t b = 0; b < numel * es; b++)
        f->image[b] = pattern(b);
    for (uint32_t c = 0; c < f->key.nchunks; c++) {
        uint64_t cn = 1;
        for (uint32_t k = 0; k < f->key.ndim; k++)
            cn *= f->sizes[c][k];
        f->chunk_img[c] = malloc(cn * es + 1);
        for (uint64_t le = 0; le < cn; le++) {
            uint64_t rem = le, ge = 0, idx[8];
            for (uint32_t k = f->key.ndim; k-- > 0;) {
                idx[k] = rem % f->sizes[c][k] + f->offs[c][k];
                rem /= f->sizes[c][k];
            }
            for (uint32_t k = 0; k < f->key.ndim; k++)
                ge = ge * f->shape[k] + idx[k];
            memcpy(f->chunk_img[c] + le * es, f->image + ge * es, es);
        }
    }
}

static void free_images(fixture *f)
{
    free(f->image);
    for (uint32_t c = 0; c < f->key.nchunks; c++)
        free(f->chunk_img[c]);
}

/* Applies the plan for [start, start+len) and compares with the image. */
static int range_ok(fixture *f, uint64_t start, uint64_t len, size_t *nreads)
{
    ck_read_vec rv = { 0 };
    uint64_t total = f->key.nbytes;
    if (ck_load_plan_for_range(&f->key, start, len, &rv) != 0)
        return 0;
    uint64_t end = start + len > total ? total : start + len;
    uint64_t n = start < end ? end - start : 0;
    uint8_t *out = calloc(n + 1, 1);
    uint64_t covered = 0;
    int ok = 1;
    for (size_t i = 0; i < rv.n; i++) {
        const ck_read *r = &rv.v[i];
        if (r->dst_off < start || r->dst_off + r->len > end) {
            ok = 0;
            break;
        }
        memcpy(out + (r->dst_off - start), f->chunk_img[r->chunk] + r->src_off, r->len);
        covered += r->len;
    }
    ok = ok && covered == n && memcmp(out, f->image + start, n) == 0;
    if (nreads)
        *nreads = rv.n;
    free(out);
    ck_read_vec_free(&rv);
    return ok;
}

static int all_ranges_ok(fixture *f, unsigned seed)
{
    uint64_t total = f->key.nbytes;
    if (!range_ok(f, 0, total, NULL) || !range_ok(f, 0, total + 100, NULL))
        return 0;
    srand(seed);
    for (int i = 0; i < 300; i++) {
        uint64_t s = total ? (uint64_t)rand() % (total + 1) : 0;
        uint64_t l = (uint64_t)rand() % (total + 3);
        if (!range_ok(f, s, l, NULL))
            return 0;
    }
    for (uint64_t s = 0; s < total && s < 64; s++) /* every small misaligned start */
        if (!range_ok(f, s, 1 + s % 7, NULL))
            return 0;
    return 1;
}

static void finish_key(fixture *f)
{
    uint64_t n;
    ck_shape_numel(f->key.ndim, f->shape, &n);
    f->key.numel = n;
    f->key.nbytes = n * esize(f);
}

#define GRID(name, nd, dt, SHAPE, ...)                                                   \
    do {                                                                                  \
        static fixture fx;                                                                \
        uint64_t shape_[] = SHAPE;                                                        \
        __VA_ARGS__;                                                                      \
        make_grid(&fx, nd, shape_, cuts_, ncuts_, dt);                                    \
        finish_key(&fx);                                                                  \
        fill_images(&fx);                                                                 \
        char err[256];                                                                    \
        check_report(ck_key_check_chunks(&fx.key, err, sizeof err) == 0, name " tiles", \
                     __FILE__, __LINE__);                                                 \
        check_report(all_ranges_ok(&fx, 42), name " ranges", __FILE__, __LINE__);         \
        free_images(&fx);                                                                 \
    } while (0)

#define A(...) { __VA_ARGS__ }

static void test_grids(void)
{
    GRID("1-D row split", 1, CK_DT_FLOAT32, A(10),
         static const uint64_t c0[] = { 3, 6, 9 }; const uint64_t *cuts_[] = { c0 };
         uint32_t ncuts_[] = { 3 });
    GRID("2-D rows uneven", 2, CK_DT_FLOAT32, A(10, 7),
         static const uint64_t c0[] = { 3, 6, 9 }; const uint64_t *cuts_[] = { c0, NULL };
         uint32_t ncuts_[] = { 3, 0 });
    GRID("2-D columns bf16", 2, CK_DT_BFLOAT16, A(6, 10),
         static const uint64_t c1[] = { 3, 6, 9 }; const uint64_t *cuts_[] = { NULL, c1 };
         uint32_t ncuts_[] = { 0, 3 });
    GRID("2-D grid", 2, CK_DT_FLOAT32, A(8, 12),
         static const uint64_t c0[] = { 4 }; static const uint64_t c1[] = { 6 };
         const uint64_t *cuts_[] = { c0, c1 }; uint32_t ncuts_[] = { 1, 1 });
    GRID("3-D grid", 3, CK_DT_FLOAT16, A(5, 6, 7),
         static const uint64_t c0[] = { 2 }; static const uint64_t c1[] = { 1, 4 };
         static const uint64_t c2[] = { 3 };
         const uint64_t *cuts_[] = { c0, c1, c2 }; uint32_t ncuts_[] = { 1, 2, 1 });
    GRID("4-D grid", 4, CK_DT_INT64, A(3, 4, 2, 5),
         static const uint64_t c0[] = { 1 }; static const uint64_t c1[] = { 2 };
         static const uint64_t c3[] = { 2, 4 };
         const uint64_t *cuts_[] = { c0, c1, NULL, c3 }; uint32_t ncuts_[] = { 1, 1, 0, 2 });
    GRID("4-D inner dims whole", 4, CK_DT_UINT8, A(4, 3, 2, 2),
         static const uint64_t c0[] = { 1, 3 };
         const uint64_t *cuts_[] = { c0, NULL, NULL, NULL }; uint32_t ncuts_[] = { 2, 0, 0, 0 });
    GRID("chunk size 1 everywhere", 2, CK_DT_FLOAT64, A(3, 4),
         static const uint64_t c0[] = { 1, 2 }; static const uint64_t c1[] = { 1, 2, 3 };
         const uint64_t *cuts_[] = { c0, c1 }; uint32_t ncuts_[] = { 2, 3 });
    GRID("single chunk", 2, CK_DT_COMPLEX64, A(4, 5),
         const uint64_t *cuts_[] = { NULL, NULL }; uint32_t ncuts_[] = { 0, 0 });
    GRID("0-d", 0, CK_DT_FLOAT32, A(0),
         const uint64_t *cuts_[] = { NULL }; uint32_t ncuts_[] = { 0 });
    GRID("bool odd", 1, CK_DT_BOOL, A(13),
         static const uint64_t c0[] = { 5 }; const uint64_t *cuts_[] = { c0 };
         uint32_t ncuts_[] = { 1 });
}

static void test_merging(void)
{
    static fixture f;
    uint64_t shape[] = { 10, 7 };
    static const uint64_t rows[] = { 3, 6, 9 };
    const uint64_t *cuts[] = { rows, NULL };
    uint32_t ncuts[] = { 3, 0 };
    make_grid(&f, 2, shape, cuts, ncuts, CK_DT_FLOAT32);
    finish_key(&f);
    fill_images(&f);
    size_t n = 0;
    CHECK(range_ok(&f, 0, f.key.nbytes, &n));
    CHECK_EQ_INT(n, 4); /* row-sharded: one read per chunk */
    free_images(&f);

    static fixture g;
    uint64_t gshape[] = { 6, 10 };
    static const uint64_t cols[] = { 5 };
    const uint64_t *gcuts[] = { NULL, cols };
    uint32_t gn[] = { 0, 1 };
    make_grid(&g, 2, gshape, gcuts, gn, CK_DT_FLOAT32);
    finish_key(&g);
    fill_images(&g);
    CHECK(range_ok(&g, 0, g.key.nbytes, &n));
    CHECK_EQ_INT(n, 12); /* column-sharded: one read per chunk row */
    free_images(&g);
}

static void test_empty_and_bad(void)
{
    static fixture f;
    uint64_t shape[] = { 0, 4 };
    const uint64_t *cuts[] = { NULL, NULL };
    uint32_t nc[] = { 0, 0 };
    make_grid(&f, 2, shape, cuts, nc, CK_DT_FLOAT32);
    finish_key(&f);
    ck_read_vec rv = { 0 };
    CHECK_EQ_INT(ck_load_plan_for_range(&f.key, 0, 100, &rv), 0);
    CHECK_EQ_INT(rv.n, 0);
    ck_read_vec_free(&rv);

    /* a gap: chunks hold rows 0-2 and 5-9 of 10 */
    static fixture g;
    uint64_t gs[] = { 10 };
    static const uint64_t c0[] = { 3, 5 };
    const uint64_t *gc[] = { c0 };
    uint32_t gn[] = { 2 };
    make_grid(&g, 1, gs, gc, gn, CK_DT_FLOAT32);
    finish_key(&g);
    g.chunks[1] = g.chunks[2];
    g.key.nchunks = 2;
    char err[256];
    CHECK(ck_key_check_chunks(&g.key, err, sizeof err) != 0);
    CHECK(strstr(err, "elements") != NULL);
    CHECK_EQ_INT(ck_load_plan_for_range(&g.key, 0, g.key.nbytes, &rv), -EIO);
    ck_read_vec_free(&rv);

    /* overlap with equal element count */
    g.offs[0][0] = 0; g.sizes[0][0] = 6;
    g.offs[2][0] = 4; g.sizes[2][0] = 4;
    g.chunks[1].offsets = g.offs[2];
    g.chunks[1].sizes = g.sizes[2];
    CHECK(ck_key_check_chunks(&g.key, err, sizeof err) != 0);
    /* exceeding the shape */
    g.offs[2][0] = 8;
    CHECK(ck_key_check_chunks(&g.key, err, sizeof err) != 0);
    CHECK(strstr(err, "exceeds") != NULL);

    /* 2^40 elements: planning a small range must not allocate the tensor */
    static fixture h;
    uint64_t hs[] = { 1ull << 20, 1ull << 20 };
    static const uint64_t hc[] = { 1ull << 19 };
    const uint64_t *hcuts[] = { NULL, hc };
    uint32_t hn[] = { 0, 1 };
    make_grid(&h, 2, hs, hcuts, hn, CK_DT_FLOAT32);
    finish_key(&h);
    CHECK_EQ_INT(ck_load_plan_for_range(&h.key, h.key.nbytes - 4096, 8192, &rv), 0);
    CHECK_EQ_INT(rv.n, 1);
    CHECK_EQ_INT(rv.v[0].len, 4096);
    ck_read_vec_free(&rv);
    uint64_t huge[] = { 1ull << 40, 1ull << 40 };
    uint64_t numel;
    CHECK_EQ_INT(ck_shape_numel(2, huge, &numel), -EOVERFLOW);
}

int main(void)
{
    test_grids();
    test_merging();
    test_empty_and_bad();
    return check_done();
}
