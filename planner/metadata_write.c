/* The `.metadata` pickle (see metadata_write.h), emitted in the order
 * torch's pickler emits it: dataclasses as NEWOBJ(cls, ()) + BUILD(dict of
 * the fields that are not None), dicts in SETITEMS batches of 1000 as
 * Python's pickler batches them. */
#include "metadata_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle.h"
#include "pickle_copy.h"
#include "pickle_write.h"

#define MD_113 "torch.distributed._shard.checkpoint.metadata"
#define BATCH 1000 /* pickle's _BATCHSIZE */

typedef struct {
    pkw *w;
    char *err;
    size_t errlen;
    int rc;
    const ck_md *md;
    const ck_dcp_dialect *d;
    pk_doc **props;           /* the dialect's TensorProperties, parsed on first use */
    const pk_value *template; /* what new keys' properties copy, or NULL */
    pkc_subst template_subs[2];
    size_t ntemplate_subs;
} md_ctx;

static const pk_value false_value = { .kind = PK_BOOL, .u.b = false };

static const char *module(md_ctx *c, ck_md_class cls)
{
    return ck_dialect_module(c->d, cls);
}

static const ck_md_key *key_at(const ck_md *md, size_t i)
{
    return &md->keys[md->order ? md->order[i] : i];
}

static int fail(md_ctx *c, const char *fqn, const char *why)
{
    if (!c->rc) {
        snprintf(c->err, c->errlen, "cannot write metadata for key %s: %s", fqn ? fqn : "?", why);
        c->rc = -EINVAL;
    }
    return c->rc;
}

static void emit_u64(md_ctx *c, uint64_t v, const char *fqn)
{
    if (v > INT64_MAX) {
        fail(c, fqn, "a size exceeds 2^63");
        return;
    }
    pkw_int(c->w, (int64_t)v);
}

/* Items already on the stack after begin_tuple(n) become one tuple. */
static void begin_tuple(pkw *w, size_t n)
{
    if (n > 3)
        pkw_op(w, PKW_MARK);
}

static void end_tuple(pkw *w, size_t n)
{
    static const uint8_t small[] = { PKW_EMPTY_TUPLE, PKW_TUPLE1, PKW_TUPLE2, PKW_TUPLE3 };
    pkw_op(w, n <= 3 ? small[n] : PKW_TUPLE);
}

/* torch.Size(dims): REDUCE(torch.Size, (tuple_of_ints,)) */
static void emit_size(md_ctx *c, uint32_t n, const uint64_t *d, const char *fqn)
{
    pkw_global(c->w, "torch", "Size");
    begin_tuple(c->w, n);
    for (uint32_t i = 0; i < n; i++)
        emit_u64(c, d[i], fqn);
    end_tuple(c->w, n);
    pkw_op(c->w, PKW_TUPLE1);
    pkw_op(c->w, PKW_REDUCE);
}

/* NEWOBJ(module.name, ()) : the object whose BUILD state follows */
static void begin_object(pkw *w, const char *module, const char *name)
{
    pkw_global(w, module, name);
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_NEWOBJ);
}

/* A dataclass as torch pickles it with two or more fields set: the object,
 * then its state dict as EMPTY_DICT MARK name value ... SETITEMS BUILD. */
static void begin_fields(pkw *w, const char *module, const char *name)
{
    begin_object(w, module, name);
    pkw_op(w, PKW_EMPTY_DICT);
    pkw_op(w, PKW_MARK);
}

static void end_fields(pkw *w)
{
    pkw_op(w, PKW_SETITEMS);
    pkw_op(w, PKW_BUILD);
}

static bool has_field(const ck_dcp_dialect *d, const char *name)
{
    for (uint32_t i = 0; d && i < d->nfields; i++)
        if (strcmp(d->fields[i].name, name) == 0)
            return true;
    return false;
}

/* What torch writes for a tensor of a checkpoint with no properties to
 * follow: TensorProperties(dtype, strided, requires_grad=False,
 * contiguous, pin_memory=False).  Torch 2.4 and later (StorageMeta) define
 * it beside Metadata; torch 1.13 to 2.3 pickle the one of
 * torch.distributed._shard.sharded_tensor.metadata, which every version
 * since 1.13 still has. */
