/* A bounded random-access byte source: a range of an open file, of a
 * storage object (storage.h), or memory.
 * Parsers that look inside items (zip, torch.save) read through this so the
 * same code serves a raw shard file and a zstd-decoded buffer. */
#ifndef CKPT_BYTE_SOURCE_H
#define CKPT_BYTE_SOURCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int fd;              /* >= 0: read with pread from fd at base + off */
    uint64_t base;
    const uint8_t *mem;  /* used when fd < 0 */
    uint64_t len;        /* bytes available in this source */
    struct ck_object *obj; /* fd < 0 && obj: read through the storage at base + off */
} ck_byte_source;

ck_byte_source ck_byte_source_fd(int fd, uint64_t base, uint64_t len);
ck_byte_source ck_byte_source_mem(const void *mem, uint64_t len);
/* An object's bytes [base, base + len): its fd when it has one (local files
 * keep reading with pread), else the backend's ranged read. */
ck_byte_source ck_byte_source_object(struct ck_object *obj, uint64_t base, uint64_t len);
/* Reads exactly n bytes at off.  -EIO if the range passes len or the file
 * is shorter than it should be; -errno from pread otherwise. */
int ck_byte_source_read(const ck_byte_source *src, uint64_t off, void *buf, size_t n);

#endif
