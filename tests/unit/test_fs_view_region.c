/* fs_region_first_after: the region a view read starts in, over structs
 * with an end member and over bare arrays of ends; empty regions (an end
 * equal to the one before) are passed over by it, as readers expect. */
#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "view_region.h"

typedef struct {
    uint64_t begin, end;
    int tag;
} region;

int main(void)
{
    region r[] = { { 0, 10, 0 }, { 10, 20, 1 }, { 20, 20, 2 }, { 20, 35, 3 } };
    size_t n = sizeof r / sizeof *r, off = offsetof(region, end);
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 0), 0);
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 9), 0);
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 10), 1);
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 20), 3); /* past the empty one */
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 34), 3);
    CHECK_EQ_INT(fs_region_first_after(r, n, sizeof *r, off, 35), 4);
    CHECK_EQ_INT(fs_region_first_after(r, 0, sizeof *r, off, 0), 0);
    const uint64_t ends[] = { 5, 7, 100 };
    CHECK_EQ_INT(fs_region_first_after(ends, 3, sizeof *ends, 0, 6), 1);
    CHECK_EQ_INT(fs_region_first_after(ends, 3, sizeof *ends, 0, 7), 2);
    return check_done();
}
