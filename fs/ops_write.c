/* Write-side FUSE operations of `-o rw` mounts (SPEC "Writes").
 *
 * Every open of a key or of a new file goes through a wfile (write_state.h)
 * that holds its pending bytes; reads of a file with pending bytes are
 * answered from them, other reads by the read half (ops_read.c) with its
 * zero-copy path.  Operations the read half owns are wrapped here only to
 * add what it cannot know: new files not committed yet, directories no key
 * lies under, sizes changed by pending writes.
 *
 * When things reach the disk:
 *   - file content: at fsync, at the close of the last writable handle of
 *     the file (its flush, so close() reports a failure), and at unmount;
 *   - unlink, rename of a committed key or directory: at once, one commit
 *     each (a checkpoint has no other place to keep names);
 *   - a new file that nothing was written to yet waits (so its xattrs can
 *     be set first) until data arrives, fsync, or unmount;
 *   - mkdir: directories exist in a checkpoint only through their keys, so
 *     an empty one lasts until unmount.
 * A commit that fails leaves the checkpoint as it was; the failing close
 * or fsync returns its errno, and a file whose last handle closes after a
 * failed commit drops its pending bytes (logged). */
#include "ops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "chunk_reader.h"
#include "geometry.h"
#include "snapshot.h"
#include "views.h"
#include "write_state.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

typedef struct {
    fs_wfile *wf;
    bool writable;
} wr_handle;

static bool has_npy_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".npy") == 0;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

/* ---- what a path is ---- */

typedef enum { P_NONE, P_NEW, P_FILE, P_DIR, P_XDIR, P_VIEW } path_kind;

typedef struct {
    path_kind kind;
    fs_wfile *wf;          /* P_NEW: with a hold taken */
    char *fqn;             /* P_FILE: the key (malloc'd) */
    bool dir_has_children; /* P_DIR */
} path_info;

static void info_clear(fs_wstate *ws, path_info *pi)
{
    if (pi->wf)
        fs_ws_put(ws, pi->wf);
    free(pi->fqn);
    memset(pi, 0, sizeof *pi);
}

/* What path is in state cur and the table of pending files.  Caller holds
 * ws->lock and pinned cur while holding it: commits publish their state
 * under ws->lock, so the two agree.  Views are not looked at. */
static int classify_in(fs_mount *cur, fs_wstate *ws, const char *path, path_info *pi)
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
static bool is_view(fs_mount *cur, const char *path)
{
    fs_view *v;
    if (fs_tree_lookup(cur->tree, path) || fs_view_lookup(cur, path, &v) != 0)
        return false;
    fs_view_release(cur, v);
    return true;
}

/* What path is now.  *curp (if given) receives the state it was judged
 * in, pinned. */
static int classify_pinned(fs_mount *m, const char *path, path_info *pi, fs_mount **curp)
{
    fs_wstate *ws = m->ws;
    pthread_mutex_lock(&ws->lock);
    fs_mount *cur = fs_rw_pin(m);
    int rc = classify_in(cur, ws, path, pi);
    pthread_mutex_unlock(&ws->lock);
    if (!rc && pi->kind == P_NONE && path && is_view(cur, path))
        pi->kind = P_VIEW;
    if (curp)
        *curp = cur;
    else
        fs_snapshot_unref(cur);
    return rc;
}

static int classify(fs_mount *m, const char *path, path_info *pi)
{
    return classify_pinned(m, path, pi, NULL);
}

static bool is_dir_kind(path_kind k)
{
    return k == P_DIR || k == P_XDIR;
}

/* 0 if the parent of path is a directory, else -ENOENT/-ENOTDIR. */
static int check_parent(fs_mount *m, const char *path)
{
    char *parent = fs_path_parent(path);
    if (!parent)
        return -ENOMEM;
    int rc = 0;
    if (strcmp(parent, "/") != 0) {
        path_info pi;
        rc = classify(m, parent, &pi);
        if (!rc && !is_dir_kind(pi.kind))
            rc = pi.kind == P_NONE ? -ENOENT : -ENOTDIR;
        info_clear(m->ws, &pi);
    }
    free(parent);
    return rc;
}

