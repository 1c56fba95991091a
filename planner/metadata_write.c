/* The `.metadata` pickle (see metadata_write.h), emitted in the order
 * torch's pickler emits it: dataclasses as NEWOBJ(cls, ()) + BUILD(dict of
 * the fields that are not None), dicts in SETITEMS batches of 1000 as
 * Python's pickler batches them. */
#include "metadata_write.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pickle_write.h"

#define MD_MODULE "torch.distributed.checkpoint.metadata"
#define FS_MODULE "torch.distributed.checkpoint.filesystem"
#define BATCH 1000 /* pickle's _BATCHSIZE */

typedef struct {
    pkw *w;
    char *err;
    size_t errlen;
    int rc;
} md_ctx;

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

static void emit_properties(md_ctx *c, const ck_md_key *k)
{
    const ck_dtype_info *dt = ck_dtype_get(k->dtype);
    if (!dt) {
        fail(c, k->fqn, "unknown dtype");
        return;
    }
    begin_object(c->w, MD_MODULE, "TensorProperties");
    pkw_op(c->w, PKW_MARK);
    pkw_global(c->w, "torch", dt->torch_name);
    pkw_global(c->w, "torch.serialization", "_get_layout");
    pkw_str(c->w, "torch.strided");
    pkw_op(c->w, PKW_TUPLE1);
    pkw_op(c->w, PKW_REDUCE);
    pkw_bool(c->w, 0); /* requires_grad */
    pkw_global(c->w, MD_MODULE, "_MEM_FORMAT_ENCODING");
    pkw_int(c->w, 0); /* TORCH_CONTIGUOUS_FORMAT */
    pkw_op(c->w, PKW_TUPLE1);
    pkw_op(c->w, PKW_REDUCE);
    pkw_bool(c->w, 0); /* pin_memory */
    pkw_op(c->w, PKW_TUPLE);
    pkw_op(c->w, PKW_BUILD);
}

static void emit_tensor_md(md_ctx *c, const ck_md_key *k)
{
    if (k->ndim > CK_MAX_DIMS) {
        fail(c, k->fqn, "too many dimensions");
        return;
    }
    begin_fields(c->w, MD_MODULE, "TensorStorageMetadata");
    pkw_str(c->w, "properties");
    emit_properties(c, k);
    pkw_str(c->w, "size");
    emit_size(c, k->ndim, k->shape, k->fqn);
    pkw_str(c->w, "chunks");
    pkw_op(c->w, PKW_EMPTY_LIST);
    for (uint32_t i = 0; i < k->nchunks; i++) {
        if (i % BATCH == 0 && k->nchunks - i > 1)
            pkw_op(c->w, PKW_MARK);
        begin_fields(c->w, MD_MODULE, "ChunkStorageMetadata");
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
        const ck_md_key *k = &md->keys[i];
        batch_open(c->w, i, md->nkeys);
        pkw_str(c->w, k->fqn);
        if (k->kind == CK_KEY_BYTES) {
            if (k->nchunks != 1)
                fail(c, k->fqn, "a bytes entry needs exactly one item");
            begin_object(c->w, MD_MODULE, "BytesStorageMetadata");
        } else {
            emit_tensor_md(c, k);
        }
        batch_close(c->w, i, md->nkeys);
    }
}

/* Splits the FQN at '.' when the key carries no path of its own. */
static void emit_planner_path(md_ctx *c, const ck_md_key *k)
{
    if (k->planner_path) {
        begin_tuple(c->w, k->planner_path_len);
        for (uint32_t j = 0; j < k->planner_path_len; j++) {
            const char *s = k->planner_path[j];
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
        end_tuple(c->w, k->planner_path_len);
        return;
    }
    size_t n = 1;
    for (const char *p = k->fqn; *p; p++)
        n += *p == '.';
    begin_tuple(c->w, n);
    const char *p = k->fqn;
    for (size_t j = 0; j < n; j++) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        char *part = strndup(p, len);
        if (!part) {
            c->rc = c->rc ? c->rc : -ENOMEM;
            pkw_none(c->w);
        } else {
            pkw_str(c->w, part);
            free(part);
        }
        p += len + (dot ? 1 : 0);
    }
    end_tuple(c->w, n);
}

static void emit_planner_data(md_ctx *c, const ck_md *md)
{
    pkw_op(c->w, PKW_EMPTY_DICT);
    for (size_t i = 0; i < md->nkeys && !c->rc; i++) {
        batch_open(c->w, i, md->nkeys);
        pkw_str(c->w, md->keys[i].fqn);
        emit_planner_path(c, &md->keys[i]);
        batch_close(c->w, i, md->nkeys);
    }
}

static void emit_storage_entry(md_ctx *c, const ck_md_key *k, uint32_t idx)
{
    const ck_md_chunk *ch = &k->chunks[idx];
    /* MetadataIndex{fqn, index, offset}; bytes entries have no offset and
     * index None, exactly as torch pickles them */
    begin_fields(c->w, MD_MODULE, "MetadataIndex");
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
    begin_fields(c->w, FS_MODULE, "_StorageInfo");
    pkw_str(c->w, "relative_path");
    pkw_str(c->w, s->relative_path ? s->relative_path : "");
    pkw_str(c->w, "offset");
    emit_u64(c, s->offset, k->fqn);
    pkw_str(c->w, "length");
    emit_u64(c, s->length, k->fqn);
    if (s->transforms & CK_TF_ZSTD) {
        /* None is left out of the state; an empty list would not be */
        pkw_str(c->w, "transform_descriptors");
        pkw_op(c->w, PKW_EMPTY_LIST);
        pkw_str(c->w, "stream.zstd/1");
        pkw_op(c->w, PKW_APPEND);
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
        for (uint32_t j = 0; j < md->keys[i].nchunks && !c->rc; j++, n++) {
            batch_open(c->w, n, total);
            emit_storage_entry(c, &md->keys[i], j);
            batch_close(c->w, n, total);
        }
}

static void emit_storage_meta(md_ctx *c, const ck_md *md)
{
    if (!md->checkpoint_id) {
        pkw_none(c->w);
        return;
    }
    begin_fields(c->w, MD_MODULE, "StorageMeta");
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

int ck_metadata_write(const ck_md *md, uint8_t **out, size_t *len, char *err, size_t errlen)
{
    md_ctx c = { pkw_new(4), err, errlen, 0 };
    if (errlen)
        err[0] = '\0';
    if (!c.w)
        return -ENOMEM;
    check_keys(&c, md);
    begin_fields(c.w, MD_MODULE, "Metadata");
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
    end_fields(c.w);
    int rc = pkw_finish(c.w, out, len);
    pkw_free(c.w);
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
