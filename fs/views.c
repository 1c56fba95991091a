/* Views for frameworks: which path names which view, the view objects
 * (reference counted: FUSE threads hold them across open/read/release) and
 * the cache of the ones that cost something to build (safetensors headers
 * per directory, metadata.json).
 *
 * Views belong to one snapshot (snapshot.h), which never changes: an open
 * view keeps its snapshot pinned and reads its bytes. */
#include "views.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "hf_dir.h"
#include "view_head.h"
#include "view_hf.h"
#include "view_metadata.h"
#include "view_npy.h"
#include "view_pt.h"
#include "view_safetensors.h"
#include "view_stats.h"
#include "tensor_stats.h"

#define CKPTFS_DIR "/.ckptfs"
#define CKPTFS_MODEL "model.safetensors"
#define CKPTFS_METADATA "metadata.json"
#define NPY_SUFFIX ".npy"
#define ST_SUFFIX ".safetensors"
#define CKPTFS_HF "hf"
#define STATS_SUFFIX ".stats"
/* cache keys of .stats views: "\1" + the tensor's path, apart from the
 * directory paths ("/...") of the safetensors views */
#define STATS_CACHE_TAG "\1"

/* VIEW_HF is the /.ckptfs/hf directory and holds its layout; VIEW_HF_FILE
 * is one file in it.  VIEW_STATS is computed once (state) and waited for. */
typedef enum {
    VIEW_NPY, VIEW_ST, VIEW_JSON, VIEW_CKPTFS_DIR, VIEW_HF, VIEW_HF_FILE, VIEW_STATS, VIEW_PT
} view_kind;

enum { STATS_COMPUTING, STATS_DONE };
#define CKPTFS_MODEL_PT "model.pt"
#define PT_SUFFIX ".pt"
#define PT_CACHE_PREFIX "pt:" /* PT views share the cache; tree paths start with '/' */


struct fs_view {
    _Atomic unsigned long refs;
    view_kind kind;
    union {
        fs_npy_view npy;
        fs_st_view st;
        fs_pt_view pt;
        fs_metadata_stream json;
        fs_hf_view hf;
        struct {
            fs_view *dir; /* the VIEW_HF it belongs to (referenced) */
            const fs_hf_file *file;
        } hf_file;
        struct {
            char *text;
            size_t len;
            int state; /* under fs_views.lock */
            int err;
        } stats;
    } u;
};

typedef struct cache_entry {
    char *path; /* the directory's tree path ("/" for the whole checkpoint) */
    fs_view *view;
    struct cache_entry *next;
} cache_entry;

struct fs_views {
    pthread_mutex_t lock; /* the cache below */
    cache_entry **buckets;
    size_t nbuckets, count;
    fs_view *metadata;
    fs_view *hf;            /* the /.ckptfs/hf layout, once built */
    fs_hf_dir hf_dir;       /* -o hf_dir files: opened at mount, kept */
    pthread_cond_t stats_done; /* a .stats computation finished */
};

/* ---- view objects ---- */

static fs_view *view_new(fs_views *vs, view_kind kind)
{
    fs_view *v = calloc(1, sizeof *v);
    if (v) {
        atomic_init(&v->refs, 1);
        v->kind = kind;
    }
    return v;
}

static void view_ref(fs_view *v)
{
    atomic_fetch_add(&v->refs, 1);
}

static void view_unref(fs_view *v)
{
    if (!v || atomic_fetch_sub(&v->refs, 1) != 1)
        return;
    switch (v->kind) {
    case VIEW_NPY: fs_npy_view_clear(&v->u.npy); break;
    case VIEW_ST: fs_st_view_clear(&v->u.st); break;
    case VIEW_JSON: fs_metadata_stream_clear(&v->u.json); break;
    case VIEW_CKPTFS_DIR: break;
    case VIEW_HF: fs_hf_view_clear(&v->u.hf); break;
    case VIEW_HF_FILE: view_unref(v->u.hf_file.dir); break;
    case VIEW_STATS: free(v->u.stats.text); break;
    case VIEW_PT: fs_pt_view_clear(&v->u.pt); break;
    }
    free(v);
}

void fs_view_release(fs_mount *m, fs_view *v)
{
    view_unref(v);
}

int fs_view_is_dir(const fs_view *v)
{
    return v->kind == VIEW_CKPTFS_DIR || v->kind == VIEW_HF;
}

