/* Reads the torch.save zip archive: members are stored (never compressed),
 * sizes may live only in data descriptors, so members are found through the
 * central directory at the end (ZIP64 records too). */
#ifndef CKPT_ZIP_READER_H
#define CKPT_ZIP_READER_H

#include "byte_source.h"

#define CK_ZIP_MAX_ENTRIES 65536

typedef struct {
    uint64_t data_offset; /* offset of the member's bytes within the source */
    uint64_t size;        /* member length (stored: compressed == uncompressed) */
    uint32_t crc32;       /* from the central directory */
} ck_zip_member;

/* Finds the member whose name ends with suffix (e.g. "/data.pkl", "/data/0";
 * the prefix before the first '/' varies).  Returns 0, -ENOENT if absent,
 * -EINVAL for a malformed archive (err says what), -EIO for read failures.
 * A compressed member is -ENOTSUP. */
int ck_zip_find(const ck_byte_source *src, const char *suffix, ck_zip_member *out,
                char *err, size_t errlen);

#endif
