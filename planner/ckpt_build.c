/* The builders' helpers (ckpt_build.h): the path -> file table and the
 * key order every source model shares.  Kept apart from ckpt.c so that
 * dependencies go one way: ckpt.c calls the builders (dcp_metadata.c,
 * st_source.c), and they call only this. */
#include "ckpt_build.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "name_search.h"
#include "geometry.h"
#include "hash.h"

/* ---- path -> file index while building (open addressing on FNV-1a) ---- */

typedef struct {
    size_t cap;      /* power of two */
    uint32_t *slots; /* file index + 1, 0 = empty */
    size_t files_cap;
} file_index;

static uint64_t fnv1a(const char *s)
{
    return ck_fnv1a_str(s);
}

static int file_index_grow(ck_checkpoint *ck, file_index *fi)
{
    size_t cap = fi->cap ? fi->cap * 2 : 64;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < ck->nfiles; i++) {
        size_t s = fnv1a(ck->files[i].path) & (cap - 1);
        while (slots[s])
            s = (s + 1) & (cap - 1);
        slots[s] = (uint32_t)i + 1;
    }
    free(fi->slots);
    fi->slots = slots;
    fi->cap = cap;
    return 0;
}

static int relpath_is_safe(const char *p)
{
    if (!*p || *p == '/')
        return 0;
    /* every component must be a plain name */
    const char *c = p;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += n;
        if (*c == '/')
            c++;
    }
    return 1;
}

void ck_forget_files(ck_checkpoint *ck)
{
    file_index *fi = ck->file_index;
    if (fi) {
        free(fi->slots);
        free(fi);
        ck->file_index = NULL;
    }
    free(ck->files);
    ck->files = NULL;
    ck->nfiles = 0;
}

int ck_add_file(ck_checkpoint *ck, const char *relpath, uint32_t *index)
{
    if (!relpath_is_safe(relpath) || strlen(relpath) >= PATH_MAX)
        return -EINVAL;
    file_index *fi = ck->file_index;
    if (!fi) {
        fi = calloc(1, sizeof *fi);
        if (!fi)
            return -ENOMEM;
        ck->file_index = fi;
    }
    if ((ck->nfiles + 1) * 2 > fi->cap) {
        int rc = file_index_grow(ck, fi);
        if (rc)
            return rc;
    }
    size_t s = fnv1a(relpath) & (fi->cap - 1);
    while (fi->slots[s]) {
        uint32_t i = fi->slots[s] - 1;
        if (strcmp(ck->files[i].path, relpath) == 0) {
            *index = i;
            return 0;
        }
        s = (s + 1) & (fi->cap - 1);
    }
    if (ck->nfiles >= UINT32_MAX - 1)
        return -E2BIG;
    if (ck->nfiles == fi->files_cap) {
        size_t cap = fi->files_cap ? fi->files_cap * 2 : 16;
        ck_file *files = realloc(ck->files, cap * sizeof *files);
        if (!files)
            return -ENOMEM;
        ck->files = files;
        fi->files_cap = cap;
    }
    char *copy = ck_arena_strdup(ck->arena, relpath);
    if (!copy)
        return -ENOMEM;
    memset(&ck->files[ck->nfiles], 0, sizeof ck->files[ck->nfiles]);
    ck->files[ck->nfiles].path = copy;
    atomic_init(&ck->files[ck->nfiles].fd, -1);
    atomic_init(&ck->files[ck->nfiles].changed, 0);
    atomic_init(&ck->files[ck->nfiles].obj, NULL);
    fi->slots[s] = (uint32_t)ck->nfiles + 1;
    *index = (uint32_t)ck->nfiles++;
    return 0;
}

void ck_build_done(ck_checkpoint *ck)
{
    file_index *fi = ck->file_index;
    if (fi) {
        free(fi->slots);
        free(fi);
        ck->file_index = NULL;
    }
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(((const ck_key *)a)->fqn, ((const ck_key *)b)->fqn);
}

static int key_ptr_cmp(const void *a, const void *b)
{
    return strcmp((*(const ck_key *const *)a)->fqn, (*(const ck_key *const *)b)->fqn);
}

/* Keys often come sorted already (one pass finds out); otherwise pointers
 * are sorted and the keys moved once: a key is over a hundred bytes, and
 * qsort would copy each about log2(n) times. */
void ck_sort_keys(ck_checkpoint *ck)
{
    size_t n = ck->nkeys, i = 1;
    while (i < n && strcmp(ck->keys[i - 1].fqn, ck->keys[i].fqn) <= 0)
        i++;
    if (i >= n)
        return;
    const ck_key **order = malloc(n * sizeof *order);
    ck_key *moved = n <= SIZE_MAX / sizeof *moved ? malloc(n * sizeof *moved) : NULL;
    if (!order || !moved) {
        free(order);
        free(moved);
        qsort(ck->keys, n, sizeof *ck->keys, key_cmp); /* slower, needs no memory */
        return;
    }
    for (i = 0; i < n; i++)
        order[i] = &ck->keys[i];
    qsort(order, n, sizeof *order, key_ptr_cmp);
    for (i = 0; i < n; i++)
        moved[i] = *order[i];
    memcpy(ck->keys, moved, n * sizeof *moved);
    free(moved);
    free(order);
}

int ck_key_compute_size(ck_key *k)
{
    const ck_dtype_info *dt = ck_dtype_get(k->dtype);
    if (!dt)
        return -EINVAL;
    if (ck_shape_numel(k->ndim, k->shape, &k->numel) ||
        __builtin_mul_overflow(k->numel, (uint64_t)dt->size, &k->nbytes))
        return -EOVERFLOW;
    return 0;
}

const ck_key *ck_find_key(const ck_checkpoint *ck, const char *fqn)
{
    return CK_NAME_FIND(ck->keys, ck->nkeys, fqn, fqn);
}

