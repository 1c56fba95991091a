/* Restricted pickle reader: builds plain values, never calls anything.
 *
 * Protocols 2..5 and the opcodes torch's `.metadata` and `data.pkl` use.
 * Globals (GLOBAL / STACK_GLOBAL) become PK_GLOBAL values naming module and
 * name; REDUCE and NEWOBJ of a global become PK_OBJECT values that record the
 * class, the constructor args and (after BUILD) the state.  Nothing is ever
 * looked up or executed, so a hostile pickle can at worst be refused.
 *
 * All values of one document live in one arena freed by pk_free(); memo
 * sharing therefore needs no reference counts. */
#ifndef CKPT_PICKLE_H
#define CKPT_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    PK_NONE,
    PK_BOOL,
    PK_INT,    /* fits in int64 (LONG1/LONG4 wider than 8 bytes are refused) */
    PK_FLOAT,
    PK_STR,    /* UTF-8 as stored, NUL-terminated copy, len excludes NUL */
    PK_BYTES,  /* also NUL-terminated for convenience */
    PK_TUPLE,
    PK_LIST,
    PK_DICT,   /* insertion order kept */
    PK_GLOBAL, /* module + name */
    PK_OBJECT, /* REDUCE(callable, args) or NEWOBJ(cls, args), maybe BUILD state */
    PK_PERSID, /* BINPERSID / PERSID: the persistent id value */
    PK_OPAQUE, /* never in a pickle: what a pk_hooks callback left in place of items */
} pk_kind;

typedef struct pk_value pk_value;

struct pk_value {
    pk_kind kind;
    union {
        bool b;
        int64_t i;
        double f;
        struct { char *data; size_t len; } str;          /* PK_STR, PK_BYTES */
        struct { pk_value **items; size_t len, cap; } seq; /* PK_TUPLE, PK_LIST */
        struct { pk_value **keys, **vals; size_t len, cap; } dict;
        struct { char *module, *name; } global;
        struct {
            pk_value *callable; /* usually a PK_GLOBAL */
            pk_value *args;     /* PK_TUPLE (may be empty), never NULL */
            pk_value *state;    /* BUILD argument, NULL if none */
            bool newobj;        /* created by NEWOBJ/NEWOBJ_EX, not REDUCE */
            /* extra items/keys appended by APPEND(S)/SETITEM(S) on an object
             * (OrderedDict(), collections.defaultdict...): kept as a list/dict */
            pk_value *items;    /* PK_LIST or NULL */
            pk_value *dictitems;/* PK_DICT or NULL */
        } obj;
        struct { pk_value *pid; } persid;
        struct { void *ptr; } opaque;
    } u;
};

typedef struct pk_doc pk_doc;

/* Limits that bound work and memory for any input. */
#define PK_MAX_DEPTH 256          /* nesting of containers on the stack */
#define PK_MAX_ELEMENTS (1u << 26) /* values created per document */

/* Parses buf[0..len).  On success *out owns every value; returns 0.
 * On failure returns -EINVAL (malformed, truncated, unknown opcode),
 * -E2BIG (a limit) or -ENOMEM, and writes a one-line reason to err. */
int pk_parse(const uint8_t *buf, size_t len, pk_doc **out, char *err, size_t errlen);
const pk_value *pk_root(const pk_doc *doc);

/* Streaming: a caller that turns batches of items into its own structures
 * while parsing, so that the values of a finished batch need not be kept.
 * items() sees each APPENDS onto a list and each SETITEM(S) onto a dict
 * before they are applied: n values (SETITEM(S): key, value, key, value...)
 * read with pk_batch_at.  It returns
 *   PK_HOOK_KEEP   apply them as usual;
 *   PK_HOOK_TAKEN  drop them: they are the caller's now, and the memory of
 *                  the values made since the batch's MARK may be reused at
 *                  once, so it keeps no pointer into them;
 *   PK_HOOK_OPAQUE drop them and append a PK_OPAQUE holding *opaque to the
 *                  list (APPENDS only), as a note of what was there;
 *   < 0            stop parsing with that error (err says so).
 * Values memoized inside a dropped batch and fetched later are copied. */
enum { PK_HOOK_KEEP = 0, PK_HOOK_TAKEN = 1, PK_HOOK_OPAQUE = 2 };
typedef struct pk_batch pk_batch;
const pk_value *pk_batch_at(const pk_batch *b, size_t i);
typedef struct {
    void *ctx;
    int (*items)(void *ctx, const pk_value *target, const pk_batch *b, size_t n, void **opaque);
} pk_hooks;
int pk_parse_hooked(const uint8_t *buf, size_t len, const pk_hooks *hooks, pk_doc **out, char *err,
                    size_t errlen);
void pk_free(pk_doc *doc);

/* Lookups that return NULL when the shape does not match. */
/* A PK_DICT keeps every SETITEM, duplicates included (Python would keep one
 * key); pk_dict_get returns the value of the last PK_STR key equal to key,
 * the one Python would see. */
const pk_value *pk_dict_get(const pk_value *dict, const char *key);
bool pk_is_global(const pk_value *v, const char *module, const char *name);
/* true if v is a PK_OBJECT whose callable is the global module.name */
bool pk_is_object_of(const pk_value *v, const char *module, const char *name);
/* The state of an object built with a dict state (dataclasses), else NULL. */
const pk_value *pk_object_state_dict(const pk_value *v);
/* A tuple or list's length and items (NULL/0 if v is neither). */
size_t pk_seq_len(const pk_value *v);
const pk_value *pk_seq_at(const pk_value *v, size_t i);
/* Integers: returns 0 and stores it, or -EINVAL if not an int (bools are ints). */
int pk_as_int(const pk_value *v, int64_t *out);
/* A string's bytes, or NULL if not a PK_STR or if it holds a NUL byte (a
 * name with a NUL would be cut short by every C function it reaches). */
const char *pk_as_str(const pk_value *v);
/* Whether s[0..n) is UTF-8 as Python's pickle reads it (surrogatepass):
 * what every PK_STR holds and what the writer insists on. */
bool pk_utf8_valid(const char *s, size_t n);

#endif
