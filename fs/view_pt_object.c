/* Non-tensor values of a .pt view (see view_pt_object.h).  Only values
 * weights_only=True accepts are inlined: None, bool, int, float, str, bytes
 * (protocol 2's _codecs.encode form), tuple, list, dict,
 * collections.OrderedDict, and tensors (_rebuild_tensor_v2/_v3 and
 * _rebuild_parameter over torch's storage classes), whose storages are
 * served from the payload's own records exactly as stored (strides,
 * offsets, dtype and sharing kept).  Anything else leaves the value out. */
#include "view_pt_object.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "chunk_reader.h"
#include "zip_reader.h"

#define PT_MAX_PAYLOAD (64u << 20) /* bytes entries larger than this are not inlined */
#define PT_MAX_OBJ_DEPTH 64

/* Protocol 2 has no bytes opcode: Python pickles bytes as
 * _codecs.encode(<the bytes as latin-1 text>, "latin1").  The text, if v is
 * that (every code point below 256), else NULL. */
static const pk_value *latin1_bytes(const pk_value *v)
{
    if (!pk_is_object_of(v, "_codecs", "encode") || v->u.obj.newobj || v->u.obj.state ||
        v->u.obj.items || v->u.obj.dictitems || pk_seq_len(v->u.obj.args) != 2)
        return NULL;
    const pk_value *text = pk_seq_at(v->u.obj.args, 0);
    const char *enc = pk_as_str(pk_seq_at(v->u.obj.args, 1));
    if (text->kind != PK_STR || !enc || strcmp(enc, "latin1") != 0)
        return NULL;
    /* UTF-8 of code points < 256: ASCII, or 0xC2/0xC3 lead bytes */
    const unsigned char *t = (const unsigned char *)text->u.str.data;
    for (size_t i = 0; i < text->u.str.len; i++) {
        if (t[i] < 0x80)
            continue;
        if ((t[i] != 0xC2 && t[i] != 0xC3) || i + 1 >= text->u.str.len)
            return NULL;
        i++;
    }
    return text;
}

static void emit_latin1_bytes(pkw *w, const pk_value *text)
{
    const unsigned char *t = (const unsigned char *)text->u.str.data;
    uint8_t *b = malloc(text->u.str.len ? text->u.str.len : 1);
    if (!b) {
        pkw_op(w, 0); /* out of memory: make the writer fail */
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < text->u.str.len; i++) {
        if (t[i] < 0x80) {
            b[n++] = t[i];
        } else { /* checked by latin1_bytes: a 2-byte sequence */
            b[n++] = (uint8_t)(((t[i] & 0x03) << 6) | (t[i + 1] & 0x3F));
            i++;
        }
    }
    pkw_bytes(w, b, n);
    free(b);
}

void fs_pt_object_clear(fs_pt_object *o)
{
    pk_free(o->doc);
    for (size_t i = 0; i < o->nst; i++)
        free(o->st[i].key);
    free(o->st);
    memset(o, 0, sizeof *o);
}

typedef struct {
    size_t budget;
    const uint8_t *payload;
    uint64_t len;
    fs_pt_object *obj;
    int err; /* -ENOMEM */
} inl_ctx;

static bool storage_class_ok(const pk_value *g)
{
    if (!g || g->kind != PK_GLOBAL)
        return false;
    if (strcmp(g->u.global.module, "torch.storage") == 0)
        return strcmp(g->u.global.name, "UntypedStorage") == 0;
    return strcmp(g->u.global.module, "torch") == 0 &&
           ck_dtype_from_storage_class(g->u.global.name) != CK_DT_INVALID;
}

static bool dtype_global_ok(const pk_value *g)
{
    return strcmp(g->u.global.module, "torch") == 0 &&
           ck_dtype_from_torch_name(g->u.global.name) != CK_DT_INVALID;
}

/* ('storage', torch.XStorage, key, location, numel) naming a record of the
 * payload: remembered (once per key) for the archive. */
static bool storage_ok(inl_ctx *c, const pk_value *pid)
{
    if (pid->kind != PK_TUPLE || pid->u.seq.len != 5)
        return false;
    const char *kind = pk_as_str(pid->u.seq.items[0]);
    const char *key = pk_as_str(pid->u.seq.items[2]);
    int64_t numel;
    if (!kind || strcmp(kind, "storage") != 0 || !storage_class_ok(pid->u.seq.items[1]) || !key ||
        !*key || strchr(key, '/') || !pk_as_str(pid->u.seq.items[3]) ||
        pk_as_int(pid->u.seq.items[4], &numel) != 0 || numel < 0)
        return false;
    for (size_t i = 0; i < c->obj->nst; i++)
        if (strcmp(c->obj->st[i].key, key) == 0)
            return true;
    char suffix[64], err[256];
    if ((size_t)snprintf(suffix, sizeof suffix, "/data/%s", key) >= sizeof suffix)
        return false;
    ck_zip_member m;
    ck_byte_source src = ck_byte_source_mem(c->payload, c->len);
    if (ck_zip_find(&src, suffix, &m, err, sizeof err) != 0)
        return false;
    fs_pt_storage *st = realloc(c->obj->st, (c->obj->nst + 1) * sizeof *st);
    char *k = strdup(key);
    if (!st || !k) {
        free(k);
        if (st)
            c->obj->st = st;
        c->err = -ENOMEM;
        return false;
    }
    c->obj->st = st;
    st[c->obj->nst++] = (fs_pt_storage){ k, m.data_offset, m.size,
                                      (uint32_t)crc32_z(0, c->payload + m.data_offset, m.size),
                                      SIZE_MAX };
    return true;
}

