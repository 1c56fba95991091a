/* Opening, listing, whole-buffer reads and writes (see fd_io.h). */
#include "fd_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <sys/syscall.h>
#include <unistd.h>

int ck_open_beneath(int dirfd, const char *path)
{
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    return fd < 0 ? -errno : (int)fd;
}

/* Whether [off, off + n) can be said in off_t. */
static bool fits_off_t(uint64_t off, size_t n)
{
    uint64_t end;
    return !__builtin_add_overflow(off, (uint64_t)n, &end) && end <= (uint64_t)INT64_MAX;
}

typedef enum { IO_PREAD, IO_WRITE, IO_PWRITE } io_kind;

/* The loop every whole-buffer transfer needs: EINTR retried, short
 * transfers continued.  A transfer of nothing is -EIO: for a read the file
 * ended first, for a write no progress can be made.  buf is only read for
 * the writes. */
static int transfer_full(io_kind kind, int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    for (size_t done = 0; done < n;) {
        size_t left = n - done;
        off_t at = (off_t)(off + done);
        ssize_t r = kind == IO_PREAD    ? pread(fd, p + done, left, at)
                    : kind == IO_PWRITE ? pwrite(fd, p + done, left, at)
                                        : write(fd, p + done, left);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO;
        done += (size_t)r;
    }
    return 0;
}

int ck_opendir_at(int dirfd, DIR **out)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (!(*out = fdopendir(fd))) {
        int e = errno;
        close(fd);
        return -e;
    }
    return 0;
}

int ck_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    return fits_off_t(off, n) ? transfer_full(IO_PREAD, fd, buf, n, off) : -EIO;
}

int ck_preadv_full(int fd, struct iovec *iov, size_t n, uint64_t off)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (__builtin_add_overflow(total, iov[i].iov_len, &total))
            return -EIO;
    if (!fits_off_t(off, total))
        return -EIO;
    size_t i = 0;
    while (i < n) {
        if (iov[i].iov_len == 0) {
            i++;
            continue;
        }
        int cnt = n - i > IOV_MAX ? IOV_MAX : (int)(n - i);
        ssize_t r = preadv(fd, iov + i, cnt, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -EIO; /* the file ended first */
        off += (uint64_t)r;
        for (size_t got = (size_t)r; got;) { /* advance past what came */
            size_t take = got < iov[i].iov_len ? got : iov[i].iov_len;
            iov[i].iov_base = (uint8_t *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            got -= take;
            if (iov[i].iov_len == 0)
                i++;
        }
    }
    return 0;
}

int ck_write_full(int fd, const void *buf, size_t n)
{
    return transfer_full(IO_WRITE, fd, (void *)buf, n, 0);
}

int ck_pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
    return fits_off_t(off, n) ? transfer_full(IO_PWRITE, fd, (void *)buf, n, off) : -EFBIG;
}
