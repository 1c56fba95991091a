/* Pending writes of an rw mount and the commit that turns them into a new
 * checkpoint state (see write_state.h).  The commit describes the complete
 * next state to planner/commit.c, reopens the committed directory, builds
 * a new tree, and swaps both in under the mount's write lock, so a read
 * sees the old state or the new one, never a mix.  The old state is freed
 * a little later: read replies may still be splicing from its file
 * descriptors after the read operation returned. */
#include "write_state.h"
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "chunk_reader.h"
#include "commit.h"
#include "npy.h"
#include "views.h"


/* ---- names ---- */

static size_t unescape(const char *s, size_t n, char *out)
{
    if (n == 1 && s[0] == '%')
        return 0;
    if (n == 3 && memcmp(s, "%2E", 3) == 0) {
        out[0] = '.';
        return 1;
    }
    if (n == 6 && memcmp(s, "%2E%2E", 6) == 0) {
        out[0] = out[1] = '.';
        return 2;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && n - i >= 3 && memcmp(s + i, "%25", 3) == 0) {
            out[o++] = '%';
            i += 2;
        } else if (s[i] == '%' && n - i >= 3 && memcmp(s + i, "%2F", 3) == 0) {
            out[o++] = '/';
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

char *fs_path_to_fqn(const char *path)
{
    size_t n = strlen(path);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    const char *p = path;
    while (*p == '/')
        p++;
    int first = 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!first)
            out[o++] = '.';
        first = 0;
        o += unescape(p, len, out + o);
        p += len;
        while (*p == '/')
            p++;
    }
    out[o] = '\0';
    return out;
}

char *fs_path_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static bool path_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    if (n == 1 && dir[0] == '/')
        return path[0] == '/' && path[1];
    return strncmp(path, dir, n) == 0 && path[n] == '/';
}

/* dir + rest of path after old_dir (path is under old_dir or equal). */
static char *rebase(const char *path, const char *old_dir, const char *new_dir)
{
    size_t a = strlen(old_dir), b = strlen(new_dir), c = strlen(path);
    char *s = malloc(b + (c - a) + 1);
    if (s) {
        memcpy(s, new_dir, b);
        memcpy(s + b, path + a, c - a + 1);
    }
    return s;
}

/* ---- the table ---- */

fs_wfile *fs_wfile_new(fs_wstate *ws, const char *fqn, const char *path)
{
    fs_wfile *wf = calloc(1, sizeof *wf);
    if (!wf)
        return NULL;
    pthread_mutex_init(&wf->lock, NULL);
    wf->fqn = strdup(fqn);
    wf->path = path ? strdup(path) : NULL;
    wf->limit = UINT64_MAX;
    if (!wf->fqn || (path && !wf->path) || fs_wbuf_new(ws->pool, &wf->buf)) {
        fs_wfile_free(wf);
        return NULL;
    }
    return wf;
}

void fs_wfile_free(fs_wfile *wf)
{
    if (!wf)
        return;
    fs_wbuf_free(wf->buf);
    fs_wstream_free(wf->stream);
    free(wf->fqn);
    free(wf->path);
    pthread_mutex_destroy(&wf->lock);
    free(wf);
}

fs_wfile *fs_ws_find_new(fs_wstate *ws, const char *path)
{
    for (size_t i = 0; path && i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (wf->is_new && !wf->unlinked && wf->path && strcmp(wf->path, path) == 0)
            return wf;
    }
    return NULL;
}

fs_wfile *fs_ws_find_key(fs_wstate *ws, const char *fqn)
{
    for (size_t i = 0; i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (!wf->is_new && !wf->unlinked && strcmp(wf->fqn, fqn) == 0)
            return wf;
    }
    return NULL;
}