uint64_t fs_view_size(const fs_view *v)
{
    switch (v->kind) {
    case VIEW_NPY: return v->u.npy.size;
    case VIEW_ST: return v->u.st.size;
    case VIEW_JSON: return v->u.json.size;
    case VIEW_CKPTFS_DIR: return 0;
    case VIEW_HF: return 0;
    case VIEW_HF_FILE: return v->u.hf_file.file->size;
    case VIEW_STATS: return v->u.stats.len;
    case VIEW_PT: return v->u.pt.size;
    }
    return 0;
}

/* Valid while the view's snapshot is pinned. */
const ck_key *fs_view_key(const fs_view *v)
{
    return v->kind == VIEW_NPY ? v->u.npy.ref.key : NULL;
}

static int hf_file_read(fs_mount *m, fs_view *v, uint64_t off, void *dst,
                        size_t len, size_t *got)
{
    const fs_hf_file *f = v->u.hf_file.file;
    const fs_hf_view *hf = &v->u.hf_file.dir->u.hf;
    switch (f->kind) {
    case FS_HF_SHARD: return fs_st_view_read(m->ck, &hf->shards[f->index], off, dst, len, got);
    case FS_HF_INDEX:
        *got = fs_view_read_head(hf->index_json, hf->index_len, hf->index_len, off, dst, &len);
        return 0;
    case FS_HF_EXTRA: return fs_hf_dir_read(&m->views->hf_dir.files[f->index], off, dst, len, got);
    }
    return -EINVAL;
}

ck_dtype fs_view_dtype(const fs_view *v)
{
    return v->kind == VIEW_NPY ? v->u.npy.as : CK_DT_INVALID;
}

int fs_view_read(fs_mount *m, fs_view *v, uint64_t off, void *dst, size_t len, size_t *got)
{
    *got = 0;
    switch (v->kind) {
    case VIEW_NPY: return fs_npy_view_read(m->ck, &v->u.npy, off, dst, len, got);
    case VIEW_ST: return fs_st_view_read(m->ck, &v->u.st, off, dst, len, got);
    case VIEW_JSON:
        return fs_metadata_stream_read(&v->u.json, m->ck, off, dst, len, got);
    case VIEW_CKPTFS_DIR: return -EISDIR;
    case VIEW_HF: return -EISDIR;
    case VIEW_HF_FILE: return hf_file_read(m, v, off, dst, len, got);
    case VIEW_STATS:
        *got = fs_view_read_head(v->u.stats.text, v->u.stats.len, v->u.stats.len, off, dst, &len);
        return 0;
    case VIEW_PT: return fs_pt_view_read(m->ck, &v->u.pt, off, dst, len, got);
    }
    return -EINVAL;
}

int fs_view_list(fs_mount *m, fs_view *v, int (*fill)(void *ctx, const char *name), void *ctx)
{
    if (v->kind == VIEW_HF) {
        int rc = 0;
        for (size_t i = 0; !rc && i < v->u.hf.nfiles; i++)
            rc = fill(ctx, v->u.hf.files[i].name);
        return rc;
    }
    if (v->kind != VIEW_CKPTFS_DIR)
        return -ENOTDIR;
    int rc = fill(ctx, CKPTFS_HF);
    if (!rc)
        rc = fill(ctx, CKPTFS_METADATA);
    if (!rc)
        rc = fill(ctx, CKPTFS_MODEL_PT);
    return rc ? rc : fill(ctx, CKPTFS_MODEL);
}

int fs_view_npy_name(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name), s = sizeof NPY_SUFFIX; /* counts the NUL */
    if (n >= cap || s > cap - n)
        return -ENAMETOOLONG;
    memcpy(out, name, n);
    memcpy(out + n, NPY_SUFFIX, s);
    return 0;
}

/* ---- the cache ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int fs_views_new(fs_mount *m, fs_views **out)
{
    fs_views *vs = calloc(1, sizeof *vs);
    if (!vs)
        return -ENOMEM;
    vs->nbuckets = 64;
    vs->buckets = calloc(vs->nbuckets, sizeof *vs->buckets);
    if (!vs->buckets) {
        free(vs);
        return -ENOMEM;
    }
    int rc = pthread_mutex_init(&vs->lock, NULL);
    if (rc) {
        free(vs->buckets);
        free(vs);
        return -rc;
    }
    rc = pthread_cond_init(&vs->stats_done, NULL);
    if (rc) {
        pthread_mutex_destroy(&vs->lock);
        free(vs->buckets);
        free(vs);
        return -rc;
    }
    *out = vs;
    return 0;
}

/* Caller holds vs->lock. */
static void drop_cached(fs_views *vs)
{
    for (size_t i = 0; i < vs->nbuckets; i++) {
        cache_entry *e = vs->buckets[i];
        while (e) {
            cache_entry *next = e->next;
            view_unref(e->view);
            free(e->path);
            free(e);
            e = next;
        }
        vs->buckets[i] = NULL;
    }
    vs->count = 0;
    view_unref(vs->metadata);
    vs->metadata = NULL;
    view_unref(vs->hf);
    vs->hf = NULL;
}

