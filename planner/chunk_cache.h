/* Bounded LRU cache of decoded chunk images (zstd or strided items). */
#ifndef CKPT_CHUNK_CACHE_H
#define CKPT_CHUNK_CACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ck_cache ck_cache;
typedef struct ck_cache_entry ck_cache_entry;

int ck_cache_new(uint64_t max_bytes, ck_cache **out);
/* The bound given to ck_cache_new. */
uint64_t ck_cache_bound(const ck_cache *c);
void ck_cache_free(ck_cache *c);
/* Looks up id; on a hit returns a referenced entry (release it after use). */
ck_cache_entry *ck_cache_get(ck_cache *c, uint64_t id);
/* Looks up id for a reader that will decode it on a miss.  A hit returns a
 * referenced entry.  On a miss *loader is set to 1 and NULL returned: the
 * caller decodes and then must either ck_cache_put(id) or
 * ck_cache_abandon(id).  While one thread is loading id, others asking for
 * it wait here for its result (and load it themselves if it gave up), so
 * each chunk is decoded once; readers of other ids never wait. */
ck_cache_entry *ck_cache_get_or_load(ck_cache *c, uint64_t id, int *loader);
/* Ends a load begun by ck_cache_get_or_load without an entry (the decode
 * failed): its waiters wake and try for themselves. */
void ck_cache_abandon(ck_cache *c, uint64_t id);
/* Inserts data (ownership passes to the cache, freed with free()) and
 * returns a referenced entry.  If id is already present the given data is
 * freed and the existing entry returned.  Ends a load of id, if any.  The most recently used entry is
 * never evicted, so memory stays below the bound plus one entry. */
ck_cache_entry *ck_cache_put(ck_cache *c, uint64_t id, uint8_t *data, uint64_t len);
/* A buffer of an evicted entry, malloc'd, for the caller to fill and put
 * (or free): its capacity (*cap) is at least want and at most an eighth
 * more.  NULL when none fits.  The cache keeps two spares of 1 MiB and
 * more, up to half its bound beside it (in a sequential read: one chunk),
 * so that decoding chunk after chunk reuses memory already faulted in
 * instead of mapping fresh pages. */
uint8_t *ck_cache_take_buffer(ck_cache *c, size_t want, size_t *cap);
const uint8_t *ck_cache_entry_data(const ck_cache_entry *e, uint64_t *len);
void ck_cache_release(ck_cache *c, ck_cache_entry *e);

#endif
