/* Streamed writes of new tensor files (fs/write_stream.c) and the commit
 * that takes their items in place (planner/commit.c, ck_placed_item):
 *   - in-order writes land at data_off + (x - header) of the stream file and
 *     the CRC follows them; the committed item is byte for byte the archive
 *     the copying commit writes, in a data file of its own;
 *   - out-of-order, overlapping and truncating writes read back exactly, and
 *     the commit reads back only what the CRC lacks;
 *   - content that no longer matches the stream (another shape) is refused
 *     in place and committed by copying;
 *   - a commit failing at each of its steps leaves the old checkpoint byte
 *     for byte and no file, and the stream serves a later try;
 *   - a daemon killed after each step leaves the old or the new state.
 * Linked with build/san/fs/write_stream.o (see the Makefile). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "chunk_reader.h"
#include "test_util.h"
#include "ckpt.h"
#include "fd_io.h"
#include "commit.h"
#include "npy.h"
#include "torch_save_writer.h"
#include "write_stream.h"

#define ROWS 300u
#define COLS 1000u
#define NBYTES ((uint64_t)ROWS * COLS * 4)

static uint64_t g_shape[2] = { ROWS, COLS };

/* An npy file image: header + payload, payload byte i = f(i, seed). */
typedef struct {
    uint8_t *img;
    size_t hdr, len;
} npy_img;

static void make_npy(npy_img *n, uint32_t seed)
{
    char h[256];
    long hl = ck_npy_header(CK_DT_FLOAT32, 2, g_shape, h, sizeof h);
    n->hdr = (size_t)hl;
    n->len = n->hdr + NBYTES;
    n->img = malloc(n->len);
    memcpy(n->img, h, n->hdr);
    for (uint64_t i = 0; i < NBYTES; i++)
        n->img[n->hdr + i] = (uint8_t)((i * 2654435761u + seed) >> 13);
}

/* A new empty checkpoint at tmp/tag. */
static char *new_ckpt(const char *tmp, const char *tag)
{
    static char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tmp, tag);
    if (mkdir(dir, 0755) != 0)
        return NULL;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    char err[256];
    int rc = ck_commit_empty(fd, dir, err, sizeof err);
    close(fd);
    return rc ? NULL : dir;
}

static int read_stream(void *ctx, uint64_t off, void *buf, size_t len)
{
    /* the tensor's bytes start after the npy header */
    void **c = ctx;
    return fs_wstream_read(c[0], off + *(size_t *)c[1], buf, len);
}

/* Commits key "w" (ROWS x COLS float32) into dir: in place when pi, else
 * copied from the stream.  fail_after/crash_after as in commit.h. */
static int commit_w(const char *dir, fs_wstream *s, size_t hdr, ck_placed_item *pi,
                    uint64_t fail_after, uint64_t crash_after, ck_commit_stats *st)
{
    char err[512] = "";
    ck_checkpoint *ck = NULL;
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    if (rc) {
        printf("# open %s: %s\n", dir, err);
        return rc;
    }
    void *ctx[2] = { s, &hdr };
    ck_save_key k = { .fqn = "w", .dtype = CK_DT_FLOAT32, .ndim = 2, .shape = g_shape,
                      .read = read_stream, .read_ctx = ctx, .placed = pi };
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_commit_opts o = { .dirfd = dfd, .checkpoint_id = dir, .fail_after = fail_after,
                         .fail_errno = ENOSPC, .crash_after = crash_after };
    rc = ck_commit(ck, &k, 1, &o, st, err, sizeof err);
    if (rc && !fail_after)
        printf("# commit: %s\n", err);
    close(dfd);
    ck_close(ck);
    return rc;
}

/* Key w of dir equals the payload of n; 1 if absent, 0 if equal, -1 else. */
static int key_state(const char *dir, const npy_img *n)
{
    char err[512];
    ck_checkpoint *ck = NULL;
    if (ck_open(dir, NULL, &ck, err, sizeof err)) {
        printf("# reopen: %s\n", err);
        return -1;
    }
    const ck_key *k = ck_find_key(ck, "w");
    int r = 1;
    if (k) {
        uint8_t *b = malloc(NBYTES);
        size_t got = 0;
        r = ck_key_read(ck, k, 0, b, NBYTES, &got) == 0 && got == NBYTES &&
                    memcmp(b, n->img + n->hdr, NBYTES) == 0
                ? 0
                : -1;
        free(b);
    }
    ck_close(ck);
    return r;
}