void fs_views_free(fs_views *vs)
{
    if (!vs)
        return;
    drop_cached(vs);
    fs_hf_dir_close(&vs->hf_dir);
    free(vs->buckets);
    pthread_cond_destroy(&vs->stats_done);
    pthread_mutex_destroy(&vs->lock);
    free(vs);
}

int fs_views_open_hf_dir(fs_views *vs, const char *path, char *err, size_t errlen)
{
    return fs_hf_dir_open(path, &vs->hf_dir, err, errlen);
}

/* Caller holds vs->lock.  Returns a referenced view or NULL. */
static fs_view *cache_get(fs_views *vs, const char *path)
{
    for (cache_entry *e = vs->buckets[hash_str(path) & (vs->nbuckets - 1)]; e; e = e->next)
        if (strcmp(e->path, path) == 0) {
            view_ref(e->view);
            return e->view;
        }
    return NULL;
}

/* Caller holds vs->lock.  A full table just chains longer: growing is an
 * optimisation, so its failure is not an error. */
static void cache_grow(fs_views *vs)
{
    size_t nb = vs->nbuckets * 2;
    cache_entry **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < vs->nbuckets; i++) {
        cache_entry *e = vs->buckets[i];
        while (e) {
            cache_entry *next = e->next;
            size_t s = hash_str(e->path) & (nb - 1);
            e->next = b[s];
            b[s] = e;
            e = next;
        }
    }
    free(vs->buckets);
    vs->buckets = b;
    vs->nbuckets = nb;
}

/* Caller holds vs->lock.  Takes a reference for the cache. */
static void cache_put(fs_views *vs, const char *path, fs_view *v)
{
    cache_entry *e = malloc(sizeof *e);
    char *p = strdup(path);
    if (!e || !p) {
        free(e);
        free(p);
        return; /* not cached: built again next time */
    }
    if (vs->count + 1 > vs->nbuckets)
        cache_grow(vs);
    size_t s = hash_str(path) & (vs->nbuckets - 1);
    e->path = p;
    view_ref(v);
    e->view = v;
    e->next = vs->buckets[s];
    vs->buckets[s] = e;
    vs->count++;
}

/* ---- lookup ---- */

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n > k && memcmp(s + n - k, suffix, k) == 0;
}

static int lookup_npy(fs_mount *m, const char *path, size_t n, fs_view **out)
{
    char *base = strndup(path, n);
    if (!base)
        return -ENOMEM;
    fs_node *node = fs_tree_lookup(m->tree, base);
    free(base);
    if (!node || node->is_dir || !node->key || node->key->kind != CK_KEY_TENSOR ||
        !ck_dtype_get(node->key->dtype))
        return -ENOENT;
    fs_view *v = view_new(m->views, VIEW_NPY);
    if (!v)
        return -ENOMEM;
    int rc = fs_npy_view_build(node->key, m->opts.view_dtype, &v->u.npy);
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    return 0;
}

/* dir_path: a directory's tree path. */
static int lookup_st(fs_mount *m, const char *dir_path, fs_view **out)
{
    fs_views *vs = m->views;
    fs_node *node = fs_tree_lookup(m->tree, dir_path);
    if (!node || !node->is_dir)
        return -ENOENT;
    pthread_mutex_lock(&vs->lock);
    fs_view *v = cache_get(vs, dir_path);
    pthread_mutex_unlock(&vs->lock);
    if (v) {
        *out = v;
        return 0;
    }
    /* Built outside the cache lock (a big directory takes a while); two
     * threads may both build it, and the first to insert wins. */
    v = view_new(vs, VIEW_ST);
    if (!v)
        return -ENOMEM;
    int rc = fs_st_view_build(node, m->opts.view_dtype, &v->u.st);
    if (rc) {
        free(v);
        return rc;
    }
    pthread_mutex_lock(&vs->lock);
    fs_view *other = cache_get(vs, dir_path);
    if (!other)
        cache_put(vs, dir_path, v);
    pthread_mutex_unlock(&vs->lock);
    if (other) {
        view_unref(v);
        v = other;
    }
    *out = v;
    return 0;
}

