/* The files of -o hf_dir (see hf_dir.h). */
#include "hf_dir.h"
#include "fd_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Files in one model directory: far more than any real one holds; the
 * bound keeps a mistaken hf_dir=/usr/lib from holding thousands of fds. */
#define HF_DIR_MAX_FILES 4096

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const fs_hf_dir_file *)a)->name, ((const fs_hf_dir_file *)b)->name);
}

int fs_hf_dir_open(const char *path, fs_hf_dir *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        int e = errno;
        snprintf(err, errlen, "hf_dir %s: %s", path, strerror(e));
        return -e;
    }
    int lfd = dup(dfd);
    DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
    if (!d) {
        int e = errno;
        if (lfd >= 0)
            close(lfd);
        close(dfd);
        snprintf(err, errlen, "hf_dir %s: %s", path, strerror(e));
        return -e;
    }
    size_t cap = 0;
    int rc = 0;
    struct dirent *de;
    while (!rc && (errno = 0, de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        struct stat st;
        /* lstat first: a subdirectory (or FIFO) is passed over, not opened */
        if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -errno;
            snprintf(err, errlen, "hf_dir %s/%s: %s", path, de->d_name, strerror(-rc));
            break;
        }
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            continue;
        int fd = ck_open_beneath(dfd, de->d_name); /* no symlink leads out of DIR */
        if (fd < 0) {
            rc = fd;
            snprintf(err, errlen, "hf_dir %s/%s: %s", path, de->d_name,
                     rc == -EXDEV || rc == -ELOOP ? "symlink leads outside hf_dir" : strerror(-rc));
            break;
        }
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            if (S_ISDIR(st.st_mode))
                continue; /* a symlink to a subdirectory: passed over too */
            rc = -EINVAL;
            snprintf(err, errlen, "hf_dir %s/%s: not a regular file", path, de->d_name);
            break;
        }
        if (out->n == HF_DIR_MAX_FILES) {
            close(fd);
            rc = -E2BIG;
            snprintf(err, errlen, "hf_dir %s: more than %d files", path, HF_DIR_MAX_FILES);
            break;
        }
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            fs_hf_dir_file *f = realloc(out->files, nc * sizeof *f);
            if (!f) {
                close(fd);
                rc = -ENOMEM;
                break;
            }
            out->files = f;
            cap = nc;
        }
        char *name = strdup(de->d_name);
        if (!name) {
            close(fd);
            rc = -ENOMEM;
            break;
        }
        out->files[out->n++] = (fs_hf_dir_file){ name, fd, (uint64_t)st.st_size };
    }
    if (!rc && errno) {
        rc = -errno;
        snprintf(err, errlen, "hf_dir %s: %s", path, strerror(-rc));
    }
    if (rc == -ENOMEM && !err[0])
        snprintf(err, errlen, "hf_dir %s: out of memory", path);
    closedir(d);
    close(dfd);
    if (rc) {
        fs_hf_dir_close(out);
        return rc;
    }
    if (out->n)
        qsort(out->files, out->n, sizeof *out->files, cmp_file);
    return 0;
}

void fs_hf_dir_close(fs_hf_dir *d)
{
    for (size_t i = 0; i < d->n; i++) {
        close(d->files[i].fd);
        free(d->files[i].name);
    }
    free(d->files);
    memset(d, 0, sizeof *d);
}

int fs_hf_dir_read(const fs_hf_dir_file *f, uint64_t off, void *dst, size_t len, size_t *got)
{
    *got = 0;
    if (off >= f->size)
        return 0;
    if (len > f->size - off)
        len = (size_t)(f->size - off);
    int rc = ck_pread_full(f->fd, dst, len, off); /* -EIO: shorter than at mount */
    if (!rc)
        *got = len;
    return rc;
}
