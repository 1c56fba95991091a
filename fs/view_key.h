/* What a view remembers of one tensor key of its snapshot: the key, and
 * its FQN, dtype and shape as the view's headers were built from them. */
#ifndef CKPTFS_VIEW_KEY_H
#define CKPTFS_VIEW_KEY_H

#include <stdbool.h>
#include <stdint.h>
#include "ckpt.h"

typedef struct {
    char *fqn;
    const ck_key *key; /* valid while the view's snapshot is pinned */
    ck_dtype dtype;
    uint32_t ndim;
    uint64_t *shape;
    uint64_t nbytes;
} fs_key_ref;

int fs_key_ref_init(fs_key_ref *r, const ck_key *k);
void fs_key_ref_clear(fs_key_ref *r);
/* The key to read.  0. */
int fs_key_ref_get(const fs_key_ref *r, const ck_key **out);

#endif