static void emit_default_properties(md_ctx *c, const ck_dtype_info *dt)
{
    const char *md = module(c, CK_MDC_METADATA);
    bool old = strcmp(md, MD_113) == 0 || (c->d && !has_field(c->d, "storage_meta"));
    const char *pmod = old ? "torch.distributed._shard.sharded_tensor.metadata" : md;
    begin_object(c->w, pmod, "TensorProperties");
    pkw_op(c->w, PKW_MARK);
    pkw_global(c->w, "torch", dt->torch_name);
    pkw_global(c->w, "torch.serialization", "_get_layout");
    pkw_str(c->w, "torch.strided");
    pkw_op(c->w, PKW_TUPLE1);
    pkw_op(c->w, PKW_REDUCE);
    pkw_bool(c->w, 0); /* requires_grad */
    pkw_global(c->w, pmod, old ? "MEM_FORMAT_ENCODING" : "_MEM_FORMAT_ENCODING");
    pkw_int(c->w, 0); /* TORCH_CONTIGUOUS_FORMAT */
    pkw_op(c->w, PKW_TUPLE1);
    pkw_op(c->w, PKW_REDUCE);
    pkw_bool(c->w, 0); /* pin_memory */
    pkw_op(c->w, PKW_TUPLE);
    pkw_op(c->w, PKW_BUILD);
}

/* A field of a TensorProperties: its __getstate__ tuple (dtype, layout,
 * requires_grad, memory format, pin_memory) or a plain dataclass dict. */
static const pk_value *props_field(const pk_value *props, const char *name, size_t idx)
{
    if (!props || props->kind != PK_OBJECT || !props->u.obj.state)
        return NULL;
    const pk_value *st = props->u.obj.state;
    if (st->kind == PK_TUPLE)
        return pk_seq_at(st, idx);
    if (st->kind == PK_DICT)
        return pk_dict_get(st, name);
    return NULL;
}

static const pk_value *props_value(md_ctx *c, uint32_t i)
{
    if (!c->props[i]) {
        char why[128];
        if (pk_parse(c->d->props[i].pkl, c->d->props[i].len, &c->props[i], why, sizeof why))
            return NULL;
    }
    return pk_root(c->props[i]);
}

static bool is_false(const pk_value *v)
{
    return !v || (v->kind == PK_BOOL && !v->u.b);
}

/* New keys take the properties of a key that needs no grad and is not
 * pinned, else those of the first key with both set false. */
static void choose_template(md_ctx *c)
{
    if (!c->d)
        return;
    for (uint32_t i = 0; i < c->d->nprops; i++) {
        const pk_value *v = props_value(c, i);
        if (v && is_false(props_field(v, "requires_grad", 2)) &&
            is_false(props_field(v, "pin_memory", 4))) {
            c->template = v;
            return;
        }
    }
    const pk_value *v = c->d->nprops ? props_value(c, 0) : NULL;
    if (!v)
        return;
    c->template = v;
    const pk_value *rg = props_field(v, "requires_grad", 2), *pin = props_field(v, "pin_memory", 4);
    if (rg)
        c->template_subs[c->ntemplate_subs++] = (pkc_subst){ rg, &false_value };
    if (pin)
        c->template_subs[c->ntemplate_subs++] = (pkc_subst){ pin, &false_value };
}

