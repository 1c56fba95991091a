/* The commit protocol (see commit.h).  Every syscall that changes the disk
 * goes through step_* below, which also serve the test hooks that kill the
 * process or fail the call at a chosen step, so the crash test can stop a
 * commit between any two of them. */
#include "commit.h"
#include "file_id.h"
#include "fd_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "geometry.h"
#include "metadata_write.h"
#include "name_search.h"
#include "torch_save_writer.h"
#include "zstd_stream.h"

#define ARCHIVE_NAME CK_ITEM_ARCHIVE_NAME
#define SINK_BUF (1u << 20)
#define DATA_PREFIX "__ckptfs_"
#define TMP_PREFIX ".metadata.ckptfs-tmp-"

typedef struct {
    const ck_commit_opts *opts;
    uint64_t steps;
} step_ctx;

/* Before a counted syscall: the fail hook. */
static int step_injected(step_ctx *s)
{
    if (s->opts->fail_after && s->steps + 1 == s->opts->fail_after) {
        s->steps++;
        return s->opts->fail_errno ? -s->opts->fail_errno : -EIO;
    }
    return 0;
}

/* After a counted syscall: the crash hook. */
static void step_done(step_ctx *s)
{
    s->steps++;
    if (s->opts->crash_after && s->steps == s->opts->crash_after)
        raise(SIGKILL);
}

static int step_pwrite(step_ctx *s, int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len > 0) {
        int rc = step_injected(s);
        if (rc)
            return rc;
        ssize_t w = pwrite(fd, p, len, (off_t)off);
        int e = errno;
        step_done(s);
        if (w < 0) {
            if (e == EINTR)
                continue;
            return -e;
        }
        if (w == 0)
            return -EIO;
        p += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int step_fsync(step_ctx *s, int fd)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    rc = fsync(fd) ? -errno : 0;
    step_done(s);
    return rc;
}

static int step_rename(step_ctx *s, int dirfd, const char *from, const char *to)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    rc = renameat(dirfd, from, dirfd, to) ? -errno : 0;
    step_done(s);
    return rc;
}

static int step_unlink(step_ctx *s, int dirfd, const char *name)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    rc = unlinkat(dirfd, name, 0) ? -errno : 0;
    step_done(s);
    return rc;
}

/* Gives the unnamed file fd a name in dirfd.  /proc/self/fd needs no
 * privilege; AT_EMPTY_PATH (CAP_DAC_READ_SEARCH) serves where /proc is
 * missing. */
static int step_link(step_ctx *s, int fd, int dirfd, const char *name)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    rc = linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) ? -errno : 0;
    if (rc == -ENOENT || rc == -EACCES || rc == -EPERM)
        rc = linkat(fd, "", dirfd, name, AT_EMPTY_PATH) ? -errno : rc;
    step_done(s);
    return rc;
}

/* Object-store counterparts: one counted step per storage call. */
static int step_append(step_ctx *s, ck_object_writer *w, const void *buf, size_t len)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    rc = ck_object_writer_append(w, buf, len);
    step_done(s);
    return rc;
}

static int step_finish(step_ctx *s, ck_object_writer *w)
{
    int rc = step_injected(s);
    if (rc) {
        ck_object_writer_abort(w);
        return rc;
    }
    rc = ck_object_writer_finish(w);
    step_done(s);
    return rc;
}

static int step_remove(step_ctx *s, ck_storage *st, const char *name)
{
    int rc = step_injected(s);
    if (rc)
        return rc;
    rc = ck_storage_remove(st, name);
    step_done(s);
    return rc;
}

/* ---- the data file: a buffered sequential sink ---- */

typedef struct {
    step_ctx *steps;
    int fd;
    uint64_t off;  /* file offset of buf[0] */
    uint8_t *buf;
    size_t used;
    ck_object_writer *w; /* remote: the new object, instead of fd */
} data_sink;

static int sink_flush(data_sink *d)
{
    if (!d->used)
        return 0;
    int rc = d->w ? step_append(d->steps, d->w, d->buf, d->used)
                  : step_pwrite(d->steps, d->fd, d->buf, d->used, d->off);
    if (!rc) {
        d->off += d->used;
        d->used = 0;
    }
    return rc;
}

