/* Restricted unpickler: a stack machine over plain values (see pickle.h).
 *
 * Besides the limits in pickle.h the result is kept safe to walk
 * recursively: a container that has already been placed inside another
 * value may not be modified any more, which is exactly what Python's own
 * pickler guarantees for acyclic data (a value is complete before its parent
 * refers to it) and what rules out self-referencing cycles.  Each value also
 * tracks its height and the number of values a full walk visits (shared
 * values counted every time they are reached), so both nesting and
 * exponential sharing ([x, x] of [x, x] of ...) are refused while parsing. */
#include "pickle.h"

#include "arena.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1', OP_DUP = '2',
    OP_FLOAT = 'F', OP_INT = 'I', OP_BININT = 'J', OP_BININT1 = 'K', OP_LONG = 'L',
    OP_BININT2 = 'M', OP_NONE = 'N', OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R',
    OP_STRING = 'S', OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V',
    OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c', OP_DICT = 'd',
    OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g', OP_BINGET = 'h', OP_INST = 'i',
    OP_LONG_BINGET = 'j', OP_LIST = 'l', OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p',
    OP_BINPUT = 'q', OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83, OP_EXT4 = 0x84,
    OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87, OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C',
    OP_SHORT_BINUNICODE = 0x8c, OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e,
    OP_EMPTY_SET = 0x8f, OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98,
};

#define PK_MAX_PROTOCOL 5

static const char *const op_names[256] = {
    [OP_MARK] = "MARK", [OP_STOP] = "STOP", [OP_POP] = "POP", [OP_POP_MARK] = "POP_MARK",
    [OP_DUP] = "DUP", [OP_FLOAT] = "FLOAT", [OP_INT] = "INT", [OP_BININT] = "BININT",
    [OP_BININT1] = "BININT1", [OP_LONG] = "LONG", [OP_BININT2] = "BININT2",
    [OP_NONE] = "NONE", [OP_PERSID] = "PERSID", [OP_BINPERSID] = "BINPERSID",
    [OP_REDUCE] = "REDUCE", [OP_STRING] = "STRING", [OP_BINSTRING] = "BINSTRING",
    [OP_SHORT_BINSTRING] = "SHORT_BINSTRING", [OP_UNICODE] = "UNICODE",
    [OP_BINUNICODE] = "BINUNICODE", [OP_APPEND] = "APPEND", [OP_BUILD] = "BUILD",
    [OP_GLOBAL] = "GLOBAL", [OP_DICT] = "DICT", [OP_EMPTY_DICT] = "EMPTY_DICT",
    [OP_APPENDS] = "APPENDS", [OP_GET] = "GET", [OP_BINGET] = "BINGET", [OP_INST] = "INST",
    [OP_LONG_BINGET] = "LONG_BINGET", [OP_LIST] = "LIST", [OP_EMPTY_LIST] = "EMPTY_LIST",
    [OP_OBJ] = "OBJ", [OP_PUT] = "PUT", [OP_BINPUT] = "BINPUT",
    [OP_LONG_BINPUT] = "LONG_BINPUT", [OP_SETITEM] = "SETITEM", [OP_TUPLE] = "TUPLE",
    [OP_EMPTY_TUPLE] = "EMPTY_TUPLE", [OP_SETITEMS] = "SETITEMS", [OP_BINFLOAT] = "BINFLOAT",
    [OP_PROTO] = "PROTO", [OP_NEWOBJ] = "NEWOBJ", [OP_EXT1] = "EXT1", [OP_EXT2] = "EXT2",
    [OP_EXT4] = "EXT4", [OP_TUPLE1] = "TUPLE1", [OP_TUPLE2] = "TUPLE2",
    [OP_TUPLE3] = "TUPLE3", [OP_NEWTRUE] = "NEWTRUE", [OP_NEWFALSE] = "NEWFALSE",
    [OP_LONG1] = "LONG1", [OP_LONG4] = "LONG4", [OP_BINBYTES] = "BINBYTES",
    [OP_SHORT_BINBYTES] = "SHORT_BINBYTES", [OP_SHORT_BINUNICODE] = "SHORT_BINUNICODE",
    [OP_BINUNICODE8] = "BINUNICODE8", [OP_BINBYTES8] = "BINBYTES8",
    [OP_EMPTY_SET] = "EMPTY_SET", [OP_ADDITEMS] = "ADDITEMS", [OP_FROZENSET] = "FROZENSET",
    [OP_NEWOBJ_EX] = "NEWOBJ_EX", [OP_STACK_GLOBAL] = "STACK_GLOBAL",
    [OP_MEMOIZE] = "MEMOIZE", [OP_FRAME] = "FRAME", [OP_BYTEARRAY8] = "BYTEARRAY8",
    [OP_NEXT_BUFFER] = "NEXT_BUFFER", [OP_READONLY_BUFFER] = "READONLY_BUFFER",
};

/* All values of a document live in one ck_arena (arena.h): they are
 * freed together by pk_free, so memo sharing needs no reference counts. */

/* ---- values ----------------------------------------------------------- */

#define SMALL_INTS 1024

enum {
    NODE_ADOPTED = 1, /* referenced by another value: frozen from now on */
    NODE_SET = 2,     /* a PK_LIST standing for a set / frozenset */
    NODE_FROZEN = 4,  /* frozenset: never modified */
};

/* Every value is allocated as a node; pk_value comes first so a value
 * pointer handed out converts back. */
typedef struct {
    pk_value v;
    /* Small fields keep a node at 64 bytes: a 100,000-key .metadata holds
     * millions of values.  height <= PK_MAX_DEPTH and weight never passes
     * 2 * PK_MAX_ELEMENTS, as both are refused as soon as they exceed. */
    uint16_t height; /* longest path down to a leaf */
    uint16_t flags;
    uint32_t weight; /* values a full recursive walk visits */
} node;

struct pk_doc {
    ck_arena *a;
    ck_arena *perm; /* never rewound: shared small values, memo copies */
    node *root;
};


typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    size_t op_pos; /* offset of the opcode being run, for messages */
    uint8_t op;
    ck_arena *a;
    node **stack;
    size_t sp, stack_cap;
    size_t marks[PK_MAX_DEPTH];
    size_t nmarks;
    /* Streaming (pk_hooks): per open MARK, where the arena stood, where the
     * log of memo stores stood, and whether a value older than the MARK may
     * have been made to point at newer ones (then its memory stays). */
    const pk_hooks *hooks;
    ck_arena *perm;
    ck_arena_pos mark_pos[PK_MAX_DEPTH];
    size_t mark_log[PK_MAX_DEPTH];
    bool mark_pinned[PK_MAX_DEPTH];
    size_t *putlog;          /* memo slots stored while a MARK is open */
    size_t putlog_len, putlog_cap;
    uint64_t copy_budget;    /* values memo copies may still take */
    /* memo key -> value, only for keys some GET fetches (a prepass over
     * the opcodes finds them, see memo_scan): Python's pickler memoizes
     * nearly every value, and a dense array of all of them was 8 bytes per
     * value of a million-chunk .metadata.  memo[rank of key among the
     * needed keys]; NULL where not stored yet. */
    node **memo;
    uint64_t *needed;        /* bit per key: fetched by some GET */
    uint32_t *needed_rank;   /* per 64-bit word of needed: needed keys before it */
    size_t needed_words;
    uint64_t *assigned;      /* bit per key: PUT so far (len(memo) counts these) */
    size_t assigned_words;
    node *small_ints[SMALL_INTS];
    node *bools[2];
    size_t memo_len;         /* distinct keys PUT: the key MEMOIZE uses */
    uint64_t nvalues;
    char *err;
    size_t errlen;
} parser;

static const char *opname(uint8_t op)
{
    return op_names[op] ? op_names[op] : "opcode";
}

__attribute__((format(printf, 2, 3)))
static void fail_msg(parser *p, const char *fmt, ...)
{
    if (p->err && p->errlen) {
        char what[200];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        snprintf(p->err, p->errlen, "pickle: %s at offset %zu", what, p->op_pos);
    }
}

