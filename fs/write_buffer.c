/* Write buffers (see write_buffer.h).  Pages live in a sorted array (writes
 * are mostly sequential, so inserts land at the end); the written ranges in
 * another.  The pool's spill file is one array of page-sized slots shared
 * by all buffers, handed out and taken back under the pool lock. */
#include "write_buffer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct fs_wbuf_pool {
    pthread_mutex_t lock;
    int dirfd;
    int spill_fd; /* -1 until the first spill */
    uint64_t mem_limit, mem_used;
    uint64_t *free_slots;
    size_t nfree, free_cap;
    uint64_t next_slot, slots_used;
};

typedef struct {
    uint64_t idx;  /* page number: bytes [idx * PAGE, +PAGE) */
    uint8_t *mem;  /* NULL when spilled */
    uint64_t slot; /* spill slot when mem is NULL */
} page;

struct fs_wbuf {
    fs_wbuf_pool *pool;
    page *pages;
    size_t npages, pcap;
    ck_byte_range *ranges;
    size_t nranges, rcap;
    size_t evict_at; /* where the next eviction looks first */
};

int fs_wbuf_pool_new(int dirfd, uint64_t mem_limit, fs_wbuf_pool **out)
{
    fs_wbuf_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    p->dirfd = dirfd;
    p->spill_fd = -1;
    p->mem_limit = mem_limit < FS_WBUF_PAGE ? FS_WBUF_PAGE : mem_limit;
    *out = p;
    return 0;
}

