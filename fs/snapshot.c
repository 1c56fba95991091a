/* Building and releasing snapshots (see snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dcp_safetensors.h"
#include "views.h"

static void snapshot_free(fs_mount *m)
{
    fs_views_free(m->views);
    fs_tree_free(m->tree);
    ck_close(m->ck);
    fs_snapshot_unref(m->cur);
    pthread_mutex_destroy(&m->cur_lock);
    free(m);
}

static fs_mount *mount_alloc(const fs_options *opts, uint64_t gen)
{
    fs_mount *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->opts = *opts;
    m->gen = gen;
    atomic_init(&m->refs, 1);
    pthread_mutex_init(&m->cur_lock, NULL);
    return m;
}

int fs_snapshot_wrap(const fs_mount *like, ck_checkpoint *ck, fs_tree *tree, fs_mount **out)
{
    fs_mount *m = mount_alloc(&like->opts, like->gen);
    if (!m) {
        fs_tree_free(tree);
        ck_close(ck);
        return -ENOMEM;
    }
    m->ck = ck;
    m->tree = tree;
    m->ws = like->ws;
    int rc = fs_views_new(m, &m->views);
    char err[256];
    if (!rc && m->opts.hf_dir)
        rc = fs_views_open_hf_dir(m->views, m->opts.hf_dir, err, sizeof err);
    if (rc) {
        snapshot_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int fs_rw_mount_new(fs_mount *first, fs_mount **out)
{
    fs_mount *m = mount_alloc(&first->opts, first->gen);
    if (!m)
        return -ENOMEM;
    m->cur = first;
    *out = m;
    return 0;
}

fs_mount *fs_rw_pin(fs_mount *m)
{
    if (!m || m->ck)
        return fs_snapshot_ref(m);
    pthread_mutex_lock(&m->cur_lock);
    fs_mount *s = fs_snapshot_ref(m->cur);
    pthread_mutex_unlock(&m->cur_lock);
    return s;
}

void fs_rw_publish(fs_mount *m, fs_mount *next)
{
    pthread_mutex_lock(&m->cur_lock);
    fs_mount *old = m->cur;
    m->cur = next;
    pthread_mutex_unlock(&m->cur_lock);
    fs_snapshot_unref(old); /* may close its files: not under the lock */
}

int fs_snapshot_open(const fs_options *opts, const char *dir, uint64_t gen, fs_mount **out,
                     char *err, size_t errlen)
{
    err[0] = '\0';
    fs_mount *m = mount_alloc(opts, gen);
    if (!m)
        return -ENOMEM;
    m->opts.source = (char *)dir;
    ck_storage_opts so = { .endpoint = opts->endpoint, .region = opts->region,
                           .profile = opts->profile, .addressing = opts->addressing };
    ck_open_opts oo = { .cache_bytes = opts->cache_bytes, .storage = &so };
    int rc = opts->rw && opts->create ? ck_open_or_create(dir, &oo, &m->ck, err, errlen)
                                      : ck_open(dir, &oo, &m->ck, err, errlen);
    if (!rc && opts->rw && m->ck->kind != CK_SRC_DCP) {
        snprintf(err, errlen, "%s: -o rw needs a DCP checkpoint (safetensors sources are read-only)",
                 dir);
        rc = -EINVAL;
    }
    if (!rc && opts->rw && ck_dcp_st_in_use(m->ck)) {
        snprintf(err, errlen, "%s: -o rw: this DCP checkpoint is in the safetensors serialization "
                 "format, which ckptfs reads but does not write (mount it without -o rw)", dir);
        rc = -EINVAL;
    }
    if (!rc) {
        rc = fs_tree_build(m->ck, opts->flat, &m->tree);
        if (!rc)
            rc = fs_views_new(m, &m->views);
        if (rc)
            snprintf(err, errlen, "%s: cannot build the file tree: %s", dir, strerror(-rc));
    }
    if (!rc && opts->hf_dir)
        rc = fs_views_open_hf_dir(m->views, opts->hf_dir, err, errlen);
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "%s: %s", dir, strerror(-rc));
        snapshot_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

fs_mount *fs_snapshot_ref(fs_mount *m)
{
    if (m)
        atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void fs_snapshot_unref(fs_mount *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        snapshot_free(m);
}
