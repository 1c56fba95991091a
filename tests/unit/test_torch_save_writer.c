/* torch_save_writer: what it writes must be what torch writes.  Every
 * contiguous tensor item of dcp_single_perfile is rewritten from its dtype,
 * shape and bytes and compared byte for byte with torch's file (the
 * serialization id included); other dtypes and ranks are read back with
 * our reader and checked by Python's zipfile and pickletools. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byte_source.h"
#include "check.h"
#include "test_util.h"
#include "torch_item.h"
#include "torch_save_writer.h"
#include "zip_reader.h"
#include "zstd_stream.h"

#define FIXROOT "tests/fixtures/torch-2.11/"
#define FIXDIR FIXROOT "dcp_single_perfile/"
#define PYTHON "/usr/bin/python3"

/* Rewrites every fixture tensor item torch saved contiguously and compares
 * the whole file.  (model.transposed was saved with its transposed strides,
 * which a writer of contiguous chunks never produces.) */
static void test_identical_to_torch(void)
{
    int compared = 0;
    for (int i = 0; i < 18; i++) {
        char path[256];
        snprintf(path, sizeof path, FIXDIR "__0_%d.distcp", i);
        size_t len;
        uint8_t *orig = slurp(path, &len);
        CHECK(orig != NULL);
        ck_byte_source src = ck_byte_source_mem(orig, len);
        ck_torch_item it;
        char err[256] = "";
        CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), 0);
        uint64_t nbytes = numel_of(it.ndim, it.size) * ck_dtype_get(it.dtype)->size;
        if (!ck_torch_item_is_contiguous(&it) || it.storage_offset != 0 || it.data_length != nbytes) {
            free(orig);
            continue;
        }
        uint8_t *out = NULL;
        uint64_t out_len = 0;
        int rc = ck_torch_save_tensor_mem("archive", it.dtype, it.ndim, it.size,
                                          orig + it.data_offset, &out, &out_len, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(out_len, len);
        int same = out_len == len && memcmp(out, orig, len) == 0;
        CHECK(same);
        if (!same) {
            printf("# %s (%s) differs", path, ck_dtype_get(it.dtype)->torch_name);
            for (uint64_t b = 0; b < len && b < out_len; b++)
                if (out[b] != orig[b]) {
                    printf(" first at byte %llu", (unsigned long long)b);
                    break;
                }
            printf("\n");
        }
        uint64_t predicted;
        CHECK_EQ_INT(ck_torch_save_tensor_len("archive", it.dtype, it.ndim, it.size, &predicted,
                                              err, sizeof err), 0);
        CHECK_EQ_INT(predicted, len);
        compared++;
        free(out);
        free(orig);
    }
    /* all but transposed: 17 of the 18 tensor items */
    CHECK_EQ_INT(compared, 17);
}

/* model.u8 again, written to a file at an offset and, separately, through
 * the zstd writer: the compressed item equals torch's dcp_zstd item. */
typedef struct {
    const uint8_t *data;
    uint64_t len;
    int fail_at_call; /* >0: that call fails */
    int calls;
} mem_reader;

static int mem_reader_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    mem_reader *r = ctx;
    if (++r->calls == r->fail_at_call)
        return -EIO;
    if (off > r->len || len > r->len - off)
        return -EINVAL;
    memcpy(buf, r->data + off, len);
    return 0;
}