/* The committed item equals what the copying writer makes of the payload. */
static int item_is_archive(const char *dir, const char *name, const npy_img *n)
{
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    size_t len;
    uint8_t *got = slurp(path, &len);
    uint8_t *want = NULL;
    uint64_t wlen = 0;
    char err[256];
    int ok = got && ck_torch_save_tensor_mem(CK_ITEM_ARCHIVE_NAME, CK_DT_FLOAT32, 2, g_shape,
                                             n->img + n->hdr, &want, &wlen, err, sizeof err) == 0 &&
             wlen == len && memcmp(got, want, len) == 0;
    free(got);
    free(want);
    return ok;
}

static fs_wstream *open_stream(const char *dir, size_t hdr)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    fs_wstream *s = NULL;
    int rc = fs_wstream_open(dfd, CK_DT_FLOAT32, 2, g_shape, hdr, &s);
    close(dfd);
    CHECK_EQ_INT(rc, 0);
    return s;
}

static int content_is(fs_wstream *s, const uint8_t *want, size_t len)
{
    uint8_t *b = malloc(len + 64);
    int ok = fs_wstream_read(s, 0, b, len + 64) == 0 && memcmp(b, want, len) == 0;
    for (size_t i = 0; !ok && i < len; i++)
        if (b[i] != want[i]) {
            printf("# content differs first at %zu: %u, want %u\n", i, b[i], want[i]);
            break;
        }
    for (size_t i = 0; ok && i < 64; i++)
        ok = b[len + i] == 0; /* past what was written: zeros */
    free(b);
    return ok;
}

/* cp: in-order writes of 64 KiB (the first holding the header). */
static void sequential(const char *tmp)
{
    char *dir = new_ckpt(tmp, "seq");
    CHECK(dir != NULL);
    if (!dir)
        return;
    npy_img n;
    make_npy(&n, 1);
    fs_wstream *s = open_stream(dir, n.hdr);
    if (!s)
        return;
    CHECK(fs_wstream_data_off(s) % 64 == 0 && fs_wstream_data_off(s) >= 64);
    for (size_t off = 0; off < n.len; off += 65536) {
        size_t m = n.len - off < 65536 ? n.len - off : 65536;
        CHECK_EQ_INT(fs_wstream_write(s, off, n.img + off, m), 0);
    }
    CHECK_EQ_INT(fs_wstream_crc_covered(s), NBYTES);
    CHECK(content_is(s, n.img, n.len));
    ck_placed_item pi;
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi), 0);
    /* the payload is where the item puts it */
    uint8_t *b = malloc(NBYTES);
    CHECK_EQ_INT(ck_pread_full(pi.fd, b, NBYTES, pi.data_off), 0);
    CHECK(memcmp(b, n.img + n.hdr, NBYTES) == 0);
    free(b);
    ck_commit_stats st;
    CHECK_EQ_INT(commit_w(dir, s, n.hdr, &pi, 0, 0, &st), 0);
    CHECK_EQ_INT(st.items, 1);
    CHECK_EQ_STR(st.data_file, ""); /* no shared data file */
    CHECK(strncmp(pi.name, "__ckptfs_", 9) == 0);
    /* head + tail, fsync, link, directory fsync, metadata pwrite + fsync,
     * rename, directory fsync */
    CHECK_EQ_INT(st.syscalls, 9);
    CHECK(item_is_archive(dir, pi.name, &n));
    CHECK_EQ_INT(key_state(dir, &n), 0);
    CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 1);
    if (have_read_metadata_py())
        CHECK_EQ_INT(read_metadata_check("", dir), 0);
    fs_wstream_free(s);
    free(n.img);
}

/* Out of order, overlapping, a truncation: content stays exact, the CRC
 * is completed by the commit. */
