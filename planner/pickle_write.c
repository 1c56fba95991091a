/* Pickle writer (see pickle_write.h).  Memo indices are handed out in the
 * order Python's pickler would hand them out, so a sequence of calls that
 * mirrors what pickle.dumps does produces the same bytes.  One difference is
 * deliberate: Python memoizes strings by object identity and we by value,
 * so a repeated equal string becomes a BINGET here (still a valid pickle,
 * just shorter). */
#include "pickle_write.h"
#include "hash.h"
#include "pickle.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define OP_PROTO 0x80
#define OP_FRAME 0x95
#define OP_GLOBAL 'c'
#define OP_STACK_GLOBAL 0x93
#define OP_BINPUT 'q'
#define OP_LONG_BINPUT 'r'
#define OP_MEMOIZE 0x94
#define OP_BINGET 'h'
#define OP_LONG_BINGET 'j'
#define OP_BININT 'J'
#define OP_BININT1 'K'
#define OP_BININT2 'M'
#define OP_LONG1 0x8a
#define OP_BINFLOAT 'G'
#define OP_BINUNICODE 'X'
#define OP_SHORT_BINUNICODE 0x8c
#define OP_BINUNICODE8 0x8d
#define OP_SHORT_BINBYTES 'C'
#define OP_BINBYTES 'B'
#define OP_BINBYTES8 0x8e

/* CPython's framing constants (Modules/_pickle.c). */
#define FRAME_HEADER_SIZE 9
#define FRAME_SIZE_MIN 4
#define FRAME_SIZE_TARGET (64 * 1024)

enum { MEMO_STR, MEMO_GLOBAL };

typedef struct {
    char *key; /* NULL: free slot; globals are "module\nname" */
    size_t keylen;
    uint64_t hash;
    uint32_t index;
    uint8_t kind;
} memo_entry;

struct pkw {
    int protocol;
    int err; /* sticky */
    bool finished;
    uint8_t *buf;
    size_t len, cap;
    /* protocol >= 4: offset of the open frame's reserved header, or -1 */
    long long frame_start;
    uint64_t memo_next;
    memo_entry *memo;
    size_t memo_cap, memo_len;
};

static void set_err(pkw *w, int err)
{
    if (!w->err)
        w->err = err;
}

static bool usable(pkw *w)
{
    if (w && w->finished)
        set_err(w, -EINVAL);
    return w && !w->err;
}

static bool reserve(pkw *w, size_t n)
{
    size_t need;
    if (__builtin_add_overflow(w->len, n, &need)) {
        set_err(w, -ENOMEM);
        return false;
    }
    if (need <= w->cap)
        return true;
    size_t ncap = w->cap ? w->cap : 256;
    while (ncap < need) {
        if (__builtin_mul_overflow(ncap, 2, &ncap)) {
            set_err(w, -ENOMEM);
            return false;
        }
    }
    uint8_t *nb = realloc(w->buf, ncap);
    if (!nb) {
        set_err(w, -ENOMEM);
        return false;
    }
    w->buf = nb;
    w->cap = ncap;
    return true;
}

static void raw(pkw *w, const void *p, size_t n)
{
    if (w->err || !reserve(w, n))
        return;
    if (n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

/* Everything but PROTO goes through here: as in CPython, the first write
 * after a frame was committed opens the next one. */
static void emit(pkw *w, const void *p, size_t n)
{
    if (w->err)
        return;
    if (w->protocol >= 4 && w->frame_start < 0) {
        uint8_t hdr[FRAME_HEADER_SIZE] = { 0 };
        w->frame_start = (long long)w->len;
        raw(w, hdr, sizeof hdr);
    }
    raw(w, p, n);
}

static void emit_op(pkw *w, uint8_t op)
{
    emit(w, &op, 1);
}

static void put_le(uint8_t *out, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++, v >>= 8)
        out[i] = (uint8_t)v;
}

static void commit_frame(pkw *w)
{
    if (w->err || w->frame_start < 0)
        return;
    size_t start = (size_t)w->frame_start;
    size_t flen = w->len - start - FRAME_HEADER_SIZE;
    if (flen >= FRAME_SIZE_MIN) {
        w->buf[start] = OP_FRAME;
        put_le(w->buf + start + 1, flen, 8);
    } else {
        memmove(w->buf + start, w->buf + start + FRAME_HEADER_SIZE, flen);
        w->len -= FRAME_HEADER_SIZE;
    }
    w->frame_start = -1;
}

/* Called where a value starts, as Python's save() does: a frame that has
 * reached FRAME_SIZE_TARGET is closed there. */
static void opcode_boundary(pkw *w)
{
    if (w->frame_start >= 0 && w->len - (size_t)w->frame_start - FRAME_HEADER_SIZE >=
                                   FRAME_SIZE_TARGET)
        commit_frame(w);
}

/* Opcode + argument where the argument may be large: like CPython, a
 * payload of FRAME_SIZE_TARGET or more is written outside any frame. */
static void emit_payload(pkw *w, const uint8_t *hdr, size_t hdrlen, const void *data, size_t n)
{
    if (w->protocol >= 4 && n >= FRAME_SIZE_TARGET) {
        commit_frame(w);
        raw(w, hdr, hdrlen);
        raw(w, data, n);
        return;
    }
    emit(w, hdr, hdrlen);
    emit(w, data, n);
}

/* ---- memo ------------------------------------------------------------- */

static uint64_t hash_bytes(uint8_t kind, const void *p, size_t n)
{
    return ck_fnv1a_update(CK_FNV1A_OFFSET ^ kind, p, n);
}

static memo_entry *memo_slot(pkw *w, uint8_t kind, const void *key, size_t n, uint64_t h)
{
    size_t mask = w->memo_cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        memo_entry *e = &w->memo[i];
        if (!e->key || (e->hash == h && e->kind == kind && e->keylen == n &&
                        memcmp(e->key, key, n) == 0))
            return e;
    }
}

