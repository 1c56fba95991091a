/* zip_reader against torch 2.11's own archives (every DCP item of
 * dcp_single_perfile is one whole torch.save zip), plus damaged copies and
 * hand-built archives for the paths torch's small files never take. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "byte_source.h"
#include "check.h"
#include "test_util.h"
#include "zip_reader.h"

#define FIXDIR "tests/fixtures/torch-2.11/dcp_single_perfile/"
#define N_ITEMS 21
/* Items 18..20 hold bytes entries (step, meta.name, meta.lrs): no data/0. */
#define FIRST_BYTES_ITEM 18

/* Offset of the last occurrence of a 4-byte signature, or -1. */
static long find_sig(const uint8_t *buf, uint64_t len, uint32_t sig)
{
    for (long i = (long)len - 4; i >= 0; i--)
        if (ck_le32(buf + i) == sig)
            return i;
    return -1;
}

/* Central directory entry whose name ends with suffix, or -1. */
static long find_cd_entry(const uint8_t *buf, uint64_t len, const char *suffix)
{
    size_t sl = strlen(suffix);
    for (long i = 0; i + 46 <= (long)len; i++) {
        if (ck_le32(buf + i) != 0x02014b50u)
            continue;
        uint16_t nlen = ck_le16(buf + i + 28);
        if ((uint64_t)i + 46 + nlen > len || nlen < sl)
            continue;
        if (memcmp(buf + i + 46 + nlen - sl, suffix, sl) == 0)
            return i;
    }
    return -1;
}

static void test_fixture_items(void)
{
    for (int i = 0; i < N_ITEMS; i++) {
        char path[256];
        snprintf(path, sizeof path, FIXDIR "__0_%d.distcp", i);
        int fd = open(path, O_RDONLY);
        CHECK(fd >= 0);
        if (fd < 0)
            continue;
        struct stat st;
        fstat(fd, &st);
        ck_byte_source src = ck_byte_source_fd(fd, 0, (uint64_t)st.st_size);
        size_t len;
        uint8_t *whole = slurp(path, &len);
        CHECK(whole != NULL && len == (uint64_t)st.st_size);
        ck_byte_source msrc = ck_byte_source_mem(whole, len);

        static const char *const members[] = { "/data.pkl", "/.format_version", "/.storage_alignment",
                                               "/byteorder", "/version", "/.data/serialization_id",
                                               "/data/0" };
        size_t n_members = i < FIRST_BYTES_ITEM ? 7 : 6;
        for (size_t m = 0; m < n_members; m++) {
            ck_zip_member zm, zm2;
            char err[256] = "";
            int rc = ck_zip_find(&src, members[m], &zm, err, sizeof err);
            CHECK_EQ_INT(rc, 0);
            if (rc < 0) {
                printf("# %s %s: %s\n", path, members[m], err);
                continue;
            }
            /* torch pads every member's local extra field to 64-byte alignment */
            CHECK_EQ_INT(zm.data_offset % 64, 0);
            CHECK(zm.data_offset + zm.size <= len);
            uLong crc = crc32(0L, Z_NULL, 0);
            crc = crc32(crc, whole + zm.data_offset, (uInt)zm.size);
            CHECK_EQ_INT(crc, zm.crc32);
            CHECK_EQ_INT(ck_zip_find(&msrc, members[m], &zm2, err, sizeof err), 0);
            CHECK(zm2.data_offset == zm.data_offset && zm2.size == zm.size && zm2.crc32 == zm.crc32);
            if (strcmp(members[m], "/byteorder") == 0)
                CHECK(zm.size == 6 && memcmp(whole + zm.data_offset, "little", 6) == 0);
            if (strcmp(members[m], "/.storage_alignment") == 0)
                CHECK(zm.size == 2 && memcmp(whole + zm.data_offset, "64", 2) == 0);
        }
        if (i >= FIRST_BYTES_ITEM) {
            ck_zip_member zm;
            char err[256] = "";
            CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -ENOENT);
        }
        /* a suffix must match after the folder name, not inside it */
        ck_zip_member zm;
        char err[256];
        CHECK_EQ_INT(ck_zip_find(&src, "/0", &zm, err, sizeof err), -ENOENT);
        CHECK_EQ_INT(ck_zip_find(&src, "/serialization_id", &zm, err, sizeof err), -ENOENT);
        CHECK_EQ_INT(ck_zip_find(&src, "archive/version", &zm, err, sizeof err), 0);
        free(whole);
        close(fd);
    }
}

