/* S3 storage backend; see storage_s3.h.
 *
 * Reads go through a block cache: an object is cut into CK_S3_BLOCK-sized
 * blocks; a read waits for the blocks it covers, and whichever blocks are
 * missing are fetched by ranged GETs (consecutive missing blocks in one
 * GET, CK_S3_MAX_RUN at most, so several run in parallel).  Reads led by
 * a load plan are prefetched by the planner (prefetch.c, s_prefetch); an
 * object read otherwise sequentially gets a window of blocks fetched ahead
 * that doubles up to RA_MAX_BLOCKS (bounded by a quarter of the memory
 * bound) and is refilled in batches; small probes (archive headers) do not
 * disturb it.  A block a sequential
 * reader has read past is freed at once; others are evicted least
 * recently used first once the bytes pass the bound.  One mutex guards
 * the block states; it is never held across I/O: GETs run on the pool's
 * thread, readers wait on a condition variable with a deadline. */
#include "storage_s3.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "s3_config.h"
#include "name_search.h"
#include "s3_http.h"
#include "s3_pool.h"
#include "s3_xml.h"

#define RA_MAX_BLOCKS 8u
#define POOL_CONNECTIONS 16u
/* A reader gives up on its blocks after this; the pool's own timeouts and
 * retry bound end every GET well before. */
#define WAIT_DEADLINE_S 240
#define LIST_BODY_MAX (8u << 20)
#define SPARE_MAX 64u
#define SMALL_READ 4096u
#define ERROR_BODY_MAX 4096

enum { B_FETCHING = 0, B_READY = 1, B_FAILED = 2 };

typedef struct s3_object s3_object;

typedef struct block {
    s3_object *obj;
    uint64_t index;
    uint8_t *data;
    size_t len;
    int state;
    int err;
    unsigned refs;   /* readers copying out of data */
    struct block *prev, *next; /* LRU, READY blocks only */
} block;

typedef struct {
    char *name;      /* relative to the prefix */
    ck_object_info info;
} listing_entry;

typedef struct {
    ck_storage base;
    ck_s3_client *client;
    ck_s3_pool *pool;
    char *bucket;
    char *prefix;    /* "" or "a/b/" */
    char *display;   /* "s3://bucket/a/b" for messages */
    listing_entry *entries; /* sorted by name */
    size_t nentries, cap;
    /* block cache */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t used, limit;
    block *lru_head, *lru_tail; /* head = most recent */
    /* full-size block buffers kept for reuse: a fresh 1 MiB malloc is a
     * fresh mmap whose every page faults in (a fifth of the daemon's time
     * on a streaming read) */
    void *spare[SPARE_MAX];
    unsigned nspare, spare_cap;
} s3_storage;

struct s3_object {
    ck_object base;
    s3_storage *s;
    char *key;       /* full key */
    char *url;
    char etag[128];
    ck_object_info info;
    uint64_t nblocks;
    block **blocks;  /* guarded by s->mu */
    uint64_t next_off; /* where a sequential reader would read next; mu */
    uint32_t window;   /* read-ahead blocks; mu */
    unsigned inflight; /* GETs not yet done; mu */
    atomic_int changed; /* 412 seen: every read fails */
    int planned;       /* reads of it are prefetched along load plans: no own read-ahead; mu */
};

typedef struct {
    ck_s3_get g;
    s3_object *obj;
    uint64_t first;
    uint32_t count;
} fetch;

/* ---- geometry ---- */

size_t ck_s3_runs(uint64_t first, const unsigned char *missing, size_t n, uint32_t max_run,
                  ck_s3_run *out, size_t cap)
{
    size_t nr = 0;
    for (size_t i = 0; i < n && nr < cap;) {
        if (!missing[i]) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && missing[j] && j - i < max_run)
            j++;
        out[nr].first = first + i;
        out[nr].count = (uint32_t)(j - i);
        nr++;
        i = j;
    }
    return nr;
}

/* ---- listing ---- */

static int add_entry(s3_storage *s, const char *name, const ck_object_info *info)
{
    if (s->nentries == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        listing_entry *e = realloc(s->entries, cap * sizeof *e);
        if (!e)
            return -ENOMEM;
        s->entries = e;
        s->cap = cap;
    }
    if (!(s->entries[s->nentries].name = strdup(name)))
        return -ENOMEM;
    s->entries[s->nentries].info = *info;
    s->nentries++;
    return 0;
}

static void info_from(ck_object_info *info, uint64_t size, const char *etag, const char *when)
{
    memset(info, 0, sizeof *info);
    info->size = size;
    snprintf(info->identity, sizeof info->identity, "%s", etag);
    int64_t sec;
    long nsec;
    if (when && ck_s3_parse_time(when, &sec, &nsec) == 0) {
        info->mtime.tv_sec = (time_t)sec;
        info->mtime.tv_nsec = nsec;
    }
}

