/* Every fault the fuzzers (scripts/fuzz.sh) or the hostile-input tests found
 * is kept here as the smallest input that showed it, with the clean answer
 * now expected.  The file is built with ASan/UBSan like every unit test, so
 * an input that once read out of bounds or hit undefined behaviour fails
 * here if the bug comes back.  Inputs that once hung are run under alarm():
 * a hang kills the test instead of the CI job. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "geometry.h"
#include "pickle.h"
#include "safetensors.h"

#define FIX "tests/fixtures/torch-2.11/"
#define HANG_SECONDS 20

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, data, len) != (ssize_t)len) {
        perror(path);
        exit(1);
    }
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    FILE *f = fopen(from, "rb");
    if (!f) {
        perror(from);
        exit(1);
    }
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    if (!feof(f)) {
        fprintf(stderr, "%s: larger than this helper copies\n", from);
        exit(1);
    }
    fclose(f);
    write_file(to, buf, n);
}

static void rm_tree(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

static int one_line(const char *s)
{
    return s[0] && !strchr(s, '\n') && !strchr(s, '\r');
}

/* fuzz_pickle, UBSan "applying zero offset to null pointer": opcodes that
 * pop to a MARK took `stack + mark` while the value stack was still
 * unallocated (MARK pushes nothing onto it). */
static void test_pickle_mark_on_empty_stack(void)
{
    static const uint8_t crash[] = { 0x28, 0x74, 0x6f, 0x72, 0x63, 0x68, 0x46 }; /* "(torchF" */
    static const char *const ok_inputs[] = { "(t.", "(l.", "(d.", "\x80\x02(t." };
    pk_doc *doc = NULL;
    char err[256] = "";
    int rc = pk_parse(crash, sizeof crash, &doc, err, sizeof err);
    CHECK(rc < 0);
    CHECK(one_line(err));
    pk_free(doc);
    for (size_t i = 0; i < sizeof ok_inputs / sizeof *ok_inputs; i++) {
        doc = NULL;
        rc = pk_parse((const uint8_t *)ok_inputs[i], strlen(ok_inputs[i]), &doc, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        CHECK(rc || pk_seq_len(pk_root(doc)) == 0 || pk_root(doc)->kind == PK_DICT);
        pk_free(doc);
    }
}

/* Found writing confine.bats: a storage path
 * "__0_0.distcp\0/../../etc/passwd" was taken as "__0_0.distcp" (C stops at
 * the NUL), so the mount served a file the checkpoint does not name.  A
 * string with an embedded NUL is no string to pk_as_str now, and the
 * metadata is refused as lacking a path. */
static void test_pickle_string_with_nul(void)
{
    /* BINUNICODE "a\0b", STOP */
    static const uint8_t pkl[] = { 'X', 3, 0, 0, 0, 'a', 0, 'b', '.' };
    pk_doc *doc = NULL;
    char err[256] = "";
    int rc = pk_parse(pkl, sizeof pkl, &doc, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK(pk_root(doc)->kind == PK_STR && pk_root(doc)->u.str.len == 3);
        CHECK(pk_as_str(pk_root(doc)) == NULL);
        pk_free(doc);
    }
}

/* fuzz_safetensors: a tensor name holding a newline was quoted into the
 * refusal, so ckptfs's "one line naming the file" became two. */
static void test_refusal_stays_one_line(void)
{
    char dir[] = "/tmp/ckpt-reg-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    static const char header[] = "{\"__meta\r5\n\r\rdata__\":{\"a\":\"b\"},\"x\\u001b[2J\":5}";
    uint8_t file[8 + sizeof header - 1];
    uint64_t n = sizeof header - 1;
    for (int i = 0; i < 8; i++)
        file[i] = (uint8_t)(n >> (8 * i));
    memcpy(file + 8, header, n);
    char path[64];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    write_file(path, file, sizeof file);

    char err[1024] = "";
    ck_checkpoint *ck = NULL;
    int rc = ck_open(path, NULL, &ck, err, sizeof err);
    CHECK(rc < 0);
    CHECK(one_line(err));
    CHECK(!strchr(err, '\x1b'));
    CHECK(strstr(err, "m.safetensors") != NULL);
    if (!rc)
        ck_close(ck);
    rm_tree(dir);
}

/* fuzz_geometry, a hang: planning a key whose chunk reaches far past the
 * shape (size 2^62 in a 4x4 float32 tensor) made a run of 2^62 elements,
 * i.e. 2^64 bytes = 0, and the loop never advanced.  ck_open marks such
 * keys bad so ckptfs never plans them, but the planner must not hang. */
static void test_plan_chunk_past_shape(void)
{
    uint64_t shape[2] = { 4, 4 };
    uint64_t off[2] = { 0, 0 }, sz[2] = { 4, UINT64_C(1) << 62 };
    ck_chunk chunk = { .offsets = off, .sizes = sz };
    ck_key key = { .fqn = "w", .kind = CK_KEY_TENSOR, .dtype = CK_DT_FLOAT32, .ndim = 2,
                   .shape = shape, .nchunks = 1, .chunks = &chunk };
    char err[256] = "";
    CHECK(ck_key_check_chunks(&key, err, sizeof err) < 0);
    alarm(HANG_SECONDS);
    ck_read_vec rv = { 0 };
    int rc = ck_load_plan_for_range(&key, 0, 64, &rv);
    alarm(0);
    CHECK_EQ_INT(rc, -EIO);
    ck_read_vec_free(&rv);

    /* the same with an offset that wraps: 2^64 - 1 + 2 */
    off[1] = UINT64_MAX;
    sz[1] = 2;
    alarm(HANG_SECONDS);
    rc = ck_load_plan_for_range(&key, 0, 64, &rv);
    alarm(0);
    CHECK(rc == -EIO);
    ck_read_vec_free(&rv);
}

/* Makes DIR a copy of dcp_single's .metadata with __0_0.distcp as given. */
static void dcp_single_without_data(char *dir)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/.metadata", dir);
    copy_file(FIX "dcp_single/.metadata", path);
}

/* Reading a key whose data file could not be opened at mount deadlocked:
 * chunk resolution holds ck->lock and ck_file_fd took it again to open the
 * file late.  A missing data file must give EIO for its keys, at once. */
static void test_missing_data_file_no_deadlock(void)
{
    char dir[] = "/tmp/ckpt-reg-XXXXXX";
    dcp_single_without_data(dir);
    char err[1024] = "";
    ck_checkpoint *ck = NULL;
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        const ck_key *k = ck_find_key(ck, "model.embed.weight");
        CHECK(k != NULL);
        uint8_t buf[64];
        size_t got = 1;
        alarm(HANG_SECONDS);
        if (k) {
            CHECK_EQ_INT(ck_key_read(ck, k, 0, buf, sizeof buf, &got), -EIO);
            CHECK_EQ_INT(got, 0);
            /* sticky, and still no lock held */
            CHECK_EQ_INT(ck_key_read(ck, k, 0, buf, sizeof buf, &got), -EIO);
        }
        /* the file appears later: a new mount reads it */
        char path[128];
        snprintf(path, sizeof path, "%s/__0_0.distcp", dir);
        copy_file(FIX "dcp_single/__0_0.distcp", path);
        const ck_key *step = ck_find_key(ck, "step");
        if (step) {
            uint64_t size;
            /* never resolved before: opens the file now, under the lock */
            rc = ck_key_size(ck, step, &size);
            CHECK_EQ_INT(rc, 0);
            CHECK_EQ_INT(ck_key_read(ck, step, 0, buf, sizeof buf, &got), 0);
            CHECK(got > 0);
        }
        alarm(0);
        ck_close(ck);
    }
    rm_tree(dir);
}

