/* Read-side FUSE operations, one per function.  Reads of tensors become
 * load plans carried out into one memory buffer per request (see
 * read_into_memory for why not fd buffers). */
#include "ops.h"
#include "read_size.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "chunk_reader.h"
#include "geometry.h"
#include "live.h"
#include "page_cache.h"
#include "root.h"
#include "run.h"
#include "snapshot.h"
#include "views.h"

void fs_fill_stat(fs_mount *m, const fs_node *n, uint64_t size, struct stat *st)
{
    memset(st, 0, sizeof *st);
    int wr = m->opts.rw;
    if (n && n->is_dir) {
        st->st_mode = S_IFDIR | (wr ? 0755 : 0555);
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | (wr ? 0644 : 0444);
        st->st_nlink = 1;
        st->st_size = (off_t)size;
        st->st_blocks = (blkcnt_t)((size + 511) / 512);
    }
    st->st_blksize = n && n->is_dir ? FS_DIR_BLKSIZE : FS_FILE_BLKSIZE;
    st->st_uid = m->opts.uid;
    st->st_gid = m->opts.gid;
    st->st_mtim = m->ck->mtime;
    st->st_ctim = m->ck->mtime;
    st->st_atim = m->ck->mtime;
}

static int node_size(fs_mount *m, const fs_node *n, uint64_t *size)
{
    *size = 0;
    if (n->is_dir || !n->key)
        return 0;
    return ck_key_size(m->ck, n->key, size);
}

static int op_getattr(fs_root *r, const char *path, struct stat *st, struct fuse_file_info *fi)
{
    fs_req q;
    fs_handle *h = fi ? (fs_handle *)(uintptr_t)fi->fh : NULL;
    int rc;
    if (h && h->m && h->pc_path) {
        /* fstat of an open file: the state it reads */
        memset(&q, 0, sizeof q);
        q.m = fs_snapshot_ref(h->m);
        q.path = h->pc_path + h->inner_off;
    } else if ((rc = fs_req_begin(r, path, 0, &q)) != 0) {
        return rc;
    }
    if (q.synthetic) {
        *st = q.st;
        return 0;
    }
    fs_mount *m = q.m;
    path = q.path;
    rc = 0;
    fs_node *n = fs_tree_lookup(m->tree, path);
    if (n) {
        uint64_t size;
        rc = node_size(m, n, &size);
        if (rc) {
            /* stat still works; a nonzero size (the stored bytes) makes the
             * kernel send reads, which then fail with EIO as they should */
            size = n->key->nchunks ? n->key->chunks[0].length : 0;
            rc = 0;
        }
        fs_fill_stat(m, n, size, st);
    } else {
        fs_view *v;
        rc = fs_view_lookup(m, path, &v);
        if (!rc) {
            fs_node fake = { .is_dir = fs_view_is_dir(v) };
            fs_fill_stat(m, &fake, fs_view_size(v), st);
            if (!fake.is_dir)
                st->st_mode = S_IFREG | 0444;
            fs_view_release(m, v);
        }
    }
    fs_req_end(&q);
    return rc;
}

typedef struct {
    fs_dir_fill fill;
    void *ctx;
    bool plus;
    uint64_t skip; /* entries still to pass over */
} fill_ctx;

static int fill_name(void *ctx, const char *name)
{
    fill_ctx *f = ctx;
    if (f->skip) {
        f->skip--;
        return 0;
    }
    return f->fill(f->ctx, name, NULL);
}

static int fill_step(void *ctx, const char *name, const struct stat *st)
{
    fill_ctx *f = ctx;
    if (f->skip) {
        f->skip--;
        return 0;
    }
    return f->fill(f->ctx, name, f->plus ? st : NULL);
}