static int sink_write(void *ctx, const void *buf, size_t len)
{
    data_sink *d = ctx;
    const uint8_t *p = buf;
    while (len > 0) {
        size_t room = SINK_BUF - d->used;
        size_t n = len < room ? len : room;
        memcpy(d->buf + d->used, p, n);
        d->used += n;
        p += n;
        len -= n;
        if (d->used == SINK_BUF) {
            int rc = sink_flush(d);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static uint64_t sink_pos(const data_sink *d)
{
    return d->off + d->used;
}

/* ---- items ---- */

typedef struct {
    const ck_key *key;
    const ck_chunk *chunk;
    const ck_save_key *sk;
} chunk_src;

static int read_chunk_image(void *ctx, uint64_t off, void *buf, size_t len)
{
    chunk_src *c = ctx;
    return ck_chunk_image_read(c->key, c->chunk, off, buf, len, c->sk->read, c->sk->read_ctx);
}

/* Pushes the payload bytes of a bytes key through sink. */
static int copy_payload(const ck_save_key *sk, ck_sink_fn sink, void *sink_ctx)
{
    uint8_t *buf = malloc(CK_TSW_PIECE);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t off = 0; !rc && off < sk->bytes_len;) {
        size_t n = sk->bytes_len - off < CK_TSW_PIECE ? (size_t)(sk->bytes_len - off) : CK_TSW_PIECE;
        rc = sk->read(sk->read_ctx, off, buf, n);
        if (!rc)
            rc = sink(sink_ctx, buf, n);
        off += n;
    }
    free(buf);
    return rc;
}

/* One item at the sink's current position: a torch.save archive of the
 * tensor (dt, ndim, sizes) read through read, or (sk->rewrite_bytes) the
 * raw payload, compressed when transforms say so. */
static int write_item(data_sink *d, const ck_save_key *sk, ck_dtype dt, uint32_t ndim,
                      const uint64_t *sizes, ck_tensor_read_fn read, void *read_ctx,
                      uint32_t transforms, ck_md_storage *out, char *err, size_t errlen)
{
    uint64_t start = sink_pos(d), raw_len = 0;
    int rc = 0;
    if (sk->rewrite_bytes)
        raw_len = sk->bytes_len;
    else
        rc = ck_torch_save_tensor_len(ARCHIVE_NAME, dt, ndim, sizes, &raw_len, err, errlen);
    if (rc)
        return rc;
    ck_sink_fn sink = sink_write;
    void *sink_ctx = d;
    ck_zstd_writer *z = NULL;
    if (transforms & CK_TF_ZSTD) {
        rc = ck_zstd_writer_new(&z, raw_len, sink_write, d);
        if (rc) {
            snprintf(err, errlen, "key %s: cannot start a zstd frame", sk->fqn);
            return rc;
        }
        sink = ck_zstd_writer_write;
        sink_ctx = z;
    }
    if (sk->rewrite_bytes)
        rc = copy_payload(sk, sink, sink_ctx);
    else
        rc = ck_torch_save_tensor_to_sink(sink, sink_ctx, ARCHIVE_NAME, dt, ndim, sizes, read,
                                          read_ctx, NULL, err, errlen);
    if (!rc && z)
        rc = ck_zstd_writer_finish(z);
    ck_zstd_writer_free(z);
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "key %s: cannot write an item: %s", sk->fqn, strerror(-rc));
        return rc;
    }
    out->offset = start;
    out->length = sink_pos(d) - start;
    out->transforms = transforms & CK_TF_ZSTD;
    return 0;
}

static uint64_t now_ns(void);

/* A streamed item (save_plan.h, ck_placed_item): the archive around the
 * payload already in place, fsynced, then linked under a name of our own
 * (its directory entry is made durable with the others').  The same naming
 * as create_unique, so leftovers of a commit that dies after the link are
 * removed by the next one like any unreferenced data file. */
