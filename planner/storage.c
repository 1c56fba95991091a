/* Choosing the storage backend for SOURCE, and helpers every backend
 * shares. */
#include "storage.h"
#include "storage_s3.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ck_storage_is_remote(const char *source)
{
    return strncmp(source, "s3://", 5) == 0;
}

static int local_for_source(const char *source, ck_storage **out, char **leaf,
                            struct timespec *mtime, char *err, size_t errlen)
{
    struct stat st;
    if (stat(source, &st) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", source, strerror(e));
        return -e;
    }
    char *dir = NULL;
    const char *file = NULL;
    if (S_ISREG(st.st_mode)) {
        if (!(dir = strdup(source)))
            return -ENOMEM;
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
    } else if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: not a checkpoint (neither a directory nor a file)", source);
        return -EINVAL;
    }
    int rc = 0;
    int root = open(dir ? dir : source, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: %s", dir ? dir : source, strerror(errno));
    }
    if (!rc && file && !(*leaf = strdup(file)))
        rc = -ENOMEM;
    if (!rc) {
        rc = ck_storage_local_new(root, out);
        if (rc) {
            snprintf(err, errlen, "%s: %s", dir ? dir : source, strerror(-rc));
            free(*leaf);
            *leaf = NULL;
        }
    }
    if (root >= 0)
        close(root);
    free(dir);
    *mtime = st.st_mtim;
    return rc;
}

int ck_storage_for_source(const char *source, const ck_storage_opts *opts, ck_storage **out,
                          char **leaf, struct timespec *mtime, char *err, size_t errlen)
{
    *out = NULL;
    *leaf = NULL;
    if (ck_storage_is_remote(source))
        return ck_storage_s3_for_source(source, opts, out, leaf, mtime, err, errlen);
    return local_for_source(source, out, leaf, mtime, err, errlen);
}

int ck_storage_read_whole(ck_storage *st, const char *name, uint64_t max, uint8_t **out,
                          size_t *len, ck_object_info *info)
{
    ck_object *obj;
    int rc = ck_storage_open(st, name, &obj);
    if (rc)
        return rc;
    ck_object_info oi;
    rc = ck_object_info_get(obj, &oi);
    if (!rc && (oi.size > max || oi.size > SIZE_MAX - 1))
        rc = -EFBIG;
    uint8_t *buf = NULL;
    if (!rc && !(buf = malloc(oi.size ? (size_t)oi.size : 1)))
        rc = -ENOMEM;
    if (!rc)
        rc = ck_object_read(obj, 0, buf, (size_t)oi.size);
    ck_object_close(obj);
    if (rc) {
        free(buf);
        return rc;
    }
    if (info)
        *info = oi;
    *out = buf;
    *len = (size_t)oi.size;
    return 0;
}
