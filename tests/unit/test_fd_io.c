/* Whole-buffer reads (planner/fd_io.h): the scatter read that puts the runs
 * of a span straight where they belong, its short-file and bad-fd results,
 * and a scatter of more buffers than one preadv may take. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "check.h"
#include "fd_io.h"

#define FILE_BYTES (3u << 20)

static uint8_t byte_at(uint64_t off)
{
    return (uint8_t)(off * 2654435761u >> 13);
}

static int make_file(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/ckpt-fdio-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    uint8_t *b = malloc(FILE_BYTES);
    for (uint64_t i = 0; b && i < FILE_BYTES; i++)
        b[i] = byte_at(i);
    int rc = b && ck_pwrite_full(fd, b, FILE_BYTES, 0) == 0 ? fd : -1;
    free(b);
    if (rc < 0)
        close(fd);
    return rc;
}

/* runs of len bytes every stride bytes from off go to consecutive places of
 * dst, the bytes between them to one junk buffer */
static int scatter(int fd, uint64_t off, size_t runs, size_t len, size_t stride, uint8_t *dst)
{
    struct iovec *iov = calloc(2 * runs, sizeof *iov);
    static uint8_t junk[1 << 16];
    size_t k = 0;
    for (size_t i = 0; i < runs; i++) {
        iov[k++] = (struct iovec){ dst + i * len, len };
        if (i + 1 < runs && stride > len)
            iov[k++] = (struct iovec){ junk, stride - len };
    }
    int rc = ck_preadv_full(fd, iov, k, off);
    free(iov);
    return rc;
}

static int runs_match(const uint8_t *dst, uint64_t off, size_t runs, size_t len, size_t stride)
{
    for (size_t i = 0; i < runs; i++)
        for (size_t j = 0; j < len; j++)
            if (dst[i * len + j] != byte_at(off + i * stride + j))
                return 0;
    return 1;
}

int main(void)
{
    char path[64];
    int fd = make_file(path, sizeof path);
    CHECK(fd >= 0);
    if (fd < 0)
        return check_done();
    uint8_t *dst = malloc(FILE_BYTES);

    /* column-like runs with gaps, then back to back (row-like) */
    memset(dst, 0, FILE_BYTES);
    CHECK_EQ_INT(scatter(fd, 100, 64, 2048, 16384, dst), 0);
    CHECK(runs_match(dst, 100, 64, 2048, 16384));
    CHECK_EQ_INT(scatter(fd, 7, 10, 4096, 4096, dst), 0);
    CHECK(runs_match(dst, 7, 10, 4096, 4096));

    /* more buffers than one preadv takes: the loop goes on past IOV_MAX */
    size_t many = IOV_MAX + 300;
    memset(dst, 0, FILE_BYTES);
    CHECK_EQ_INT(scatter(fd, 3, many, 100, 1000, dst), 0);
    CHECK(runs_match(dst, 3, many, 100, 1000));

    /* empty buffers among them are skipped */
    struct iovec iov[4] = { { dst, 0 }, { dst, 10 }, { dst + 10, 0 }, { dst + 10, 5 } };
    CHECK_EQ_INT(ck_preadv_full(fd, iov, 4, 50), 0);
    CHECK(runs_match(dst, 50, 1, 15, 15));

    /* a span past the end of the file: -EIO, as ck_pread_full */
    CHECK_EQ_INT(scatter(fd, FILE_BYTES - 4000, 4, 1000, 1200, dst), -EIO);
    /* a range off_t cannot say, and a bad descriptor */
    struct iovec one = { dst, 16 };
    CHECK_EQ_INT(ck_preadv_full(fd, &one, 1, UINT64_MAX - 8), -EIO);
    one = (struct iovec){ dst, 16 };
    CHECK_EQ_INT(ck_preadv_full(-1, &one, 1, 0), -EBADF);
    /* nothing to read is done at once */
    CHECK_EQ_INT(ck_preadv_full(fd, NULL, 0, 0), 0);

    close(fd);
    unlink(path);
    free(dst);
    return check_done();
}