static int finish_placed(step_ctx *s, int dirfd, const ck_save_key *k, ck_md_storage *out,
                         char *err, size_t errlen)
{
    ck_placed_item *pi = k->placed;
    ck_item_frame f;
    int rc = ck_torch_save_tensor_frame(ARCHIVE_NAME, k->dtype, k->ndim, k->shape, pi->crc,
                                        pi->first, sizeof pi->first, &f, err, errlen);
    if (rc)
        return rc;
    uint64_t nbytes = f.item_len - f.head_len - f.tail_len;
    if (f.head_len != pi->data_off) {
        snprintf(err, errlen, "key %s: its streamed bytes are at %" PRIu64
                 " in their file, its archive wants them at %zu", k->fqn, pi->data_off,
                 f.head_len);
        ck_item_frame_free(&f);
        return -EINVAL;
    }
    rc = step_pwrite(s, pi->fd, f.buf, f.head_len, 0);
    if (!rc)
        rc = step_pwrite(s, pi->fd, f.tail, f.tail_len, pi->data_off + nbytes);
    if (!rc)
        rc = step_fsync(s, pi->fd);
    uint64_t t = now_ns();
    for (unsigned n = 0; !rc && n < 1000; n++) {
        snprintf(pi->name, sizeof pi->name, DATA_PREFIX "%" PRIu64 "_p%u.distcp", t, n);
        rc = step_link(s, pi->fd, dirfd, pi->name);
        if (!rc)
            pi->linked = 1;
        if (rc != -EEXIST)
            break;
    }
    if (rc) {
        pi->name[0] = '\0';
        if (!err[0])
            snprintf(err, errlen, "key %s: cannot finish its streamed item: %s", k->fqn,
                     strerror(-rc));
    } else {
        out->relative_path = pi->name;
        out->offset = 0;
        out->length = f.item_len;
        out->transforms = 0;
    }
    ck_item_frame_free(&f);
    return rc;
}

/* After a failed commit: the names given to streamed items go again (the
 * files stay open, unnamed, for a later try). */
static void unlink_placed(const ck_save_key *keys, size_t n, int dirfd)
{
    for (size_t i = 0; i < n; i++) {
        ck_placed_item *pi = keys[i].placed;
        if (!keys[i].old && pi && pi->name[0]) {
            unlinkat(dirfd, pi->name, 0);
            pi->name[0] = '\0';
        }
    }
}

/* ---- the plan ---- */

typedef struct {
    ck_md_key *md;          /* one per key */
    size_t *order;          /* state_dict_metadata order: old keys as read, then new ones */
    uint8_t *own_path;      /* per key: md[i].planner_path is ours to free */
    ck_md_chunk **chunks;   /* per key, owned */
    uint8_t **rewrite;      /* per key: chunks written again (old tensors), owned */
    uint64_t *zeros;        /* CK_MAX_DIMS zeros: offsets of new keys' chunk */
} plan;

static void plan_free(plan *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p->chunks)
            free(p->chunks[i]);
        if (p->rewrite)
            free(p->rewrite[i]);
        if (p->own_path && p->own_path[i])
            ck_planner_path_free((char **)p->md[i].planner_path,
                                 (uint8_t *)p->md[i].planner_path_is_int,
                                 p->md[i].planner_path_len);
    }
    free(p->md);
    free(p->order);
    free(p->own_path);
    free(p->chunks);
    free(p->rewrite);
    free(p->zeros);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_keys(const ck_save_key *keys, size_t n, char *err, size_t errlen)
{
    const char **names = malloc((n ? n : 1) * sizeof *names);
    if (!names)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        names[i] = keys[i].fqn;
    qsort(names, n, sizeof *names, cmp_str_ptr);
    int rc = 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            snprintf(err, errlen, "two keys named %s", names[i]);
            rc = -EEXIST;
        }
    free(names);
    for (size_t i = 0; i < n && !rc; i++) {
        const ck_save_key *k = &keys[i];
        const ck_key *o = k->old;
        if (!o && k->placed && (k->transforms || k->placed->fd < 0)) {
            snprintf(err, errlen, "key %s: a streamed item can be neither compressed nor remote",
                     k->fqn);
            rc = -EINVAL;
            continue;
        }
        if (!o) {
            const ck_dtype_info *dt = ck_dtype_get(k->dtype);
            uint64_t numel, bytes;
            if (!dt || k->ndim > CK_MAX_DIMS || (k->ndim && !k->shape) ||
                ck_shape_numel(k->ndim, k->shape, &numel) ||
                __builtin_mul_overflow(numel, (uint64_t)dt->size, &bytes) || bytes > INT64_MAX) {
                snprintf(err, errlen, "key %s: bad dtype or shape for a new tensor", k->fqn);
                rc = -EINVAL;
            } else if (!k->read) {
                snprintf(err, errlen, "key %s: no content", k->fqn);
                rc = -EINVAL;
            }
            continue;
        }
        if ((k->ndirty || k->rewrite_bytes) && (o->error || !k->read)) {
            snprintf(err, errlen, "key %s: its stored chunks cannot be read, so it cannot be patched",
                     k->fqn);
            rc = -EIO;
        }
        if (k->rewrite_bytes && o->kind != CK_KEY_BYTES) {
            snprintf(err, errlen, "key %s: not a bytes entry", k->fqn);
            rc = -EINVAL;
        }
        for (uint32_t j = 0; j < o->nchunks && !rc; j++)
            if (o->chunks[j].transforms & CK_TF_UNKNOWN) {
                snprintf(err, errlen,
                         "key %s: an item has a storage transform ckptfs cannot write back",
                         k->fqn);
                rc = -ENOTSUP;
            }
    }
    return rc;
}

