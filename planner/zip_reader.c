#include "errmsg.h"
#include "le.h"
#include "zip_reader.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EOCD_SIG 0x06054b50u
#define EOCD_SIZE 22u
#define EOCD_MAX_COMMENT 65535u
#define Z64_LOCATOR_SIG 0x07064b50u
#define Z64_LOCATOR_SIZE 20u
#define Z64_EOCD_SIG 0x06064b50u
#define Z64_EOCD_SIZE 56u
#define CDH_SIG 0x02014b50u
#define CDH_SIZE 46u
#define LFH_SIG 0x04034b50u
#define DD_SIG 0x08074b50u /* data descriptor */
#define LFH_SIZE 30u
#define ZIP64_EXTRA_ID 0x0001u
/* A torch item's directory is a few hundred bytes; this only stops a forged
 * size from making us allocate without bound. */
#define CD_MAX_BYTES (64u << 20)

static int read_err(char *err, size_t errlen, int rc, const char *what, uint64_t off)
{
    return ck_fail(err, errlen, rc, "zip: cannot read %s at offset %llu", what, (unsigned long long)off);
}

typedef struct {
    uint64_t entries;
    uint64_t cd_size;
    uint64_t cd_offset;
    uint64_t cd_limit; /* the directory must end before this (the EOCD records) */
} cd_location;

/* The EOCD is the last record, followed only by its comment, so it lies in
 * the final 22 + 65535 bytes.  Scanning backwards and requiring the comment
 * length to reach the end exactly keeps a stray "PK\5\6" inside member data
 * from being taken for it. */
static int find_eocd(const ck_byte_source *src, uint64_t *eocd_off, uint8_t rec[EOCD_SIZE],
                     char *err, size_t errlen)
{
    if (src->len < EOCD_SIZE)
        return ck_fail(err, errlen, -EINVAL, "zip: %llu bytes is too short for an archive",
                    (unsigned long long)src->len);
    /* torch writes no comment: the record is usually the last 22 bytes */
    int rc = ck_byte_source_read(src, src->len - EOCD_SIZE, rec, EOCD_SIZE);
    if (rc < 0)
        return read_err(err, errlen, rc, "end of archive", src->len - EOCD_SIZE);
    if (ck_le32(rec) == EOCD_SIG && ck_le16(rec + 20) == 0) {
        *eocd_off = src->len - EOCD_SIZE;
        return 0;
    }
    uint64_t tail_len = src->len < EOCD_SIZE + EOCD_MAX_COMMENT ? src->len : EOCD_SIZE + EOCD_MAX_COMMENT;
    uint64_t tail_off = src->len - tail_len;
    uint8_t *tail = malloc((size_t)tail_len);
    if (!tail)
        return -ENOMEM;
    rc = ck_byte_source_read(src, tail_off, tail, (size_t)tail_len);
    if (rc < 0) {
        free(tail);
        return read_err(err, errlen, rc, "end of archive", tail_off);
    }
    for (uint64_t i = tail_len - EOCD_SIZE + 1; i-- > 0;) {
        if (ck_le32(tail + i) != EOCD_SIG)
            continue;
        uint16_t comment_len = ck_le16(tail + i + 20);
        if (i + EOCD_SIZE + comment_len != tail_len)
            continue;
        memcpy(rec, tail + i, EOCD_SIZE);
        *eocd_off = tail_off + i;
        free(tail);
        return 0;
    }
    free(tail);
    return ck_fail(err, errlen, -EINVAL, "zip: no end of central directory record");
}