/* The wfile of a committed key, created on first use; returns it held.
 * The key's size is learnt outside the locks (a bytes key may need its
 * item decoded); if a commit published a new state meanwhile, it is
 * learnt again. */
static int attach_key(fs_mount *m, const char *path, fs_wfile **out)
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

static int new_handle(fs_wfile *wf, bool writable, struct fuse_file_info *fi)
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
    return 0;
}

static fs_handle *handle_of(struct fuse_file_info *fi)
{
    return fi ? (fs_handle *)(uintptr_t)fi->fh : NULL;
}

static wr_handle *wr_of(struct fuse_file_info *fi)
{
    fs_handle *h = handle_of(fi);
    return h && !h->view ? h->wbuf : NULL;
}

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

static int wr_getattr(fs_root *r, const char *path, struct stat *st, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = wr_of(fi);
    if (wh) {
        stat_file(m, atomic_load(&wh->wf->size), st);
        return 0;
    }
    if (!path)
        return -ENOENT;
    path_info pi;
    int rc = classify(m, path, &pi);
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
    info_clear(m->ws, &pi);
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

static int wr_readdir(fs_root *r, const char *path, fs_dir_fill fill, void *ctx, bool plus)
{
    fs_mount *m = r->rw;
    if (!path)
        return -ENOENT;
    name_list l = { 0 };
    int rc = fs_read_ops.readdir(r, path, collect_name, &l, false);
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
        for (size_t i = 0; i < l.n; i++)
            if ((i == 0 || strcmp(l.v[i], l.v[i - 1]) != 0) && fill(ctx, l.v[i], NULL))
                break;
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    return rc;
}

static int wr_opendir(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify(m, path, &pi);
    if (!rc && !is_dir_kind(pi.kind))
        rc = pi.kind == P_NONE ? -ENOENT : pi.kind == P_VIEW ? fs_read_ops.opendir(r, path)
                                                             : -ENOTDIR;
    info_clear(m->ws, &pi);
    return rc;
}

static int wr_access(fs_root *r, const char *path, int mask)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify(m, path, &pi);
    if (!rc && pi.kind == P_NONE)
        rc = -ENOENT;
    if (!rc && pi.kind == P_VIEW && (mask & W_OK))
        rc = -EACCES;
    info_clear(m->ws, &pi);
    return rc;
}

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
    int rc = check_parent(m, path);
    if (rc)
        return rc;
    bool npy = has_npy_suffix(base_name(path));
    char *trimmed = strndup(path, strlen(path) - (npy ? 4 : 0));
    char *fqn = trimmed ? fs_path_to_fqn(trimmed) : NULL;
    free(trimmed);
    if (!fqn)
        return -ENOMEM;
    path_info pi;
    fs_mount *cur = fs_rw_pin(m);
    bool view = is_view(cur, path); /* not under ws->lock: views may read */
    fs_snapshot_unref(cur);
    pthread_mutex_lock(&ws->lock);
    cur = fs_rw_pin(m);
    rc = classify_in(cur, ws, path, &pi);
    if (!rc && (pi.kind != P_NONE || view))
        rc = -EEXIST;
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
    info_clear(ws, &pi);
    free(fqn);
    *out = wf;
    return rc;
}

static int wr_create(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi)
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
    rc = new_handle(wf, true, fi);
    if (rc) {
        pthread_mutex_lock(&m->ws->lock);
        wf->writers--;
        fs_ws_put_locked(m->ws, wf);
        pthread_mutex_unlock(&m->ws->lock);
    }
    return rc;
}

static int wr_mknod(fs_root *r, const char *path, mode_t mode, dev_t rdev)
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
    if (!rc && (rc = new_handle(wf, true, fi))) {
        pthread_mutex_lock(&ws->lock);
        wf->refs = wf->writers = 0;
        wf->unlinked = true;
        fs_ws_put_locked(ws, wf);
        pthread_mutex_unlock(&ws->lock);
    }
    return rc;
}

