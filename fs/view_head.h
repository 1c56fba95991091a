/* The start of a view file that is held in memory: the .npy or safetensors
 * header before the tensor bytes read on demand, or the whole text of
 * metadata.json. */
#ifndef CKPTFS_VIEW_HEAD_H
#define CKPTFS_VIEW_HEAD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A read of *len bytes at off in a view of size bytes whose first head_len
 * bytes are head: clips *len to the end of the view (0 at or past it),
 * copies the part of head it covers to dst and returns how many bytes that
 * was; the caller reads the rest, from head_len on. */
static inline size_t fs_view_read_head(const void *head, size_t head_len, uint64_t size,
                                       uint64_t off, void *dst, size_t *len)
{
    if (off >= size) {
        *len = 0;
        return 0;
    }
    if (*len > size - off)
        *len = (size_t)(size - off);
    if (off >= head_len)
        return 0;
    size_t n = head_len - (size_t)off < *len ? head_len - (size_t)off : *len;
    memcpy(dst, (const uint8_t *)head + off, n);
    return n;
}

#endif
