/* Directory listings for the low-level front end (see ll_readdir.h).
 * Entries are added to the reply as the path operation produces them, so
 * a piece of a big directory costs the entries before it a counter each
 * and nothing for those after it. */
#include "ll_readdir.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ll_ops.h"

typedef struct {
    char *name;
    bool has_st;
    struct stat st;
} dir_entry;

struct fs_dir_handle {
    bool listed;
    int err;
    dir_entry *v;
    size_t n, cap;
};

int fs_dir_handle_new(fs_dir_handle **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -ENOMEM;
}

void fs_dir_handle_free(fs_dir_handle *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].name);
    free(d->v);
    free(d);
}

static int keep_entry(void *ctx, const char *name, const struct stat *st)
{
    fs_dir_handle *d = ctx;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 32;
        dir_entry *v = realloc(d->v, cap * sizeof *v);
        if (!v)
            return d->err = -ENOMEM;
        d->v = v;
        d->cap = cap;
    }
    dir_entry *e = &d->v[d->n];
    if (!(e->name = strdup(name)))
        return d->err = -ENOMEM;
    e->has_st = st != NULL;
    if (st)
        e->st = *st;
    d->n++;
    return 0;
}

/* The reply being built. */
typedef struct {
    fuse_req_t req;
    fs_root *r;
    const fs_ipath *dir;
    bool plus;
    char *buf;
    size_t size, len;
    uint64_t index; /* of the next entry produced */
    uint64_t start; /* the first entry the reply holds */
    int err;
} reply_ctx;

/* Adds entry x->index (name, attributes st or none) if it is due and fits;
 * non-zero when the reply is full. */
static int add_entry(void *ctx, const char *name, const struct stat *st)
{
    reply_ctx *x = ctx;
    uint64_t idx = x->index++;
    if (idx < x->start)
        return 0;
    bool dots = idx < 2;
    char *path = dots ? NULL : fs_ll_child_path(x->dir, name);
    if (!dots && !path) {
        x->err = -ENOMEM;
        return 1;
    }
    off_t next = (off_t)(idx + 1);
    size_t room = x->size - x->len, used;
    if (x->plus) {
        struct fuse_entry_param e;
        memset(&e, 0, sizeof e);
        bool counted = false;
        if (!dots && st) {
            if (fs_ll_entry(x->r, path, st, &e) != 0) {
                free(path);
                x->err = -ENOMEM;
                return 1;
            }
            counted = true;
        } else {
            /* no attributes: ino 0 makes the kernel look the name up */
            e.attr.st_mode = dots ? S_IFDIR : (st ? st->st_mode : 0);
            e.attr.st_ino = dots ? FS_ROOT_INO : fs_itable_peek(x->r->itable, path);
        }
        used = fuse_add_direntry_plus(x->req, x->buf + x->len, room, name, &e, next);
        if (used > room && counted)
            fs_itable_forget(x->r->itable, e.ino, 1); /* not sent: not held */
    } else {
        struct stat s;
        memset(&s, 0, sizeof s);
        s.st_mode = dots ? S_IFDIR : (st ? st->st_mode : 0);
        s.st_ino = dots ? FS_ROOT_INO : fs_itable_peek(x->r->itable, path);
        used = fuse_add_direntry(x->req, x->buf + x->len, room, name, &s, next);
    }
    free(path);
    if (used > room)
        return 1;
    x->len += used;
    return 0;
}

int fs_ll_readdir(fuse_req_t req, fs_root *r, const fs_path_ops *ops, const fs_ipath *dir,
                  fs_dir_handle *d, size_t size, off_t off, bool plus, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    if (off < 0)
        return -EINVAL;
    reply_ctx x = { .req = req, .r = r, .dir = dir, .plus = plus, .size = size,
                    .start = (uint64_t)off };
    if (!(x.buf = malloc(size ? size : 1)))
        return -ENOMEM;
    int rc = 0;
    if (d && (!d->listed || off == 0)) {
        for (size_t i = 0; i < d->n; i++)
            free(d->v[i].name);
        d->n = 0;
        d->err = 0;
        rc = ops->readdir(r, dir->s, keep_entry, d, false, 0);
        if (!rc)
            rc = d->err;
        d->listed = rc == 0;
    }
    if (!rc && !add_entry(&x, ".", NULL) && !add_entry(&x, "..", NULL)) {
        if (d) {
            for (size_t i = 0; i < d->n; i++)
                if (add_entry(&x, d->v[i].name, d->v[i].has_st ? &d->v[i].st : NULL))
                    break;
        } else {
            /* the entries before this piece are not even produced */
            uint64_t skip = x.start > x.index ? x.start - x.index : 0;
            x.index += skip;
            rc = ops->readdir(r, dir->s, add_entry, &x, plus, skip);
            if (rc > 0)
                rc = 0; /* the reply is full */
        }
    }
    if (!rc)
        rc = x.err;
    if (rc) {
        free(x.buf);
        return rc;
    }
    *buf = x.buf;
    *len = x.len;
    return 0;
}
