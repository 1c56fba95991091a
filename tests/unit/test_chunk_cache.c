/* The decoded-chunk cache: LRU order, the byte bound, the oversized entry
 * kept while it is the most recent, entries outliving their eviction while
 * a reader still holds them, many ids (the hash table growing), and one
 * decode per id when threads miss it together. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "chunk_cache.h"

static uint8_t *block(size_t n, uint8_t fill)
{
    uint8_t *p = malloc(n);
    memset(p, fill, n);
    return p;
}

static int present(ck_cache *c, uint64_t id)
{
    ck_cache_entry *e = ck_cache_get(c, id);
    if (e)
        ck_cache_release(c, e);
    return e != NULL;
}

/* Threads that all want id 42: the one told to load decodes (slowly, and
 * the first time it gives up), the others must wait and get its entry. */
typedef struct {
    ck_cache *c;
    atomic_int decodes, abandons, got;
} race;

static void *racer(void *arg)
{
    race *r = arg;
    for (;;) {
        int loader;
        ck_cache_entry *e = ck_cache_get_or_load(r->c, 42, &loader);
        if (e) {
            uint64_t len;
            if (ck_cache_entry_data(e, &len)[0] == 42 && len == 64)
                atomic_fetch_add(&r->got, 1);
            ck_cache_release(r->c, e);
            return NULL;
        }
        if (!loader)
            return NULL;
        usleep(20000); /* the decode */
        if (atomic_fetch_add(&r->abandons, 1) == 0) {
            ck_cache_abandon(r->c, 42); /* the first decode fails */
            continue;
        }
        atomic_fetch_add(&r->decodes, 1);
        ck_cache_release(r->c, ck_cache_put(r->c, 42, block(64, 42), 64));
    }
}

static void test_single_flight(void)
{
    race r = { 0 };
    CHECK_EQ_INT(ck_cache_new(1 << 20, &r.c), 0);
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, racer, &r);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ_INT(atomic_load(&r.decodes), 1);
    CHECK_EQ_INT(atomic_load(&r.abandons), 2); /* one failed, one succeeded */
    CHECK_EQ_INT(atomic_load(&r.got), 8);
    ck_cache_free(r.c);
}

static void test_many_ids(void)
{
    ck_cache *c;
    CHECK_EQ_INT(ck_cache_new(100000 * 8, &c), 0);
    int all = 1;
    for (uint64_t i = 0; i < 100000; i++) {
        uint64_t id = (i % 1000) << 32 | (i / 1000);
        ck_cache_release(c, ck_cache_put(c, id, block(8, (uint8_t)i), 8));
    }
    for (uint64_t i = 0; i < 100000; i++) {
        uint64_t id = (i % 1000) << 32 | (i / 1000), len;
        ck_cache_entry *e = ck_cache_get(c, id);
        if (!e || ck_cache_entry_data(e, &len)[0] != (uint8_t)i)
            all = 0;
        if (e)
            ck_cache_release(c, e);
    }
    CHECK(all);
    CHECK(!present(c, 1000ull << 32));
    ck_cache_free(c);
}

/* Evicted buffers of 1 MiB and more come back through ck_cache_take_buffer
 * (the same memory, faulted in already), only when they fit what is asked
 * (no more than an eighth over), each once, and never one still read. */