static const memo_entry *memo_lookup(pkw *w, uint8_t kind, const void *key, size_t n)
{
    if (!w->memo_cap)
        return NULL;
    memo_entry *e = memo_slot(w, kind, key, n, hash_bytes(kind, key, n));
    return e->key ? e : NULL;
}

/* The memo index the next PUT/MEMOIZE assigns, or false when out of range. */
static bool next_index(pkw *w, uint32_t *idx)
{
    if (w->memo_next > UINT32_MAX) {
        set_err(w, -EINVAL);
        return false;
    }
    *idx = (uint32_t)w->memo_next;
    return true;
}

/* Stores the value just written (top of the unpickler's stack). */
static void memoize(pkw *w)
{
    uint32_t idx;
    if (w->err || !next_index(w, &idx))
        return;
    if (w->protocol >= 4) {
        emit_op(w, OP_MEMOIZE);
    } else if (idx < 256) {
        uint8_t b[2] = { OP_BINPUT, (uint8_t)idx };
        emit(w, b, sizeof b);
    } else {
        uint8_t b[5] = { OP_LONG_BINPUT };
        put_le(b + 1, idx, 4);
        emit(w, b, sizeof b);
    }
    w->memo_next++;
}

/* memoize() plus remembering key -> index for later memo hits. */
static void memoize_as(pkw *w, uint8_t kind, const void *key, size_t n)
{
    uint32_t idx;
    if (w->err || !next_index(w, &idx))
        return;
    if ((w->memo_len + 1) * 2 > w->memo_cap) {
        size_t ncap = w->memo_cap ? w->memo_cap * 2 : 64;
        memo_entry *nm = calloc(ncap, sizeof *nm);
        if (!nm) {
            set_err(w, -ENOMEM);
            return;
        }
        memo_entry *old = w->memo;
        size_t ocap = w->memo_cap;
        w->memo = nm;
        w->memo_cap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].key)
                *memo_slot(w, old[i].kind, old[i].key, old[i].keylen, old[i].hash) = old[i];
        free(old);
    }
    char *copy = malloc(n ? n : 1);
    if (!copy) {
        set_err(w, -ENOMEM);
        return;
    }
    if (n)
        memcpy(copy, key, n);
    uint64_t h = hash_bytes(kind, key, n);
    memo_entry *e = memo_slot(w, kind, key, n, h);
    *e = (memo_entry){ .key = copy, .keylen = n, .hash = h, .index = idx, .kind = kind };
    w->memo_len++;
    memoize(w);
}

static void memo_get(pkw *w, uint32_t idx)
{
    if (idx < 256) {
        uint8_t b[2] = { OP_BINGET, (uint8_t)idx };
        emit(w, b, sizeof b);
    } else {
        uint8_t b[5] = { OP_LONG_BINGET };
        put_le(b + 1, idx, 4);
        emit(w, b, sizeof b);
    }
}

/* ---- public ----------------------------------------------------------- */

pkw *pkw_new(int protocol)
{
    pkw *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->protocol = protocol;
    w->frame_start = -1;
    if (protocol < 2 || protocol > 5) {
        w->err = -EINVAL;
        return w;
    }
    uint8_t proto[2] = { OP_PROTO, (uint8_t)protocol };
    raw(w, proto, sizeof proto);
    if (w->err == -ENOMEM) {
        pkw_free(w);
        return NULL;
    }
    return w;
}

void pkw_free(pkw *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->memo_cap; i++)
        free(w->memo[i].key);
    free(w->memo);
    free(w->buf);
    free(w);
}

