/* From chunks to bytes.  A chunk is resolved once (its archive parsed) under
 * the checkpoint lock; afterwards readers go lock-free to pread (direct
 * chunks) or to the decoded-chunk cache (zstd or strided chunks). */
#include "chunk_reader.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "arena.h"
#include "chunk_cache.h"
#include "geometry.h"
#include "prefetch.h"
#include "zip_reader.h"
#include "zstd_stream.h"

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

/* Errors worth trying again later keep their code: out of memory, and an
 * object store that did not answer (storage.h); anything else is -EIO. */
static int keep_transient(int rc)
{
    return rc == -ENOMEM || rc == -ETIMEDOUT ? rc : -EIO;
}

/* A read that failed for now (the store did not answer): the key and file
 * are logged, the chunk is not marked failed. */
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
        return ck_zstd_decode(&src, max, out, out_len, why, whylen);
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
    uLong crc = crc32(0L, Z_NULL, 0);
    const uint8_t *p = item + m.data_offset;
    for (uint64_t left = m.size; left > 0;) {
        uInt n = left > (1u << 30) ? (1u << 30) : (uInt)left;
        crc = crc32(crc, p, n);
        p += n;
        left -= n;
    }
    if ((uint32_t)crc != m.crc32) {
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
        if (!c->layout.item && !(c->layout.item = ck_arena_alloc(ck->arena, sizeof(ck_torch_item)))) {
            free(item);
            return -ENOMEM;
        }
        int rc = ck_torch_item_parse(&src, c->layout.item, why, whylen);
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

static int resolve_locked(ck_checkpoint *ck, const ck_key *key, ck_chunk *c)
{
    char why[384] = "";
    int rc;
    if (c->transforms & CK_TF_UNKNOWN)
        return chunk_fail(ck, key, c, -EIO, "unknown storage transform");
    uint64_t fsize = 0, end;
    rc = ck_file_size(ck, c->file, &fsize);
    if (rc) {
        snprintf(why, sizeof why, "cannot open: %s", strerror(-rc));
        return chunk_fail(ck, key, c, keep_transient(rc), why);
    }
    if (__builtin_add_overflow(c->offset, c->length, &end) || fsize < end) {
        snprintf(why, sizeof why, "file ends at %" PRIu64 " before the item's end", fsize);
        return chunk_fail(ck, key, c, -EIO, why);
    }
    ck_chunk_layout *L = &c->layout;
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
        if (!rc)
            rc = cache_image_from_item(ck, key, c, item, item_len, why, sizeof why);
        if (rc)
            return chunk_fail(ck, key, c, keep_transient(rc),
                              why[0] ? why : "cannot decode item");
        L->direct = false;
        return 0;
    }
    ck_byte_source src;
    rc = ck_file_source(ck, c->file, c->offset, c->length, &src);
    if (rc)
        return chunk_fail(ck, key, c, -EIO, "cannot open");
    ck_torch_item it;
    rc = ck_torch_item_parse(&src, &it, why, sizeof why);
    if (!rc)
        rc = item_matches_chunk(key, c, &it, why, sizeof why);
    if (rc)
        return chunk_fail(ck, key, c, keep_transient(rc), why[0] ? why : "bad archive");
    L->nbytes = chunk_image_bytes(key, c);
    if (ck_torch_item_is_contiguous(&it)) {
        L->direct = true;
        L->file_offset = c->offset + it.data_offset + it.storage_offset * ck_dtype_get(key->dtype)->size;
        return 0;
    }
    L->direct = false;
    L->item = ck_arena_alloc(ck->arena, sizeof it); /* under ck->lock */
    if (!L->item)
        return -ENOMEM;
    *L->item = it;
    return 0;
}

int ck_chunk_resolve(ck_checkpoint *ck, const ck_key *key, ck_chunk *c)
{
    int st = atomic_load_explicit(&c->state, memory_order_acquire);
    if (st == 1)
        return 0;
    if (st < 0)
        return st;
    pthread_mutex_lock(&ck->lock);
    st = atomic_load(&c->state);
    if (st == 0) {
        int rc = resolve_locked(ck, key, c);
        if (rc == 0)
            atomic_store_explicit(&c->state, 1, memory_order_release);
        else if (rc == -ENOMEM || rc == -ETIMEDOUT)
            atomic_store(&c->state, 0); /* transient: try again later */
        st = rc ? rc : 1;
    }
    pthread_mutex_unlock(&ck->lock);
    return st == 1 ? 0 : st;
}

