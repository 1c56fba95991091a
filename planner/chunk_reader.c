/* From chunks to bytes.  A chunk is resolved once (its archive parsed, a zstd
 * item decoded) by the first reader that needs it, with no lock held: other
 * readers of that chunk wait for it alone, readers of other chunks go on.
 * Afterwards readers go lock-free to pread (direct chunks) or to the
 * decoded-chunk cache (zstd or strided chunks). */
#include "chunk_reader.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "arena.h"
#include "chunk_cache.h"
#include "crc32.h"
#include "dcp_safetensors.h"
#include "fd_io.h"
#include "geometry.h"
#include "grow.h"
#include "readahead.h"
#include "zip_reader.h"
#include "zstd_stream.h"

/* c->state while one thread resolves the chunk (0: not yet, 1: ok, < 0:
 * -errno, sticky). */
#define CHUNK_RESOLVING 2

/* The arena is not thread-safe, and resolution runs unlocked. */
static void *arena_alloc_locked(ck_checkpoint *ck, size_t size)
{
    pthread_mutex_lock(&ck->lock);
    void *p = ck_arena_alloc(ck->arena, size);
    pthread_mutex_unlock(&ck->lock);
    return p;
}

/* A decoded item may exceed its chunk's image by the archive's own bytes
 * (data.pkl, headers, padding); this bounds how much a zstd bomb can claim. */
#define DECODE_SLACK (64ull << 20)

static uint32_t chunk_index(const ck_key *key, const ck_chunk *c)
{
    return (uint32_t)(c - key->chunks);
}

static uint64_t cache_id(const ck_checkpoint *ck, const ck_key *key, const ck_chunk *c)
{
    return ((uint64_t)(key - ck->keys) << 32) | chunk_index(key, c);
}

static int chunk_fail(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, int rc, const char *why)
{
    const char *file = c->file < ck->nfiles ? ck->files[c->file].path : "?";
    fprintf(stderr, "ckptfs: key %s: file %s offset %" PRIu64 ": %s\n", key->fqn, file, c->offset,
            why);
    atomic_store_explicit(&c->state, rc, memory_order_release);
    return rc;
}

/* -ENOMEM and -ETIMEDOUT (an object store that did not answer) are
 * transient: the chunk is not marked failed, a later read tries again. */
static int keep_transient(int rc)
{
    return rc == -ENOMEM || rc == -ETIMEDOUT ? rc : -EIO;
}

static int chunk_unreachable(ck_checkpoint *ck, const ck_key *key, const ck_chunk *c, int rc)
{
    const char *file = c->file < ck->nfiles ? ck->files[c->file].path : "?";
    fprintf(stderr, "ckptfs: key %s: file %s offset %" PRIu64 ": the store did not answer; "
            "this read fails, later ones try again\n", key->fqn, file, c->offset);
    return rc;
}

static uint64_t chunk_image_bytes(const ck_key *key, const ck_chunk *c)
{
    uint64_t n = 1;
    for (uint32_t k = 0; k < key->ndim; k++)
        n *= c->sizes[k]; /* bounded by the key's numel, checked at open */
    return n * ck_dtype_get(key->dtype)->size;
}

/* A buffer the cache let go, for a decode of want bytes (ck_zstd_buffers). */
static uint8_t *take_cache_buffer(void *cache, size_t want)
{
    size_t cap; /* at most an eighth over: the decode's limits are want's */
    return ck_cache_take_buffer(cache, want, &cap);
}

/* Reads and undoes the transforms of the whole item into memory. */
static int load_item(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t expect,
                     uint8_t **out, uint64_t *out_len, char *why, size_t whylen)
{
    ck_byte_source src;
    int orc = ck_file_source(ck, c->file, c->offset, c->length, &src);
    if (orc) {
        snprintf(why, whylen, "cannot open: %s", strerror(-orc));
        return orc;
    }
    if (c->transforms & CK_TF_ZSTD) {
        uint64_t max = expect > UINT64_MAX - DECODE_SLACK ? UINT64_MAX : expect + DECODE_SLACK;
        /* into the buffer of an image the cache let go, when one fits */
        ck_zstd_buffers bufs = { take_cache_buffer, ck->cache };
        return ck_zstd_decode_into(&src, max, ck->cache ? &bufs : NULL, out, out_len, why, whylen);
    }
    if (c->length > SIZE_MAX)
        return -EFBIG;
    uint8_t *buf = malloc(c->length ? c->length : 1);
    if (!buf)
        return -ENOMEM;
    int rc = ck_byte_source_read(&src, 0, buf, c->length);
    if (rc) {
        free(buf);
        snprintf(why, whylen, "item is truncated or unreadable");
        return rc;
    }
    *out = buf;
    *out_len = c->length;
    return 0;
}

