/* LRU of decoded chunk images.  Entries are reference counted so a reader
 * can copy out of one while another thread evicts it from the index. */
#include "chunk_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct ck_cache_entry {
    uint64_t id;
    uint8_t *data;
    uint64_t len;
    int refs;
    int in_index;            /* still reachable through the list */
    ck_cache_entry *prev, *next; /* LRU list, most recent first */
};

struct ck_cache {
    pthread_mutex_t lock;
    uint64_t max_bytes, bytes;
    ck_cache_entry *head, *tail;
};

int ck_cache_new(uint64_t max_bytes, ck_cache **out)
{
    ck_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    c->max_bytes = max_bytes;
    *out = c;
    return 0;
}

static void entry_destroy(ck_cache_entry *e)
{
    free(e->data);
    free(e);
}

static void unlink_entry(ck_cache *c, ck_cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
    e->in_index = 0;
    c->bytes -= e->len;
}

static void push_front(ck_cache *c, ck_cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
    e->in_index = 1;
    c->bytes += e->len;
}

/* Drops least recently used entries until the bound holds; entries still
 * referenced are freed by their last release.  The most recent entry always
 * stays: a chunk larger than the bound would otherwise be decoded again for
 * every read of it (a sequential read of a 1 GiB zstd chunk in 256 KiB
 * requests would decode it 4096 times), so the cache may hold the bound
 * plus one chunk. */
static void evict(ck_cache *c)
{
    ck_cache_entry *e = c->tail;
    while (e && e != c->head && c->bytes > c->max_bytes) {
        ck_cache_entry *prev = e->prev;
        unlink_entry(c, e);
        if (e->refs == 0)
            entry_destroy(e);
        e = prev;
    }
}

void ck_cache_free(ck_cache *c)
{
    if (!c)
        return;
    ck_cache_entry *e = c->head;
    while (e) {
        ck_cache_entry *next = e->next;
        entry_destroy(e);
        e = next;
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

ck_cache_entry *ck_cache_get(ck_cache *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    ck_cache_entry *e = c->head;
    while (e && e->id != id)
        e = e->next;
    if (e) {
        e->refs++;
        unlink_entry(c, e);
        push_front(c, e);
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

ck_cache_entry *ck_cache_put(ck_cache *c, uint64_t id, uint8_t *data, uint64_t len)
{
    ck_cache_entry *n = calloc(1, sizeof *n);
    if (!n) {
        free(data);
        return NULL;
    }
    n->id = id;
    n->data = data;
    n->len = len;
    n->refs = 1;
    pthread_mutex_lock(&c->lock);
    for (ck_cache_entry *e = c->head; e; e = e->next) {
        if (e->id == id) {
            e->refs++;
            pthread_mutex_unlock(&c->lock);
            entry_destroy(n);
            return e;
        }
    }
    push_front(c, n);
    evict(c);
    pthread_mutex_unlock(&c->lock);
    return n;
}

const uint8_t *ck_cache_entry_data(const ck_cache_entry *e, uint64_t *len)
{
    *len = e->len;
    return e->data;
}

void ck_cache_release(ck_cache *c, ck_cache_entry *e)
{
    pthread_mutex_lock(&c->lock);
    int destroy = --e->refs == 0 && !e->in_index;
    pthread_mutex_unlock(&c->lock);
    if (destroy)
        entry_destroy(e);
}
