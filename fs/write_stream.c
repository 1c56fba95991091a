/* Streamed writes of a new tensor file (see write_stream.h). */
#include "write_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commit.h"
#include "crc32.h"
#include "fd_io.h"
#include "geometry.h"
#include "torch_save_writer.h"

/* Writeback of the in-order part is started every this many bytes: big
 * enough for few syscalls, small enough that the disk works while cp still
 * writes and the commit's fsync has only the last piece left. */
#define WRITEBACK_STEP (8ull << 20)
#define CRC_PIECE (1u << 20)
/* The payload's blocks are allocated ahead of the writes, this much at a
 * time (fallocate, the file's size unchanged): a page written into blocks
 * already allocated skips the filesystem's delayed-allocation bookkeeping,
 * 40% of a 1 MiB pwrite's time on ext4 (measured), and the file is laid out
 * in few extents.  Never past the payload: a tensor that is never written
 * reserves at most a step. */
#define PREALLOC_STEP (64ull << 20)
/* Write-behind: a write of at most QSLOT_CAP payload bytes (FUSE's
 * max_write) is copied into one of QSLOTS buffers and returns; the stream's
 * worker thread writes it to the file and folds it into the CRC while the
 * writer prepares its next write, instead of the writer waiting for both.
 * QSLOTS bounds the memory (4 MiB per stream) and how far the writer runs
 * ahead; larger writes wait for the queue and go straight to the file. */
#define QSLOTS 4
#define QSLOT_CAP (1u << 20)

typedef struct {
    uint64_t off;
    size_t len;
    uint8_t *buf; /* QSLOT_CAP bytes, allocated with the stream */
} qitem;

struct fs_wstream {
    int fd;
    ck_dtype dtype;
    uint32_t ndim;
    uint64_t shape[CK_MAX_DIMS];
    uint64_t nbytes;   /* the payload's length */
    uint64_t hdr_len;  /* content offset of the payload */
    uint8_t *hdr;      /* content [0, hdr_len) */
    uint64_t data_off; /* stream file offset of content byte hdr_len */
    uint64_t end;      /* content below it may be in the file; at or past it, zeros */
    uint32_t crc;      /* CRC-32 of content [hdr_len, crc_hi) */
    uint64_t crc_hi;
    uint64_t wb_from;  /* content offset from which no writeback was started */
    uint64_t alloc_hi; /* content below it was allocated ahead (PREALLOC_STEP) */
    bool alloc_off;    /* the filesystem cannot (or failed once): stop asking */
    bool spent;        /* linked once by a failed commit: cannot be linked again */
    /* write-behind (see QSLOTS).  Everything above is the worker's while
     * the queue is not empty; every other call drains it first, and calls
     * are serialized by the owner, so the two never touch it at once. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond; /* an item queued, or one done */
    qitem q[QSLOTS];
    size_t qhead, qn;     /* under qlock; qn counts the item being written too */
    int qerror;           /* under qlock: the first failed write-behind, kept */
    bool stop, has_worker;
    pthread_t worker;
};

uint64_t fs_wstream_data_off(const fs_wstream *s)
{
    return s->data_off;
}

int fs_wstream_fd(const fs_wstream *s)
{
    return s->fd;
}

static int drain(fs_wstream *s);
static void *worker_main(void *arg);

uint64_t fs_wstream_crc_covered(fs_wstream *s)
{
    drain(s);
    return s->crc_hi - s->hdr_len;
}

