/* LRU of decoded chunk images.  Entries are reference counted so a reader
 * can copy out of one while another thread evicts it from the index; ids
 * are found through a hash table (a checkpoint can have a million chunks
 * and a cache of thousands of small ones); and a chunk being decoded is
 * marked so that other readers of it wait for that one decode instead of
 * decoding it again, while readers of other chunks go on. */
#include "chunk_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct ck_cache_entry {
    uint64_t id;
    uint8_t *data;
    uint64_t len;
    int refs;
    int in_index;            /* still reachable through the list and table */
    ck_cache_entry *prev, *next; /* LRU list, most recent first */
    ck_cache_entry *hnext;       /* hash chain */
};

/* An id some thread is decoding: readers of it wait on the cache's cond. */
typedef struct loading {
    uint64_t id;
    struct loading *next;
} loading;

struct ck_cache {
    pthread_mutex_t lock;
    pthread_cond_t loaded; /* broadcast when a loading id is put or abandoned */
    uint64_t max_bytes, bytes;
    ck_cache_entry *head, *tail;
    ck_cache_entry **table;
    size_t nbuckets, nentries; /* nbuckets: a power of two */
    loading *loads;            /* few at once: one per decoding thread */
};

#define MIN_BUCKETS 64

static size_t bucket_of(const ck_cache *c, uint64_t id)
{
    /* Fibonacci hashing: ids are (key << 32 | chunk), mostly sequential */
    return (size_t)((id * 0x9e3779b97f4a7c15ull) >> 20) & (c->nbuckets - 1);
}

int ck_cache_new(uint64_t max_bytes, ck_cache **out)
{
    ck_cache *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->table = calloc(MIN_BUCKETS, sizeof *c->table);
    if (!c->table) {
        free(c);
        return -ENOMEM;
    }
    c->nbuckets = MIN_BUCKETS;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->loaded, NULL);
    c->max_bytes = max_bytes;
    *out = c;
    return 0;
}

static void entry_destroy(ck_cache_entry *e)
{
    free(e->data);
    free(e);
}

static ck_cache_entry *table_find(const ck_cache *c, uint64_t id)
{
    ck_cache_entry *e = c->table[bucket_of(c, id)];
    while (e && e->id != id)
        e = e->hnext;
    return e;
}

static void table_remove(ck_cache *c, ck_cache_entry *e)
{
    ck_cache_entry **p = &c->table[bucket_of(c, e->id)];
    while (*p && *p != e)
        p = &(*p)->hnext;
    if (*p)
        *p = e->hnext;
    e->hnext = NULL;
    c->nentries--;
}

/* Doubles the table when chains grow past two entries on average; a failed
 * allocation only leaves chains longer. */
static void table_grow(ck_cache *c)
{
    if (c->nentries <= 2 * c->nbuckets || c->nbuckets > SIZE_MAX / 2 / sizeof *c->table)
        return;
    size_t n = c->nbuckets * 2;
    ck_cache_entry **t = calloc(n, sizeof *t);
    if (!t)
        return;
    ck_cache_entry **old = c->table;
    size_t oldn = c->nbuckets;
    c->table = t;
    c->nbuckets = n;
    for (size_t b = 0; b < oldn; b++) {
        for (ck_cache_entry *e = old[b], *next; e; e = next) {
            next = e->hnext;
            size_t nb = bucket_of(c, e->id);
            e->hnext = t[nb];
            t[nb] = e;
        }
    }
    free(old);
}

static void table_insert(ck_cache *c, ck_cache_entry *e)
{
    size_t b = bucket_of(c, e->id);
    e->hnext = c->table[b];
    c->table[b] = e;
    c->nentries++;
    table_grow(c);
}

static void list_unlink(ck_cache *c, ck_cache_entry *e)
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
}

static void list_push_front(ck_cache *c, ck_cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Takes e out of the list and the table; its memory goes with its last
 * reference. */
static void drop_entry(ck_cache *c, ck_cache_entry *e)
{
    list_unlink(c, e);
    table_remove(c, e);
    e->in_index = 0;
    c->bytes -= e->len;
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
        drop_entry(c, e);
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
    while (c->loads) {
        loading *l = c->loads;
        c->loads = l->next;
        free(l);
    }
    free(c->table);
    pthread_cond_destroy(&c->loaded);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A hit, referenced and moved to the front; NULL on a miss.  Under lock. */
static ck_cache_entry *hit_locked(ck_cache *c, uint64_t id)
{
    ck_cache_entry *e = table_find(c, id);
    if (e) {
        e->refs++;
        list_unlink(c, e);
        list_push_front(c, e);
    }
    return e;
}

ck_cache_entry *ck_cache_get(ck_cache *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    ck_cache_entry *e = hit_locked(c, id);
    pthread_mutex_unlock(&c->lock);
    return e;
}

static loading **find_load(ck_cache *c, uint64_t id)
{
    loading **p = &c->loads;
    while (*p && (*p)->id != id)
        p = &(*p)->next;
    return p;
}

ck_cache_entry *ck_cache_get_or_load(ck_cache *c, uint64_t id, int *loader)
{
    *loader = 0;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        ck_cache_entry *e = hit_locked(c, id);
        if (e) {
            pthread_mutex_unlock(&c->lock);
            return e;
        }
        if (!*find_load(c, id))
            break;
        pthread_cond_wait(&c->loaded, &c->lock);
    }
    loading *l = malloc(sizeof *l);
    if (l) {
        /* without the mark the caller still decodes, only not alone */
        l->id = id;
        l->next = c->loads;
        c->loads = l;
    }
    pthread_mutex_unlock(&c->lock);
    *loader = 1;
    return NULL;
}

/* Under lock: ends the load of id, waking its waiters. */
static void end_load_locked(ck_cache *c, uint64_t id)
{
    loading **p = find_load(c, id);
    if (*p) {
        loading *l = *p;
        *p = l->next;
        free(l);
        pthread_cond_broadcast(&c->loaded);
    }
}

void ck_cache_abandon(ck_cache *c, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    end_load_locked(c, id);
    pthread_mutex_unlock(&c->lock);
}

ck_cache_entry *ck_cache_put(ck_cache *c, uint64_t id, uint8_t *data, uint64_t len)
{
    ck_cache_entry *n = calloc(1, sizeof *n);
    if (!n) {
        free(data);
        ck_cache_abandon(c, id);
        return NULL;
    }
    n->id = id;
    n->data = data;
    n->len = len;
    n->refs = 1;
    pthread_mutex_lock(&c->lock);
    end_load_locked(c, id);
    ck_cache_entry *e = table_find(c, id);
    if (e) {
        e->refs++;
        pthread_mutex_unlock(&c->lock);
        entry_destroy(n);
        return e;
    }
    list_push_front(c, n);
    table_insert(c, n);
    n->in_index = 1;
    c->bytes += n->len;
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