/* A macro so that the compiler sees each failure return its (nonzero) rc:
 * outputs set only on success are then not "maybe uninitialized". */
#define fail(p, rc, ...) (fail_msg((p), __VA_ARGS__), (rc))

static int oom(parser *p)
{
    return fail(p, -ENOMEM, "out of memory in %s", opname(p->op));
}

static int new_node_in(parser *p, ck_arena *a, pk_kind kind, node **out)
{
    if (p->nvalues >= PK_MAX_ELEMENTS)
        return fail(p, -E2BIG, "more than %u values", (unsigned)PK_MAX_ELEMENTS);
    node *n = ck_arena_alloc(a, sizeof *n);
    if (!n)
        return oom(p);
    n->v.kind = kind;
    n->weight = 1;
    p->nvalues++;
    *out = n;
    return 0;
}

static int new_node(parser *p, pk_kind kind, node **out)
{
    return new_node_in(p, p->a, kind, out);
}

static node *as_node(pk_value *v)
{
    return (node *)v;
}

/* Records that parent now refers to child.  The child becomes unmodifiable,
 * so everything below it was complete before parent got it: the only cycle
 * left to refuse is a value placed inside itself. */
static int adopt(parser *p, node *parent, node *child)
{
    if (child == parent)
        return fail(p, -EINVAL, "%s puts a value inside itself (cyclic pickle)", opname(p->op));
    if (child->height >= PK_MAX_DEPTH)
        return fail(p, -E2BIG, "nesting deeper than %d", PK_MAX_DEPTH);
    if (child->height + 1 > parent->height)
        parent->height = (uint16_t)(child->height + 1);
    parent->weight += child->weight;
    if (parent->weight > PK_MAX_ELEMENTS)
        return fail(p, -E2BIG, "more than %u values when shared values are counted each time",
                    (unsigned)PK_MAX_ELEMENTS);
    child->flags |= NODE_ADOPTED;
    return 0;
}

static int check_mutable(parser *p, const node *target)
{
    if (target->flags & NODE_FROZEN)
        return fail(p, -EINVAL, "%s on a frozenset", opname(p->op));
    if (target->flags & NODE_ADOPTED)
        return fail(p, -EINVAL, "%s modifies a value already used elsewhere (cyclic pickle)",
                    opname(p->op));
    return 0;
}

/* Moves an arena array of len value pointers to a new block of ncap.  The
 * old block is simply left behind: doubling keeps the waste below 2x. */
static int regrow(parser *p, pk_value ***arr, size_t len, size_t ncap)
{
    size_t bytes;
    if (__builtin_mul_overflow(ncap, sizeof(pk_value *), &bytes))
        return oom(p);
    pk_value **n = ck_arena_alloc(p->a, bytes);
    if (!n)
        return oom(p);
    if (len)
        memcpy(n, *arr, len * sizeof *n);
    *arr = n;
    return 0;
}

/* No container outgrows PK_MAX_ELEMENTS items (adopt() counts them), so
 * doubling cannot overflow. */
static size_t grown_cap(size_t cap)
{
    return cap ? cap * 2 : 4;
}

static int seq_push(parser *p, node *seq, node *item)
{
    pk_value *v = &seq->v;
    if (v->u.seq.len == v->u.seq.cap) {
        size_t ncap = grown_cap(v->u.seq.cap);
        int rc = regrow(p, &v->u.seq.items, v->u.seq.len, ncap);
        if (rc)
            return rc;
        v->u.seq.cap = ncap;
    }
    v->u.seq.items[v->u.seq.len++] = &item->v;
    return adopt(p, seq, item);
}

static int dict_put(parser *p, node *dict, node *key, node *val)
{
    pk_value *v = &dict->v;
    int rc;
    if (v->u.dict.len == v->u.dict.cap) {
        size_t ncap = grown_cap(v->u.dict.cap);
        if ((rc = regrow(p, &v->u.dict.keys, v->u.dict.len, ncap)) ||
            (rc = regrow(p, &v->u.dict.vals, v->u.dict.len, ncap)))
            return rc;
        v->u.dict.cap = ncap;
    }
    v->u.dict.keys[v->u.dict.len] = &key->v;
    v->u.dict.vals[v->u.dict.len] = &val->v;
    v->u.dict.len++;
    if ((rc = adopt(p, dict, key)))
        return rc;
    return adopt(p, dict, val);
}

/* A tuple (or list) holding items[0..n), e.g. the stack above a MARK. */
static int make_seq(parser *p, pk_kind kind, node *const *items, size_t n, node **out)
{
    node *t;
    int rc = new_node(p, kind, &t);
    if (rc)
        return rc;
    if (n) {
        size_t bytes;
        if (__builtin_mul_overflow(n, sizeof(pk_value *), &bytes))
            return oom(p);
        t->v.u.seq.items = ck_arena_alloc(p->a, bytes);
        if (!t->v.u.seq.items)
            return oom(p);
        t->v.u.seq.cap = n;
        for (size_t i = 0; i < n; i++) {
            t->v.u.seq.items[i] = (pk_value *)&items[i]->v;
            if ((rc = adopt(p, t, items[i])))
                return rc;
        }
        t->v.u.seq.len = n;
    }
    *out = t;
    return 0;
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Python decodes pickle strings as UTF-8 with "surrogatepass", so encoded
 * surrogates (ED A0..BF xx) are accepted; overlong forms are not. */
bool pk_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t extra;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            extra = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0)
                lo = 0xA0;
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (extra > n - i - 1)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= extra; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += extra + 1;
    }
    return true;
}

static size_t utf8_put(uint8_t *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ---- input ------------------------------------------------------------ */

static int take(parser *p, size_t n, const uint8_t **out)
{
    if (n > p->len - p->pos)
        return fail(p, -EINVAL, "truncated %s (needs %zu bytes, %zu left)", opname(p->op), n,
                    p->len - p->pos);
    *out = p->buf + p->pos;
    p->pos += n;
    return 0;
}

static uint64_t le(const uint8_t *b, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = (v << 8) | b[i];
    return v;
}

static int take_le(parser *p, size_t n, uint64_t *out)
{
    const uint8_t *b;
    int rc = take(p, n, &b);
    if (!rc)
        *out = le(b, n);
    return rc;
}

/* A text argument up to (not including) the next newline. */
static int take_line(parser *p, const uint8_t **s, size_t *n)
{
    const uint8_t *start = p->buf + p->pos;
    const uint8_t *nl = memchr(start, '\n', p->len - p->pos);
    if (!nl)
        return fail(p, -EINVAL, "truncated %s (no newline)", opname(p->op));
    *s = start;
    *n = (size_t)(nl - start);
    p->pos += *n + 1;
    return 0;
}

static int parse_decimal(parser *p, const uint8_t *s, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i == n)
        return fail(p, -EINVAL, "bad number in %s", opname(p->op));
    uint64_t mag = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return fail(p, -EINVAL, "bad number in %s", opname(p->op));
        if (__builtin_mul_overflow(mag, 10, &mag) ||
            __builtin_add_overflow(mag, (uint64_t)(s[i] - '0'), &mag))
            return fail(p, -EINVAL, "integer wider than 64 bits in %s", opname(p->op));
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return fail(p, -EINVAL, "integer wider than 64 bits in %s", opname(p->op));
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return fail(p, -EINVAL, "integer wider than 64 bits in %s", opname(p->op));
        *out = (int64_t)mag;
    }
    return 0;
}

static int parse_index(parser *p, const uint8_t *s, size_t n, uint32_t *out)
{
    int64_t v;
    int rc = parse_decimal(p, s, n, &v);
    if (rc)
        return rc;
    if (v < 0 || v > UINT32_MAX)
        return fail(p, -EINVAL, "memo index %lld out of range", (long long)v);
    *out = (uint32_t)v;
    return 0;
}

/* ---- stack ------------------------------------------------------------ */

static size_t fence(const parser *p)
{
    return p->nmarks ? p->marks[p->nmarks - 1] : 0;
}