/* Where key k goes in state_dict_metadata: an old key keeps its place, a
 * new one follows every old one. */
typedef struct {
    size_t rank, index;
} order_entry;

static int cmp_order(const void *a, const void *b)
{
    const order_entry *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int build_order(ck_checkpoint *ck, const ck_save_key *keys, size_t n, plan *p)
{
    order_entry *e = malloc((n ? n : 1) * sizeof *e);
    p->order = malloc((n ? n : 1) * sizeof *p->order);
    if (!e || !p->order) {
        free(e);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const ck_key *o = keys[i].old ? keys[i].old : ck_find_key(ck, keys[i].fqn);
        e[i] = (order_entry){ o ? o->md_order : SIZE_MAX, i };
    }
    qsort(e, n, sizeof *e, cmp_order);
    for (size_t i = 0; i < n; i++)
        p->order[i] = e[i].index;
    free(e);
    return 0;
}

/* planner_data and TensorProperties of key i: kept from the key of the
 * same name (a rename takes its siblings' planner path, a new key under an
 * old name the old key's), else following the checkpoint. */
static int carry_key_facts(ck_checkpoint *ck, const ck_planner_pattern *pat, const ck_save_key *k,
                           plan *p, size_t i)
{
    ck_md_key *m = &p->md[i];
    const ck_key *same = ck_find_key(ck, k->fqn);
    const ck_key *o = k->old;
    if (o && m->kind == CK_KEY_TENSOR)
        m->props_id = o->props_id;
    else if (same && same->kind == CK_KEY_TENSOR && m->kind == CK_KEY_TENSOR)
        m->props_id = same->props_id;
    if (same) {
        m->planner_kind = same->planner_kind;
        m->planner_path = same->planner_path;
        m->planner_path_is_int = same->planner_path_is_int;
        m->planner_path_len = same->planner_path_len;
        return 0;
    }
    if (o && (o->planner_kind == CK_PD_ABSENT || o->planner_kind == CK_PD_NONE)) {
        /* renamed, but it had no path to redo: no entry or None, as it was */
        m->planner_kind = o->planner_kind;
        return 0;
    }
    char **path;
    uint8_t *is_int;
    uint32_t len;
    int rc = ck_planner_path_for(ck, pat, k->fqn, &path, &is_int, &len);
    if (rc)
        return rc;
    m->planner_kind = CK_PD_TUPLE;
    m->planner_path = path;
    m->planner_path_is_int = is_int;
    m->planner_path_len = len;
    p->own_path[i] = 1;
    return 0;
}

static int build_plan(ck_checkpoint *ck, const ck_save_key *keys, size_t n, plan *p,
                      uint64_t *nitems, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->md = calloc(n ? n : 1, sizeof *p->md);
    p->own_path = calloc(n ? n : 1, 1);
    if (!p->own_path || build_order(ck, keys, n, p))
        return -ENOMEM;
    ck_planner_pattern pat;
    ck_planner_pattern_of(ck, &pat);
    p->chunks = calloc(n ? n : 1, sizeof *p->chunks);
    p->rewrite = calloc(n ? n : 1, sizeof *p->rewrite);
    p->zeros = calloc(CK_MAX_DIMS, sizeof *p->zeros);
    if (!p->md || !p->chunks || !p->rewrite || !p->zeros)
        return -ENOMEM;
    *nitems = 0;
    for (size_t i = 0; i < n; i++) {
        const ck_save_key *k = &keys[i];
        const ck_key *o = k->old;
        ck_md_key *m = &p->md[i];
        m->fqn = k->fqn;
        uint32_t nch = o ? o->nchunks : 1;
        p->chunks[i] = calloc(nch ? nch : 1, sizeof **p->chunks);
        p->rewrite[i] = calloc(nch ? nch : 1, 1);
        if (!p->chunks[i] || !p->rewrite[i])
            return -ENOMEM;
        m->chunks = p->chunks[i];
        m->nchunks = nch;
        if (!o) {
            m->kind = CK_KEY_TENSOR;
            m->dtype = k->dtype;
            m->ndim = k->ndim;
            m->shape = k->shape;
            p->chunks[i][0].offsets = p->zeros;
            p->chunks[i][0].sizes = k->shape;
            p->rewrite[i][0] = 1;
            (*nitems)++;
            if (carry_key_facts(ck, &pat, k, p, i))
                return -ENOMEM;
            continue;
        }
        m->kind = o->kind;
        m->dtype = o->dtype;
        m->ndim = o->ndim;
        m->shape = o->shape;
        /* the nested-dict path only still describes the key under its name */
        if (carry_key_facts(ck, &pat, k, p, i))
            return -ENOMEM;
        for (uint32_t j = 0; j < nch; j++) {
            const ck_chunk *c = &o->chunks[j];
            ck_md_chunk *mc = &p->chunks[i][j];
            mc->offsets = c->offsets;
            mc->sizes = c->sizes;
            mc->storage = (ck_md_storage){ c->file < ck->nfiles ? ck->files[c->file].path : NULL,
                                           c->offset, c->length, c->transforms };
        }
        if (o->kind == CK_KEY_BYTES) {
            if (k->rewrite_bytes) {
                p->rewrite[i][0] = 1;
                (*nitems)++;
            }
            continue;
        }
        if (k->ndirty) {
            int rc = ck_save_plan_chunks(o, k->dirty, k->ndirty, p->rewrite[i]);
            if (rc) {
                snprintf(err, errlen, "key %s: cannot plan its chunks: %s", k->fqn, strerror(-rc));
                return rc;
            }
            for (uint32_t j = 0; j < nch; j++)
                *nitems += p->rewrite[i][j];
        }
    }
    return 0;
}

/* ---- names ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Creates a file no other name can clash with: O_EXCL, counting up. */
static int create_unique(int dirfd, const char *prefix, const char *suffix, char *name, size_t cap)
{
    uint64_t t = now_ns();
    for (unsigned n = 0; n < 1000; n++) {
        snprintf(name, cap, "%s%" PRIu64 "_%u%s", prefix, t, n, suffix);
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

static void make_save_id(char *out, size_t cap)
{
    uint8_t r[16] = { 0 };
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        uint64_t t = now_ns() ^ ((uint64_t)getpid() << 32);
        memcpy(r, &t, sizeof t);
    }
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    snprintf(out, cap,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
             r[14], r[15]);
}

/* ---- metadata replacement ---- */

static int replace_metadata(step_ctx *s, int dirfd, const uint8_t *buf, size_t len, char *err,
                            size_t errlen)
{
    char tmp[128];
    int fd = create_unique(dirfd, TMP_PREFIX, "", tmp, sizeof tmp);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a temporary metadata file: %s", strerror(-fd));
        return fd;
    }
    int rc = step_pwrite(s, fd, buf, len, 0);
    if (!rc)
        rc = step_fsync(s, fd);
    if (close(fd) && !rc)
        rc = -errno;
    if (!rc)
        rc = step_rename(s, dirfd, tmp, ".metadata");
    if (rc) {
        snprintf(err, errlen, "cannot write .metadata: %s", strerror(-rc));
        unlinkat(dirfd, tmp, 0);
        return rc;
    }
    /* the rename is durable once the directory is; the new state is already
     * the visible one, so a failure here is reported but not undone */
    int drc = step_fsync(s, dirfd);
    if (drc)
        fprintf(stderr, "ckptfs: fsync of the checkpoint directory failed: %s\n", strerror(-drc));
    return 0;
}

/* Remote: one conditional write.  expect is the identity of the
 * `.metadata` the current state was read from (NULL: there must be none). */
static int replace_metadata_object(step_ctx *s, ck_storage *st, const char *expect,
                                   const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    int rc = step_injected(s);
    if (!rc) {
        rc = ck_storage_replace(st, ".metadata", buf, len, expect);
        step_done(s);
    }
    if (rc == -EAGAIN)
        snprintf(err, errlen, "another writer changed .metadata since it was read: "
                 "this commit is refused, nothing was overwritten");
    else if (rc)
        snprintf(err, errlen, "cannot write .metadata: %s", strerror(-rc));
    return rc;
}

/* A name for the new data object: the local O_EXCL loop has no
 * equivalent, so the name carries time and randomness, and the object is
 * written with If-None-Match (storage_s3.c) so it never replaces one. */
static int create_unique_object(ck_storage *st, char *name, size_t cap, ck_object_writer **w)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
        r = (uint32_t)getpid();
    snprintf(name, cap, "%s%" PRIu64 "_%08" PRIx32 ".distcp", DATA_PREFIX, now_ns(), r);
    return ck_storage_create(st, name, w);
}