static int locate_cd(const ck_byte_source *src, cd_location *loc, char *err, size_t errlen)
{
    uint8_t eocd[EOCD_SIZE];
    uint64_t eocd_off = 0;
    int rc = find_eocd(src, &eocd_off, eocd, err, errlen);
    if (rc < 0)
        return rc;

    uint16_t disk = ck_le16(eocd + 4), cd_disk = ck_le16(eocd + 6);
    uint16_t n_disk = ck_le16(eocd + 8), n_total = ck_le16(eocd + 10);
    uint32_t cd_size = ck_le32(eocd + 12), cd_off = ck_le32(eocd + 16);
    bool saturated = n_disk == 0xFFFF || n_total == 0xFFFF || cd_size == 0xFFFFFFFFu ||
                     cd_off == 0xFFFFFFFFu;

    /* torch (miniz with MZ_ZIP_FLAG_WRITE_ZIP64) writes the ZIP64 records
     * even for small archives; when present they are authoritative. */
    bool have_locator = false;
    uint8_t locator[Z64_LOCATOR_SIZE];
    if (eocd_off >= Z64_LOCATOR_SIZE) {
        rc = ck_byte_source_read(src, eocd_off - Z64_LOCATOR_SIZE, locator, sizeof locator);
        if (rc < 0)
            return read_err(err, errlen, rc, "ZIP64 locator", eocd_off - Z64_LOCATOR_SIZE);
        have_locator = ck_le32(locator) == Z64_LOCATOR_SIG;
    }

    if (!have_locator) {
        if (saturated)
            return ck_fail(err, errlen, -EINVAL,
                        "zip: end record needs ZIP64 values but there is no ZIP64 locator");
        if (disk != 0 || cd_disk != 0 || n_disk != n_total)
            return ck_fail(err, errlen, -EINVAL, "zip: multi-disk archives are not supported");
        loc->entries = n_total;
        loc->cd_size = cd_size;
        loc->cd_offset = cd_off;
        loc->cd_limit = eocd_off;
    } else {
        uint64_t z64_off = ck_le64(locator + 8);
        uint32_t z64_disks = ck_le32(locator + 16);
        uint64_t locator_off = eocd_off - Z64_LOCATOR_SIZE;
        if (ck_le32(locator + 4) != 0 || z64_disks > 1)
            return ck_fail(err, errlen, -EINVAL, "zip: multi-disk archives are not supported");
        if (z64_off > locator_off || locator_off - z64_off < Z64_EOCD_SIZE)
            return ck_fail(err, errlen, -EINVAL, "zip: ZIP64 end record offset %llu is out of range",
                        (unsigned long long)z64_off);
        uint8_t z64[Z64_EOCD_SIZE];
        rc = ck_byte_source_read(src, z64_off, z64, sizeof z64);
        if (rc < 0)
            return read_err(err, errlen, rc, "ZIP64 end record", z64_off);
        if (ck_le32(z64) != Z64_EOCD_SIG)
            return ck_fail(err, errlen, -EINVAL, "zip: bad ZIP64 end record signature at %llu",
                        (unsigned long long)z64_off);
        uint64_t rec_size = ck_le64(z64 + 4);
        if (rec_size < Z64_EOCD_SIZE - 12 || rec_size > locator_off - z64_off - 12)
            return ck_fail(err, errlen, -EINVAL, "zip: bad ZIP64 end record size %llu",
                        (unsigned long long)rec_size);
        uint64_t z_n_disk = ck_le64(z64 + 24), z_n_total = ck_le64(z64 + 32);
        if (ck_le32(z64 + 16) != 0 || ck_le32(z64 + 20) != 0 || z_n_disk != z_n_total)
            return ck_fail(err, errlen, -EINVAL, "zip: multi-disk archives are not supported");
        loc->entries = z_n_total;
        loc->cd_size = ck_le64(z64 + 40);
        loc->cd_offset = ck_le64(z64 + 48);
        loc->cd_limit = z64_off;
        /* Both records describe one directory; disagreement means damage. */
        if ((n_total != 0xFFFF && n_total != loc->entries) ||
            (cd_size != 0xFFFFFFFFu && cd_size != loc->cd_size) ||
            (cd_off != 0xFFFFFFFFu && cd_off != loc->cd_offset))
            return ck_fail(err, errlen, -EINVAL, "zip: end record and ZIP64 end record disagree");
    }

    if (loc->entries > CK_ZIP_MAX_ENTRIES)
        return ck_fail(err, errlen, -EINVAL, "zip: %llu entries exceed the limit of %u",
                    (unsigned long long)loc->entries, (unsigned)CK_ZIP_MAX_ENTRIES);
    if (loc->cd_offset > loc->cd_limit || loc->cd_size > loc->cd_limit - loc->cd_offset)
        return ck_fail(err, errlen, -EINVAL,
                    "zip: central directory [%llu, +%llu) runs past its end record at %llu",
                    (unsigned long long)loc->cd_offset, (unsigned long long)loc->cd_size,
                    (unsigned long long)loc->cd_limit);
    if (loc->cd_size > CD_MAX_BYTES)
        return ck_fail(err, errlen, -EINVAL, "zip: central directory of %llu bytes is too large",
                    (unsigned long long)loc->cd_size);
    if (loc->entries * CDH_SIZE > loc->cd_size)
        return ck_fail(err, errlen, -EINVAL, "zip: %llu entries cannot fit in a %llu-byte directory",
                    (unsigned long long)loc->entries, (unsigned long long)loc->cd_size);
    return 0;
}