static int push(parser *p, node *n)
{
    if (p->sp == p->stack_cap) {
        if (p->stack_cap >= PK_MAX_ELEMENTS)
            return fail(p, -E2BIG, "more than %u values on the stack", (unsigned)PK_MAX_ELEMENTS);
        size_t ncap = p->stack_cap ? p->stack_cap * 2 : 64;
        node **ns = realloc(p->stack, ncap * sizeof *ns);
        if (!ns)
            return oom(p);
        p->stack = ns;
        p->stack_cap = ncap;
    }
    p->stack[p->sp++] = n;
    return 0;
}

static int underflow(parser *p)
{
    return fail(p, -EINVAL, "stack underflow in %s", opname(p->op));
}

static int pop(parser *p, node **out)
{
    if (p->sp <= fence(p))
        return underflow(p);
    *out = p->stack[--p->sp];
    return 0;
}

static int top(parser *p, node **out)
{
    if (p->sp <= fence(p))
        return underflow(p);
    *out = p->stack[p->sp - 1];
    return 0;
}

/* Removes the innermost MARK; the values above it are stack[*mark..sp). */
static int pop_mark(parser *p, size_t *mark)
{
    if (p->nmarks == 0)
        return fail(p, -EINVAL, "%s without MARK", opname(p->op));
    *mark = p->marks[--p->nmarks];
    return 0;
}

/* For APPENDS/SETITEMS/ADDITEMS: the value right below the MARK. */
static int pop_mark_target(parser *p, size_t *mark, node **target)
{
    int rc = pop_mark(p, mark);
    if (rc)
        return rc;
    if (*mark <= fence(p))
        return underflow(p);
    *target = p->stack[*mark - 1];
    return 0;
}

/* ---- memo ------------------------------------------------------------- */

/* Picklers number their memo entries 0, 1, 2...  A key far beyond the
 * entries stored so far would make the bitmaps huge and is refused
 * instead. */
#define MEMO_SLACK 65536u

static bool bit_get(const uint64_t *bits, size_t words, uint64_t key)
{
    return key / 64 < words && (bits[key / 64] >> (key % 64) & 1);
}

/* Sets bit key, growing the bitmap; key is bounded by the MEMO_SLACK rule. */
static int bit_set(uint64_t **bits, size_t *words, uint64_t key)
{
    if (key / 64 >= *words) {
        size_t n = *words ? *words : 16;
        while (n <= key / 64)
            n *= 2;
        uint64_t *nb = realloc(*bits, n * sizeof *nb);
        if (!nb)
            return -ENOMEM;
        memset(nb + *words, 0, (n - *words) * sizeof *nb);
        *bits = nb;
        *words = n;
    }
    (*bits)[key / 64] |= 1ull << (key % 64);
    return 0;
}

static bool memo_key_ok(uint64_t key, size_t len)
{
    return key <= 2 * (uint64_t)len + MEMO_SLACK;
}

/* Skips one line argument; false if there is no newline. */
static bool scan_line(const uint8_t *buf, size_t len, size_t *pos)
{
    const uint8_t *nl = memchr(buf + *pos, '\n', len - *pos);
    if (!nl)
        return false;
    *pos = (size_t)(nl - buf) + 1;
    return true;
}

static bool scan_key(const uint8_t *buf, size_t len, size_t *pos, size_t n, uint64_t *key)
{
    if (n > len - *pos)
        return false;
    *key = le(buf + *pos, n);
    *pos += n;
    return true;
}

/* The prepass: which memo keys some GET fetches.  It walks the opcodes as
 * step() consumes them, stopping where the input stops making sense (the
 * real pass refuses it there, so what follows does not matter). */
static int memo_scan(parser *p)
{
    const uint8_t *buf = p->buf;
    size_t len = p->len, pos = 0, distinct = 0;
    uint64_t *put = NULL;
    size_t put_words = 0;
    int rc = 0;
    while (pos < len && !rc) {
        uint8_t op = buf[pos++];
        uint64_t key = 0, n;
        size_t at;
        bool get = false, set = false;
        switch (op) {
        case OP_STOP:
            pos = len;
            continue;
        case OP_PROTO: case OP_BININT1: case OP_EXT1:
            pos += 1; break;
        case OP_BININT2: case OP_EXT2:
            pos += 2; break;
        case OP_BININT: case OP_EXT4:
            pos += 4; break;
        case OP_BINFLOAT: case OP_FRAME:
            pos += 8; break;
        case OP_BINGET: case OP_LONG_BINGET:
            get = scan_key(buf, len, &pos, op == OP_BINGET ? 1 : 4, &key);
            if (!get)
                pos = len;
            break;
        case OP_BINPUT: case OP_LONG_BINPUT:
            set = scan_key(buf, len, &pos, op == OP_BINPUT ? 1 : 4, &key);
            if (!set)
                pos = len;
            break;
        case OP_MEMOIZE:
            key = distinct;
            set = true;
            break;
        case OP_GET: case OP_PUT: {
            at = pos;
            int64_t v;
            if (!scan_line(buf, len, &pos) || parse_decimal(p, buf + at, pos - at - 1, &v) || v < 0 ||
                v > UINT32_MAX) {
                pos = len;
                break;
            }
            key = (uint64_t)v;
            get = op == OP_GET;
            set = op == OP_PUT;
            break;
        }
        case OP_INT: case OP_LONG: case OP_FLOAT: case OP_STRING: case OP_UNICODE: case OP_PERSID:
            if (!scan_line(buf, len, &pos))
                pos = len;
            break;
        case OP_GLOBAL: case OP_INST:
            if (!scan_line(buf, len, &pos) || !scan_line(buf, len, &pos))
                pos = len;
            break;
        case OP_LONG1: case OP_SHORT_BINUNICODE: case OP_SHORT_BINSTRING: case OP_SHORT_BINBYTES:
        case OP_LONG4: case OP_BINUNICODE: case OP_BINSTRING: case OP_BINBYTES:
        case OP_BINUNICODE8: case OP_BINBYTES8: case OP_BYTEARRAY8: {
            size_t lb = op == OP_LONG1 || op == OP_SHORT_BINUNICODE || op == OP_SHORT_BINSTRING ||
                                op == OP_SHORT_BINBYTES ? 1
                        : op == OP_BINUNICODE8 || op == OP_BINBYTES8 || op == OP_BYTEARRAY8 ? 8 : 4;
            if (!scan_key(buf, len, &pos, lb, &n) || n > len - pos)
                pos = len;
            else
                pos += (size_t)n;
            break;
        }
        default:
            if (!op_names[op])
                pos = len; /* unknown: the real pass stops here */
            break;
        }
        if (pos > len)
            pos = len;
        if (get && memo_key_ok(key, distinct))
            rc = bit_set(&p->needed, &p->needed_words, key);
        if (set && memo_key_ok(key, distinct) && !bit_get(put, put_words, key)) {
            rc = bit_set(&put, &put_words, key);
            distinct++;
        }
    }
    free(put);
    if (p->err && p->errlen)
        p->err[0] = '\0'; /* parse_decimal's complaints belong to the real pass */
    if (rc)
        return oom(p);
    size_t nwords = p->needed_words ? p->needed_words : 1;
    p->needed_rank = calloc(nwords, sizeof *p->needed_rank);
    if (!p->needed_rank)
        return oom(p);
    uint64_t total = 0;
    for (size_t w = 0; w < p->needed_words; w++) {
        p->needed_rank[w] = (uint32_t)total;
        total += (uint64_t)__builtin_popcountll(p->needed[w]);
    }
    /* keys are below 2^32 and each is one bit: total fits */
    p->memo = calloc(total ? total : 1, sizeof *p->memo);
    return p->memo ? 0 : oom(p);
}

static size_t memo_slot(const parser *p, uint32_t key)
{
    uint64_t word = p->needed[key / 64] & ((1ull << (key % 64)) - 1);
    return p->needed_rank[key / 64] + (size_t)__builtin_popcountll(word);
}