static int op_readdir(fs_root *r, const char *path, fs_dir_fill fill, void *ctx, bool plus,
                      uint64_t skip)
{
    fs_req q;
    int rc = fs_req_begin(r, path, FS_REQ_PIN, &q);
    if (rc)
        return rc;
    if (q.run_root) {
        fill_ctx f = { fill, ctx, plus, skip };
        return fs_run_list(r->run, fill_step, &f);
    }
    fs_mount *m = q.m;
    path = q.path;
    fs_node *n = fs_tree_lookup(m->tree, path);
    if (n && n->is_dir) {
        char name[1100];
        for (size_t i = skip < n->nchildren ? (size_t)skip : n->nchildren; i < n->nchildren; i++) {
            const fs_node *c = n->children[i];
            const char *shown = c->name;
            if (m->opts.npy && !c->is_dir && c->key && c->key->kind == CK_KEY_TENSOR &&
                fs_view_npy_name(c->name, name, sizeof name) == 0)
                shown = name;
            /* With READDIRPLUS the attributes travel with the names, which
             * spares the kernel one LOOKUP per entry (find, ls -l). */
            struct stat st;
            uint64_t size = 0;
            int with = plus && (c->is_dir || !c->key || node_size(m, c, &size) == 0);
            if (with && shown == name)
                with = 0; /* an npy view's size is not the raw file's */
            if (with)
                fs_fill_stat(m, c, size, &st);
            if (fill(ctx, shown, with ? &st : NULL))
                break;
        }
    } else if (n) {
        rc = -ENOTDIR;
    } else {
        fs_view *v;
        rc = fs_view_lookup(m, path, &v);
        if (!rc) {
            fill_ctx f = { fill, ctx, false, skip };
            rc = fs_view_is_dir(v) ? fs_view_list(m, v, fill_name, &f) : -ENOTDIR;
            fs_view_release(m, v);
        }
    }
    fs_req_end(&q);
    return rc;
}

static int op_open(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !r->opts.rw)
        return -EROFS;
    /* An open always looks for a new state: a file opened after a new
     * .metadata appeared reads the new checkpoint (live.h). */
    fs_req q;
    int rc = fs_req_begin(r, path, FS_REQ_FORCE | FS_REQ_PIN, &q);
    if (rc)
        return rc;
    if (!q.m)
        return -EISDIR; /* the run's root */
    fs_mount *m = q.m;
    const char *inner = q.path;
    fs_handle *h = calloc(1, sizeof *h);
    if (!h) {
        rc = -ENOMEM;
    } else if ((h->node = fs_tree_lookup(m->tree, inner))) {
        if (h->node->is_dir)
            rc = -EISDIR;
    } else {
        rc = fs_view_lookup(m, inner, &h->view);
        if (!rc && fs_view_is_dir(h->view))
            rc = -EISDIR;
        if (!rc && (fi->flags & O_ACCMODE) != O_RDONLY)
            rc = -EACCES; /* views are read-only even on rw mounts */
    }
    if (!rc && !r->rw && !(h->pc_path = strdup(path)))
        rc = -ENOMEM;
    if (rc) {
        if (h && h->view)
            fs_view_release(m, h->view);
        free(h);
        fs_req_end(&q);
        return rc;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    h->m = q.m; /* the request's pin becomes the file's */
    h->reply_pinned = true;
    if (r->rw) {
        fi->keep_cache = 0; /* a view of the rw mount: commits change it */
        return 0;
    }
    /* A snapshot's contents never change: the kernel keeps its pages
     * across opens, as long as they are this snapshot's (page_cache.h). */
    h->inner_off = q.path_off;
    fs_pc_mode mode = q.src && !fs_source_settled(q.src, m)
                          ? FS_PC_DIRECT /* the kernel may hold the old state's sizes */
                          : fs_pcache_open(r->pcache, path, m->gen);
    fi->keep_cache = mode == FS_PC_KEEP;
    if (mode == FS_PC_DIRECT) {
        fi->direct_io = 1;
        h->pc_registered = false;
    } else {
        h->pc_registered = true;
    }
    return 0;
}