static bool memoized_op(uint8_t op)
{
    switch (op) {
    case PKW_EMPTY_LIST: case PKW_EMPTY_DICT: case PKW_TUPLE: case PKW_TUPLE1:
    case PKW_TUPLE2: case PKW_TUPLE3: case PKW_REDUCE: case PKW_NEWOBJ:
        return true;
    default:
        return false;
    }
}

/* Python may end a frame where it starts saving a value; ops that close a
 * value (TUPLE, APPENDS, REDUCE, BUILD...) never begin one. */
static bool starts_value(uint8_t op)
{
    switch (op) {
    case PKW_MARK: case PKW_NONE: case PKW_NEWTRUE: case PKW_NEWFALSE: case PKW_EMPTY_TUPLE:
    case PKW_EMPTY_LIST: case PKW_EMPTY_DICT:
        return true;
    default:
        return false;
    }
}

void pkw_op(pkw *w, uint8_t op)
{
    if (!usable(w))
        return;
    switch (op) {
    case PKW_MARK: case PKW_STOP: case PKW_NONE: case PKW_NEWTRUE: case PKW_NEWFALSE:
    case PKW_EMPTY_TUPLE: case PKW_TUPLE: case PKW_TUPLE1: case PKW_TUPLE2: case PKW_TUPLE3:
    case PKW_EMPTY_LIST: case PKW_APPEND: case PKW_APPENDS: case PKW_EMPTY_DICT:
    case PKW_SETITEM: case PKW_SETITEMS: case PKW_BUILD: case PKW_REDUCE: case PKW_NEWOBJ:
    case PKW_BINPERSID:
        break;
    default:
        set_err(w, -EINVAL);
        return;
    }
    if (starts_value(op))
        opcode_boundary(w);
    emit_op(w, op);
    /* Python memoizes every container and reduced object right after it is
     * made (empty tuples excepted), before its items or state follow. */
    if (memoized_op(op))
        memoize(w);
}

void pkw_none(pkw *w)
{
    pkw_op(w, PKW_NONE);
}

void pkw_bool(pkw *w, int v)
{
    pkw_op(w, v ? PKW_NEWTRUE : PKW_NEWFALSE);
}

void pkw_int(pkw *w, int64_t v)
{
    if (!usable(w))
        return;
    opcode_boundary(w);
    uint8_t b[10];
    if (v >= 0 && v <= 0xff) {
        b[0] = OP_BININT1;
        b[1] = (uint8_t)v;
        emit(w, b, 2);
    } else if (v >= 0 && v <= 0xffff) {
        b[0] = OP_BININT2;
        put_le(b + 1, (uint64_t)v, 2);
        emit(w, b, 3);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        b[0] = OP_BININT;
        put_le(b + 1, (uint64_t)v, 4);
        emit(w, b, 5);
    } else {
        /* pickle.encode_long: the shortest two's complement that keeps
         * the sign, little-endian. */
        uint64_t u = (uint64_t)v;
        size_t n = 8;
        while (n > 1) {
            uint8_t last = (uint8_t)(u >> (8 * (n - 1)));
            uint8_t below = (uint8_t)(u >> (8 * (n - 2)));
            if ((last == 0x00 && !(below & 0x80)) || (last == 0xff && (below & 0x80)))
                n--;
            else
                break;
        }
        b[0] = OP_LONG1;
        b[1] = (uint8_t)n;
        put_le(b + 2, u, n);
        emit(w, b, 2 + n);
    }
}

void pkw_float(pkw *w, double v)
{
    if (!usable(w))
        return;
    opcode_boundary(w);
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    uint8_t b[9] = { OP_BINFLOAT };
    for (int i = 0; i < 8; i++)
        b[1 + i] = (uint8_t)(bits >> (8 * (7 - i))); /* big-endian */
    emit(w, b, sizeof b);
}

/* A str whose memo entry may already exist; no boundary handling. */
static void write_str(pkw *w, const char *s, size_t n)
{
    if (!pk_utf8_valid(s, n)) {
        set_err(w, -EINVAL);
        return;
    }
    const memo_entry *hit = memo_lookup(w, MEMO_STR, s, n);
    if (hit) {
        memo_get(w, hit->index);
        return;
    }
    uint8_t hdr[9];
    size_t hdrlen;
    if (w->protocol >= 4 && n < 256) {
        hdr[0] = OP_SHORT_BINUNICODE;
        hdr[1] = (uint8_t)n;
        hdrlen = 2;
    } else if (n <= UINT32_MAX) {
        hdr[0] = OP_BINUNICODE;
        put_le(hdr + 1, n, 4);
        hdrlen = 5;
    } else if (w->protocol >= 4) {
        hdr[0] = OP_BINUNICODE8;
        put_le(hdr + 1, n, 8);
        hdrlen = 9;
    } else {
        set_err(w, -EINVAL); /* protocol 2 cannot say it */
        return;
    }
    emit_payload(w, hdr, hdrlen, s, n);
    memoize_as(w, MEMO_STR, s, n);
}