static int item_matches_chunk(const ck_key *key, const ck_chunk *c, const ck_torch_item *it,
                              char *why, size_t whylen)
{
    if (it->dtype != key->dtype) {
        snprintf(why, whylen, "item holds %s, metadata says %s", ck_dtype_get(it->dtype)->torch_name,
                 ck_dtype_get(key->dtype)->torch_name);
        return -EIO;
    }
    /* torch saves each chunk with the chunk's own sizes; 0-d is () on both */
    if (it->ndim != key->ndim) {
        snprintf(why, whylen, "item has %u dimensions, chunk %u", it->ndim, key->ndim);
        return -EIO;
    }
    for (uint32_t k = 0; k < key->ndim; k++)
        if (it->size[k] != c->sizes[k]) {
            snprintf(why, whylen, "item size differs from chunk size in dimension %u", k);
            return -EIO;
        }
    return 0;
}

/* torch's zstd frames carry no checksum, so a damaged frame can decode to
 * wrong bytes without an error.  The archive inside records the CRC-32 of
 * data/0, and a decoded item is in memory anyway: check it.  A CRC of 0 is
 * taken as "not recorded" (torch.serialization.config.save.compute_crc32). */
static int check_data_crc(const uint8_t *item, uint64_t item_len, char *why, size_t whylen)
{
    ck_byte_source src = ck_byte_source_mem(item, item_len);
    ck_zip_member m;
    int rc = ck_zip_find(&src, "/data/0", &m, why, whylen);
    if (rc)
        return -EIO;
    if (m.crc32 == 0)
        return 0;
    if (ck_crc32(0, item + m.data_offset, (size_t)m.size) != m.crc32) {
        snprintf(why, whylen, "data/0 fails its CRC-32 check after decoding (damaged frame)");
        return -EIO;
    }
    return 0;
}

/* The cached form of a chunk's image, made from its decoded item (which
 * it takes over): when the elements are one contiguous run of the item,
 * the item itself, with the image starting at *img_off (no copy of a
 * possibly huge buffer); otherwise a gathered row-major copy. */
static int image_from_item(const ck_key *key, const ck_chunk *c, uint8_t *item, uint64_t item_len,
                           uint8_t **img, uint64_t *img_len, uint64_t *img_off)
{
    *img = item;
    *img_len = item_len;
    *img_off = 0;
    if (key->kind != CK_KEY_TENSOR || c->format != CK_ITEM_TORCH_SAVE)
        return 0;
    const ck_torch_item *it = c->layout.item;
    uint64_t nbytes = chunk_image_bytes(key, c);
    if (ck_torch_item_is_contiguous(it)) {
        uint64_t start = it->data_offset + it->storage_offset * ck_dtype_get(key->dtype)->size;
        if (start > item_len || item_len - start < nbytes) {
            free(item);
            return -EIO;
        }
        *img_off = start;
        return 0;
    }
    uint8_t *g = malloc(nbytes ? nbytes : 1);
    if (!g) {
        free(item);
        return -ENOMEM;
    }
    int rc = ck_torch_item_gather(it, item, item_len, g, nbytes);
    free(item);
    if (rc) {
        free(g);
        return -EIO;
    }
    *img = g;
    *img_len = nbytes;
    return 0;
}

/* Parses a decoded item, checks it against the chunk and caches its image. */
static int cache_image_from_item(ck_checkpoint *ck, const ck_key *key, ck_chunk *c,
                                 uint8_t *item, uint64_t item_len, char *why, size_t whylen)
{
    uint64_t nbytes = key->kind == CK_KEY_BYTES ? item_len : chunk_image_bytes(key, c);
    if (key->kind == CK_KEY_TENSOR) {
        ck_byte_source src = ck_byte_source_mem(item, item_len);
        if (!c->layout.item && !(c->layout.item = arena_alloc_locked(ck, sizeof(ck_torch_item)))) {
            free(item);
            return -ENOMEM;
        }
        int rc = ck_torch_item_parse_memo(&src, &ck->pkl_memo, c->layout.item, why, whylen);
        if (!rc)
            rc = item_matches_chunk(key, c, c->layout.item, why, whylen);
        if (!rc && c->transforms)
            rc = check_data_crc(item, item_len, why, whylen);
        if (rc) {
            free(item);
            return rc < 0 ? rc : -EIO;
        }
    }
    uint8_t *img;
    uint64_t img_len, img_off;
    int rc = image_from_item(key, c, item, item_len, &img, &img_len, &img_off);
    if (rc) {
        snprintf(why, whylen, "cannot lay out the item's elements");
        return rc;
    }
    c->layout.nbytes = nbytes;
    c->layout.cache_offset = img_off;
    ck_cache_entry *e = ck_cache_put(ck->cache, cache_id(ck, key, c), img, img_len);
    if (!e)
        return -ENOMEM;
    ck_cache_release(ck->cache, e);
    return 0;
}

/* Resolves c.  item_mem, when not NULL, holds the item's c->length bytes,
 * read by a batch (see prefetch_resolve): the archive is then parsed from
 * memory. */