static int wr_open(fs_root *r, const char *path, struct fuse_file_info *fi)
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
    int rc = classify(m, path, &pi);
    if (rc)
        return rc;
    fs_wfile *wf = NULL;
    switch (pi.kind) {
    case P_NEW:
        wf = pi.wf;
        pi.wf = NULL; /* the handle keeps the hold */
        break;
    case P_FILE:
        rc = attach_key(m, path, &wf);
        break;
    case P_DIR:
    case P_XDIR:
        rc = -EISDIR;
        break;
    case P_VIEW: {
        /* a view: read-only, except an npy view opened to be replaced */
        const ck_key *k = NULL;
        char *fqn = NULL;
        if (trunc && has_npy_suffix(base_name(path))) {
            fs_view *v;
            fs_mount *cur = fs_rw_pin(m);
            if (fs_view_lookup(cur, path, &v) == 0) {
                k = fs_view_key(v);
                fqn = k && k->kind == CK_KEY_TENSOR ? strdup(k->fqn) : NULL;
                fs_view_release(cur, v);
            }
            fs_snapshot_unref(cur);
        }
        info_clear(ws, &pi);
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
    info_clear(ws, &pi);
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
        rc = new_handle(wf, writable, fi);
    if (rc) {
        pthread_mutex_lock(&ws->lock);
        if (writable)
            wf->writers--;
        fs_ws_put_locked(ws, wf);
        pthread_mutex_unlock(&ws->lock);
    }
    return rc;
}

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

static int wr_read_buf(fs_root *r, const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = wr_of(fi);
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

static int wr_write(fs_root *r, const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = wr_of(fi);
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

static int wr_flush(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = wr_of(fi);
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

static int wr_fsync(fs_root *r, const char *path, int datasync, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    wr_handle *wh = wr_of(fi);
    return wh ? commit_file(m, wh->wf, true) : 0;
}

static int wr_release(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    fs_handle *h = handle_of(fi);
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

static int wr_truncate(fs_root *r, const char *path, off_t size, struct fuse_file_info *fi)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    if (size < 0)
        return -EINVAL;
    wr_handle *wh = wr_of(fi);
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
    int rc = classify(m, path, &pi);
    fs_wfile *wf = NULL;
    if (!rc) {
        switch (pi.kind) {
        case P_NEW: wf = pi.wf; pi.wf = NULL; break;
        case P_FILE: rc = attach_key(m, path, &wf); break;
        case P_DIR: case P_XDIR: rc = -EISDIR; break;
        case P_VIEW: rc = -EACCES; break;
        default: rc = -ENOENT;
        }
    }
    info_clear(ws, &pi);
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

/* ---- namespace ---- */

static int wr_mkdir(fs_root *r, const char *path, mode_t mode)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    if (m->opts.flat)
        return -EPERM; /* a flat mount has no directories */
    int rc = check_parent(m, path);
    if (rc)
        return rc;
    path_info pi;
    fs_mount *cur = fs_rw_pin(m);
    bool view = is_view(cur, path); /* not under ws->lock: views may read */
    fs_snapshot_unref(cur);
    pthread_mutex_lock(&m->ws->lock);
    cur = fs_rw_pin(m);
    rc = classify_in(cur, m->ws, path, &pi);
    if (!rc && (pi.kind != P_NONE || view))
        rc = -EEXIST;
    if (!rc)
        rc = fs_ws_add_dir(m->ws, path);
    pthread_mutex_unlock(&m->ws->lock);
    fs_snapshot_unref(cur);
    info_clear(m->ws, &pi);
    return rc;
}

static int wr_rmdir(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    if (!path)
        return -EINVAL;
    if (strcmp(path, "/") == 0)
        return -EBUSY;
    path_info pi;
    fs_mount *cur = fs_rw_pin(m);
    bool view = is_view(cur, path); /* not under ws->lock: views may read */
    fs_snapshot_unref(cur);
    pthread_mutex_lock(&m->ws->lock);
    cur = fs_rw_pin(m);
    int rc = classify_in(cur, m->ws, path, &pi);
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
    info_clear(m->ws, &pi);
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

static int wr_unlink(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    fs_wstate *ws = m->ws;
    if (!path)
        return -EINVAL;
    pthread_mutex_lock(&ws->commit_lock);
    path_info pi;
    int rc = classify(m, path, &pi);
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
    info_clear(ws, &pi);
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
    if (is_dir_kind(dst->kind))
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
    bool npy = has_npy_suffix(base_name(to));
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

static int wr_rename(fs_root *r, const char *from, const char *to, unsigned int flags)
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
    int rc = check_parent(m, to);
    if (rc)
        return rc;
    bool noreplace = flags & RENAME_NOREPLACE;
    pthread_mutex_lock(&ws->commit_lock);
    path_info src, dst;
    rc = classify(m, from, &src);
    if (!rc && (rc = classify(m, to, &dst)))
        info_clear(ws, &src);
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
    info_clear(ws, &src);
    info_clear(ws, &dst);
    pthread_mutex_unlock(&ws->commit_lock);
    return rc;
}

/* ---- extended attributes ---- */

#define XA_DTYPE "user.ckpt.dtype"
#define XA_SHAPE "user.ckpt.shape"

/* "[32,16]", "(32, 16)", "32,16", "[]" -> dims.  0 or -EINVAL. */
static int parse_shape(const char *s, size_t n, uint32_t *ndim, uint64_t *dims)
{
    size_t i = 0;
    uint32_t k = 0;
    while (i < n && (s[i] == ' ' || s[i] == '[' || s[i] == '('))
        i++;
    while (i < n) {
        if (s[i] == ']' || s[i] == ')' || s[i] == ' ' || s[i] == '\n' || s[i] == '\0') {
            i++;
            continue;
        }
        if (s[i] < '0' || s[i] > '9' || k == CK_MAX_DIMS)
            return -EINVAL;
        uint64_t v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
                return -EINVAL;
            i++;
        }
        dims[k++] = v;
        while (i < n && s[i] == ' ')
            i++;
        if (i < n && s[i] == ',')
            i++;
        else if (i < n && s[i] != ']' && s[i] != ')' && s[i] != '\n' && s[i] != '\0')
            return -EINVAL;
    }
    *ndim = k;
    return 0;
}

/* A new file's declared type decides its size: the tensor's bytes. */
static int apply_declaration(fs_wfile *wf)
{
    if (!wf->has_shape) {
        wf->limit = UINT64_MAX;
        return 0;
    }
    const ck_dtype_info *dt = ck_dtype_get(wf->has_dtype ? wf->dtype : CK_DT_UINT8);
    uint64_t numel, nbytes;
    if (ck_shape_numel(wf->ndim, wf->shape, &numel) ||
        __builtin_mul_overflow(numel, (uint64_t)dt->size, &nbytes) || nbytes > INT64_MAX)
        return -EOVERFLOW;
    if (atomic_load(&wf->size) > nbytes)
        return -EFBIG;
    wf->limit = nbytes;
    atomic_store(&wf->size, nbytes);
    return 0;
}

static int wr_setxattr(fs_root *r, const char *path, const char *name, const char *value, size_t size,
                       int flags)
{
    fs_mount *m = r->rw;
    bool is_dtype = strcmp(name, XA_DTYPE) == 0, is_shape = strcmp(name, XA_SHAPE) == 0;
    if (!is_dtype && !is_shape)
        return strncmp(name, "user.ckpt.", 10) == 0 ? -EPERM : -ENOTSUP;
    char text[512];
    if (size >= sizeof text)
        return -EINVAL;
    memcpy(text, value, size);
    text[size] = '\0';
    while (size && (text[size - 1] == '\n' || text[size - 1] == ' '))
        text[--size] = '\0';
    ck_dtype dt = CK_DT_INVALID;
    uint32_t ndim = 0;
    uint64_t dims[CK_MAX_DIMS];
    if (is_dtype && (dt = ck_dtype_from_torch_name(text)) == CK_DT_INVALID)
        return -EINVAL;
    if (is_shape && parse_shape(text, size, &ndim, dims))
        return -EINVAL;
    path_info pi;
    int rc = classify(m, path, &pi);
    if (rc)
        return rc;
    switch (pi.kind) {
    case P_NEW: {
        fs_wfile *wf = pi.wf;
        pthread_mutex_lock(&wf->lock);
        if (wf->npy) {
            rc = -EINVAL; /* its npy header says what it is */
        } else {
            bool had_dtype = wf->has_dtype, had_shape = wf->has_shape;
            ck_dtype old_dt = wf->dtype;
            uint32_t old_ndim = wf->ndim;
            uint64_t old_dims[CK_MAX_DIMS];
            memcpy(old_dims, wf->shape, sizeof old_dims);
            if (is_dtype) {
                wf->has_dtype = true;
                wf->dtype = dt;
            } else {
                wf->has_shape = true;
                wf->ndim = ndim;
                memcpy(wf->shape, dims, ndim * sizeof *dims);
            }
            rc = apply_declaration(wf);
            if (rc) { /* put the old declaration back */
                wf->has_dtype = had_dtype;
                wf->has_shape = had_shape;
                wf->dtype = old_dt;
                wf->ndim = old_ndim;
                memcpy(wf->shape, old_dims, sizeof old_dims);
                apply_declaration(wf);
            }
        }
        pthread_mutex_unlock(&wf->lock);
        break;
    }
    case P_FILE: {
        /* a committed key keeps its type: the same value is accepted (cp -a,
         * rsync -X), another is refused */
        fs_mount *cur = fs_rw_pin(m);
        const ck_key *k = ck_find_key(cur->ck, pi.fqn);
        if (!k || k->kind != CK_KEY_TENSOR)
            rc = -EPERM;
        else if (is_dtype)
            rc = dt == k->dtype ? 0 : -EPERM;
        else
            rc = ndim == k->ndim && memcmp(dims, k->shape, ndim * sizeof *dims) == 0 ? 0 : -EPERM;
        fs_snapshot_unref(cur);
        break;
    }
    case P_NONE: rc = -ENOENT; break;
    default: rc = -EPERM;
    }
    info_clear(m->ws, &pi);
    return rc;
}

/* classify() for the xattr calls, which only a pending new file answers
 * here: 1 with pi filled for one; 0 (pi cleared) for anything else, which
 * the read half answers; or -errno. */
static int classify_new(fs_mount *m, const char *path, path_info *pi)
{
    int rc = classify(m, path, pi);
    if (rc)
        return rc;
    if (pi->kind == P_NEW)
        return 1;
    info_clear(m->ws, pi);
    return 0;
}

static int wr_getxattr(fs_root *r, const char *path, const char *name, char *value, size_t size)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify_new(m, path, &pi);
    if (rc <= 0)
        return rc < 0 ? rc : fs_read_ops.getxattr(r, path, name, value, size);
    fs_wfile *wf = pi.wf;
    char buf[CK_SHAPE_STR_MAX];
    pthread_mutex_lock(&wf->lock);
    pthread_mutex_lock(&m->ws->lock);
    const char *s = NULL;
    if (strcmp(name, "user.ckpt.fqn") == 0)
        s = wf->fqn;
    else if (strcmp(name, "user.ckpt.kind") == 0)
        s = "tensor";
    else if (strcmp(name, XA_DTYPE) == 0 && wf->has_dtype)
        s = ck_dtype_get(wf->dtype)->torch_name;
    else if (strcmp(name, XA_SHAPE) == 0 && wf->has_shape &&
             ck_format_shape(buf, sizeof buf, wf->ndim, wf->shape) > 0)
        s = buf;
    rc = s ? fs_xattr_reply(s, strlen(s), value, size) : -ENODATA;
    pthread_mutex_unlock(&m->ws->lock);
    pthread_mutex_unlock(&wf->lock);
    info_clear(m->ws, &pi);
    return rc;
}

static int wr_listxattr(fs_root *r, const char *path, char *list, size_t size)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify_new(m, path, &pi);
    if (rc <= 0)
        return rc < 0 ? rc : fs_read_ops.listxattr(r, path, list, size);
    char names[128];
    size_t n = 0;
    pthread_mutex_lock(&pi.wf->lock);
    const char *all[] = { "user.ckpt.fqn", "user.ckpt.kind", pi.wf->has_dtype ? XA_DTYPE : NULL,
                          pi.wf->has_shape ? XA_SHAPE : NULL };
    pthread_mutex_unlock(&pi.wf->lock);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) {
            size_t l = strlen(all[i]) + 1;
            memcpy(names + n, all[i], l);
            n += l;
        }
    info_clear(m->ws, &pi);
    return fs_xattr_reply(names, n, list, size);
}

static int wr_removexattr(fs_root *r, const char *path, const char *name)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify(m, path, &pi);
    if (rc)
        return rc;
    bool is_dtype = strcmp(name, XA_DTYPE) == 0, is_shape = strcmp(name, XA_SHAPE) == 0;
    if (pi.kind == P_NEW && (is_dtype || is_shape)) {
        pthread_mutex_lock(&pi.wf->lock);
        if (is_dtype)
            pi.wf->has_dtype = false;
        else
            pi.wf->has_shape = false;
        apply_declaration(pi.wf);
        pthread_mutex_unlock(&pi.wf->lock);
    } else if (pi.kind == P_NONE) {
        rc = -ENOENT;
    } else {
        rc = strncmp(name, "user.ckpt.", 10) == 0 ? -EPERM : -ENODATA;
    }
    info_clear(m->ws, &pi);
    return rc;
}

