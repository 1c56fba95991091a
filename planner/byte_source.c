#include "byte_source.h"
#include "fd_io.h"

#include "storage.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

ck_byte_source ck_byte_source_fd(int fd, uint64_t base, uint64_t len)
{
    ck_byte_source s = { .fd = fd, .base = base, .mem = NULL, .len = len, .obj = NULL };
    return s;
}

ck_byte_source ck_byte_source_mem(const void *mem, uint64_t len)
{
    ck_byte_source s = { .fd = -1, .base = 0, .mem = mem, .len = len, .obj = NULL };
    return s;
}

ck_byte_source ck_byte_source_object(struct ck_object *obj, uint64_t base, uint64_t len)
{
    ck_byte_source s = { .fd = ck_object_fd(obj), .base = base, .mem = NULL, .len = len,
                         .obj = obj };
    return s;
}

int ck_byte_source_read(const ck_byte_source *src, uint64_t off, void *buf, size_t n)
{
    if (off > src->len || n > src->len - off)
        return -EIO;
    if (n == 0)
        return 0;
    if (src->fd < 0 && src->obj) {
        uint64_t pos;
        if (__builtin_add_overflow(src->base, off, &pos))
            return -EIO;
        return ck_object_read(src->obj, pos, buf, n);
    }
    if (src->fd < 0) {
        if (!src->mem)
            return -EIO;
        memcpy(buf, src->mem + off, n);
        return 0;
    }
    uint64_t pos;
    if (__builtin_add_overflow(src->base, off, &pos))
        return -EIO;
    /* -EIO when the file ends before the range its metadata promised */
    return ck_pread_full(src->fd, buf, n, pos);
}
