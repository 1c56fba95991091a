/* Read request sizes (see read_size.h). */
#include "read_size.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fd_io.h"
#include "grow.h"

/* libfuse's reply header (struct fuse_out_header) */
#define REPLY_HEADER 16u

size_t fs_read_size_for_pipe(uint64_t pipe_max, size_t fd_spans, size_t page)
{
    /* libfuse wants page * (header iovec + buffers + 1) + header + data */
    uint64_t overhead = (uint64_t)page * (fd_spans + 2) + REPLY_HEADER;
    size_t size = FS_READ_SIZE_MAX;
    while (size > FS_READ_SIZE_MIN && (pipe_max < overhead || size > pipe_max - overhead))
        size /= 2;
    return size;
}

uint64_t fs_pipe_max_size(void)
{
    uint64_t v = 1u << 20;
    FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
    if (!f)
        return v;
    uint64_t got;
    if (fscanf(f, "%" SCNu64, &got) == 1 && got > 0)
        v = got;
    fclose(f);
    return v;
}

/* Whether the escaped mountinfo field [f, f+n) names path: the kernel writes
 * space, tab, newline and backslash as \ooo. */
static int field_is_path(const char *f, size_t n, const char *path)
{
    size_t i = 0;
    for (; i < n; i++, path++) {
        char c = f[i];
        if (c == '\\' && n - i >= 4 && f[i + 1] >= '0' && f[i + 1] <= '3' && f[i + 2] >= '0' &&
            f[i + 2] <= '7' && f[i + 3] >= '0' && f[i + 3] <= '7') {
            c = (char)(((f[i + 1] - '0') << 6) | ((f[i + 2] - '0') << 3) | (f[i + 3] - '0'));
            i += 3;
        }
        if (*path != c)
            return 0;
    }
    return *path == '\0';
}

int fs_mountinfo_dev(const char *text, size_t len, const char *mountpoint, dev_t *dev)
{
    int rc = -ENOENT;
    for (size_t at = 0; at < len;) {
        const char *line = text + at;
        const char *nl = memchr(line, '\n', len - at);
        size_t n = nl ? (size_t)(nl - line) : len - at;
        at += n + 1;
        /* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ... */
        const char *f[5];
        size_t flen[5], k = 0, i = 0;
        while (k < 5 && i < n) {
            while (i < n && line[i] == ' ')
                i++;
            f[k] = line + i;
            while (i < n && line[i] != ' ')
                i++;
            flen[k] = (size_t)(line + i - f[k]);
            k++;
        }
        if (k < 5 || flen[4] == 0) {
            if (n)
                return -EINVAL;
            continue;
        }
        if (!field_is_path(f[4], flen[4], mountpoint))
            continue;
        unsigned maj, min;
        char tail;
        char num[32];
        if (flen[2] >= sizeof num)
            return -EINVAL;
        memcpy(num, f[2], flen[2]);
        num[flen[2]] = '\0';
        if (sscanf(num, "%u:%u%c", &maj, &min, &tail) != 2)
            return -EINVAL;
        *dev = makedev(maj, min);
        rc = 0; /* a later line may stack another mount on top */
    }
    return rc;
}

int fs_mount_dev(const char *mountpoint, dev_t *dev)
{
    int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            char *b = ck_grow(buf, &cap, cap + 1, 1, 16384);
            if (!b) {
                rc = -ENOMEM;
                break;
            }
            buf = b;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!rc)
        rc = fs_mountinfo_dev(buf, len, mountpoint, dev);
    free(buf);
    return rc;
}

int fs_bdi_set_readahead(const char *sysfs_root, dev_t dev, unsigned kb)
{
    char path[256], val[32];
    int n = snprintf(path, sizeof path, "%s/class/bdi/%u:%u/read_ahead_kb", sysfs_root,
                     major(dev), minor(dev));
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    int len = snprintf(val, sizeof val, "%u\n", kb);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = ck_write_full(fd, val, (size_t)len);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    return rc;
}
