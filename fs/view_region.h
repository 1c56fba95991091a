/* Views assembled from regions laid end to end (a .pt archive's segments,
 * a safetensors view's tensors, metadata.json's keys): where a read at an
 * offset starts. */
#ifndef CKPTFS_VIEW_REGION_H
#define CKPTFS_VIEW_REGION_H

#include <stddef.h>
#include <stdint.h>

/* Index of the first of the n regions of v (stride bytes apart, in order,
 * each with its uint64_t end offset at end_off) that ends after off: n if
 * none does. */
size_t fs_region_first_after(const void *v, size_t n, size_t stride, size_t end_off, uint64_t off);

#endif
