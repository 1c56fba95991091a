/* Fetch-ahead along a key's load plan; see prefetch.h. */
#include "prefetch.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "geometry.h"

#define PREFETCH_BYTES (32ull << 20)
/* The plan ahead is computed once per step a reader advances, not per read. */
#define PREFETCH_STEP (4ull << 20)
/* Parallel FUSE requests arrive a little out of order. */
#define SEQ_SLACK (2ull << 20)
/* A decoded (zstd) item is read whole: this much of it is asked for at once. */
#define DECODED_MAX (128ull << 20)
/* Bytes of an unresolved item's tail its archive directory lives in. */
#define ITEM_TAIL (64u << 10)

static _Atomic uint64_t *state_of(ck_checkpoint *ck)
{
    uint64_t *cur = atomic_load_explicit(&ck->read_ahead, memory_order_acquire);
    if (cur || !ck->nkeys)
        return (_Atomic uint64_t *)cur;
    uint64_t *fresh = calloc(ck->nkeys, sizeof *fresh);
    if (!fresh)
        return NULL;
    uint64_t *expect = NULL;
    if (!atomic_compare_exchange_strong(&ck->read_ahead, &expect, fresh)) {
        free(fresh);
        return (_Atomic uint64_t *)expect;
    }
    return (_Atomic uint64_t *)fresh;
}

static void prefetch_read(ck_checkpoint *ck, const ck_key *key, const ck_read *r)
{
    ck_chunk *c = &key->chunks[r->chunk];
    if (atomic_load_explicit(&c->state, memory_order_acquire) == 1) {
        if (c->layout.direct) {
            ck_file_prefetch(ck, c->file, c->layout.file_offset + r->src_off, r->len);
            return;
        }
        /* decoded chunks are read whole */
        ck_file_prefetch(ck, c->file, c->offset, c->length < DECODED_MAX ? c->length : DECODED_MAX);
        return;
    }
    /* Not resolved yet: its archive directory (at the item's end) and, for
     * items stored as is, roughly where its bytes are (the archive's
     * header before them is small). */
    uint64_t tail = c->length < ITEM_TAIL ? c->length : ITEM_TAIL;
    ck_file_prefetch(ck, c->file, c->offset + c->length - tail, tail);
    if (!c->transforms)
        ck_file_prefetch(ck, c->file, c->offset + (r->src_off < c->length ? r->src_off : 0),
                         r->len < c->length ? r->len : c->length);
    else
        ck_file_prefetch(ck, c->file, c->offset, c->length < DECODED_MAX ? c->length : DECODED_MAX);
}

void ck_key_read_ahead(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint64_t n)
{
    if (!ck->storage->ops->prefetch || key->kind != CK_KEY_TENSOR || key->error)
        return;
    _Atomic uint64_t *st = state_of(ck);
    if (!st)
        return;
    size_t k = (size_t)(key - ck->keys);
    uint64_t end = off + n;
    /* 0 = nothing read yet; otherwise 1 + where the last read ended */
    uint64_t prev = atomic_exchange(&st[k], end + 1);
    /* a second read that follows the first: a stream (one read alone, a
     * 4 KiB probe say, fetches nothing more) */
    int sequential = prev && off + SEQ_SLACK >= prev - 1 && off <= prev - 1 + SEQ_SLACK;
    if (!sequential || end >= key->nbytes)
        return;
    /* the stream's first prefetch, or a new step: plan the bytes after this read */
    if (prev - 1 > SEQ_SLACK && off / PREFETCH_STEP == end / PREFETCH_STEP)
        return;
    uint64_t len = key->nbytes - end < PREFETCH_BYTES ? key->nbytes - end : PREFETCH_BYTES;
    ck_read_vec plan = { 0 };
    if (ck_load_plan_for_range(key, end, len, &plan) == 0)
        for (size_t i = 0; i < plan.n; i++)
            prefetch_read(ck, key, &plan.v[i]);
    ck_read_vec_free(&plan);
}
