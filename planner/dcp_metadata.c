/* The DCP model from `.metadata`: a pickled Metadata dataclass.  Only the
 * shape of the pickle is trusted, never its class paths beyond the names we
 * expect, so older layouts (no version, storage_meta or transform
 * descriptors; `torch strided` globals) read the same way. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arena.h"
#include "ckpt_build.h"
#include "dcp_dialect.h"
#include "pickle.h"

#define METADATA_MAX_BYTES (4ull << 30)

typedef struct {
    ck_checkpoint *ck;
    char *err;
    size_t errlen;
} dcp_ctx;

__attribute__((format(printf, 2, 3))) static int fail(dcp_ctx *c, const char *fmt, ...)
{
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s/.metadata: corrupt metadata: %s", c->ck->source, msg);
    return -EINVAL;
}

/* A dataclass's fields: BUILD state as a dict, or (None, slots-dict). */
static const pk_value *fields_of(const pk_value *obj)
{
    const pk_value *st = pk_object_state_dict(obj);
    if (st)
        return st;
    if (obj && obj->kind == PK_OBJECT && obj->u.obj.state && pk_seq_len(obj->u.obj.state) == 2) {
        const pk_value *d = pk_seq_at(obj->u.obj.state, 1);
        if (d && d->kind == PK_DICT)
            return d;
    }
    return NULL;
}

static const char *class_name(const pk_value *obj)
{
    if (!obj || obj->kind != PK_OBJECT || !obj->u.obj.callable ||
        obj->u.obj.callable->kind != PK_GLOBAL)
        return NULL;
    return obj->u.obj.callable->u.global.name;
}

/* torch.Size(...) is REDUCE(torch.Size, (tuple,)); plain tuples/lists too. */
static const pk_value *size_tuple(const pk_value *v)
{
    if (!v)
        return NULL;
    if (v->kind == PK_TUPLE || v->kind == PK_LIST)
        return v;
    if (v->kind == PK_OBJECT && pk_seq_len(v->u.obj.args) == 1) {
        const pk_value *t = pk_seq_at(v->u.obj.args, 0);
        if (t && (t->kind == PK_TUPLE || t->kind == PK_LIST))
            return t;
    }
    return NULL;
}

static int read_dims(dcp_ctx *c, const pk_value *v, const char *fqn, uint32_t *ndim,
                     uint64_t **dims)
{
    const pk_value *t = size_tuple(v);
    if (!t)
        return fail(c, "key %s: size is not a torch.Size", fqn);
    size_t n = pk_seq_len(t);
    if (n > CK_MAX_DIMS)
        return fail(c, "key %s: too many dimensions", fqn);
    uint64_t *d = ck_arena_calloc(c->ck->arena, n ? n : 1, sizeof *d);
    if (!d)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int64_t x;
        if (pk_as_int(pk_seq_at(t, i), &x) || x < 0)
            return fail(c, "key %s: dimension is not a non-negative int", fqn);
        d[i] = (uint64_t)x;
    }
    if (*ndim != UINT32_MAX && *ndim != n)
        return fail(c, "key %s: chunk rank differs from the tensor's", fqn);
    *ndim = (uint32_t)n;
    *dims = d;
    return 0;
}

static ck_dtype dtype_of_properties(const pk_value *props)
{
    const pk_value *dt = NULL;
    if (props && props->kind == PK_OBJECT && props->u.obj.state) {
        const pk_value *st = props->u.obj.state;
        if (st->kind == PK_TUPLE && pk_seq_len(st) >= 1)
            dt = pk_seq_at(st, 0);
        else if (st->kind == PK_DICT)
            dt = pk_dict_get(st, "dtype");
    }
    if (!dt || dt->kind != PK_GLOBAL || strcmp(dt->u.global.module, "torch") != 0)
        return CK_DT_INVALID;
    return ck_dtype_from_torch_name(dt->u.global.name);
}