/* A decoded image may have been evicted since resolution: decode again. */
static int cached_image(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, ck_cache_entry **out)
{
    uint64_t id = cache_id(ck, key, c);
    ck_cache_entry *e = ck_cache_get(ck->cache, id);
    if (e) {
        *out = e;
        return 0;
    }
    char why[384] = "";
    uint8_t *item;
    uint64_t item_len;
    uint64_t expect = key->kind == CK_KEY_TENSOR ? c->layout.nbytes : c->length * 64;
    int rc = load_item(ck, key, c, expect, &item, &item_len, why, sizeof why);
    if (rc)
        return rc == -ENOMEM ? rc : -EIO;
    if (c->transforms && key->kind == CK_KEY_TENSOR && c->format == CK_ITEM_TORCH_SAVE &&
        check_data_crc(item, item_len, why, sizeof why)) {
        free(item);
        return -EIO; /* the file changed since the chunk was resolved */
    }
    uint8_t *img;
    uint64_t img_len, img_off;
    rc = image_from_item(key, c, item, item_len, &img, &img_len, &img_off);
    if (rc)
        return rc;
    item_len = img_len;
    e = ck_cache_put(ck->cache, id, img, item_len);
    if (!e)
        return -ENOMEM;
    *out = e;
    return 0;
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

/* Reads exactly len bytes at off; -EIO for an error or a short file,
 * -ETIMEDOUT when an object store did not answer (transient). */
static int pread_full(ck_checkpoint *ck, const ck_chunk *c, void *dst, size_t len, uint64_t off)
{
    return ck_file_pread(ck, c->file, dst, len, off);
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
        rc = pread_full(ck, c, dst, len, c->layout.file_offset + off);
        if (rc == -ETIMEDOUT)
            return chunk_unreachable(ck, key, c, rc);
        return rc == -EIO ? chunk_fail(ck, key, c, -EIO, "file shrank under the mount") : rc;
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

/* Coalescing: the reads one chunk contributes to a request are usually
 * rows lying close together in its image (a column-sharded tensor gives
 * one short run per row).  One pread of their whole span into a scratch
 * buffer, then scattering, beats a syscall per row.  Spans much larger
 * than the bytes wanted are not worth it. */
#define COALESCE_MAX_SPAN (8ull << 20)

static int cmp_read_by_chunk(const void *a, const void *b)
{
    const ck_read *x = *(const ck_read *const *)a, *y = *(const ck_read *const *)b;
    if (x->chunk != y->chunk)
        return x->chunk < y->chunk ? -1 : 1;
    return x->src_off < y->src_off ? -1 : x->src_off > y->src_off;
}


/* Executes reads[0..n) (all of one chunk, sorted by src_off) into dst,
 * whose byte 0 is tensor byte `base`. */
static int read_chunk_group(ck_checkpoint *ck, const ck_key *key, ck_read *const *reads, size_t n,
                            uint64_t base, uint8_t *dst, uint8_t **scratch, size_t *scratch_cap)
{
    ck_chunk *c = &key->chunks[reads[0]->chunk];
    int rc = ck_chunk_resolve(ck, key, c);
    if (rc)
        return rc;
    uint64_t lo = reads[0]->src_off, hi = 0, want = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = reads[i]->src_off + reads[i]->len;
        hi = e > hi ? e : hi;
        want += reads[i]->len;
    }
    if (hi > c->layout.nbytes)
        return -EIO;
    if (!c->layout.direct) {
        ck_cache_entry *e;
        const uint8_t *img;
        rc = cached_bytes(ck, key, c, hi, &e, &img);
        if (rc)
            return rc;
        for (size_t i = 0; i < n; i++)
            memcpy(dst + (reads[i]->dst_off - base), img + reads[i]->src_off, reads[i]->len);
        ck_cache_release(ck->cache, e);
        return 0;
    }
    uint64_t span = hi - lo;
    if (n > 1 && span <= COALESCE_MAX_SPAN && span <= 2 * want) {
        if (*scratch_cap < span) {
            uint8_t *s = realloc(*scratch, span);
            if (!s)
                return -ENOMEM;
            *scratch = s;
            *scratch_cap = span;
        }
        rc = pread_full(ck, c, *scratch, span, c->layout.file_offset + lo);
        for (size_t i = 0; !rc && i < n; i++)
            memcpy(dst + (reads[i]->dst_off - base), *scratch + (reads[i]->src_off - lo),
                   reads[i]->len);
    } else {
        for (size_t i = 0; !rc && i < n; i++)
            rc = pread_full(ck, c, dst + (reads[i]->dst_off - base), reads[i]->len,
                            c->layout.file_offset + reads[i]->src_off);
    }
    if (rc == -ETIMEDOUT)
        return chunk_unreachable(ck, key, c, rc);
    if (rc == -EIO)
        return chunk_fail(ck, key, c, -EIO, "file shrank under the mount");
    return rc;
}

int ck_execute_plan(ck_checkpoint *ck, const ck_key *key, const ck_read_vec *plan, uint64_t base,
                    void *dst)
{
    if (plan->n == 0)
        return 0;
    ck_read **order = malloc(plan->n * sizeof *order);
    if (!order)
        return -ENOMEM;
    for (size_t i = 0; i < plan->n; i++)
        order[i] = &plan->v[i];
    qsort(order, plan->n, sizeof *order, cmp_read_by_chunk);
    uint8_t *scratch = NULL;
    size_t scratch_cap = 0;
    int rc = 0;
    for (size_t i = 0; !rc && i < plan->n;) {
        size_t j = i + 1;
        while (j < plan->n && order[j]->chunk == order[i]->chunk)
            j++;
        rc = read_chunk_group(ck, key, order + i, j - i, base, dst, &scratch, &scratch_cap);
        i = j;
    }
    free(scratch);
    free(order);
    return rc;
}

int ck_key_read(ck_checkpoint *ck, const ck_key *key, uint64_t off, void *dst, size_t len,
                size_t *got)
{
    uint64_t size;
    *got = 0;
    if (key->error)
        return key->error;
    int rc = ck_key_size(ck, key, &size);
    if (rc)
        return rc;
    if (off >= size || len == 0)
        return 0;
    uint64_t n = size - off < len ? size - off : len;
    if (key->kind == CK_KEY_BYTES) {
        rc = ck_chunk_read(ck, key, &key->chunks[0], off, dst, (size_t)n);
        if (!rc)
            *got = (size_t)n;
        return rc;
    }
    ck_read_vec plan = { 0 };
    rc = ck_load_plan_for_range(key, off, n, &plan);
    if (!rc)
        rc = ck_execute_plan(ck, key, &plan, off, dst);
    if (!rc) /* after: the bytes asked for now are not queued behind it */
        ck_key_read_ahead(ck, key, off, n);
    ck_read_vec_free(&plan);
    if (!rc)
        *got = (size_t)n;
    return rc;
}
