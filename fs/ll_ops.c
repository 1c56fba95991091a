/* The low-level FUSE front end: inode numbers to paths (inode_table.h),
 * the path operations (ops.h) below, and the replies.  One kernel request
 * per function; all state is the fs_root in the session's userdata.
 *
 * Read-only mounts let the kernel keep names and attributes for an hour
 * (a new state invalidates what it made stale: notify.h), and directory
 * listings until then too: on one checkpoint, opendir answers ENOSYS, after
 * which the kernel sends no OPENDIR/RELEASEDIR at all and caches every
 * listing it reads (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE are its defaults
 * without opendir); a run's directories are opened, to cache all but the
 * run's own listing.  rw mounts let it keep nothing: names and sizes change
 * at commits. */
#include "ll_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inode_table.h"
#include "ll_readdir.h"
#include "notify.h"
#include "ops.h"

static fs_root *root_of(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static const fs_path_ops *ops_of(const fs_root *r)
{
    return r->opts.rw ? &fs_write_ops : &fs_read_ops;
}

double fs_ll_timeout(const fs_root *r)
{
    return r->opts.rw ? 0.0 : 3600.0;
}

char *fs_ll_child_path(const fs_ipath *parent, const char *name)
{
    size_t pl = parent->len == 1 ? 0 : parent->len; /* "/" + name, not "//name" */
    size_t nl = strlen(name);
    if (nl == 0 || nl > 1024)
        return NULL;
    char *s = malloc(pl + 1 + nl + 1);
    if (!s)
        return NULL;
    memcpy(s, parent->s, pl);
    s[pl] = '/';
    memcpy(s + pl + 1, name, nl + 1);
    return s;
}

/* The path of ino, or an error reply sent (the number is not ours). */
static fs_ipath *path_or_reply(fuse_req_t req, fuse_ino_t ino)
{
    fs_ipath *p = fs_itable_path(root_of(req)->itable, ino);
    if (!p)
        fuse_reply_err(req, ESTALE);
    return p;
}

static void reply_rc(fuse_req_t req, int rc)
{
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

/* The path of name in parent (malloc'd) into *path_out; 0 or -errno. */
static int child_path(fuse_req_t req, fuse_ino_t parent, const char *name, char **path_out)
{
    fs_ipath *p = fs_itable_path(root_of(req)->itable, parent);
    if (!p)
        return -ESTALE;
    char *path = fs_ll_child_path(p, name);
    fs_ipath_put(p);
    if (!path)
        return strlen(name) > 1024 ? -ENAMETOOLONG : -ENOMEM;
    *path_out = path;
    return 0;
}

int fs_ll_entry(fs_root *r, const char *path, const struct stat *st, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    uint64_t ino, gen;
    int rc = fs_itable_lookup(r->itable, path, &ino, &gen);
    if (rc)
        return rc;
    e->ino = ino;
    e->generation = gen;
    e->attr = *st;
    e->attr.st_ino = ino;
    e->attr_timeout = fs_ll_timeout(r);
    e->entry_timeout = fs_ll_timeout(r);
    return 0;
}

/* Answers a request that made path exist (lookup, create, mkdir...): its
 * attributes as an entry, counted as one lookup. */
static void reply_entry_at(fuse_req_t req, const char *path)
{
    fs_root *r = root_of(req);
    struct stat st;
    struct fuse_entry_param e;
    int rc = ops_of(r)->getattr(r, path, &st, NULL);
    if (!rc)
        rc = fs_ll_entry(r, path, &st, &e);
    if (rc) {
        reply_rc(req, rc);
        return;
    }
    if (fuse_reply_entry(req, &e) != 0)
        fs_itable_forget(r->itable, e.ino, 1); /* interrupted: the kernel holds nothing */
}

/* ---- init ---- */

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
    fs_root *r = userdata;
    /* Splice lets a reply of shard-file bytes go from the shard's page
     * cache to the kernel without a copy in between; replies assembled in
     * memory are sent without it (ll_read), so each reply takes the cheaper
     * path. */
    r->splice = (conn->capable & FUSE_CAP_SPLICE_WRITE) && !r->opts.nosplice;
    if (r->splice)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    conn->want &= ~(FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    /* READDIRPLUS on every listing, not only the first of a directory:
     * find and ls -l then never look a name up one by one. */
    if (conn->capable & FUSE_CAP_READDIRPLUS)
        conn->want |= FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    conn->max_read = (unsigned)r->read_size; /* the mount option main.c gave */
    conn->max_readahead = 2 * (unsigned)r->read_size;
    if (!r->opts.rw && fs_notifier_start(r->se, r->itable, &r->notify) != 0)
        fprintf(stderr, "ckptfs: cannot start the invalidation thread: kernel entries of "
                "replaced states expire on their own\n");
}

/* ---- names ---- */

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    char *path = NULL;
    int rc = child_path(req, parent, name, &path);
    if (rc)
        reply_rc(req, rc);
    else
        reply_entry_at(req, path);
    free(path);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    fs_itable_forget(root_of(req)->itable, ino, nlookup);
    fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    fs_itable *t = root_of(req)->itable;
    for (size_t i = 0; i < count; i++)
        fs_itable_forget(t, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* ---- attributes ---- */

/* ino's attributes st, or the error rc. */
static void reply_attr(fuse_req_t req, fuse_ino_t ino, int rc, struct stat *st)
{
    if (rc) {
        reply_rc(req, rc);
        return;
    }
    st->st_ino = ino;
    fuse_reply_attr(req, st, fs_ll_timeout(root_of(req)));
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    struct stat st;
    int rc = ops_of(r)->getattr(r, p->s, &st, fi);
    fs_ipath_put(p);
    reply_attr(req, ino, rc, &st);
}

/* chmod, chown, truncate and utimes, in that order, then the attributes. */
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    if (!r->opts.rw) {
        fuse_reply_err(req, EROFS);
        return;
    }
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    int rc = 0;
    if (to_set & FUSE_SET_ATTR_MODE)
        rc = ops->chmod(r, p->s, attr->st_mode, fi);
    if (!rc && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
        rc = ops->chown(r, p->s, (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
                        (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1, fi);
    if (!rc && (to_set & FUSE_SET_ATTR_SIZE))
        rc = ops->truncate(r, p->s, attr->st_size, fi);
    if (!rc && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
        if (to_set & FUSE_SET_ATTR_ATIME_NOW)
            tv[0].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_ATIME)
            tv[0] = attr->st_atim;
        if (to_set & FUSE_SET_ATTR_MTIME_NOW)
            tv[1].tv_nsec = UTIME_NOW;
        else if (to_set & FUSE_SET_ATTR_MTIME)
            tv[1] = attr->st_mtim;
        rc = ops->utimens(r, p->s, tv, fi);
    }
    struct stat st;
    if (!rc)
        rc = ops->getattr(r, p->s, &st, fi);
    fs_ipath_put(p);
    reply_attr(req, ino, rc, &st);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    fs_root *r = root_of(req);
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    int rc = ops_of(r)->access(r, p->s, mask);
    fs_ipath_put(p);
    reply_rc(req, rc);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
    fs_root *r = root_of(req);
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    struct statvfs sv;
    int rc = ops_of(r)->statfs(r, p->s, &sv);
    fs_ipath_put(p);
    if (rc)
        reply_rc(req, rc);
    else
        fuse_reply_statfs(req, &sv);
}

/* ---- namespace (rw mounts; read-only ones never get these) ---- */

/* mknod, or mkdir for dir (rdev unused). */
static void ll_make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
                    bool dir)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    char *path = NULL;
    int rc = child_path(req, parent, name, &path);
    if (!rc && !(dir ? ops->mkdir != NULL : ops->mknod != NULL))
        rc = -EROFS;
    if (!rc)
        rc = dir ? ops->mkdir(r, path, mode) : ops->mknod(r, path, mode, rdev);
    if (rc)
        reply_rc(req, rc);
    else
        reply_entry_at(req, path);
    free(path);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    ll_make(req, parent, name, mode, rdev, false);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    ll_make(req, parent, name, mode, 0, true);
}

static void ll_remove(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    char *path = NULL;
    int rc = child_path(req, parent, name, &path);
    if (!rc && !(dir ? ops->rmdir : ops->unlink))
        rc = -EROFS;
    if (!rc)
        rc = dir ? ops->rmdir(r, path) : ops->unlink(r, path);
    if (!rc)
        fs_itable_detach(r->itable, path); /* the name may come back as a new file */
    reply_rc(req, rc);
    free(path);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    ll_remove(req, parent, name, false);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    ll_remove(req, parent, name, true);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    fs_root *r = root_of(req);
    char *from = NULL, *to = NULL;
    int rc = child_path(req, parent, name, &from);
    if (!rc)
        rc = child_path(req, newparent, newname, &to);
    if (!rc && !ops_of(r)->rename)
        rc = -EROFS;
    if (!rc)
        rc = ops_of(r)->rename(r, from, to, flags);
    /* the kernel moves its dentries itself; the numbers follow them */
    if (!rc && fs_itable_rename(r->itable, from, to) != 0)
        fprintf(stderr, "ckptfs: out of memory renaming %s: open it again by its new name\n",
                from);
    reply_rc(req, rc);
    free(from);
    free(to);
}

/* ---- files ---- */

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    char *path = NULL;
    int rc = child_path(req, parent, name, &path);
    if (!rc && !ops->create)
        rc = -EROFS;
    if (!rc)
        rc = ops->create(r, path, mode, fi);
    struct stat st;
    struct fuse_entry_param e;
    if (!rc) {
        int grc = ops->getattr(r, path, &st, fi);
        if (!grc)
            grc = fs_ll_entry(r, path, &st, &e);
        if (grc) {
            ops->release(r, path, fi);
            rc = grc;
        } else if (fuse_reply_create(req, &e, fi) != 0) {
            ops->release(r, path, fi); /* interrupted: no one holds the file */
            fs_itable_forget(r->itable, e.ino, 1);
        }
    }
    if (rc)
        reply_rc(req, rc);
    free(path);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    int rc = ops_of(r)->open(r, p->s, fi);
    if (rc)
        reply_rc(req, rc);
    else if (fuse_reply_open(req, fi) != 0)
        ops_of(r)->release(r, p->s, fi);
    fs_ipath_put(p);
}

/* The read's bytes as the path operation gives them: shard-file buffers
 * may be spliced, memory ones are written as they are. */
static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    struct fuse_bufvec *bv = NULL;
    int rc = ops_of(r)->read_buf(r, NULL, &bv, size, off, fi);
    if (rc) {
        reply_rc(req, rc);
        return;
    }
    bool fd = false;
    for (size_t i = 0; i < bv->count; i++)
        fd |= (bv->buf[i].flags & FUSE_BUF_IS_FD) != 0;
    fuse_reply_data(req, bv, fd ? 0 : FUSE_BUF_NO_SPLICE);
    fs_bufvec_free(bv);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    int rc = ops->write ? ops->write(r, NULL, buf, size, off, fi) : -EBADF;
    if (rc < 0)
        reply_rc(req, rc);
    else
        fuse_reply_write(req, (size_t)rc);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    /* ENOSYS (read-only mounts) stops the kernel sending FLUSH at every
     * close: nothing to flush, and a close after the daemon went still
     * succeeds. */
    reply_rc(req, ops->flush ? ops->flush(r, NULL, fi) : -ENOSYS);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    const fs_path_ops *ops = ops_of(r);
    reply_rc(req, ops->fsync ? ops->fsync(r, NULL, datasync, fi) : -ENOSYS);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    ops_of(r)->release(r, NULL, fi);
    fuse_reply_err(req, 0);
}