static int build_tensor_key(dcp_ctx *c, ck_key *k, const pk_value *fields)
{
    k->kind = CK_KEY_TENSOR;
    const pk_value *props = pk_dict_get(fields, "properties");
    k->dtype = dtype_of_properties(props);
    if (k->dtype == CK_DT_INVALID)
        return fail(c, "key %s: unknown dtype", k->fqn);
    /* requires_grad, layout, memory format... go back as they came */
    int rc = ck_dialect_add_properties(c->ck, props, &k->props_id);
    if (rc == -E2BIG || rc == -EINVAL)
        return fail(c, "key %s: its properties are too large or not a value", k->fqn);
    if (rc)
        return rc;
    k->ndim = UINT32_MAX;
    rc = read_dims(c, pk_dict_get(fields, "size"), k->fqn, &k->ndim, &k->shape);
    if (rc)
        return rc;
    if (ck_key_compute_size(k))
        return fail(c, "key %s: shape too large", k->fqn);
    const pk_value *chunks = pk_dict_get(fields, "chunks");
    if (!chunks || (chunks->kind != PK_LIST && chunks->kind != PK_TUPLE))
        return fail(c, "key %s: chunks is not a list", k->fqn);
    size_t n = pk_seq_len(chunks);
    if (n > UINT32_MAX)
        return fail(c, "key %s: too many chunks", k->fqn);
    k->nchunks = (uint32_t)n;
    k->chunks = ck_arena_calloc(c->ck->arena, n ? n : 1, sizeof *k->chunks);
    if (!k->chunks)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const pk_value *cf = fields_of(pk_seq_at(chunks, i));
        if (i == 0 && (rc = ck_dialect_note_class(c->ck, CK_MDC_CHUNK, pk_seq_at(chunks, i))))
            return rc;
        if (!cf)
            return fail(c, "key %s: chunk is not a ChunkStorageMetadata", k->fqn);
        ck_chunk *ch = &k->chunks[i];
        uint32_t nd = k->ndim;
        rc = read_dims(c, pk_dict_get(cf, "offsets"), k->fqn, &nd, &ch->offsets);
        if (!rc)
            rc = read_dims(c, pk_dict_get(cf, "sizes"), k->fqn, &nd, &ch->sizes);
        if (rc)
            return rc;
        ch->file = UINT32_MAX; /* until storage_data names it */
    }
    return 0;
}

static int build_keys(dcp_ctx *c, const pk_value *sdm)
{
    ck_checkpoint *ck = c->ck;
    if (!sdm || sdm->kind != PK_DICT)
        return fail(c, "state_dict_metadata is not a dict");
    ck->nkeys = sdm->u.dict.len;
    ck->keys = ck_arena_calloc(ck->arena, ck->nkeys ? ck->nkeys : 1, sizeof *ck->keys);
    if (!ck->keys)
        return -ENOMEM;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const pk_value *kv = sdm->u.dict.keys[i];
        const char *fqn = pk_as_str(kv);
        if (!fqn && kv->kind == PK_STR)
            return fail(c, "key '%s' holds a NUL byte after those characters", kv->u.str.data);
        if (!fqn)
            return fail(c, "a key is not a string");
        ck_key *k = &ck->keys[i];
        k->fqn = ck_arena_strdup(ck->arena, fqn);
        if (!k->fqn)
            return -ENOMEM;
        k->md_order = i;
        const pk_value *v = sdm->u.dict.vals[i];
        const char *cls = class_name(v);
        bool is_bytes = cls && strcmp(cls, "BytesStorageMetadata") == 0;
        int rc = ck_dialect_note_class(ck, is_bytes ? CK_MDC_BYTES : CK_MDC_TENSOR, v);
        if (rc)
            return rc;
        if (is_bytes) {
            k->kind = CK_KEY_BYTES;
            k->nchunks = 1;
            k->chunks = ck_arena_calloc(ck->arena, 1, sizeof *k->chunks);
            if (!k->chunks)
                return -ENOMEM;
            k->chunks[0].file = UINT32_MAX;
            continue;
        }
        const pk_value *fields = fields_of(v);
        if (!cls || !fields)
            return fail(c, "key %s: neither tensor nor bytes metadata", fqn);
        rc = build_tensor_key(c, k, fields);
        if (rc)
            return rc;
    }
    return 0;
}

/* A pickled dict may repeat a key (Python would keep the last one
 * silently); two entries for one FQN are refused here, before storage_data
 * is matched to them, so the message names the real fault. */
static int refuse_duplicates(dcp_ctx *c)
{
    for (size_t i = 1; i < c->ck->nkeys; i++)
        if (strcmp(c->ck->keys[i - 1].fqn, c->ck->keys[i].fqn) == 0)
            return fail(c, "key %s appears twice in state_dict_metadata", c->ck->keys[i].fqn);
    return 0;
}

static int chunk_for_index(const ck_key *k, const pk_value *offset, const pk_value *index)
{
    int64_t idx;
    if (k->kind == CK_KEY_BYTES)
        return 0;
    if (index && !pk_as_int(index, &idx) && idx >= 0 && (uint64_t)idx < k->nchunks)
        return (int)idx;
    /* no usable index: match the offsets, as torch's lookup falls back to */
    const pk_value *t = size_tuple(offset);
    if (!t || pk_seq_len(t) != k->ndim)
        return -1;
    for (uint32_t i = 0; i < k->nchunks; i++) {
        uint32_t d = 0;
        for (; d < k->ndim; d++) {
            int64_t x;
            if (pk_as_int(pk_seq_at(t, d), &x) || (uint64_t)x != k->chunks[i].offsets[d])
                break;
        }
        if (d == k->ndim)
            return (int)i;
    }
    return -1;
}