static int resolve_chunk(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, const uint8_t *item_mem)
{
    char why[384] = "";
    int rc;
    if (c->transforms & CK_TF_UNKNOWN)
        return chunk_fail(ck, key, c, -EIO, "unknown storage transform");
    /* The size pinned when the file was opened (file_id.h; an object's as
     * seen at open): a file that changes since fails its reads' identity
     * checks, and resolving a chunk costs no fstat. */
    uint64_t file_size, end;
    rc = ck_file_size(ck, c->file, &file_size);
    if (rc) {
        if (rc == -ETIMEDOUT)
            return rc;
        snprintf(why, sizeof why, "cannot open: %s", strerror(-rc));
        return chunk_fail(ck, key, c, -EIO, why);
    }
    if (__builtin_add_overflow(c->offset, c->length, &end) || file_size < end) {
        snprintf(why, sizeof why, "file ends at %" PRIu64 " before the item's end", file_size);
        return chunk_fail(ck, key, c, -EIO, why);
    }
    ck_chunk_layout *L = &c->layout;
    /* A DCP tensor item may be raw bytes in a safetensors blob rather than
     * a torch.save archive: .metadata does not say, the data file does. */
    char note[384] = "";
    if (key->kind == CK_KEY_TENSOR && c->format == CK_ITEM_TORCH_SAVE) {
        bool in_blob = false;
        rc = ck_dcp_st_resolve(ck, key, c, file_size, item_mem, c->length,
                               &in_blob, why, sizeof why, note, sizeof note);
        if (rc)
            return rc == -ETIMEDOUT ? rc : chunk_fail(ck, key, c, keep_transient(rc), why);
        if (in_blob)
            return 0;
    }
    if (c->format == CK_ITEM_RAW || (key->kind == CK_KEY_BYTES && !c->transforms)) {
        L->direct = !c->transforms;
        L->file_offset = c->offset;
        L->nbytes = c->length;
        if (c->format == CK_ITEM_RAW && L->nbytes != chunk_image_bytes(key, c))
            return chunk_fail(ck, key, c, -EIO, "stored length differs from the chunk's size");
        if (L->direct)
            return 0;
    }
    if (c->transforms || c->format == CK_ITEM_RAW) {
        uint8_t *item;
        uint64_t item_len;
        uint64_t expect = key->kind == CK_KEY_TENSOR ? chunk_image_bytes(key, c) : c->length * 64;
        rc = load_item(ck, key, c, expect, &item, &item_len, why, sizeof why);
        if (!rc && (rc = ck_file_check(ck, c->file)) != 0) {
            free(item);
            snprintf(why, sizeof why, "file changed while it was read");
        }
        if (!rc)
            rc = cache_image_from_item(ck, key, c, item, item_len, why, sizeof why);
        if (rc == -ETIMEDOUT)
            return rc;
        if (rc)
            return chunk_fail(ck, key, c, keep_transient(rc), why[0] ? why : "cannot decode item");
        L->direct = false;
        return 0;
    }
    ck_byte_source src;
    if (item_mem)
        src = ck_byte_source_mem(item_mem, c->length);
    else if ((rc = ck_file_source(ck, c->file, c->offset, c->length, &src)) != 0)
        return chunk_fail(ck, key, c, keep_transient(rc), "cannot open");
    ck_torch_item it;
    rc = ck_torch_item_parse_memo(&src, &ck->pkl_memo, &it, why, sizeof why);
    /* bytes a batch read were checked once for the whole batch */
    if (!rc && !item_mem && (rc = ck_file_check(ck, c->file)) != 0)
        snprintf(why, sizeof why, "file changed while it was read");
    if (!rc)
        rc = item_matches_chunk(key, c, &it, why, sizeof why);
    if (rc == -ETIMEDOUT)
        return rc;
    if (rc)
        return chunk_fail(ck, key, c, keep_transient(rc),
                          note[0] ? note : why[0] ? why : "bad archive");
    L->nbytes = chunk_image_bytes(key, c);
    if (ck_torch_item_is_contiguous(&it)) {
        L->direct = true;
        L->file_offset = c->offset + it.data_offset + it.storage_offset * ck_dtype_get(key->dtype)->size;
        return 0;
    }
    L->direct = false;
    L->item = arena_alloc_locked(ck, sizeof it);
    if (!L->item)
        return -ENOMEM;
    *L->item = it;
    return 0;
}

/* Claims c for resolution by this thread: 1 claimed (resolve it, then
 * publish_resolution), 0 already resolved, < 0 its sticky error.  When
 * another thread holds the claim, waits for its outcome, or with
 * wait == 0 returns CHUNK_RESOLVING at once. */
static int claim_chunk(ck_checkpoint *ck, ck_chunk *c, int wait)
{
    int st = atomic_load_explicit(&c->state, memory_order_acquire);
    for (;;) {
        if (st == 1)
            return 0;
        if (st < 0)
            return st;
        if (st == 0 && atomic_compare_exchange_strong_explicit(&c->state, &st, CHUNK_RESOLVING,
                                                               memory_order_acq_rel,
                                                               memory_order_acquire))
            return 1;
        if (st == CHUNK_RESOLVING) {
            if (!wait)
                return CHUNK_RESOLVING;
            pthread_mutex_lock(&ck->lock);
            while ((st = atomic_load_explicit(&c->state, memory_order_acquire)) == CHUNK_RESOLVING)
                pthread_cond_wait(&ck->resolved, &ck->lock);
            pthread_mutex_unlock(&ck->lock);
        }
    }
}