static int on_list_entry(void *ctx, const ck_s3_list_entry *e)
{
    s3_storage *s = ctx;
    size_t pl = strlen(s->prefix);
    if (strncmp(e->key, s->prefix, pl) != 0 || !e->key[pl])
        return 0; /* the prefix's own "directory marker" */
    ck_object_info info;
    info_from(&info, e->size, e->etag, e->last_modified);
    return add_entry(s, e->key + pl, &info);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const listing_entry *)a)->name, ((const listing_entry *)b)->name);
}

static void refusal(s3_storage *s, const ck_s3_response *r, const char *what, char *err,
                    size_t errlen)
{
    char d[160];
    ck_s3_describe(r, d, sizeof d);
    if (r->status == 404 && strcmp(r->code, "NoSuchBucket") == 0)
        snprintf(err, errlen, "%s: bucket %s does not exist (%s)", s->display, s->bucket, d);
    else if (r->status == 403)
        snprintf(err, errlen, "%s: access denied: wrong or missing credentials? (%s)", s->display,
                 d);
    else
        snprintf(err, errlen, "%s: %s failed: %s", s->display, what, d);
}

static int status_errno(const ck_s3_response *r)
{
    if (r->curl != CURLE_OK)
        return -ETIMEDOUT;
    if (r->status == 404)
        return -ENOENT;
    if (r->status == 403)
        return -EACCES;
    return -EIO;
}

/* Every object directly beneath the prefix (ListObjectsV2, delimiter "/"). */
static int list_prefix(s3_storage *s, char *err, size_t errlen)
{
    char token[1024] = "";
    for (;;) {
        char query[2048];
        const char *pairs[] = { "list-type", "2", "prefix", s->prefix, "delimiter", "/",
                                token[0] ? "continuation-token" : NULL, token, NULL };
        int rc = ck_s3_query(pairs, query, sizeof query);
        if (rc)
            return rc;
        ck_s3_response r;
        /* the bucket itself: key "" */
        rc = ck_s3_request(s->client, "GET", "", query, NULL, NULL, 0, LIST_BODY_MAX, &r);
        if (rc || r.status != 200) {
            refusal(s, &r, "listing", err, errlen);
            int e = rc ? rc : status_errno(&r);
            ck_s3_response_free(&r);
            return e;
        }
        int truncated = 0;
        rc = r.body_truncated ? -EINVAL
                              : ck_s3_parse_list(r.body ? r.body : "", r.body_len, on_list_entry,
                                                 s, &truncated, token, sizeof token);
        ck_s3_response_free(&r);
        if (rc) {
            snprintf(err, errlen, "%s: listing: %s", s->display,
                     rc == -ENOMEM ? "out of memory" : "malformed ListObjectsV2 answer");
            return rc;
        }
        if (!truncated)
            break;
    }
    if (s->nentries > 1)
        qsort(s->entries, s->nentries, sizeof *s->entries, cmp_entry);
    return 0;
}

static const listing_entry *find_entry(const s3_storage *s, const char *name)
{
    return CK_NAME_FIND(s->entries, s->nentries, name, name);
}

/* HEAD of prefix + name: its size, ETag and mtime. */
static int head_object(s3_storage *s, const char *key, ck_object_info *info, ck_s3_response *r)
{
    int rc = ck_s3_request(s->client, "HEAD", key, NULL, NULL, NULL, 0, 0, r);
    if (rc)
        return rc;
    if (r->status != 200)
        return status_errno(r);
    if (!r->has_length || !r->etag[0])
        return -EIO;
    info_from(info, r->content_length, r->etag, r->last_modified);
    return 0;
}

/* ---- block cache ---- */

static void lru_unlink(s3_storage *s, block *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else if (s->lru_head == b)
        s->lru_head = b->next;
    if (b->next)
        b->next->prev = b->prev;
    else if (s->lru_tail == b)
        s->lru_tail = b->prev;
    b->prev = b->next = NULL;
}

static void lru_push(s3_storage *s, block *b)
{
    b->prev = NULL;
    b->next = s->lru_head;
    if (s->lru_head)
        s->lru_head->prev = b;
    s->lru_head = b;
    if (!s->lru_tail)
        s->lru_tail = b;
}

static void block_drop(s3_storage *s, block *b)
{
    if (b->state == B_READY)
        lru_unlink(s, b);
    if (b->obj->blocks[b->index] == b)
        b->obj->blocks[b->index] = NULL;
    s->used -= b->len;
    if (b->len == CK_S3_BLOCK && s->nspare < s->spare_cap)
        s->spare[s->nspare++] = b->data;
    else
        free(b->data);
    free(b);
}