static void test_u8_file_and_zstd(void)
{
    size_t len;
    uint8_t *orig = slurp(FIXDIR "__0_14.distcp", &len);
    ck_byte_source src = ck_byte_source_mem(orig, len);
    ck_torch_item it;
    char err[256] = "";
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), 0);
    CHECK(it.dtype == CK_DT_UINT8 && it.ndim == 1 && it.size[0] == 37);
    mem_reader rd = { orig + it.data_offset, 37, 0, 0 };

    char path[] = "/tmp/test_tsw_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    uint64_t item_len = 0;
    CHECK_EQ_INT(ck_torch_save_write_tensor(fd, 1000, "archive", CK_DT_UINT8, 1, it.size,
                                            mem_reader_read, &rd, &item_len, err, sizeof err), 0);
    CHECK_EQ_INT(item_len, len);
    struct stat st;
    fstat(fd, &st);
    CHECK_EQ_INT(st.st_size, 1000 + len);
    uint8_t *back = malloc(len);
    CHECK(pread(fd, back, len, 1000) == (ssize_t)len);
    CHECK(memcmp(back, orig, len) == 0);
    free(back);

    /* through zstd: the frame torch wrote for this item in dcp_zstd */
    size_t zlen;
    uint8_t *zfile = slurp(FIXROOT "dcp_zstd/__0_0.distcp", &zlen);
    const uint64_t u8_off = 5124, u8_len = 651; /* from dcp_zstd/.metadata */
    ck_fd_sink out = { fd, 5000 };
    ck_zstd_writer *z;
    CHECK_EQ_INT(ck_zstd_writer_new(&z, len, ck_fd_sink_write, &out), 0);
    rd.calls = 0;
    CHECK_EQ_INT(ck_torch_save_tensor_to_sink(ck_zstd_writer_write, z, "archive", CK_DT_UINT8, 1,
                                              it.size, mem_reader_read, &rd, &item_len, err, sizeof err), 0);
    CHECK_EQ_INT(ck_zstd_writer_finish(z), 0);
    CHECK_EQ_INT(ck_zstd_writer_out_len(z), u8_len);
    CHECK_EQ_INT(out.off, 5000 + u8_len);
    ck_zstd_writer_free(z);
    uint8_t *zback = malloc(u8_len);
    CHECK(pread(fd, zback, u8_len, 5000) == (ssize_t)u8_len);
    CHECK(zfile && memcmp(zback, zfile + u8_off, u8_len) == 0);
    free(zback);
    free(zfile);

    /* a failing read and a failing sink come back as errors */
    rd.calls = 0;
    rd.fail_at_call = 1;
    CHECK_EQ_INT(ck_torch_save_write_tensor(fd, 0, "archive", CK_DT_UINT8, 1, it.size,
                                            mem_reader_read, &rd, NULL, err, sizeof err), -EIO);
    printf("# read failure: %s\n", err);
    rd.fail_at_call = 0;
    CHECK_EQ_INT(ck_torch_save_write_tensor(-1, 0, "archive", CK_DT_UINT8, 1, it.size,
                                            mem_reader_read, &rd, NULL, err, sizeof err), -EBADF);
    printf("# sink failure: %s\n", err);
    close(fd);
    unlink(path);
    free(orig);
}

/* Python's own zip reader and pickletools on what we wrote.  Prints one
 * line per problem; exit status 0 when the archive is sound. */
static const char *const PY_CHECK =
    "import sys, zipfile, pickletools, io, struct\n"
    "p, name, want_v3, want_global = sys.argv[1], sys.argv[2], sys.argv[3] == '1', sys.argv[4]\n"
    "z = zipfile.ZipFile(p)\n"
    "bad = z.testzip()\n"
    "assert bad is None, 'bad CRC in ' + str(bad)\n"
    "names = [i.filename for i in z.infolist()]\n"
    "want = [name + '/' + n for n in ['data.pkl', '.format_version', '.storage_alignment',\n"
    "        'byteorder', 'data/0', 'version', '.data/serialization_id']]\n"
    "assert names == want, names\n"
    "raw = open(p, 'rb').read()\n"
    "for i in z.infolist():\n"
    "    assert i.compress_type == zipfile.ZIP_STORED\n"
    "    n, x = struct.unpack('<HH', raw[i.header_offset + 26:i.header_offset + 30])\n"
    "    off = i.header_offset + 30 + n + x\n"
    "    assert off % 64 == 0, (i.filename, off)\n"
    "    assert raw[off:off + i.file_size] == z.read(i.filename)\n"
    "pkl = z.read(name + '/data.pkl')\n"
    "out = io.StringIO()\n"
    "pickletools.dis(pkl, out=out)\n"
    "d = out.getvalue()\n"
    "assert ('_rebuild_tensor_v3' in d) == want_v3, d\n"
    "assert want_global in d, d\n"
    "assert z.read(name + '/byteorder') == b'little'\n"
    "assert z.read(name + '/version') == b'3\\n'\n"
    "sid = z.read(name + '/.data/serialization_id')\n"
    "assert len(sid) == 40 and sid.isdigit(), sid\n"
    "print('python: ok')\n";

static int python_check(const char *archive_path, const char *archive_name, int v3,
                        const char *global)
{
    char script[] = "/tmp/test_tsw_py_XXXXXX";
    int fd = mkstemp(script);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, PY_CHECK, strlen(PY_CHECK));
    close(fd);
    if (n != (ssize_t)strlen(PY_CHECK))
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PYTHON " %s %s %s %d '%s' 2>&1", script, archive_path, archive_name,
             v3, global);
    FILE *p = popen(cmd, "r");
    int rc = -1;
    if (p) {
        char line[4096];
        while (fgets(line, sizeof line, p))
            printf("# %s", line);
        rc = pclose(p);
    }
    unlink(script);
    return rc;
}

