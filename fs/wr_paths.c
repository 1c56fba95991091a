/* rw mounts: what a path is (a committed key or directory, a pending new
 * file, a directory only we know of, a view) and the handles of open
 * files.  Shared by the wr_*.c operations (wr_common.h). */
#include "wr_common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool fs_wr_has_npy_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".npy") == 0;
}

const char *fs_wr_base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- what a path is ---- */

void fs_wr_info_clear(fs_wstate *ws, path_info *pi)
{
    if (pi->wf)
        fs_ws_put(ws, pi->wf);
    free(pi->fqn);
    memset(pi, 0, sizeof *pi);
}

/* What path is in state cur and the table of pending files.  Caller holds
 * ws->lock and pinned cur while holding it: commits publish their state
 * under ws->lock, so the two agree.  Views are not looked at. */
int fs_wr_classify_in(fs_mount *cur, fs_wstate *ws, const char *path, path_info *pi)
{
    memset(pi, 0, sizeof *pi);
    if (!path)
        return -ENOENT;
    fs_node *n = fs_tree_lookup(cur->tree, path);
    fs_wfile *wf = n ? NULL : fs_ws_find_new(ws, path);
    if (wf) {
        wf->refs++;
        pi->kind = P_NEW;
        pi->wf = wf;
    } else if (n && n->is_dir) {
        pi->kind = P_DIR;
        pi->dir_has_children = n->nchildren > 0;
    } else if (n && n->key) {
        pi->kind = P_FILE;
        pi->fqn = strdup(n->key->fqn);
    } else if (fs_ws_is_dir(ws, path)) {
        pi->kind = P_XDIR;
    }
    return pi->kind == P_FILE && !pi->fqn ? -ENOMEM : 0;
}

/* Whether path names a view of cur. */
bool fs_wr_is_view(fs_mount *cur, const char *path)
{
    fs_view *v;
    if (fs_tree_lookup(cur->tree, path) || fs_view_lookup(cur, path, &v) != 0)
        return false;
    fs_view_release(cur, v);
    return true;
}

int fs_wr_classify_lock(fs_mount *m, const char *path, path_info *pi, bool *view,
                        fs_mount **curp)
{
    fs_mount *cur = fs_rw_pin(m);
    *view = path && fs_wr_is_view(cur, path); /* not under ws->lock: views may read */
    fs_snapshot_unref(cur);
    pthread_mutex_lock(&m->ws->lock);
    *curp = fs_rw_pin(m);
    return fs_wr_classify_in(*curp, m->ws, path, pi);
}

int fs_wr_lock_free_name(fs_mount *m, const char *path, path_info *pi, fs_mount **curp)
{
    bool view;
    int rc = fs_wr_classify_lock(m, path, pi, &view, curp);
    if (!rc && (pi->kind != P_NONE || view))
        rc = -EEXIST;
    return rc;
}

/* What path is now.  *curp (if given) receives the state it was judged
 * in, pinned. */
int fs_wr_classify_pinned(fs_mount *m, const char *path, path_info *pi, fs_mount **curp)
{
    fs_wstate *ws = m->ws;
    pthread_mutex_lock(&ws->lock);
    fs_mount *cur = fs_rw_pin(m);
    int rc = fs_wr_classify_in(cur, ws, path, pi);
    pthread_mutex_unlock(&ws->lock);
    if (!rc && pi->kind == P_NONE && path && fs_wr_is_view(cur, path))
        pi->kind = P_VIEW;
    if (curp)
        *curp = cur;
    else
        fs_snapshot_unref(cur);
    return rc;
}

int fs_wr_classify(fs_mount *m, const char *path, path_info *pi)
{
    return fs_wr_classify_pinned(m, path, pi, NULL);
}

bool fs_wr_is_dir_kind(path_kind k)
{
    return k == P_DIR || k == P_XDIR;
}