static void test_spare_buffers(void)
{
    const size_t MB = 1u << 20;
    ck_cache *c;
    CHECK_EQ_INT(ck_cache_new(8 * MB, &c), 0);
    size_t cap = 0;
    CHECK(ck_cache_take_buffer(c, 2 * MB, &cap) == NULL); /* nothing evicted yet */
    uint8_t *first = block(2 * MB, 1);
    ck_cache_release(c, ck_cache_put(c, 1, first, 2 * MB));
    for (uint64_t id = 2; id <= 4; id++)
        ck_cache_release(c, ck_cache_put(c, id, block(2 * MB, (uint8_t)id), 2 * MB));
    CHECK(ck_cache_take_buffer(c, 2 * MB, &cap) == NULL); /* 8 MiB: all fit */

    /* a fifth evicts the first, whose buffer becomes a spare */
    ck_cache_release(c, ck_cache_put(c, 5, block(2 * MB, 5), 2 * MB));
    CHECK(!present(c, 1));
    CHECK(ck_cache_take_buffer(c, 4 * MB, &cap) == NULL);    /* too small */
    CHECK(ck_cache_take_buffer(c, MB, &cap) == NULL);        /* far too large */
    CHECK(ck_cache_take_buffer(c, MB / 2, &cap) == NULL);    /* small asks: malloc */
    uint8_t *again = ck_cache_take_buffer(c, 2 * MB - 4096, &cap);
    CHECK(again == first);
    CHECK(cap >= 2 * MB);
    CHECK(ck_cache_take_buffer(c, 2 * MB - 4096, &cap) == NULL); /* taken once */
    /* the taken buffer is the caller's to fill and put */
    memset(again, 6, 2 * MB);
    ck_cache_release(c, ck_cache_put(c, 6, again, 2 * MB));
    uint64_t len;
    ck_cache_entry *e = ck_cache_get(c, 6);
    CHECK(e && ck_cache_entry_data(e, &len)[2 * MB - 1] == 6);

    /* an entry evicted while held gives its buffer up only at its release */
    ck_cache_entry *held = ck_cache_get(c, 3);
    for (uint64_t id = 7; id <= 11; id++) /* 3 was touched last: four puts reach it */
        ck_cache_release(c, ck_cache_put(c, id, block(2 * MB, (uint8_t)id), 2 * MB));
    CHECK(!present(c, 3));
    uint8_t *spare;
    int saw_held = 0;
    while ((spare = ck_cache_take_buffer(c, 2 * MB, &cap)) != NULL) {
        saw_held |= spare == ck_cache_entry_data(held, &len);
        free(spare);
    }
    CHECK(!saw_held);
    const uint8_t *hd = ck_cache_entry_data(held, &len);
    CHECK(hd[0] == 3 && hd[2 * MB - 1] == 3);
    ck_cache_release(c, held);
    if (e)
        ck_cache_release(c, e);
    ck_cache_free(c); /* spares still kept are freed with the cache (ASan: no leak) */
}

int main(void)
{
    test_single_flight();
    test_many_ids();
    test_spare_buffers();

    ck_cache *c;
    CHECK_EQ_INT(ck_cache_new(300, &c), 0);
    for (uint64_t id = 1; id <= 3; id++)
        ck_cache_release(c, ck_cache_put(c, id, block(100, (uint8_t)id), 100));
    CHECK(present(c, 1) && present(c, 2) && present(c, 3));

    /* touching 1 makes 2 the least recently used */
    CHECK(present(c, 1));
    ck_cache_release(c, ck_cache_put(c, 4, block(100, 4), 100));
    CHECK(!present(c, 2));
    CHECK(present(c, 1) && present(c, 3) && present(c, 4));

    /* a held entry survives its eviction until released */
    ck_cache_entry *held = ck_cache_get(c, 3);
    ck_cache_release(c, ck_cache_put(c, 5, block(250, 5), 250));
    CHECK(!present(c, 3));
    uint64_t len;
    const uint8_t *d = ck_cache_entry_data(held, &len);
    CHECK(len == 100 && d[0] == 3 && d[99] == 3);
    ck_cache_release(c, held);

    /* an entry larger than the bound stays while it is the newest */
    ck_cache_release(c, ck_cache_put(c, 6, block(1000, 6), 1000));
    CHECK(present(c, 6));
    CHECK(!present(c, 5) && !present(c, 1) && !present(c, 4));
    ck_cache_release(c, ck_cache_put(c, 7, block(10, 7), 10));
    CHECK(!present(c, 6));
    CHECK(present(c, 7));

    /* a second put of a present id keeps the first data */
    ck_cache_entry *e = ck_cache_put(c, 7, block(10, 9), 10);
    d = ck_cache_entry_data(e, &len);
    CHECK(d[0] == 7);
    ck_cache_release(c, e);
    ck_cache_free(c);
    return check_done();
}
