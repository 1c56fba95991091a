/* The decoded-chunk cache: LRU order, the byte bound, the oversized entry
 * kept while it is the most recent, and entries outliving their eviction
 * while a reader still holds them. */
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
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