static int lookup_metadata(fs_mount *m, fs_view **out)
{
    fs_views *vs = m->views;
    pthread_mutex_lock(&vs->lock);
    fs_view *v = vs->metadata;
    if (v)
        view_ref(v);
    pthread_mutex_unlock(&vs->lock);
    if (v) {
        *out = v;
        return 0;
    }
    v = view_new(vs, VIEW_JSON);
    if (!v)
        return -ENOMEM;
    int rc = fs_metadata_stream_init(&v->u.json, m->ck);
    if (rc) {
        free(v);
        return rc;
    }
    pthread_mutex_lock(&vs->lock);
    fs_view *other = vs->metadata;
    if (other) {
        view_ref(other);
    } else {
        view_ref(v); /* the cache's reference */
        vs->metadata = v;
    }
    pthread_mutex_unlock(&vs->lock);
    if (other) {
        view_unref(v);
        v = other;
    }
    *out = v;
    return 0;
}

/* The /.ckptfs/hf directory view: built once per state, like metadata. */
static int lookup_hf_dir(fs_mount *m, fs_view **out)
{
    fs_views *vs = m->views;
    pthread_mutex_lock(&vs->lock);
    fs_view *v = vs->hf;
    if (v)
        view_ref(v);
    pthread_mutex_unlock(&vs->lock);
    if (v) {
        *out = v;
        return 0;
    }
    v = view_new(vs, VIEW_HF);
    if (!v)
        return -ENOMEM;
    fs_hf_opts o = { .prefix = m->opts.hf_prefix,
                     .shard_bytes = m->opts.hf_shard_bytes ? m->opts.hf_shard_bytes : 5ull << 30,
                     .view_dtype = m->opts.view_dtype,
                     .extra = &vs->hf_dir };
    int rc = fs_hf_view_build(m->ck, &o, &v->u.hf);
    if (rc) {
        free(v);
        return rc;
    }
    pthread_mutex_lock(&vs->lock);
    fs_view *other = vs->hf;
    if (other) {
        view_ref(other);
    } else {
        view_ref(v); /* the cache's reference */
        vs->hf = v;
    }
    pthread_mutex_unlock(&vs->lock);
    if (other) {
        view_unref(v);
        v = other;
    }
    *out = v;
    return 0;
}

static int lookup_hf_file(fs_mount *m, const char *name, fs_view **out)
{
    fs_view *dir;
    int rc = lookup_hf_dir(m, &dir);
    if (rc)
        return rc;
    const fs_hf_file *f = fs_hf_view_find(&dir->u.hf, name);
    fs_view *v = f ? view_new(m->views, VIEW_HF_FILE) : NULL;
    if (!v) {
        view_unref(dir);
        return f ? -ENOMEM : -ENOENT;
    }
    v->u.hf_file.dir = dir;
    v->u.hf_file.file = f;
    *out = v;
    return 0;
}

/* PATH.stats: the first lookup computes, later ones (and concurrent ones,
 * which wait) share the result for as long as the state lasts. */
static int lookup_stats(fs_mount *m, const char *path, size_t n, fs_view **out)
{
    fs_views *vs = m->views;
    char *base = strndup(path, n);
    if (!base)
        return -ENOMEM;
    fs_node *node = fs_tree_lookup(m->tree, base);
    if (!node || node->is_dir || !node->key || node->key->kind != CK_KEY_TENSOR ||
        !ck_stats_supported(node->key->dtype)) {
        free(base);
        return -ENOENT;
    }
    size_t tl = strlen(STATS_CACHE_TAG);
    char *ckey = malloc(tl + n + 1);
    if (!ckey) {
        free(base);
        return -ENOMEM;
    }
    memcpy(ckey, STATS_CACHE_TAG, tl);
    memcpy(ckey + tl, base, n + 1);
    free(base);
    pthread_mutex_lock(&vs->lock);
    fs_view *v = cache_get(vs, ckey);
    bool compute = !v;
    if (compute && (v = view_new(vs, VIEW_STATS))) {
        v->u.stats.state = STATS_COMPUTING;
        cache_put(vs, ckey, v); /* others find it and wait */
    }
    pthread_mutex_unlock(&vs->lock);
    free(ckey);
    if (!v)
        return -ENOMEM;
    if (compute) {
        char *text = NULL;
        size_t len = 0;
        int rc = fs_stats_json(m->ck, node->key, &text, &len);
        pthread_mutex_lock(&vs->lock);
        v->u.stats.text = text;
        v->u.stats.len = len;
        v->u.stats.err = rc;
        v->u.stats.state = STATS_DONE;
        pthread_cond_broadcast(&vs->stats_done);
        pthread_mutex_unlock(&vs->lock);
    } else {
        pthread_mutex_lock(&vs->lock);
        while (v->u.stats.state != STATS_DONE)
            pthread_cond_wait(&vs->stats_done, &vs->lock);
        pthread_mutex_unlock(&vs->lock);
    }
    int rc = v->u.stats.err; /* a failure is kept too: the bytes will not heal */
    if (rc) {
        view_unref(v);
        return rc == -ENOMEM ? rc : -EIO; /* unreadable chunks, as a read of the key says */
    }
    *out = v;
    return 0;
}