/* Sizes and offset that overflow 32 bits live in the ZIP64 extended
 * information field, in this fixed order, present only when saturated. */
static int apply_zip64_extra(const uint8_t *extra, size_t extra_len, uint64_t *usize,
                             uint64_t *csize, uint64_t *local_off, char *err, size_t errlen)
{
    bool need_u = *usize == 0xFFFFFFFFu, need_c = *csize == 0xFFFFFFFFu,
         need_o = *local_off == 0xFFFFFFFFu;
    if (!need_u && !need_c && !need_o)
        return 0;
    size_t pos = 0;
    while (extra_len - pos >= 4) {
        uint16_t id = ck_le16(extra + pos), sz = ck_le16(extra + pos + 2);
        if (sz > extra_len - pos - 4)
            return ck_fail(err, errlen, -EINVAL, "zip: extra field runs past its entry");
        if (id == ZIP64_EXTRA_ID) {
            const uint8_t *f = extra + pos + 4;
            size_t fpos = 0;
            uint64_t *wanted[3] = { need_u ? usize : NULL, need_c ? csize : NULL,
                                    need_o ? local_off : NULL };
            for (int k = 0; k < 3; k++) {
                if (!wanted[k])
                    continue;
                if (sz - fpos < 8)
                    return ck_fail(err, errlen, -EINVAL, "zip: ZIP64 extra field is too short");
                *wanted[k] = ck_le64(f + fpos);
                fpos += 8;
            }
            return 0;
        }
        pos += 4u + sz;
    }
    return ck_fail(err, errlen, -EINVAL, "zip: entry needs ZIP64 values but has no ZIP64 extra field");
}

/* The member's prefix is the archive folder ("archive", or the file's stem),
 * which must not itself contain '/'. */
static bool name_matches(const uint8_t *name, size_t name_len, const char *suffix, size_t suffix_len)
{
    if (name_len < suffix_len || memcmp(name + name_len - suffix_len, suffix, suffix_len) != 0)
        return false;
    if (suffix_len == 0 || suffix[0] != '/')
        return true;
    size_t prefix_len = name_len - suffix_len;
    return prefix_len > 0 && memchr(name, '/', prefix_len) == NULL;
}

/* The local extra field's length fixes where the member's data starts and
 * nothing else states it: a damaged length would shift every byte served.
 * What follows the data confirms it: the next local header, a data
 * descriptor (with its signature, or starting with the member's CRC-32), or
 * the central directory. */
static int check_data_end(const ck_byte_source *src, uint64_t end, uint64_t cd_offset,
                          uint32_t crc, const char *suffix, char *err, size_t errlen)
{
    if (end == cd_offset)
        return 0;
    uint8_t b[4];
    if (cd_offset - end < sizeof b)
        return ck_fail(err, errlen, -EINVAL, "zip: data of \"%s\" ends %llu bytes before the directory",
                    suffix, (unsigned long long)(cd_offset - end));
    int rc = ck_byte_source_read(src, end, b, sizeof b);
    if (rc < 0)
        return read_err(err, errlen, rc, "member end", end);
    uint32_t v = ck_le32(b);
    if (v == LFH_SIG || v == DD_SIG || v == crc)
        return 0;
    return ck_fail(err, errlen, -EINVAL,
                "zip: data of \"%s\" is not followed by a header at %llu (damaged local header?)",
                suffix, (unsigned long long)end);
}

