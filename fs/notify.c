/* The invalidation thread (see notify.h). */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fuse_lowlevel.h>


typedef struct job {
    bool snapshot;  /* a state replaced under name, else a root entry */
    bool inval;     /* snapshot jobs: there was an old state to invalidate */
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
    struct fuse_session *se;
    fs_itable *it;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    job *head, **tail;
    bool stop;
};

/* Every inode the kernel holds under the prefix: files, directories (and
 * their cached listings), views.  Names stay: a name that went answers
 * ENOENT when the kernel, its attributes gone, asks again. */
static void inval_under(fs_notifier *nt, const char *prefix)
{
    fs_iname *v;
    size_t n;
    if (fs_itable_list_under(nt->it, prefix, &v, &n) != 0) {
        fprintf(stderr, "ckptfs: out of memory: stale kernel attributes under %s\n",
                prefix[0] ? prefix : "/");
        return;
    }
    for (size_t i = 0; i < n; i++)
        fuse_lowlevel_notify_inval_inode(nt->se, v[i].ino, 0, 0); /* -ENOENT: forgotten */
    fs_inames_free(v, n);
}

static void run_job(fs_notifier *nt, job *j)
{
    if (j->snapshot) {
        if (j->inval)
            inval_under(nt, j->name);
        settle(j->settled, j->gen);
    } else {
        fuse_lowlevel_notify_inval_entry(nt->se, FS_ROOT_INO, j->name, strlen(j->name));
        fuse_lowlevel_notify_inval_inode(nt->se, FS_ROOT_INO, 0, 0);
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

int fs_notifier_start(struct fuse_session *se, fs_itable *it, fs_notifier **out)
{
    fs_notifier *nt = calloc(1, sizeof *nt);
    if (!nt)
        return -ENOMEM;
    nt->se = se;
    nt->it = it;
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

static void enqueue(fs_notifier *nt, bool snapshot, bool inval, const char *name,
                    _Atomic uint64_t *settled, uint64_t gen)
{
    job *j = calloc(1, sizeof *j);
    char *copy = j ? strdup(name) : NULL;
    if (!copy) {
        /* the kernel's entries then expire on their own (ll_ops.c) */
        fprintf(stderr, "ckptfs: out of memory: stale kernel entries for %s\n", name);
        free(j);
        if (settled)
            settle(settled, gen);
        return;
    }
    j->snapshot = snapshot;
    j->inval = inval;
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
        enqueue(nt, true, old != NULL, prefix, settled, gen);
    else
        settle(settled, gen);
}

void fs_notify_root_entry(fs_notifier *nt, const char *name)
{
    if (nt)
        enqueue(nt, false, false, name, NULL, 0);
}