static void out_of_order(const char *tmp)
{
    char *dir = new_ckpt(tmp, "ooo");
    if (!dir)
        return;
    npy_img n, junk;
    make_npy(&n, 2);
    make_npy(&junk, 77);
    fs_wstream *s = open_stream(dir, n.hdr);
    if (!s)
        return;
    size_t half = n.len / 2;
    /* header + first 1000 payload bytes, then the second half, then junk
     * over the middle, truncated back into it, then the rest in order */
    CHECK_EQ_INT(fs_wstream_write(s, 0, n.img, n.hdr + 1000), 0);
    CHECK_EQ_INT(fs_wstream_crc_covered(s), 1000);
    CHECK_EQ_INT(fs_wstream_write(s, half, n.img + half, n.len - half), 0);
    CHECK_EQ_INT(fs_wstream_crc_covered(s), 1000); /* a gap: the CRC waits */
    CHECK_EQ_INT(fs_wstream_write(s, 500, junk.img + 500, 20000), 0);
    CHECK_EQ_INT(fs_wstream_crc_covered(s), 0); /* covered bytes changed */
    CHECK_EQ_INT(fs_wstream_truncate(s, half + 4096), 0);
    uint8_t *want = calloc(1, n.len); /* never written: zeros */
    memcpy(want, n.img, n.hdr + 1000);
    memcpy(want + half, n.img + half, 4096);
    memcpy(want + 500, junk.img + 500, 20000);
    CHECK(content_is(s, want, n.len)); /* zeros after the truncation */
    CHECK_EQ_INT(fs_wstream_write(s, 500, n.img + 500, half + 4096 - 500), 0);
    CHECK_EQ_INT(fs_wstream_write(s, half + 4096, n.img + half + 4096, n.len - half - 4096), 0);
    CHECK(content_is(s, n.img, n.len));
    ck_placed_item pi;
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi), 0);
    CHECK_EQ_INT(fs_wstream_crc_covered(s), NBYTES);
    ck_commit_stats st;
    CHECK_EQ_INT(commit_w(dir, s, n.hdr, &pi, 0, 0, &st), 0);
    CHECK(item_is_archive(dir, pi.name, &n));
    CHECK_EQ_INT(key_state(dir, &n), 0);
    fs_wstream_free(s);
    free(want);
    free(junk.img);
    free(n.img);
}

/* The header rewritten to another shape: not in place; the content is
 * still exact, and the copying commit writes it into the shared file. */
static void mismatch(const char *tmp)
{
    char *dir = new_ckpt(tmp, "mismatch");
    if (!dir)
        return;
    npy_img n;
    make_npy(&n, 3);
    fs_wstream *s = open_stream(dir, n.hdr);
    if (!s)
        return;
    CHECK_EQ_INT(fs_wstream_write(s, 0, n.img, n.len), 0);
    uint64_t other[2] = { COLS, ROWS };
    ck_placed_item pi;
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, other, n.hdr, &pi), 1);
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_INT32, 2, g_shape, n.hdr, &pi), 1);
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr + 64, &pi), 1);
    ck_commit_stats st;
    CHECK_EQ_INT(commit_w(dir, s, n.hdr, NULL, 0, 0, &st), 0);
    CHECK(strncmp(st.data_file, "__ckptfs_", 9) == 0);
    CHECK(item_is_archive(dir, st.data_file, &n));
    CHECK_EQ_INT(key_state(dir, &n), 0);
    fs_wstream_free(s);
    free(n.img);
}

