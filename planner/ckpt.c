/* Opening a checkpoint: find out what SOURCE is, let the matching builder
 * fill in keys and files, then sort, check and confine them. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arena.h"
#include "chunk_cache.h"
#include "chunk_index.h"
#include "ckpt_build.h"
#include "dcp_safetensors.h"
#include "geometry.h"
#include "decode_ahead.h"

#define DEFAULT_CACHE_BYTES (256ull << 20)
/* Files kept open from mount on; beyond this they are opened on first read. */
#define EAGER_OPEN_MAX 1024
/* Keys with this many chunks or fewer are planned by scanning them: the
 * planner tries the chunk of the previous run first, so small keys need no
 * index. */
#define CHUNK_INDEX_MIN_CHUNKS 2

/* ---- path -> file index while building (open addressing on FNV-1a) ---- */

typedef struct {
    size_t cap;      /* power of two */
    uint32_t *slots; /* file index + 1, 0 = empty */
    size_t files_cap;
} file_index;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int file_index_grow(ck_checkpoint *ck, file_index *fi)
{
    size_t cap = fi->cap ? fi->cap * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < ck->nfiles; i++) {
        size_t s = fnv1a(ck->files[i].path) & (cap - 1);
        while (slots[s])
            s = (s + 1) & (cap - 1);
        slots[s] = (uint32_t)i + 1;
    }
    free(fi->slots);
    fi->slots = slots;
    fi->cap = cap;
    return 0;
}

static int relpath_is_safe(const char *p)
{
    if (!*p || *p == '/')
        return 0;
    /* every component must be a plain name */
    const char *c = p;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += n;
        if (*c == '/')
            c++;
    }
    return 1;
}

int ck_add_file(ck_checkpoint *ck, const char *relpath, uint32_t *index)
{
    if (!relpath_is_safe(relpath) || strlen(relpath) >= PATH_MAX)
        return -EINVAL;
    file_index *fi = ck->file_index;
    if (!fi) {
        fi = calloc(1, sizeof *fi);
        if (!fi)
            return -ENOMEM;
        ck->file_index = fi;
    }
    if ((ck->nfiles + 1) * 2 > fi->cap) {
        int rc = file_index_grow(ck, fi);
        if (rc)
            return rc;
    }
    size_t s = fnv1a(relpath) & (fi->cap - 1);
    while (fi->slots[s]) {
        uint32_t i = fi->slots[s] - 1;
        if (strcmp(ck->files[i].path, relpath) == 0) {
            *index = i;
            return 0;
        }
        s = (s + 1) & (fi->cap - 1);
    }
    if (ck->nfiles >= UINT32_MAX - 1)
        return -E2BIG;
    if (ck->nfiles == fi->files_cap) {
        size_t cap = fi->files_cap ? fi->files_cap * 2 : 16;
        ck_file *files = realloc(ck->files, cap * sizeof *files);
        if (!files)
            return -ENOMEM;
        ck->files = files;
        fi->files_cap = cap;
    }
    char *copy = ck_arena_strdup(ck->arena, relpath);
    if (!copy)
        return -ENOMEM;
    memset(&ck->files[ck->nfiles], 0, sizeof ck->files[ck->nfiles]);
    ck->files[ck->nfiles].path = copy;
    atomic_init(&ck->files[ck->nfiles].fd, -1);
    atomic_init(&ck->files[ck->nfiles].changed, 0);
    fi->slots[s] = (uint32_t)ck->nfiles + 1;
    *index = (uint32_t)ck->nfiles++;
    return 0;
}

/* Opens a storage file so that neither "..", absolute symlinks nor links
 * that climb out can take it outside the root: openat2 RESOLVE_BENEATH
 * where the kernel has it, else O_NOFOLLOW on the last component after the
 * lexical check done by ck_add_file. */