static int memo_put(parser *p, uint32_t key, node *val)
{
    if (!memo_key_ok(key, p->memo_len))
        return fail(p, -EINVAL, "memo index %u far beyond the %zu entries stored", key,
                    p->memo_len);
    if (!bit_get(p->assigned, p->assigned_words, key)) {
        if (bit_set(&p->assigned, &p->assigned_words, key))
            return oom(p);
        p->memo_len++;
    }
    /* Python's memo is a dict: a second PUT replaces */
    if (bit_get(p->needed, p->needed_words, key)) {
        size_t slot = memo_slot(p, key);
        p->memo[slot] = val;
        /* a batch given back must first copy what the memo holds of it */
        if (p->hooks && p->nmarks) {
            if (p->putlog_len == p->putlog_cap) {
                size_t ncap = p->putlog_cap ? p->putlog_cap * 2 : 64;
                size_t *nl = ncap > SIZE_MAX / sizeof *nl ? NULL : realloc(p->putlog, ncap * sizeof *nl);
                if (!nl)
                    return oom(p);
                p->putlog = nl;
                p->putlog_cap = ncap;
            }
            p->putlog[p->putlog_len++] = slot;
        }
    }
    return 0;
}

static int memo_get(parser *p, uint32_t key)
{
    node *n = bit_get(p->needed, p->needed_words, key) ? p->memo[memo_slot(p, key)] : NULL;
    if (!n)
        return fail(p, -EINVAL, "%s of memo index %u that was never stored", opname(p->op), key);
    /* A container that can still change, fetched while batches are open,
     * may come from before their MARKs and be made to point into them:
     * their memory then stays. */
    if (p->hooks && !(n->flags & (NODE_ADOPTED | NODE_FROZEN)) &&
        (n->v.kind == PK_LIST || n->v.kind == PK_DICT || n->v.kind == PK_OBJECT))
        for (size_t i = 0; i < p->nmarks; i++)
            p->mark_pinned[i] = true;
    return push(p, n);
}

static int memo_put_top(parser *p, uint32_t key)
{
    node *t;
    int rc = top(p, &t);
    return rc ? rc : memo_put(p, key, t);
}

/* ---- leaf values ------------------------------------------------------ */

/* Small ints are shared: values are immutable once built, and a DCP
 * .metadata is mostly chunk offsets and sizes, so this saves a node for
 * most ints. */
static int push_int(parser *p, int64_t v)
{
    node *n;
    bool small = v >= 0 && v < SMALL_INTS;
    if (small && p->small_ints[v])
        return push(p, p->small_ints[v]);
    /* shared nodes outlive any batch: never in memory a batch gives back */
    int rc = new_node_in(p, small ? p->perm : p->a, PK_INT, &n);
    if (rc)
        return rc;
    n->v.u.i = v;
    if (small)
        p->small_ints[v] = n;
    return push(p, n);
}

static int push_bool(parser *p, bool b)
{
    node *n = p->bools[b];
    if (n)
        return push(p, n); /* shared like small ints */
    int rc = new_node_in(p, p->perm, PK_BOOL, &n);
    if (rc)
        return rc;
    n->v.u.b = b;
    p->bools[b] = n;
    return push(p, n);
}

static int push_float(parser *p, double f)
{
    node *n;
    int rc = new_node(p, PK_FLOAT, &n);
    if (rc)
        return rc;
    n->v.u.f = f;
    return push(p, n);
}

/* A PK_STR or PK_BYTES copy of s[0..n), NUL-terminated. */
static int make_blob(parser *p, pk_kind kind, const void *s, size_t n, node **out)
{
    if (kind == PK_STR && !pk_utf8_valid(s, n))
        return fail(p, -EINVAL, "invalid UTF-8 in %s", opname(p->op));
    node *v;
    int rc = new_node(p, kind, &v);
    if (rc)
        return rc;
    char *data = ck_arena_alloc(p->a, n + 1); /* n < input length: no overflow */
    if (!data)
        return oom(p);
    if (n)
        memcpy(data, s, n);
    data[n] = '\0';
    v->v.u.str.data = data;
    v->v.u.str.len = n;
    *out = v;
    return 0;
}

static int push_blob(parser *p, pk_kind kind, const void *s, size_t n)
{
    node *v;
    int rc = make_blob(p, kind, s, n, &v);
    return rc ? rc : push(p, v);
}

/* Length-prefixed string/bytes: the length is checked against the input
 * before anything is allocated. */
static int push_counted(parser *p, pk_kind kind, size_t lenbytes, bool signed32)
{
    uint64_t n;
    int rc = take_le(p, lenbytes, &n);
    if (rc)
        return rc;
    if (signed32 && n > INT32_MAX)
        return fail(p, -EINVAL, "negative length in %s", opname(p->op));
    if (n > p->len - p->pos)
        return fail(p, -EINVAL, "%s length %llu exceeds the %zu bytes left", opname(p->op),
                    (unsigned long long)n, p->len - p->pos);
    const uint8_t *s;
    if ((rc = take(p, (size_t)n, &s)))
        return rc;
    return push_blob(p, kind, s, (size_t)n);
}

static int load_long(parser *p, size_t lenbytes)
{
    uint64_t n;
    int rc = take_le(p, lenbytes, &n);
    if (rc)
        return rc;
    if (lenbytes == 4 && n > INT32_MAX)
        return fail(p, -EINVAL, "negative length in %s", opname(p->op));
    if (n > 8)
        return fail(p, -EINVAL, "%s of %llu bytes is wider than 64 bits", opname(p->op),
                    (unsigned long long)n);
    const uint8_t *b;
    if ((rc = take(p, (size_t)n, &b)))
        return rc;
    uint64_t u = le(b, (size_t)n);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80))
        u |= ~(uint64_t)0 << (8 * n); /* two's complement sign extension */
    return push_int(p, (int64_t)u);
}

static int load_float_text(parser *p)
{
    const uint8_t *s;
    size_t n;
    int rc = take_line(p, &s, &n);
    if (rc)
        return rc;
    char tmp[64];
    if (n == 0 || n >= sizeof tmp || memchr(s, '\0', n))
        return fail(p, -EINVAL, "bad number in FLOAT");
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    double d = strtod(tmp, &end);
    if (end != tmp + n)
        return fail(p, -EINVAL, "bad number in FLOAT");
    return push_float(p, d);
}

/* STRING: a quoted Python 2 repr, escapes as codecs.escape_decode reads them. */
static int load_string_text(parser *p)
{
    const uint8_t *s;
    size_t n;
    int rc = take_line(p, &s, &n);
    if (rc)
        return rc;
    if (n < 2 || s[0] != s[n - 1] || (s[0] != '\'' && s[0] != '"'))
        return fail(p, -EINVAL, "STRING argument is not quoted");
    s++;
    n -= 2;
    uint8_t *out = ck_arena_alloc(p->a, n + 1);
    if (!out)
        return oom(p);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            out[o++] = s[i++];
            continue;
        }
        if (++i == n)
            return fail(p, -EINVAL, "trailing backslash in STRING");
        uint8_t c = s[i++];
        switch (c) {
        case '\\': case '\'': case '"': out[o++] = c; break;
        case 'a': out[o++] = '\a'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'v': out[o++] = '\v'; break;
        case 'x': {
            int h1 = i < n ? hexval(s[i]) : -1, h2 = i + 1 < n ? hexval(s[i + 1]) : -1;
            if (h1 < 0 || h2 < 0)
                return fail(p, -EINVAL, "invalid \\x escape in STRING");
            out[o++] = (uint8_t)(h1 * 16 + h2);
            i += 2;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = c - '0';
                for (int k = 0; k < 2 && i < n && s[i] >= '0' && s[i] <= '7'; k++)
                    v = v * 8 + (s[i++] - '0');
                out[o++] = (uint8_t)v;
            } else {
                out[o++] = '\\'; /* unknown escapes stay as written */
                out[o++] = c;
            }
        }
    }
    return push_blob(p, PK_STR, out, o);
}

