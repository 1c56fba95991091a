/* DIR.safetensors: one safetensors file holding every tensor under a tree
 * directory, named by its FQN relative to DIR.  Only the header is built
 * (and kept); each tensor's data region is served on demand through the
 * load planner, so the view of a 100 GB directory costs its header alone. */
#ifndef CKPTFS_VIEW_SAFETENSORS_H
#define CKPTFS_VIEW_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "tree.h"
#include "view_key.h"

typedef struct {
    fs_key_ref ref;
    uint64_t begin, end; /* bytes of the view file (header included) */
} fs_st_entry;

typedef struct {
    uint8_t *header;      /* 8-byte length + JSON padded with spaces */
    size_t header_len;    /* a multiple of 8 */
    fs_st_entry *entries; /* in name order = data order, contiguous */
    size_t nentries;
    uint64_t size;
} fs_st_view;

/* dir: a directory node of the tree (the root for the whole checkpoint).
 * Tensors safetensors cannot hold (bytes keys, dtypes it has no name for,
 * unreadable keys) are left out and listed in __metadata__ under
 * "ckptfs.skipped". */
int fs_st_view_build(const fs_node *dir, fs_st_view *out);
void fs_st_view_clear(fs_st_view *v);
/* current: false once the checkpoint the view was built from was replaced. */
int fs_st_view_read(ck_checkpoint *ck, const fs_st_view *v, bool current, uint64_t off,
                    void *dst, size_t len, size_t *got);

#endif
