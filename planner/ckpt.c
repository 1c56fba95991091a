/* Opening a checkpoint: find out what SOURCE is, let the matching builder
 * fill in keys and files, then sort, check and confine them. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "chunk_cache.h"
#include "chunk_index.h"
#include "ckpt_build.h"
#include "dcp_safetensors.h"
#include "decode_ahead.h"
#include "fd_io.h"

#define DEFAULT_CACHE_BYTES (256ull << 20)
/* Files kept open from mount on; beyond this they are opened on first read. */
#define EAGER_OPEN_MAX 1024
/* Keys with this many chunks or fewer are planned by scanning them: the
 * planner tries the chunk of the previous run first, so small keys need no
 * index. */
#define CHUNK_INDEX_MIN_CHUNKS 2

/* Marks file i changed and says so, once per file and state. */
static int file_changed(ck_checkpoint *ck, uint32_t i, const char *how)
{
    int expect = 0;
    if (atomic_compare_exchange_strong(&ck->files[i].changed, &expect, 1))
        fprintf(stderr, "ckptfs: %s: data file %s %s; its keys fail with EIO until a new "
                "checkpoint state is read\n", ck->source, ck->files[i].path, how);
    return -EIO;
}

/* Pins the identity of a file this state opens for the first time (caller
 * holds files_lock or is ck_open).  pre (at ck_open): the root's files as
 * they were before the metadata was read; one that changed since, or a
 * top-level one that appeared since, was written by the next save while
 * this state was read, and is refused.  A file missing at ck_open and
 * opened later is pinned as it is then (a file put back after a failed
 * copy must read), and every later change is caught as for the others. */
static int pin_file(ck_checkpoint *ck, uint32_t i, const struct stat *st, const ck_dir_ids *pre)
{
    ck_file *f = &ck->files[i];
    ck_file_id now;
    ck_file_id_from_stat(st, &now);
    if (f->pinned)
        return ck_file_id_equal(&f->id, &now) ? 0 : file_changed(ck, i, "changed since it was first opened");
    if (pre && pre->v) {
        const ck_file_id *before = ck_dir_ids_find(pre, f->path);
        if (before ? !ck_file_id_equal(before, &now) : !strchr(f->path, '/'))
            return file_changed(ck, i, "changed while the checkpoint's metadata was read");
    }
    f->id = now;
    f->pinned = true;
    return 0;
}

/* Pins a newly opened object: a local file (one with an fd) by its
 * identity now (pin_file); an object store needs none, its every read
 * carries the ETag seen at open (If-Match). */
static int pin_object(ck_checkpoint *ck, uint32_t i, ck_object *obj, const ck_dir_ids *pre)
{
    int fd = ck_object_fd(obj);
    struct stat st;
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) != 0)
        return -EIO;
    return pin_file(ck, i, &st, pre);
}

int ck_file_object(ck_checkpoint *ck, uint32_t i, ck_object **obj)
{
    if (i >= ck->nfiles)
        return -EINVAL;
    ck_object *cur = atomic_load_explicit(&ck->files[i].obj, memory_order_acquire);
    if (cur) {
        *obj = cur;
        return 0;
    }
    if (atomic_load(&ck->files[i].changed))
        return -EIO;
    /* Only files missing at mount or beyond EAGER_OPEN_MAX get here.  Not
     * ck->lock: the safetensors header probe calls this while holding it.
     * The storage confines names to the root (storage_local.c). */
    pthread_mutex_lock(&ck->files_lock);
    int rc = 0;
    cur = atomic_load_explicit(&ck->files[i].obj, memory_order_acquire);
    if (!cur) {
        ck_object *opened;
        rc = ck_storage_open(ck->storage, ck->files[i].path, &opened);
        if (!rc && (rc = pin_object(ck, i, opened, NULL)) != 0) {
            ck_object_close(opened);
        } else if (!rc) {
            atomic_store_explicit(&ck->files[i].fd, ck_object_fd(opened), memory_order_release);
            atomic_store_explicit(&ck->files[i].obj, opened, memory_order_release);
            cur = opened;
        }
    }
    pthread_mutex_unlock(&ck->files_lock);
    if (rc)
        return rc;
    *obj = cur;
    return 0;
}

int ck_file_check(ck_checkpoint *ck, uint32_t i)
{
    if (i >= ck->nfiles)
        return -EINVAL;
    if (atomic_load_explicit(&ck->files[i].changed, memory_order_relaxed))
        return -EIO;
    int fd = atomic_load_explicit(&ck->files[i].fd, memory_order_acquire);
    if (fd < 0 || !ck->files[i].pinned)
        return 0; /* an object store: the read itself was pinned to the ETag */
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -EIO;
    ck_file_id now;
    ck_file_id_from_stat(&st, &now);
    /* pinned and id were written before fd was published */
    if (!ck_file_id_equal(&ck->files[i].id, &now))
        return file_changed(ck, i, now.ino != ck->files[i].id.ino || now.dev != ck->files[i].id.dev
                                       ? "was replaced" : "was rewritten in place");
    return 0;
}