static bool plain_object(const pk_value *v)
{
    return !v->u.obj.newobj && !v->u.obj.items && !v->u.obj.dictitems &&
           (!v->u.obj.state || v->u.obj.state->kind == PK_NONE);
}

static bool is_rebuild_tensor(const pk_value *v)
{
    return pk_is_object_of(v, "torch._utils", "_rebuild_tensor_v2") ||
           pk_is_object_of(v, "torch._utils", "_rebuild_tensor_v3");
}

static bool inlinable(inl_ctx *c, const pk_value *v, int depth)
{
    if (depth > PT_MAX_OBJ_DEPTH || c->budget-- == 0)
        return false;
    switch (v->kind) {
    case PK_NONE: case PK_BOOL: case PK_INT: case PK_FLOAT: case PK_BYTES:
        return true;
    case PK_STR:
        return pk_as_str(v) != NULL;
    case PK_GLOBAL:
        return dtype_global_ok(v); /* _rebuild_tensor_v3's dtype */
    case PK_TUPLE: case PK_LIST:
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (!inlinable(c, v->u.seq.items[i], depth + 1))
                return false;
        return true;
    case PK_DICT:
        for (size_t i = 0; i < v->u.dict.len; i++)
            if (!inlinable(c, v->u.dict.keys[i], depth + 1) ||
                !inlinable(c, v->u.dict.vals[i], depth + 1))
                return false;
        return true;
    case PK_OBJECT: {
        if (latin1_bytes(v))
            return true;
        const pk_value *args = v->u.obj.args;
        size_t n = pk_seq_len(args);
        if (is_rebuild_tensor(v)) {
            /* (storage, offset, size, stride, requires_grad, hooks[, dtype]) */
            if (!plain_object(v) || n < 6 || args->kind != PK_TUPLE ||
                args->u.seq.items[0]->kind != PK_PERSID ||
                !storage_ok(c, args->u.seq.items[0]->u.persid.pid))
                return false;
            for (size_t i = 1; i < n; i++)
                if (!inlinable(c, args->u.seq.items[i], depth + 1))
                    return false;
            return true;
        }
        if (pk_is_object_of(v, "torch._utils", "_rebuild_parameter"))
            return plain_object(v) && n >= 1 && args->kind == PK_TUPLE &&
                   is_rebuild_tensor(args->u.seq.items[0]) && inlinable(c, args, depth + 1);
        /* OrderedDict(): REDUCE with no arguments, then SETITEMS */
        if (!pk_is_object_of(v, "collections", "OrderedDict") || v->u.obj.newobj || n != 0 ||
            v->u.obj.items || (v->u.obj.state && v->u.obj.state->kind != PK_NONE))
            return false;
        return !v->u.obj.dictitems || inlinable(c, v->u.obj.dictitems, depth + 1);
    }
    default:
        return false; /* persistent ids outside a tensor, other classes */
    }
}

/* Where the storages an object's tensors need go: the view's tensor list. */
typedef struct {
    fs_pt_tensor *tensors;
    size_t *ntensors;
    fs_pt_object *obj;
    int err;
} obj_emit;

static void emit_value(pkw *w, const pk_value *v, obj_emit *oe);

/* Emits a dict's items (or an OrderedDict's) as pickle batches them. */
static void emit_items(pkw *w, const pk_value *d, obj_emit *oe)
{
    size_t n = d ? d->u.dict.len : 0;
    for (size_t b = 0; b < n; b += FS_PT_BATCH) {
        size_t e = n - b < FS_PT_BATCH ? n : b + FS_PT_BATCH;
        if (e - b > 1)
            pkw_op(w, PKW_MARK);
        for (size_t i = b; i < e; i++) {
            emit_value(w, d->u.dict.keys[i], oe);
            emit_value(w, d->u.dict.vals[i], oe);
        }
        pkw_op(w, e - b > 1 ? PKW_SETITEMS : PKW_SETITEM);
    }
}

static void emit_tuple(pkw *w, const pk_value *v, obj_emit *oe)
{
    size_t n = v->u.seq.len;
    static const uint8_t tuple_n[4] = { PKW_EMPTY_TUPLE, PKW_TUPLE1, PKW_TUPLE2, PKW_TUPLE3 };
    if (n > 3)
        pkw_op(w, PKW_MARK);
    for (size_t i = 0; i < n; i++)
        emit_value(w, v->u.seq.items[i], oe);
    pkw_op(w, n > 3 ? PKW_TUPLE : tuple_n[n]);
}

/* A storage's persistent id, renamed to its record in this archive (added
 * the first time the storage is met). */
