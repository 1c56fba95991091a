/* Binary search of arrays kept in strcmp order of a name: keys by FQN,
 * listings, pieces and files by name.  Each element is a struct holding its
 * name as a char pointer at name_off (offsetof), stride bytes apart. */
#ifndef CKPT_NAME_SEARCH_H
#define CKPT_NAME_SEARCH_H

#include <stddef.h>

/* Index of the first of the n elements of v whose name is not below name:
 * n if every name is. */
size_t ck_name_lower_bound(const void *v, size_t n, size_t stride, size_t name_off,
                           const char *name);

/* The element of v named name (the first, if several are), or NULL. */
const void *ck_name_find(const void *v, size_t n, size_t stride, size_t name_off,
                         const char *name);

/* ck_name_find over an array v of structs with a name member `field`, as
 * a pointer of v's type. */
#define CK_NAME_FIND(v, n, field, name)                                                 \
    ((__typeof__(&*(v)))ck_name_find((v), (n), sizeof *(v), offsetof(__typeof__(*(v)), field), \
                                     (name)))

#endif