/* UNICODE: raw-unicode-escape, i.e. latin-1 bytes plus \uXXXX and
 * \UXXXXXXXX after an odd number of backslashes. */
static int load_unicode_text(parser *p)
{
    const uint8_t *s;
    size_t n;
    int rc = take_line(p, &s, &n);
    if (rc)
        return rc;
    size_t cap;
    if (__builtin_mul_overflow(n, 2, &cap))
        return oom(p);
    uint8_t *out = ck_arena_alloc(p->a, cap + 1);
    if (!out)
        return oom(p);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            o += utf8_put(out + o, s[i++]);
            continue;
        }
        size_t run = 0;
        while (i < n && s[i] == '\\') {
            out[o++] = '\\';
            i++;
            run++;
        }
        if (run % 2 == 0 || i == n || (s[i] != 'u' && s[i] != 'U'))
            continue;
        o--; /* that backslash introduced the escape */
        size_t digits = s[i] == 'u' ? 4 : 8;
        i++;
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; k++, i++) {
            int h = i < n ? hexval(s[i]) : -1;
            if (h < 0)
                return fail(p, -EINVAL, "truncated \\u escape in UNICODE");
            cp = cp * 16 + (uint32_t)h;
        }
        if (cp > 0x10FFFF)
            return fail(p, -EINVAL, "\\U escape out of range in UNICODE");
        o += utf8_put(out + o, cp); /* an escape is >= 6 bytes, its UTF-8 <= 4 */
    }
    return push_blob(p, PK_STR, out, o);
}

/* ---- globals and objects ---------------------------------------------- */

static int make_global(parser *p, const void *mod, size_t modlen, const void *name,
                       size_t namelen, node **out)
{
    if (memchr(mod, '\0', modlen) || memchr(name, '\0', namelen) ||
        !pk_utf8_valid(mod, modlen) || !pk_utf8_valid(name, namelen))
        return fail(p, -EINVAL, "bad class name in %s", opname(p->op));
    node *g;
    int rc = new_node(p, PK_GLOBAL, &g);
    if (rc)
        return rc;
    char *m = ck_arena_alloc(p->a, modlen + 1), *nm = ck_arena_alloc(p->a, namelen + 1);
    if (!m || !nm)
        return oom(p);
    memcpy(m, mod, modlen);
    m[modlen] = '\0';
    memcpy(nm, name, namelen);
    nm[namelen] = '\0';
    g->v.u.global.module = m;
    g->v.u.global.name = nm;
    *out = g;
    return 0;
}

static int load_global_text(parser *p, node **out)
{
    const uint8_t *mod, *name;
    size_t modlen, namelen;
    int rc = take_line(p, &mod, &modlen);
    if (!rc)
        rc = take_line(p, &name, &namelen);
    if (!rc)
        rc = make_global(p, mod, modlen, name, namelen, out);
    return rc;
}

static int make_object(parser *p, node *callable, node *args, bool newobj, node **out)
{
    if (args->v.kind != PK_TUPLE)
        return fail(p, -EINVAL, "%s arguments are not a tuple", opname(p->op));
    node *o;
    int rc = new_node(p, PK_OBJECT, &o);
    if (rc)
        return rc;
    o->v.u.obj.callable = &callable->v;
    o->v.u.obj.args = &args->v;
    o->v.u.obj.newobj = newobj;
    if ((rc = adopt(p, o, callable)) || (rc = adopt(p, o, args)))
        return rc;
    *out = o;
    return 0;
}

static int load_reduce(parser *p, bool newobj)
{
    node *callable, *args, *o;
    int rc = pop(p, &args);
    if (!rc)
        rc = pop(p, &callable);
    if (!rc)
        rc = make_object(p, callable, args, newobj, &o);
    return rc ? rc : push(p, o);
}

static int load_newobj_ex(parser *p)
{
    node *cls, *args, *kwargs, *o;
    int rc = pop(p, &kwargs);
    if (!rc)
        rc = pop(p, &args);
    if (!rc)
        rc = pop(p, &cls);
    if (rc)
        return rc;
    if (kwargs->v.kind != PK_DICT)
        return fail(p, -EINVAL, "NEWOBJ_EX keyword arguments are not a dict");
    if (kwargs->v.u.dict.len)
        return fail(p, -EINVAL, "NEWOBJ_EX with keyword arguments is not supported");
    rc = make_object(p, cls, args, true, &o);
    return rc ? rc : push(p, o);
}

/* INST and OBJ (protocols 0/1): the class and arguments sit above a MARK. */
static int load_inst(parser *p, bool from_stack)
{
    node *cls = NULL, *args, *o;
    int rc = 0;
    if (!from_stack)
        rc = load_global_text(p, &cls);
    size_t mark;
    if (!rc)
        rc = pop_mark(p, &mark);
    if (rc)
        return rc;
    size_t first = mark;
    if (from_stack) {
        if (first == p->sp)
            return underflow(p);
        cls = p->stack[first++];
    }
    if ((rc = make_seq(p, PK_TUPLE, p->stack + first, p->sp - first, &args)))
        return rc;
    p->sp = mark;
    rc = make_object(p, cls, args, false, &o);
    return rc ? rc : push(p, o);
}

static int load_build(parser *p)
{
    node *state, *o;
    int rc = pop(p, &state);
    if (!rc)
        rc = top(p, &o);
    if (rc)
        return rc;
    if (o->v.kind != PK_OBJECT)
        return fail(p, -EINVAL, "BUILD on a value that is not an object");
    if ((rc = check_mutable(p, o)))
        return rc;
    if (o->v.u.obj.state)
        return fail(p, -EINVAL, "second BUILD on one object");
    o->v.u.obj.state = &state->v;
    return adopt(p, o, state);
}

/* ---- containers ------------------------------------------------------- */

/* The list or dict an APPEND/SETITEM on an object fills. */
static int object_items(parser *p, node *o, pk_kind kind, node **out)
{
    pk_value **slot = kind == PK_LIST ? &o->v.u.obj.items : &o->v.u.obj.dictitems;
    if (!*slot) {
        node *n;
        int rc = new_node(p, kind, &n);
        if (rc)
            return rc;
        *slot = &n->v;
        if ((rc = adopt(p, o, n)))
            return rc;
    }
    *out = as_node(*slot);
    return 0;
}

/* Keeps an object's height and weight in step with its items container,
 * which is filled after being adopted. */
static int object_grew(parser *p, node *o, node *inner, uint32_t added_weight)
{
    if (inner->height >= PK_MAX_DEPTH)
        return fail(p, -E2BIG, "nesting deeper than %d", PK_MAX_DEPTH);
    if (inner->height + 1 > o->height)
        o->height = (uint16_t)(inner->height + 1);
    o->weight += added_weight;
    if (o->weight > PK_MAX_ELEMENTS)
        return fail(p, -E2BIG, "more than %u values when shared values are counted each time",
                    (unsigned)PK_MAX_ELEMENTS);
    return 0;
}

static int append_items(parser *p, node *target, node *const *items, size_t n, bool set_op)
{
    int rc = check_mutable(p, target);
    if (rc)
        return rc;
    node *list = target;
    bool is_set = target->v.kind == PK_LIST && (target->flags & NODE_SET);
    if (set_op ? !is_set : (target->v.kind != PK_LIST || is_set)) {
        if (set_op || target->v.kind != PK_OBJECT)
            return fail(p, -EINVAL, "%s onto a value that is not a %s", opname(p->op),
                        set_op ? "set" : "list");
        if ((rc = object_items(p, target, PK_LIST, &list)))
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (items[i] == target) /* only reachable that way: see adopt() */
            return fail(p, -EINVAL, "%s puts a value inside itself (cyclic pickle)",
                        opname(p->op));
        uint32_t before = list->weight;
        if ((rc = seq_push(p, list, items[i])))
            return rc;
        if (list != target && (rc = object_grew(p, target, list, list->weight - before)))
            return rc;
    }
    return 0;
}