static void emit_properties(md_ctx *c, const ck_md_key *k)
{
    const ck_dtype_info *dt = ck_dtype_get(k->dtype);
    if (!dt) {
        fail(c, k->fqn, "unknown dtype");
        return;
    }
    const pk_value *v = NULL;
    pkc_subst subs[3];
    size_t n = 0;
    if (k->props_id && c->d && k->props_id <= c->d->nprops) {
        v = props_value(c, k->props_id - 1);
        if (!v) {
            fail(c, k->fqn, "its kept tensor properties do not parse");
            return;
        }
    } else if (c->template) {
        v = c->template;
        memcpy(subs, c->template_subs, c->ntemplate_subs * sizeof *subs);
        n = c->ntemplate_subs;
    }
    if (!v) {
        emit_default_properties(c, dt);
        return;
    }
    /* the same object with this key's dtype */
    const pk_value *old = props_field(v, "dtype", 0);
    pk_value dtype = { .kind = PK_GLOBAL };
    dtype.u.global.module = (char *)"torch";
    dtype.u.global.name = (char *)dt->torch_name;
    if (!old || old->kind != PK_GLOBAL) {
        fail(c, k->fqn, "its kept tensor properties hold no dtype");
        return;
    }
    if (strcmp(old->u.global.module, "torch") || strcmp(old->u.global.name, dt->torch_name))
        subs[n++] = (pkc_subst){ old, &dtype };
    pkc_emit(c->w, v, subs, n);
}

static void emit_tensor_md(md_ctx *c, const ck_md_key *k)
{
    if (k->ndim > CK_MAX_DIMS) {
        fail(c, k->fqn, "too many dimensions");
        return;
    }
    begin_fields(c->w, module(c, CK_MDC_TENSOR), "TensorStorageMetadata");
    pkw_str(c->w, "properties");
    emit_properties(c, k);
    pkw_str(c->w, "size");
    emit_size(c, k->ndim, k->shape, k->fqn);
    pkw_str(c->w, "chunks");
    pkw_op(c->w, PKW_EMPTY_LIST);
    for (uint32_t i = 0; i < k->nchunks; i++) {
        if (i % BATCH == 0 && k->nchunks - i > 1)
            pkw_op(c->w, PKW_MARK);
        begin_fields(c->w, module(c, CK_MDC_CHUNK), "ChunkStorageMetadata");
        pkw_str(c->w, "offsets");
        emit_size(c, k->ndim, k->chunks[i].offsets, k->fqn);
        pkw_str(c->w, "sizes");
        emit_size(c, k->ndim, k->chunks[i].sizes, k->fqn);
        end_fields(c->w);
        /* pickle appends a lone item with APPEND, a batch with APPENDS */
        uint32_t batch_start = i - i % BATCH;
        uint32_t batch_len = k->nchunks - batch_start < BATCH ? k->nchunks - batch_start : BATCH;
        if (i == batch_start + batch_len - 1)
            pkw_op(c->w, batch_len > 1 ? PKW_APPENDS : PKW_APPEND);
    }
    end_fields(c->w);
}

/* Dict entries come in batches: MARK k v k v ... SETITEMS, or k v SETITEM
 * for a batch of one. */
static void batch_open(pkw *w, size_t i, size_t n)
{
    if (i % BATCH == 0 && n - i > 1)
        pkw_op(w, PKW_MARK);
}

static void batch_close(pkw *w, size_t i, size_t n)
{
    size_t start = i - i % BATCH;
    size_t len = n - start < BATCH ? n - start : BATCH;
    if (i == start + len - 1)
        pkw_op(w, len > 1 ? PKW_SETITEMS : PKW_SETITEM);
}

static void emit_state_dict_metadata(md_ctx *c, const ck_md *md)
{
    pkw_op(c->w, PKW_EMPTY_DICT);
    for (size_t i = 0; i < md->nkeys && !c->rc; i++) {
        const ck_md_key *k = key_at(md, i);
        batch_open(c->w, i, md->nkeys);
        pkw_str(c->w, k->fqn);
        if (k->kind == CK_KEY_BYTES) {
            if (k->nchunks != 1)
                fail(c, k->fqn, "a bytes entry needs exactly one item");
            begin_object(c->w, module(c, CK_MDC_BYTES), "BytesStorageMetadata");
        } else {
            emit_tensor_md(c, k);
        }
        batch_close(c->w, i, md->nkeys);
    }
}

static bool has_planner_entry(const ck_md_key *k)
{
    return k->planner_kind != CK_PD_ABSENT || k->planner_path;
}