/* A FIFO planted as a data file, or as .metadata, hung ck_open (open(2) of
 * a FIFO waits for a writer).  Now: .metadata is refused with one line; a
 * data file that is not a regular file gives EIO for its keys. */
static void test_fifo_never_hangs(void)
{
    char dir[] = "/tmp/ckpt-reg-XXXXXX";
    dcp_single_without_data(dir);
    char path[128];
    snprintf(path, sizeof path, "%s/__0_0.distcp", dir);
    CHECK_EQ_INT(mkfifo(path, 0644), 0);
    char err[1024] = "";
    ck_checkpoint *ck = NULL;
    alarm(HANG_SECONDS);
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        const ck_key *k = ck_find_key(ck, "model.embed.weight");
        uint8_t buf[16];
        size_t got;
        CHECK(k && ck_key_read(ck, k, 0, buf, sizeof buf, &got) == -EIO);
        ck_close(ck);
    }
    alarm(0);

    snprintf(path, sizeof path, "%s/.metadata", dir);
    unlink(path);
    CHECK_EQ_INT(mkfifo(path, 0644), 0);
    ck = NULL;
    err[0] = '\0';
    alarm(HANG_SECONDS);
    rc = ck_open(dir, NULL, &ck, err, sizeof err);
    alarm(0);
    CHECK(rc < 0);
    CHECK(one_line(err) && strstr(err, ".metadata"));
    if (!rc)
        ck_close(ck);
    rm_tree(dir);
}

/* The same for a directory of safetensors files whose index is a FIFO. */
static void test_fifo_index_never_hangs(void)
{
    char dir[] = "/tmp/ckpt-reg-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    copy_file(FIX "st_single/model.safetensors", path);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    CHECK_EQ_INT(mkfifo(path, 0644), 0);
    char err[1024] = "";
    ck_checkpoint *ck = NULL;
    alarm(HANG_SECONDS);
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    alarm(0);
    CHECK(rc < 0);
    CHECK(one_line(err) && strstr(err, "index.json"));
    if (!rc)
        ck_close(ck);
    rm_tree(dir);
}

int main(void)
{
    test_pickle_mark_on_empty_stack();
    test_pickle_string_with_nul();
    test_refusal_stays_one_line();
    test_plan_chunk_past_shape();
    test_missing_data_file_no_deadlock();
    test_fifo_never_hangs();
    test_fifo_index_never_hangs();
    return check_done();
}