int fs_ws_add(fs_wstate *ws, fs_wfile *wf)
{
    if (ws->nfiles == ws->cap) {
        size_t cap = ws->cap ? ws->cap * 2 : 16;
        fs_wfile **v = realloc(ws->files, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        ws->files = v;
        ws->cap = cap;
    }
    ws->files[ws->nfiles++] = wf;
    return 0;
}

/* Pending content keeps a wfile alive with no handle on it: a new file
 * waiting for its commit (at unmount at the latest). */
static bool awaited(const fs_wfile *wf)
{
    return !wf->unlinked && (wf->is_new || wf->dirty);
}

void fs_ws_put_locked(fs_wstate *ws, fs_wfile *wf)
{
    if (wf->refs > 0)
        wf->refs--;
    if (wf->refs > 0 || awaited(wf))
        return;
    for (size_t i = 0; i < ws->nfiles; i++)
        if (ws->files[i] == wf) {
            ws->files[i] = ws->files[--ws->nfiles];
            fs_wfile_free(wf);
            return;
        }
}

void fs_ws_put(fs_wstate *ws, fs_wfile *wf)
{
    pthread_mutex_lock(&ws->lock);
    fs_ws_put_locked(ws, wf);
    pthread_mutex_unlock(&ws->lock);
}

bool fs_ws_is_explicit_dir(fs_wstate *ws, const char *path)
{
    for (size_t i = 0; path && i < ws->ndirs; i++)
        if (strcmp(ws->dirs[i], path) == 0)
            return true;
    return false;
}

/* Ancestors of extra dirs and of pending files are directories too, so a
 * path whose keys are gone stays reachable while something lies below. */
bool fs_ws_is_dir(fs_wstate *ws, const char *path)
{
    if (!path)
        return false;
    if (fs_ws_is_explicit_dir(ws, path))
        return true;
    return fs_ws_has_children(ws, path);
}

int fs_ws_add_dir(fs_wstate *ws, const char *path)
{
    if (strcmp(path, "/") == 0 || fs_ws_is_explicit_dir(ws, path))
        return 0;
    if (ws->ndirs == ws->dcap) {
        size_t cap = ws->dcap ? ws->dcap * 2 : 8;
        char **v = realloc(ws->dirs, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        ws->dirs = v;
        ws->dcap = cap;
    }
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    ws->dirs[ws->ndirs++] = copy;
    return 0;
}

void fs_ws_remove_dir(fs_wstate *ws, const char *path)
{
    for (size_t i = 0; i < ws->ndirs; i++)
        if (strcmp(ws->dirs[i], path) == 0) {
            free(ws->dirs[i]);
            ws->dirs[i] = ws->dirs[--ws->ndirs];
            return;
        }
}

bool fs_ws_has_children(fs_wstate *ws, const char *dir)
{
    for (size_t i = 0; i < ws->nfiles; i++) {
        const fs_wfile *wf = ws->files[i];
        if (wf->is_new && !wf->unlinked && wf->path && path_under(wf->path, dir))
            return true;
    }
    for (size_t i = 0; i < ws->ndirs; i++)
        if (path_under(ws->dirs[i], dir))
            return true;
    return false;
}

/* ---- content ---- */

typedef struct {
    fs_mount *m;
    fs_wfile *wf;
    const ck_key *key; /* committed content, or NULL */
    uint64_t shift;    /* npy header bytes skipped by commit readers */
} content_ctx;

/* What the file holds where nothing was written: the committed bytes below
 * base_size, zeros from there on. */
static int fill_base(void *ctx, uint64_t off, void *dst, size_t len)
{
    content_ctx *c = ctx;
    if (c->wf->stream) /* a new file: nothing committed below */
        return fs_wstream_read(c->wf->stream, off, dst, len);
    uint64_t base = c->key ? c->wf->base_size : 0;
    size_t n = off < base ? (size_t)(base - off < len ? base - off : len) : 0;
    size_t got = 0;
    if (n) {
        int rc = ck_key_read(c->m->ck, c->key, off, dst, n, &got);
        if (rc)
            return rc;
    }
    memset((uint8_t *)dst + got, 0, len - got);
    return 0;
}

static const ck_key *committed_key(fs_mount *m, fs_wfile *wf)
{
    pthread_mutex_lock(&m->ws->lock);
    const ck_key *k = wf->is_new ? NULL : ck_find_key(m->ck, wf->fqn);
    pthread_mutex_unlock(&m->ws->lock);
    return k;
}

int fs_wfile_read(fs_mount *m, fs_wfile *wf, uint64_t off, void *dst, size_t len)
{
    /* wf->lock held: a commit of wf publishes its new state holding it */
    fs_mount *cur = fs_rw_pin(m);
    content_ctx c = { cur, wf, committed_key(cur, wf), 0 };
    int rc = fs_wbuf_read(wf->buf, off, dst, len, fill_base, &c);
    fs_snapshot_unref(cur);
    return rc;
}

/* Streams below this many payload bytes are not worth a data file of their
 * own: small new files keep sharing the commit's one data file. */
#define STREAM_MIN (1ull << 20)

/* A new file's first write, at offset 0: if the file's dtype and shape are
 * known now (an npy header whole in this write, or declared xattrs), its
 * bytes go to a stream file from here on (write_stream.h).  Otherwise, or
 * when the stream cannot be had, the buffer takes them as before. */
static void try_stream(fs_mount *m, fs_wfile *wf, const void *src, size_t len)
{
    fs_wstate *ws = m->ws;
    if (atomic_load(&ws->no_stream) || ck_storage_is_remote(ws->source))
        return; /* object stores: the commit uploads from the buffer */
    ck_dtype dt;
    uint32_t ndim;
    uint64_t shape[CK_MAX_DIMS];
    size_t hdr = 0;
    if (wf->npy) {
        ck_npy_info info;
        char why[160];
        /* incomplete or bad: the buffer keeps it, the commit says what is wrong */
        if (ck_npy_parse(src, len, &info, why, sizeof why) || info.fortran_order)
            return;
        dt = info.dtype;
        ndim = info.ndim;
        memcpy(shape, info.shape, ndim * sizeof *shape);
        hdr = (size_t)info.header_len;
    } else if (wf->has_shape) {
        dt = wf->has_dtype ? wf->dtype : CK_DT_UINT8;
        ndim = wf->ndim;
        memcpy(shape, wf->shape, ndim * sizeof *shape);
    } else {
        return; /* a plain file's shape is its final size */
    }
    const ck_dtype_info *info = ck_dtype_get(dt);
    uint64_t numel, nbytes;
    if (!info || ck_shape_numel(ndim, shape, &numel) ||
        __builtin_mul_overflow(numel, (uint64_t)info->size, &nbytes) || nbytes < STREAM_MIN)
        return;
    /* a compressed checkpoint gets compressed new items: nothing to place */
    fs_mount *cur = fs_rw_pin(m);
    uint32_t tf = ck_default_transforms(cur->ck);
    fs_snapshot_unref(cur);
    if (tf)
        return;
    int rc = fs_wstream_open(ws->dirfd, dt, ndim, shape, hdr, &wf->stream);
    if (rc == -EOPNOTSUPP && !atomic_exchange(&ws->no_stream, true))
        fprintf(stderr, "ckptfs: %s: no unnamed files (O_TMPFILE) or no /proc here: new files "
                "are buffered, then copied at their commit\n", ws->source);
    else if (rc && rc != -EOPNOTSUPP)
        fprintf(stderr, "ckptfs: %s: cannot stream its writes (%s): buffered instead\n",
                wf->path ? wf->path : wf->fqn, strerror(-rc));
}

int fs_wfile_write(fs_mount *m, fs_wfile *wf, uint64_t off, const void *src, size_t len)
{
    uint64_t end;
    if (__builtin_add_overflow(off, (uint64_t)len, &end))
        return -EFBIG;
    if (off >= wf->limit) {
        if (len)
            wf->overflowed = true;
        return len ? -EFBIG : 0;
    }
    if (end > wf->limit) { /* a short write; the next one gets EFBIG */
        len = (size_t)(wf->limit - off);
        end = wf->limit;
    }
    if (!wf->stream && off == 0 && len && wf->is_new && fs_wbuf_empty(wf->buf))
        try_stream(m, wf, src, len);
    int rc;
    if (wf->stream) {
        /* the stream is the file's alone: nothing committed is read */
        rc = fs_wstream_write(wf->stream, off, src, len);
    } else {
        fs_mount *cur = fs_rw_pin(m);
        content_ctx c = { cur, wf, committed_key(cur, wf), 0 };
        rc = fs_wbuf_write(wf->buf, off, src, len, fill_base, &c);
        fs_snapshot_unref(cur);
    }
    if (rc)
        return rc;
    if (end > atomic_load(&wf->size))
        atomic_store(&wf->size, end);
    wf->dirty = true;
    wf->failed = 0;
    return (int)len;
}

int fs_wfile_truncate(fs_wfile *wf, uint64_t size)
{
    uint64_t cur = atomic_load(&wf->size);
    if (size > wf->limit)
        return -EFBIG;
    if (size == cur)
        return 0;
    if (size < cur) {
        if (wf->stream && size == 0) {
            /* written anew from scratch (O_TRUNC): the next first write may
             * start a stream for what it is then */
            fs_wstream_free(wf->stream);
            wf->stream = NULL;
        } else if (wf->stream) {
            int rc = fs_wstream_truncate(wf->stream, size);
            if (rc)
                return rc;
        }
        fs_wbuf_truncate(wf->buf, size);
        if (size < wf->base_size)
            wf->base_size = size;
    }
    atomic_store(&wf->size, size);
    wf->dirty = true;
    wf->failed = 0;
    return 0;
}

bool fs_wfile_is_placeholder(const fs_wfile *wf)
{
    return wf->is_new && !wf->dirty;
}

/* ---- commits ---- */

typedef struct {
    fs_wfile *wf;
    char *fqn;          /* snapshot of wf->fqn */
    bool is_new, replaces;
    content_ctx ctx;
    ck_byte_range *ranges;
    uint64_t shape[CK_MAX_DIMS];
    ck_placed_item placed; /* its stream, when the commit takes it in place */
    bool in_place;
} part;

static int read_content(void *ctx, uint64_t off, void *dst, size_t len)
{
    content_ctx *c = ctx;
    uint64_t at;
    if (__builtin_add_overflow(off, c->shift, &at))
        return -EOVERFLOW;
    return fs_wbuf_read(c->wf->buf, at, dst, len, fill_base, c);
}

/* dtype and shape of a new file's tensor, from its npy header, its xattrs,
 * or its size (1-D uint8). */
static int new_tensor_shape(fs_mount *m, part *p, ck_save_key *sk, char *err, size_t errlen)
{
    fs_wfile *wf = p->wf;
    uint64_t size = atomic_load(&wf->size);
    sk->fqn = p->fqn;
    sk->shape = p->shape;
    sk->read = read_content;
    sk->read_ctx = &p->ctx;
    sk->transforms = ck_default_transforms(m->ck);
    if (wf->npy) {
        size_t hn = size < CK_NPY_MAX_HEADER ? (size_t)size : CK_NPY_MAX_HEADER;
        uint8_t *h = malloc(hn ? hn : 1);
        if (!h)
            return -ENOMEM;
        int rc = read_content(&p->ctx, 0, h, hn);
        ck_npy_info info;
        char why[256] = "";
        if (!rc)
            rc = ck_npy_parse(h, hn, &info, why, sizeof why);
        free(h);
        if (rc == -EAGAIN)
            snprintf(why, sizeof why, "the npy header is incomplete");
        if (rc) {
            snprintf(err, errlen, "%s.npy: not a usable npy file: %s", p->fqn, why);
            return rc == -ENOMEM ? rc : -EINVAL;
        }
        uint64_t numel, nbytes, want;
        const ck_dtype_info *dt = ck_dtype_get(info.dtype);
        if (!dt || ck_shape_numel(info.ndim, info.shape, &numel) ||
            __builtin_mul_overflow(numel, (uint64_t)dt->size, &nbytes) ||
            __builtin_add_overflow(nbytes, info.header_len, &want)) {
            snprintf(err, errlen, "%s.npy: its header describes an impossible array", p->fqn);
            return -EINVAL;
        }
        if (size != want) {
            snprintf(err, errlen,
                     "%s.npy: the file holds %" PRIu64 " bytes, its header needs %" PRIu64,
                     p->fqn, size, want);
            return -EINVAL;
        }
        sk->dtype = info.dtype;
        sk->ndim = info.ndim;
        memcpy(p->shape, info.shape, info.ndim * sizeof *p->shape);
        p->ctx.shift = info.header_len;
        return 0;
    }
    sk->dtype = wf->has_dtype ? wf->dtype : CK_DT_UINT8;
    size_t es = ck_dtype_get(sk->dtype)->size;
    if (wf->has_shape) {
        sk->ndim = wf->ndim;
        memcpy(p->shape, wf->shape, wf->ndim * sizeof *p->shape);
        return 0; /* writes stop at its size; the rest stays zero */
    }
    if (size % es) {
        snprintf(err, errlen, "%s: %" PRIu64 " bytes are no whole number of %s elements", p->fqn,
                 size, ck_dtype_get(sk->dtype)->torch_name);
        return -EINVAL;
    }
    sk->ndim = 1;
    p->shape[0] = size / es;
    return 0;
}

/* A streamed new file whose content is the tensor sk describes becomes its
 * item where it lies; otherwise (another shape by now, a compressed
 * checkpoint, an object store) the commit copies it like buffered content. */
static int place_stream(part *p, ck_save_key *sk, bool remote, char *err, size_t errlen)
{
    fs_wstream *s = p->wf->stream;
    if (!s || remote || sk->transforms)
        return 0;
    int rc = fs_wstream_placed(s, sk->dtype, sk->ndim, sk->shape, p->ctx.shift, &p->placed);
    if (rc < 0) {
        snprintf(err, errlen, "%s: cannot read back its streamed bytes: %s", p->fqn,
                 strerror(-rc));
        return rc;
    }
    if (rc == 0) {
        sk->placed = &p->placed;
        p->in_place = true;
    }
    return 0;
}

/* The save key of a committed key with pending content. */
static int changed_key(part *p, const ck_key *k, ck_save_key *sk, char *err, size_t errlen)
{
    fs_wfile *wf = p->wf;
    uint64_t size = atomic_load(&wf->size);
    sk->read = read_content;
    sk->read_ctx = &p->ctx;
    if (k->kind == CK_KEY_BYTES) {
        sk->rewrite_bytes = 1;
        sk->bytes_len = size;
        return 0;
    }
    if (size != k->nbytes) {
        snprintf(err, errlen,
                 "%s: the file holds %" PRIu64 " bytes, its dtype and shape need %" PRIu64
                 " (a tensor's size is fixed)",
                 k->fqn, size, k->nbytes);
        return -EINVAL;
    }
    size_t n;
    const ck_byte_range *r = fs_wbuf_ranges(wf->buf, &n);
    p->ranges = malloc((n + 1) * sizeof *p->ranges);
    if (!p->ranges)
        return -ENOMEM;
    memcpy(p->ranges, r, n * sizeof *r);
    if (wf->base_size < k->nbytes) /* truncated: the rest is new (zeros or rewritten) */
        p->ranges[n++] = (ck_byte_range){ wf->base_size, k->nbytes };
    sk->dirty = p->ranges;
    sk->ndirty = n;
    return 0;
}

static char *renamed(const fs_ns_change *ns, const char *fqn)
{
    if (!ns || !ns->from)
        return NULL;
    if (!ns->prefix)
        return strcmp(fqn, ns->from) == 0 ? strdup(ns->to) : NULL;
    size_t n = strlen(ns->from);
    if (strncmp(fqn, ns->from, n) != 0)
        return NULL;
    size_t a = strlen(ns->to), b = strlen(fqn + n);
    char *s = malloc(a + b + 1);
    if (s) {
        memcpy(s, ns->to, a);
        memcpy(s + a, fqn + n, b + 1);
    }
    return s;
}

void fs_ws_apply_ns(fs_wstate *ws, const fs_ns_change *ns)
{
    for (size_t i = 0; i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (wf->unlinked)
            continue;
        if (!wf->is_new && ns->drop && strcmp(wf->fqn, ns->drop) == 0) {
            wf->unlinked = true;
            continue;
        }
        char *nf = renamed(ns, wf->fqn);
        if (nf) {
            free(wf->fqn);
            wf->fqn = nf;
        }
        if (wf->is_new && wf->path && ns->from_path && path_under(wf->path, ns->from_path)) {
            char *np = rebase(wf->path, ns->from_path, ns->to_path);
            if (np) {
                free(wf->path);
                wf->path = np;
            }
        }
    }
    if (ns->from_path) {
        for (size_t i = 0; i < ws->ndirs; i++)
            if (strcmp(ws->dirs[i], ns->from_path) == 0 || path_under(ws->dirs[i], ns->from_path)) {
                char *np = rebase(ws->dirs[i], ns->from_path, ns->to_path);
                if (np) {
                    free(ws->dirs[i]);
                    ws->dirs[i] = np;
                }
            }
    }
}

int fs_commit_locked(fs_mount *m, fs_wfile **files, size_t nfiles, const fs_ns_change *ns,
                     bool with_placeholders)
{
    fs_wstate *ws = m->ws;
    char err[768] = "";
    if (ws->broken)
        return -EIO;
    for (size_t i = 0; i < nfiles; i++)
        pthread_mutex_lock(&files[i]->lock);
    /* the state to commit over: the latest, as commits are serialized */
    fs_mount *cur = fs_rw_pin(m);

    /* which files take part, with their names as they are now */
    part *parts = calloc(nfiles ? nfiles : 1, sizeof *parts);
    size_t np = 0;
    int rc = parts ? 0 : -ENOMEM;
    pthread_mutex_lock(&ws->lock);
    for (size_t i = 0; !rc && i < nfiles; i++) {
        fs_wfile *wf = files[i];
        if (wf->unlinked || !(wf->dirty || (with_placeholders && wf->is_new)))
            continue;
        if (wf->overflowed) {
            snprintf(err, sizeof err, "%s: a write went past the tensor's size",
                     wf->is_new && wf->path ? wf->path : wf->fqn);
            wf->failed = rc = -EFBIG;
            break;
        }
        part *p = &parts[np++];
        p->wf = wf;
        p->fqn = strdup(wf->fqn);
        p->is_new = wf->is_new;
        p->replaces = wf->replaces;
        p->ctx = (content_ctx){ cur, wf, NULL, 0 };
        if (!p->fqn)
            rc = -ENOMEM;
    }
    pthread_mutex_unlock(&ws->lock);
    if (rc) {
        fprintf(stderr, "ckptfs: commit refused: %s\n", err[0] ? err : strerror(-rc));
        goto out;
    }
    if (np == 0 && !ns)
        goto out; /* nothing to do */

    ck_checkpoint *ck = cur->ck;
    size_t cap = ck->nkeys + np;
    ck_save_key *ks = calloc(cap ? cap : 1, sizeof *ks);
    char **names = calloc(cap ? cap : 1, sizeof *names);
    size_t nk = 0;
    if (!ks || !names)
        rc = -ENOMEM;
    for (size_t i = 0; !rc && i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (ns && ns->drop && strcmp(k->fqn, ns->drop) == 0)
            continue;
        part *mine = NULL;
        bool replaced = false;
        for (size_t j = 0; j < np; j++) {
            if (strcmp(parts[j].fqn, k->fqn) != 0)
                continue;
            if (parts[j].is_new)
                replaced = parts[j].replaces;
            else
                mine = &parts[j];
        }
        if (replaced)
            continue;
        ck_save_key *sk = &ks[nk];
        sk->old = k;
        sk->fqn = k->fqn;
        if ((names[nk] = renamed(ns, k->fqn)))
            sk->fqn = names[nk];
        if (mine) {
            mine->ctx.key = k;
            rc = changed_key(mine, k, sk, err, sizeof err);
        }
        nk++;
    }
    /* a remote checkpoint is written through its storage; ws->dirfd is
     * then only where writes spill */
    int remote = ck_storage_is_remote(ws->source);
    for (size_t j = 0; !rc && j < np; j++)
        if (parts[j].is_new) {
            ck_save_key *sk = &ks[nk++];
            rc = new_tensor_shape(cur, &parts[j], sk, err, sizeof err);
            if (!rc)
                rc = place_stream(&parts[j], sk, remote, err, sizeof err);
        }

    ck_commit_stats stats;
    if (!rc) {
        ck_commit_opts opts = { .dirfd = remote ? -1 : ws->dirfd, .storage = ck->storage,
                                .checkpoint_id = ws->source,
                                .crash_after = ws->crash_after, .fail_after = ws->fail_after,
                                .fail_errno = ENOSPC };
        rc = ck_commit(ck, ks, nk, &opts, &stats, err, sizeof err);
    }
    /* past here the disk holds the new state even if it cannot be served */
    bool landed = !rc;
    ck_checkpoint *nck = NULL;
    fs_tree *ntree = NULL;
    fs_mount *next = NULL;
    if (!rc) {
        ck_storage_opts so = { .endpoint = m->opts.endpoint, .region = m->opts.region,
                               .profile = m->opts.profile, .addressing = m->opts.addressing };
        ck_open_opts oo = { .cache_bytes = m->opts.cache_bytes, .storage = &so };
        char oerr[512] = "";
        int orc = ck_open(ws->source, &oo, &nck, oerr, sizeof oerr);
        if (!orc)
            orc = fs_tree_build(nck, m->opts.flat, &ntree);
        if (!orc) {
            orc = fs_snapshot_wrap(cur, nck, ntree, &next); /* owns nck and ntree now */
            nck = NULL;
            ntree = NULL;
            if (!orc)
                nck = next->ck;
        }
        if (orc) {
            /* the disk holds the new state but we cannot serve it */
            ws->broken = true;
            snprintf(err, sizeof err, "committed, but cannot reopen the checkpoint: %s",
                     oerr[0] ? oerr : strerror(-orc));
            ck_close(nck);
            nck = NULL;
            rc = -EIO;
        }
    }
    if (!rc) {
        /* The new state and the names of pending files change together:
         * requests pin the state under ws->lock to judge a path in both. */
        pthread_mutex_lock(&ws->lock);
        fs_rw_publish(m, next);
        if (ns)
            fs_ws_apply_ns(ws, ns);
        for (size_t j = 0; j < np; j++) {
            fs_wfile *wf = parts[j].wf;
            wf->is_new = false;
            free(wf->path);
            wf->path = NULL;
        }
        pthread_mutex_unlock(&ws->lock);

        for (size_t j = 0; j < np; j++) {
            fs_wfile *wf = parts[j].wf;
            const ck_key *k = ck_find_key(nck, parts[j].fqn);
            uint64_t size = 0;
            if (k)
                ck_key_size(nck, k, &size);
            fs_wbuf_clear(wf->buf);
            /* a stream in place is the committed data file now (it keeps its
             * name); one that was copied is garbage: both close */
            fs_wstream_free(wf->stream);
            wf->stream = NULL;
            wf->dirty = false;
            wf->failed = 0;
            wf->overflowed = false;
            wf->npy = wf->replaces = wf->has_dtype = wf->has_shape = false;
            atomic_store(&wf->size, size);
            wf->base_size = wf->committed_size = size;
            wf->limit = k && k->kind == CK_KEY_TENSOR ? k->nbytes : UINT64_MAX;
        }
        /* the old state goes with its last pin (requests and open views) */
    } else {
        for (size_t j = 0; j < np; j++) {
            parts[j].wf->failed = rc;
            /* a stream the landed state names is not to be touched again */
            if (parts[j].in_place && !landed)
                fs_wstream_commit_failed(parts[j].wf->stream, &parts[j].placed);
        }
        if (rc == -ESTALE)
            fprintf(stderr, "ckptfs: commit refused: %s; pending changes are kept (readable "
                    "here) until unmount, and every later commit of this mount is refused "
                    "the same way\n", err);
        else
            fprintf(stderr, "ckptfs: commit failed: %s\n", err[0] ? err : strerror(-rc));
    }
    for (size_t i = 0; names && i < nk; i++)
        free(names[i]);
    free(names);
    free(ks);
out:
    for (size_t j = 0; j < np; j++) {
        free(parts[j].fqn);
        free(parts[j].ranges);
    }
    free(parts);
    for (size_t i = nfiles; i-- > 0;)
        pthread_mutex_unlock(&files[i]->lock);
    fs_snapshot_unref(cur);
    return rc;
}

/* ---- life ---- */

static uint64_t env_u64(const char *name)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return *end ? 0 : (uint64_t)v;
}

int fs_write_state_new(fs_mount *m, fs_wstate **out, char *err, size_t errlen)
{
    fs_wstate *ws = calloc(1, sizeof *ws);
    if (!ws)
        return -ENOMEM;
    pthread_mutex_init(&ws->commit_lock, NULL);
    pthread_mutex_init(&ws->lock, NULL);
    char abs[PATH_MAX];
    int rc = 0;
    if (ck_storage_is_remote(m->opts.source)) {
        /* an object store has no directory to spill pending writes to */
        const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        ws->dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(abs, sizeof abs, "%s", m->opts.source);
        if (ws->dirfd < 0) {
            rc = -errno;
            snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        }
    } else {
        ws->dirfd = open(m->opts.source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (ws->dirfd < 0 || !realpath(m->opts.source, abs)) {
            rc = -errno;
            snprintf(err, errlen, "%s: %s", m->opts.source, strerror(errno));
        }
    }
    if (!rc && !(ws->source = strdup(abs)))
        rc = -ENOMEM;
    /* One writer per checkpoint: an flock on the directory itself.  It
     * belongs to this open directory, so it lives as long as the daemon
     * (across fuse_daemonize's fork) and dies with it however it ends:
     * nothing is left on disk that could block a later mount.  An object
     * store has no directory to lock (dirfd is the local spill directory):
     * there the conditional PUT of .metadata refuses the second writer. */
    if (!rc && !ck_storage_is_remote(m->opts.source) && flock(ws->dirfd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            rc = -EBUSY;
            snprintf(err, errlen, "%s: already mounted read-write by another ckptfs "
                     "(it holds the writer lock, an flock on the directory)", ws->source);
        } else {
            /* a filesystem without flock (some network ones): the check of
             * .metadata at every commit still refuses to overwrite others */
            fprintf(stderr, "ckptfs: %s: cannot lock the directory against a second writer: %s\n",
                    ws->source, strerror(errno));
        }
    }
    uint64_t mem = m->opts.cache_bytes ? m->opts.cache_bytes : (256ull << 20);
    if (!rc)
        rc = fs_wbuf_pool_new(ws->dirfd, mem, &ws->pool);
    /* test hooks (tests/bats/crash.bats), see planner/commit.h */
    ws->crash_after = env_u64("CKPTFS_CRASH_AFTER_WRITES");
    ws->fail_after = env_u64("CKPTFS_FAIL_AFTER_WRITES");
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "%s: %s", m->opts.source, strerror(-rc));
        m->ws = ws;
        fs_write_state_free(m, ws);
        return rc;
    }
    *out = ws;
    return 0;
}

void fs_write_state_free(fs_mount *m, fs_wstate *ws)
{
    if (!ws)
        return;
    for (size_t i = 0; i < ws->nfiles; i++)
        fs_wfile_free(ws->files[i]);
    free(ws->files);
    for (size_t i = 0; i < ws->ndirs; i++)
        free(ws->dirs[i]);
    free(ws->dirs);
    fs_wbuf_pool_free(ws->pool);
    if (ws->dirfd >= 0)
        close(ws->dirfd);
    free(ws->source);
    pthread_mutex_destroy(&ws->lock);
    pthread_mutex_destroy(&ws->commit_lock);
    free(ws);
    if (m->ws == ws)
        m->ws = NULL;
}