/* Each step failing in turn; then the same stream commits. */
static void failures(const char *tmp)
{
    char *dir = new_ckpt(tmp, "fail");
    if (!dir)
        return;
    char mpath[700];
    snprintf(mpath, sizeof mpath, "%s/.metadata", dir);
    size_t olen;
    uint8_t *orig = slurp(mpath, &olen);
    npy_img n;
    make_npy(&n, 4);
    fs_wstream *s = open_stream(dir, n.hdr);
    if (!s || !orig)
        return;
    fs_wstream_free(s);
    int all_ok = 1;
    /* up to the rename: head, tail, fsync, link, directory fsync, metadata
     * pwrite, metadata fsync, rename */
    for (uint64_t k = 1; k <= 8; k++) {
        s = open_stream(dir, n.hdr);
        if (!s)
            return;
        int ok = fs_wstream_write(s, 0, n.img, n.len) == 0;
        ck_placed_item pi;
        ok = ok && fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi) == 0;
        ck_commit_stats st;
        int rc = commit_w(dir, s, n.hdr, &pi, k, 0, &st);
        fs_wstream_commit_failed(s, &pi);
        size_t nlen;
        uint8_t *now = slurp(mpath, &nlen);
        ok = ok && rc == -ENOSPC && now && nlen == olen && memcmp(now, orig, olen) == 0 &&
             count_files(dir, "__ckptfs_") == 0 && count_files(dir, ".metadata.ckptfs") == 0 &&
             pi.name[0] == '\0' && pi.linked == (k > 4) && content_is(s, n.img, n.len);
        /* an unnamed file is linked once only: after a failure past the
         * link the next commit copies it */
        ok = ok && fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi) == (k > 4);
        if (!ok)
            printf("# failing step %d: rc %d\n", (int)k, rc);
        all_ok &= ok;
        free(now);
        if (k < 8) {
            fs_wstream_free(s);
            continue;
        }
        /* the last one commits by copying */
        CHECK_EQ_INT(key_state(dir, &n), 1);
        CHECK_EQ_INT(commit_w(dir, s, n.hdr, NULL, 0, 0, &st), 0);
        CHECK_EQ_INT(key_state(dir, &n), 0);
        CHECK(item_is_archive(dir, st.data_file, &n));
        fs_wstream_free(s);
    }
    CHECK(all_ok);
    /* and a stream whose commit failed before its link goes in place */
    s = open_stream(dir, n.hdr);
    if (!s)
        return;
    CHECK_EQ_INT(fs_wstream_write(s, 0, n.img, n.len), 0);
    ck_placed_item pi;
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi), 0);
    ck_commit_stats st;
    CHECK_EQ_INT(commit_w(dir, s, n.hdr, &pi, 3, 0, &st), -ENOSPC);
    fs_wstream_commit_failed(s, &pi);
    CHECK_EQ_INT(fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi), 0);
    CHECK_EQ_INT(commit_w(dir, s, n.hdr, &pi, 0, 0, &st), 0);
    CHECK_EQ_INT(key_state(dir, &n), 0);
    CHECK(item_is_archive(dir, pi.name, &n));
    CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 1);
    fs_wstream_free(s);
    free(orig);
    free(n.img);
}

/* Killed after step N = 1, 2, ...: old state (no key w), then new, never
 * torn; the commit that survives removes what the dead ones left. */