/* ---- garbage ---- */

/* Set of paths the new metadata uses, for the removal pass. */
typedef struct {
    const char **v;
    size_t n;
} path_set;

static int path_set_build(const ck_md *md, path_set *ps)
{
    size_t total = 0;
    for (size_t i = 0; i < md->nkeys; i++)
        total += md->keys[i].nchunks;
    ps->v = malloc((total ? total : 1) * sizeof *ps->v);
    if (!ps->v)
        return -ENOMEM;
    ps->n = 0;
    for (size_t i = 0; i < md->nkeys; i++)
        for (uint32_t j = 0; j < md->keys[i].nchunks; j++)
            ps->v[ps->n++] = md->keys[i].chunks[j].storage.relative_path;
    qsort(ps->v, ps->n, sizeof *ps->v, cmp_str_ptr);
    return 0;
}

static int path_set_has(const path_set *ps, const char *p)
{
    /* the elements are the names themselves */
    return ck_name_find(ps->v, ps->n, sizeof *ps->v, 0, p) != NULL;
}

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* After the rename: files only the old state used, and debris of commits
 * that never reached their rename.  Failures only leave garbage behind. */
static uint64_t remove_unreferenced(step_ctx *s, ck_checkpoint *old, int dirfd, const ck_md *md)
{
    path_set ps;
    uint64_t removed = 0;
    if (path_set_build(md, &ps))
        return 0;
    for (size_t i = 0; i < old->nfiles; i++)
        if (!path_set_has(&ps, old->files[i].path) &&
            step_unlink(s, dirfd, old->files[i].path) == 0)
            removed++;
    DIR *d = NULL;
    ck_opendir_at(dirfd, &d); /* unlistable: only the named files go */
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *nm = de->d_name;
        int ours = strncmp(nm, DATA_PREFIX, strlen(DATA_PREFIX)) == 0 && has_suffix(nm, ".distcp");
        int tmp = strncmp(nm, TMP_PREFIX, strlen(TMP_PREFIX)) == 0;
        if ((ours && !path_set_has(&ps, nm)) || tmp)
            if (step_unlink(s, dirfd, nm) == 0)
                removed++;
    }
    if (d)
        closedir(d);
    free(ps.v);
    return removed;
}