/* Ends a claim with resolve_chunk's result, waking the chunk's waiters. */
static void publish_resolution(ck_checkpoint *ck, ck_chunk *c, int rc)
{
    /* -ENOMEM and -ETIMEDOUT are transient: the next reader tries again */
    int st = rc == 0 ? 1 : rc == -ENOMEM || rc == -ETIMEDOUT ? 0 : rc;
    pthread_mutex_lock(&ck->lock);
    atomic_store_explicit(&c->state, st, memory_order_release);
    pthread_cond_broadcast(&ck->resolved);
    pthread_mutex_unlock(&ck->lock);
}

int ck_chunk_resolve(ck_checkpoint *ck, const ck_key *key, ck_chunk *c)
{
    int rc = claim_chunk(ck, c, 1);
    if (rc != 1)
        return rc;
    rc = resolve_chunk(ck, key, c, NULL);
    publish_resolution(ck, c, rc);
    return rc;
}

/* A decoded image may have been evicted since resolution: decode again. */
static int cached_image(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, ck_cache_entry **out)
{
    uint64_t id = cache_id(ck, key, c);
    int loader;
    ck_cache_entry *e = ck_cache_get_or_load(ck->cache, id, &loader);
    if (e) {
        *out = e;
        return 0;
    }
    char why[384] = "";
    uint8_t *item = NULL;
    uint64_t item_len = 0;
    uint64_t expect = key->kind == CK_KEY_TENSOR ? c->layout.nbytes : c->length * 64;
    int rc = load_item(ck, key, c, expect, &item, &item_len, why, sizeof why);
    if (rc == 0 && ck_file_check(ck, c->file)) {
        free(item);
        rc = -EIO; /* the file changed while it was read */
    }
    if (rc == 0 && c->transforms && key->kind == CK_KEY_TENSOR &&
        c->format == CK_ITEM_TORCH_SAVE && check_data_crc(item, item_len, why, sizeof why)) {
        free(item);
        rc = -EIO; /* the file changed since the chunk was resolved */
    }
    uint8_t *img;
    uint64_t img_len, img_off;
    if (rc == 0)
        rc = image_from_item(key, c, item, item_len, &img, &img_len, &img_off);
    if (rc) {
        ck_cache_abandon(ck->cache, id);
        return keep_transient(rc);
    }
    e = ck_cache_put(ck->cache, id, img, img_len);
    if (!e)
        return -ENOMEM;
    *out = e;
    return 0;
}

int ck_chunk_warm(ck_checkpoint *ck, const ck_key *key, ck_chunk *c)
{
    int rc = ck_chunk_resolve(ck, key, c);
    if (rc || c->layout.direct)
        return rc;
    ck_cache_entry *e;
    rc = cached_image(ck, key, c, &e);
    if (!rc)
        ck_cache_release(ck->cache, e);
    return rc;
}

/* Bytes [0, end) of the chunk's image, from its cached entry: *img points
 * at byte 0; release *e when done.  -EIO if the entry is shorter. */
static int cached_bytes(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t end,
                        ck_cache_entry **e, const uint8_t **img)
{
    int rc = cached_image(ck, key, c, e);
    if (rc)
        return rc;
    uint64_t n;
    const uint8_t *data = ck_cache_entry_data(*e, &n);
    if (c->layout.cache_offset > n || end > n - c->layout.cache_offset) {
        ck_cache_release(ck->cache, *e);
        return -EIO;
    }
    *img = data + c->layout.cache_offset;
    return 0;
}


int ck_chunk_read(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t off, void *dst,
                  size_t len)
{
    int rc = ck_chunk_resolve(ck, key, c);
    if (rc)
        return rc;
    uint64_t end;
    if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > c->layout.nbytes)
        return -EINVAL;
    if (c->layout.direct) {
        rc = ck_file_pread(ck, c->file, dst, len, c->layout.file_offset + off);
        if (!rc)
            return ck_file_check(ck, c->file);
        if (rc == -ETIMEDOUT)
            return chunk_unreachable(ck, key, c, rc);
        return rc == -EIO && !ck_file_check(ck, c->file)
                   ? chunk_fail(ck, key, c, -EIO, "file shrank under the mount") : rc;
    }
    ck_cache_entry *e;
    const uint8_t *img;
    rc = cached_bytes(ck, key, c, end, &e, &img);
    if (rc)
        return rc;
    memcpy(dst, img + off, len);
    ck_cache_release(ck->cache, e);
    return 0;
}

