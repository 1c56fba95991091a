/* rw mounts: mkdir, rmdir, unlink and rename, each a commit of its own
 * when it changes committed keys. */
#include "wr_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- namespace ---- */

int fs_wr_mkdir(fs_root *r, const char *path, mode_t mode)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    if (m->opts.flat)
        return -EPERM; /* a flat mount has no directories */
    int rc = fs_wr_check_parent(m, path);
    if (rc)
        return rc;
    path_info pi;
    fs_mount *cur;
    rc = fs_wr_lock_free_name(m, path, &pi, &cur);
    if (!rc)
        rc = fs_ws_add_dir(m->ws, path);
    pthread_mutex_unlock(&m->ws->lock);
    fs_snapshot_unref(cur);
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

int fs_wr_rmdir(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    if (strcmp(path, "/") == 0)
        return -EBUSY;
    path_info pi;
    fs_mount *cur;
    bool view;
    int rc = fs_wr_classify_lock(m, path, &pi, &view, &cur);
    if (!rc) {
        switch (pi.kind) {
        case P_DIR:
            rc = pi.dir_has_children ? -ENOTEMPTY : 0;
            break;
        case P_XDIR:
            if (fs_ws_has_children(m->ws, path))
                rc = -ENOTEMPTY;
            else
                fs_ws_remove_dir(m->ws, path);
            break;
        case P_NONE: rc = view ? -ENOTDIR : -ENOENT; break;
        default: rc = -ENOTDIR;
        }
    }
    pthread_mutex_unlock(&m->ws->lock);
    fs_snapshot_unref(cur);
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

/* Keeps the directory a removed key leaves behind. */
static void keep_parent(fs_mount *m, const char *path)
{
    char *parent = fs_path_parent(path);
    if (!parent)
        return;
    pthread_mutex_lock(&m->ws->lock);
    fs_ws_add_dir(m->ws, parent);
    pthread_mutex_unlock(&m->ws->lock);
    free(parent);
}

static void drop_new(fs_mount *m, fs_wfile *wf)
{
    pthread_mutex_lock(&m->ws->lock);
    wf->unlinked = true;
    pthread_mutex_unlock(&m->ws->lock);
}

int fs_wr_unlink(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    if (!path)
        return -EINVAL;
    pthread_mutex_lock(&ws->commit_lock);
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (!rc) {
        switch (pi.kind) {
        case P_NEW: /* never committed: nothing on disk to change */
            drop_new(m, pi.wf);
            keep_parent(m, path);
            break;
        case P_FILE: {
            fs_ns_change ns = { .drop = pi.fqn };
            rc = fs_commit_locked(m, NULL, 0, &ns, false);
            if (!rc)
                keep_parent(m, path);
            break;
        }
        case P_DIR: case P_XDIR: rc = -EISDIR; break;
        case P_VIEW: rc = -EACCES; break;
        default: rc = -ENOENT;
        }
    }
    fs_wr_info_clear(ws, &pi);
    pthread_mutex_unlock(&ws->commit_lock);
    return rc;
}

/* to's FQN as a rename target; ".npy" names a new npy file's key. */
static char *target_fqn(const char *to, bool strip_npy)
{
    char *t = strndup(to, strlen(to) - (strip_npy ? 4 : 0));
    char *f = t ? fs_path_to_fqn(t) : NULL;
    free(t);
    return f;
}

/* fqn is free for a key: no committed key (other than except) and no
 * pending file (other than self) has it. */
static bool fqn_free(fs_mount *m, const char *fqn, const char *except, const fs_wfile *self)
{
    pthread_mutex_lock(&m->ws->lock);
    fs_mount *cur = fs_rw_pin(m);
    bool taken = ck_find_key(cur->ck, fqn) && !(except && strcmp(fqn, except) == 0);
    for (size_t i = 0; !taken && i < m->ws->nfiles; i++) {
        const fs_wfile *wf = m->ws->files[i];
        taken = wf != self && wf->is_new && !wf->unlinked && strcmp(wf->fqn, fqn) == 0;
    }
    pthread_mutex_unlock(&m->ws->lock);
    fs_snapshot_unref(cur);
    return !taken;
}

static char *with_dot(const char *fqn)
{
    size_t n = strlen(fqn);
    char *s = malloc(n + 2);
    if (s) {
        memcpy(s, fqn, n);
        s[n] = '.';
        s[n + 1] = '\0';
    }
    return s;
}

static bool has_keys_under(fs_mount *m, const char *prefix)
{
    fs_mount *cur = fs_rw_pin(m);
    size_t n = strlen(prefix);
    bool any = false;
    for (size_t i = 0; !any && i < cur->ck->nkeys; i++)
        any = strncmp(cur->ck->keys[i].fqn, prefix, n) == 0;
    fs_snapshot_unref(cur);
    return any;
}

/* Whether a file may be renamed onto dst: 0, or what rename(2) answers. */
static int file_target_ok(const path_info *dst, bool noreplace)
{
    if (fs_wr_is_dir_kind(dst->kind))
        return -EISDIR;
    if (dst->kind == P_VIEW)
        return -EACCES;
    if (dst->kind != P_NONE && noreplace)
        return -EEXIST;
    return 0;
}

static int rename_new(fs_mount *m, path_info *src, path_info *dst, const char *to, bool noreplace)
{
    int rc = file_target_ok(dst, noreplace);
    if (rc)
        return rc;
    bool npy = fs_wr_has_npy_suffix(fs_wr_base_name(to));
    char *fqn = target_fqn(to, npy);
    if (!fqn)
        return -ENOMEM;
    const char *replaced = dst->kind == P_FILE ? dst->fqn : NULL;
    if (!fqn_free(m, fqn, replaced, src->wf))
        rc = -EEXIST;
    if (!rc && dst->kind == P_FILE) {
        fs_ns_change ns = { .drop = dst->fqn };
        rc = fs_commit_locked(m, NULL, 0, &ns, false);
    }
    if (!rc && dst->kind == P_NEW && dst->wf != src->wf)
        drop_new(m, dst->wf);
    if (!rc) {
        char *path = strdup(to);
        pthread_mutex_lock(&src->wf->lock);
        pthread_mutex_lock(&m->ws->lock);
        if (path) {
            free(src->wf->path);
            src->wf->path = path;
            free(src->wf->fqn);
            src->wf->fqn = fqn;
            fqn = NULL;
            src->wf->npy = npy;
        } else {
            rc = -ENOMEM;
        }
        pthread_mutex_unlock(&m->ws->lock);
        pthread_mutex_unlock(&src->wf->lock);
    }
    free(fqn);
    return rc;
}

static int rename_key(fs_mount *m, path_info *src, path_info *dst, const char *to, bool noreplace)
{
    int rc = file_target_ok(dst, noreplace);
    if (rc)
        return rc;
    char *fqn = target_fqn(to, false);
    if (!fqn)
        return -ENOMEM;
    const char *replaced = dst->kind == P_FILE ? dst->fqn : NULL;
    if (strcmp(fqn, src->fqn) != 0 && !fqn_free(m, fqn, replaced, NULL))
        rc = -EEXIST;
    if (!rc && dst->kind == P_NEW)
        drop_new(m, dst->wf);
    if (!rc) {
        fs_ns_change ns = { .drop = replaced, .from = src->fqn, .to = fqn };
        rc = fs_commit_locked(m, NULL, 0, &ns, false);
    }
    free(fqn);
    return rc;
}

static int rename_dir(fs_mount *m, path_info *dst, const char *from, const char *to, bool noreplace)
{
    if (dst->kind == P_NEW || dst->kind == P_FILE || dst->kind == P_VIEW)
        return -ENOTDIR;
    if (dst->kind != P_NONE && noreplace)
        return -EEXIST;
    size_t fl = strlen(from);
    if (strncmp(to, from, fl) == 0 && to[fl] == '/')
        return -EINVAL; /* into itself */
    if (dst->kind == P_DIR)
        return -ENOTEMPTY; /* a tree directory always holds keys */
    fs_wstate *ws = m->ws;
    if (dst->kind == P_XDIR) {
        pthread_mutex_lock(&ws->lock);
        bool busy = fs_ws_has_children(ws, to);
        if (!busy)
            fs_ws_remove_dir(ws, to);
        pthread_mutex_unlock(&ws->lock);
        if (busy)
            return -ENOTEMPTY;
    }
    char *ff = fs_path_to_fqn(from), *tf = fs_path_to_fqn(to);
    char *fp = ff ? with_dot(ff) : NULL, *tp = tf ? with_dot(tf) : NULL;
    int rc = fp && tp ? 0 : -ENOMEM;
    if (!rc) {
        fs_ns_change ns = { .from = fp, .to = tp, .prefix = true, .from_path = from, .to_path = to };
        if (has_keys_under(m, fp)) {
            rc = fs_commit_locked(m, NULL, 0, &ns, false);
        } else { /* only pending files and empty directories move */
            pthread_mutex_lock(&ws->lock);
            fs_ws_apply_ns(ws, &ns);
            pthread_mutex_unlock(&ws->lock);
        }
    }
    free(ff);
    free(tf);
    free(fp);
    free(tp);
    return rc;
}

int fs_wr_rename(fs_root *r, const char *from, const char *to, unsigned int flags)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    if (!from || !to)
        return -EINVAL;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL; /* RENAME_EXCHANGE has no checkpoint meaning */
    if (strcmp(from, to) == 0)
        return 0;
    if (strcmp(from, "/") == 0)
        return -EBUSY;
    int rc = fs_wr_check_parent(m, to);
    if (rc)
        return rc;
    bool noreplace = flags & RENAME_NOREPLACE;
    pthread_mutex_lock(&ws->commit_lock);
    path_info src, dst;
    rc = fs_wr_classify(m, from, &src);
    if (!rc && (rc = fs_wr_classify(m, to, &dst)))
        fs_wr_info_clear(ws, &src);
    if (rc) {
        pthread_mutex_unlock(&ws->commit_lock);
        return rc;
    }
    switch (src.kind) {
    case P_NEW: rc = rename_new(m, &src, &dst, to, noreplace); break;
    case P_FILE: rc = rename_key(m, &src, &dst, to, noreplace); break;
    case P_DIR: case P_XDIR: rc = rename_dir(m, &dst, from, to, noreplace); break;
    case P_VIEW: rc = -EACCES; break;
    default: rc = -ENOENT;
    }
    if (!rc && src.kind != P_NEW)
        keep_parent(m, from);
    fs_wr_info_clear(ws, &src);
    fs_wr_info_clear(ws, &dst);
    pthread_mutex_unlock(&ws->commit_lock);
    return rc;
}