static int op_release(fs_root *r, const char *path, struct fuse_file_info *fi)
{
    fs_handle *h = (fs_handle *)(uintptr_t)fi->fh;
    if (!h)
        return 0;
    if (h->pc_registered)
        fs_pcache_release(r->pcache, h->pc_path, h->m->gen);
    if (h->view)
        fs_view_release(h->m, h->view);
    free(h->pc_path);
    fs_snapshot_unref(h->m);
    free(h);
    return 0;
}

/* ---- reads ---- */

static struct fuse_bufvec *bv_new(size_t cap)
{
    /* fuse_bufvec holds one fuse_buf; room for cap more */
    struct fuse_bufvec *bv = calloc(1, sizeof *bv + cap * sizeof(struct fuse_buf));
    if (bv) {
        bv->count = 0;
        bv->idx = 0;
        bv->off = 0;
    }
    return bv;
}

/* A reply assembled in memory: ck_key_read_plan carries out the load plan
 * (plan, when read_into_fd_buffers made it) with one pread per chunk span,
 * decoded chunks from the cache. */
static int read_into_memory(fs_mount *m, fs_handle *h, uint64_t off, size_t size,
                            const ck_read_vec *plan, struct fuse_bufvec **bufp)
{
    uint8_t *mem = malloc(size ? size : 1);
    struct fuse_bufvec *bv = bv_new(1);
    if (!mem || !bv) {
        free(mem);
        free(bv);
        return -ENOMEM;
    }
    size_t got = 0;
    int rc = h->view ? fs_view_read(m, h->view, off, mem, size, &got)
                     : ck_key_read_plan(m->ck, h->node->key, off, mem, size, plan, &got);
    if (rc) {
        free(mem);
        free(bv);
        return rc;
    }
    bv->count = 1;
    bv->buf[0] = (struct fuse_buf){ .size = got, .mem = mem };
    *bufp = bv;
    return 0;
}

/* Below this, a copy costs less than splicing pages. */
#define FD_REPLY_MIN (64u << 10)

/* A reply of shard-file buffers, when the bytes lie as they are in local
 * files: -EAGAIN otherwise, with the range's load plan in *plan when it was
 * made.  Only for snapshots the handle pins: the fds are read after this
 * returns, when the reply is sent. */
static int read_into_fd_buffers(fs_mount *m, fs_handle *h, uint64_t off, size_t size,
                                ck_read_vec *plan, struct fuse_bufvec **bufp)
{
    if (h->view || !h->reply_pinned || size < FD_REPLY_MIN)
        return -EAGAIN;
    ck_fd_span spans[FS_FD_SPANS_MAX];
    size_t n = 0, got = 0;
    int rc = ck_key_fd_spans(m->ck, h->node->key, off, size, spans, FS_FD_SPANS_MAX, &n, &got, plan);
    if (rc)
        return rc;
    struct fuse_bufvec *bv = bv_new(n ? n : 1);
    if (!bv)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        bv->buf[i] = (struct fuse_buf){ .size = spans[i].len, .fd = spans[i].fd,
                                        .pos = (off_t)spans[i].off,
                                        .flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK |
                                                 FUSE_BUF_FD_RETRY };
    bv->count = n;
    if (n == 0) { /* at or past the end */
        bv->count = 1;
        bv->buf[0] = (struct fuse_buf){ .size = 0, .mem = NULL };
    }
    *bufp = bv;
    return 0;
}

static int op_read_buf(fs_root *r, const char *path, struct fuse_bufvec **bufp, size_t size,
                       off_t off, struct fuse_file_info *fi)
{
    fs_handle *h = (fs_handle *)(uintptr_t)fi->fh;
    fs_mount *m = h->m;
    if (off < 0)
        return -EINVAL;
    int rc = h->node && !h->node->key ? -EIO : -EAGAIN;
    ck_read_vec plan = { 0 }; /* made once, by the first path that needs it */
    if (rc == -EAGAIN && r->splice)
        rc = read_into_fd_buffers(m, h, (uint64_t)off, size, &plan, bufp);
    if (rc == -EAGAIN)
        rc = read_into_memory(m, h, (uint64_t)off, size, &plan, bufp);
    ck_read_vec_free(&plan);
    return rc == -ENOMEM ? rc : (rc ? -EIO : 0);
}