/* Writes, reads back with our reader (dtype, shape, strides, bytes), and
 * asks Python to check the archive. */
static void round_trip(ck_dtype dt, uint32_t ndim, const uint64_t *shape, const char *archive_name,
                       const char *expect_global)
{
    const ck_dtype_info *info = ck_dtype_get(dt);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; d++)
        numel *= shape[d];
    uint64_t nbytes = numel * info->size;
    uint8_t *data = malloc(nbytes ? (size_t)nbytes : 1);
    for (uint64_t i = 0; i < nbytes; i++)
        data[i] = (uint8_t)(i * 131 + 7 + (i >> 20));
    mem_reader rd = { data, nbytes, 0, 0 };

    char path[] = "/tmp/test_tsw_rt_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    uint64_t item_len = 0, predicted = 0;
    char err[256] = "";
    int rc = ck_torch_save_write_tensor(fd, 0, archive_name, dt, ndim, shape, mem_reader_read, &rd,
                                        &item_len, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0)
        printf("# %s: %s\n", info->torch_name, err);
    CHECK_EQ_INT(ck_torch_save_tensor_len(archive_name, dt, ndim, shape, &predicted, err, sizeof err), 0);
    CHECK_EQ_INT(predicted, item_len);

    ck_byte_source src = ck_byte_source_fd(fd, 0, item_len);
    ck_torch_item it;
    rc = ck_torch_item_parse(&src, &it, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc == 0) {
        CHECK_EQ_INT(it.dtype, dt);
        CHECK_EQ_INT(it.ndim, ndim);
        for (uint32_t d = 0; d < ndim && d < it.ndim; d++)
            CHECK_EQ_INT(it.size[d], shape[d]);
        CHECK(ck_torch_item_is_contiguous(&it));
        CHECK_EQ_INT(it.storage_offset, 0);
        CHECK_EQ_INT(it.data_length, nbytes);
        CHECK_EQ_INT(it.data_offset % 64, 0);
        uint8_t *back = malloc(nbytes ? (size_t)nbytes : 1);
        CHECK(pread(fd, back, nbytes, (off_t)it.data_offset) == (ssize_t)nbytes);
        CHECK(memcmp(back, data, nbytes) == 0);
        free(back);
    }
    CHECK_EQ_INT(python_check(path, archive_name, info->storage_class == NULL, expect_global), 0);
    printf("# checked %s%s with %u dims, %llu bytes\n", info->torch_name,
           info->storage_class ? "" : " (v3)", ndim, (unsigned long long)nbytes);
    close(fd);
    unlink(path);
    free(data);
}

static void test_round_trips(void)
{
    uint64_t s2[] = { 3, 5 };
    round_trip(CK_DT_FLOAT32, 2, s2, "archive", "torch FloatStorage");
    round_trip(CK_DT_BFLOAT16, 2, s2, "archive", "torch BFloat16Storage");
    round_trip(CK_DT_FLOAT8_E4M3FN, 2, s2, "archive", "torch float8_e4m3fn");
    round_trip(CK_DT_FLOAT8_E5M2, 2, s2, "archive", "torch float8_e5m2");
    uint64_t s1[] = { 9 };
    round_trip(CK_DT_UINT16, 1, s1, "archive", "torch uint16");
    round_trip(CK_DT_UINT32, 1, s1, "archive", "torch uint32");
    round_trip(CK_DT_UINT64, 1, s1, "archive", "torch uint64");
    round_trip(CK_DT_BOOL, 1, s1, "archive", "torch BoolStorage");
    /* 0-d, empty, many dims (MARK ... TUPLE), odd archive name */
    round_trip(CK_DT_FLOAT64, 0, NULL, "archive", "torch DoubleStorage");
    uint64_t empty[] = { 0, 4 };
    round_trip(CK_DT_FLOAT32, 2, empty, "archive", "torch FloatStorage");
    uint64_t empty_mid[] = { 2, 0, 3 };
    round_trip(CK_DT_FLOAT8_E4M3FN, 3, empty_mid, "archive", "torch float8_e4m3fn");
    uint64_t s5[] = { 2, 1, 3, 2, 2 };
    round_trip(CK_DT_INT16, 5, s5, "my_model_v2", "torch ShortStorage");
    /* several pieces of data/0, and ints beyond BININT1/BININT2 */
    uint64_t big[] = { 1000, 1100 };
    round_trip(CK_DT_FLOAT32, 2, big, "archive", "torch FloatStorage");
    uint64_t big_v3[] = { 70000, 33 };
    round_trip(CK_DT_UINT16, 2, big_v3, "archive", "torch uint16");
}