static int read_transforms(dcp_ctx *c, const pk_value *td, uint32_t *out)
{
    *out = 0;
    if (!td || td->kind == PK_NONE)
        return 0;
    if (td->kind != PK_LIST && td->kind != PK_TUPLE)
        return fail(c, "transform_descriptors is not a list");
    for (size_t i = 0; i < pk_seq_len(td); i++) {
        const char *s = pk_as_str(pk_seq_at(td, i));
        if (!s)
            return fail(c, "transform descriptor is not a string");
        if (strcmp(s, "stream.zstd/1") == 0 || strcmp(s, "stream.zstd") == 0)
            *out |= CK_TF_ZSTD;
        else
            *out |= CK_TF_UNKNOWN;
    }
    return 0;
}

static int build_storage(dcp_ctx *c, const pk_value *sd)
{
    ck_checkpoint *ck = c->ck;
    if (!sd || sd->kind != PK_DICT)
        return fail(c, "storage_data is not a dict");
    for (size_t i = 0; i < sd->u.dict.len; i++) {
        const pk_value *mi = fields_of(sd->u.dict.keys[i]);
        const pk_value *si = fields_of(sd->u.dict.vals[i]);
        int rc = ck_dialect_note_class(ck, CK_MDC_INDEX, sd->u.dict.keys[i]);
        if (!rc)
            rc = ck_dialect_note_class(ck, CK_MDC_STORAGE, sd->u.dict.vals[i]);
        if (rc)
            return rc;
        if (!mi || !si)
            return fail(c, "storage_data entry is not MetadataIndex -> _StorageInfo");
        const char *fqn = pk_as_str(pk_dict_get(mi, "fqn"));
        ck_key *k = fqn ? (ck_key *)ck_find_key(ck, fqn) : NULL;
        if (!k)
            return fail(c, "storage_data names unknown key %s", fqn ? fqn : "?");
        int ci = chunk_for_index(k, pk_dict_get(mi, "offset"), pk_dict_get(mi, "index"));
        if (ci < 0)
            return fail(c, "storage_data entry of %s matches no chunk", k->fqn);
        ck_chunk *ch = &k->chunks[ci];
        const char *rel = pk_as_str(pk_dict_get(si, "relative_path"));
        int64_t off, len;
        if (!rel || pk_as_int(pk_dict_get(si, "offset"), &off) ||
            pk_as_int(pk_dict_get(si, "length"), &len) || off < 0 || len < 0)
            return fail(c, "storage of %s lacks path, offset or length", k->fqn);
        rc = ck_add_file(ck, rel, &ch->file);
        if (rc == -EINVAL) {
            snprintf(c->err, c->errlen, "%s/.metadata: storage path %s of key %s leaves the checkpoint directory",
                     ck->source, rel, k->fqn);
            return rc;
        }
        if (rc)
            return rc;
        ch->offset = (uint64_t)off;
        ch->length = (uint64_t)len;
        ch->format = CK_ITEM_TORCH_SAVE;
        const pk_value *td = pk_dict_get(si, "transform_descriptors");
        if (td && td->kind == PK_NONE && ck->dialect)
            ck->dialect->storage_none_transforms = true;
        rc = read_transforms(c, td, &ch->transforms);
        if (rc)
            return rc;
    }
    for (size_t i = 0; i < ck->nkeys; i++)
        for (uint32_t j = 0; j < ck->keys[i].nchunks; j++)
            if (ck->keys[i].chunks[j].file == UINT32_MAX)
                return fail(c, "key %s has a chunk with no storage", ck->keys[i].fqn);
    return 0;
}

/* planner_data as DefaultSavePlanner writes it: FQN -> path of the key in
 * the nested state dict (tuple or list of str/int), or None.  Anything
 * else -- torch 1.13's None for the whole field, a custom planner's data --
 * is not ours to interpret: the dialect keeps it verbatim. */
static bool planner_entry_ok(const pk_value *v)
{
    if (v->kind == PK_NONE)
        return true;
    if (v->kind != PK_TUPLE && v->kind != PK_LIST)
        return false;
    for (size_t j = 0; j < pk_seq_len(v); j++) {
        const pk_value *e = pk_seq_at(v, j);
        if (!pk_as_str(e) && e->kind != PK_INT)
            return false;
    }
    return true;
}