int ck_key_size(ck_checkpoint *ck, const ck_key *key, uint64_t *size)
{
    if (key->kind == CK_KEY_TENSOR) {
        *size = key->nbytes;
        return 0;
    }
    ck_chunk *c = &key->chunks[0];
    if (!c->transforms) {
        *size = c->length; /* known without touching the file */
        return 0;
    }
    int rc = ck_chunk_resolve(ck, key, c);
    if (rc)
        return rc;
    *size = c->layout.nbytes;
    return 0;
}

/* Batched resolution.  A tensor saved by many ranks in small chunks (FSDP,
 * 10,000 row shards) has small items lying one after another in each data
 * file; resolving them one by one costs half a dozen small preads each
 * (end of archive, central directory, local headers, data.pkl).  The
 * unresolved items a request needs are therefore read in runs of neighbours
 * with one pread per run and parsed from memory. */
#define BATCH_ITEM_MAX (1ull << 20)  /* larger items are resolved alone */
#define BATCH_SPAN_MAX (8ull << 20)  /* bytes one batch pread may cover */
#define BATCH_GAP_MAX (64ull << 10)  /* unneeded bytes between two items */

/* Coalescing: the reads of a request that go straight to shard files are
 * usually runs lying close together in one file (a column-sharded tensor
 * gives one short run per row; small row chunks lie back to back with only
 * their archive headers between them).  One read of their whole span beats
 * a syscall per run: a preadv that puts each run where it belongs (local
 * files), or one ranged read scattered from memory (object stores).  Spans
 * much larger than the bytes wanted are not worth it. */
#define COALESCE_MAX_SPAN (8ull << 20)
#define COALESCE_MAX_GAP (64ull << 10)

static int cmp_read_by_chunk(const void *a, const void *b)
{
    const ck_read *x = *(const ck_read *const *)a, *y = *(const ck_read *const *)b;
    if (x->chunk != y->chunk)
        return x->chunk < y->chunk ? -1 : 1;
    return x->src_off < y->src_off ? -1 : x->src_off > y->src_off;
}

static int batchable(const ck_key *key, const ck_chunk *c)
{
    return key->kind == CK_KEY_TENSOR && c->format == CK_ITEM_TORCH_SAVE && c->transforms == 0 &&
           c->length <= BATCH_ITEM_MAX &&
           atomic_load_explicit(&c->state, memory_order_acquire) == 0;
}

static int cmp_chunk_by_place(const void *a, const void *b)
{
    const ck_chunk *x = *(const ck_chunk *const *)a, *y = *(const ck_chunk *const *)b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* File bytes [lo, hi) of one file, read by a batch and kept for the rest of
 * the request: the items of small chunks hold their data, which the plan
 * then copies from here instead of reading it again. */
typedef struct {
    uint32_t file;
    uint64_t lo, hi;
    uint8_t *buf;
} batch_buf;

typedef struct {
    batch_buf *v;
    size_t n, cap;
} batch_bufs;

static void batch_bufs_free(batch_bufs *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->v[i].buf);
    free(b->v);
}

/* Copies file bytes [off, off+len) to dst when a batch holds them. */
static bool copy_from_batch(const batch_bufs *b, uint32_t file, uint64_t off, uint64_t len,
                            uint8_t *dst)
{
    for (size_t i = 0; i < b->n; i++) {
        const batch_buf *x = &b->v[i];
        if (x->file == file && off >= x->lo && off <= x->hi && len <= x->hi - off) {
            memcpy(dst, x->buf + (off - x->lo), (size_t)len);
            return true;
        }
    }
    return false;
}

/* Resolves group[0..n) (sorted by place, one file) from one pread of their
 * span, after which the file's identity is checked once for all of them;
 * the bytes go to keep (or are freed when it cannot take them).  Chunks
 * another thread is resolving are left to it; on a failed read or a
 * changed file every chunk is left for ck_chunk_resolve to try (and log)
 * alone. */
static void resolve_batch(ck_checkpoint *ck, const ck_key *key, ck_chunk **group, size_t n,
                          batch_bufs *keep)
{
    uint32_t file = group[0]->file;
    uint64_t lo = group[0]->offset, hi = group[n - 1]->offset + group[n - 1]->length;
    uint8_t *buf = malloc((size_t)(hi - lo));
    if (!buf)
        return;
    if (ck_file_pread(ck, file, buf, (size_t)(hi - lo), lo) != 0 || ck_file_check(ck, file) != 0) {
        free(buf);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (claim_chunk(ck, group[i], 0) != 1)
            continue;
        int rc = resolve_chunk(ck, key, group[i], buf + (group[i]->offset - lo));
        publish_resolution(ck, group[i], rc);
    }
    batch_buf *v = ck_grow(keep->v, &keep->cap, keep->n + 1, sizeof *v, 4);
    if (!v) {
        free(buf);
        return;
    }
    keep->v = v;
    keep->v[keep->n++] = (batch_buf){ file, lo, hi, buf };
}

