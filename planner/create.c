/* `-o rw,create`: an empty or missing directory becomes a new DCP
 * checkpoint holding no keys, written with the commit's crash-safe
 * replacement so a half-created checkpoint cannot exist.  A directory that
 * already holds something is opened as it is, never overwritten. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "commit.h"
#include "fd_io.h"

/* 1 if the directory has no entries, 0 if it has some, -errno. */
static int dir_is_empty(int dirfd)
{
    DIR *d;
    int rc = ck_opendir_at(dirfd, &d);
    if (rc)
        return rc;
    int empty = 1;
    struct dirent *de;
    while (empty && (de = readdir(d)))
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    return empty;
}

static int count_object(void *ctx, const char *name, const ck_object_info *info)
{
    return 1;
}

/* An object-store prefix with no objects gets an empty `.metadata`,
 * written only if none exists (a racing creator wins, and is opened). */
static int create_remote(const char *source, const ck_open_opts *opts, char *err, size_t errlen)
{
    ck_storage_opts so = { 0 };
    if (opts && opts->storage)
        so = *opts->storage;
    so.allow_empty = 1;
    ck_storage *st;
    char *leaf;
    struct timespec mtime;
    int rc = ck_storage_for_source(source, &so, &st, &leaf, &mtime, err, errlen);
    if (rc)
        return rc;
    if (!leaf && ck_storage_list(st, count_object, NULL) == 0) {
        rc = ck_commit_empty_storage(st, source, err, errlen);
        if (rc == -EAGAIN)
            rc = 0;
        if (rc) {
            char why[512];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "%s: cannot create a checkpoint: %s", source, why);
        }
    }
    free(leaf);
    ck_storage_free(st);
    return rc;
}

int ck_open_or_create(const char *source, const ck_open_opts *opts, ck_checkpoint **out,
                      char *err, size_t errlen)
{
    struct stat st;
    if (errlen)
        err[0] = '\0';
    if (ck_storage_is_remote(source)) {
        int rc = create_remote(source, opts, err, errlen);
        return rc ? rc : ck_open(source, opts, out, err, errlen);
    }
    if (stat(source, &st) != 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "%s: %s", source, strerror(errno));
            return -errno;
        }
        if (mkdir(source, 0755) != 0) {
            snprintf(err, errlen, "%s: cannot create the directory: %s", source, strerror(errno));
            return -errno;
        }
    } else if (!S_ISDIR(st.st_mode)) {
        return ck_open(source, opts, out, err, errlen);
    }
    int dirfd = open(source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        snprintf(err, errlen, "%s: %s", source, strerror(errno));
        return -errno;
    }
    int rc = dir_is_empty(dirfd);
    if (rc == 1) {
        char abs[PATH_MAX];
        const char *id = realpath(source, abs) ? abs : source;
        rc = ck_commit_empty(dirfd, id, err, errlen);
        if (rc) {
            char why[512];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "%s: cannot create a checkpoint: %s", source, why);
        }
    } else if (rc < 0) {
        snprintf(err, errlen, "%s: cannot list the directory: %s", source, strerror(-rc));
    } else {
        rc = 0; /* not empty: whatever it holds is opened (and judged) as is */
    }
    close(dirfd);
    if (rc)
        return rc;
    return ck_open(source, opts, out, err, errlen);
}