int fs_wstream_open(int dirfd, ck_dtype dt, uint32_t ndim, const uint64_t *shape, size_t hdr_len,
                    fs_wstream **out)
{
    const ck_dtype_info *info = ck_dtype_get(dt);
    uint64_t numel, nbytes, data_off;
    char err[256];
    if (!info || ndim > CK_MAX_DIMS || ck_shape_numel(ndim, shape, &numel) ||
        __builtin_mul_overflow(numel, (uint64_t)info->size, &nbytes) || nbytes > INT64_MAX / 2)
        return -EINVAL;
    int rc = ck_torch_save_tensor_data_offset(CK_ITEM_ARCHIVE_NAME, dt, ndim, shape, &data_off, err,
                                              sizeof err);
    if (rc)
        return rc == -ENOMEM ? rc : -EINVAL;
    fs_wstream *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->hdr = calloc(1, hdr_len ? hdr_len : 1);
    if (!s->hdr) {
        free(s);
        return -ENOMEM;
    }
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->qcond, NULL);
    s->fd = openat(dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        rc = errno == EISDIR || errno == EINVAL || errno == EOPNOTSUPP ? -EOPNOTSUPP : -errno;
        fs_wstream_free(s);
        return rc;
    }
    /* the commit names it through /proc (or AT_EMPTY_PATH, which needs a
     * capability): without /proc, keep the buffer, which needs neither */
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", s->fd);
    if (access(proc, F_OK) != 0) {
        fs_wstream_free(s);
        return -EOPNOTSUPP;
    }
    s->dtype = dt;
    s->ndim = ndim;
    memcpy(s->shape, shape, ndim * sizeof *shape);
    s->nbytes = nbytes;
    s->hdr_len = hdr_len;
    s->data_off = data_off;
    s->end = s->crc_hi = s->wb_from = s->alloc_hi = hdr_len;
    s->crc = 0; /* the CRC of nothing */
    /* no worker (no memory, no thread): every write is written at once */
    bool bufs = true;
    for (size_t i = 0; i < QSLOTS && bufs; i++)
        bufs = (s->q[i].buf = malloc(QSLOT_CAP)) != NULL;
    s->has_worker = bufs && pthread_create(&s->worker, NULL, worker_main, s) == 0;
    *out = s;
    return 0;
}

void fs_wstream_free(fs_wstream *s)
{
    if (!s)
        return;
    if (s->has_worker) {
        pthread_mutex_lock(&s->qlock);
        s->stop = true; /* the worker writes what is queued, then ends */
        pthread_cond_broadcast(&s->qcond);
        pthread_mutex_unlock(&s->qlock);
        pthread_join(s->worker, NULL);
    }
    pthread_cond_destroy(&s->qcond);
    pthread_mutex_destroy(&s->qlock);
    for (size_t i = 0; i < QSLOTS; i++)
        free(s->q[i].buf);
    if (s->fd >= 0)
        close(s->fd);
    free(s->hdr);
    free(s);
}

/* File offset of content byte x >= hdr_len; -EFBIG past what off_t holds. */
static int file_off(const fs_wstream *s, uint64_t x, uint64_t *at)
{
    if (__builtin_add_overflow(x - s->hdr_len, s->data_off, at) || *at > INT64_MAX)
        return -EFBIG;
    return 0;
}

/* Allocates the payload's blocks a step ahead of an in-order write of
 * content [off, hi).  A write that lands past the allocated part (out of
 * order, leaving a hole) allocates as it goes: the hole stays a hole.  A
 * hint: where it fails, writes allocate as they go. */
static void allocate_ahead(fs_wstream *s, uint64_t off, uint64_t hi)
{
    uint64_t pend = s->hdr_len + s->nbytes, at;
    if (s->alloc_off || off > s->alloc_hi || hi <= s->alloc_hi || s->alloc_hi >= pend)
        return;
    uint64_t to = pend - s->alloc_hi > PREALLOC_STEP ? s->alloc_hi + PREALLOC_STEP : pend;
    if (to < hi)
        to = hi < pend ? hi : pend;
    if (file_off(s, s->alloc_hi, &at) != 0 ||
        fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)(to - s->alloc_hi)) != 0) {
        s->alloc_off = true;
        return;
    }
    s->alloc_hi = to;
}

/* Payload bytes [off, off+len) (off >= hdr_len) into the file, the CRC and
 * the writeback hint: the worker's job, or the caller's with no worker. */