/* ---- extended attributes ---- */

int fs_xattr_reply(const void *data, size_t n, char *out, size_t size)
{
    if (n > INT_MAX)
        return -E2BIG;
    if (size == 0)
        return (int)n;
    if (size < n)
        return -ERANGE;
    memcpy(out, data, n);
    return (int)n;
}

static char *shape_value(uint32_t n, const uint64_t *d)
{
    char buf[CK_SHAPE_STR_MAX];
    return ck_format_shape(buf, sizeof buf, n, d) < 0 ? NULL : strdup(buf);
}

static char *chunks_json(const ck_checkpoint *ck, const ck_key *key)
{
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t i = 0; arr && i < key->nchunks; i++) {
        const ck_chunk *c = &key->chunks[i];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        if (key->kind == CK_KEY_TENSOR) {
            cJSON *offs = cJSON_AddArrayToObject(o, "offsets");
            cJSON *sizes = cJSON_AddArrayToObject(o, "sizes");
            for (uint32_t k = 0; k < key->ndim; k++) {
                cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)c->offsets[k]));
                cJSON_AddItemToArray(sizes, cJSON_CreateNumber((double)c->sizes[k]));
            }
        }
        cJSON_AddStringToObject(o, "file", c->file < ck->nfiles ? ck->files[c->file].path : "");
        cJSON_AddNumberToObject(o, "offset", (double)c->offset);
        cJSON_AddNumberToObject(o, "length", (double)c->length);
        cJSON *tf = cJSON_AddArrayToObject(o, "transforms");
        if (c->transforms & CK_TF_ZSTD)
            cJSON_AddItemToArray(tf, cJSON_CreateString("stream.zstd/1"));
        if (c->transforms & CK_TF_UNKNOWN)
            cJSON_AddItemToArray(tf, cJSON_CreateString("unknown"));
    }
    char *s = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return s;
}

/* The value of xattr `name` for key, malloc'd; NULL with *rc set otherwise. */
static char *xattr_value(fs_mount *m, const ck_key *key, const char *name, int *rc)
{
    *rc = 0;
    int tensor = key->kind == CK_KEY_TENSOR;
    if (strcmp(name, "user.ckpt.fqn") == 0)
        return strdup(key->fqn);
    if (strcmp(name, "user.ckpt.kind") == 0)
        return strdup(tensor ? "tensor" : "bytes");
    if (strcmp(name, "user.ckpt.chunks") == 0)
        return chunks_json(m->ck, key);
    if (tensor && strcmp(name, "user.ckpt.dtype") == 0)
        return strdup(ck_dtype_get(key->dtype)->torch_name);
    if (tensor && strcmp(name, "user.ckpt.shape") == 0)
        return shape_value(key->ndim, key->shape);
    *rc = -ENODATA;
    return NULL;
}

static const ck_key *key_at(fs_mount *m, const char *path, fs_view **view)
{
    *view = NULL;
    fs_node *n = fs_tree_lookup(m->tree, path);
    if (n)
        return n->key;
    if (fs_view_lookup(m, path, view) == 0)
        return fs_view_key(*view);
    return NULL;
}

static int op_getxattr(fs_root *r, const char *path, const char *name, char *value, size_t size)
{
    fs_req q;
    int rc = fs_req_begin(r, path, 0, &q);
    if (rc)
        return rc;
    if (q.synthetic)
        return -ENODATA; /* a run's directories */
    fs_mount *m = q.m;
    path = q.path;
    fs_view *v;
    rc = -ENODATA;
    const ck_key *key = key_at(m, path, &v);
    ck_dtype shown = v ? fs_view_dtype(v) : CK_DT_INVALID;
    if (key && shown != CK_DT_INVALID && shown != key->dtype && strcmp(name, "user.ckpt.dtype") == 0) {
        /* an npy view converted by -o dtype=: its data's dtype, not the stored one */
        const char *t = ck_dtype_get(shown)->torch_name;
        rc = fs_xattr_reply(t, strlen(t), value, size);
    } else if (key) {
        char *s = xattr_value(m, key, name, &rc);
        if (s) {
            rc = fs_xattr_reply(s, strlen(s), value, size);
            free(s);
        } else if (!rc) {
            rc = -ENOMEM;
        }
    } else if (!v && !fs_tree_lookup(m->tree, path)) {
        rc = -ENOENT;
    }
    if (v)
        fs_view_release(m, v);
    fs_req_end(&q);
    return rc;
}

