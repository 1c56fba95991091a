/* rw mounts: creating and opening files (SPEC "Writes"). */
#include "wr_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- opening ---- */

/* A new file at path (create/mknod); its key is the path's FQN, without
 * ".npy" for npy files.  Returns it held. */
static int make_new_file(fs_mount *m, const char *path, mode_t mode, fs_wfile **out)
{
    if ((mode & S_IFMT) && !S_ISREG(mode))
        return -EPERM; /* only regular files can be keys */
    fs_wstate *ws = m->ws;
    if (ws->broken)
        return -EIO;
    int rc = fs_wr_check_parent(m, path);
    if (rc)
        return rc;
    bool npy = fs_wr_has_npy_suffix(fs_wr_base_name(path));
    char *trimmed = strndup(path, strlen(path) - (npy ? 4 : 0));
    char *fqn = trimmed ? fs_path_to_fqn(trimmed) : NULL;
    free(trimmed);
    if (!fqn)
        return -ENOMEM;
    path_info pi;
    fs_mount *cur;
    rc = fs_wr_lock_free_name(m, path, &pi, &cur);
    if (!rc && ck_find_key(cur->ck, fqn))
        rc = -EEXIST; /* another path names the same key */
    fs_wfile *wf = NULL;
    if (!rc) {
        for (size_t i = 0; i < ws->nfiles && !rc; i++)
            if (ws->files[i]->is_new && !ws->files[i]->unlinked &&
                strcmp(ws->files[i]->fqn, fqn) == 0)
                rc = -EEXIST;
        if (!rc && !(wf = fs_wfile_new(ws, fqn, path)))
            rc = -ENOMEM;
        if (!rc) {
            wf->is_new = true;
            wf->npy = npy;
            wf->refs = 1;
            if ((rc = fs_ws_add(ws, wf))) {
                fs_wfile_free(wf);
                wf = NULL;
            }
        }
    }
    pthread_mutex_unlock(&ws->lock);
    fs_snapshot_unref(cur);
    fs_wr_info_clear(ws, &pi);
    free(fqn);
    *out = wf;
    return rc;
}

int fs_wr_create(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    fs_wfile *wf;
    int rc = make_new_file(m, path, mode, &wf);
    if (rc)
        return rc;
    pthread_mutex_lock(&m->ws->lock);
    wf->writers++;
    pthread_mutex_unlock(&m->ws->lock);
    rc = fs_wr_new_handle(wf, true, fi);
    if (rc) {
        pthread_mutex_lock(&m->ws->lock);
        wf->writers--;
        fs_ws_put_locked(m->ws, wf);
        pthread_mutex_unlock(&m->ws->lock);
    }
    return rc;
}

int fs_wr_mknod(fs_root *r, const char *path, mode_t mode, dev_t rdev)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    fs_wfile *wf;
    int rc = make_new_file(m, path, mode, &wf);
    if (!rc)
        fs_ws_put(m->ws, wf); /* a placeholder: kept, waiting for data */
    return rc;
}

/* np.save over X.npy where X is a key: a new npy file that replaces X. */
static int open_npy_replacement(fs_mount *m, const char *path, const char *fqn,
                                struct fuse_file_info *fi)
{
    fs_wstate *ws = m->ws;
    pthread_mutex_lock(&ws->lock);
    fs_wfile *wf = fs_wfile_new(ws, fqn, path);
    int rc = wf ? 0 : -ENOMEM;
    if (!rc) {
        wf->is_new = wf->npy = wf->replaces = true;
        wf->refs = 1;
        wf->writers = 1;
        if ((rc = fs_ws_add(ws, wf))) {
            fs_wfile_free(wf);
            wf = NULL;
        }
    }
    pthread_mutex_unlock(&ws->lock);
    if (!rc && (rc = fs_wr_new_handle(wf, true, fi))) {
        pthread_mutex_lock(&ws->lock);
        wf->refs = wf->writers = 0;
        wf->unlinked = true;
        fs_ws_put_locked(ws, wf);
        pthread_mutex_unlock(&ws->lock);
    }
    return rc;
}

int fs_wr_open(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    bool writable = (fi->flags & O_ACCMODE) != O_RDONLY;
    bool trunc = writable && (fi->flags & O_TRUNC);
    if (!path)
        return -ENOENT;
    if (writable && ws->broken)
        return -EIO;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (rc)
        return rc;
    fs_wfile *wf = NULL;
    switch (pi.kind) {
    case P_NEW:
        wf = pi.wf;
        pi.wf = NULL; /* the handle keeps the hold */
        break;
    case P_FILE:
        rc = fs_wr_attach_key(m, path, &wf);
        break;
    case P_DIR:
    case P_XDIR:
        rc = -EISDIR;
        break;
    case P_VIEW: {
        /* a view: read-only, except an npy view opened to be replaced */
        const ck_key *k = NULL;
        char *fqn = NULL;
        if (trunc && fs_wr_has_npy_suffix(fs_wr_base_name(path))) {
            fs_view *v;
            fs_mount *cur = fs_rw_pin(m);
            if (fs_view_lookup(cur, path, &v) == 0) {
                k = fs_view_key(v);
                fqn = k && k->kind == CK_KEY_TENSOR ? strdup(k->fqn) : NULL;
                fs_view_release(cur, v);
            }
            fs_snapshot_unref(cur);
        }
        fs_wr_info_clear(ws, &pi);
        if (fqn) {
            rc = open_npy_replacement(m, path, fqn, fi);
            free(fqn);
            return rc;
        }
        rc = fs_read_ops.open(r, path, fi);
        fi->keep_cache = 0; /* views change at commits too */
        return rc;
    }
    default:
        rc = -ENOENT;
    }
    fs_wr_info_clear(ws, &pi);
    if (rc)
        return rc;
    if (writable) {
        pthread_mutex_lock(&ws->lock);
        wf->writers++;
        pthread_mutex_unlock(&ws->lock);
    }
    if (trunc) {
        pthread_mutex_lock(&wf->lock);
        rc = fs_wfile_truncate(wf, 0);
        pthread_mutex_unlock(&wf->lock);
    }
    if (!rc)
        rc = fs_wr_new_handle(wf, writable, fi);
    if (rc) {
        pthread_mutex_lock(&ws->lock);
        if (writable)
            wf->writers--;
        fs_ws_put_locked(ws, wf);
        pthread_mutex_unlock(&ws->lock);
    }
    return rc;
}