static int open_beneath(int root_fd, const char *path, struct stat *st)
{
    /* O_NONBLOCK: opening a FIFO planted as a data file must not hang the
     * mount; it is then refused as not a regular file. */
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    long fd = syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = openat(root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat((int)fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close((int)fd);
        return -EINVAL;
    }
    return (int)fd;
}

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

int ck_file_fd(ck_checkpoint *ck, uint32_t i, int *fd)
{
    if (i >= ck->nfiles)
        return -EINVAL;
    int cur = atomic_load_explicit(&ck->files[i].fd, memory_order_acquire);
    if (cur >= 0) {
        *fd = cur;
        return 0;
    }
    if (atomic_load(&ck->files[i].changed))
        return -EIO;
    /* Only files missing at mount or beyond EAGER_OPEN_MAX get here.  Not
     * ck->lock: the safetensors header probe calls this while holding it. */
    pthread_mutex_lock(&ck->files_lock);
    int rc = 0;
    cur = atomic_load_explicit(&ck->files[i].fd, memory_order_acquire);
    if (cur < 0) {
        struct stat st;
        int opened = open_beneath(ck->root_fd, ck->files[i].path, &st);
        if (opened < 0) {
            rc = opened;
        } else if ((rc = pin_file(ck, i, &st, NULL)) != 0) {
            close(opened);
        } else {
            atomic_store_explicit(&ck->files[i].fd, opened, memory_order_release);
            cur = opened;
        }
    }
    pthread_mutex_unlock(&ck->files_lock);
    if (rc)
        return rc;
    *fd = cur;
    return 0;
}

int ck_file_check(ck_checkpoint *ck, uint32_t i, int fd)
{
    if (i >= ck->nfiles)
        return -EINVAL;
    if (atomic_load_explicit(&ck->files[i].changed, memory_order_relaxed))
        return -EIO;
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

static int key_cmp(const void *a, const void *b)
{
    return strcmp(((const ck_key *)a)->fqn, ((const ck_key *)b)->fqn);
}

void ck_sort_keys(ck_checkpoint *ck)
{
    if (ck->nkeys > 1)
        qsort(ck->keys, ck->nkeys, sizeof *ck->keys, key_cmp);
}

int ck_key_compute_size(ck_key *k)
{
    const ck_dtype_info *dt = ck_dtype_get(k->dtype);
    if (!dt)
        return -EINVAL;
    if (ck_shape_numel(k->ndim, k->shape, &k->numel) ||
        __builtin_mul_overflow(k->numel, (uint64_t)dt->size, &k->nbytes))
        return -EOVERFLOW;
    return 0;
}

const ck_key *ck_find_key(const ck_checkpoint *ck, const char *fqn)
{
    size_t lo = 0, hi = ck->nkeys;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->keys[mid].fqn, fqn);
        if (c == 0)
            return &ck->keys[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int has_safetensors_files(int dirfd)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    int found = 0;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        found = n > 12 && strcmp(de->d_name + n - 12, ".safetensors") == 0;
    }
    closedir(d);
    return found;
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
        struct stat st;
        int fd = open_beneath(ck->root_fd, ck->files[i].path, &st);
        if (fd == -EXDEV || fd == -ELOOP) {
            snprintf(err, errlen, "%s: storage path %s leaves the checkpoint directory",
                     ck->source, ck->files[i].path);
            return -EINVAL;
        }
        if (fd >= 0) {
            /* Every file present is pinned now, as close as can be to the
             * moment its metadata was read; one that changed already is
             * marked (EIO for its keys), not fatal. */
            if (pin_file(ck, (uint32_t)i, &st, pre) == 0 && i < EAGER_OPEN_MAX)
                atomic_store(&ck->files[i].fd, fd);
            else
                close(fd);
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
    struct stat st;
    if (errlen)
        err[0] = '\0';
    if (stat(source, &st) != 0) {
        snprintf(err, errlen, "%s: %s", source, strerror(errno));
        return -errno;
    }
    ck_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck)
        return -ENOMEM;
    pthread_mutex_init(&ck->lock, NULL);
    pthread_cond_init(&ck->resolved, NULL);
    pthread_mutex_init(&ck->files_lock, NULL);
    ck->root_fd = -1;
    ck->arena = ck_arena_new();
    ck->source = strdup(source);
    int rc = (!ck->arena || !ck->source) ? -ENOMEM : 0;
    const char *file = NULL;
    char *dir = NULL;
    if (!rc && S_ISREG(st.st_mode)) {
        dir = strdup(source);
        if (!dir) {
            rc = -ENOMEM;
        } else {
            char *slash = strrchr(dir, '/');
            if (slash == dir) {
                dir[1] = '\0';
                file = source + 1;
            } else if (slash) {
                *slash = '\0';
                file = source + (slash - dir) + 1;
            } else {
                strcpy(dir, ".");
                file = source;
            }
        }
    } else if (!rc && !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a checkpoint (neither a directory nor a file)", source);
        rc = -EINVAL;
    }
    if (!rc) {
        ck->root_fd = open(dir ? dir : source, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (ck->root_fd < 0) {
            rc = -errno;
            snprintf(err, errlen, "%s: %s", dir ? dir : source, strerror(errno));
        }
    }
    /* the data files as they are before the metadata that names them is
     * read (see pin_file); without the list, files are pinned as found */
    ck_dir_ids pre = { 0 };
    if (!rc)
        ck_dir_ids_read(ck->root_fd, &pre);
    if (!rc) {
        ck->mtime = st.st_mtim;
        struct stat mst;
        if (file) {
            size_t n = strlen(file);
            if (n < 12 || strcmp(file + n - 12, ".safetensors") != 0) {
                snprintf(err, errlen, "%s: not a checkpoint (expected a .safetensors file or a directory)",
                         source);
                rc = -EINVAL;
            } else {
                rc = ck_build_safetensors(ck, file, err, errlen);
            }
        } else if (fstatat(ck->root_fd, ".metadata", &mst, 0) == 0) {
            ck->mtime = mst.st_mtim;
            rc = ck_build_dcp(ck, err, errlen);
        } else if (has_safetensors_files(ck->root_fd)) {
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
    free(dir);
    if (ck->file_index) {
        free(((file_index *)ck->file_index)->slots);
        free(ck->file_index);
        ck->file_index = NULL;
    }
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
    for (size_t i = 0; i < ck->nfiles; i++) {
        int fd = atomic_load(&ck->files[i].fd);
        if (fd >= 0)
            close(fd);
    }
    free(ck->files);
    if (ck->root_fd >= 0)
        close(ck->root_fd);
    ck_cache_free(ck->cache);
    ck_dcp_st_free(ck);
    ck_arena_free(ck->arena);
    pthread_cond_destroy(&ck->resolved);
    pthread_mutex_destroy(&ck->lock);
    pthread_mutex_destroy(&ck->files_lock);
    free(ck->source);
    free(ck);
}
