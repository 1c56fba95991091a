/* Finding a read's first region (see view_region.h). */
#include "view_region.h"

#include <string.h>

size_t fs_region_first_after(const void *v, size_t n, size_t stride, size_t end_off, uint64_t off)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t end;
        memcpy(&end, (const char *)v + mid * stride + end_off, sizeof end);
        if (end <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}