/* Under s->mu: a failed block keeps its place (readers waiting for it
 * see the error) but not its memory. */
static void block_fail(s3_storage *s, block *b, int err)
{
    b->state = B_FAILED;
    b->err = err;
    s->used -= b->len;
    if (b->len == CK_S3_BLOCK && s->nspare < s->spare_cap)
        s->spare[s->nspare++] = b->data;
    else
        free(b->data);
    b->data = NULL;
    b->len = 0;
}

/* Under s->mu: a buffer for a block of len bytes. */
static uint8_t *block_buffer(s3_storage *s, uint64_t len)
{
    if (len == CK_S3_BLOCK && s->nspare)
        return s->spare[--s->nspare];
    return malloc(len);
}

/* Frees least recently used blocks nobody is reading until under target. */
static void evict_to(s3_storage *s, uint64_t target)
{
    block *b = s->lru_tail;
    while (b && s->used > target) {
        block *prev = b->prev;
        if (!b->refs)
            block_drop(s, b);
        b = prev;
    }
}

static void evict(s3_storage *s)
{
    evict_to(s, s->limit);
}

static void fetch_sink(void *ctx, uint64_t pos, const void *p, size_t n)
{
    fetch *f = ctx;
    const uint8_t *src = p;
    while (n) {
        uint64_t bi = pos / CK_S3_BLOCK, bo = pos % CK_S3_BLOCK;
        block *b = f->obj->blocks[f->first + bi]; /* FETCHING blocks stay put */
        size_t take = b->len - bo < n ? (size_t)(b->len - bo) : n;
        memcpy(b->data + bo, src, take);
        src += take;
        pos += take;
        n -= take;
    }
}

static void fetch_done(ck_s3_get *g, int rc)
{
    fetch *f = (fetch *)g;
    s3_object *o = f->obj;
    s3_storage *s = o->s;
    if (rc) {
        char d[160];
        ck_s3_response r = { .status = g->status, .curl = g->curl };
        snprintf(r.code, sizeof r.code, "%s", g->code);
        ck_s3_describe(&r, d, sizeof d);
        if (g->status == 412) {
            if (!atomic_exchange(&o->changed, 1))
                fprintf(stderr,
                        "ckptfs: s3://%s/%s: the object changed since mount (%s); its keys "
                        "read as EIO\n", s->bucket, o->key, d);
        } else {
            fprintf(stderr, "ckptfs: s3://%s/%s: bytes %" PRIu64 "-%" PRIu64 ": %s after %u tries\n",
                    s->bucket, o->key, g->off, g->off + g->len - 1, d, g->tries);
        }
    }
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < f->count; i++) {
        block *b = o->blocks[f->first + i];
        if (rc) {
            block_fail(s, b, g->status == 412 ? -EIO : rc);
        } else {
            b->state = B_READY;
            lru_push(s, b);
        }
    }
    o->inflight--;
    evict(s);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    free(f);
}

/* Under s->mu: starts GETs for the missing blocks of [first, first + n).
 * Read-ahead (ahead) makes room by evicting the least recently used
 * blocks (stale read-ahead first: blocks a sequential reader is done with
 * are freed at once) and stops where it cannot. */
static void schedule(s3_object *o, uint64_t first, uint64_t n, int ahead)
{
    s3_storage *s = o->s;
    while (n) {
        uint64_t span = n < 64 ? n : 64;
        unsigned char missing[64];
        for (uint64_t i = 0; i < span; i++) {
            block *b = o->blocks[first + i];
            if (b && b->state == B_FAILED && !b->refs) {
                block_drop(s, b); /* an earlier failure: try again */
                b = NULL;
            }
            missing[i] = b == NULL;
        }
        ck_s3_run runs[64];
        size_t nr = ck_s3_runs(first, missing, (size_t)span, CK_S3_MAX_RUN, runs, 64);
        for (size_t r = 0; r < nr; r++) {
            fetch *f = calloc(1, sizeof *f);
            if (!f)
                return;
            uint32_t made = 0;
            for (; made < runs[r].count; made++) {
                uint64_t bi = runs[r].first + made;
                uint64_t boff = bi * CK_S3_BLOCK;
                uint64_t blen = o->info.size - boff < CK_S3_BLOCK ? o->info.size - boff : CK_S3_BLOCK;
                if (ahead && s->used + blen > s->limit) {
                    evict_to(s, s->limit - blen);
                    if (s->used + blen > s->limit)
                        break;
                }
                block *b = calloc(1, sizeof *b);
                if (!b || !(b->data = block_buffer(s, blen))) {
                    free(b);
                    break;
                }
                b->obj = o;
                b->index = bi;
                b->len = (size_t)blen;
                b->state = B_FETCHING;
                o->blocks[bi] = b;
                s->used += blen;
            }
            if (!made) {
                free(f);
                return; /* out of memory: the waiter finds the block missing */
            }
            f->obj = o;
            f->first = runs[r].first;
            f->count = made;
            f->g.url = o->url;
            f->g.if_match = o->etag[0] ? o->etag : NULL;
            f->g.off = runs[r].first * CK_S3_BLOCK;
            uint64_t end = (runs[r].first + made) * CK_S3_BLOCK;
            f->g.len = (end > o->info.size ? o->info.size : end) - f->g.off;
            f->g.sink = fetch_sink;
            f->g.done = fetch_done;
            f->g.ctx = f;
            if (ck_s3_pool_submit(s->pool, &f->g)) {
                /* no I/O thread: these blocks fail now, and are tried again
                 * by the next read that needs them */
                for (uint32_t i = 0; i < made; i++)
                    block_fail(s, o->blocks[f->first + i], -ETIMEDOUT);
                pthread_cond_broadcast(&s->cv);
                free(f);
                continue;
            }
            o->inflight++;
        }
        first += span;
        n -= span;
    }
}

