/* The inode table (see inode_table.h): two chained hash tables over one
 * set of entries, by number and by path. */
#include "inode_table.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

typedef struct entry {
    uint64_t ino, gen, nlookup;
    fs_ipath *path;
    uint64_t phash;       /* hash of path */
    bool detached;        /* not in the by-path table */
    struct entry *next_ino, *next_path;
} entry;

struct fs_itable {
    pthread_mutex_t lock;
    entry **by_ino, **by_path;
    size_t nbuckets;      /* a power of two, for both tables */
    size_t count;
    uint64_t next_gen;
    entry *root;
};

static fs_ipath *ipath_new(const char *s, size_t n)
{
    fs_ipath *p = malloc(sizeof *p + n + 1);
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->len = n;
    memcpy(p->s, s, n);
    p->s[n] = '\0';
    return p;
}

void fs_ipath_put(fs_ipath *p)
{
    if (p && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        free(p);
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static size_t slot(const fs_itable *t, uint64_t h)
{
    return (size_t)(mix(h) & (t->nbuckets - 1));
}

static entry *find_ino(const fs_itable *t, uint64_t ino)
{
    for (entry *e = t->by_ino[slot(t, ino)]; e; e = e->next_ino)
        if (e->ino == ino)
            return e;
    return NULL;
}

static entry *find_path(const fs_itable *t, const char *path, size_t n, uint64_t h)
{
    for (entry *e = t->by_path[slot(t, h)]; e; e = e->next_path)
        if (e->phash == h && e->path->len == n && memcmp(e->path->s, path, n) == 0)
            return e;
    return NULL;
}

static void unlink_path(fs_itable *t, entry *e)
{
    entry **pp = &t->by_path[slot(t, e->phash)];
    while (*pp && *pp != e)
        pp = &(*pp)->next_path;
    if (*pp)
        *pp = e->next_path;
    e->next_path = NULL;
}

static void unlink_ino(fs_itable *t, entry *e)
{
    entry **pp = &t->by_ino[slot(t, e->ino)];
    while (*pp && *pp != e)
        pp = &(*pp)->next_ino;
    if (*pp)
        *pp = e->next_ino;
    e->next_ino = NULL;
}

static void link_path(fs_itable *t, entry *e)
{
    size_t s = slot(t, e->phash);
    e->next_path = t->by_path[s];
    t->by_path[s] = e;
}

static void link_ino(fs_itable *t, entry *e)
{
    size_t s = slot(t, e->ino);
    e->next_ino = t->by_ino[s];
    t->by_ino[s] = e;
}

/* Doubles both tables when they hold more entries than buckets. */
static void maybe_grow(fs_itable *t)
{
    if (t->count < t->nbuckets || t->nbuckets > (SIZE_MAX / sizeof(entry *)) / 4)
        return;
    size_t nb = t->nbuckets * 2;
    entry **bi = calloc(nb, sizeof *bi), **bp = calloc(nb, sizeof *bp);
    if (!bi || !bp) {
        free(bi);
        free(bp);
        return; /* longer chains, still correct */
    }
    entry **oi = t->by_ino, **op = t->by_path;
    size_t ob = t->nbuckets;
    t->by_ino = bi;
    t->by_path = bp;
    t->nbuckets = nb;
    for (size_t i = 0; i < ob; i++) {
        for (entry *e = oi[i], *next; e; e = next) {
            next = e->next_ino;
            link_ino(t, e);
            if (!e->detached)
                link_path(t, e);
        }
    }
    free(oi);
    free(op); /* every entry was linked again from the by-number chains */
}

/* The number a new entry for a path of hash h gets: the hash itself, if
 * free and not reserved (0, the root, the kernel's "unknown" value). */
static uint64_t free_number(const fs_itable *t, uint64_t h, bool *probed)
{
    uint64_t ino = h;
    *probed = false;
    for (;;) {
        if (ino > FS_ROOT_INO && ino != 0xffffffffull && !find_ino(t, ino))
            return ino;
        ino++;
        *probed = true;
    }
}

int fs_itable_new(fs_itable **out)
{
    fs_itable *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->nbuckets = 1024;
    t->by_ino = calloc(t->nbuckets, sizeof *t->by_ino);
    t->by_path = calloc(t->nbuckets, sizeof *t->by_path);
    t->root = calloc(1, sizeof *t->root);
    if (t->root)
        t->root->path = ipath_new("/", 1);
    if (!t->by_ino || !t->by_path || !t->root || !t->root->path) {
        if (t->root)
            free(t->root->path);
        free(t->root);
        free(t->by_ino);
        free(t->by_path);
        free(t);
        return -ENOMEM;
    }
    pthread_mutex_init(&t->lock, NULL);
    t->root->ino = FS_ROOT_INO;
    t->root->phash = ck_fnv1a("/", 1);
    link_ino(t, t->root);
    link_path(t, t->root);
    t->count = 1;
    *out = t;
    return 0;
}

void fs_itable_free(fs_itable *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (entry *e = t->by_ino[i], *next; e; e = next) {
            next = e->next_ino;
            fs_ipath_put(e->path);
            free(e);
        }
    }
    free(t->by_ino);
    free(t->by_path);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

int fs_itable_lookup(fs_itable *t, const char *path, uint64_t *ino, uint64_t *gen)
{
    size_t n = strlen(path);
    uint64_t h = ck_fnv1a(path, n);
    pthread_mutex_lock(&t->lock);
    entry *e = find_path(t, path, n, h);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e)
            e->path = ipath_new(path, n);
        if (!e || !e->path) {
            free(e);
            pthread_mutex_unlock(&t->lock);
            return -ENOMEM;
        }
        bool probed;
        e->ino = free_number(t, h, &probed);
        /* a probed number may have been another path's before: a new
         * generation tells the two apart (NFS file handles) */
        e->gen = probed ? ++t->next_gen : 0;
        e->phash = h;
        link_ino(t, e);
        link_path(t, e);
        t->count++;
        maybe_grow(t);
    }
    if (e != t->root)
        e->nlookup++;
    *ino = e->ino;
    *gen = e->gen;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

uint64_t fs_itable_peek(fs_itable *t, const char *path)
{
    size_t n = strlen(path);
    uint64_t h = ck_fnv1a(path, n);
    pthread_mutex_lock(&t->lock);
    entry *e = find_path(t, path, n, h);
    bool probed;
    uint64_t ino = e ? e->ino : free_number(t, h, &probed);
    pthread_mutex_unlock(&t->lock);
    return ino;
}

static void drop_entry(fs_itable *t, entry *e)
{
    unlink_ino(t, e);
    if (!e->detached)
        unlink_path(t, e);
    fs_ipath_put(e->path);
    free(e);
    t->count--;
}

void fs_itable_forget(fs_itable *t, uint64_t ino, uint64_t n)
{
    pthread_mutex_lock(&t->lock);
    entry *e = find_ino(t, ino);
    if (e && e != t->root) {
        e->nlookup = e->nlookup > n ? e->nlookup - n : 0;
        if (e->nlookup == 0)
            drop_entry(t, e);
    }
    pthread_mutex_unlock(&t->lock);
}

fs_ipath *fs_itable_path(fs_itable *t, uint64_t ino)
{
    pthread_mutex_lock(&t->lock);
    entry *e = find_ino(t, ino);
    fs_ipath *p = e ? e->path : NULL;
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
    return p;
}

static void detach_locked(fs_itable *t, entry *e)
{
    if (e && e != t->root && !e->detached) {
        unlink_path(t, e);
        e->detached = true;
    }
}

void fs_itable_detach(fs_itable *t, const char *path)
{
    size_t n = strlen(path);
    pthread_mutex_lock(&t->lock);
    detach_locked(t, find_path(t, path, n, ck_fnv1a(path, n)));
    pthread_mutex_unlock(&t->lock);
}

/* path is from itself or lies below it. */
static bool at_or_under(const fs_ipath *p, const char *from, size_t fl)
{
    return p->len >= fl && memcmp(p->s, from, fl) == 0 &&
           (p->len == fl || p->s[fl] == '/' || (fl == 1 && from[0] == '/'));
}

int fs_itable_rename(fs_itable *t, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    if (fl == 1 && from[0] == '/')
        return -EBUSY;
    pthread_mutex_lock(&t->lock);
    detach_locked(t, find_path(t, to, tl, ck_fnv1a(to, tl)));
    /* The new paths are made first, so a failed allocation changes nothing. */
    size_t nmove = 0, cap = 0;
    entry **moving = NULL;
    fs_ipath **paths = NULL;
    int rc = 0;
    for (size_t i = 0; i < t->nbuckets && !rc; i++) {
        for (entry *e = t->by_ino[i]; e && !rc; e = e->next_ino) {
            if (e->detached || !at_or_under(e->path, from, fl))
                continue;
            if (nmove == cap) {
                size_t nc = cap ? cap * 2 : 16;
                entry **m2 = realloc(moving, nc * sizeof *m2);
                if (m2)
                    moving = m2;
                fs_ipath **p2 = m2 ? realloc(paths, nc * sizeof *p2) : NULL;
                if (p2)
                    paths = p2;
                if (!m2 || !p2) {
                    rc = -ENOMEM;
                    break;
                }
                cap = nc;
            }
            size_t rest = e->path->len - fl;
            fs_ipath *np = malloc(sizeof *np + tl + rest + 1);
            if (!np) {
                rc = -ENOMEM;
                break;
            }
            atomic_init(&np->refs, 1);
            np->len = tl + rest;
            memcpy(np->s, to, tl);
            memcpy(np->s + tl, e->path->s + fl, rest + 1);
            moving[nmove] = e;
            paths[nmove++] = np;
        }
    }
    for (size_t i = 0; i < nmove; i++) {
        entry *e = moving[i];
        if (rc) {
            free(paths[i]);
            continue;
        }
        unlink_path(t, e);
        fs_ipath_put(e->path);
        e->path = paths[i];
        e->phash = ck_fnv1a(e->path->s, e->path->len);
        link_path(t, e);
    }
    free(moving);
    free(paths);
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void fs_inames_free(fs_iname *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].name);
    free(v);
}