static int set_items(parser *p, node *target, node *const *items, size_t n)
{
    if (n % 2)
        return fail(p, -EINVAL, "odd number of items for %s", opname(p->op));
    int rc = check_mutable(p, target);
    if (rc)
        return rc;
    node *dict = target;
    if (target->v.kind != PK_DICT) {
        if (target->v.kind != PK_OBJECT)
            return fail(p, -EINVAL, "%s onto a value that is not a dict", opname(p->op));
        if ((rc = object_items(p, target, PK_DICT, &dict)))
            return rc;
    }
    for (size_t i = 0; i < n; i += 2) {
        if (items[i] == target || items[i + 1] == target)
            return fail(p, -EINVAL, "%s puts a value inside itself (cyclic pickle)",
                        opname(p->op));
        uint32_t before = dict->weight;
        if ((rc = dict_put(p, dict, items[i], items[i + 1])))
            return rc;
        if (dict != target && (rc = object_grew(p, target, dict, dict->weight - before)))
            return rc;
    }
    return 0;
}

/* ---- streaming (pk_hooks) --------------------------------------------- */

struct pk_batch {
    node *const *items;
};

const pk_value *pk_batch_at(const pk_batch *b, size_t i)
{
    return &b->items[i]->v;
}

/* A copy of n in the arena that is never rewound, for a memo entry that
 * outlives its batch.  Shared parts are copied each time they are reached;
 * copy_budget bounds that (weight bounds each value, not their sum). */
static int copy_node(parser *p, const node *n, node **out)
{
    if (p->copy_budget == 0)
        return -E2BIG;
    p->copy_budget--;
    node *c = ck_arena_alloc(p->perm, sizeof *c);
    if (!c)
        return -ENOMEM;
    *c = *n;
    pk_value *v = &c->v;
    int rc = 0;
    switch (v->kind) {
    case PK_STR:
    case PK_BYTES:
        v->u.str.data = ck_arena_alloc(p->perm, v->u.str.len + 1);
        if (!v->u.str.data)
            return -ENOMEM;
        memcpy(v->u.str.data, n->v.u.str.data, v->u.str.len + 1);
        break;
    case PK_GLOBAL:
        v->u.global.module = ck_arena_strdup(p->perm, n->v.u.global.module);
        v->u.global.name = ck_arena_strdup(p->perm, n->v.u.global.name);
        if (!v->u.global.module || !v->u.global.name)
            return -ENOMEM;
        break;
    case PK_TUPLE:
    case PK_LIST:
        v->u.seq.cap = v->u.seq.len;
        if (v->u.seq.len) {
            v->u.seq.items = ck_arena_calloc(p->perm, v->u.seq.len, sizeof(pk_value *));
            if (!v->u.seq.items)
                return -ENOMEM;
        }
        for (size_t i = 0; i < v->u.seq.len && !rc; i++) {
            node *ci;
            if (!(rc = copy_node(p, as_node(n->v.u.seq.items[i]), &ci)))
                v->u.seq.items[i] = &ci->v;
        }
        break;
    case PK_DICT:
        v->u.dict.cap = v->u.dict.len;
        if (v->u.dict.len) {
            v->u.dict.keys = ck_arena_calloc(p->perm, v->u.dict.len, sizeof(pk_value *));
            v->u.dict.vals = ck_arena_calloc(p->perm, v->u.dict.len, sizeof(pk_value *));
            if (!v->u.dict.keys || !v->u.dict.vals)
                return -ENOMEM;
        }
        for (size_t i = 0; i < v->u.dict.len && !rc; i++) {
            node *ck, *cv;
            if (!(rc = copy_node(p, as_node(n->v.u.dict.keys[i]), &ck)) &&
                !(rc = copy_node(p, as_node(n->v.u.dict.vals[i]), &cv))) {
                v->u.dict.keys[i] = &ck->v;
                v->u.dict.vals[i] = &cv->v;
            }
        }
        break;
    case PK_OBJECT: {
        pk_value **fields[] = { &v->u.obj.callable, &v->u.obj.args, &v->u.obj.state,
                                &v->u.obj.items, &v->u.obj.dictitems };
        for (size_t i = 0; i < sizeof fields / sizeof *fields && !rc; i++) {
            node *cf;
            if (*fields[i] && !(rc = copy_node(p, as_node(*fields[i]), &cf)))
                *fields[i] = &cf->v;
        }
        break;
    }
    case PK_PERSID: {
        node *cp;
        if (!(rc = copy_node(p, as_node(n->v.u.persid.pid), &cp)))
            v->u.persid.pid = &cp->v;
        break;
    }
    default:
        break; /* scalars and opaque notes: the node copy is all */
    }
    if (!rc)
        *out = c;
    return rc;
}

/* Gives back the memory of the batch that mark m opened, once its items
 * are the hook's: what the memo holds of it is copied out first.  Where a
 * copy cannot be made the memory simply stays. */
static void release_batch(parser *p, size_t m)
{
    if (p->mark_pinned[m])
        return;
    for (size_t i = p->mark_log[m]; i < p->putlog_len; i++) {
        node *c;
        if (copy_node(p, p->memo[p->putlog[i]], &c))
            return;
        p->memo[p->putlog[i]] = c;
    }
    p->putlog_len = p->mark_log[m];
    ck_arena_rewind(p->a, p->mark_pos[m]);
}

/* Offers APPENDS / SETITEM(S) items to the hook.  m is the index of the
 * batch's MARK, SIZE_MAX for a lone SETITEM.  Returns PK_HOOK_KEEP when
 * the usual path is to run (it also gives every refusal its usual
 * message), 1 when the hook took them, or an error. */
static int offer_items(parser *p, node *target, node *const *items, size_t n, size_t m)
{
    bool list = p->op == OP_APPENDS;
    if (!p->hooks || p->op == OP_ADDITEMS)
        return PK_HOOK_KEEP;
    if (list ? target->v.kind != PK_LIST || (target->flags & NODE_SET)
             : target->v.kind != PK_DICT || n % 2)
        return PK_HOOK_KEEP;
    if (target->flags & (NODE_ADOPTED | NODE_FROZEN))
        return PK_HOOK_KEEP;
    for (size_t i = 0; i < n; i++)
        if (items[i] == target)
            return PK_HOOK_KEEP;
    pk_batch b = { items };
    void *opaque = NULL;
    int r = p->hooks->items(p->hooks->ctx, &target->v, &b, n, &opaque);
    if (r < 0)
        return fail(p, r, "%s refused by the streaming reader", opname(p->op));
    if (r == PK_HOOK_KEEP)
        return PK_HOOK_KEEP;
    if (r == PK_HOOK_OPAQUE && !list)
        return fail(p, -EINVAL, "%s: an opaque note only goes into a list", opname(p->op));
    /* limits count the items as if they had been added */
    for (size_t i = 0; i < n; i++) {
        int rc = adopt(p, target, items[i]);
        if (rc)
            return rc;
    }
    if (m != SIZE_MAX)
        release_batch(p, m);
    if (r == PK_HOOK_OPAQUE) {
        /* not a value of the document: not counted, weighs nothing */
        node *o = ck_arena_alloc(p->a, sizeof *o);
        if (!o)
            return oom(p);
        o->v.kind = PK_OPAQUE;
        o->v.u.opaque.ptr = opaque;
        int rc = seq_push(p, target, o);
        if (rc)
            return rc;
    }
    return 1;
}

static int load_append(parser *p)
{
    node *item, *target;
    int rc = pop(p, &item);
    if (!rc)
        rc = top(p, &target);
    return rc ? rc : append_items(p, target, &item, 1, false);
}

static int load_setitem(parser *p)
{
    node *kv[2], *target;
    int rc = pop(p, &kv[1]);
    if (!rc)
        rc = pop(p, &kv[0]);
    if (!rc)
        rc = top(p, &target);
    if (!rc && (rc = offer_items(p, target, kv, 2, SIZE_MAX)) != PK_HOOK_KEEP)
        return rc < 0 ? rc : 0;
    return rc ? rc : set_items(p, target, kv, 2);
}

