/* Remembering a tensor key across a checkpoint replacement (see view_key.h). */
#include "view_key.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int fs_key_ref_init(fs_key_ref *r, const ck_key *k)
{
    memset(r, 0, sizeof *r);
    r->fqn = strdup(k->fqn);
    if (!r->fqn)
        return -ENOMEM;
    if (k->ndim) {
        r->shape = malloc((size_t)k->ndim * sizeof *r->shape);
        if (!r->shape) {
            free(r->fqn);
            r->fqn = NULL;
            return -ENOMEM;
        }
        memcpy(r->shape, k->shape, (size_t)k->ndim * sizeof *r->shape);
    }
    r->key = k;
    r->dtype = k->dtype;
    r->ndim = k->ndim;
    r->nbytes = k->nbytes;
    return 0;
}

void fs_key_ref_clear(fs_key_ref *r)
{
    free(r->fqn);
    free(r->shape);
    memset(r, 0, sizeof *r);
}

int fs_key_ref_get(const ck_checkpoint *ck, const fs_key_ref *r, bool current,
                   const ck_key **out)
{
    if (current) {
        *out = r->key;
        return 0;
    }
    const ck_key *k = ck_find_key(ck, r->fqn);
    if (!k || k->kind != CK_KEY_TENSOR || k->dtype != r->dtype || k->ndim != r->ndim ||
        k->nbytes != r->nbytes ||
        (r->ndim && memcmp(k->shape, r->shape, (size_t)r->ndim * sizeof *r->shape) != 0))
        return -ESTALE;
    *out = k;
    return 0;
}