void pkw_str(pkw *w, const char *s)
{
    if (!usable(w))
        return;
    if (!s) {
        set_err(w, -EINVAL);
        return;
    }
    opcode_boundary(w);
    write_str(w, s, strlen(s));
}

void pkw_strn(pkw *w, const char *s, size_t n)
{
    if (!usable(w))
        return;
    if (!s && n) {
        set_err(w, -EINVAL);
        return;
    }
    opcode_boundary(w);
    write_str(w, s ? s : "", n);
}

void pkw_bytes(pkw *w, const void *p, size_t n)
{
    if (!usable(w))
        return;
    if (!p && n) {
        set_err(w, -EINVAL);
        return;
    }
    opcode_boundary(w);
    if (w->protocol < 3) {
        /* Protocol 2 has no bytes opcode: Python writes
         * _codecs.encode(<the bytes as latin-1 text>, 'latin1'), which is
         * also what torch's weights_only loader accepts. */
        size_t cap;
        if (__builtin_mul_overflow(n, 2, &cap)) {
            set_err(w, -ENOMEM);
            return;
        }
        char *text = malloc(cap + 1);
        if (!text) {
            set_err(w, -ENOMEM);
            return;
        }
        const uint8_t *b = p;
        size_t t = 0;
        for (size_t i = 0; i < n; i++) {
            if (b[i] < 0x80) {
                text[t++] = (char)b[i];
            } else {
                text[t++] = (char)(0xC0 | (b[i] >> 6));
                text[t++] = (char)(0x80 | (b[i] & 0x3F));
            }
        }
        pkw_global(w, "_codecs", "encode");
        write_str(w, text, t);
        free(text);
        write_str(w, "latin1", 6);
        emit_op(w, PKW_TUPLE2);
        memoize(w);
        emit_op(w, PKW_REDUCE);
        memoize(w);
        return;
    }
    uint8_t hdr[9];
    size_t hdrlen;
    if (n < 256) {
        hdr[0] = OP_SHORT_BINBYTES;
        hdr[1] = (uint8_t)n;
        hdrlen = 2;
    } else if (n <= UINT32_MAX) {
        hdr[0] = OP_BINBYTES;
        put_le(hdr + 1, n, 4);
        hdrlen = 5;
    } else if (w->protocol >= 4) {
        hdr[0] = OP_BINBYTES8;
        put_le(hdr + 1, n, 8);
        hdrlen = 9;
    } else {
        set_err(w, -EINVAL);
        return;
    }
    emit_payload(w, hdr, hdrlen, p, n);
    memoize(w);
}

void pkw_global(pkw *w, const char *module, const char *name)
{
    if (!usable(w))
        return;
    if (!module || !name || !*module || !*name || strchr(module, '\n') ||
        strchr(name, '\n')) {
        set_err(w, -EINVAL);
        return;
    }
    opcode_boundary(w);
    size_t ml = strlen(module), nl = strlen(name), kl;
    if (__builtin_add_overflow(ml, nl + 1, &kl)) {
        set_err(w, -ENOMEM);
        return;
    }
    char *key = malloc(kl + 1);
    if (!key) {
        set_err(w, -ENOMEM);
        return;
    }
    memcpy(key, module, ml);
    key[ml] = '\n';
    memcpy(key + ml + 1, name, nl + 1);

    const memo_entry *hit = memo_lookup(w, MEMO_GLOBAL, key, kl);
    if (hit) {
        memo_get(w, hit->index);
    } else if (!pk_utf8_valid(key, kl)) {
        set_err(w, -EINVAL);
    } else {
        if (w->protocol >= 4) {
            write_str(w, module, ml);
            write_str(w, name, nl);
            emit_op(w, OP_STACK_GLOBAL);
        } else {
            /* GLOBAL 'module\nname\n' */
            emit_op(w, OP_GLOBAL);
            emit(w, key, kl);
            emit(w, "\n", 1);
        }
        memoize_as(w, MEMO_GLOBAL, key, kl);
    }
    free(key);
}

int pkw_finish(pkw *w, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (!w)
        return -EINVAL;
    if (!usable(w))
        return w->err;
    emit_op(w, PKW_STOP);
    commit_frame(w);
    if (w->err)
        return w->err;
    *out = w->buf;
    *len = w->len;
    w->buf = NULL;
    w->len = w->cap = 0;
    w->finished = true;
    return 0;
}
