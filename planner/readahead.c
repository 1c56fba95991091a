/* Read-ahead (see readahead.h).  The frontier of each key (tensor bytes
 * advised so far) lives in ck->readahead; one thread at a time advances it
 * with a compare-exchange, and a reader that loses the race simply skips:
 * read-ahead is a hint, never a correctness matter. */
#include "readahead.h"

#include <fcntl.h>
#include <stdlib.h>

#include "chunk_cache.h"
#include "chunk_reader.h"
#include "geometry.h"
#include "grow.h"
#include "decode_ahead.h"

/* A read is sequential when it starts within this distance behind the
 * frontier (concurrent readers of one file land slightly out of order). */
#define SEQUENTIAL_SLACK (4ull << 20)

/* File ranges a window needs, merged before they are advised: a tensor in
 * 10,000 small chunks would otherwise cost thousands of fadvise calls per
 * window for ranges that lie back to back. */
#define ADVISE_MERGE_GAP (64ull << 10)

typedef struct {
    uint32_t file;
    uint64_t off, len;
} file_range;

typedef struct {
    file_range *v;
    size_t n, cap;
} range_vec;

static void range_push(range_vec *rv, uint32_t file, uint64_t off, uint64_t len)
{
    if (len == 0)
        return;
    file_range *v = ck_grow(rv->v, &rv->cap, rv->n + 1, sizeof *v, 64);
    if (!v)
        return; /* a hint: fewer ranges advised */
    rv->v = v;
    rv->v[rv->n++] = (file_range){ file, off, len };
}