static void emit_storage(pkw *w, const pk_value *pid, obj_emit *oe)
{
    const char *key = pk_as_str(pid->u.seq.items[2]);
    fs_pt_storage *st = NULL;
    for (size_t i = 0; i < oe->obj->nst && !st; i++)
        if (strcmp(oe->obj->st[i].key, key) == 0)
            st = &oe->obj->st[i];
    if (st && st->out == SIZE_MAX) {
        fs_pt_tensor *t = &oe->tensors[*oe->ntensors];
        int rc = fs_key_ref_init(&t->ref, oe->obj->key);
        if (rc) {
            oe->err = rc;
            st = NULL;
        } else {
            t->in_payload = true;
            t->payload_off = st->off;
            t->nbytes = st->size;
            t->out_dtype = CK_DT_UINT8; /* raw storage bytes */
            t->crc_preset = true;
            t->crc_value = st->crc;
            st->out = (*oe->ntensors)++;
        }
    }
    if (!st) {
        pkw_op(w, 0); /* out of memory (storage_ok found every key): fail the writer */
        return;
    }
    char name[24];
    snprintf(name, sizeof name, "%zu", st->out);
    const pk_value *cls = pid->u.seq.items[1];
    int64_t numel = 0;
    pk_as_int(pid->u.seq.items[4], &numel);
    pkw_op(w, PKW_MARK);
    pkw_str(w, "storage");
    pkw_global(w, cls->u.global.module, cls->u.global.name);
    pkw_str(w, name);
    pkw_str(w, pk_as_str(pid->u.seq.items[3]));
    pkw_int(w, numel);
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_BINPERSID);
}

static void emit_value(pkw *w, const pk_value *v, obj_emit *oe)
{
    switch (v->kind) {
    case PK_NONE: pkw_none(w); break;
    case PK_BOOL: pkw_bool(w, v->u.b); break;
    case PK_INT: pkw_int(w, v->u.i); break;
    case PK_FLOAT: pkw_float(w, v->u.f); break;
    case PK_STR: pkw_str(w, v->u.str.data); break;
    case PK_BYTES: pkw_bytes(w, v->u.str.data, v->u.str.len); break;
    case PK_GLOBAL: pkw_global(w, v->u.global.module, v->u.global.name); break;
    case PK_PERSID: emit_storage(w, v->u.persid.pid, oe); break;
    case PK_TUPLE: emit_tuple(w, v, oe); break;
    case PK_LIST: {
        size_t n = v->u.seq.len;
        pkw_op(w, PKW_EMPTY_LIST);
        for (size_t b = 0; b < n; b += FS_PT_BATCH) {
            size_t e = n - b < FS_PT_BATCH ? n : b + FS_PT_BATCH;
            if (e - b > 1)
                pkw_op(w, PKW_MARK);
            for (size_t i = b; i < e; i++)
                emit_value(w, v->u.seq.items[i], oe);
            pkw_op(w, e - b > 1 ? PKW_APPENDS : PKW_APPEND);
        }
        break;
    }
    case PK_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_items(w, v, oe);
        break;
    case PK_OBJECT: /* checked by inlinable: bytes, a tensor, OrderedDict */
        if (latin1_bytes(v)) {
            emit_latin1_bytes(w, latin1_bytes(v));
            break;
        }
        emit_value(w, v->u.obj.callable, oe);
        emit_tuple(w, v->u.obj.args, oe);
        pkw_op(w, PKW_REDUCE);
        if (v->u.obj.dictitems)
            emit_items(w, v->u.obj.dictitems, oe);
        break;
    default:
        pkw_op(w, 0); /* cannot happen: makes the writer fail */
        break;
    }
}

/* Parses a bytes entry's payload into o; o->doc is NULL (and 0 returned)
 * when it cannot be inlined. */
int fs_pt_object_load(ck_checkpoint *ck, const ck_key *k, fs_pt_object *o)
{
    memset(o, 0, sizeof *o);
    o->key = k;
    uint64_t size;
    if (k->error || ck_key_size(ck, k, &size) != 0 || size > PT_MAX_PAYLOAD)
        return 0;
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf)
        return -ENOMEM;
    size_t got;
    char err[256];
    ck_zip_member m;
    int rc = 0;
    if (ck_key_read(ck, k, 0, buf, (size_t)size, &got) == 0 && got == size) {
        ck_byte_source src = ck_byte_source_mem(buf, size);
        if (ck_zip_find(&src, "/data.pkl", &m, err, sizeof err) == 0 &&
            pk_parse(buf + m.data_offset, (size_t)m.size, &o->doc, err, sizeof err) == 0) {
            inl_ctx c = { 1u << 20, buf, size, o, 0 };
            if (!inlinable(&c, pk_root(o->doc), 0)) {
                rc = c.err;
                fs_pt_object_clear(o);
                o->key = k;
            }
        }
    }
    free(buf);
    return rc;
}
int fs_pt_object_emit(pkw *w, fs_pt_object *o, fs_pt_tensor *tensors, size_t *ntensors)
{
    obj_emit oe = { tensors, ntensors, o, 0 };
    emit_value(w, pk_root(o->doc), &oe);
    return oe.err;
}