typedef struct {
    step_ctx *s;
    ck_storage *st;
    path_set *ps;
    uint64_t removed;
} debris_ctx;

static int remove_debris(void *ctx, const char *name, const ck_object_info *info)
{
    debris_ctx *c = ctx;
    if (strncmp(name, DATA_PREFIX, strlen(DATA_PREFIX)) == 0 && has_suffix(name, ".distcp") &&
        !path_set_has(c->ps, name) && step_remove(c->s, c->st, name) == 0)
        c->removed++;
    return 0;
}

/* Remote: the same as remove_unreferenced, through the storage. */
static uint64_t remove_unreferenced_objects(step_ctx *s, ck_checkpoint *old, ck_storage *st,
                                            const ck_md *md)
{
    path_set ps;
    if (path_set_build(md, &ps))
        return 0;
    debris_ctx c = { s, st, &ps, 0 };
    for (size_t i = 0; i < old->nfiles; i++)
        if (!path_set_has(&ps, old->files[i].path) && step_remove(s, st, old->files[i].path) == 0)
            c.removed++;
    /* debris of commits that died (the listing the old state was opened with) */
    ck_storage_list(old->storage, remove_debris, &c);
    free(ps.v);
    return c.removed;
}

/* ---- the commit ---- */

static int write_items(const ck_save_key *keys, size_t n, plan *p, data_sink *d, int dirfd,
                       char *data_name, ck_commit_stats *st, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const ck_save_key *k = &keys[i];
        ck_md_key *m = &p->md[i];
        for (uint32_t j = 0; j < m->nchunks; j++) {
            if (!p->rewrite[i][j])
                continue;
            ck_md_chunk *mc = &p->chunks[i][j];
            int rc;
            if (!k->old && k->placed) {
                rc = finish_placed(d->steps, dirfd, k, &mc->storage, err, errlen);
                if (rc)
                    return rc;
                st->items++;
                st->item_bytes += mc->storage.length;
                continue;
            }
            if (!k->old) {
                rc = write_item(d, k, k->dtype, k->ndim, k->shape, k->read, k->read_ctx,
                                k->transforms, &mc->storage, err, errlen);
            } else if (k->old->kind == CK_KEY_BYTES) {
                rc = write_item(d, k, CK_DT_UINT8, 0, NULL, NULL, NULL, k->old->chunks[0].transforms,
                                &mc->storage, err, errlen);
            } else {
                const ck_chunk *c = &k->old->chunks[j];
                chunk_src src = { k->old, c, k };
                rc = write_item(d, k, k->old->dtype, k->old->ndim, c->sizes, read_chunk_image, &src,
                                c->transforms, &mc->storage, err, errlen);
            }
            if (rc)
                return rc;
            mc->storage.relative_path = data_name;
            st->items++;
            st->item_bytes += mc->storage.length;
        }
    }
    return sink_flush(d);
}