/* ---- metadata a checkpoint has no place for: accepted so cp -p works ---- */

static int exists(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify(m, path, &pi);
    if (!rc && pi.kind == P_NONE)
        rc = -ENOENT;
    info_clear(m->ws, &pi);
    return rc;
}

static int wr_chmod(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi)
{
    return wr_of(fi) ? 0 : exists(r, path);
}

static int wr_chown(fs_root *r, const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    return wr_of(fi) ? 0 : exists(r, path);
}

static int wr_utimens(fs_root *r, const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    return wr_of(fi) ? 0 : exists(r, path);
}

static int wr_statfs(fs_root *r, const char *path, struct statvfs *sv)
{
    return fs_read_ops.statfs(r, path, sv); /* pending files are not counted */
}

/* ---- wiring ---- */

const fs_path_ops fs_write_ops = {
    .getattr = wr_getattr,
    .readdir = wr_readdir,
    .opendir = wr_opendir,
    .access = wr_access,
    .open = wr_open,
    .create = wr_create,
    .mknod = wr_mknod,
    .read_buf = wr_read_buf,
    .write = wr_write,
    .flush = wr_flush,
    .fsync = wr_fsync,
    .release = wr_release,
    .truncate = wr_truncate,
    .mkdir = wr_mkdir,
    .rmdir = wr_rmdir,
    .unlink = wr_unlink,
    .rename = wr_rename,
    .setxattr = wr_setxattr,
    .getxattr = wr_getxattr,
    .listxattr = wr_listxattr,
    .removexattr = wr_removexattr,
    .chmod = wr_chmod,
    .chown = wr_chown,
    .utimens = wr_utimens,
    .statfs = wr_statfs,
};

int fs_write_init(fs_mount *m, char *err, size_t errlen)
{
    return fs_write_state_new(m, &m->ws, err, errlen);
}

void fs_unmount_commit(fs_mount *m)
{
    fs_wstate *ws = m->ws;
    if (!ws)
        return;
    pthread_mutex_lock(&ws->commit_lock);
    pthread_mutex_lock(&ws->lock);
    size_t n = 0;
    fs_wfile **files = calloc(ws->nfiles ? ws->nfiles : 1, sizeof *files);
    for (size_t i = 0; files && i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (!wf->unlinked && (wf->dirty || wf->is_new)) {
            wf->refs++;
            files[n++] = wf;
        }
    }
    pthread_mutex_unlock(&ws->lock);
    if (n) {
        /* all at once; if one file spoils it, each on its own */
        int rc = fs_commit_locked(m, files, n, NULL, true);
        for (size_t i = 0; rc && n > 1 && i < n; i++)
            fs_commit_locked(m, &files[i], 1, NULL, true);
    }
    for (size_t i = 0; i < n; i++)
        fs_ws_put(ws, files[i]);
    free(files);
    pthread_mutex_unlock(&ws->commit_lock);
    fs_write_state_free(m, ws);
}