/* Item 14 is model.u8 (uint8[37]). */
static uint8_t *load_u8_item(size_t *len) { return slurp(FIXDIR "__0_14.distcp", len); }

static void test_truncated(void)
{
    size_t len;
    uint8_t *buf = load_u8_item(&len);
    CHECK(buf != NULL);
    uint64_t cuts[] = { len - 1, len - 22, len - 23, len / 2, 100, 21, 0 };
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        ck_byte_source src = ck_byte_source_mem(buf, cuts[i]);
        ck_zip_member zm;
        char err[256] = "";
        int rc = ck_zip_find(&src, "/data/0", &zm, err, sizeof err);
        CHECK_EQ_INT(rc, -EINVAL);
        CHECK(err[0] != '\0');
    }
    /* A file source whose length claims more than the file holds: -EIO. */
    char tmp[] = "/tmp/test_zip_XXXXXX";
    int fd = mkstemp(tmp);
    CHECK(fd >= 0);
    CHECK(write(fd, buf, (size_t)len - 100) == (ssize_t)(len - 100));
    ck_byte_source src = ck_byte_source_fd(fd, 0, len);
    ck_zip_member zm;
    char err[256] = "";
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EIO);
    uint8_t b[8];
    CHECK_EQ_INT(ck_byte_source_read(&src, len - 8, b, 8), -EIO);
    CHECK_EQ_INT(ck_byte_source_read(&src, 0, b, 8), 0);
    CHECK_EQ_INT(ck_byte_source_read(&src, len - 4, b, 8), -EIO);  /* past len */
    CHECK_EQ_INT(ck_byte_source_read(&src, UINT64_MAX, b, 1), -EIO);
    close(fd);
    unlink(tmp);
    free(buf);
}

static int find_with_flip(const uint8_t *orig, uint64_t len, long at, uint8_t xor_mask, const char *suffix,
                          char *err, size_t errlen)
{
    uint8_t *copy = malloc(len);
    memcpy(copy, orig, len);
    copy[at] ^= xor_mask;
    ck_byte_source src = ck_byte_source_mem(copy, len);
    ck_zip_member zm;
    int rc = ck_zip_find(&src, suffix, &zm, err, errlen);
    free(copy);
    return rc;
}

static void test_flipped_bytes(void)
{
    size_t len;
    uint8_t *buf = load_u8_item(&len);
    long eocd = find_sig(buf, len, 0x06054b50u);
    long z64 = find_sig(buf, len, 0x06064b50u);
    long loc = find_sig(buf, len, 0x07064b50u);
    long cd = find_cd_entry(buf, len, "/data/0");
    CHECK(eocd > 0 && z64 > 0 && loc > 0 && cd > 0);
    char err[256];

    err[0] = 0;
    CHECK_EQ_INT(find_with_flip(buf, len, eocd, 0x01, "/data/0", err, sizeof err), -EINVAL);
    printf("# EOCD signature: %s\n", err);
    /* EOCD central directory offset, which must agree with the ZIP64 record */
    CHECK_EQ_INT(find_with_flip(buf, len, eocd + 16, 0x04, "/data/0", err, sizeof err), -EINVAL);
    printf("# EOCD offset: %s\n", err);
    /* EOCD comment length */
    CHECK_EQ_INT(find_with_flip(buf, len, eocd + 20, 0x01, "/data/0", err, sizeof err), -EINVAL);
    /* ZIP64 record signature and its directory offset */
    CHECK_EQ_INT(find_with_flip(buf, len, z64, 0x01, "/data/0", err, sizeof err), -EINVAL);
    CHECK_EQ_INT(find_with_flip(buf, len, z64 + 48, 0x80, "/data/0", err, sizeof err), -EINVAL);
    /* ZIP64 locator pointing elsewhere */
    CHECK_EQ_INT(find_with_flip(buf, len, loc + 8, 0x02, "/data/0", err, sizeof err), -EINVAL);
    /* central header signature of the member we look for */
    CHECK_EQ_INT(find_with_flip(buf, len, cd, 0x01, "/data/0", err, sizeof err), -EINVAL);
    printf("# central signature: %s\n", err);
    /* a huge name length runs the entry past the directory */
    CHECK_EQ_INT(find_with_flip(buf, len, cd + 29, 0x40, "/data/0", err, sizeof err), -EINVAL);
    /* the local header offset now points at garbage */
    CHECK_EQ_INT(find_with_flip(buf, len, cd + 42, 0x01, "/data/0", err, sizeof err), -EINVAL);
    printf("# local offset: %s\n", err);
    /* a size that runs past the members' area */
    CHECK_EQ_INT(find_with_flip(buf, len, cd + 20, 0x40, "/data/0", err, sizeof err), -EINVAL);
    /* compressed and uncompressed sizes differ for a stored member */
    CHECK_EQ_INT(find_with_flip(buf, len, cd + 24, 0x01, "/data/0", err, sizeof err), -EINVAL);
    /* a flip in the local header signature */
    long lh = (long)ck_le32(buf + cd + 42);
    CHECK_EQ_INT(find_with_flip(buf, len, lh, 0x01, "/data/0", err, sizeof err), -EINVAL);
    /* a larger local extra length moves the data past the directory start */
    CHECK_EQ_INT(find_with_flip(buf, len, lh + 29, 0x10, "/data/0", err, sizeof err), -EINVAL);
    free(buf);
}