static void emit_planner_path(md_ctx *c, const ck_md_key *k)
{
    if (k->planner_kind == CK_PD_NONE) {
        pkw_none(c->w);
        return;
    }
    bool list = k->planner_kind == CK_PD_LIST;
    if (list) {
        pkw_op(c->w, PKW_EMPTY_LIST);
        if (k->planner_path_len > 1)
            pkw_op(c->w, PKW_MARK);
    } else {
        begin_tuple(c->w, k->planner_path_len);
    }
    for (uint32_t j = 0; j < k->planner_path_len; j++) {
        const char *s = k->planner_path ? k->planner_path[j] : NULL;
        if (!s) {
            fail(c, k->fqn, "planner path element missing");
            return;
        }
        if (k->planner_path_is_int && k->planner_path_is_int[j]) {
            char *end;
            errno = 0;
            long long v = strtoll(s, &end, 10);
            if (errno || *end || end == s)
                fail(c, k->fqn, "planner path element is not an int");
            pkw_int(c->w, v);
        } else {
            pkw_str(c->w, s);
        }
    }
    if (list) {
        if (k->planner_path_len)
            pkw_op(c->w, k->planner_path_len > 1 ? PKW_APPENDS : PKW_APPEND);
    } else {
        end_tuple(c->w, k->planner_path_len);
    }
}

static void emit_planner_data(md_ctx *c, const ck_md *md)
{
    size_t n = 0, at = 0;
    for (size_t i = 0; i < md->nkeys; i++)
        n += has_planner_entry(&md->keys[i]);
    pkw_op(c->w, PKW_EMPTY_DICT);
    for (size_t i = 0; i < md->nkeys && !c->rc; i++) {
        const ck_md_key *k = key_at(md, i);
        if (!has_planner_entry(k))
            continue;
        batch_open(c->w, at, n);
        pkw_str(c->w, k->fqn);
        emit_planner_path(c, k);
        batch_close(c->w, at, n);
        at++;
    }
}

static void emit_storage_entry(md_ctx *c, const ck_md_key *k, uint32_t idx)
{
    const ck_md_chunk *ch = &k->chunks[idx];
    /* MetadataIndex{fqn, index, offset}; bytes entries have no offset and
     * index None, exactly as torch pickles them */
    begin_fields(c->w, module(c, CK_MDC_INDEX), "MetadataIndex");
    pkw_str(c->w, "fqn");
    pkw_str(c->w, k->fqn);
    pkw_str(c->w, "index");
    if (k->kind == CK_KEY_BYTES) {
        pkw_none(c->w);
    } else {
        pkw_int(c->w, idx);
        pkw_str(c->w, "offset");
        emit_size(c, k->ndim, ch->offsets, k->fqn);
    }
    end_fields(c->w);

    const ck_md_storage *s = &ch->storage;
    if (!s->relative_path || !s->relative_path[0])
        fail(c, k->fqn, "item without a file");
    if (s->transforms & ~(uint32_t)CK_TF_ZSTD)
        fail(c, k->fqn, "an item has a storage transform ckptfs cannot name");
    begin_fields(c->w, module(c, CK_MDC_STORAGE), "_StorageInfo");
    pkw_str(c->w, "relative_path");
    pkw_str(c->w, s->relative_path ? s->relative_path : "");
    pkw_str(c->w, "offset");
    emit_u64(c, s->offset, k->fqn);
    pkw_str(c->w, "length");
    emit_u64(c, s->length, k->fqn);
    if (s->transforms & CK_TF_ZSTD) {
        /* None is left out of the state (torch 2.11), unless the checkpoint
         * spelt it out; an empty list would not be */
        pkw_str(c->w, "transform_descriptors");
        pkw_op(c->w, PKW_EMPTY_LIST);
        pkw_str(c->w, "stream.zstd/1");
        pkw_op(c->w, PKW_APPEND);
    } else if (c->d && c->d->storage_none_transforms) {
        pkw_str(c->w, "transform_descriptors");
        pkw_none(c->w);
    }
    end_fields(c->w);
}