/* Resolves, in batches, the unresolved small items among the chunks that
 * reads (sorted by chunk) touch, keeping what the batches read in keep.
 * Best effort: whatever is left is resolved one by one when read. */
static void prefetch_resolve(ck_checkpoint *ck, const ck_key *key, ck_read *const *reads, size_t n,
                             batch_bufs *keep)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || reads[i]->chunk != reads[i - 1]->chunk) &&
            batchable(key, &key->chunks[reads[i]->chunk]))
            m++;
    if (m < 2)
        return;
    ck_chunk **todo = malloc(m * sizeof *todo);
    if (!todo)
        return;
    m = 0;
    for (size_t i = 0; i < n; i++)
        if ((i == 0 || reads[i]->chunk != reads[i - 1]->chunk) &&
            batchable(key, &key->chunks[reads[i]->chunk]))
            todo[m++] = &key->chunks[reads[i]->chunk];
    qsort(todo, m, sizeof *todo, cmp_chunk_by_place);
    for (size_t i = 0; i < m;) {
        size_t j = i + 1;
        uint64_t end = todo[i]->offset + todo[i]->length; /* checked at open */
        while (j < m && todo[j]->file == todo[i]->file && todo[j]->offset >= end &&
               todo[j]->offset - end <= BATCH_GAP_MAX &&
               todo[j]->offset + todo[j]->length - todo[i]->offset <= BATCH_SPAN_MAX) {
            end = todo[j]->offset + todo[j]->length;
            j++;
        }
        if (j - i >= 2)
            resolve_batch(ck, key, todo + i, j - i, keep);
        i = j;
    }
    free(todo);
}

/* One read straight from a shard file: file bytes [off, off+len) to dst. */
typedef struct {
    uint32_t file, chunk;
    uint64_t off, len;
    uint8_t *dst;
} file_read;

static int cmp_file_read(const void *a, const void *b)
{
    const file_read *x = a, *y = b;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* What read_file_span reuses from one span to the next. */
typedef struct {
    uint8_t *buf; /* the span (object stores) or the bytes between runs */
    size_t cap;
    struct iovec *iov;
    size_t iov_cap;
} span_scratch;

static int scratch_reserve(span_scratch *s, size_t bytes)
{
    if (s->cap >= bytes)
        return 0;
    uint8_t *b = realloc(s->buf, bytes ? bytes : 1);
    if (!b)
        return -ENOMEM;
    s->buf = b;
    s->cap = bytes;
    return 0;
}

/* Local files: one preadv whose buffers are the runs' destinations, the
 * bytes between runs (archive headers, other chunks' columns) going to one
 * throwaway buffer, so the span is copied once, straight where it belongs.
 * -EOPNOTSUPP where the file has no fd. */
static int scatter_file_span(ck_checkpoint *ck, const file_read *r, size_t n, span_scratch *s)
{
    int fd;
    if (ck_file_fd(ck, r[0].file, &fd) != 0)
        return -EOPNOTSUPP;
    uint64_t gap_max = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t end = r[i - 1].off + r[i - 1].len;
        if (r[i].off - end > gap_max)
            gap_max = r[i].off - end; /* runs are sorted and apart (read_direct) */
    }
    if (gap_max > COALESCE_MAX_GAP || scratch_reserve(s, (size_t)gap_max) != 0)
        return -EOPNOTSUPP;
    struct iovec *iov = ck_grow(s->iov, &s->iov_cap, 2 * n, sizeof *iov, 16);
    if (!iov)
        return -ENOMEM;
    s->iov = iov;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) {
            uint64_t gap = r[i].off - (r[i - 1].off + r[i - 1].len);
            if (gap)
                iov[k++] = (struct iovec){ .iov_base = s->buf, .iov_len = (size_t)gap };
        }
        iov[k++] = (struct iovec){ .iov_base = r[i].dst, .iov_len = (size_t)r[i].len };
    }
    return ck_preadv_full(fd, iov, k, r[0].off) ? -EIO : 0;
}

/* Reads r[0..n) (one file, sorted by offset, apart) with one read of their
 * span, or one each when the span is one read. */
static int read_file_span(ck_checkpoint *ck, const file_read *r, size_t n, span_scratch *s)
{
    if (n == 1)
        return ck_file_pread(ck, r[0].file, r[0].dst, (size_t)r[0].len, r[0].off);
    int rc = scatter_file_span(ck, r, n, s);
    if (rc != -EOPNOTSUPP)
        return rc;
    /* an object store (or gaps past the throwaway buffer's bound): one
     * ranged read of the span, then scattering */
    uint64_t lo = r[0].off, hi = r[n - 1].off + r[n - 1].len;
    size_t span = (size_t)(hi - lo);
    rc = scratch_reserve(s, span);
    if (!rc)
        rc = ck_file_pread(ck, r[0].file, s->buf, span, lo);
    for (size_t i = 0; !rc && i < n; i++)
        memcpy(r[i].dst, s->buf + (r[i].off - lo), (size_t)r[i].len);
    return rc;
}

