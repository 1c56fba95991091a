/* zip_layout: an archive laid out and rendered piece by piece must be the
 * archive torch writes.  torch_save_writer's items are byte-identical to
 * torch's (test_torch_save_writer.c); rendering the same records here,
 * with the member bytes taken from such an item, must give the same file
 * byte for byte.  Then ZIP64: a member past 4 GiB, in a sparse file, found
 * by the zip reader where the layout put it. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "byte_source.h"
#include "check.h"
#include "torch_save_writer.h"
#include "zip_layout.h"
#include "zip_reader.h"

static const char *const RECORDS[] = { "data.pkl", "byteorder", ".format_version",
                                       ".storage_alignment", "data/0", "version",
                                       ".data/serialization_id" };
/* torch's record order (torch_save_writer.h) */
static const int ORDER[] = { 0, 2, 3, 1, 4, 5, 6 };

/* Renders the records of item (a torch.save archive) again through
 * zip_layout and compares. */
static void check_same_as_item(ck_dtype dt, uint32_t ndim, const uint64_t *shape)
{
    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; d++)
        numel *= shape[d];
    size_t elsize = ck_dtype_get(dt)->size;
    uint8_t *data = malloc(numel * elsize + 1);
    for (uint64_t i = 0; i < numel * elsize; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    uint8_t *item;
    uint64_t item_len;
    char err[256];
    CHECK(ck_torch_save_tensor_mem("archive", dt, ndim, shape, data, &item, &item_len, err,
                                   sizeof err) == 0);
    ck_byte_source src = ck_byte_source_mem(item, item_len);
    ck_zip_entry e[7];
    ck_zip_member m[7];
    uint32_t crc[7];
    char names[7][64];
    for (int i = 0; i < 7; i++) {
        const char *rec = RECORDS[ORDER[i]];
        char suffix[64];
        snprintf(suffix, sizeof suffix, "/%s", rec);
        CHECK(ck_zip_find(&src, suffix, &m[i], err, sizeof err) == 0);
        snprintf(names[i], sizeof names[i], "archive/%s", rec);
        e[i] = (ck_zip_entry){ .name = names[i], .size = m[i].size };
        crc[i] = m[i].crc32;
    }
    ck_zip_summary s;
    CHECK(ck_zip_layout(e, 7, &s) == 0);
    CHECK_EQ_INT(s.total, item_len);
    uint8_t *out = calloc(1, s.total);
    for (int i = 0; i < 7; i++) {
        CHECK(e[i].data_off % CK_ZIP_ALIGN == 0);
        CHECK_EQ_INT(e[i].data_off, m[i].data_offset);
        uint8_t hdr[CK_ZIP_LOCAL_MAX(64)];
        size_t hl = ck_zip_local_header(&e[i], hdr);
        CHECK_EQ_INT(e[i].local_off + hl, e[i].data_off);
        memcpy(out + e[i].local_off, hdr, hl);
        memcpy(out + e[i].data_off, item + m[i].data_offset, m[i].size);
        CHECK_EQ_INT(crc[i], (uint32_t)crc32_z(0, item + m[i].data_offset, m[i].size));
        uint8_t dd[CK_ZIP_DESCRIPTOR_MAX];
        size_t dl = ck_zip_descriptor(&e[i], crc[i], dd);
        CHECK_EQ_INT(e[i].data_off + e[i].size + dl, e[i].end_off);
        memcpy(out + e[i].data_off + e[i].size, dd, dl);
    }
    CHECK(ck_zip_central_directory(e, crc, 7, &s, out + s.cd_off, s.cd_len) == 0);
    CHECK(ck_zip_central_directory(e, crc, 7, &s, out + s.cd_off, s.cd_len - 1) == -EINVAL);
    CHECK(memcmp(out, item, item_len) == 0);
    free(out);
    free(item);
    free(data);
}

/* A 5 GiB member: ZIP64 sizes, and a member after it whose local header
 * offset needs ZIP64 too.  Written sparse; the reader finds both. */
static void check_zip64(void)
{
    char path[] = "/tmp/ckptfs-zip64-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    unlink(path);
    ck_zip_entry e[3] = {
        { .name = "archive/data.pkl", .size = 3 },
        { .name = "archive/data/0", .size = 5ull << 30 },
        { .name = "archive/version", .size = 2 },
    };
    ck_zip_summary s;
    CHECK(ck_zip_layout(e, 3, &s) == 0);
    CHECK(e[2].local_off > 0xFFFFFFFFull);
    CHECK(e[1].data_off % 64 == 0 && e[2].data_off % 64 == 0);
    CHECK(ftruncate(fd, (off_t)s.total) == 0);
    uint32_t crc[3] = { 0x11111111u, 0x22222222u, 0x33333333u };
    for (int i = 0; i < 3; i++) {
        uint8_t hdr[CK_ZIP_LOCAL_MAX(32)], dd[CK_ZIP_DESCRIPTOR_MAX];
        size_t hl = ck_zip_local_header(&e[i], hdr);
        CHECK(pwrite(fd, hdr, hl, (off_t)e[i].local_off) == (ssize_t)hl);
        size_t dl = ck_zip_descriptor(&e[i], crc[i], dd);
        CHECK_EQ_INT(dl, i == 0 ? 16 : 24); /* ZIP64 descriptors for ZIP64 entries */
        CHECK(pwrite(fd, dd, dl, (off_t)(e[i].data_off + e[i].size)) == (ssize_t)dl);
    }
    uint8_t *cd = malloc(s.cd_len);
    CHECK(ck_zip_central_directory(e, crc, 3, &s, cd, s.cd_len) == 0);
    CHECK(pwrite(fd, cd, s.cd_len, (off_t)s.cd_off) == (ssize_t)s.cd_len);
    free(cd);
    ck_byte_source src = ck_byte_source_fd(fd, 0, s.total);
    ck_zip_member m;
    char err[256];
    CHECK(ck_zip_find(&src, "/data/0", &m, err, sizeof err) == 0);
    CHECK_EQ_INT(m.size, 5ull << 30);
    CHECK_EQ_INT(m.data_offset, e[1].data_off);
    CHECK_EQ_INT(m.crc32, crc[1]);
    CHECK(ck_zip_find(&src, "/version", &m, err, sizeof err) == 0);
    CHECK_EQ_INT(m.data_offset, e[2].data_off);
    CHECK_EQ_INT(m.crc32, crc[2]);
    close(fd);
}

static void check_bad_names(void)
{
    char *longname = malloc(70000);
    memset(longname, 'a', 69999);
    longname[69999] = '\0';
    ck_zip_entry e = { .name = longname, .size = 1 };
    ck_zip_summary s;
    CHECK(ck_zip_layout(&e, 1, &s) == -EINVAL);
    free(longname);
    ck_zip_entry big[2] = { { .name = "a", .size = UINT64_MAX - 10 }, { .name = "b", .size = 100 } };
    CHECK(ck_zip_layout(big, 2, &s) == -EOVERFLOW);
}

int main(void)
{
    check_same_as_item(CK_DT_FLOAT32, 2, (const uint64_t[]){ 3, 5 });
    check_same_as_item(CK_DT_BFLOAT16, 1, (const uint64_t[]){ 1000 });
    check_same_as_item(CK_DT_FLOAT8_E4M3FN, 3, (const uint64_t[]){ 2, 3, 4 });
    check_same_as_item(CK_DT_INT64, 0, NULL);
    check_same_as_item(CK_DT_FLOAT32, 2, (const uint64_t[]){ 0, 4 }); /* empty data/0 */
    check_zip64();
    check_bad_names();
    return check_done();
}