int fs_itable_list_under(fs_itable *t, const char *prefix, fs_iname **out, size_t *n)
{
    size_t pl = strlen(prefix);
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&t->lock);
    fs_iname *v = calloc(t->count ? t->count : 1, sizeof *v);
    size_t k = 0;
    int rc = v ? 0 : -ENOMEM;
    for (size_t i = 0; i < t->nbuckets && !rc; i++) {
        for (entry *e = t->by_ino[i]; e && !rc; e = e->next_ino) {
            if (e->detached || (pl && !at_or_under(e->path, prefix, pl)))
                continue;
            const char *s = e->path->s;
            const char *slash = strrchr(s, '/');
            fs_iname *x = &v[k];
            x->ino = e->ino;
            if (e == t->root) {
                x->name = strdup("");
            } else {
                size_t plen = (size_t)(slash - s);
                entry *parent = plen == 0 ? t->root
                                          : find_path(t, s, plen, ck_fnv1a(s, plen));
                x->parent = parent ? parent->ino : 0;
                x->name = strdup(slash + 1);
            }
            if (!x->name)
                rc = -ENOMEM;
            else
                k++;
        }
    }
    pthread_mutex_unlock(&t->lock);
    if (rc) {
        fs_inames_free(v, k);
        return rc;
    }
    *out = v;
    *n = k;
    return 0;
}

size_t fs_itable_count(fs_itable *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
