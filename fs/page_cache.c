/* The page-cache owner table (see page_cache.h): a chained hash of paths. */
#include "page_cache.h"
#include "hash.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct pc_entry {
    char *path;
    uint64_t gen;   /* whose pages the kernel may hold */
    uint64_t opens; /* registered handles of gen still open */
    struct pc_entry *next;
} pc_entry;

struct fs_pcache {
    pthread_mutex_t lock;
    pc_entry **buckets;
    size_t nbuckets, count;
};

static uint64_t hash_str(const char *s)
{
    return ck_fnv1a_str(s);
}

int fs_pcache_new(fs_pcache **out)
{
    fs_pcache *pc = calloc(1, sizeof *pc);
    if (!pc)
        return -ENOMEM;
    pc->nbuckets = 256;
    pc->buckets = calloc(pc->nbuckets, sizeof *pc->buckets);
    if (!pc->buckets) {
        free(pc);
        return -ENOMEM;
    }
    pthread_mutex_init(&pc->lock, NULL);
    *out = pc;
    return 0;
}

void fs_pcache_free(fs_pcache *pc)
{
    if (!pc)
        return;
    for (size_t i = 0; i < pc->nbuckets; i++)
        for (pc_entry *e = pc->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e->path);
            free(e);
        }
    free(pc->buckets);
    pthread_mutex_destroy(&pc->lock);
    free(pc);
}

/* Doubles the table when it is full; failure just keeps chains longer. */
static void grow(fs_pcache *pc)
{
    size_t n = pc->nbuckets * 2;
    pc_entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < pc->nbuckets; i++)
        for (pc_entry *e = pc->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t s = hash_str(e->path) & (n - 1);
            e->next = b[s];
            b[s] = e;
        }
    free(pc->buckets);
    pc->buckets = b;
    pc->nbuckets = n;
}

static pc_entry *find(fs_pcache *pc, const char *path)
{
    for (pc_entry *e = pc->buckets[hash_str(path) & (pc->nbuckets - 1)]; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e;
    return NULL;
}

fs_pc_mode fs_pcache_open(fs_pcache *pc, const char *path, uint64_t gen)
{
    pthread_mutex_lock(&pc->lock);
    fs_pc_mode mode;
    pc_entry *e = find(pc, path);
    if (!e) {
        /* never opened: the kernel holds no pages of it */
        e = calloc(1, sizeof *e);
        char *copy = e ? strdup(path) : NULL;
        if (!copy) {
            free(e);
            pthread_mutex_unlock(&pc->lock);
            return FS_PC_DIRECT;
        }
        if (pc->count >= pc->nbuckets)
            grow(pc);
        size_t s = hash_str(path) & (pc->nbuckets - 1);
        e->path = copy;
        e->gen = gen;
        e->next = pc->buckets[s];
        pc->buckets[s] = e;
        pc->count++;
        mode = FS_PC_KEEP;
    } else if (e->gen == gen) {
        mode = FS_PC_KEEP;
    } else if (e->opens == 0) {
        e->gen = gen; /* pages of another snapshot, nobody reading them: drop */
        mode = FS_PC_PURGE;
    } else {
        mode = FS_PC_DIRECT;
    }
    if (mode != FS_PC_DIRECT)
        e->opens++;
    pthread_mutex_unlock(&pc->lock);
    return mode;
}

void fs_pcache_release(fs_pcache *pc, const char *path, uint64_t gen)
{
    pthread_mutex_lock(&pc->lock);
    pc_entry *e = find(pc, path);
    /* gen only changes while opens is 0, so a registered handle finds its own */
    if (e && e->gen == gen && e->opens > 0)
        e->opens--;
    pthread_mutex_unlock(&pc->lock);
}