static void test_bad_arguments(void)
{
    uint64_t s[CK_MAX_DIMS + 1];
    for (int i = 0; i <= CK_MAX_DIMS; i++)
        s[i] = 1;
    uint64_t len;
    char err[256] = "";
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_FLOAT32, CK_MAX_DIMS, s, &len, err, sizeof err), 0);
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_FLOAT32, CK_MAX_DIMS + 1, s, &len, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_torch_save_tensor_len("", CK_DT_FLOAT32, 1, s, &len, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_torch_save_tensor_len("a/b", CK_DT_FLOAT32, 1, s, &len, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_INVALID, 1, s, &len, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_QINT8, 1, s, &len, err, sizeof err), -ENOTSUP);
    uint64_t huge[] = { UINT64_C(1) << 40, UINT64_C(1) << 40 };
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_FLOAT32, 2, huge, &len, err, sizeof err), -EOVERFLOW);
    uint64_t huge1[] = { UINT64_C(1) << 62 };
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_FLOAT32, 1, huge1, &len, err, sizeof err), -EOVERFLOW);
}

/* A member of 4 GiB or more takes the ZIP64 paths (extra fields in both
 * headers, 24-byte descriptor).  The data is zeros written as holes, so the
 * file is sparse and the test stays fast. */
typedef struct {
    int fd;
    uint64_t off;
} sparse_sink;

static int sparse_sink_write(void *ctx, const void *buf, size_t len)
{
    sparse_sink *s = ctx;
    static const uint8_t zeros[CK_TSW_PIECE];
    int zero = len <= sizeof zeros && memcmp(buf, zeros, len) == 0;
    if (!zero) {
        ck_fd_sink f = { s->fd, s->off };
        int rc = ck_fd_sink_write(&f, buf, len);
        if (rc < 0)
            return rc;
    }
    s->off += len;
    return ftruncate(s->fd, (off_t)s->off) == 0 ? 0 : -errno;
}

static int zero_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    (void)ctx, (void)off;
    memset(buf, 0, len);
    return 0;
}

static void test_zip64(void)
{
    char path[] = "/tmp/test_tsw_z64_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    sparse_sink s = { fd, 0 };
    uint64_t shape[] = { (UINT64_C(1) << 32) + 64 }; /* uint8: 4 GiB + 64 bytes */
    uint64_t item_len = 0, predicted = 0;
    char err[256] = "";
    CHECK_EQ_INT(ck_torch_save_tensor_to_sink(sparse_sink_write, &s, "archive", CK_DT_UINT8, 1, shape,
                                              zero_read, NULL, &item_len, err, sizeof err), 0);
    CHECK_EQ_INT(ck_torch_save_tensor_len("archive", CK_DT_UINT8, 1, shape, &predicted, err, sizeof err), 0);
    CHECK_EQ_INT(predicted, item_len);
    ck_byte_source src = ck_byte_source_fd(fd, 0, item_len);
    ck_torch_item it;
    int rc = ck_torch_item_parse(&src, &it, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0)
        printf("# zip64: %s\n", err);
    CHECK_EQ_INT(it.data_length, shape[0]);
    CHECK_EQ_INT(it.data_offset % 64, 0);
    /* members after data/0 sit past 4 GiB: their offsets need ZIP64 too */
    ck_zip_member m;
    CHECK_EQ_INT(ck_zip_find(&src, "/.data/serialization_id", &m, err, sizeof err), 0);
    CHECK(m.data_offset > shape[0] && m.size == 40 && m.data_offset % 64 == 0);
    uint8_t id[41] = { 0 };
    CHECK_EQ_INT(ck_byte_source_read(&src, m.data_offset, id, 40), 0);
    printf("# zip64 serialization id %s\n", (char *)id);
    /* Python agrees on names, sizes and offsets (no CRC pass over 4 GiB) */
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             PYTHON " -c \"import zipfile,sys; z=zipfile.ZipFile('%s'); i=z.getinfo('archive/data/0');"
             " assert i.file_size == %llu, i.file_size; assert z.read('archive/version') == b'3\\n';"
             " assert z.read('archive/.data/serialization_id') == b'%s'; print('# python zip64: ok')\"",
             path, (unsigned long long)shape[0], (char *)id);
    fflush(stdout);
    CHECK_EQ_INT(system(cmd), 0);
    close(fd);
    unlink(path);
}

int main(void)
{
    test_identical_to_torch();
    test_u8_file_and_zstd();
    test_round_trips();
    test_bad_arguments();
    test_zip64();
    return check_done();
}
