/* Re-emitting parsed pickle values (see pickle_copy.h), in the order
 * Python's save_reduce and batching write them. */
#include "pickle_copy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define BATCH 1000 /* pickle's _BATCHSIZE */

typedef struct {
    pkw *w;
    const pkc_subst *subs;
    size_t nsubs;
    uint64_t *budget; /* NULL: unbounded */
    bool spent;
} copy_ctx;

static void emit(copy_ctx *c, const pk_value *v);

static void emit_items(copy_ctx *c, const pk_value *list)
{
    pkw *w = c->w;
    size_t n = pk_seq_len(list);
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        if (m > 1)
            pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < m; j++)
            emit(c, pk_seq_at(list, i + j));
        pkw_op(w, m > 1 ? PKW_APPENDS : PKW_APPEND);
    }
}

static void emit_dictitems(copy_ctx *c, const pk_value *d)
{
    pkw *w = c->w;
    size_t n = d->u.dict.len;
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        if (m > 1)
            pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < m; j++) {
            emit(c, d->u.dict.keys[i + j]);
            emit(c, d->u.dict.vals[i + j]);
        }
        pkw_op(w, m > 1 ? PKW_SETITEMS : PKW_SETITEM);
    }
}

static void emit_tuple(copy_ctx *c, const pk_value *t)
{
    pkw *w = c->w;
    static const uint8_t small[] = { PKW_EMPTY_TUPLE, PKW_TUPLE1, PKW_TUPLE2, PKW_TUPLE3 };
    size_t n = pk_seq_len(t);
    if (n > 3)
        pkw_op(w, PKW_MARK);
    for (size_t i = 0; i < n; i++)
        emit(c, pk_seq_at(t, i));
    pkw_op(w, n <= 3 ? small[n] : PKW_TUPLE);
}

static void emit(copy_ctx *c, const pk_value *v)
{
    pkw *w = c->w;
    if (c->spent)
        return;
    if (c->budget) {
        if (*c->budget == 0) {
            c->spent = true;
            return;
        }
        (*c->budget)--;
    }
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].at == v) {
            v = c->subs[i].with;
            break;
        }
    if (!v) {
        pkw_none(w);
        return;
    }
    switch (v->kind) {
    case PK_NONE:
        pkw_none(w);
        break;
    case PK_BOOL:
        pkw_bool(w, v->u.b);
        break;
    case PK_INT:
        pkw_int(w, v->u.i);
        break;
    case PK_FLOAT:
        pkw_float(w, v->u.f);
        break;
    case PK_STR:
        pkw_strn(w, v->u.str.data, v->u.str.len);
        break;
    case PK_BYTES:
        pkw_bytes(w, v->u.str.data, v->u.str.len);
        break;
    case PK_TUPLE:
        emit_tuple(c, v);
        break;
    case PK_LIST:
        pkw_op(w, PKW_EMPTY_LIST);
        emit_items(c, v);
        break;
    case PK_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_dictitems(c, v);
        break;
    case PK_GLOBAL:
        pkw_global(w, v->u.global.module, v->u.global.name);
        break;
    case PK_OBJECT:
        emit(c, v->u.obj.callable);
        emit(c, v->u.obj.args);
        pkw_op(w, v->u.obj.newobj ? PKW_NEWOBJ : PKW_REDUCE);
        if (v->u.obj.items)
            emit_items(c, v->u.obj.items);
        if (v->u.obj.dictitems)
            emit_dictitems(c, v->u.obj.dictitems);
        if (v->u.obj.state) {
            emit(c, v->u.obj.state);
            pkw_op(w, PKW_BUILD);
        }
        break;
    case PK_PERSID:
        emit(c, v->u.persid.pid);
        pkw_op(w, PKW_BINPERSID);
        break;
    case PK_OPAQUE:
        c->spent = true; /* a streaming reader's note has no pickle form */
        break;
    }
}

void pkc_emit(pkw *w, const pk_value *v, const pkc_subst *subs, size_t nsubs)
{
    copy_ctx c = { w, subs, nsubs, NULL, false };
    emit(&c, v);
}

int pkc_encode(const pk_value *v, uint64_t *budget, uint8_t **out, size_t *len)
{
    pkw *w = pkw_new(4);
    if (!w)
        return -ENOMEM;
    copy_ctx c = { w, NULL, 0, budget, false };
    emit(&c, v);
    int rc = pkw_finish(w, out, len);
    pkw_free(w);
    if (!rc && c.spent) {
        free(*out);
        *out = NULL;
        rc = -E2BIG;
    }
    return rc;
}