static void emit_storage_data(md_ctx *c, const ck_md *md)
{
    size_t total = 0;
    for (size_t i = 0; i < md->nkeys; i++)
        total += md->keys[i].nchunks;
    pkw_op(c->w, PKW_EMPTY_DICT);
    size_t n = 0;
    for (size_t i = 0; i < md->nkeys && !c->rc; i++)
        for (uint32_t j = 0; j < key_at(md, i)->nchunks && !c->rc; j++, n++) {
            batch_open(c->w, n, total);
            emit_storage_entry(c, key_at(md, i), j);
            batch_close(c->w, n, total);
        }
}

static void emit_storage_meta(md_ctx *c, const ck_md *md)
{
    if (!md->checkpoint_id) {
        pkw_none(c->w);
        return;
    }
    begin_fields(c->w, module(c, CK_MDC_STORAGE_META), "StorageMeta");
    pkw_str(c->w, "checkpoint_id");
    pkw_str(c->w, md->checkpoint_id);
    pkw_str(c->w, "save_id");
    if (md->save_id)
        pkw_str(c->w, md->save_id);
    else
        pkw_none(c->w);
    pkw_str(c->w, "load_id");
    pkw_none(c->w);
    pkw_str(c->w, "modules");
    pkw_op(c->w, PKW_EMPTY_LIST);
    end_fields(c->w);
}

static void check_keys(md_ctx *c, const ck_md *md)
{
    for (size_t i = 0; i < md->nkeys && !c->rc; i++) {
        const ck_md_key *k = &md->keys[i];
        if (!k->fqn)
            fail(c, NULL, "key without a name");
        else if (k->kind == CK_KEY_BYTES && k->nchunks != 1)
            fail(c, k->fqn, "a bytes entry needs exactly one item");
        else if (k->kind == CK_KEY_TENSOR && !ck_dtype_get(k->dtype))
            fail(c, k->fqn, "unknown dtype");
        else if (k->nchunks && !k->chunks)
            fail(c, k->fqn, "chunks missing");
    }
}

/* A Metadata field kept whole by the dialect; storage_meta gets the new
 * save_id. */
static void emit_kept(md_ctx *c, const ck_md_field *f, bool new_save_id)
{
    pk_doc *doc = NULL;
    char why[128];
    if (pk_parse(f->value.pkl, f->value.len, &doc, why, sizeof why)) {
        fail(c, NULL, "a kept Metadata field does not parse");
        return;
    }
    const pk_value *v = pk_root(doc);
    pkc_subst sub = { NULL, NULL };
    pk_value sid = { .kind = PK_STR };
    if (new_save_id && c->md->save_id) {
        /* StorageMeta(checkpoint_id, save_id, load_id, modules): only
         * save_id is ours to change */
        const pk_value *old = pk_dict_get(pk_object_state_dict(v), "save_id");
        if (old) {
            sid.u.str.data = (char *)c->md->save_id;
            sid.u.str.len = strlen(c->md->save_id);
            sub = (pkc_subst){ old, &sid };
        }
    }
    pkc_emit(c->w, v, &sub, sub.at ? 1 : 0);
    pk_free(doc);
}

static void emit_fields_as_read(md_ctx *c, const ck_md *md)
{
    for (uint32_t i = 0; i < c->d->nfields && !c->rc; i++) {
        const ck_md_field *f = &c->d->fields[i];
        pkw_str(c->w, f->name);
        switch (f->kind) {
        case CK_MDF_STATE_DICT:
            emit_state_dict_metadata(c, md);
            break;
        case CK_MDF_PLANNER:
            emit_planner_data(c, md);
            break;
        case CK_MDF_STORAGE_DATA:
            emit_storage_data(c, md);
            break;
        case CK_MDF_STORAGE_META:
        case CK_MDF_KEPT:
            emit_kept(c, f, f->kind == CK_MDF_STORAGE_META);
            break;
        }
    }
}

