/* Bump allocator: blocks of at least 64 KiB, each big request its own block. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK (64u * 1024u)

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    unsigned long long seq; /* allocation order, for ck_arena_rewind */
    _Alignas(16) unsigned char data[];
} arena_block;

struct ck_arena {
    arena_block *head;
    unsigned long long nblocks;
};

ck_arena *ck_arena_new(void)
{
    return calloc(1, sizeof(ck_arena));
}

void ck_arena_free(ck_arena *a)
{
    if (!a)
        return;
    arena_block *b = a->head;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void *ck_arena_alloc(ck_arena *a, size_t size)
{
    size_t need = (size + 15u) & ~(size_t)15u;
    if (need < size)
        return NULL;
    arena_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;
        if (cap > SIZE_MAX - sizeof(arena_block))
            return NULL;
        b = malloc(sizeof(arena_block) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->seq = ++a->nblocks;
        /* A big one-off block goes behind the head so the head keeps its
         * free space for the small allocations that follow. */
        if (a->head && need > ARENA_BLOCK) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += need;
    memset(p, 0, size);
    return p;
}

void *ck_arena_calloc(ck_arena *a, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        return NULL;
    return ck_arena_alloc(a, total ? total : 1);
}

char *ck_arena_strndup(ck_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *p = ck_arena_alloc(a, n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *ck_arena_strdup(ck_arena *a, const char *s)
{
    return ck_arena_strndup(a, s, strlen(s));
}

ck_arena_pos ck_arena_tell(const ck_arena *a)
{
    ck_arena_pos pos = { a->head, a->head ? a->head->used : 0, a->head ? a->head->seq : 0 };
    return pos;
}

/* Blocks newer than pos.block sit before it in the list, except big ones,
 * which go right behind the head: those newer than pos.block follow it
 * directly, ahead of every older block. */
void ck_arena_rewind(ck_arena *a, ck_arena_pos pos)
{
    arena_block **link = &a->head;
    while (*link) {
        arena_block *b = *link;
        if (b == pos.block) {
            b->used = pos.used;
            link = &b->next;
            continue;
        }
        if (b->seq <= pos.seq)
            break;
        *link = b->next;
        free(b);
    }
}
