/* The per-tensor chunk index (see chunk_index.h for the two layouts). */
#include "chunk_index.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "geometry.h"

#define NO_CHUNK UINT32_MAX
/* A grid may have this many cells per chunk (plus a little) before the
 * sorted fallback is used: staggered chunkings multiply cells, and the
 * table must stay a small fraction of what the chunk entries cost. */
#define CELLS_PER_CHUNK 4u
#define CELLS_SLACK 64u
#define MAX_HEAP_BLOCKS (CK_MAX_DIMS + 4)

struct ck_chunk_index {
    int grid;
    uint32_t ndim;
    /* grid: cuts[k] holds ncells[k] + 1 ascending boundaries, 0 .. shape[k] */
    uint64_t *cuts[CK_MAX_DIMS];
    uint32_t ncells[CK_MAX_DIMS];
    uint32_t *cell_chunk; /* row-major over the cells */
    /* sorted: the non-empty chunks by their start in dimension dim */
    uint32_t dim, n;
    uint32_t *order;
    uint64_t *start, *max_end; /* max_end[i]: largest end among order[0..i] */
    /* heap-built indexes free these */
    void *heap[MAX_HEAP_BLOCKS];
    uint32_t nheap;
    ck_arena *arena;
};

static void *ix_calloc(ck_chunk_index *ix, size_t n, size_t size)
{
    if (ix->arena)
        return ck_arena_calloc(ix->arena, n, size);
    if (ix->nheap == MAX_HEAP_BLOCKS)
        return NULL;
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p)
        ix->heap[ix->nheap++] = p;
    return p;
}

void ck_chunk_index_free(ck_chunk_index *ix)
{
    if (!ix || ix->arena)
        return;
    for (uint32_t i = 0; i < ix->nheap; i++)
        free(ix->heap[i]);
    free(ix);
}