int ck_file_fd(ck_checkpoint *ck, uint32_t i, int *fd)
{
    ck_object *obj;
    int rc = ck_file_object(ck, i, &obj);
    if (rc)
        return rc;
    int f = ck_object_fd(obj);
    if (f < 0)
        return -EOPNOTSUPP;
    *fd = f;
    return 0;
}

int ck_file_source(ck_checkpoint *ck, uint32_t i, uint64_t base, uint64_t len,
                   ck_byte_source *src)
{
    ck_object *obj;
    int rc = ck_file_object(ck, i, &obj);
    if (rc)
        return rc;
    *src = ck_byte_source_object(obj, base, len);
    return 0;
}

int ck_file_pread(ck_checkpoint *ck, uint32_t i, void *dst, size_t len, uint64_t off)
{
    int fd = i < ck->nfiles ? atomic_load_explicit(&ck->files[i].fd, memory_order_acquire) : -1;
    if (fd >= 0) {
        /* the hot path: local files, read straight into the reply */
        return ck_pread_full(fd, dst, len, off) ? -EIO : 0;
    }
    ck_object *obj;
    if (ck_file_object(ck, i, &obj))
        return -EIO;
    int rc = ck_object_read(obj, off, dst, len);
    return rc == -ENOMEM || rc == -ETIMEDOUT ? rc : rc ? -EIO : 0;
}

void ck_file_prefetch(ck_checkpoint *ck, uint32_t i, uint64_t off, uint64_t len)
{
    ck_object *obj;
    if (len == 0 || ck_file_object(ck, i, &obj))
        return;
    if (ck->storage->ops->prefetch) {
        ck_object_prefetch(obj, off, len);
        return;
    }
    /* local files: the kernel's page cache fetches it in the background */
    int fd = ck_object_fd(obj);
    if (fd >= 0)
        (void)posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
}

int ck_file_size(ck_checkpoint *ck, uint32_t i, uint64_t *size)
{
    ck_object *obj;
    int rc = ck_file_object(ck, i, &obj);
    if (rc)
        return rc;
    if (ck->files[i].pinned) {
        /* published with the object: the size this state pinned, no fstat */
        *size = ck->files[i].id.size;
        return 0;
    }
    ck_object_info info;
    rc = ck_object_info_get(obj, &info);
    if (!rc)
        *size = info.size;
    return rc;
}

static int is_safetensors_name(void *ctx, const char *name, const ck_object_info *info)
{
    size_t n = strlen(name);
    return n > 12 && strcmp(name + n - 12, ".safetensors") == 0;
}

static int has_safetensors_files(ck_storage *st)
{
    return ck_storage_list(st, is_safetensors_name, NULL) > 0;
}

/* Sorts keys, refuses duplicates, checks chunk tiling (a bad key is marked,
 * not fatal) and confines every storage file to the root. */