static int load_marked_into(parser *p)
{
    size_t mark;
    node *target;
    int rc = pop_mark_target(p, &mark, &target);
    if (rc)
        return rc;
    node **items = p->stack + mark;
    size_t n = p->sp - mark;
    if ((rc = offer_items(p, target, items, n, p->nmarks)) != PK_HOOK_KEEP) {
        p->sp = mark;
        return rc < 0 ? rc : 0;
    }
    if (p->op == OP_SETITEMS)
        rc = set_items(p, target, items, n);
    else
        rc = append_items(p, target, items, n, p->op == OP_ADDITEMS);
    p->sp = mark;
    return rc;
}

/* TUPLE, LIST, FROZENSET: a new sequence of the values above the MARK. */
static int load_marked_seq(parser *p, pk_kind kind, uint32_t flags)
{
    size_t mark;
    node *t;
    int rc = pop_mark(p, &mark);
    if (!rc)
        rc = make_seq(p, kind, p->stack + mark, p->sp - mark, &t);
    if (rc)
        return rc;
    t->flags |= flags;
    p->sp = mark;
    return push(p, t);
}

static int load_dict(parser *p)
{
    size_t mark;
    node *d;
    int rc = pop_mark(p, &mark);
    if (!rc)
        rc = new_node(p, PK_DICT, &d);
    if (!rc)
        rc = set_items(p, d, p->stack + mark, p->sp - mark);
    if (rc)
        return rc;
    p->sp = mark;
    return push(p, d);
}

static int load_small_tuple(parser *p, size_t n)
{
    if (p->sp - fence(p) < n)
        return underflow(p);
    node *t;
    int rc = make_seq(p, PK_TUPLE, p->stack + p->sp - n, n, &t);
    if (rc)
        return rc;
    p->sp -= n;
    return push(p, t);
}

static int push_empty(parser *p, pk_kind kind, uint32_t flags)
{
    node *n;
    int rc = new_node(p, kind, &n);
    if (rc)
        return rc;
    n->flags = flags;
    return push(p, n);
}

static int load_persid(parser *p, bool binary)
{
    node *pid, *n;
    int rc;
    if (binary) {
        rc = pop(p, &pid);
    } else {
        const uint8_t *s;
        size_t len;
        rc = take_line(p, &s, &len);
        if (!rc)
            rc = make_blob(p, PK_STR, s, len, &pid);
    }
    if (!rc)
        rc = new_node(p, PK_PERSID, &n);
    if (rc)
        return rc;
    n->v.u.persid.pid = &pid->v;
    if ((rc = adopt(p, n, pid)))
        return rc;
    return push(p, n);
}

static int load_stack_global(parser *p)
{
    node *mod, *name, *g;
    int rc = pop(p, &name);
    if (!rc)
        rc = pop(p, &mod);
    if (rc)
        return rc;
    if (mod->v.kind != PK_STR || name->v.kind != PK_STR)
        return fail(p, -EINVAL, "STACK_GLOBAL needs two strings");
    rc = make_global(p, mod->v.u.str.data, mod->v.u.str.len, name->v.u.str.data,
                     name->v.u.str.len, &g);
    return rc ? rc : push(p, g);
}

static int load_pop(parser *p)
{
    /* As in CPython: POP right after a MARK discards the MARK. */
    if (p->nmarks && p->marks[p->nmarks - 1] == p->sp) {
        p->nmarks--;
        return 0;
    }
    node *unused;
    return pop(p, &unused);
}

/* ---- the machine ------------------------------------------------------ */

static int step(parser *p, bool *stop)
{
    const uint8_t *b;
    uint64_t u;
    int rc;
    node *n;
    size_t mark;

    p->op_pos = p->pos;
    if (p->pos == p->len) {
        p->op = 0;
        return fail(p, -EINVAL, "input ends before STOP");
    }
    uint8_t op = p->buf[p->pos++];
    p->op = op;

    switch (op) {
    case OP_PROTO:
        if ((rc = take(p, 1, &b)))
            return rc;
        if (b[0] > PK_MAX_PROTOCOL)
            return fail(p, -EINVAL, "unsupported protocol %u", b[0]);
        return 0;
    case OP_FRAME:
        /* Frames only group bytes for buffered reading; the whole pickle is
         * in memory, so all that matters is that the frame fits. */
        if ((rc = take_le(p, 8, &u)))
            return rc;
        if (u > p->len - p->pos)
            return fail(p, -EINVAL, "FRAME length %llu exceeds the %zu bytes left",
                        (unsigned long long)u, p->len - p->pos);
        return 0;
    case OP_STOP:
        if ((rc = pop(p, &n)))
            return rc;
        p->stack[p->sp++] = n; /* leave it where pk_parse finds it */
        *stop = true;
        return 0;

    case OP_MARK:
        if (p->nmarks == PK_MAX_DEPTH)
            return fail(p, -E2BIG, "more than %d nested MARKs", PK_MAX_DEPTH);
        if (p->hooks) {
            if (!p->nmarks)
                p->putlog_len = 0; /* no batch open: nothing to copy out */
            p->mark_pos[p->nmarks] = ck_arena_tell(p->a);
            p->mark_log[p->nmarks] = p->putlog_len;
            p->mark_pinned[p->nmarks] = false;
        }
        p->marks[p->nmarks++] = p->sp;
        return 0;
    case OP_POP:
        return load_pop(p);
    case OP_POP_MARK:
        if ((rc = pop_mark(p, &mark)))
            return rc;
        p->sp = mark;
        return 0;
    case OP_DUP:
        return (rc = top(p, &n)) ? rc : push(p, n);

    case OP_NONE:
        return push_empty(p, PK_NONE, 0);
    case OP_NEWTRUE:
        return push_bool(p, true);
    case OP_NEWFALSE:
        return push_bool(p, false);
    case OP_BININT:
        if ((rc = take_le(p, 4, &u)))
            return rc;
        return push_int(p, (int32_t)(uint32_t)u);
    case OP_BININT1:
        return (rc = take_le(p, 1, &u)) ? rc : push_int(p, (int64_t)u);
    case OP_BININT2:
        return (rc = take_le(p, 2, &u)) ? rc : push_int(p, (int64_t)u);
    case OP_LONG1:
        return load_long(p, 1);
    case OP_LONG4:
        return load_long(p, 4);
    case OP_INT:
    case OP_LONG: {
        size_t len;
        int64_t v;
        if ((rc = take_line(p, &b, &len)))
            return rc;
        if (op == OP_INT && len == 2 && b[0] == '0' && (b[1] == '0' || b[1] == '1'))
            return push_bool(p, b[1] == '1');
        if (op == OP_LONG && len > 0 && b[len - 1] == 'L')
            len--;
        return (rc = parse_decimal(p, b, len, &v)) ? rc : push_int(p, v);
    }
    case OP_BINFLOAT: {
        if ((rc = take(p, 8, &b)))
            return rc;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = (bits << 8) | b[i]; /* big-endian */
        double d;
        memcpy(&d, &bits, sizeof d);
        return push_float(p, d);
    }
    case OP_FLOAT:
        return load_float_text(p);

    case OP_SHORT_BINUNICODE:
        return push_counted(p, PK_STR, 1, false);
    case OP_BINUNICODE:
        return push_counted(p, PK_STR, 4, false);
    case OP_BINUNICODE8:
        return push_counted(p, PK_STR, 8, false);
    case OP_SHORT_BINSTRING:
        return push_counted(p, PK_STR, 1, false);
    case OP_BINSTRING:
        return push_counted(p, PK_STR, 4, true);
    case OP_STRING:
        return load_string_text(p);
    case OP_UNICODE:
        return load_unicode_text(p);
    case OP_SHORT_BINBYTES:
        return push_counted(p, PK_BYTES, 1, false);
    case OP_BINBYTES:
        return push_counted(p, PK_BYTES, 4, false);
    case OP_BINBYTES8:
    case OP_BYTEARRAY8:
        return push_counted(p, PK_BYTES, 8, false);
    case OP_READONLY_BUFFER:
        if ((rc = top(p, &n)))
            return rc;
        if (n->v.kind != PK_BYTES)
            return fail(p, -EINVAL, "READONLY_BUFFER on a value that is not bytes");
        return 0;

    case OP_EMPTY_TUPLE:
        return push_empty(p, PK_TUPLE, 0);
    case OP_TUPLE1:
        return load_small_tuple(p, 1);
    case OP_TUPLE2:
        return load_small_tuple(p, 2);
    case OP_TUPLE3:
        return load_small_tuple(p, 3);
    case OP_TUPLE:
        return load_marked_seq(p, PK_TUPLE, 0);
    case OP_EMPTY_LIST:
        return push_empty(p, PK_LIST, 0);
    case OP_LIST:
        return load_marked_seq(p, PK_LIST, 0);
    case OP_EMPTY_SET:
        return push_empty(p, PK_LIST, NODE_SET);
    case OP_FROZENSET:
        return load_marked_seq(p, PK_LIST, NODE_SET | NODE_FROZEN);
    case OP_EMPTY_DICT:
        return push_empty(p, PK_DICT, 0);
    case OP_DICT:
        return load_dict(p);
    case OP_APPEND:
        return load_append(p);
    case OP_SETITEM:
        return load_setitem(p);
    case OP_APPENDS:
    case OP_SETITEMS:
    case OP_ADDITEMS:
        return load_marked_into(p);

    case OP_BINPUT:
        return (rc = take_le(p, 1, &u)) ? rc : memo_put_top(p, (uint32_t)u);
    case OP_LONG_BINPUT:
        return (rc = take_le(p, 4, &u)) ? rc : memo_put_top(p, (uint32_t)u);
    case OP_MEMOIZE:
        if (p->memo_len > UINT32_MAX)
            return fail(p, -E2BIG, "memo full");
        return memo_put_top(p, (uint32_t)p->memo_len);
    case OP_BINGET:
        return (rc = take_le(p, 1, &u)) ? rc : memo_get(p, (uint32_t)u);
    case OP_LONG_BINGET:
        return (rc = take_le(p, 4, &u)) ? rc : memo_get(p, (uint32_t)u);
    case OP_PUT:
    case OP_GET: {
        size_t len;
        uint32_t idx;
        if ((rc = take_line(p, &b, &len)) || (rc = parse_index(p, b, len, &idx)))
            return rc;
        return op == OP_PUT ? memo_put_top(p, idx) : memo_get(p, idx);
    }

    case OP_GLOBAL:
        return (rc = load_global_text(p, &n)) ? rc : push(p, n);
    case OP_STACK_GLOBAL:
        return load_stack_global(p);
    case OP_REDUCE:
        return load_reduce(p, false);
    case OP_NEWOBJ:
        return load_reduce(p, true);
    case OP_NEWOBJ_EX:
        return load_newobj_ex(p);
    case OP_INST:
        return load_inst(p, false);
    case OP_OBJ:
        return load_inst(p, true);
    case OP_BUILD:
        return load_build(p);
    case OP_BINPERSID:
        return load_persid(p, true);
    case OP_PERSID:
        return load_persid(p, false);

    case OP_EXT1:
    case OP_EXT2:
    case OP_EXT4:
        return fail(p, -EINVAL, "%s (copyreg extension registry) is not supported", opname(op));
    case OP_NEXT_BUFFER:
        return fail(p, -EINVAL, "NEXT_BUFFER (out-of-band buffer) is not supported");
    default:
        return fail(p, -EINVAL, "unknown opcode 0x%02x", op);
    }
}