static int cmp_range(const void *a, const void *b)
{
    const file_range *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static void advise_ranges(ck_checkpoint *ck, range_vec *rv)
{
    if (rv->n == 0)
        return;
    qsort(rv->v, rv->n, sizeof *rv->v, cmp_range);
    for (size_t i = 0; i < rv->n;) {
        uint64_t lo = rv->v[i].off, hi = lo + rv->v[i].len;
        size_t j = i + 1;
        while (j < rv->n && rv->v[j].file == rv->v[i].file && rv->v[j].off <= hi + ADVISE_MERGE_GAP) {
            uint64_t e = rv->v[j].off + rv->v[j].len;
            hi = e > hi ? e : hi;
            j++;
        }
        ck_file_prefetch(ck, rv->v[i].file, lo, hi - lo);
        i = j;
    }
}

/* Local files: the kernel reads ahead within a file as a reader walks it,
 * with its own markers to keep the next batch in flight; advice over the
 * same bytes only competes with that (first cold reads of one shard file
 * took 0.58-0.76 s with 16 MiB windows advised, 0.42-0.46 s without).  So
 * for local files only the jumps are advised: the first bytes of a chunk
 * the reader will enter, this much of them, where the kernel has no
 * history yet. */
#define LOCAL_JUMP_ADVISE (2ull << 20)

/* A decoded (zstd) item is read whole: this much of it is asked for at once. */
#define DECODED_MAX (128ull << 20)
/* Bytes of an unresolved item's tail its archive directory lives in. */
#define ITEM_TAIL (64u << 10)

/* The file ranges holding bytes [src_off, +len) of chunk c's image: exact
 * for a resolved direct chunk; for one not resolved yet, its archive
 * directory (at the item's end) and the item from its start (the header
 * before the data is small), as much of it as the window; a decoded chunk's
 * item whole (to a bound), queued for the decode workers. */
static void chunk_range(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t src_off,
                        uint64_t len, range_vec *rv)
{
    bool local = !(ck->storage && ck->storage->ops->prefetch);
    if (local && !c->transforms) {
        /* a chunk the reader continues in: the kernel's read-ahead */
        if (src_off > 0)
            return;
        len = len < LOCAL_JUMP_ADVISE ? len : LOCAL_JUMP_ADVISE;
    }
    int st = atomic_load_explicit(&c->state, memory_order_acquire);
    if (st == 1 && c->layout.direct) {
        range_push(rv, c->file, c->layout.file_offset + src_off, len);
        return;
    }
    if (st == 0 && c->format == CK_ITEM_TORCH_SAVE && key->kind == CK_KEY_TENSOR &&
        !c->transforms) {
        uint64_t tail = c->length < ITEM_TAIL ? c->length : ITEM_TAIL;
        uint64_t n = c->length < src_off + len ? c->length : src_off + len;
        range_push(rv, c->file, c->offset + c->length - tail, tail);
        range_push(rv, c->file, c->offset, n);
    }
    if ((st == 0 || (st == 1 && !c->layout.direct)) && c->transforms) {
        range_push(rv, c->file, c->offset, c->length < DECODED_MAX ? c->length : DECODED_MAX);
        /* a zstd chunk: decoded by a worker, ready when the reader comes */
        ck_decode_ahead(ck, (uint32_t)(key - ck->keys), (uint32_t)(c - key->chunks));
    }
    /* failed chunks: nothing to fetch ahead */
}

/* Hands the file ranges of bytes [from, to) of key to the kernel and
 * queues its decoded chunks for the workers. */
static void advise_window(ck_checkpoint *ck, const ck_key *key, uint64_t from, uint64_t to)
{
    ck_read_vec plan = { 0 };
    range_vec rv = { 0 };
    if (ck_load_plan_for_range(key, from, to - from, &plan) == 0) {
        /* runs of one chunk lying back to back in its image become one range */
        for (size_t i = 0; i < plan.n;) {
            size_t j = i + 1;
            uint64_t hi = plan.v[i].src_off + plan.v[i].len;
            while (j < plan.n && plan.v[j].chunk == plan.v[i].chunk && plan.v[j].src_off >= hi &&
                   plan.v[j].src_off - hi <= SEQUENTIAL_SLACK) {
                hi = plan.v[j].src_off + plan.v[j].len;
                j++;
            }
            chunk_range(ck, key, &key->chunks[plan.v[i].chunk], plan.v[i].src_off,
                        hi - plan.v[i].src_off, &rv);
            i = j;
        }
        advise_ranges(ck, &rv);
    }
    free(rv.v);
    ck_read_vec_free(&plan);
}

/* Readers that walk a key to its end mostly go on with the next key in
 * order (cat, cp -r and loaders list directories sorted, which is the keys'
 * order), so its first bytes are fetched too, once the reader is past the
 * middle of the current key or within a window of its end.  Keys of
 * decoded chunks go further: from the reader's first bytes of a key on, the
 * next keys are queued, as many as there are decode workers and as fit in
 * half the cache, so that the workers decode that many chunks at once while
 * the reader copies this one. */
static void advise_next_keys(ck_checkpoint *ck, const ck_key *key, uint64_t budget, int count)
{
    uint64_t queued = 0, room = ck->cache ? ck_cache_bound(ck->cache) / 2 : 0;
    for (int a = 1; a <= count; a++) {
        const ck_key *next = key + a;
        if (next >= ck->keys + ck->nkeys || next->kind != CK_KEY_TENSOR || next->error ||
            next->nbytes == 0)
            return;
        if (a > 1 && (next->nbytes > room || queued > room - next->nbytes))
            return; /* decoded ahead only to be evicted before it is read */
        queued += next->nbytes;
        _Atomic uint64_t *front = &ck->readahead[next - ck->keys];
        uint64_t f = 0, to = next->nbytes < budget ? next->nbytes : budget;
        if (atomic_compare_exchange_strong_explicit(front, &f, to, memory_order_relaxed,
                                                    memory_order_relaxed))
            advise_window(ck, next, 0, to);
    }
}

void ck_readahead(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint64_t len)
{
    if (!ck->readahead || key->kind != CK_KEY_TENSOR || key < ck->keys ||
        key >= ck->keys + ck->nkeys)
        return;
    _Atomic uint64_t *front = &ck->readahead[key - ck->keys];
    uint64_t f = atomic_load_explicit(front, memory_order_relaxed);
    uint64_t end = off + len; /* a read inside the key: no overflow */
    uint64_t window = ck->storage && ck->storage->ops->prefetch ? CK_READAHEAD_WINDOW_REMOTE
                                                               : CK_READAHEAD_WINDOW;
    if (off > f || f - off > window + SEQUENTIAL_SLACK)
        return; /* a jump: random access is left alone */
    bool decoded = key->nchunks && key->chunks[0].transforms;
    if (decoded)
        advise_next_keys(ck, key, window, ck->decode_width);
    else if (end >= key->nbytes / 2 || key->nbytes - end <= window)
        advise_next_keys(ck, key, window, 1);
    if (f >= key->nbytes || f > end + window / 2)
        return; /* advised far enough already */
    uint64_t from = f > end ? f : end;
    uint64_t to = key->nbytes - from < window ? key->nbytes : from + window;
    if (!atomic_compare_exchange_strong_explicit(front, &f, to, memory_order_relaxed,
                                                 memory_order_relaxed))
        return;
    advise_window(ck, key, from, to);
}