static int apply_write(fs_wstream *s, uint64_t off, const uint8_t *p, size_t len)
{
    uint64_t hi, at, last;
    if (__builtin_add_overflow(off, (uint64_t)len, &hi))
        return -EFBIG;
    int rc = file_off(s, off, &at);
    if (!rc)
        rc = file_off(s, hi, &last); /* the end must fit off_t too */
    if (!rc) {
        allocate_ahead(s, off, hi);
        rc = ck_pwrite_full(s->fd, p, len, at);
    }
    if (rc)
        return rc;
    if (hi > s->end)
        s->end = hi;
    if (off == s->crc_hi) {
        s->crc = (uint32_t)ck_crc32(s->crc, p, len);
        s->crc_hi = hi;
    } else if (off < s->crc_hi) {
        /* bytes the CRC covered changed: the commit takes it again */
        s->crc = 0; /* the CRC of nothing */
        s->crc_hi = s->wb_from = s->hdr_len;
    }
    if (s->crc_hi > s->wb_from && s->crc_hi - s->wb_from >= WRITEBACK_STEP) {
        uint64_t from;
        if (file_off(s, s->wb_from, &from) == 0)
            sync_file_range(s->fd, (off_t)from, (off_t)(s->crc_hi - s->wb_from),
                            SYNC_FILE_RANGE_WRITE); /* a hint: failures show at fsync */
        s->wb_from = s->crc_hi;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    fs_wstream *s = arg;
    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (s->qn == 0 && !s->stop)
            pthread_cond_wait(&s->qcond, &s->qlock);
        if (s->qn == 0)
            break;
        qitem *it = &s->q[s->qhead];
        bool skip = s->qerror != 0; /* after a failure the content is lost anyway */
        pthread_mutex_unlock(&s->qlock);
        int rc = skip ? 0 : apply_write(s, it->off, it->buf, it->len);
        pthread_mutex_lock(&s->qlock);
        if (rc && !s->qerror)
            s->qerror = rc;
        s->qhead = (s->qhead + 1) % QSLOTS;
        s->qn--;
        pthread_cond_broadcast(&s->qcond);
    }
    pthread_mutex_unlock(&s->qlock);
    return NULL;
}

/* Waits until every queued write is in the file; the first failure of any. */
static int drain(fs_wstream *s)
{
    if (!s->has_worker)
        return 0;
    pthread_mutex_lock(&s->qlock);
    while (s->qn > 0)
        pthread_cond_wait(&s->qcond, &s->qlock);
    int rc = s->qerror;
    pthread_mutex_unlock(&s->qlock);
    return rc;
}

int fs_wstream_flush(fs_wstream *s)
{
    return drain(s);
}

int fs_wstream_write(fs_wstream *s, uint64_t off, const void *src, size_t len)
{
    uint64_t hi;
    if (__builtin_add_overflow(off, (uint64_t)len, &hi))
        return -EFBIG;
    const uint8_t *p = src;
    if (off < s->hdr_len) {
        size_t n = (size_t)(s->hdr_len - off < len ? s->hdr_len - off : len);
        memcpy(s->hdr + off, p, n);
        p += n;
        off += n;
        len -= n;
    }
    if (len == 0)
        return 0;
    if (!s->has_worker || len > QSLOT_CAP) {
        int rc = drain(s);
        return rc ? rc : apply_write(s, off, p, len);
    }
    pthread_mutex_lock(&s->qlock);
    while (s->qn == QSLOTS && !s->qerror)
        pthread_cond_wait(&s->qcond, &s->qlock);
    int rc = s->qerror;
    /* the slot past the queue's end is no item's: the worker leaves it */
    size_t slot = (s->qhead + s->qn) % QSLOTS;
    pthread_mutex_unlock(&s->qlock);
    if (rc)
        return rc; /* an earlier write-behind failed: say so at the next write */
    uint64_t at, last;
    if ((rc = file_off(s, off, &at)) || (rc = file_off(s, hi, &last)))
        return rc;
    memcpy(s->q[slot].buf, p, len);
    s->q[slot].off = off;
    s->q[slot].len = len;
    pthread_mutex_lock(&s->qlock);
    s->qn++;
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    return 0;
}

