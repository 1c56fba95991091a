/* Where a checkpoint's bytes live: a small interface over named objects
 * beneath one root, so that the planner reads a local directory and an
 * object store (s3://) the same way.
 *
 *   open      a named object beneath the root, confined to it
 *   info      its size, mtime and identity (local: dev/ino/size/mtime;
 *             object stores: the ETag seen when it was opened)
 *   read      exactly n bytes at off (ranged read), -EIO when short
 *   fd        the object's file descriptor when it has one (local), so that
 *             hot paths pread straight into the caller's buffer
 *   list      the objects directly beneath the root
 *   create/append/finish/abort
 *             a new object, written as a stream, visible and durable at
 *             finish (local: O_EXCL file + fsync of it and the directory)
 *   replace   atomic, conditional replacement of one small object
 *             (`.metadata`): it happens only if the current object still has
 *             the identity the caller read (or does not exist when expect is
 *             NULL); -EAGAIN when it lost a race.  Local: temp file, fsync,
 *             rename, fsync of the directory.
 *   remove    deletes an object
 *   prefetch  (optional) starts fetching a range a read will soon want
 *
 * Every call returns 0 or -errno.  Reads return -EIO when the object
 * cannot give the bytes (short, or replaced since it was opened) and
 * -ETIMEDOUT when the store did not answer after its retries (transient:
 * the same read may succeed later).  Objects are safe to read from several
 * threads at once; a backend never holds a lock across its I/O. */
#ifndef CKPT_STORAGE_H
#define CKPT_STORAGE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct ck_storage ck_storage;
typedef struct ck_object ck_object;
typedef struct ck_object_writer ck_object_writer;

#define CK_IDENTITY_MAX 128

typedef struct {
    uint64_t size;
    struct timespec mtime;
    char identity[CK_IDENTITY_MAX];
} ck_object_info;

/* Called once per listed object; a non-zero return stops the listing and
 * is returned by ck_storage_list. */
typedef int (*ck_storage_list_fn)(void *ctx, const char *name, const ck_object_info *info);

typedef struct {
    int (*open)(ck_storage *st, const char *name, ck_object **out);
    int (*info)(ck_object *obj, ck_object_info *info);
    int (*read)(ck_object *obj, uint64_t off, void *buf, size_t n);
    int (*fd)(const ck_object *obj);
    void (*close)(ck_object *obj);
    int (*list)(ck_storage *st, ck_storage_list_fn fn, void *ctx);
    int (*create)(ck_storage *st, const char *name, ck_object_writer **out);
    int (*append)(ck_object_writer *w, const void *buf, size_t n);
    int (*finish)(ck_object_writer *w);
    void (*abort)(ck_object_writer *w);
    int (*replace)(ck_storage *st, const char *name, const void *buf, size_t n,
                   const char *expect_identity);
    int (*remove)(ck_storage *st, const char *name);
    void (*destroy)(ck_storage *st);
    /* optional (NULL: nothing to gain): start fetching bytes a read will
     * soon want, without waiting for them */
    void (*prefetch)(ck_object *obj, uint64_t off, uint64_t len);
} ck_storage_ops;

/* Backends embed these as their first member. */
struct ck_storage {
    const ck_storage_ops *ops;
};
struct ck_object {
    ck_storage *st;
};
struct ck_object_writer {
    ck_storage *st;
};

/* What SOURCE names, for ck_storage_for_source. */
typedef struct {
    /* object stores (SPEC "Object storage"); NULL = from the environment */
    const char *endpoint;
    const char *region;
    const char *profile;
    const char *addressing; /* "path" or "virtual" */
    uint64_t cache_bytes;   /* read-ahead / block cache bound */
    int allow_empty;        /* a prefix holding no objects is no error (create) */
} ck_storage_opts;

/* Resolves SOURCE: `s3://BUCKET/PREFIX` is an object store, anything else a
 * local path.  *leaf is NULL when SOURCE is a directory (prefix), else the
 * name of the one object it names within the root (malloc'd).  *mtime is
 * SOURCE's own.  On error: -errno and one line in err. */
int ck_storage_for_source(const char *source, const ck_storage_opts *opts, ck_storage **out,
                          char **leaf, struct timespec *mtime, char *err, size_t errlen);
/* 1 if SOURCE names an object store rather than a local path. */
int ck_storage_is_remote(const char *source);

/* The local directory backend (storage_local.c).  root_fd is duplicated. */
int ck_storage_local_new(int root_fd, ck_storage **out);
/* The root directory's fd of a local storage, -1 for other backends. */
int ck_storage_local_root_fd(const ck_storage *st);

static inline int ck_storage_open(ck_storage *st, const char *name, ck_object **out)
{
    return st->ops->open(st, name, out);
}
static inline int ck_object_info_get(ck_object *obj, ck_object_info *info)
{
    return obj->st->ops->info(obj, info);
}
static inline int ck_object_read(ck_object *obj, uint64_t off, void *buf, size_t n)
{
    return obj->st->ops->read(obj, off, buf, n);
}
static inline int ck_object_fd(const ck_object *obj)
{
    return obj->st->ops->fd(obj);
}
static inline void ck_object_close(ck_object *obj)
{
    if (obj)
        obj->st->ops->close(obj);
}
static inline void ck_object_prefetch(ck_object *obj, uint64_t off, uint64_t len)
{
    if (obj->st->ops->prefetch)
        obj->st->ops->prefetch(obj, off, len);
}
static inline int ck_storage_list(ck_storage *st, ck_storage_list_fn fn, void *ctx)
{
    return st->ops->list(st, fn, ctx);
}
static inline int ck_storage_create(ck_storage *st, const char *name, ck_object_writer **out)
{
    return st->ops->create(st, name, out);
}
static inline int ck_object_writer_append(ck_object_writer *w, const void *buf, size_t n)
{
    return w->st->ops->append(w, buf, n);
}
static inline int ck_object_writer_finish(ck_object_writer *w)
{
    return w->st->ops->finish(w);
}
static inline void ck_object_writer_abort(ck_object_writer *w)
{
    w->st->ops->abort(w);
}
static inline int ck_storage_replace(ck_storage *st, const char *name, const void *buf, size_t n,
                                     const char *expect_identity)
{
    return st->ops->replace(st, name, buf, n, expect_identity);
}
static inline int ck_storage_remove(ck_storage *st, const char *name)
{
    return st->ops->remove(st, name);
}
static inline void ck_storage_free(ck_storage *st)
{
    if (st)
        st->ops->destroy(st);
}

/* Reads a whole object of at most max bytes into a malloc'd buffer. */
int ck_storage_read_whole(ck_storage *st, const char *name, uint64_t max, uint8_t **out,
                          size_t *len, ck_object_info *info);

#endif
