/* name_search: the lower bound and the lookup every sorted-by-name array
 * uses (keys, listings, pieces, files): first of equal names, names absent
 * before, between and after the others, empty arrays, and arrays of bare
 * name pointers. */
#include <stddef.h>
#include <stdint.h>

#include "check.h"
#include "name_search.h"

typedef struct {
    uint64_t pad; /* the name need not be the first member */
    const char *name;
    int tag;
} entry;

int main(void)
{
    entry v[] = { { 0, "a", 0 }, { 0, "b", 1 }, { 0, "b", 2 }, { 0, "d", 3 }, { 0, "da", 4 } };
    size_t n = sizeof v / sizeof *v;
    size_t off = offsetof(entry, name);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, ""), 0);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, "a"), 0);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, "b"), 1);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, "c"), 3);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, "d"), 3);
    CHECK_EQ_INT(ck_name_lower_bound(v, n, sizeof *v, off, "z"), 5);
    CHECK_EQ_INT(ck_name_lower_bound(v, 0, sizeof *v, off, "a"), 0);

    const entry *e = CK_NAME_FIND(v, n, name, "b");
    CHECK(e && e->tag == 1); /* the first of two */
    e = CK_NAME_FIND(v, n, name, "da");
    CHECK(e && e->tag == 4);
    CHECK(CK_NAME_FIND(v, n, name, "c") == NULL);
    CHECK(CK_NAME_FIND(v, n, name, "dab") == NULL);
    CHECK(CK_NAME_FIND(v, n, name, "") == NULL);
    CHECK(CK_NAME_FIND(v, 0, name, "a") == NULL);

    const char *bare[] = { "x/1", "x/2", "y" };
    CHECK(ck_name_find(bare, 3, sizeof *bare, 0, "x/2") == &bare[1]);
    CHECK(ck_name_find(bare, 3, sizeof *bare, 0, "x") == NULL);
    return check_done();
}