static void crashes(const char *tmp)
{
    char *dir = new_ckpt(tmp, "crash");
    if (!dir)
        return;
    npy_img n;
    make_npy(&n, 5);
    char seen[80] = "";
    int n_ok = 1, survived = 0;
    for (uint64_t k = 1; k <= 60 && !survived; k++) {
        fflush(stdout);
        /* the stream is made in the child: forked from a process whose
         * stream worker holds its queue lock for a moment after each
         * write, a child could inherit that lock held and wait forever */
        pid_t pid = fork();
        if (pid == 0) {
            int dfd = open(dir, O_RDONLY | O_DIRECTORY);
            fs_wstream *s = NULL;
            ck_placed_item pi;
            if (dfd < 0 || fs_wstream_open(dfd, CK_DT_FLOAT32, 2, g_shape, n.hdr, &s) != 0 ||
                fs_wstream_write(s, 0, n.img, n.len) != 0 || fs_wstream_flush(s) != 0 ||
                fs_wstream_placed(s, CK_DT_FLOAT32, 2, g_shape, n.hdr, &pi) != 0)
                _exit(3);
            ck_commit_stats st;
            _exit(commit_w(dir, s, n.hdr, &pi, 0, k, &st) ? 2 : 0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        int killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
        survived = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        int st = key_state(dir, &n);
        if (!killed && !survived)
            n_ok = 0;
        if (st < 0)
            n_ok = 0;
        strcat(seen, st == 0 ? "N" : st == 1 ? "O" : "?");
    }
    printf("# states by step: %s\n", seen);
    CHECK(n_ok && survived);
    /* old first, then new */
    const char *p = seen;
    while (*p == 'O')
        p++;
    while (*p == 'N')
        p++;
    CHECK(*p == '\0' && seen[0] == 'O' && strchr(seen, 'N'));
    CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 1);
    CHECK_EQ_INT(count_files(dir, ".metadata.ckptfs"), 0);
    free(n.img);
}

/* Blocks are allocated a step (64 MiB) ahead of in-order writes, never past
 * the payload, and a truncation lets them go: a 256 MiB tensor of which
 * 2 MiB were written holds 2 MiB plus at most a step. */
static void preallocation(const char *tmp)
{
    char *dir = new_ckpt(tmp, "prealloc");
    CHECK(dir != NULL);
    if (!dir)
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    const uint64_t shape[2] = { 1024, 65536 }; /* float32: 256 MiB */
    const uint64_t MB = 1u << 20;
    fs_wstream *s = NULL;
    CHECK_EQ_INT(fs_wstream_open(dfd, CK_DT_FLOAT32, 2, shape, 0, &s), 0);
    close(dfd);
    if (!s)
        return;
    uint8_t *buf = malloc(MB);
    memset(buf, 0x5a, MB);
    CHECK_EQ_INT(fs_wstream_write(s, 0, buf, MB), 0);
    CHECK_EQ_INT(fs_wstream_write(s, MB, buf, MB), 0);
    CHECK_EQ_INT(fs_wstream_crc_covered(s), 2 * MB); /* drains the write-behind */
    struct stat st;
    CHECK_EQ_INT(fstat(fs_wstream_fd(s), &st), 0);
    uint64_t held = (uint64_t)st.st_blocks * 512;
    printf("# 2 MiB written: %llu bytes allocated, size %lld\n", (unsigned long long)held,
           (long long)st.st_size);
    CHECK(held >= 2 * MB);
    CHECK(held <= 2 * MB + (64 + 1) * MB);
    CHECK((uint64_t)st.st_size <= fs_wstream_data_off(s) + 2 * MB);
    CHECK_EQ_INT(fs_wstream_truncate(s, MB), 0);
    CHECK_EQ_INT(fstat(fs_wstream_fd(s), &st), 0);
    held = (uint64_t)st.st_blocks * 512;
    CHECK(held <= 2 * MB);
    /* writing on from there allocates again, and reads see what was written */
    CHECK_EQ_INT(fs_wstream_write(s, MB, buf, MB), 0);
    uint8_t *back = malloc(2 * MB);
    CHECK_EQ_INT(fs_wstream_read(s, 0, back, 2 * MB), 0);
    CHECK(memcmp(back, buf, MB) == 0 && memcmp(back + MB, buf, MB) == 0);
    /* a write far past what was allocated leaves the hole a hole */
    (void)fs_wstream_crc_covered(s); /* drains the write-behind */
    CHECK_EQ_INT(fstat(fs_wstream_fd(s), &st), 0);
    uint64_t before = (uint64_t)st.st_blocks * 512;
    CHECK_EQ_INT(fs_wstream_write(s, 200 * MB, buf, MB), 0);
    (void)fs_wstream_crc_covered(s);
    CHECK_EQ_INT(fstat(fs_wstream_fd(s), &st), 0);
    CHECK((uint64_t)st.st_blocks * 512 <= before + 2 * MB);
    free(back);
    free(buf);
    fs_wstream_free(s);
}

int main(void)
{
    char tmp[] = "/tmp/test_write_stream.XXXXXX";
    if (!mkdtemp(tmp)) {
        CHECK(0);
        return check_done();
    }
    /* an unknown dtype or an impossible shape: no stream */
    {
        fs_wstream *s = NULL;
        uint64_t huge[2] = { UINT64_MAX / 2, 4 };
        int dfd = open(tmp, O_RDONLY | O_DIRECTORY);
        CHECK_EQ_INT(fs_wstream_open(dfd, CK_DT_INVALID, 1, huge, 0, &s), -EINVAL);
        CHECK_EQ_INT(fs_wstream_open(dfd, CK_DT_FLOAT32, 2, huge, 0, &s), -EINVAL);
        close(dfd);
    }
    sequential(tmp);
    out_of_order(tmp);
    mismatch(tmp);
    failures(tmp);
    crashes(tmp);
    preallocation(tmp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return check_done();
}