static int s_read(ck_object *obj, uint64_t off, void *buf, size_t n)
{
    s3_object *o = (s3_object *)obj;
    s3_storage *s = o->s;
    uint64_t end;
    if (__builtin_add_overflow(off, (uint64_t)n, &end) || end > o->info.size)
        return -EIO;
    if (n == 0)
        return 0;
    if (atomic_load(&o->changed))
        return -EIO;
    uint64_t first = off / CK_S3_BLOCK, last = (end - 1) / CK_S3_BLOCK;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_DEADLINE_S;
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    /* sequential (allowing for a little reordering by parallel readers):
     * widen the read-ahead window; else start over */
    uint64_t gap = off > o->next_off ? off - o->next_off : o->next_off - off;
    if (n < SMALL_READ) {
        /* header probes (archive directories, data.pkl) between the runs
         * of a stream: they neither start nor end its read-ahead */
    } else if (o->planned) {
        o->window = 0;
    } else if (o->next_off && gap <= 2 * (uint64_t)CK_S3_BLOCK) {
        uint32_t w = o->window ? o->window * 2 : 2;
        uint64_t cap = s->limit / 4 / CK_S3_BLOCK;
        if (w > RA_MAX_BLOCKS)
            w = RA_MAX_BLOCKS;
        if (w > cap)
            w = (uint32_t)cap;
        o->window = w;
    } else {
        o->window = 0;
    }
    if (n >= SMALL_READ && (end > o->next_off || !gap || gap > 2 * (uint64_t)CK_S3_BLOCK))
        o->next_off = end;
    uint64_t want_end = last + 1 + o->window;
    if (want_end > o->nblocks)
        want_end = o->nblocks;
    schedule(o, first, last + 1 - first, 0);
    /* Read ahead in batches: only once fewer than half the window's blocks
     * are already there or on their way, so that read-ahead GETs come in
     * runs of CK_S3_MAX_RUN blocks rather than one block per read. */
    uint64_t have = 0;
    while (last + 1 + have < want_end && o->blocks[last + 1 + have])
        have++;
    if (want_end > last + 1 && have < (want_end - last - 1 + 1) / 2)
        schedule(o, last + 1 + have, want_end - last - 1 - have, 1);
    for (uint64_t i = first; !rc && i <= last; i++) {
        block *b;
        while ((b = o->blocks[i]) && b->state == B_FETCHING) {
            if (pthread_cond_timedwait(&s->cv, &s->mu, &deadline) == ETIMEDOUT) {
                rc = -ETIMEDOUT;
                break;
            }
        }
        if (rc)
            break;
        if (!b) {
            /* evicted or dropped while we waited (or not allocated): again */
            schedule(o, i, 1, 0);
            if (!o->blocks[i])
                rc = -ENOMEM;
            i--;
            continue;
        }
        if (b->state == B_FAILED)
            rc = b->err;
        else
            b->refs++;
    }
    if (rc) {
        /* release what was pinned before the failure */
        for (uint64_t i = first; i <= last; i++) {
            block *b = o->blocks[i];
            if (!b || b->state != B_READY)
                break;
            b->refs--;
        }
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    pthread_mutex_unlock(&s->mu);

    /* pinned blocks are neither evicted nor changed: copy without the lock */
    uint8_t *dst = buf;
    for (uint64_t i = first; i <= last; i++) {
        block *b = o->blocks[i];
        uint64_t bstart = i * CK_S3_BLOCK;
        uint64_t from = off > bstart ? off - bstart : 0;
        uint64_t to = end - bstart < b->len ? end - bstart : b->len;
        memcpy(dst, b->data + from, (size_t)(to - from));
        dst += to - from;
    }

    pthread_mutex_lock(&s->mu);
    for (uint64_t i = first; i <= last; i++) {
        block *b = o->blocks[i];
        b->refs--;
        /* A sequential reader that read past a block's end will not want it
         * again (the kernel caches what it handed out): its buffer serves the
         * read-ahead instead of growing the cache.  Other blocks stay, most
         * recent first. */
        if (o->window && i * (uint64_t)CK_S3_BLOCK + b->len <= end && !b->refs) {
            block_drop(s, b);
            continue;
        }
        lru_unlink(s, b);
        lru_push(s, b);
    }
    evict(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void s_prefetch(ck_object *obj, uint64_t off, uint64_t len)
{
    s3_object *o = (s3_object *)obj;
    s3_storage *s = o->s;
    if (!len || off >= o->info.size || atomic_load(&o->changed))
        return;
    if (len > o->info.size - off)
        len = o->info.size - off;
    uint64_t first = off / CK_S3_BLOCK, last = (off + len - 1) / CK_S3_BLOCK;
    pthread_mutex_lock(&s->mu);
    /* the caller knows what comes next (prefetch.c): guessing from this
     * object's own order would fetch the neighbouring items too */
    o->planned = 1;
    o->window = 0;
    schedule(o, first, last + 1 - first, 1);
    pthread_mutex_unlock(&s->mu);
}

/* ---- objects ---- */

static int s_open(ck_storage *st, const char *name, ck_object **out)
{
    s3_storage *s = (s3_storage *)st;
    ck_object_info info;
    size_t kl = strlen(s->prefix) + strlen(name) + 1;
    char *key = malloc(kl);
    if (!key)
        return -ENOMEM;
    snprintf(key, kl, "%s%s", s->prefix, name);
    const listing_entry *e = find_entry(s, name);
    if (e) {
        info = e->info;
    } else {
        /* not directly beneath the prefix (a nested storage path), or
         * written since the listing */
        ck_s3_response r;
        int rc = head_object(s, key, &info, &r);
        ck_s3_response_free(&r);
        if (rc) {
            free(key);
            return rc;
        }
    }
    s3_object *o = calloc(1, sizeof *o);
    char url[4096];
    int rc = o ? ck_s3_url(s->client, key, NULL, url, sizeof url) : -ENOMEM;
    if (!rc && !(o->url = strdup(url)))
        rc = -ENOMEM;
    if (!rc) {
        o->nblocks = (info.size + CK_S3_BLOCK - 1) / CK_S3_BLOCK;
        if (!(o->blocks = calloc(o->nblocks ? o->nblocks : 1, sizeof *o->blocks)))
            rc = -ENOMEM;
    }
    if (rc) {
        if (o) {
            free(o->url);
            free(o);
        }
        free(key);
        return rc;
    }
    o->base.st = st;
    o->s = s;
    o->key = key;
    o->info = info;
    snprintf(o->etag, sizeof o->etag, "%s", info.identity);
    atomic_init(&o->changed, 0);
    *out = &o->base;
    return 0;
}

static int s_info(ck_object *obj, ck_object_info *info)
{
    *info = ((s3_object *)obj)->info;
    return 0;
}

static int s_fd(const ck_object *obj)
{
    return -1;
}

static void s_close(ck_object *obj)
{
    s3_object *o = (s3_object *)obj;
    s3_storage *s = o->s;
    pthread_mutex_lock(&s->mu);
    while (o->inflight)
        pthread_cond_wait(&s->cv, &s->mu);
    for (uint64_t i = 0; i < o->nblocks; i++)
        if (o->blocks[i])
            block_drop(s, o->blocks[i]);
    pthread_mutex_unlock(&s->mu);
    free(o->blocks);
    free(o->url);
    free(o->key);
    free(o);
}

static int s_list(ck_storage *st, ck_storage_list_fn fn, void *ctx)
{
    s3_storage *s = (s3_storage *)st;
    for (size_t i = 0; i < s->nentries; i++) {
        int rc = fn(ctx, s->entries[i].name, &s->entries[i].info);
        if (rc)
            return rc;
    }
    return 0;
}

static void s_destroy(ck_storage *st)
{
    s3_storage *s = (s3_storage *)st;
    ck_s3_pool_free(s->pool);
    ck_s3_client_free(s->client);
    for (size_t i = 0; i < s->nentries; i++)
        free(s->entries[i].name);
    free(s->entries);
    for (unsigned i = 0; i < s->nspare; i++)
        free(s->spare[i]);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->bucket);
    free(s->prefix);
    free(s->display);
    free(s);
}

/* ---- writes ----
 * A new object is buffered up to PART_BYTES and then sent as a multipart
 * upload, part by part, so memory stays bounded whatever its size; a small
 * one is a single PUT with If-None-Match: * (never over an existing
 * object).  Replacement is a conditional PUT: If-Match on the ETag the
 * caller read, or If-None-Match: * for a new one; 412 means another writer
 * got there first (-EAGAIN) and nothing was overwritten. */

#define PART_BYTES (8u << 20)
#define MAX_PARTS 10000u

typedef struct {
    ck_object_writer base;
    s3_storage *s;
    char *key;
    uint8_t *buf;
    size_t used;
    char upload_id[512];
    char (*etags)[128];
    unsigned nparts;
} s3_writer;

static int full_key(s3_storage *s, const char *name, char **out)
{
    size_t kl = strlen(s->prefix) + strlen(name) + 1;
    if (!(*out = malloc(kl)))
        return -ENOMEM;
    snprintf(*out, kl, "%s%s", s->prefix, name);
    return 0;
}

static int answer_errno(const ck_s3_response *r, int rc, long ok1, long ok2)
{
    if (rc)
        return rc;
    if (r->status == ok1 || r->status == ok2)
        return 0;
    if (r->status == 412)
        return -EAGAIN;
    return status_errno(r);
}

static void log_write_failure(s3_storage *s, const char *what, const char *key,
                              const ck_s3_response *r)
{
    char d[160];
    ck_s3_describe(r, d, sizeof d);
    fprintf(stderr, "ckptfs: s3://%s/%s: %s failed: %s\n", s->bucket, key, what, d);
}

static int s_create(ck_storage *st, const char *name, ck_object_writer **out)
{
    s3_storage *s = (s3_storage *)st;
    s3_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->base.st = st;
    w->s = s;
    if (full_key(s, name, &w->key) || !(w->buf = malloc(PART_BYTES))) {
        free(w->key);
        free(w);
        return -ENOMEM;
    }
    *out = &w->base;
    return 0;
}

static int send_part(s3_writer *w)
{
    ck_s3_response r;
    int rc;
    if (!w->upload_id[0]) {
        const char *pairs[] = { "uploads", NULL, NULL };
        char q[64];
        ck_s3_query(pairs, q, sizeof q);
        rc = ck_s3_request(w->s->client, "POST", w->key, q, NULL, NULL, 0, ERROR_BODY_MAX, &r);
        rc = answer_errno(&r, rc, 200, 200);
        if (!rc && ck_xml_get(r.body ? r.body : "", r.body_len, "UploadId", w->upload_id,
                              sizeof w->upload_id) != 1)
            rc = -EIO;
        if (rc)
            log_write_failure(w->s, "starting a multipart upload", w->key, &r);
        ck_s3_response_free(&r);
        if (rc)
            return rc;
    }
    if (w->nparts >= MAX_PARTS)
        return -EFBIG;
    char (*e)[128] = realloc(w->etags, (w->nparts + 1) * sizeof *e);
    if (!e)
        return -ENOMEM;
    w->etags = e;
    char num[16], q[1024];
    snprintf(num, sizeof num, "%u", w->nparts + 1);
    const char *pairs[] = { "partNumber", num, "uploadId", w->upload_id, NULL };
    rc = ck_s3_query(pairs, q, sizeof q);
    if (rc)
        return rc;
    rc = ck_s3_request(w->s->client, "PUT", w->key, q, NULL, w->buf, w->used, ERROR_BODY_MAX, &r);
    rc = answer_errno(&r, rc, 200, 200);
    if (!rc && !r.etag[0])
        rc = -EIO;
    if (rc)
        log_write_failure(w->s, "uploading a part", w->key, &r);
    else
        snprintf(w->etags[w->nparts++], 128, "%s", r.etag);
    ck_s3_response_free(&r);
    w->used = 0;
    return rc;
}

static int s_append(ck_object_writer *wr, const void *buf, size_t n)
{
    s3_writer *w = (s3_writer *)wr;
    const uint8_t *p = buf;
    while (n) {
        size_t take = PART_BYTES - w->used < n ? PART_BYTES - w->used : n;
        memcpy(w->buf + w->used, p, take);
        w->used += take;
        p += take;
        n -= take;
        if (w->used == PART_BYTES) {
            int rc = send_part(w);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static void writer_free(s3_writer *w)
{
    free(w->buf);
    free(w->etags);
    free(w->key);
    free(w);
}

static void abort_upload(s3_writer *w)
{
    if (!w->upload_id[0])
        return;
    char q[1024];
    const char *pairs[] = { "uploadId", w->upload_id, NULL };
    ck_s3_response r;
    if (!ck_s3_query(pairs, q, sizeof q))
        ck_s3_request(w->s->client, "DELETE", w->key, q, NULL, NULL, 0, 0, &r);
    ck_s3_response_free(&r);
}

static int s_finish(ck_object_writer *wr)
{
    s3_writer *w = (s3_writer *)wr;
    ck_s3_response r;
    int rc;
    if (!w->upload_id[0]) {
        const char *hdr[] = { "If-None-Match: *", NULL };
        rc = ck_s3_request(w->s->client, "PUT", w->key, NULL, hdr, w->buf, w->used,
                           ERROR_BODY_MAX, &r);
        rc = answer_errno(&r, rc, 200, 200);
        if (rc == -EAGAIN)
            rc = -EEXIST;
        if (rc)
            log_write_failure(w->s, "PUT", w->key, &r);
        ck_s3_response_free(&r);
        writer_free(w);
        return rc;
    }
    rc = w->used ? send_part(w) : 0;
    size_t cap = (size_t)w->nparts * 200 + 128;
    char *xml = rc ? NULL : malloc(cap);
    if (!rc && !xml)
        rc = -ENOMEM;
    if (!rc) {
        size_t n = (size_t)snprintf(xml, cap, "<CompleteMultipartUpload>");
        for (unsigned i = 0; i < w->nparts; i++)
            n += (size_t)snprintf(xml + n, cap - n, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>",
                                  i + 1, w->etags[i]);
        n += (size_t)snprintf(xml + n, cap - n, "</CompleteMultipartUpload>");
        char q[1024];
        const char *pairs[] = { "uploadId", w->upload_id, NULL };
        rc = ck_s3_query(pairs, q, sizeof q);
        if (!rc) {
            rc = ck_s3_request(w->s->client, "POST", w->key, q, NULL, xml, n, ERROR_BODY_MAX, &r);
            /* an error can come inside a 200 answer */
            rc = answer_errno(&r, rc, 200, 200);
            if (!rc && r.body && ck_xml_find(r.body, r.body_len, "Error", &(const char *){ 0 },
                                             &(size_t){ 0 }))
                rc = -EIO;
            if (rc)
                log_write_failure(w->s, "completing a multipart upload", w->key, &r);
            ck_s3_response_free(&r);
        }
    }
    free(xml);
    if (rc)
        abort_upload(w);
    writer_free(w);
    return rc;
}

static void s_abort(ck_object_writer *wr)
{
    s3_writer *w = (s3_writer *)wr;
    abort_upload(w);
    writer_free(w);
}

/* RGW 16 compares If-Match with the ETag without its quotes; AWS accepts
 * either form. */
static void unquoted(const char *etag, char *out, size_t cap)
{
    size_t n = strlen(etag);
    if (n >= 2 && etag[0] == '"' && etag[n - 1] == '"')
        snprintf(out, cap, "%.*s", (int)(n - 2), etag + 1);
    else
        snprintf(out, cap, "%s", etag);
}

static int s_replace(ck_storage *st, const char *name, const void *buf, size_t n,
                     const char *expect_identity)
{
    s3_storage *s = (s3_storage *)st;
    char *key;
    if (full_key(s, name, &key))
        return -ENOMEM;
    char cond[200], tag[150];
    if (expect_identity) {
        unquoted(expect_identity, tag, sizeof tag);
        snprintf(cond, sizeof cond, "If-Match: %s", tag);
    } else {
        snprintf(cond, sizeof cond, "If-None-Match: *");
    }
    const char *hdr[] = { cond, NULL };
    ck_s3_response r;
    int rc = ck_s3_request(s->client, "PUT", key, NULL, hdr, buf, n, ERROR_BODY_MAX, &r);
    rc = answer_errno(&r, rc, 200, 200);
    if (rc == -EAGAIN)
        fprintf(stderr, "ckptfs: s3://%s/%s: changed by another writer since it was read "
                "(HTTP 412): not replaced\n", s->bucket, key);
    else if (rc)
        log_write_failure(s, "PUT", key, &r);
    ck_s3_response_free(&r);
    free(key);
    return rc;
}

static int s_remove(ck_storage *st, const char *name)
{
    s3_storage *s = (s3_storage *)st;
    char *key;
    if (full_key(s, name, &key))
        return -ENOMEM;
    ck_s3_response r;
    int rc = ck_s3_request(s->client, "DELETE", key, NULL, NULL, NULL, 0, ERROR_BODY_MAX, &r);
    rc = answer_errno(&r, rc, 204, 200);
    ck_s3_response_free(&r);
    free(key);
    return rc;
}

static const ck_storage_ops s3_ops = {
    .open = s_open,
    .info = s_info,
    .read = s_read,
    .fd = s_fd,
    .close = s_close,
    .list = s_list,
    .create = s_create,
    .append = s_append,
    .finish = s_finish,
    .abort = s_abort,
    .replace = s_replace,
    .remove = s_remove,
    .destroy = s_destroy,
    .prefetch = s_prefetch,
};

static const char *real_getenv(void *ctx, const char *name)
{
    return getenv(name);
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

int ck_storage_s3_for_source(const char *source, const ck_storage_opts *opts, ck_storage **out,
                             char **leaf, struct timespec *mtime, char *err, size_t errlen)
{
    char *bucket, *key;
    int rc = ck_s3_parse_source(source, &bucket, &key, err, errlen);
    if (rc)
        return rc;
    ck_s3_config cfg;
    char why[384] = "";
    rc = ck_s3_config_resolve(opts, real_getenv, NULL, &cfg, why, sizeof why);
    if (rc) {
        snprintf(err, errlen, "%s: %s", source, why[0] ? why : strerror(-rc));
        free(bucket);
        free(key);
        return rc;
    }
    s3_storage *s = calloc(1, sizeof *s);
    if (!s) {
        ck_s3_config_free(&cfg);
        free(bucket);
        free(key);
        return -ENOMEM;
    }
    s->base.ops = &s3_ops;
    s->bucket = bucket;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->limit = opts && opts->cache_bytes ? opts->cache_bytes : (256ull << 20);
    if (s->limit < 4ull * CK_S3_BLOCK)
        s->limit = 4ull * CK_S3_BLOCK; /* a read must fit, with a little read-ahead */
    s->spare_cap = s->limit / CK_S3_BLOCK / 4 < SPARE_MAX ? (unsigned)(s->limit / CK_S3_BLOCK / 4)
                                                          : SPARE_MAX;
    size_t dl = strlen(bucket) + strlen(key) + 8;
    s->display = malloc(dl);
    if (s->display)
        snprintf(s->display, dl, "s3://%s%s%s", bucket, key[0] ? "/" : "", key);
    rc = s->display ? ck_s3_client_new(&cfg, bucket, &s->client) : -ENOMEM;
    ck_s3_config_free(&cfg);
    if (!rc)
        rc = ck_s3_pool_new(s->client, POOL_CONNECTIONS, &s->pool);
    if (rc) {
        snprintf(err, errlen, "%s: %s", source, strerror(-rc));
        free(key);
        s_destroy(&s->base);
        return rc;
    }

    /* One .safetensors object, or a prefix? */
    if (has_suffix(key, ".safetensors")) {
        ck_object_info info;
        ck_s3_response r;
        rc = head_object(s, key, &info, &r);
        if (rc == 0) {
            char *slash = strrchr(key, '/');
            const char *name = slash ? slash + 1 : key;
            s->prefix = strndup(key, slash ? (size_t)(slash - key + 1) : 0);
            *leaf = strdup(name);
            if (!s->prefix || !*leaf || add_entry(s, name, &info))
                rc = -ENOMEM;
            *mtime = info.mtime;
        } else if (r.status != 404 || strcmp(r.code, "NoSuchBucket") == 0) {
            refusal(s, &r, "HEAD", err, errlen);
        } else {
            rc = 1; /* no such object: maybe a prefix named *.safetensors */
        }
        ck_s3_response_free(&r);
        if (rc < 0) {
            free(*leaf);
            *leaf = NULL;
            free(key);
            s_destroy(&s->base);
            return rc;
        }
        if (rc == 0) {
            free(key);
            *out = &s->base;
            return 0;
        }
    }
    size_t pl = strlen(key);
    s->prefix = malloc(pl + 2);
    if (!s->prefix) {
        free(key);
        s_destroy(&s->base);
        return -ENOMEM;
    }
    snprintf(s->prefix, pl + 2, "%s%s", key, pl ? "/" : "");
    free(key);
    rc = list_prefix(s, err, errlen);
    if (!rc && s->nentries == 0 && !(opts && opts->allow_empty)) {
        snprintf(err, errlen, "%s: no objects under this prefix (HTTP 200, empty listing)",
                 s->display);
        rc = -ENOENT;
    }
    if (rc) {
        s_destroy(&s->base);
        return rc;
    }
    /* SOURCE's own mtime: its newest object (DCP uses .metadata's) */
    memset(mtime, 0, sizeof *mtime);
    for (size_t i = 0; i < s->nentries; i++) {
        const struct timespec *t = &s->entries[i].info.mtime;
        if (t->tv_sec > mtime->tv_sec || (t->tv_sec == mtime->tv_sec && t->tv_nsec > mtime->tv_nsec))
            *mtime = *t;
    }
    *out = &s->base;
    return 0;
}
