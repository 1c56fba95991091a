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
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

int fs_snapshot_open(const fs_options *opts, const char *dir, uint64_t gen, fs_mount **out,
                     char *err, size_t errlen)
{
    err[0] = '\0';
    fs_mount *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->opts = *opts;
    m->opts.source = (char *)dir;
    m->gen = gen;
    atomic_init(&m->refs, 1);
    pthread_rwlock_init(&m->lock, NULL);
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
