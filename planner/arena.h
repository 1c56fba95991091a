/* A bump allocator for data that lives as long as one checkpoint model
 * (key names, shapes, chunk arrays): one free() for all of it. */
#ifndef CKPT_ARENA_H
#define CKPT_ARENA_H

#include <stddef.h>

typedef struct ck_arena ck_arena;

ck_arena *ck_arena_new(void);
void ck_arena_free(ck_arena *a);
/* Zeroed, 16-byte aligned; NULL on overflow or out of memory. */
void *ck_arena_alloc(ck_arena *a, size_t size);
/* n * size with overflow check. */
void *ck_arena_calloc(ck_arena *a, size_t n, size_t size);
char *ck_arena_strdup(ck_arena *a, const char *s);
char *ck_arena_strndup(ck_arena *a, const char *s, size_t n);

/* A position to come back to: ck_arena_rewind frees everything allocated
 * after ck_arena_tell returned it (the pickle reader drops the values of a
 * finished SETITEMS batch that way). */
typedef struct {
    void *block;
    size_t used;
    unsigned long long seq;
} ck_arena_pos;
ck_arena_pos ck_arena_tell(const ck_arena *a);
void ck_arena_rewind(ck_arena *a, ck_arena_pos pos);

#endif