/* -ESTALE when the checkpoint's .metadata is no longer the object ck was
 * read from (its identity, storage.h): another writer (torch re-saving, a
 * second tool) replaced it, and writing ours over it would lose theirs. */
static int check_metadata_unchanged(const ck_checkpoint *ck, char *err, size_t errlen)
{
    if (!ck->metadata_info.identity[0])
        return 0; /* a new checkpoint: no .metadata was read */
    ck_object *obj = NULL;
    ck_object_info now;
    bool present = ck_storage_open(ck->storage, ".metadata", &obj) == 0 &&
                   ck_object_info_get(obj, &now) == 0;
    ck_object_close(obj);
    if (present && strcmp(now.identity, ck->metadata_info.identity) == 0)
        return 0;
    snprintf(err, errlen,
             "%s/.metadata was %s since ckptfs read it (another writer?); nothing was written",
             ck->source, present ? "replaced" : "removed");
    return -ESTALE;
}

int ck_commit(ck_checkpoint *ck, const ck_save_key *keys, size_t nkeys, const ck_commit_opts *opts,
              ck_commit_stats *stats, char *err, size_t errlen)
{
    ck_commit_stats local;
    ck_commit_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    if (errlen)
        err[0] = '\0';
    step_ctx steps = { opts, 0 };
    int rc = check_metadata_unchanged(ck, err, errlen);
    if (!rc)
        rc = check_keys(keys, nkeys, err, errlen);
    plan p;
    uint64_t nitems = 0;
    if (!rc)
        rc = build_plan(ck, keys, nkeys, &p, &nitems, err, errlen);
    else
        memset(&p, 0, sizeof p);
    int data_fd = -1;
    data_sink d = { &steps, -1, 0, NULL, 0, NULL };
    /* streamed items are in files of their own; the others share one */
    uint64_t nshared = nitems;
    for (size_t i = 0; !rc && i < nkeys; i++)
        if (!keys[i].old && keys[i].placed) {
            if (opts->dirfd < 0) {
                snprintf(err, errlen, "key %s: streamed items need a local checkpoint",
                         keys[i].fqn);
                rc = -EINVAL;
            }
            nshared--;
        }
    if (!rc && nitems) {
        if (nshared)
            d.buf = malloc(SINK_BUF);
        if (nshared && !d.buf)
            rc = -ENOMEM;
        if (!rc && !nshared) {
            /* only streamed items */
        } else if (!rc && opts->dirfd < 0) {
            rc = create_unique_object(opts->storage, st->data_file, sizeof st->data_file, &d.w);
            if (rc) {
                st->data_file[0] = '\0';
                snprintf(err, errlen, "cannot create a data object: %s", strerror(-rc));
            }
        } else if (!rc) {
            data_fd = create_unique(opts->dirfd, DATA_PREFIX, ".distcp", st->data_file,
                                    sizeof st->data_file);
            if (data_fd < 0) {
                rc = data_fd;
                st->data_file[0] = '\0';
                snprintf(err, errlen, "cannot create a data file: %s", strerror(-rc));
            }
        }
        d.fd = data_fd;
        if (!rc)
            rc = write_items(keys, nkeys, &p, &d, opts->dirfd, st->data_file, st, err, errlen);
        if (!nshared) {
            /* the streamed items' names must be durable before a metadata names them */
            if (!rc)
                rc = step_fsync(&steps, opts->dirfd);
        } else if (d.w) {
            /* visible and durable once finished; nothing names it yet */
            if (!rc)
                rc = step_finish(&steps, d.w);
            else
                ck_object_writer_abort(d.w);
            d.w = NULL;
        } else {
            if (!rc)
                rc = step_fsync(&steps, data_fd);
            if (data_fd >= 0 && close(data_fd) && !rc)
                rc = -errno;
            /* the new file's name must be durable before a metadata names it */
            if (!rc)
                rc = step_fsync(&steps, opts->dirfd);
        }
        if (rc && !err[0])
            snprintf(err, errlen, "cannot write %s: %s", st->data_file, strerror(-rc));
    }
    free(d.buf);
    ck_md md = { p.md, nkeys, p.order, ck->dialect, opts->checkpoint_id, NULL };
    char save_id[40];
    make_save_id(save_id, sizeof save_id);
    md.save_id = save_id;
    uint8_t *mbuf = NULL;
    size_t mlen = 0;
    if (!rc)
        rc = ck_metadata_write(&md, &mbuf, &mlen, err, errlen);
    /* again, as late as can be: writing the items took time (an object
     * store checks once more itself: the PUT is conditional) */
    if (!rc)
        rc = check_metadata_unchanged(ck, err, errlen);
    if (!rc && opts->dirfd < 0)
        rc = replace_metadata_object(&steps, opts->storage,
                                     ck->metadata_info.identity[0] ? ck->metadata_info.identity
                                                                   : NULL,
                                     mbuf, mlen, err, errlen);
    else if (!rc)
        rc = replace_metadata(&steps, opts->dirfd, mbuf, mlen, err, errlen);
    free(mbuf);
    if (rc) {
        if (opts->dirfd >= 0)
            unlink_placed(keys, nkeys, opts->dirfd);
        if (st->data_file[0] && opts->dirfd < 0)
            ck_storage_remove(opts->storage, st->data_file);
        else if (st->data_file[0])
            unlinkat(opts->dirfd, st->data_file, 0);
        st->data_file[0] = '\0';
    } else if (opts->dirfd < 0) {
        st->removed = remove_unreferenced_objects(&steps, ck, opts->storage, &md);
    } else {
        st->removed = remove_unreferenced(&steps, ck, opts->dirfd, &md);
    }
    st->syscalls = steps.steps;
    plan_free(&p, nkeys);
    return rc;
}