int ck_chunk_index_is_grid(const ck_chunk_index *ix)
{
    return ix && ix->grid;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int chunk_is_empty(const ck_key *key, const ck_chunk *c)
{
    for (uint32_t k = 0; k < key->ndim; k++)
        if (c->sizes[k] == 0)
            return 1;
    return 0;
}

/* Largest j < n with v[j] <= x (v ascending, v[0] <= x). */
static uint32_t bisect_le(const uint64_t *v, uint32_t n, uint64_t x)
{
    uint32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid] <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Sorted distinct boundaries of dimension k: 0, shape[k] and every chunk's
 * start and end.  Writes them to tmp (room for 2 * nchunks + 2) and returns
 * their count. */
static uint32_t dim_cuts(const ck_key *key, uint32_t k, uint64_t *tmp)
{
    uint32_t n = 0;
    tmp[n++] = 0;
    tmp[n++] = key->shape[k];
    for (uint32_t i = 0; i < key->nchunks; i++) {
        const ck_chunk *c = &key->chunks[i];
        if (chunk_is_empty(key, c))
            continue;
        tmp[n++] = c->offsets[k];
        tmp[n++] = c->offsets[k] + c->sizes[k]; /* inside the shape: no overflow */
    }
    qsort(tmp, n, sizeof *tmp, cmp_u64);
    uint32_t u = 1;
    for (uint32_t i = 1; i < n; i++)
        if (tmp[i] != tmp[u - 1])
            tmp[u++] = tmp[i];
    return u;
}

static void format_cell(char *buf, size_t cap, const ck_chunk_index *ix, const uint32_t *cell)
{
    uint64_t at[CK_MAX_DIMS];
    for (uint32_t k = 0; k < ix->ndim; k++)
        at[k] = ix->cuts[k][cell[k]];
    ck_format_shape(buf, cap, ix->ndim, at);
}

/* Marks every cell of chunk i; -EINVAL on a cell another chunk holds. */
static int fill_chunk_cells(ck_chunk_index *ix, const ck_key *key, uint32_t i, char *err,
                            size_t errlen)
{
    const ck_chunk *c = &key->chunks[i];
    uint32_t lo[CK_MAX_DIMS], hi[CK_MAX_DIMS], cell[CK_MAX_DIMS];
    for (uint32_t k = 0; k < ix->ndim; k++) {
        uint32_t nb = ix->ncells[k] + 1;
        lo[k] = bisect_le(ix->cuts[k], nb, c->offsets[k]);
        hi[k] = bisect_le(ix->cuts[k], nb, c->offsets[k] + c->sizes[k]);
        cell[k] = lo[k];
    }
    for (;;) {
        uint64_t lin = 0;
        for (uint32_t k = 0; k < ix->ndim; k++)
            lin = lin * ix->ncells[k] + cell[k];
        if (ix->cell_chunk[lin] != NO_CHUNK) {
            char at[CK_SHAPE_STR_MAX];
            format_cell(at, sizeof at, ix, cell);
            snprintf(err, errlen, "key %s: chunks %u and %u overlap at %s", key->fqn,
                     ix->cell_chunk[lin], i, at);
            return -EINVAL;
        }
        ix->cell_chunk[lin] = i;
        uint32_t k = ix->ndim;
        while (k > 0) {
            k--;
            if (++cell[k] < hi[k])
                break;
            cell[k] = lo[k];
            if (k == 0)
                return 0;
        }
        if (ix->ndim == 0)
            return 0;
    }
}

/* 1 if built, 0 if the grid would be too large, < 0 on error. */
static int build_grid(ck_chunk_index *ix, const ck_key *key, uint64_t *tmp, char *err,
                      size_t errlen)
{
    uint64_t cells = 1;
    uint64_t limit = (uint64_t)key->nchunks * CELLS_PER_CHUNK + CELLS_SLACK;
    uint32_t nb[CK_MAX_DIMS];
    for (uint32_t k = 0; k < key->ndim; k++) {
        nb[k] = dim_cuts(key, k, tmp);
        if (__builtin_mul_overflow(cells, (uint64_t)(nb[k] - 1), &cells) || cells > limit)
            return 0;
    }
    for (uint32_t k = 0; k < key->ndim; k++) {
        nb[k] = dim_cuts(key, k, tmp);
        ix->ncells[k] = nb[k] - 1;
        if (!(ix->cuts[k] = ix_calloc(ix, nb[k], sizeof(uint64_t))))
            return -ENOMEM;
        memcpy(ix->cuts[k], tmp, nb[k] * sizeof(uint64_t));
    }
    if (!(ix->cell_chunk = ix_calloc(ix, (size_t)cells, sizeof(uint32_t))))
        return -ENOMEM;
    memset(ix->cell_chunk, 0xff, (size_t)cells * sizeof(uint32_t));
    for (uint32_t i = 0; i < key->nchunks; i++) {
        if (chunk_is_empty(key, &key->chunks[i]))
            continue;
        int rc = fill_chunk_cells(ix, key, i, err, errlen);
        if (rc)
            return rc;
    }
    for (uint64_t lin = 0; lin < cells; lin++) {
        if (ix->cell_chunk[lin] != NO_CHUNK)
            continue;
        uint32_t cell[CK_MAX_DIMS];
        uint64_t rest = lin;
        for (uint32_t k = ix->ndim; k-- > 0;) {
            cell[k] = (uint32_t)(rest % ix->ncells[k]);
            rest /= ix->ncells[k];
        }
        char at[CK_SHAPE_STR_MAX];
        format_cell(at, sizeof at, ix, cell);
        snprintf(err, errlen, "key %s: the element at %s lies in no chunk", key->fqn, at);
        return -EINVAL;
    }
    ix->grid = 1;
    return 1;
}

/* Chunk ids of one sort, by start then id (qsort_r is not in C11: the
 * dimension travels in the pair). */
typedef struct {
    uint64_t start;
    uint32_t id;
} start_id;

static int cmp_start_id(const void *a, const void *b)
{
    const start_id *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int build_sorted(ck_chunk_index *ix, const ck_key *key, uint64_t *tmp)
{
    /* the dimension whose starts tell chunks apart best */
    uint32_t best = 0, best_n = 0;
    for (uint32_t k = 0; k < key->ndim; k++) {
        uint32_t n = dim_cuts(key, k, tmp);
        if (n > best_n) {
            best_n = n;
            best = k;
        }
    }
    ix->dim = best;
    start_id *s = malloc((size_t)(key->nchunks ? key->nchunks : 1) * sizeof *s);
    if (!s)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t i = 0; i < key->nchunks; i++)
        if (!chunk_is_empty(key, &key->chunks[i]))
            s[n++] = (start_id){ .start = key->chunks[i].offsets[best], .id = i };
    qsort(s, n, sizeof *s, cmp_start_id);
    ix->n = n;
    ix->order = ix_calloc(ix, n, sizeof(uint32_t));
    ix->start = ix_calloc(ix, n, sizeof(uint64_t));
    ix->max_end = ix_calloc(ix, n, sizeof(uint64_t));
    if (!ix->order || !ix->start || !ix->max_end) {
        free(s);
        return -ENOMEM;
    }
    uint64_t max_end = 0;
    for (uint32_t i = 0; i < n; i++) {
        const ck_chunk *c = &key->chunks[s[i].id];
        uint64_t end = c->offsets[best] + c->sizes[best];
        max_end = end > max_end ? end : max_end;
        ix->order[i] = s[i].id;
        ix->start[i] = s[i].start;
        ix->max_end[i] = max_end;
    }
    free(s);
    return 0;
}

int ck_chunk_index_build(ck_arena *arena, const ck_key *key, ck_chunk_index **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    if (key->ndim > CK_MAX_DIMS)
        return -EINVAL;
    ck_chunk_index *ix = arena ? ck_arena_alloc(arena, sizeof *ix) : calloc(1, sizeof *ix);
    if (!ix)
        return -ENOMEM;
    ix->arena = arena;
    ix->ndim = key->ndim;
    size_t room;
    if (__builtin_mul_overflow((size_t)key->nchunks, (size_t)2, &room) ||
        __builtin_add_overflow(room, (size_t)2, &room) || room > SIZE_MAX / sizeof(uint64_t)) {
        ck_chunk_index_free(ix);
        return -ENOMEM;
    }
    uint64_t *tmp = malloc(room * sizeof *tmp);
    if (!tmp) {
        ck_chunk_index_free(ix);
        return -ENOMEM;
    }
    int rc = build_grid(ix, key, tmp, err, errlen);
    if (rc == 0)
        rc = build_sorted(ix, key, tmp);
    free(tmp);
    if (rc < 0) {
        ck_chunk_index_free(ix);
        return rc;
    }
    *out = ix;
    return 0;
}

long ck_chunk_index_find(const ck_chunk_index *ix, const ck_key *key, const uint64_t *idx)
{
    if (ix->grid) {
        uint64_t lin = 0;
        for (uint32_t k = 0; k < ix->ndim; k++) {
            if (ix->ncells[k] == 0 || idx[k] >= ix->cuts[k][ix->ncells[k]])
                return -1;
            lin = lin * ix->ncells[k] + bisect_le(ix->cuts[k], ix->ncells[k] + 1, idx[k]);
        }
        uint32_t c = ix->cell_chunk[lin];
        return c == NO_CHUNK ? -1 : (long)c;
    }
    if (ix->n == 0 || idx[ix->dim] < ix->start[0])
        return -1;
    uint32_t i = bisect_le(ix->start, ix->n, idx[ix->dim]);
    for (;;) {
        if (ix->max_end[i] <= idx[ix->dim])
            return -1; /* no chunk starting at or before i reaches idx */
        const ck_chunk *c = &key->chunks[ix->order[i]];
        if (ck_chunk_contains(c, key->ndim, idx))
            return (long)ix->order[i];
        if (i == 0)
            return -1;
        i--;
    }
}