static int op_listxattr(fs_root *r, const char *path, char *list, size_t size)
{
    static const char tensor_names[] =
        "user.ckpt.dtype\0user.ckpt.shape\0user.ckpt.chunks\0user.ckpt.fqn\0user.ckpt.kind\0";
    static const char bytes_names[] = "user.ckpt.chunks\0user.ckpt.fqn\0user.ckpt.kind\0";
    fs_req q;
    int rc = fs_req_begin(r, path, 0, &q);
    if (rc)
        return rc;
    if (q.synthetic)
        return 0;
    fs_mount *m = q.m;
    path = q.path;
    fs_view *v;
    const ck_key *key = key_at(m, path, &v);
    int exists = key || v || fs_tree_lookup(m->tree, path);
    if (v)
        fs_view_release(m, v);
    /* key belongs to q.m, pinned until the reply is built */
    if (!exists)
        rc = -ENOENT;
    else if (key)
        rc = fs_xattr_reply(key->kind == CK_KEY_TENSOR ? tensor_names : bytes_names,
                            key->kind == CK_KEY_TENSOR ? sizeof tensor_names - 1
                                                       : sizeof bytes_names - 1,
                            list, size);
    fs_req_end(&q);
    return rc;
}

static int op_statfs(fs_root *r, const char *path, struct statvfs *sv)
{
    fs_req q;
    int rc = fs_req_begin(r, path, FS_REQ_PIN, &q);
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = 4096;
    sv->f_frsize = 4096;
    sv->f_namemax = 255;
    if (rc || !q.m)
        return 0; /* a run as a whole: no one checkpoint to count */
    fs_mount *m = q.m;
    uint64_t total = 0;
    for (size_t i = 0; i < m->ck->nkeys; i++)
        total += m->ck->keys[i].kind == CK_KEY_TENSOR ? m->ck->keys[i].nbytes
                                                      : m->ck->keys[i].chunks[0].length;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = 4096;
    sv->f_frsize = 4096;
    sv->f_blocks = (total + 4095) / 4096;
    sv->f_files = m->ck->nkeys;
    sv->f_namemax = fs_tree_name_max(m->tree);
    fs_req_end(&q);
    return 0;
}

static int op_access(fs_root *r, const char *path, int mask)
{
    if ((mask & W_OK) && !r->opts.rw)
        return -EROFS;
    struct stat st;
    return op_getattr(r, path, &st, NULL);
}

static int op_opendir(fs_root *r, const char *path)
{
    /* A run's step is opened here, so one that cannot be fails opendir */
    fs_req q;
    int rc = fs_req_begin(r, path, FS_REQ_PIN, &q);
    if (rc)
        return rc;
    fs_req_end(&q);
    struct stat st;
    rc = op_getattr(r, path, &st, NULL);
    if (!rc && !S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    return rc;
}

void fs_bufvec_free(struct fuse_bufvec *bv)
{
    if (!bv)
        return;
    for (size_t i = 0; i < bv->count; i++)
        if (!(bv->buf[i].flags & FUSE_BUF_IS_FD))
            free(bv->buf[i].mem);
    free(bv);
}

const fs_path_ops fs_read_ops = {
    .getattr = op_getattr,
    .readdir = op_readdir,
    .opendir = op_opendir,
    .open = op_open,
    .release = op_release,
    .read_buf = op_read_buf,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .statfs = op_statfs,
    .access = op_access,
};