static int build_planner_data(dcp_ctx *c, const pk_value *pd)
{
    if (!pd || pd->kind != PK_DICT)
        return 0; /* optional */
    for (size_t i = 0; i < pd->u.dict.len; i++)
        if (!pk_as_str(pd->u.dict.keys[i]) || !planner_entry_ok(pd->u.dict.vals[i]))
            return 0;
    if (c->ck->dialect)
        c->ck->dialect->planner_is_dict = true;
    for (size_t i = 0; i < pd->u.dict.len; i++) {
        const char *fqn = pk_as_str(pd->u.dict.keys[i]);
        ck_key *k = (ck_key *)ck_find_key(c->ck, fqn);
        const pk_value *path = pd->u.dict.vals[i];
        if (!k)
            continue; /* an entry of no key: nothing to keep it for */
        if (path->kind == PK_NONE) {
            k->planner_kind = CK_PD_NONE;
            continue;
        }
        k->planner_kind = path->kind == PK_LIST ? CK_PD_LIST : CK_PD_TUPLE;
        size_t n = pk_seq_len(path);
        k->planner_path = ck_arena_calloc(c->ck->arena, n ? n : 1, sizeof(char *));
        k->planner_path_is_int = ck_arena_calloc(c->ck->arena, n ? n : 1, 1);
        if (!k->planner_path || !k->planner_path_is_int)
            return -ENOMEM;
        for (size_t j = 0; j < n; j++) {
            const pk_value *e = pk_seq_at(path, j);
            char num[32];
            int64_t x;
            const char *s = pk_as_str(e);
            if (!s && e->kind == PK_INT && !pk_as_int(e, &x)) {
                snprintf(num, sizeof num, "%" PRId64, x);
                s = num;
                k->planner_path_is_int[j] = 1;
            }
            if (!s)
                return fail(c, "planner_data of %s holds a non-string", fqn);
            k->planner_path[j] = ck_arena_strdup(c->ck->arena, s);
            if (!k->planner_path[j])
                return -ENOMEM;
        }
        k->planner_path_len = (uint32_t)n;
    }
    return 0;
}

int ck_build_dcp(ck_checkpoint *ck, char *err, size_t errlen)
{
    dcp_ctx c = { ck, err, errlen };
    uint8_t *buf;
    size_t len;
    int rc = ck_storage_read_whole(ck->storage, ".metadata", METADATA_MAX_BYTES, &buf, &len,
                                   &ck->metadata_info);
    if (rc == -EFBIG)
        rc = -EINVAL;
    if (rc == -EXDEV) {
        snprintf(err, errlen, "%s/.metadata: a symlink that leaves the checkpoint directory",
                 ck->source);
        return -EINVAL;
    }
    if (rc) {
        snprintf(err, errlen, "%s/.metadata: cannot read: %s", ck->source, strerror(-rc));
        return rc;
    }
    pk_doc *doc = NULL;
    char why[256] = "";
    rc = pk_parse(buf, len, &doc, why, sizeof why);
    free(buf);
    if (rc) {
        snprintf(err, errlen, "%s/.metadata: corrupt metadata: %s", ck->source, why);
        return -EINVAL;
    }
    const pk_value *root = pk_root(doc);
    const char *cls = class_name(root);
    const pk_value *fields = fields_of(root);
    if (!cls || strcmp(cls, "Metadata") != 0 || !fields) {
        rc = fail(&c, "the pickle is not a DCP Metadata object");
    } else {
        ck->kind = CK_SRC_DCP;
        rc = ck_dialect_new(ck) ? ck_dialect_note_class(ck, CK_MDC_METADATA, root) : -ENOMEM;
        if (!rc)
            rc = build_keys(&c, pk_dict_get(fields, "state_dict_metadata"));
        if (!rc)
            ck_sort_keys(ck); /* storage_data and planner_data look keys up */
        if (!rc)
            rc = refuse_duplicates(&c);
        if (!rc)
            rc = build_storage(&c, pk_dict_get(fields, "storage_data"));
        if (!rc)
            rc = build_planner_data(&c, pk_dict_get(fields, "planner_data"));
        if (!rc && (rc = ck_dialect_note_fields(ck, fields)) && rc != -ENOMEM)
            rc = fail(&c, "Metadata's fields are too large or not named by strings");
        const char *ver = pk_as_str(pk_dict_get(fields, "version"));
        if (!rc && ver && !(ck->version = ck_arena_strdup(ck->arena, ver)))
            rc = -ENOMEM;
    }
    ck_dialect_parse_done(ck);
    pk_free(doc);
    return rc;
}
