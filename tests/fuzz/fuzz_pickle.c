/* libFuzzer target: the restricted pickle reader (`.metadata`, data.pkl).
 * Any input must parse or be refused with an error line; on success every
 * value is walked so that a malformed tree (dangling item, bad length)
 * shows up under ASan. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pickle.h"

static uint64_t walk(const pk_value *v, unsigned depth)
{
    if (!v || depth > PK_MAX_DEPTH + 8)
        return 0;
    uint64_t h = (uint64_t)v->kind;
    switch (v->kind) {
    case PK_STR:
    case PK_BYTES:
        /* the reader promises a NUL after len bytes */
        h += v->u.str.len + (unsigned char)v->u.str.data[v->u.str.len];
        if (v->kind == PK_STR)
            h += pk_utf8_valid(v->u.str.data, v->u.str.len);
        break;
    case PK_TUPLE:
    case PK_LIST:
        for (size_t i = 0; i < pk_seq_len(v); i++)
            h += walk(pk_seq_at(v, i), depth + 1);
        break;
    case PK_DICT:
        for (size_t i = 0; i < v->u.dict.len; i++)
            h += walk(v->u.dict.keys[i], depth + 1) + walk(v->u.dict.vals[i], depth + 1);
        h += pk_dict_get(v, "state_dict_metadata") != NULL;
        break;
    case PK_GLOBAL:
        h += strlen(v->u.global.module) + strlen(v->u.global.name);
        break;
    case PK_OBJECT:
        h += walk(v->u.obj.callable, depth + 1) + walk(v->u.obj.args, depth + 1) +
             walk(v->u.obj.state, depth + 1) + walk(v->u.obj.items, depth + 1) +
             walk(v->u.obj.dictitems, depth + 1);
        h += pk_object_state_dict(v) != NULL;
        h += pk_is_object_of(v, "torch", "Size");
        break;
    case PK_PERSID:
        h += walk(v->u.persid.pid, depth + 1);
        break;
    case PK_INT: {
        int64_t i;
        h += pk_as_int(v, &i) == 0 ? (uint64_t)i : 0;
        break;
    }
    default:
        break;
    }
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pk_doc *doc = NULL;
    char err[256] = "";
    int rc = pk_parse(data, size, &doc, err, sizeof err);
    if (rc == 0) {
        volatile uint64_t sink = walk(pk_root(doc), 0);
        (void)sink;
        pk_free(doc);
    } else if (!err[0]) {
        fprintf(stderr, "pk_parse failed (%d) without a reason: '%s'\n", rc, err);
        __builtin_trap();
    }
    return 0;
}