/* The .metadata of a checkpoint with no keys, written to dirfd, or to st
 * when dirfd < 0 (as a new object: an existing one is not replaced). */
static int commit_empty(int dirfd, ck_storage *st, const char *checkpoint_id, char *err,
                        size_t errlen)
{
    ck_commit_opts opts = { .dirfd = dirfd, .storage = st, .checkpoint_id = checkpoint_id };
    step_ctx steps = { &opts, 0 };
    ck_md md = { NULL, 0, NULL, NULL, checkpoint_id, NULL };
    char save_id[40];
    make_save_id(save_id, sizeof save_id);
    md.save_id = save_id;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (errlen)
        err[0] = '\0';
    int rc = ck_metadata_write(&md, &buf, &len, err, errlen);
    if (!rc)
        rc = dirfd >= 0 ? replace_metadata(&steps, dirfd, buf, len, err, errlen)
                        : replace_metadata_object(&steps, st, NULL, buf, len, err, errlen);
    free(buf);
    return rc;
}

int ck_commit_empty(int dirfd, const char *checkpoint_id, char *err, size_t errlen)
{
    return commit_empty(dirfd, NULL, checkpoint_id, err, errlen);
}

int ck_commit_empty_storage(ck_storage *st, const char *checkpoint_id, char *err, size_t errlen)
{
    return commit_empty(-1, st, checkpoint_id, err, errlen);
}
