/* rw mounts: attributes, listings and access of paths with pending
 * files and directories only we know of. */
#include "wr_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- attributes and listings ---- */

static void stat_file(fs_mount *m, uint64_t size, struct stat *st)
{
    fs_node f = { .is_dir = false };
    fs_mount *cur = fs_rw_pin(m);
    fs_fill_stat(cur, &f, size, st);
    fs_snapshot_unref(cur);
}

static void stat_dir(fs_mount *m, struct stat *st)
{
    fs_node d = { .is_dir = true };
    fs_mount *cur = fs_rw_pin(m);
    fs_fill_stat(cur, &d, 0, st);
    fs_snapshot_unref(cur);
}

int fs_wr_getattr(fs_root *r, const char *path, struct stat *st, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = fs_wr_of(fi);
    if (wh) {
        stat_file(m, atomic_load(&wh->wf->size), st);
        return 0;
    }
    if (!path)
        return -ENOENT;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (rc)
        return rc;
    switch (pi.kind) {
    case P_NEW:
        stat_file(m, atomic_load(&pi.wf->size), st);
        break;
    case P_XDIR:
        stat_dir(m, st);
        break;
    case P_FILE: {
        rc = fs_read_ops.getattr(r, path, st, NULL);
        pthread_mutex_lock(&m->ws->lock);
        fs_wfile *wf = fs_ws_find_key(m->ws, pi.fqn);
        if (!rc && wf) {
            uint64_t size = atomic_load(&wf->size);
            st->st_size = (off_t)size;
            st->st_blocks = (blkcnt_t)((size + 511) / 512);
        }
        pthread_mutex_unlock(&m->ws->lock);
        break;
    }
    default:
        rc = fs_read_ops.getattr(r, path, st, NULL);
        if (rc == 0 && pi.kind == P_VIEW)
            st->st_mode = (st->st_mode & ~0777u) | 0444;
    }
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

typedef struct {
    char **v;
    size_t n, cap;
    int err;
} name_list;

static void names_add(name_list *l, const char *name)
{
    if (l->err || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->err = -ENOMEM;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(name)))
        l->err = -ENOMEM;
    else
        l->n++;
}

static int collect_name(void *ctx, const char *name, const struct stat *st)
{
    names_add(ctx, name);
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first component of path below dir, if path lies below dir. */
static bool child_name(const char *path, const char *dir, char *out, size_t cap)
{
    size_t n = strlen(dir);
    const char *rest;
    if (n == 1 && dir[0] == '/')
        rest = path + 1;
    else if (strncmp(path, dir, n) == 0 && path[n] == '/')
        rest = path + n + 1;
    else
        return false;
    const char *slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    if (!len || len >= cap)
        return false;
    memcpy(out, rest, len);
    out[len] = '\0';
    return true;
}

int fs_wr_readdir(fs_root *r, const char *path, fs_dir_fill fill, void *ctx, bool plus,
                  uint64_t skip)
{
    fs_mount *m = r->rw;
    if (!path)
        return -ENOENT;
    name_list l = { 0 };
    int rc = fs_read_ops.readdir(r, path, collect_name, &l, false, 0);
    bool known = rc == 0;
    fs_wstate *ws = m->ws;
    char name[1024];
    pthread_mutex_lock(&ws->lock);
    if (rc == -ENOENT && fs_ws_is_dir(ws, path)) {
        rc = 0;
        known = true;
    }
    for (size_t i = 0; known && i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (wf->is_new && !wf->unlinked && wf->path && child_name(wf->path, path, name, sizeof name))
            names_add(&l, name);
    }
    for (size_t i = 0; known && i < ws->ndirs; i++)
        if (child_name(ws->dirs[i], path, name, sizeof name))
            names_add(&l, name);
    pthread_mutex_unlock(&ws->lock);
    if (!rc)
        rc = l.err;
    if (!rc) {
        if (l.n > 1)
            qsort(l.v, l.n, sizeof *l.v, cmp_name);
        for (size_t i = 0; i < l.n; i++) {
            if (i > 0 && strcmp(l.v[i], l.v[i - 1]) == 0)
                continue; /* a name both committed and pending */
            if (skip) {
                skip--;
                continue;
            }
            if (fill(ctx, l.v[i], NULL))
                break;
        }
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    return rc;
}

int fs_wr_opendir(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (!rc && !fs_wr_is_dir_kind(pi.kind))
        rc = pi.kind == P_NONE ? -ENOENT : pi.kind == P_VIEW ? fs_read_ops.opendir(r, path)
                                                             : -ENOTDIR;
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

int fs_wr_access(fs_root *r, const char *path, int mask)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (!rc && pi.kind == P_NONE)
        rc = -ENOENT;
    if (!rc && pi.kind == P_VIEW && (mask & W_OK))
        rc = -EACCES;
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}