/* ---- directories ---- */

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_root *r = root_of(req);
    if (!r->opts.rw && !r->run) {
        fuse_reply_err(req, ENOSYS); /* see the top of this file */
        return;
    }
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    /* A run's step is opened here, so one that cannot be fails opendir. */
    int rc = ops_of(r)->opendir(r, p->s);
    fs_dir_handle *d = NULL;
    if (!rc && r->opts.rw)
        rc = fs_dir_handle_new(&d);
    if (!rc && r->run && ino != FS_ROOT_INO) {
        /* A step's directories change only with a new state, which
         * invalidates them (notify.h); the run's root lists the steps on
         * disk now, so the kernel asks for it every time. */
        fi->cache_readdir = 1;
        fi->keep_cache = 1;
    }
    fs_ipath_put(p);
    if (rc) {
        reply_rc(req, rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)d;
    if (fuse_reply_open(req, fi) != 0)
        fs_dir_handle_free(d);
}

static void ll_list(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi, bool plus)
{
    fs_root *r = root_of(req);
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    fs_dir_handle *d = (fs_dir_handle *)(uintptr_t)fi->fh;
    char *buf = NULL;
    size_t len = 0;
    int rc = fs_ll_readdir(req, r, ops_of(r), p, d, size, off, plus, &buf, &len);
    fs_ipath_put(p);
    if (rc)
        reply_rc(req, rc);
    else
        fuse_reply_buf(req, buf, len);
    free(buf);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    ll_list(req, ino, size, off, fi, false);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    ll_list(req, ino, size, off, fi, true);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fs_dir_handle_free((fs_dir_handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* ---- extended attributes ---- */

/* getxattr/listxattr: size 0 asks for the length only. */
static void reply_xattr_call(fuse_req_t req, size_t size, int (*call)(void *ctx, char *buf,
                             size_t size), void *ctx)
{
    char *buf = size ? malloc(size) : NULL;
    if (size && !buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int rc = call(ctx, buf, size);
    if (rc < 0)
        reply_rc(req, rc);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)rc);
    else
        fuse_reply_buf(req, buf, (size_t)rc);
    free(buf);
}

typedef struct {
    fs_root *r;
    const char *path, *name;
} xattr_ctx;

static int call_getxattr(void *ctx, char *buf, size_t size)
{
    xattr_ctx *x = ctx;
    return ops_of(x->r)->getxattr(x->r, x->path, x->name, buf, size);
}

static int call_listxattr(void *ctx, char *buf, size_t size)
{
    xattr_ctx *x = ctx;
    return ops_of(x->r)->listxattr(x->r, x->path, buf, size);
}

/* getxattr of name, or listxattr (name NULL), on ino's path. */
static void ll_xattr_read(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fs_ipath *p = path_or_reply(req, ino);
    if (!p)
        return;
    xattr_ctx x = { root_of(req), p->s, name };
    reply_xattr_call(req, size, name ? call_getxattr : call_listxattr, &x);
    fs_ipath_put(p);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    ll_xattr_read(req, ino, name, size);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    ll_xattr_read(req, ino, NULL, size);
}

/* setxattr/removexattr: the path of ino, or an error reply sent when the
 * mount has no such operation (has_op false) or ino is not ours. */
static fs_ipath *xattr_change_path(fuse_req_t req, fuse_ino_t ino, bool has_op)
{
    if (!has_op) {
        fuse_reply_err(req, root_of(req)->opts.rw ? ENOTSUP : EROFS);
        return NULL;
    }
    return path_or_reply(req, ino);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    fs_root *r = root_of(req);
    fs_ipath *p = xattr_change_path(req, ino, ops_of(r)->setxattr != NULL);
    if (!p)
        return;
    reply_rc(req, ops_of(r)->setxattr(r, p->s, name, value, size, flags));
    fs_ipath_put(p);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    fs_root *r = root_of(req);
    fs_ipath *p = xattr_change_path(req, ino, ops_of(r)->removexattr != NULL);
    if (!p)
        return;
    reply_rc(req, ops_of(r)->removexattr(r, p->s, name));
    fs_ipath_put(p);
}

const struct fuse_lowlevel_ops fs_ll_ops = {
    .init = ll_init,
    .lookup = ll_lookup,
    .forget = ll_forget,
    .forget_multi = ll_forget_multi,
    .getattr = ll_getattr,
    .setattr = ll_setattr,
    .access = ll_access,
    .statfs = ll_statfs,
    .mknod = ll_mknod,
    .mkdir = ll_mkdir,
    .unlink = ll_unlink,
    .rmdir = ll_rmdir,
    .rename = ll_rename,
    .create = ll_create,
    .open = ll_open,
    .read = ll_read,
    .write = ll_write,
    .flush = ll_flush,
    .fsync = ll_fsync,
    .release = ll_release,
    .opendir = ll_opendir,
    .readdir = ll_readdir,
    .readdirplus = ll_readdirplus,
    .releasedir = ll_releasedir,
    .getxattr = ll_getxattr,
    .listxattr = ll_listxattr,
    .setxattr = ll_setxattr,
    .removexattr = ll_removexattr,
};