static void test_compressed_member(void)
{
    size_t len;
    uint8_t *buf = load_u8_item(&len);
    long cd = find_cd_entry(buf, len, "/data.pkl");
    long lh = (long)ck_le32(buf + cd + 42);
    /* method 8 (deflate) in both headers: the reader refuses, not misreads */
    ck_put_le16(buf + cd + 10, 8);
    ck_put_le16(buf + lh + 8, 8);
    ck_byte_source src = ck_byte_source_mem(buf, len);
    ck_zip_member zm;
    char err[256] = "";
    CHECK_EQ_INT(ck_zip_find(&src, "/data.pkl", &zm, err, sizeof err), -ENOTSUP);
    printf("# compressed: %s\n", err);
    /* other members are still readable */
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), 0);
    /* encrypted flag */
    ck_put_le16(buf + cd + 10, 0);
    ck_put_le16(buf + lh + 8, 0);
    buf[cd + 8] |= 1;
    CHECK_EQ_INT(ck_zip_find(&src, "/data.pkl", &zm, err, sizeof err), -ENOTSUP);
    free(buf);
}

/* A minimal archive without the ZIP64 end records (what Python's zipfile
 * writes for small files), optionally with a ZIP64 extra field carrying the
 * sizes and offset, and an optional trailing comment. */
