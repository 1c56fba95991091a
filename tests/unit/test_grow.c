/* ck_grow: the first capacity, doubling until need fits, no realloc when
 * there is room, and refusals (sizes that overflow) that leave the array
 * and its capacity as they were. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "grow.h"

int main(void)
{
    size_t cap = 0;
    int *v = ck_grow(NULL, &cap, 1, sizeof *v, 4);
    CHECK(v != NULL);
    CHECK_EQ_INT(cap, 4);
    for (int i = 0; v && i < 4; i++)
        v[i] = i;
    CHECK(ck_grow(v, &cap, 4, sizeof *v, 4) == v); /* room already */
    CHECK_EQ_INT(cap, 4);
    int *w = ck_grow(v, &cap, 9, sizeof *v, 4);    /* 4 -> 8 -> 16 */
    CHECK(w != NULL);
    CHECK_EQ_INT(cap, 16);
    if (w)
        v = w;
    CHECK(v[0] == 0 && v[3] == 3);
    CHECK(ck_grow(v, &cap, SIZE_MAX, sizeof *v, 4) == NULL);
    CHECK(ck_grow(v, &cap, SIZE_MAX / 2, sizeof *v, 4) == NULL); /* bytes overflow */
    CHECK_EQ_INT(cap, 16);
    CHECK(v[3] == 3);
    free(v);
    return check_done();
}
