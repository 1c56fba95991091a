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
    ck_dtype as;         /* the dtype stored in the view (-o dtype=) */
    uint64_t begin, end; /* bytes of the view file (header included) */
} fs_st_entry;

/* A tensor to place in a safetensors view under a name. */
typedef struct {
    const char *name;
    const ck_key *key;
} fs_st_member;

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
int fs_st_view_build(const fs_node *dir, ck_dtype view_dtype, fs_st_view *out);
/* The view of an explicit list: members sorted by name (strcmp), none with
 * a skip reason; skipped_json, if not NULL, is stored as
 * __metadata__["ckptfs.skipped"].  view_dtype: the mount's -o dtype=. */
int fs_st_view_build_members(const fs_st_member *members, size_t n, ck_dtype view_dtype,
                             const char *skipped_json, fs_st_view *out);
/* Why k cannot be in a safetensors file once converted for view_dtype
 * (the text is in buf, or a constant), or NULL if it can. */
const char *fs_st_skip_reason(const ck_key *k, ck_dtype view_dtype, char *buf, size_t cap);
/* At least the header bytes one member adds to a view, padding excluded:
 * for planning shards that must stay under a size. */
uint64_t fs_st_member_header_bound(const fs_st_member *m, ck_dtype view_dtype);
/* At least the header bytes of a view with no members and this skipped
 * list, the 8-byte length and padding included. */
uint64_t fs_st_base_header_bound(const char *skipped_json);
void fs_st_view_clear(fs_st_view *v);
int fs_st_view_read(ck_checkpoint *ck, const fs_st_view *v, uint64_t off,
                    void *dst, size_t len, size_t *got);

#endif
