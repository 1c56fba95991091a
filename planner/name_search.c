/* Binary search by name (see name_search.h). */
#include "name_search.h"

#include <string.h>

static const char *name_at(const void *v, size_t i, size_t stride, size_t name_off)
{
    const char *s;
    /* memcpy: the member may be char * or const char * */
    memcpy(&s, (const char *)v + i * stride + name_off, sizeof s);
    return s;
}

size_t ck_name_lower_bound(const void *v, size_t n, size_t stride, size_t name_off,
                           const char *name)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(name_at(v, mid, stride, name_off), name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

const void *ck_name_find(const void *v, size_t n, size_t stride, size_t name_off,
                         const char *name)
{
    size_t i = ck_name_lower_bound(v, n, stride, name_off, name);
    if (i == n || strcmp(name_at(v, i, stride, name_off), name) != 0)
        return NULL;
    return (const char *)v + i * stride;
}