/* read_file_span, then the file's identity: a rewrite that began before
 * the bytes were read has changed it by now (file_id.h).  -EIO for a short
 * read of a file that did not change: the caller names the chunk. */
static int read_file_span_checked(ck_checkpoint *ck, const file_read *r, size_t n,
                                  span_scratch *s, int *changed)
{
    *changed = 0;
    int rc = read_file_span(ck, r, n, s);
    if ((rc == 0 || rc == -EIO) && ck_file_check(ck, r[0].file)) {
        *changed = 1;
        return -EIO;
    }
    return rc;
}

/* Carries out the direct reads r[0..n): sorted by place, neighbours within
 * COALESCE_MAX_GAP share a pread.  A failed read is retried alone, so that
 * the chunk it belongs to is the one marked failed. */
static int read_direct(ck_checkpoint *ck, const ck_key *key, file_read *r, size_t n)
{
    qsort(r, n, sizeof *r, cmp_file_read);
    span_scratch scratch = { 0 };
    int rc = 0;
    for (size_t i = 0; !rc && i < n;) {
        size_t j = i + 1;
        uint64_t end = r[i].off + r[i].len, want = r[i].len;
        while (j < n && r[j].file == r[i].file && r[j].off >= end &&
               r[j].off - end <= COALESCE_MAX_GAP &&
               r[j].off + r[j].len - r[i].off <= COALESCE_MAX_SPAN &&
               r[j].off + r[j].len - r[i].off <= 2 * (want + r[j].len)) {
            end = r[j].off + r[j].len;
            want += r[j].len;
            j++;
        }
        int changed;
        rc = read_file_span_checked(ck, r + i, j - i, &scratch, &changed);
        if (rc == -ETIMEDOUT)
            rc = chunk_unreachable(ck, key, &key->chunks[r[i].chunk], rc);
        if (rc == -EIO && !changed) {
            rc = 0;
            for (size_t k = i; !rc && k < j; k++) {
                int e = read_file_span_checked(ck, r + k, 1, &scratch, &changed);
                if (e == -EIO && !changed)
                    rc = chunk_fail(ck, key, &key->chunks[r[k].chunk], -EIO,
                                    "file shrank under the mount");
                else if (e == -ETIMEDOUT)
                    rc = chunk_unreachable(ck, key, &key->chunks[r[k].chunk], e);
                else
                    rc = e;
            }
        }
        i = j;
    }
    free(scratch.buf);
    free(scratch.iov);
    return rc;
}

/* Executes reads[0..n) (all of one decoded chunk, sorted by src_off) into
 * dst, whose byte 0 is tensor byte `base`, from one cache lookup. */
static int read_cached_group(ck_checkpoint *ck, const ck_key *key, ck_read *const *reads, size_t n,
                             uint64_t base, uint8_t *dst)
{
    ck_chunk *c = &key->chunks[reads[0]->chunk];
    uint64_t hi = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = reads[i]->src_off + reads[i]->len;
        hi = e > hi ? e : hi;
    }
    ck_cache_entry *e;
    const uint8_t *img;
    int rc = cached_bytes(ck, key, c, hi, &e, &img);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        memcpy(dst + (reads[i]->dst_off - base), img + reads[i]->src_off, reads[i]->len);
    ck_cache_release(ck->cache, e);
    return 0;
}

int ck_execute_plan(ck_checkpoint *ck, const ck_key *key, const ck_read_vec *plan, uint64_t base,
                    void *dst)
{
    if (plan->n == 0)
        return 0;
    ck_read **order = malloc(plan->n * sizeof *order);
    file_read *direct = malloc(plan->n * sizeof *direct);
    if (!order || !direct) {
        free(order);
        free(direct);
        return -ENOMEM;
    }
    for (size_t i = 0; i < plan->n; i++)
        order[i] = &plan->v[i];
    qsort(order, plan->n, sizeof *order, cmp_read_by_chunk);
    batch_bufs batches = { 0 };
    prefetch_resolve(ck, key, order, plan->n, &batches);
    size_t ndirect = 0;
    int rc = 0;
    for (size_t i = 0; !rc && i < plan->n;) {
        size_t j = i + 1;
        while (j < plan->n && order[j]->chunk == order[i]->chunk)
            j++;
        ck_chunk *c = &key->chunks[order[i]->chunk];
        rc = ck_chunk_resolve(ck, key, c);
        if (!rc && order[j - 1]->src_off + order[j - 1]->len > c->layout.nbytes)
            rc = -EIO; /* sorted by src_off: the last read ends furthest */
        if (!rc && !c->layout.direct)
            rc = read_cached_group(ck, key, order + i, j - i, base, dst);
        for (size_t k = i; !rc && c->layout.direct && k < j; k++) {
            file_read r = { .file = c->file, .chunk = order[k]->chunk,
                            .off = c->layout.file_offset + order[k]->src_off,
                            .len = order[k]->len,
                            .dst = (uint8_t *)dst + (order[k]->dst_off - base) };
            if (!copy_from_batch(&batches, r.file, r.off, r.len, r.dst))
                direct[ndirect++] = r;
        }
        i = j;
    }
    batch_bufs_free(&batches);
    if (!rc && ndirect)
        rc = read_direct(ck, key, direct, ndirect);
    free(direct);
    free(order);
    return rc;
}

