/* Data files pinned by identity (planner/file_id.h, ck_file_check): a
 * checkpoint state reads its own bytes or fails with EIO, whether its data
 * file is rewritten in place (torch's "wb"), replaced by a new file of the
 * same name, or appears only after the state was read.  Works on a copy of
 * a real torch fixture in a temporary directory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "file_id.h"
#include "test_util.h"

#define FIX "tests/fixtures/torch-2.11/dcp_single/"
#define DATA "__0_0.distcp"
#define KEY "model.embed.weight"

static char dir[64];

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static int put_file(const char *name, const void *data, size_t len)
{
    char p[256];
    path_in(p, sizeof p, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, len);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

/* A file as written an hour ago: a later rewrite has another mtime even
 * where the kernel's timestamps are coarse. */
static void age(const char *name)
{
    char p[256];
    path_in(p, sizeof p, name);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= 3600;
    ts[1] = ts[0];
    utimensat(AT_FDCWD, p, ts, 0);
}

static ck_checkpoint *open_ck(void)
{
    ck_checkpoint *ck = NULL;
    char err[512];
    ck_open_opts oo = { 0 };
    int rc = ck_open(dir, &oo, &ck, err, sizeof err);
    if (rc)
        printf("# ck_open: %s\n", err);
    return ck;
}

static int read_key(ck_checkpoint *ck, uint8_t *buf, size_t cap, size_t *got)
{
    const ck_key *k = ck_find_key(ck, KEY);
    if (!k)
        return -ENOENT;
    return ck_key_read(ck, k, 0, buf, cap, got);
}

static void test_id_basics(void)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_dev = 1;
    st.st_ino = 2;
    st.st_size = 3;
    st.st_mtim.tv_sec = 100;
    st.st_mtim.tv_nsec = 5;
    ck_file_id a, b;
    ck_file_id_from_stat(&st, &a);
    b = a;
    CHECK(ck_file_id_equal(&a, &b));
    b.size = 4;
    CHECK(!ck_file_id_equal(&a, &b));
    b = a;
    b.mtime_nsec = 6;
    CHECK(!ck_file_id_equal(&a, &b));
    b = a;
    b.ino = 9;
    CHECK(!ck_file_id_equal(&a, &b));
}

/* The listing taken before a state's metadata is read. */
static void test_dir_ids(void)
{
    char p[256], q[256];
    path_in(p, sizeof p, "b.distcp");
    path_in(q, sizeof q, "a-link");
    CHECK(put_file("b.distcp", "xy", 2) == 0 && put_file("c", "z", 1) == 0);
    CHECK(symlink("b.distcp", q) == 0);
    path_in(p, sizeof p, "sub");
    CHECK(mkdir(p, 0755) == 0);
    int dfd = open(dir, O_PATH | O_DIRECTORY);
    ck_dir_ids d;
    CHECK_EQ_INT(ck_dir_ids_read(dfd, &d), 0);
    CHECK_EQ_INT(d.n, 3); /* b.distcp, c, and the link followed; not sub */
    const ck_file_id *b = ck_dir_ids_find(&d, "b.distcp");
    const ck_file_id *l = ck_dir_ids_find(&d, "a-link");
    CHECK(b && b->size == 2);
    CHECK(l && b && ck_file_id_equal(l, b));
    CHECK(ck_dir_ids_find(&d, "c") != NULL);
    CHECK(ck_dir_ids_find(&d, "sub") == NULL);
    CHECK(ck_dir_ids_find(&d, "zzz") == NULL);
    ck_dir_ids_free(&d);
    CHECK(d.n == 0 && d.v == NULL);
    close(dfd);
    unlink(q);
    rmdir(p);
    path_in(p, sizeof p, "b.distcp");
    unlink(p);
    path_in(p, sizeof p, "c");
    unlink(p);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/ckptfs-file-id-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    size_t mdlen, dlen;
    uint8_t *md = slurp(FIX ".metadata", &mdlen);
    uint8_t *data = slurp(FIX DATA, &dlen);
    CHECK(md && data);
    if (!md || !data)
        return check_done();
    test_id_basics();
    test_dir_ids();

    /* 1. a data file replaced by a new file of the same name: the state
     * keeps reading the file it pinned */
    CHECK(put_file(".metadata", md, mdlen) == 0 && put_file(DATA, data, dlen) == 0);
    age(".metadata");
    age(DATA);
    ck_checkpoint *ck = open_ck();
    CHECK(ck != NULL);
    uint8_t want[4096], got[4096];
    size_t n = 0, n2 = 0;
    CHECK_EQ_INT(read_key(ck, want, sizeof want, &n), 0);
    CHECK(n > 0);
    uint8_t *junk = malloc(dlen);
    memset(junk, 0xAA, dlen);
    char p[256], tmp[256];
    path_in(p, sizeof p, DATA);
    path_in(tmp, sizeof tmp, DATA ".new");
    CHECK(put_file(DATA ".new", junk, dlen) == 0 && rename(tmp, p) == 0);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), 0);
    CHECK(n2 == n && memcmp(got, want, n) == 0);
    ck_close(ck);

    /* 2. rewritten in place, even with the very same bytes: EIO, and it
     * stays EIO for this state */
    CHECK(put_file(DATA, data, dlen) == 0);
    age(DATA);
    ck = open_ck();
    CHECK(ck != NULL);
    CHECK(put_file(DATA, data, dlen) == 0); /* open "wb", write: same inode */
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), -EIO);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), -EIO);
    ck_close(ck);

    /* 3. a file that grew under the state (appended to) */
    age(DATA);
    ck = open_ck();
    CHECK(ck != NULL);
    int fd = open(p, O_WRONLY | O_APPEND);
    CHECK(fd >= 0 && write(fd, "x", 1) == 1);
    close(fd);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), -EIO);
    ck_close(ck);

    /* 4. missing when the state was read, then put back: pinned at its
     * first open and read; rewritten after that: EIO */
    CHECK(unlink(p) == 0);
    ck = open_ck();
    CHECK(ck != NULL);
    CHECK(put_file(DATA, data, dlen) == 0);
    age(DATA);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), 0);
    CHECK(n2 == n && memcmp(got, want, n) == 0);
    CHECK(put_file(DATA, data, dlen) == 0);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), -EIO);
    ck_close(ck);

    /* 5. stamped in the future (copied from a machine whose clock runs
     * ahead): no clock is compared, it reads */
    CHECK(put_file(DATA, data, dlen) == 0);
    struct timespec future[2];
    clock_gettime(CLOCK_REALTIME, &future[0]);
    future[0].tv_sec += 3600;
    future[1] = future[0];
    utimensat(AT_FDCWD, p, future, 0);
    ck = open_ck();
    CHECK(ck != NULL);
    CHECK_EQ_INT(read_key(ck, got, sizeof got, &n2), 0);
    CHECK(n2 == n && memcmp(got, want, n) == 0);
    ck_close(ck);

    free(junk);
    free(md);
    free(data);
    unlink(p);
    path_in(p, sizeof p, ".metadata");
    unlink(p);
    rmdir(dir);
    return check_done();
}