int fs_wstream_read(fs_wstream *s, uint64_t off, void *dst, size_t len)
{
    uint64_t hi;
    if (__builtin_add_overflow(off, (uint64_t)len, &hi))
        return -EOVERFLOW;
    int qrc = drain(s);
    if (qrc)
        return qrc;
    uint8_t *d = dst;
    if (off < s->hdr_len) {
        size_t n = (size_t)(s->hdr_len - off < len ? s->hdr_len - off : len);
        memcpy(d, s->hdr + off, n);
        d += n;
        off += n;
        len -= n;
    }
    size_t in_file = off >= s->end ? 0 : (size_t)(s->end - off < len ? s->end - off : len);
    if (in_file) {
        uint64_t at;
        int rc = file_off(s, off, &at);
        while (!rc && in_file) {
            ssize_t n = pread(s->fd, d, in_file, (off_t)at);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                return -errno;
            if (n == 0)
                break; /* a hole at the end: zeros below */
            d += n;
            at += (uint64_t)n;
            len -= (size_t)n;
            in_file -= (size_t)n;
        }
        if (rc)
            return rc;
    }
    memset(d, 0, len);
    return 0;
}

int fs_wstream_truncate(fs_wstream *s, uint64_t size)
{
    int qrc = drain(s);
    if (qrc)
        return qrc;
    if (size < s->hdr_len)
        memset(s->hdr + size, 0, (size_t)(s->hdr_len - size));
    uint64_t p = size > s->hdr_len ? size : s->hdr_len;
    if (p < s->end) {
        uint64_t at;
        int rc = file_off(s, p, &at);
        if (!rc && ftruncate(s->fd, (off_t)at) != 0)
            rc = -errno;
        if (rc)
            return rc;
        s->end = p;
    }
    if (p < s->crc_hi) {
        s->crc = 0; /* the CRC of nothing */
        s->crc_hi = s->hdr_len;
    }
    if (p < s->wb_from)
        s->wb_from = p;
    if (p < s->alloc_hi)
        s->alloc_hi = p; /* ftruncate let the blocks past it go */
    return 0;
}

int fs_wstream_placed(fs_wstream *s, ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                      uint64_t shift, ck_placed_item *pi)
{
    int qrc = drain(s);
    if (qrc)
        return qrc;
    if (s->spent || dt != s->dtype || ndim != s->ndim || shift != s->hdr_len ||
        (ndim && memcmp(shape, s->shape, ndim * sizeof *shape) != 0))
        return 1;
    uint64_t pend = s->hdr_len + s->nbytes;
    if (s->crc_hi > pend) { /* covers bytes past the payload: take it again */
        s->crc = 0; /* the CRC of nothing */
        s->crc_hi = s->hdr_len;
    }
    if (s->crc_hi < pend) {
        /* what in-order writes did not cover: one pass over it */
        uint8_t *buf = malloc(CRC_PIECE);
        if (!buf)
            return -ENOMEM;
        int rc = 0;
        while (!rc && s->crc_hi < pend) {
            size_t n = pend - s->crc_hi < CRC_PIECE ? (size_t)(pend - s->crc_hi) : CRC_PIECE;
            rc = fs_wstream_read(s, s->crc_hi, buf, n);
            if (!rc) {
                s->crc = (uint32_t)ck_crc32(s->crc, buf, n);
                s->crc_hi += n;
            }
        }
        free(buf);
        if (rc)
            return rc;
    }
    memset(pi, 0, sizeof *pi);
    int rc = fs_wstream_read(s, s->hdr_len, pi->first,
                             s->nbytes < sizeof pi->first ? (size_t)s->nbytes : sizeof pi->first);
    if (rc)
        return rc;
    pi->fd = s->fd;
    pi->data_off = s->data_off;
    pi->crc = s->crc;
    return 0;
}

void fs_wstream_commit_failed(fs_wstream *s, const ck_placed_item *pi)
{
    drain(s); /* nothing was queued since the commit drained it */
    if (pi->linked)
        s->spent = true;
    /* the archive's tail went past the payload and the head below it; the
     * head is no content (the header lives in memory), the tail may be */
    uint64_t at;
    if (file_off(s, s->end, &at) == 0 && ftruncate(s->fd, (off_t)at) != 0)
        fprintf(stderr, "ckptfs: cannot cut a failed commit's bytes off a stream file: %s\n",
                strerror(errno));
}