static int finish_model(ck_checkpoint *ck, const ck_dir_ids *pre, char *err, size_t errlen)
{
    ck_sort_keys(ck);
    ck->readahead = ck_arena_calloc(ck->arena, ck->nkeys, sizeof *ck->readahead);
    if (!ck->readahead) {
        snprintf(err, errlen, "%s: out of memory", ck->source);
        return -ENOMEM;
    }
    for (size_t i = 1; i < ck->nkeys; i++) {
        if (strcmp(ck->keys[i - 1].fqn, ck->keys[i].fqn) == 0) {
            snprintf(err, errlen, "%s: key %s appears twice", ck->source, ck->keys[i].fqn);
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < ck->nkeys; i++) {
        ck_key *k = &ck->keys[i];
        char why[512];
        if (k->kind == CK_KEY_TENSOR && !k->error && ck_key_check_chunks(k, why, sizeof why)) {
            k->error = -EIO;
            fprintf(stderr, "ckptfs: %s: %s; reads of it will fail\n", ck->source, why);
        }
        if (k->kind == CK_KEY_TENSOR && !k->error && k->nchunks > CHUNK_INDEX_MIN_CHUNKS) {
            int rc = ck_chunk_index_build(ck->arena, k, &k->chunk_index, why, sizeof why);
            if (rc == -ENOMEM) {
                snprintf(err, errlen, "%s: out of memory indexing key %s", ck->source, k->fqn);
                return rc;
            }
            if (rc) {
                k->error = -EIO;
                fprintf(stderr, "ckptfs: %s: %s; reads of it will fail\n", ck->source, why);
            }
        }
    }
    for (size_t i = 0; i < ck->nfiles; i++) {
        ck_object *obj;
        int rc = ck_storage_open(ck->storage, ck->files[i].path, &obj);
        if (rc == -EXDEV || rc == -ELOOP) {
            snprintf(err, errlen, "%s: storage path %s leaves the checkpoint directory",
                     ck->source, ck->files[i].path);
            return -EINVAL;
        }
        if (rc == 0) {
            /* Every file present is pinned now, as close as can be to the
             * moment its metadata was read; one that changed already is
             * marked (EIO for its keys), not fatal. */
            if (pin_object(ck, (uint32_t)i, obj, pre) == 0 && i < EAGER_OPEN_MAX) {
                atomic_store(&ck->files[i].fd, ck_object_fd(obj));
                atomic_store(&ck->files[i].obj, obj);
            } else {
                ck_object_close(obj);
            }
        }
        /* A missing file is not fatal: reads that need it fail with EIO. */
    }
    return 0;
}

/* Messages quote names taken from the checkpoint (keys, paths, header
 * fields), which may hold newlines or escape sequences; the refusal must
 * stay the one line SPEC promises, so control bytes become '?'. */
static void keep_one_line(char *err)
{
    for (unsigned char *p = (unsigned char *)err; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

int ck_open(const char *source, const ck_open_opts *opts, ck_checkpoint **out, char *err,
            size_t errlen)
{
    if (errlen)
        err[0] = '\0';
    ck_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck)
        return -ENOMEM;
    pthread_mutex_init(&ck->lock, NULL);
    pthread_cond_init(&ck->resolved, NULL);
    pthread_mutex_init(&ck->files_lock, NULL);
    ck_pkl_memo_init(&ck->pkl_memo);
    /* once: sysconf reads /sys on every call, and read-ahead asks per request */
    ck->decode_width = ck_decode_ahead_width();
    ck->root_fd = -1;
    ck->arena = ck_arena_new();
    ck->source = strdup(source);
    int rc = (!ck->arena || !ck->source) ? -ENOMEM : 0;
    char *file = NULL;
    if (!rc) {
        ck_storage_opts so = { 0 };
        if (opts && opts->storage)
            so = *opts->storage;
        if (!so.cache_bytes)
            so.cache_bytes = opts && opts->cache_bytes ? opts->cache_bytes : DEFAULT_CACHE_BYTES;
        rc = ck_storage_for_source(source, &so, &ck->storage, &file, &ck->mtime, err, errlen);
    }
    if (!rc) {
        int lfd = ck_storage_local_root_fd(ck->storage);
        if (lfd >= 0 && (ck->root_fd = fcntl(lfd, F_DUPFD_CLOEXEC, 0)) < 0)
            rc = -errno;
    }
    /* the data files as they are before the metadata that names them is
     * read (see pin_file); without the list, files are pinned as found */
    ck_dir_ids pre = { 0 };
    if (!rc)
        ck_dir_ids_read(ck->root_fd, &pre);
    if (!rc) {
        ck_object *md = NULL;
        int mrc = file ? -ENOENT : ck_storage_open(ck->storage, ".metadata", &md);
        if (file) {
            size_t n = strlen(file);
            if (n < 12 || strcmp(file + n - 12, ".safetensors") != 0) {
                snprintf(err, errlen, "%s: not a checkpoint (expected a .safetensors file or a directory)",
                         source);
                rc = -EINVAL;
            } else {
                rc = ck_build_safetensors(ck, file, err, errlen);
            }
        } else if (mrc != -ENOENT && mrc != -ENOTDIR) {
            /* present; one that cannot be opened (not a regular file, a
             * link out of SOURCE) is reported by the DCP builder */
            ck_object_info mi;
            if (md && ck_object_info_get(md, &mi) == 0)
                ck->mtime = mi.mtime;
            ck_object_close(md);
            rc = ck_build_dcp(ck, opts && opts->whole_tree_metadata, err, errlen);
        } else if (has_safetensors_files(ck->storage)) {
            rc = ck_build_safetensors(ck, NULL, err, errlen);
        } else {
            snprintf(err, errlen, "%s: not a checkpoint (no .metadata and no .safetensors files)",
                     source);
            rc = -EINVAL;
        }
    }
    if (!rc)
        rc = finish_model(ck, &pre, err, errlen);
    ck_dir_ids_free(&pre);
    if (!rc)
        rc = ck_cache_new(opts && opts->cache_bytes ? opts->cache_bytes : DEFAULT_CACHE_BYTES,
                          &ck->cache);
    free(file);
    ck_build_done(ck);
    if (rc) {
        if (!err[0])
            snprintf(err, errlen, "%s: %s", source, strerror(-rc));
        keep_one_line(err);
        ck_close(ck);
        return rc;
    }
    *out = ck;
    return 0;
}

void ck_close(ck_checkpoint *ck)
{
    if (!ck)
        return;
    ck_decode_ahead_stop(ck); /* its workers read files and the cache */
    for (size_t i = 0; i < ck->nfiles; i++)
        ck_object_close(atomic_load(&ck->files[i].obj));
    free(ck->files);
    if (ck->root_fd >= 0)
        close(ck->root_fd);
    ck_storage_free(ck->storage);
    ck_cache_free(ck->cache);
    ck_dcp_st_free(ck);
    ck_arena_free(ck->arena);
    pthread_cond_destroy(&ck->resolved);
    pthread_mutex_destroy(&ck->lock);
    pthread_mutex_destroy(&ck->files_lock);
    ck_pkl_memo_destroy(&ck->pkl_memo);
    free(ck->source);
    free(ck);
}
