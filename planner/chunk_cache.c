/* LRU of decoded chunk images.  Entries are reference counted so a reader
 * can copy out of one while another thread evicts it from the index; ids
 * are found through a hash table (a checkpoint can have a million chunks
 * and a cache of thousands of small ones); and a chunk being decoded is
 * marked so that other readers of it wait for that one decode instead of
 * decoding it again, while readers of other chunks go on. */
#include "chunk_cache.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>

/* Buffers of evicted entries kept for reuse (see ck_cache_take_buffer):
 * a sequential read of zstd chunks evicts one large image per decode, and
 * a fresh buffer costs its page faults and the zeroing of every page --
 * in a VM whose host hands memory back lazily, a quarter of the daemon's
 * time.  Spares are kept up to half the bound. */
#define SPARE_SLOTS 2
#define SPARE_MIN (1u << 20) /* smaller buffers come cheap from malloc */

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
    uint8_t *spare[SPARE_SLOTS]; /* evicted buffers kept for the next decode */
    size_t spare_cap[SPARE_SLOTS];
    uint64_t spare_bytes;
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

uint64_t ck_cache_bound(const ck_cache *c)
{
    return c->max_bytes;
}

static void entry_destroy(ck_cache_entry *e)
{
    free(e->data);
    free(e);
}

/* Under lock: keeps e's buffer as a spare when it is large and the spares
 * have room; when both slots are taken the larger spare gives way (the new
 * one is the size decodes need now) and goes to *discard, to be freed
 * after the lock. */
static void keep_spare_locked(ck_cache *c, ck_cache_entry *e, uint8_t **discard)
{
    *discard = NULL;
    size_t cap = e->data ? malloc_usable_size(e->data) : 0;
    if (cap < SPARE_MIN || cap > c->max_bytes / 2)
        return;
    int slot = -1;
    for (int i = 0; i < SPARE_SLOTS && slot < 0; i++)
        if (!c->spare[i])
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < SPARE_SLOTS; i++)
            if (c->spare_cap[i] > c->spare_cap[slot])
                slot = i;
        *discard = c->spare[slot];
        c->spare_bytes -= c->spare_cap[slot];
        c->spare[slot] = NULL;
    }
    if (c->spare_bytes + cap > c->max_bytes / 2)
        return;
    c->spare[slot] = e->data;
    c->spare_cap[slot] = cap;
    c->spare_bytes += cap;
    e->data = NULL;
}

/* Destroys e outside the lock, its buffer kept as a spare if it can be. */
static void retire(ck_cache *c, ck_cache_entry *e)
{
    uint8_t *discard;
    pthread_mutex_lock(&c->lock);
    keep_spare_locked(c, e, &discard);
    pthread_mutex_unlock(&c->lock);
    free(discard);
    entry_destroy(e);
}

uint8_t *ck_cache_take_buffer(ck_cache *c, size_t want, size_t *cap)
{
    if (want < SPARE_MIN)
        return NULL;
    uint8_t *buf = NULL;
    pthread_mutex_lock(&c->lock);
    int best = -1;
    for (int i = 0; i < SPARE_SLOTS; i++)
        if (c->spare[i] && c->spare_cap[i] >= want && c->spare_cap[i] - want <= want / 8 &&
            (best < 0 || c->spare_cap[i] < c->spare_cap[best]))
            best = i;
    if (best >= 0) {
        buf = c->spare[best];
        *cap = c->spare_cap[best];
        c->spare[best] = NULL;
        c->spare_bytes -= c->spare_cap[best];
    }
    pthread_mutex_unlock(&c->lock);
    return buf;
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

/* Drops least recently used entries until the bound holds, returning those
 * no reader holds (linked through next) for retire(); entries still
 * referenced are retired by their last release.  The most recent entry always
 * stays: a chunk larger than the bound would otherwise be decoded again for
 * every read of it (a sequential read of a 1 GiB zstd chunk in 256 KiB
 * requests would decode it 4096 times), so the cache may hold the bound
 * plus one chunk. */
static ck_cache_entry *evict(ck_cache *c)
{
    ck_cache_entry *e = c->tail, *dead = NULL;
    while (e && e != c->head && c->bytes > c->max_bytes) {
        ck_cache_entry *prev = e->prev;
        drop_entry(c, e);
        if (e->refs == 0) {
            e->next = dead; /* destroyed after the lock (a large free is an munmap) */
            dead = e;
        }
        e = prev;
    }
    return dead;
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
    for (int i = 0; i < SPARE_SLOTS; i++)
        free(c->spare[i]);
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
    ck_cache_entry *dead = evict(c);
    pthread_mutex_unlock(&c->lock);
    while (dead) {
        ck_cache_entry *next = dead->next;
        retire(c, dead);
        dead = next;
    }
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
        retire(c, e);
}
