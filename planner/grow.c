/* Array growth (see grow.h). */
#include "grow.h"

#include <stdint.h>
#include <stdlib.h>

void *ck_grow(void *v, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return v;
    size_t c = *cap ? *cap : first;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return NULL;
        c *= 2;
    }
    size_t bytes;
    if (__builtin_mul_overflow(c, elem, &bytes))
        return NULL;
    void *nv = realloc(v, bytes);
    if (nv)
        *cap = c;
    return nv;
}