static size_t build_zip(uint8_t *out, const char *name, const char *data, int zip64_extra,
                        const char *comment, int dup)
{
    size_t nlen = strlen(name), dlen = strlen(data), clen = strlen(comment);
    uLong crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)data, (uInt)dlen);
    size_t p = 0;
    size_t lh_off[2];
    int copies = dup ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        lh_off[c] = p;
        ck_put_le32(out + p, 0x04034b50u);
        ck_put_le16(out + p + 4, 20);
        ck_put_le16(out + p + 6, 0);
        ck_put_le16(out + p + 8, 0);
        ck_put_le32(out + p + 10, 0);
        ck_put_le32(out + p + 14, (uint32_t)crc);
        ck_put_le32(out + p + 18, (uint32_t)dlen);
        ck_put_le32(out + p + 22, (uint32_t)dlen);
        ck_put_le16(out + p + 26, (uint16_t)nlen);
        ck_put_le16(out + p + 28, 3); /* an odd-sized extra field only the local header has */
        p += 30;
        memcpy(out + p, name, nlen);
        p += nlen;
        memcpy(out + p, "\xAA\xBB\xCC", 3);
        p += 3;
        memcpy(out + p, data, dlen);
        p += dlen;
    }
    size_t cd_off = p;
    for (int c = 0; c < copies; c++) {
        ck_put_le32(out + p, 0x02014b50u);
        ck_put_le16(out + p + 4, 20);
        ck_put_le16(out + p + 6, 20);
        ck_put_le16(out + p + 8, 0);
        ck_put_le16(out + p + 10, 0);
        ck_put_le32(out + p + 12, 0);
        ck_put_le32(out + p + 16, (uint32_t)crc);
        ck_put_le32(out + p + 20, zip64_extra ? 0xFFFFFFFFu : (uint32_t)dlen);
        ck_put_le32(out + p + 24, zip64_extra ? 0xFFFFFFFFu : (uint32_t)dlen);
        ck_put_le16(out + p + 28, (uint16_t)nlen);
        ck_put_le16(out + p + 30, zip64_extra ? 4 + 4 + 4 + 24 : 0);
        ck_put_le16(out + p + 32, 0);
        ck_put_le16(out + p + 34, 0);
        ck_put_le16(out + p + 36, 0);
        ck_put_le32(out + p + 38, 0);
        ck_put_le32(out + p + 42, zip64_extra ? 0xFFFFFFFFu : (uint32_t)lh_off[c]);
        p += 46;
        memcpy(out + p, name, nlen);
        p += nlen;
        if (zip64_extra) {
            /* an unrelated field first, then ZIP64: usize, csize, offset */
            ck_put_le16(out + p, 0x5455);
            ck_put_le16(out + p + 2, 4);
            ck_put_le32(out + p + 4, 0);
            p += 8;
            ck_put_le16(out + p, 0x0001);
            ck_put_le16(out + p + 2, 24);
            ck_put_le64(out + p + 4, dlen);
            ck_put_le64(out + p + 12, dlen);
            ck_put_le64(out + p + 20, lh_off[c]);
            p += 28;
        }
    }
    size_t cd_size = p - cd_off;
    ck_put_le32(out + p, 0x06054b50u);
    ck_put_le16(out + p + 4, 0);
    ck_put_le16(out + p + 6, 0);
    ck_put_le16(out + p + 8, (uint16_t)copies);
    ck_put_le16(out + p + 10, (uint16_t)copies);
    ck_put_le32(out + p + 12, (uint32_t)cd_size);
    ck_put_le32(out + p + 16, (uint32_t)cd_off);
    ck_put_le16(out + p + 20, (uint16_t)clen);
    p += 22;
    memcpy(out + p, comment, clen);
    return p + clen;
}

static void test_hand_built(void)
{
    static uint8_t buf[4096];
    const char *data = "hello, stored member";
    ck_zip_member zm;
    char err[256] = "";
    for (int z = 0; z < 2; z++) {
        size_t len = build_zip(buf, "pfx/data/0", data, z, z ? "a trailing comment" : "", 0);
        ck_byte_source src = ck_byte_source_mem(buf, len);
        int rc = ck_zip_find(&src, "/data/0", &zm, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        if (rc == 0) {
            CHECK_EQ_INT(zm.size, strlen(data));
            CHECK(memcmp(buf + zm.data_offset, data, zm.size) == 0);
            CHECK_EQ_INT(zm.data_offset, 30 + strlen("pfx/data/0") + 3);
        }
    }
    /* ZIP64 sizes wanted but the extra field is too short */
    size_t len = build_zip(buf, "pfx/data/0", data, 1, "", 0);
    long cd = find_cd_entry(buf, len, "/data/0");
    ck_put_le16(buf + cd + 46 + 10 + 8 + 2, 16);
    ck_byte_source src = ck_byte_source_mem(buf, len);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
    /* two members with the same suffix are ambiguous */
    len = build_zip(buf, "pfx/data/0", data, 0, "", 1);
    src = ck_byte_source_mem(buf, len);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
    printf("# duplicate: %s\n", err);
    /* an EOCD claiming ZIP64 values without a locator */
    len = build_zip(buf, "pfx/data/0", data, 0, "", 0);
    ck_put_le32(buf + len - 22 + 16, 0xFFFFFFFFu);
    src = ck_byte_source_mem(buf, len);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
    /* too many entries */
    len = build_zip(buf, "pfx/data/0", data, 0, "", 0);
    ck_put_le16(buf + len - 22 + 8, 0xFFFE);
    ck_put_le16(buf + len - 22 + 10, 0xFFFE);
    src = ck_byte_source_mem(buf, len);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
    /* an empty source and a source of garbage */
    src = ck_byte_source_mem(buf, 0);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
    memset(buf, 'P', 200);
    src = ck_byte_source_mem(buf, 200);
    CHECK_EQ_INT(ck_zip_find(&src, "/data/0", &zm, err, sizeof err), -EINVAL);
}

int main(void)
{
    test_fixture_items();
    test_truncated();
    test_flipped_bytes();
    test_compressed_member();
    test_hand_built();
    return check_done();
}
