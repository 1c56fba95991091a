/* A pickle writer for the two dialects torch reads back from us:
 * protocol 2 as torch.save writes data.pkl (GLOBAL, BINUNICODE, BINPUT), and
 * protocol 4 as DCP writes .metadata (STACK_GLOBAL, SHORT_BINUNICODE,
 * MEMOIZE).  The caller emits values in pickle order; globals are memoized
 * so each class path appears once.  Errors are sticky: check pkw_finish. */
#ifndef CKPT_PICKLE_WRITE_H
#define CKPT_PICKLE_WRITE_H

#include <stddef.h>
#include <stdint.h>

/* Raw opcodes the caller may emit with pkw_op. */
enum {
    PKW_MARK = '(', PKW_STOP = '.', PKW_NONE = 'N', PKW_NEWTRUE = 0x88, PKW_NEWFALSE = 0x89,
    PKW_EMPTY_TUPLE = ')', PKW_TUPLE = 't', PKW_TUPLE1 = 0x85, PKW_TUPLE2 = 0x86,
    PKW_TUPLE3 = 0x87, PKW_EMPTY_LIST = ']', PKW_APPEND = 'a', PKW_APPENDS = 'e',
    PKW_EMPTY_DICT = '}', PKW_SETITEM = 's', PKW_SETITEMS = 'u', PKW_BUILD = 'b',
    PKW_REDUCE = 'R', PKW_NEWOBJ = 0x81, PKW_BINPERSID = 'Q',
};

typedef struct pkw pkw;

/* protocol: 2 or 4.  Returns NULL on out of memory. */
pkw *pkw_new(int protocol);
void pkw_free(pkw *w);
void pkw_op(pkw *w, uint8_t op);
void pkw_none(pkw *w);
void pkw_bool(pkw *w, int v);
void pkw_int(pkw *w, int64_t v);       /* BININT1/BININT2/BININT/LONG1 as pickle does */
void pkw_float(pkw *w, double v);      /* BINFLOAT */
void pkw_str(pkw *w, const char *s);   /* unicode; memoized like pickle (BINPUT/MEMOIZE) */
void pkw_strn(pkw *w, const char *s, size_t n); /* the same for n bytes that may hold NUL */
void pkw_bytes(pkw *w, const void *p, size_t n);
void pkw_global(pkw *w, const char *module, const char *name); /* memoized */
/* Appends STOP; on success *out (malloc'd) and *len; 0 or -ENOMEM/-EINVAL. */
int pkw_finish(pkw *w, uint8_t **out, size_t *len);

#endif
