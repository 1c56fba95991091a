/* rw mounts: reading and writing open files, and the commits their
 * close, fsync and truncate make. */
#include "wr_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- content ---- */

static int read_pending(fs_mount *m, fs_wfile *wf, uint64_t off, size_t size,
                        struct fuse_bufvec **bufp)
{
    uint64_t fsize = atomic_load(&wf->size);
    size_t n = off >= fsize ? 0 : (fsize - off < size ? (size_t)(fsize - off) : size);
    uint8_t *mem = malloc(n ? n : 1);
    struct fuse_bufvec *bv = malloc(sizeof *bv);
    if (!mem || !bv) {
        free(mem);
        free(bv);
        return -ENOMEM;
    }
    int rc = n ? fs_wfile_read(m, wf, off, mem, n) : 0;
    if (rc) {
        free(mem);
        free(bv);
        return rc == -ENOMEM ? rc : -EIO;
    }
    *bv = FUSE_BUFVEC_INIT(n);
    bv->buf[0].mem = mem;
    *bufp = bv;
    return 0;
}

int fs_wr_read_buf(fs_root *r, const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = fs_wr_of(fi);
    if (!wh)
        return fs_read_ops.read_buf(r, path, bufp, size, off, fi); /* a view */
    if (off < 0)
        return -EINVAL;
    fs_wfile *wf = wh->wf;
    pthread_mutex_lock(&wf->lock);
    bool pending = wf->dirty || wf->is_new;
    pthread_mutex_lock(&m->ws->lock);
    bool gone = wf->unlinked;
    pthread_mutex_unlock(&m->ws->lock);
    if (pending || gone) {
        int rc;
        if (gone && !pending)
            rc = -ESTALE; /* its key is gone */
        else
            rc = read_pending(m, wf, (uint64_t)off, size, bufp);
        pthread_mutex_unlock(&wf->lock);
        return rc;
    }
    pthread_mutex_unlock(&wf->lock);
    /* Nothing pending: the read half's path, on a stand-in node for the
     * key as it is now (the name under ws->lock, as commits change it).
     * The state is pinned only for this call, so the reply is made in
     * memory. */
    pthread_mutex_lock(&m->ws->lock);
    fs_mount *cur = fs_rw_pin(m);
    const ck_key *k = ck_find_key(cur->ck, wf->fqn);
    pthread_mutex_unlock(&m->ws->lock);
    int rc;
    if (!k) {
        rc = -ESTALE;
    } else {
        fs_node node = { .key = k };
        fs_handle h = { .node = &node, .m = cur };
        struct fuse_file_info tfi = *fi;
        tfi.fh = (uint64_t)(uintptr_t)&h;
        rc = fs_read_ops.read_buf(r, path, bufp, size, off, &tfi);
    }
    fs_snapshot_unref(cur);
    return rc;
}

int fs_wr_write(fs_root *r, const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = fs_wr_of(fi);
    if (!wh || !wh->writable)
        return -EBADF;
    if (off < 0)
        return -EINVAL;
    if (m->ws->broken)
        return -EIO;
    fs_wfile *wf = wh->wf;
    pthread_mutex_lock(&wf->lock);
    pthread_mutex_lock(&m->ws->lock);
    bool gone = wf->unlinked;
    pthread_mutex_unlock(&m->ws->lock);
    int rc = gone ? (int)size : fs_wfile_write(m, wf, (uint64_t)off, buf, size);
    pthread_mutex_unlock(&wf->lock);
    return rc;
}

/* ---- commits from handles ---- */

/* Commits wf if it has something pending.  Caller holds a hold on wf. */
static int commit_file(fs_mount *m, fs_wfile *wf, bool with_placeholder)
{
    fs_wstate *ws = m->ws;
    pthread_mutex_lock(&ws->commit_lock);
    int rc = fs_commit_locked(m, &wf, 1, NULL, with_placeholder);
    pthread_mutex_unlock(&ws->commit_lock);
    return rc;
}

/* Pending bytes whose commit failed are dropped when the last writer goes:
 * nothing could commit them later without surprising whoever saw the error.
 * A commit refused because someone else replaced .metadata (-ESTALE) keeps
 * them: they are the only copy of the edit, readable until unmount. */