void fs_wbuf_pool_free(fs_wbuf_pool *p)
{
    if (!p)
        return;
    if (p->spill_fd >= 0)
        close(p->spill_fd);
    free(p->free_slots);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

uint64_t fs_wbuf_pool_mem(fs_wbuf_pool *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t v = p->mem_used;
    pthread_mutex_unlock(&p->lock);
    return v;
}

uint64_t fs_wbuf_pool_spilled(fs_wbuf_pool *p)
{
    pthread_mutex_lock(&p->lock);
    uint64_t v = p->slots_used * FS_WBUF_PAGE;
    pthread_mutex_unlock(&p->lock);
    return v;
}

/* The spill file never has a name anyone could open: O_TMPFILE, or a
 * random name unlinked right after creation where O_TMPFILE is missing. */
static int open_spill_locked(fs_wbuf_pool *p)
{
    if (p->spill_fd >= 0)
        return 0;
    int fd = openat(p->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        for (int tries = 0; fd < 0 && tries < 100; tries++) {
            uint32_t r = 0;
            if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
                r = (uint32_t)getpid() * 2654435761u + (uint32_t)tries;
            char name[64];
            snprintf(name, sizeof name, ".ckptfs-spill-%08x", r);
            fd = openat(p->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (fd >= 0)
                unlinkat(p->dirfd, name, 0);
            else if (errno != EEXIST)
                break;
        }
    }
    if (fd < 0)
        return -errno;
    p->spill_fd = fd;
    return 0;
}

static int slot_get(fs_wbuf_pool *p, uint64_t *slot)
{
    pthread_mutex_lock(&p->lock);
    int rc = open_spill_locked(p);
    if (!rc) {
        *slot = p->nfree ? p->free_slots[--p->nfree] : p->next_slot++;
        p->slots_used++;
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void slot_put(fs_wbuf_pool *p, uint64_t slot)
{
    pthread_mutex_lock(&p->lock);
    if (p->nfree == p->free_cap) {
        size_t cap = p->free_cap ? p->free_cap * 2 : 64;
        uint64_t *v = realloc(p->free_slots, cap * sizeof *v);
        if (v) {
            p->free_slots = v;
            p->free_cap = cap;
        }
    }
    if (p->nfree < p->free_cap)
        p->free_slots[p->nfree++] = slot; /* else the slot is leaked, not reused */
    p->slots_used--;
    pthread_mutex_unlock(&p->lock);
}

static void mem_account(fs_wbuf_pool *p, int64_t delta)
{
    pthread_mutex_lock(&p->lock);
    p->mem_used = (uint64_t)((int64_t)p->mem_used + delta);
    pthread_mutex_unlock(&p->lock);
}

static int over_budget(fs_wbuf_pool *p, uint64_t extra)
{
    pthread_mutex_lock(&p->lock);
    int over = p->mem_used + extra > p->mem_limit;
    pthread_mutex_unlock(&p->lock);
    return over;
}

static int spill_io(int write, fs_wbuf_pool *p, uint64_t slot, uint64_t at, void *buf, size_t len)
{
    uint8_t *b = buf;
    off_t off = (off_t)(slot * FS_WBUF_PAGE + at);
    while (len > 0) {
        ssize_t n = write ? pwrite(p->spill_fd, b, len, off) : pread(p->spill_fd, b, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return write ? -ENOSPC : -EIO;
        b += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

int fs_wbuf_new(fs_wbuf_pool *p, fs_wbuf **out)
{
    fs_wbuf *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->pool = p;
    *out = b;
    return 0;
}

static void page_drop(fs_wbuf *b, page *pg)
{
    if (pg->mem) {
        free(pg->mem);
        mem_account(b->pool, -(int64_t)FS_WBUF_PAGE);
    } else {
        slot_put(b->pool, pg->slot);
    }
}

void fs_wbuf_clear(fs_wbuf *b)
{
    for (size_t i = 0; i < b->npages; i++)
        page_drop(b, &b->pages[i]);
    b->npages = 0;
    b->nranges = 0;
    b->evict_at = 0;
}

void fs_wbuf_free(fs_wbuf *b)
{
    if (!b)
        return;
    fs_wbuf_clear(b);
    free(b->pages);
    free(b->ranges);
    free(b);
}

/* Index of the first page whose idx >= idx. */
static size_t page_lower(const fs_wbuf *b, uint64_t idx)
{
    size_t lo = 0, hi = b->npages;
    if (hi && b->pages[hi - 1].idx < idx)
        return hi; /* sequential writes: past the end */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->pages[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static page *page_find(fs_wbuf *b, uint64_t idx)
{
    size_t i = page_lower(b, idx);
    return i < b->npages && b->pages[i].idx == idx ? &b->pages[i] : NULL;
}

/* Moves one in-memory page other than keep to the spill file. */
static int evict_one(fs_wbuf *b, uint64_t keep)
{
    for (size_t t = 0; t < b->npages; t++) {
        size_t i = (b->evict_at + t) % b->npages;
        page *pg = &b->pages[i];
        if (!pg->mem || pg->idx == keep)
            continue;
        uint64_t slot;
        int rc = slot_get(b->pool, &slot);
        if (rc)
            return rc;
        rc = spill_io(1, b->pool, slot, 0, pg->mem, FS_WBUF_PAGE);
        if (rc) {
            slot_put(b->pool, slot);
            return rc;
        }
        free(pg->mem);
        pg->mem = NULL;
        pg->slot = slot;
        mem_account(b->pool, -(int64_t)FS_WBUF_PAGE);
        b->evict_at = i + 1;
        return 0;
    }
    return -ENOENT; /* nothing of ours left in memory */
}

/* Makes room for one more page in memory, spilling our own pages. */
static int make_room(fs_wbuf *b, uint64_t keep)
{
    while (over_budget(b->pool, FS_WBUF_PAGE)) {
        int rc = evict_one(b, keep);
        if (rc == -ENOENT)
            return 0; /* others hold the memory: one page over is the bound */
        if (rc)
            return rc;
    }
    return 0;
}

static int page_new(fs_wbuf *b, uint64_t idx, int fill_whole, fs_wbuf_fill_fn fill, void *ctx,
                    page **out)
{
    int rc = make_room(b, UINT64_MAX);
    if (rc)
        return rc;
    if (b->npages == b->pcap) {
        size_t cap = b->pcap ? b->pcap * 2 : 16;
        page *v = realloc(b->pages, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        b->pages = v;
        b->pcap = cap;
    }
    uint8_t *mem = malloc(FS_WBUF_PAGE);
    if (!mem)
        return -ENOMEM;
    if (fill_whole) {
        rc = fill(ctx, idx * FS_WBUF_PAGE, mem, FS_WBUF_PAGE);
        if (rc) {
            free(mem);
            return rc;
        }
    }
    size_t i = page_lower(b, idx);
    memmove(&b->pages[i + 1], &b->pages[i], (b->npages - i) * sizeof *b->pages);
    b->pages[i] = (page){ .idx = idx, .mem = mem };
    b->npages++;
    mem_account(b->pool, FS_WBUF_PAGE);
    *out = &b->pages[i];
    return 0;
}

static int range_add(fs_wbuf *b, uint64_t lo, uint64_t hi)
{
    /* first range that ends at or after lo: it may touch [lo, hi) */
    size_t l = 0, h = b->nranges;
    if (h && b->ranges[h - 1].hi < lo) {
        l = h;
    } else {
        while (l < h) {
            size_t mid = l + (h - l) / 2;
            if (b->ranges[mid].hi < lo)
                l = mid + 1;
            else
                h = mid;
        }
    }
    size_t j = l;
    uint64_t nlo = lo, nhi = hi;
    while (j < b->nranges && b->ranges[j].lo <= hi) {
        if (b->ranges[j].lo < nlo)
            nlo = b->ranges[j].lo;
        if (b->ranges[j].hi > nhi)
            nhi = b->ranges[j].hi;
        j++;
    }
    if (j == l) { /* no merge: insert */
        if (b->nranges == b->rcap) {
            size_t cap = b->rcap ? b->rcap * 2 : 8;
            ck_byte_range *v = realloc(b->ranges, cap * sizeof *v);
            if (!v)
                return -ENOMEM;
            b->ranges = v;
            b->rcap = cap;
        }
        memmove(&b->ranges[l + 1], &b->ranges[l], (b->nranges - l) * sizeof *b->ranges);
        b->nranges++;
    } else if (j > l + 1) {
        memmove(&b->ranges[l + 1], &b->ranges[j], (b->nranges - j) * sizeof *b->ranges);
        b->nranges -= j - l - 1;
    }
    b->ranges[l] = (ck_byte_range){ nlo, nhi };
    return 0;
}

int fs_wbuf_write(fs_wbuf *b, uint64_t off, const void *src, size_t len, fs_wbuf_fill_fn fill,
                  void *fill_ctx)
{
    uint64_t end;
    if (__builtin_add_overflow(off, (uint64_t)len, &end) || end > UINT64_MAX - FS_WBUF_PAGE)
        return -EOVERFLOW;
    if (len == 0)
        return 0;
    /* the range first: if it cannot be recorded nothing is written */
    int rc = range_add(b, off, end);
    if (rc)
        return rc;
    const uint8_t *s = src;
    uint64_t pos = off;
    while (pos < end) {
        uint64_t idx = pos / FS_WBUF_PAGE, in = pos % FS_WBUF_PAGE;
        size_t n = (size_t)(FS_WBUF_PAGE - in < end - pos ? FS_WBUF_PAGE - in : end - pos);
        page *pg = page_find(b, idx);
        if (!pg && (rc = page_new(b, idx, n < FS_WBUF_PAGE, fill, fill_ctx, &pg)))
            return rc; /* the range over-reports: the planner may rewrite a chunk too many */
        if (pg->mem)
            memcpy(pg->mem + in, s, n);
        else if ((rc = spill_io(1, b->pool, pg->slot, in, (void *)s, n)))
            return rc;
        s += n;
        pos += n;
    }
    /* a writer alone past the bound spills what it just wrote */
    while (over_budget(b->pool, 0)) {
        rc = evict_one(b, UINT64_MAX);
        if (rc == -ENOENT)
            break;
        if (rc)
            return rc;
    }
    return 0;
}

int fs_wbuf_read(fs_wbuf *b, uint64_t off, void *dst, size_t len, fs_wbuf_fill_fn fill,
                 void *fill_ctx)
{
    uint64_t end;
    if (__builtin_add_overflow(off, (uint64_t)len, &end))
        return -EOVERFLOW;
    uint8_t *d = dst;
    uint64_t pos = off;
    size_t i = page_lower(b, off / FS_WBUF_PAGE);
    while (pos < end) {
        uint64_t idx = pos / FS_WBUF_PAGE, in = pos % FS_WBUF_PAGE;
        int rc;
        if (i < b->npages && b->pages[i].idx == idx) {
            page *pg = &b->pages[i++];
            size_t n = (size_t)(FS_WBUF_PAGE - in < end - pos ? FS_WBUF_PAGE - in : end - pos);
            if (pg->mem)
                memcpy(d, pg->mem + in, n);
            else if ((rc = spill_io(0, b->pool, pg->slot, in, d, n)))
                return rc;
            d += n;
            pos += n;
            continue;
        }
        /* a run of pages we do not have: one fill call */
        uint64_t stop = i < b->npages ? b->pages[i].idx * FS_WBUF_PAGE : end;
        if (stop > end)
            stop = end;
        if ((rc = fill(fill_ctx, pos, d, (size_t)(stop - pos))))
            return rc;
        d += stop - pos;
        pos = stop;
    }
    return 0;
}

void fs_wbuf_truncate(fs_wbuf *b, uint64_t size)
{
    size_t keep = 0;
    while (keep < b->nranges && b->ranges[keep].lo < size) {
        if (b->ranges[keep].hi > size)
            b->ranges[keep].hi = size;
        keep++;
    }
    b->nranges = keep;
    uint64_t first_gone = size / FS_WBUF_PAGE + (size % FS_WBUF_PAGE ? 1 : 0);
    size_t i = page_lower(b, first_gone);
    for (size_t j = i; j < b->npages; j++)
        page_drop(b, &b->pages[j]);
    b->npages = i;
    b->evict_at = 0;
    if (size % FS_WBUF_PAGE) {
        page *pg = page_find(b, size / FS_WBUF_PAGE);
        size_t in = size % FS_WBUF_PAGE;
        if (pg && pg->mem) {
            memset(pg->mem + in, 0, FS_WBUF_PAGE - in);
        } else if (pg) {
            uint8_t *z = calloc(1, FS_WBUF_PAGE - in);
            if (!z || spill_io(1, b->pool, pg->slot, in, z, FS_WBUF_PAGE - in)) {
                /* cannot zero it where it lies: take it back into memory
                 * (over the bound by one page) and zero it there */
                uint8_t *mem = malloc(FS_WBUF_PAGE);
                if (mem && spill_io(0, b->pool, pg->slot, 0, mem, in) == 0) {
                    memset(mem + in, 0, FS_WBUF_PAGE - in);
                    slot_put(b->pool, pg->slot);
                    pg->mem = mem;
                    mem_account(b->pool, FS_WBUF_PAGE);
                } else {
                    free(mem);
                }
            }
            free(z);
        }
    }
}

const ck_byte_range *fs_wbuf_ranges(const fs_wbuf *b, size_t *n)
{
    *n = b->nranges;
    return b->ranges;
}

bool fs_wbuf_empty(const fs_wbuf *b)
{
    return b->nranges == 0;
}