int pk_parse(const uint8_t *buf, size_t len, pk_doc **out, char *err, size_t errlen)
{
    return pk_parse_hooked(buf, len, NULL, out, err, errlen);
}

int pk_parse_hooked(const uint8_t *buf, size_t len, const pk_hooks *hooks, pk_doc **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    pk_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        if (err && errlen)
            snprintf(err, errlen, "pickle: out of memory");
        return -ENOMEM;
    }
    doc->a = ck_arena_new();
    doc->perm = ck_arena_new();
    if (!doc->a || !doc->perm) {
        pk_free(doc);
        if (err && errlen)
            snprintf(err, errlen, "pickle: out of memory");
        return -ENOMEM;
    }
    parser p = { .buf = buf, .len = buf ? len : 0, .a = doc->a, .err = err, .errlen = errlen,
                 .hooks = hooks && hooks->items ? hooks : NULL, .perm = doc->perm,
                 .copy_budget = PK_MAX_ELEMENTS };
    bool stop = false;
    int rc = 0;
    /* Allocated up front: opcodes take `p->stack + mark` even when nothing
     * was pushed, and pointer arithmetic on NULL is undefined. */
    p.stack = malloc(64 * sizeof *p.stack);
    if (!p.stack) {
        pk_free(doc);
        if (err && errlen)
            snprintf(err, errlen, "pickle: out of memory");
        return -ENOMEM;
    }
    p.stack_cap = 64;
    rc = memo_scan(&p);
    while (!rc && !stop && !(rc = step(&p, &stop)))
        ;
    /* Python ignores what follows STOP and what is left on the stack. */
    if (!rc)
        doc->root = p.stack[p.sp - 1];
    free(p.stack);
    free(p.memo);
    free(p.needed);
    free(p.needed_rank);
    free(p.assigned);
    free(p.putlog);
    if (rc) {
        pk_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

const pk_value *pk_root(const pk_doc *doc)
{
    return doc && doc->root ? &doc->root->v : NULL;
}

void pk_free(pk_doc *doc)
{
    if (!doc)
        return;
    ck_arena_free(doc->a);
    ck_arena_free(doc->perm);
    free(doc);
}

/* ---- lookups ---------------------------------------------------------- */

/* Duplicate keys are all kept (Python would keep one); the last one wins,
 * as its value is the one Python would see. */
const pk_value *pk_dict_get(const pk_value *dict, const char *key)
{
    if (!dict || dict->kind != PK_DICT || !key)
        return NULL;
    size_t klen = strlen(key);
    for (size_t i = dict->u.dict.len; i-- > 0;) {
        const pk_value *k = dict->u.dict.keys[i];
        if (k->kind == PK_STR && k->u.str.len == klen && memcmp(k->u.str.data, key, klen) == 0)
            return dict->u.dict.vals[i];
    }
    return NULL;
}

bool pk_is_global(const pk_value *v, const char *module, const char *name)
{
    return v && v->kind == PK_GLOBAL && module && name &&
           strcmp(v->u.global.module, module) == 0 && strcmp(v->u.global.name, name) == 0;
}

bool pk_is_object_of(const pk_value *v, const char *module, const char *name)
{
    return v && v->kind == PK_OBJECT && pk_is_global(v->u.obj.callable, module, name);
}

const pk_value *pk_object_state_dict(const pk_value *v)
{
    if (!v || v->kind != PK_OBJECT || !v->u.obj.state || v->u.obj.state->kind != PK_DICT)
        return NULL;
    return v->u.obj.state;
}

size_t pk_seq_len(const pk_value *v)
{
    return v && (v->kind == PK_TUPLE || v->kind == PK_LIST) ? v->u.seq.len : 0;
}

const pk_value *pk_seq_at(const pk_value *v, size_t i)
{
    return i < pk_seq_len(v) ? v->u.seq.items[i] : NULL;
}

int pk_as_int(const pk_value *v, int64_t *out)
{
    if (!v)
        return -EINVAL;
    if (v->kind == PK_INT) {
        *out = v->u.i;
        return 0;
    }
    if (v->kind == PK_BOOL) {
        *out = v->u.b ? 1 : 0;
        return 0;
    }
    return -EINVAL;
}

const char *pk_as_str(const pk_value *v)
{
    /* A C string would end at an embedded NUL: "__0_0.distcp\0/../x" would
     * name another file than the pickle does, "a\0b" another key.  Such a
     * string is no string to C callers. */
    if (!v || v->kind != PK_STR || memchr(v->u.str.data, '\0', v->u.str.len))
        return NULL;
    return v->u.str.data;
}