static void discard_failed(fs_mount *m, fs_wfile *wf)
{
    pthread_mutex_lock(&wf->lock);
    if (wf->dirty && wf->failed && wf->failed != -ESTALE) {
        pthread_mutex_lock(&m->ws->lock);
        fprintf(stderr, "ckptfs: %s: dropping pending writes after a failed commit (%s)\n",
                wf->is_new && wf->path ? wf->path : wf->fqn, strerror(-wf->failed));
        if (wf->is_new)
            wf->unlinked = true;
        pthread_mutex_unlock(&m->ws->lock);
        fs_wbuf_clear(wf->buf);
        atomic_store(&wf->size, wf->committed_size);
        wf->base_size = wf->committed_size;
        wf->dirty = false;
        wf->failed = 0;
        wf->overflowed = false;
    }
    pthread_mutex_unlock(&wf->lock);
}

int fs_wr_flush(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = fs_wr_of(fi);
    if (!wh || !wh->writable)
        return 0;
    pthread_mutex_lock(&m->ws->lock);
    bool last = wh->wf->writers == 1;
    pthread_mutex_unlock(&m->ws->lock);
    if (!last)
        return 0;
    int rc = commit_file(m, wh->wf, false);
    if (rc)
        discard_failed(m, wh->wf); /* close reports it; nothing retries later */
    return rc;
}

int fs_wr_fsync(fs_root *r, const char *path, int datasync, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = fs_wr_of(fi);
    return wh ? commit_file(m, wh->wf, true) : 0;
}

int fs_wr_release(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    fs_handle *h = fs_wr_handle_of(fi);
    if (!h)
        return 0;
    if (h->view)
        return fs_read_ops.release(r, path, fi);
    wr_handle *wh = h->wbuf;
    fs_wfile *wf = wh->wf;
    fs_wstate *ws = m->ws;
    if (wh->writable) {
        pthread_mutex_lock(&ws->lock);
        bool last = --wf->writers == 0;
        pthread_mutex_unlock(&ws->lock);
        if (last) {
            pthread_mutex_lock(&wf->lock);
            bool retry = wf->dirty && !wf->failed;
            pthread_mutex_unlock(&wf->lock);
            if (retry) /* no flush came (or it was not the last): commit now */
                commit_file(m, wf, false);
            discard_failed(m, wf);
        }
    }
    fs_ws_put(ws, wf);
    free(wh);
    free(h);
    return 0;
}

int fs_wr_truncate(fs_root *r, const char *path, off_t size, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    if (size < 0)
        return -EINVAL;
    wr_handle *wh = fs_wr_of(fi);
    if (wh) {
        if (!wh->writable)
            return -EBADF;
        pthread_mutex_lock(&wh->wf->lock);
        int rc = fs_wfile_truncate(wh->wf, (uint64_t)size);
        pthread_mutex_unlock(&wh->wf->lock);
        return rc;
    }
    /* truncate(2) by name: a file nobody may be writing; commit it now */
    pthread_mutex_lock(&ws->commit_lock);
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    fs_wfile *wf = NULL;
    if (!rc) {
        switch (pi.kind) {
        case P_NEW: wf = pi.wf; pi.wf = NULL; break;
        case P_FILE: rc = fs_wr_attach_key(m, path, &wf); break;
        case P_DIR: case P_XDIR: rc = -EISDIR; break;
        case P_VIEW: rc = -EACCES; break;
        default: rc = -ENOENT;
        }
    }
    fs_wr_info_clear(ws, &pi);
    if (!rc) {
        pthread_mutex_lock(&wf->lock);
        uint64_t cur = atomic_load(&wf->size);
        bool fixed = !wf->is_new && wf->limit != UINT64_MAX; /* a committed tensor */
        pthread_mutex_lock(&ws->lock);
        bool writers = wf->writers > 0;
        pthread_mutex_unlock(&ws->lock);
        if ((uint64_t)size > wf->limit)
            rc = -EFBIG;
        else if (fixed && (uint64_t)size != cur && !writers)
            rc = -EINVAL; /* a tensor's size is fixed; only a writer may refill it */
        else
            rc = fs_wfile_truncate(wf, (uint64_t)size);
        bool commit_now = !rc && !writers && !wf->is_new && wf->dirty;
        pthread_mutex_unlock(&wf->lock);
        if (commit_now)
            rc = fs_commit_locked(m, &wf, 1, NULL, false);
        if (rc && commit_now)
            discard_failed(m, wf);
        fs_ws_put(ws, wf);
    }
    pthread_mutex_unlock(&ws->commit_lock);
    return rc;
}