int ck_metadata_write(const ck_md *md, uint8_t **out, size_t *len, char *err, size_t errlen)
{
    md_ctx c = { pkw_new(4), err, errlen, 0, md, md->dialect, NULL, NULL, { { 0 } }, 0 };
    if (errlen)
        err[0] = '\0';
    if (!c.w)
        return -ENOMEM;
    if (c.d && !c.d->nfields)
        c.d = NULL; /* nothing read to follow */
    if (c.d && c.d->nprops && !(c.props = calloc(c.d->nprops, sizeof *c.props))) {
        pkw_free(c.w);
        return -ENOMEM;
    }
    choose_template(&c);
    check_keys(&c, md);
    begin_fields(c.w, module(&c, CK_MDC_METADATA), "Metadata");
    if (c.d) {
        emit_fields_as_read(&c, md);
    } else {
        pkw_str(c.w, "state_dict_metadata");
        emit_state_dict_metadata(&c, md);
        pkw_str(c.w, "planner_data");
        emit_planner_data(&c, md);
        pkw_str(c.w, "storage_data");
        emit_storage_data(&c, md);
        pkw_str(c.w, "storage_meta");
        emit_storage_meta(&c, md);
        pkw_str(c.w, "version");
        pkw_str(c.w, "1.0.0");
    }
    end_fields(c.w);
    int rc = pkw_finish(c.w, out, len);
    pkw_free(c.w);
    if (c.props)
        for (uint32_t i = 0; i < c.d->nprops; i++)
            pk_free(c.props[i]);
    free(c.props);
    if (c.rc) {
        if (!rc)
            free(*out);
        *out = NULL;
        return c.rc;
    }
    if (rc && errlen && !err[0])
        snprintf(err, errlen, "cannot write metadata: %s", strerror(-rc));
    return rc;
}

int ck_metadata_write_unchanged(const ck_checkpoint *ck, const char *checkpoint_id,
                                const char *save_id, uint8_t **out, size_t *len, char *err,
                                size_t errlen)
{
    size_t n = ck->nkeys;
    ck_md_key *keys = calloc(n + 1, sizeof *keys);
    ck_md_chunk **chunks = calloc(n + 1, sizeof *chunks);
    size_t *order = calloc(n + 1, sizeof *order); /* index + 1 while filled */
    int rc = keys && chunks && order ? 0 : -ENOMEM;
    for (size_t i = 0; !rc && i < n; i++) {
        const ck_key *k = &ck->keys[i];
        if (!(chunks[i] = calloc((size_t)k->nchunks + 1, sizeof **chunks))) {
            rc = -ENOMEM;
            break;
        }
        for (uint32_t j = 0; j < k->nchunks; j++) {
            const ck_chunk *c = &k->chunks[j];
            chunks[i][j] = (ck_md_chunk){ c->offsets, c->sizes,
                                          { ck->files[c->file].path, c->offset, c->length,
                                            c->transforms } };
        }
        keys[i] = (ck_md_key){ .fqn = k->fqn, .kind = k->kind, .dtype = k->dtype, .ndim = k->ndim,
                               .shape = k->shape, .nchunks = k->nchunks, .chunks = chunks[i],
                               .planner_kind = k->planner_kind, .planner_path = k->planner_path,
                               .planner_path_is_int = k->planner_path_is_int,
                               .planner_path_len = k->planner_path_len, .props_id = k->props_id };
        if (k->md_order >= n || order[k->md_order]) {
            snprintf(err, errlen, "%s: its place in state_dict_metadata is taken", k->fqn);
            rc = -EINVAL;
        } else {
            order[k->md_order] = i + 1;
        }
    }
    for (size_t i = 0; !rc && i < n; i++)
        order[i]--;
    if (!rc) {
        ck_md md = { .keys = keys, .nkeys = n, .order = order, .dialect = ck->dialect,
                     .checkpoint_id = checkpoint_id, .save_id = save_id };
        rc = ck_metadata_write(&md, out, len, err, errlen);
    }
    for (size_t i = 0; chunks && i < n; i++)
        free(chunks[i]);
    free(chunks);
    free(keys);
    free(order);
    return rc;
}
