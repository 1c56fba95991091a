/* The invalidation thread (see notify.h). */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fuse_lowlevel.h>

#include "snapshot.h"

typedef struct job {
    fs_mount *old;  /* a snapshot's names to invalidate, or NULL */
    char *name;     /* prefix of the snapshot, or the root entry's name */
    _Atomic uint64_t *settled; /* snapshot jobs: raised to gen when done */
    uint64_t gen;
    struct job *next;
} job;

static void settle(_Atomic uint64_t *settled, uint64_t gen)
{
    uint64_t cur = atomic_load(settled);
    while (cur < gen && !atomic_compare_exchange_weak(settled, &cur, gen))
        ;
}

struct fs_notifier {
    struct fuse *f;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *head, **tail;
    bool stop;
};

static void inval(struct fuse *f, const char *prefix, const char *path, const char *suffix)
{
    char buf[8192];
    /* "/" under a prefix is the prefix itself */
    if (prefix[0] && strcmp(path, "/") == 0)
        path = "";
    int n = snprintf(buf, sizeof buf, "%s%s%s", prefix, path, suffix);
    if (n > 0 && (size_t)n < sizeof buf)
        fuse_invalidate_path(f, buf); /* -ENOENT: the kernel never asked for it */
}

/* Each node, its views (NAME.npy, DIR.safetensors) and /.ckptfs's files. */
static void inval_tree(struct fuse *f, const char *prefix, fs_node *n)
{
    inval(f, prefix, n->path, "");
    if (n->is_dir) {
        if (n->parent) {
            inval(f, prefix, n->path, ".safetensors");
            inval(f, prefix, n->path, ".pt");
        }
        for (size_t i = 0; i < n->nchildren; i++)
            inval_tree(f, prefix, n->children[i]);
    } else if (n->key && n->key->kind == CK_KEY_TENSOR) {
        inval(f, prefix, n->path, ".npy");
        inval(f, prefix, n->path, ".stats");
    }
}

static void run_job(fs_notifier *nt, job *j)
{
    if (j->settled) {
        if (j->old) {
            fs_node *root = fs_tree_root(j->old->tree);
            if (root)
                inval_tree(nt->f, j->name, root);
            inval(nt->f, j->name, "/.ckptfs/metadata.json", "");
            inval(nt->f, j->name, "/.ckptfs/model.safetensors", "");
            inval(nt->f, j->name, "/.ckptfs/model.pt", "");
            /* hf/: its two fixed names; shards named -0000K-of-0000N keep
             * their names across states of the same keys */
            inval(nt->f, j->name, "/.ckptfs/hf", "");
            inval(nt->f, j->name, "/.ckptfs/hf/model.safetensors", "");
            inval(nt->f, j->name, "/.ckptfs/hf/model.safetensors.index.json", "");
            fs_snapshot_unref(j->old);
        }
        settle(j->settled, j->gen);
    } else {
        fuse_lowlevel_notify_inval_entry(fuse_get_session(nt->f), FUSE_ROOT_ID, j->name,
                                         strlen(j->name));
    }
    free(j->name);
    free(j);
}

static void *notifier_main(void *arg)
{
    fs_notifier *nt = arg;
    pthread_mutex_lock(&nt->lock);
    for (;;) {
        while (!nt->head && !nt->stop)
            pthread_cond_wait(&nt->cond, &nt->lock);
        if (!nt->head)
            break;
        job *j = nt->head;
        nt->head = j->next;
        if (!nt->head)
            nt->tail = &nt->head;
        pthread_mutex_unlock(&nt->lock);
        run_job(nt, j);
        pthread_mutex_lock(&nt->lock);
    }
    pthread_mutex_unlock(&nt->lock);
    return NULL;
}

int fs_notifier_start(struct fuse *f, fs_notifier **out)
{
    fs_notifier *nt = calloc(1, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    nt->f = f;
    nt->tail = &nt->head;
    pthread_mutex_init(&nt->lock, NULL);
    pthread_cond_init(&nt->cond, NULL);
    int rc = pthread_create(&nt->thread, NULL, notifier_main, nt);
    if (rc) {
        pthread_cond_destroy(&nt->cond);
        pthread_mutex_destroy(&nt->lock);
        free(nt);
        return -rc;
    }
    *out = nt;
    return 0;
}

void fs_notifier_stop(fs_notifier *nt)
{
    if (!nt)
        return;
    pthread_mutex_lock(&nt->lock);
    nt->stop = true;
    pthread_cond_signal(&nt->cond);
    pthread_mutex_unlock(&nt->lock);
    pthread_join(nt->thread, NULL);
    pthread_cond_destroy(&nt->cond);
    pthread_mutex_destroy(&nt->lock);
    free(nt);
}

static void enqueue(fs_notifier *nt, fs_mount *old, const char *name, _Atomic uint64_t *settled,
                    uint64_t gen)
{
    job *j = calloc(1, sizeof *j);
    char *copy = j ? strdup(name) : NULL;
    if (!copy) {
        /* the kernel's entries then expire on their own (main.c) */
        fprintf(stderr, "ckptfs: out of memory: stale kernel entries for %s\n", name);
        free(j);
        if (settled)
            settle(settled, gen);
        return;
    }
    j->old = fs_snapshot_ref(old);
    j->name = copy;
    j->settled = settled;
    j->gen = gen;
    pthread_mutex_lock(&nt->lock);
    *nt->tail = j;
    nt->tail = &j->next;
    pthread_cond_signal(&nt->cond);
    pthread_mutex_unlock(&nt->lock);
}

void fs_notify_snapshot(fs_notifier *nt, const char *prefix, fs_mount *old,
                        _Atomic uint64_t *settled, uint64_t gen)
{
    if (nt)
        enqueue(nt, old, prefix, settled, gen);
    else
        settle(settled, gen);
}

void fs_notify_root_entry(fs_notifier *nt, const char *name)
{
    if (nt)
        enqueue(nt, NULL, name, NULL, 0);
}