/* 0 if the parent of path is a directory, else -ENOENT/-ENOTDIR. */
int fs_wr_check_parent(fs_mount *m, const char *path)
{
    char *parent = fs_path_parent(path);
    if (!parent)
        return -ENOMEM;
    int rc = 0;
    if (strcmp(parent, "/") != 0) {
        path_info pi;
        rc = fs_wr_classify(m, parent, &pi);
        if (!rc && !fs_wr_is_dir_kind(pi.kind))
            rc = pi.kind == P_NONE ? -ENOENT : -ENOTDIR;
        fs_wr_info_clear(m->ws, &pi);
    }
    free(parent);
    return rc;
}

/* The wfile of a committed key, created on first use; returns it held.
 * The key's size is learnt outside the locks (a bytes key may need its
 * item decoded); if a commit published a new state meanwhile, it is
 * learnt again. */
int fs_wr_attach_key(fs_mount *m, const char *path, fs_wfile **out)
{
    fs_wstate *ws = m->ws;
    for (;;) {
        fs_mount *cur = fs_rw_pin(m);
        fs_node *n = fs_tree_lookup(cur->tree, path);
        if (!n || n->is_dir || !n->key) {
            fs_snapshot_unref(cur);
            return !n ? -ENOENT : -EISDIR;
        }
        const ck_key *k = n->key;
        uint64_t size = 0;
        if (ck_key_size(cur->ck, k, &size))
            size = 0; /* unreadable: reads fail, writes still patch */
        pthread_mutex_lock(&ws->lock);
        pthread_mutex_lock(&m->cur_lock);
        bool stale = m->cur != cur;
        pthread_mutex_unlock(&m->cur_lock);
        if (stale) {
            pthread_mutex_unlock(&ws->lock);
            fs_snapshot_unref(cur);
            continue;
        }
        int rc = 0;
        fs_wfile *wf = fs_ws_find_key(ws, k->fqn);
        if (!wf) {
            wf = fs_wfile_new(ws, k->fqn, NULL);
            if (wf) {
                atomic_store(&wf->size, size);
                wf->base_size = wf->committed_size = size;
                wf->limit = k->kind == CK_KEY_TENSOR ? k->nbytes : UINT64_MAX;
                if (fs_ws_add(ws, wf)) {
                    fs_wfile_free(wf);
                    wf = NULL;
                }
            }
        }
        if (wf)
            wf->refs++;
        else
            rc = -ENOMEM;
        pthread_mutex_unlock(&ws->lock);
        fs_snapshot_unref(cur);
        *out = wf;
        return rc;
    }
}

/* ---- handles ---- */

int fs_wr_new_handle(fs_wfile *wf, bool writable, struct fuse_file_info *fi)
{
    fs_handle *h = calloc(1, sizeof *h);
    wr_handle *wh = calloc(1, sizeof *wh);
    if (!h || !wh) {
        free(h);
        free(wh);
        return -ENOMEM;
    }
    wh->wf = wf;
    wh->writable = writable;
    h->wbuf = wh;
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->keep_cache = 0; /* contents change at commits */
    /* A write-only handle (cp, dd, np.save, torch.save) skips the kernel's
     * page cache: without it each write is first copied into fresh cache
     * pages, which the daemon then copies again (twice the time of a cp of
     * 1 GiB, measured).  Such a handle can be neither read nor mmapped, so
     * it loses nothing; O_RDWR handles keep the cache for shared mmaps. */
    fi->direct_io = writable && (fi->flags & O_ACCMODE) == O_WRONLY;
    return 0;
}

fs_handle *fs_wr_handle_of(struct fuse_file_info *fi)
{
    return fi ? (fs_handle *)(uintptr_t)fi->fh : NULL;
}

wr_handle *fs_wr_of(struct fuse_file_info *fi)
{
    fs_handle *h = fs_wr_handle_of(fi);
    return h && !h->view ? h->wbuf : NULL;
}