/* dir_path: a directory's tree path.  Cached like the safetensors views,
 * under PT_CACHE_PREFIX + dir_path. */
static int lookup_pt(fs_mount *m, const char *dir_path, fs_view **out)
{
    fs_views *vs = m->views;
    fs_node *node = fs_tree_lookup(m->tree, dir_path);
    if (!node || !node->is_dir)
        return -ENOENT;
    size_t n = strlen(dir_path);
    char *ckey = malloc(sizeof PT_CACHE_PREFIX + n);
    if (!ckey)
        return -ENOMEM;
    memcpy(ckey, PT_CACHE_PREFIX, sizeof PT_CACHE_PREFIX - 1);
    memcpy(ckey + sizeof PT_CACHE_PREFIX - 1, dir_path, n + 1);
    pthread_mutex_lock(&vs->lock);
    fs_view *v = cache_get(vs, ckey);
    pthread_mutex_unlock(&vs->lock);
    int rc = 0;
    if (!v) {
        /* built outside the cache lock, as lookup_st */
        v = view_new(vs, VIEW_PT);
        rc = v ? fs_pt_view_build(m->ck, node, m->opts.view_dtype, &v->u.pt) : -ENOMEM;
        if (rc) {
            free(v);
            v = NULL;
        } else {
            pthread_mutex_lock(&vs->lock);
            fs_view *other = cache_get(vs, ckey);
            if (!other)
                cache_put(vs, ckey, v);
            pthread_mutex_unlock(&vs->lock);
            if (other) {
                view_unref(v);
                v = other;
            }
        }
    }
    free(ckey);
    *out = v;
    return rc;
}

int fs_view_lookup(fs_mount *m, const char *path, fs_view **out)
{
    *out = NULL;
    size_t n = strlen(path);
    size_t dn = strlen(CKPTFS_DIR);
    if (strcmp(path, CKPTFS_DIR) == 0) {
        fs_view *v = view_new(m->views, VIEW_CKPTFS_DIR);
        if (!v)
            return -ENOMEM;
        *out = v;
        return 0;
    }
    if (n > dn && memcmp(path, CKPTFS_DIR "/", dn + 1) == 0) {
        const char *name = path + dn + 1;
        if (strcmp(name, CKPTFS_MODEL) == 0)
            return lookup_st(m, "/", out);
        if (strcmp(name, CKPTFS_METADATA) == 0)
            return lookup_metadata(m, out);
        if (strcmp(name, CKPTFS_HF) == 0)
            return lookup_hf_dir(m, out);
        if (strncmp(name, CKPTFS_HF "/", strlen(CKPTFS_HF) + 1) == 0 &&
            !strchr(name + strlen(CKPTFS_HF) + 1, '/'))
            return lookup_hf_file(m, name + strlen(CKPTFS_HF) + 1, out);
        if (strcmp(name, CKPTFS_MODEL_PT) == 0)
            return lookup_pt(m, "/", out);
        return -ENOENT;
    }
    if (ends_with(path, n, STATS_SUFFIX))
        return lookup_stats(m, path, n - strlen(STATS_SUFFIX), out);
    if (ends_with(path, n, NPY_SUFFIX))
        return lookup_npy(m, path, n - strlen(NPY_SUFFIX), out);
    if (ends_with(path, n, ST_SUFFIX)) {
        size_t k = n - strlen(ST_SUFFIX);
        if (path[k - 1] == '/')
            return -ENOENT; /* "DIR/.safetensors": no directory has an empty name */
        char *dir = strndup(path, k);
        if (!dir)
            return -ENOMEM;
        int rc = lookup_st(m, dir, out);
        free(dir);
        return rc;
    }
    if (ends_with(path, n, PT_SUFFIX)) {
        size_t k = n - strlen(PT_SUFFIX);
        if (path[k - 1] == '/')
            return -ENOENT; /* "DIR/.pt" */
        char *dir = strndup(path, k);
        if (!dir)
            return -ENOMEM;
        int rc = lookup_pt(m, dir, out);
        free(dir);
        return rc;
    }
    return -ENOENT;
}
