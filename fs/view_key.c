/* What a view remembers of a tensor key (see view_key.h). */
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

int fs_key_ref_get(const fs_key_ref *r, const ck_key **out)
{
    *out = r->key;
    return 0;
}
