/* The one hash of the project: 64-bit FNV-1a, for the hash tables of
 * names (file index, tree paths, page-cache owners, pickle memo) and for
 * change signatures.  Not for anything an adversary could exploit beyond
 * slower lookups: inputs are names from one checkpoint. */
#ifndef CKPT_HASH_H
#define CKPT_HASH_H

#include <stddef.h>
#include <stdint.h>

#define CK_FNV1A_OFFSET 1469598103934665603ull
#define CK_FNV1A_PRIME 1099511628211ull

/* Continues hash h over n bytes at p. */
static inline uint64_t ck_fnv1a_update(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * CK_FNV1A_PRIME;
    return h;
}

static inline uint64_t ck_fnv1a(const void *p, size_t n)
{
    return ck_fnv1a_update(CK_FNV1A_OFFSET, p, n);
}

/* Continues hash h over a NUL-terminated string. */
static inline uint64_t ck_fnv1a_str_update(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * CK_FNV1A_PRIME;
    return h;
}

static inline uint64_t ck_fnv1a_str(const char *s)
{
    return ck_fnv1a_str_update(CK_FNV1A_OFFSET, s);
}

#endif
