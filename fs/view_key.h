/* What a view remembers of one tensor key.  A view may outlive the
 * checkpoint it was built from (an open file across a commit of an rw
 * mount), so it keeps the key's FQN, dtype and shape and, once stale, finds
 * the same key in the new checkpoint, refusing it if its layout changed. */
#ifndef CKPTFS_VIEW_KEY_H
#define CKPTFS_VIEW_KEY_H

#include <stdbool.h>
#include <stdint.h>
#include "ckpt.h"

typedef struct {
    char *fqn;
    const ck_key *key; /* valid while the view is current */
    ck_dtype dtype;
    uint32_t ndim;
    uint64_t *shape;
    uint64_t nbytes;
} fs_key_ref;

int fs_key_ref_init(fs_key_ref *r, const ck_key *k);
void fs_key_ref_clear(fs_key_ref *r);
/* The key to read now: r->key while current, else the key of the same FQN
 * in ck if it is still a tensor of the same dtype and shape; -ESTALE if not. */
int fs_key_ref_get(const ck_checkpoint *ck, const fs_key_ref *r, bool current,
                   const ck_key **out);

#endif