/* How many bytes of key's content [off, off+len) holds, clipped at its
 * size, in *n (0: nothing to read).  0 or -errno. */
static int key_range(ck_checkpoint *ck, const ck_key *key, uint64_t off, size_t len, uint64_t *n)
{
    uint64_t size;
    *n = 0;
    if (key->error)
        return key->error;
    int rc = ck_key_size(ck, key, &size);
    if (rc)
        return rc;
    if (off < size && len)
        *n = size - off < len ? size - off : len;
    return 0;
}

int ck_key_read(ck_checkpoint *ck, const ck_key *key, uint64_t off, void *dst, size_t len,
                size_t *got)
{
    return ck_key_read_plan(ck, key, off, dst, len, NULL, got);
}

int ck_key_read_plan(ck_checkpoint *ck, const ck_key *key, uint64_t off, void *dst, size_t len,
                     const ck_read_vec *plan, size_t *got)
{
    uint64_t n;
    *got = 0;
    int rc = key_range(ck, key, off, len, &n);
    if (rc || n == 0)
        return rc;
    if (key->kind == CK_KEY_BYTES) {
        rc = ck_chunk_read(ck, key, &key->chunks[0], off, dst, (size_t)n);
        if (!rc)
            *got = (size_t)n;
        return rc;
    }
    ck_read_vec made = { 0 };
    if (!plan || plan->n == 0) {
        rc = ck_load_plan_for_range(key, off, n, &made);
        plan = &made;
    }
    if (!rc)
        rc = ck_execute_plan(ck, key, plan, off, dst);
    ck_read_vec_free(&made);
    if (!rc) {
        *got = (size_t)n;
        /* after the read, so that a first small read does not queue behind
         * the window it starts (object stores: first-byte latency) */
        ck_readahead(ck, key, off, n);
    }
    return rc;
}

int ck_key_fd_spans(ck_checkpoint *ck, const ck_key *key, uint64_t off, size_t len,
                    ck_fd_span *spans, size_t max, size_t *nspans, size_t *got,
                    ck_read_vec *plan)
{
    *nspans = 0;
    *got = 0;
    if (key->kind != CK_KEY_TENSOR || max == 0)
        return key->error ? key->error : -EAGAIN;
    uint64_t n;
    int rc = key_range(ck, key, off, len, &n);
    if (rc || n == 0)
        return rc;
    rc = ck_load_plan_for_range(key, off, n, plan);
    if (rc)
        ck_read_vec_free(plan); /* partial: the memory path plans and reports it */
    /* Many small runs (thousands of row chunks, column shards) are not
     * worth splicing, and resolving their chunks one by one here would
     * undo the batched resolution of the memory path: decided before any
     * chunk is resolved. */
    if (!rc && (plan->n > max || n / plan->n < CK_FD_SPAN_MIN))
        rc = -EAGAIN;
    size_t k = 0;
    uint64_t at = off;
    for (size_t i = 0; !rc && i < plan->n; i++) {
        const ck_read *r = &plan->v[i];
        ck_chunk *c = &key->chunks[r->chunk];
        int fd;
        if (r->dst_off != at) {
            rc = -EAGAIN; /* not in order: the memory path sorts it out */
            break;
        }
        rc = ck_chunk_resolve(ck, key, c);
        if (!rc && (!c->layout.direct || r->src_off + r->len > c->layout.nbytes))
            rc = -EAGAIN;
        if (!rc && ck_file_fd(ck, c->file, &fd) != 0)
            rc = -EAGAIN;
        if (rc)
            break;
        uint64_t foff = c->layout.file_offset + r->src_off;
        if (k && spans[k - 1].fd == fd && spans[k - 1].off + spans[k - 1].len == foff) {
            spans[k - 1].len += (size_t)r->len;
        } else if (k == max) {
            rc = -EAGAIN;
        } else {
            spans[k++] = (ck_fd_span){ .fd = fd, .file = c->file, .off = foff,
                                       .len = (size_t)r->len };
        }
        at += r->len;
    }
    /* the files must still be the ones this state pinned; after the reply
     * went, a rewrite in place is the reader's race, as with any file */
    for (size_t i = 0; !rc && i < k; i++) {
        uint64_t fsize;
        if (ck_file_check(ck, spans[i].file) != 0 || ck_file_size(ck, spans[i].file, &fsize) != 0 ||
            spans[i].off + spans[i].len > fsize)
            rc = -EAGAIN; /* the memory path reports it as it does */
    }
    if (rc)
        return rc == -EAGAIN || rc == -ENOMEM ? rc : -EAGAIN;
    *nspans = k;
    *got = (size_t)n;
    ck_readahead(ck, key, off, n);
    return 0;
}
