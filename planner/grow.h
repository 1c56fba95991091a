/* Growing an array by doubling: the size arithmetic, checked, in one place. */
#ifndef CKPT_GROW_H
#define CKPT_GROW_H

#include <stddef.h>

/* v (an array of *cap elements of elem bytes) with room for need >= 1 of
 * them: v itself when it has it, else v reallocated to first elements or
 * the smallest doubling of *cap that holds need, and *cap updated.  NULL
 * when out of memory or the size overflows; v is then unchanged and still
 * the caller's. */
void *ck_grow(void *v, size_t *cap, size_t need, size_t elem, size_t first);

#endif
