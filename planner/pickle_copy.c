/* Re-emitting parsed pickle values (see pickle_copy.h), in the order
 * Python's save_reduce and batching write them. */
#include "pickle_copy.h"

#include <errno.h>
#include <stdlib.h>

#define BATCH 1000 /* pickle's _BATCHSIZE */

static void emit(pkw *w, const pk_value *v, const pkc_subst *subs, size_t nsubs);

static void emit_items(pkw *w, const pk_value *list, const pkc_subst *subs, size_t nsubs)
{
    size_t n = pk_seq_len(list);
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        if (m > 1)
            pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < m; j++)
            emit(w, pk_seq_at(list, i + j), subs, nsubs);
        pkw_op(w, m > 1 ? PKW_APPENDS : PKW_APPEND);
    }
}

static void emit_dictitems(pkw *w, const pk_value *d, const pkc_subst *subs, size_t nsubs)
{
    size_t n = d->u.dict.len;
    for (size_t i = 0; i < n; i += BATCH) {
        size_t m = n - i < BATCH ? n - i : BATCH;
        if (m > 1)
            pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < m; j++) {
            emit(w, d->u.dict.keys[i + j], subs, nsubs);
            emit(w, d->u.dict.vals[i + j], subs, nsubs);
        }
        pkw_op(w, m > 1 ? PKW_SETITEMS : PKW_SETITEM);
    }
}

static void emit_tuple(pkw *w, const pk_value *t, const pkc_subst *subs, size_t nsubs)
{
    static const uint8_t small[] = { PKW_EMPTY_TUPLE, PKW_TUPLE1, PKW_TUPLE2, PKW_TUPLE3 };
    size_t n = pk_seq_len(t);
    if (n > 3)
        pkw_op(w, PKW_MARK);
    for (size_t i = 0; i < n; i++)
        emit(w, pk_seq_at(t, i), subs, nsubs);
    pkw_op(w, n <= 3 ? small[n] : PKW_TUPLE);
}

static void emit(pkw *w, const pk_value *v, const pkc_subst *subs, size_t nsubs)
{
    for (size_t i = 0; i < nsubs; i++)
        if (subs[i].at == v) {
            v = subs[i].with;
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
        emit_tuple(w, v, subs, nsubs);
        break;
    case PK_LIST:
        pkw_op(w, PKW_EMPTY_LIST);
        emit_items(w, v, subs, nsubs);
        break;
    case PK_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_dictitems(w, v, subs, nsubs);
        break;
    case PK_GLOBAL:
        pkw_global(w, v->u.global.module, v->u.global.name);
        break;
    case PK_OBJECT:
        emit(w, v->u.obj.callable, subs, nsubs);
        emit(w, v->u.obj.args, subs, nsubs);
        pkw_op(w, v->u.obj.newobj ? PKW_NEWOBJ : PKW_REDUCE);
        if (v->u.obj.items)
            emit_items(w, v->u.obj.items, subs, nsubs);
        if (v->u.obj.dictitems)
            emit_dictitems(w, v->u.obj.dictitems, subs, nsubs);
        if (v->u.obj.state) {
            emit(w, v->u.obj.state, subs, nsubs);
            pkw_op(w, PKW_BUILD);
        }
        break;
    case PK_PERSID:
        emit(w, v->u.persid.pid, subs, nsubs);
        pkw_op(w, PKW_BINPERSID);
        break;
    }
}

void pkc_emit(pkw *w, const pk_value *v, const pkc_subst *subs, size_t nsubs)
{
    emit(w, v, subs, nsubs);
}

int pkc_encode(const pk_value *v, uint8_t **out, size_t *len)
{
    pkw *w = pkw_new(4);
    if (!w)
        return -ENOMEM;
    emit(w, v, NULL, 0);
    int rc = pkw_finish(w, out, len);
    pkw_free(w);
    return rc;
}