int ck_zip_find(const ck_byte_source *src, const char *suffix, ck_zip_member *out, char *err,
                size_t errlen)
{
    cd_location loc = { 0 };
    int rc = locate_cd(src, &loc, err, errlen);
    if (rc < 0)
        return rc;

    uint8_t *cd = malloc(loc.cd_size ? (size_t)loc.cd_size : 1);
    if (!cd)
        return -ENOMEM;
    rc = ck_byte_source_read(src, loc.cd_offset, cd, (size_t)loc.cd_size);
    if (rc < 0) {
        free(cd);
        return read_err(err, errlen, rc, "central directory", loc.cd_offset);
    }

    size_t suffix_len = strlen(suffix);
    size_t pos = 0;
    bool found = false;
    uint64_t usize = 0, csize = 0, local_off = 0;
    uint32_t crc = 0;
    uint16_t method = 0, flags = 0, name_len = 0;
    for (uint64_t i = 0; i < loc.entries; i++) {
        if (loc.cd_size - pos < CDH_SIZE || ck_le32(cd + pos) != CDH_SIG) {
            rc = ck_fail(err, errlen, -EINVAL, "zip: bad central directory entry %llu at offset %llu",
                      (unsigned long long)i, (unsigned long long)(loc.cd_offset + pos));
            goto out;
        }
        const uint8_t *h = cd + pos;
        uint16_t nlen = ck_le16(h + 28), xlen = ck_le16(h + 30), clen = ck_le16(h + 32);
        size_t entry_len = CDH_SIZE + (size_t)nlen + xlen + clen;
        if (entry_len > loc.cd_size - pos) {
            rc = ck_fail(err, errlen, -EINVAL, "zip: central directory entry %llu runs past the directory",
                      (unsigned long long)i);
            goto out;
        }
        if (name_matches(h + CDH_SIZE, nlen, suffix, suffix_len)) {
            if (found) {
                rc = ck_fail(err, errlen, -EINVAL, "zip: two members end with \"%s\"", suffix);
                goto out;
            }
            found = true;
            flags = ck_le16(h + 8);
            method = ck_le16(h + 10);
            crc = ck_le32(h + 16);
            csize = ck_le32(h + 20);
            usize = ck_le32(h + 24);
            local_off = ck_le32(h + 42);
            name_len = nlen;
            rc = apply_zip64_extra(h + CDH_SIZE + nlen, xlen, &usize, &csize, &local_off, err, errlen);
            if (rc < 0)
                goto out;
        }
        pos += entry_len;
    }
    if (!found) {
        rc = ck_fail(err, errlen, -ENOENT, "zip: no member ending with \"%s\"", suffix);
        goto out;
    }
    if (flags & 1u) {
        rc = ck_fail(err, errlen, -ENOTSUP, "zip: member \"%s\" is encrypted", suffix);
        goto out;
    }
    if (method != 0) {
        rc = ck_fail(err, errlen, -ENOTSUP, "zip: member \"%s\" is compressed (method %u); only stored members are read",
                  suffix, (unsigned)method);
        goto out;
    }
    if (csize != usize) {
        rc = ck_fail(err, errlen, -EINVAL, "zip: stored member \"%s\" has sizes %llu and %llu", suffix,
                  (unsigned long long)csize, (unsigned long long)usize);
        goto out;
    }

    /* The local header's extra field differs from the central one (torch pads
     * it so data is 64-byte aligned), so the data start is only known here. */
    uint8_t lfh[LFH_SIZE];
    if (local_off > loc.cd_offset || loc.cd_offset - local_off < LFH_SIZE) {
        rc = ck_fail(err, errlen, -EINVAL, "zip: local header offset %llu of \"%s\" is out of range",
                  (unsigned long long)local_off, suffix);
        goto out;
    }
    rc = ck_byte_source_read(src, local_off, lfh, sizeof lfh);
    if (rc < 0) {
        rc = read_err(err, errlen, rc, "local header", local_off);
        goto out;
    }
    if (ck_le32(lfh) != LFH_SIG || ck_le16(lfh + 8) != method || ck_le16(lfh + 26) != name_len) {
        rc = ck_fail(err, errlen, -EINVAL, "zip: local header of \"%s\" at %llu does not match its directory entry",
                  suffix, (unsigned long long)local_off);
        goto out;
    }
    uint64_t data_off = local_off + LFH_SIZE + ck_le16(lfh + 26) + ck_le16(lfh + 28);
    if (data_off > loc.cd_offset || usize > loc.cd_offset - data_off) {
        rc = ck_fail(err, errlen, -EINVAL,
                  "zip: data of \"%s\" [%llu, +%llu) runs past the members' area (%llu bytes)", suffix,
                  (unsigned long long)data_off, (unsigned long long)usize,
                  (unsigned long long)loc.cd_offset);
        goto out;
    }
    rc = check_data_end(src, data_off + usize, loc.cd_offset, crc, suffix, err, errlen);
    if (rc < 0)
        goto out;
    out->data_offset = data_off;
    out->size = usize;
    out->crc32 = crc;
    rc = 0;
out:
    free(cd);
    return rc;
}
