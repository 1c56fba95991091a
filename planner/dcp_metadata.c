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
#include "hash.h"
#include "pickle.h"

#define METADATA_MAX_BYTES (4ull << 30)

typedef struct stream stream;

typedef struct {
    ck_checkpoint *ck;
    char *err;
    size_t errlen;
    stream *s; /* while streaming: keys are looked up there */
} dcp_ctx;

/* What a list of ChunkStorageMetadata became while streaming (a
 * PK_OPAQUE in the chunks list): the chunks, in the checkpoint's arena. */
typedef struct {
    ck_chunk *chunks;
    uint32_t n, ndim;
} chunk_batch;

/* Keys built while parsing (see ck_build_dcp). */
struct stream {
    dcp_ctx *c;
    bool gave_up;          /* something the tree path must judge: parse again */
    const pk_value *sdm, *sd; /* the dicts the batches went into */
    ck_key *keys;
    size_t nkeys, cap;
    uint64_t *slots;       /* fqn -> hash << 32 | key index + 1, open addressing */
    size_t nslots;
    uint64_t batches_made, batches_used;
};

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
    size_t items = pk_seq_len(chunks), n = 0;
    const chunk_batch *only = NULL;
    for (size_t i = 0; i < items; i++) {
        const pk_value *it = pk_seq_at(chunks, i);
        if (it->kind != PK_OPAQUE) {
            n++;
            continue;
        }
        const chunk_batch *cb = it->u.opaque.ptr;
        if (!c->s || cb->ndim != k->ndim)
            return fail(c, "key %s: chunk rank differs from the tensor's", k->fqn);
        c->s->batches_used++;
        n += cb->n;
        only = items == 1 ? cb : NULL;
    }
    if (n > UINT32_MAX)
        return fail(c, "key %s: too many chunks", k->fqn);
    k->nchunks = (uint32_t)n;
    if (only) {
        k->chunks = only->chunks; /* the usual streamed case: no copy */
        return 0;
    }
    k->chunks = ck_arena_calloc(c->ck->arena, n ? n : 1, sizeof *k->chunks);
    if (!k->chunks)
        return -ENOMEM;
    for (size_t i = 0, at = 0; i < items; i++, at++) {
        const pk_value *it = pk_seq_at(chunks, i);
        if (it->kind == PK_OPAQUE) {
            const chunk_batch *cb = it->u.opaque.ptr;
            memcpy(&k->chunks[at], cb->chunks, cb->n * sizeof *cb->chunks);
            at += cb->n - 1;
            continue;
        }
        const pk_value *cf = fields_of(it);
        if (i == 0 && (rc = ck_dialect_note_class(c->ck, CK_MDC_CHUNK, it)))
            return rc;
        if (!cf)
            return fail(c, "key %s: chunk is not a ChunkStorageMetadata", k->fqn);
        ck_chunk *ch = &k->chunks[at];
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

/* One state_dict_metadata entry, the i-th: name kv, value v. */
static int build_key(dcp_ctx *c, ck_key *k, size_t i, const pk_value *kv, const pk_value *v)
{
    ck_checkpoint *ck = c->ck;
    {
        const char *fqn = pk_as_str(kv);
        if (!fqn && kv->kind == PK_STR)
            return fail(c, "key '%s' holds a NUL byte after those characters", kv->u.str.data);
        if (!fqn)
            return fail(c, "a key is not a string");
        k->fqn = ck_arena_strdup(ck->arena, fqn);
        if (!k->fqn)
            return -ENOMEM;
        k->md_order = i;
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
            return 0;
        }
        const pk_value *fields = fields_of(v);
        if (!cls || !fields)
            return fail(c, "key %s: neither tensor nor bytes metadata", fqn);
        return build_tensor_key(c, k, fields);
    }
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
        int rc = build_key(c, &ck->keys[i], i, sdm->u.dict.keys[i], sdm->u.dict.vals[i]);
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

static ck_key *stream_find(stream *s, const char *fqn);

/* One storage_data entry: MetadataIndex miv -> _StorageInfo siv. */
static int build_storage_entry(dcp_ctx *c, const pk_value *miv, const pk_value *siv)
{
    ck_checkpoint *ck = c->ck;
    {
        const pk_value *mi = fields_of(miv);
        const pk_value *si = fields_of(siv);
        int rc = ck_dialect_note_class(ck, CK_MDC_INDEX, miv);
        if (!rc)
            rc = ck_dialect_note_class(ck, CK_MDC_STORAGE, siv);
        if (rc)
            return rc;
        if (!mi || !si)
            return fail(c, "storage_data entry is not MetadataIndex -> _StorageInfo");
        const char *fqn = pk_as_str(pk_dict_get(mi, "fqn"));
        ck_key *k = !fqn ? NULL : c->s ? stream_find(c->s, fqn) : (ck_key *)ck_find_key(ck, fqn);
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
        return read_transforms(c, td, &ch->transforms);
    }
}

/* Every chunk named by some storage_data entry. */
static int check_storage(dcp_ctx *c)
{
    ck_checkpoint *ck = c->ck;
    for (size_t i = 0; i < ck->nkeys; i++)
        for (uint32_t j = 0; j < ck->keys[i].nchunks; j++)
            if (ck->keys[i].chunks[j].file == UINT32_MAX)
                return fail(c, "key %s has a chunk with no storage", ck->keys[i].fqn);
    return 0;
}

static int build_storage(dcp_ctx *c, const pk_value *sd)
{
    if (!sd || sd->kind != PK_DICT)
        return fail(c, "storage_data is not a dict");
    for (size_t i = 0; i < sd->u.dict.len; i++) {
        int rc = build_storage_entry(c, sd->u.dict.keys[i], sd->u.dict.vals[i]);
        if (rc)
            return rc;
    }
    return check_storage(c);
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

/* ---- streaming --------------------------------------------------------
 *
 * The value tree of a big .metadata is far larger than the keys made of
 * it (~700 bytes per chunk), so the keys are built while parsing: each
 * finished SETITEMS batch of state_dict_metadata or storage_data entries
 * and each APPENDS batch of chunks becomes the checkpoint's structures,
 * and the parser gives the batch's memory back (pk_hooks).  Only the
 * shapes torch writes are taken that way; anything else, and any fault,
 * makes the stream give up, and the document is read again as a whole
 * tree, so that odd inputs keep their exact behaviour and messages. */

/* A slot holds the low half of its key's hash above the key's index + 1:
 * the slot is picked by those bits (an index never has more than 2^32
 * slots), so a grown index is refilled without hashing a name again, and
 * a probe compares names only where the halves agree. */
#define SLOT_TAG(h) ((uint32_t)(h))

static ck_key *stream_find_hashed(stream *s, const char *fqn, uint64_t h)
{
    if (!s->nslots)
        return NULL;
    size_t at = SLOT_TAG(h) & (s->nslots - 1);
    while (s->slots[at]) {
        ck_key *k = &s->keys[(uint32_t)s->slots[at] - 1];
        if (s->slots[at] >> 32 == SLOT_TAG(h) && strcmp(k->fqn, fqn) == 0)
            return k;
        at = (at + 1) & (s->nslots - 1);
    }
    return NULL;
}

static ck_key *stream_find(stream *s, const char *fqn)
{
    return stream_find_hashed(s, fqn, ck_fnv1a_str(fqn));
}

static void stream_index(stream *s, size_t i, uint64_t h)
{
    size_t at = SLOT_TAG(h) & (s->nslots - 1);
    while (s->slots[at])
        at = (at + 1) & (s->nslots - 1);
    s->slots[at] = (uint64_t)SLOT_TAG(h) << 32 | ((uint32_t)i + 1);
}

/* Room for one more key, keeping the index at most half full. */
static int stream_grow(stream *s)
{
    if (s->nkeys >= UINT32_MAX - 1)
        return -E2BIG;
    if (s->nkeys == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 256;
        ck_key *nk = ncap > SIZE_MAX / sizeof *nk ? NULL : realloc(s->keys, ncap * sizeof *nk);
        if (!nk)
            return -ENOMEM;
        s->keys = nk;
        s->cap = ncap;
    }
    if ((s->nkeys + 1) * 2 > s->nslots) {
        size_t n = s->nslots ? s->nslots * 2 : 512;
        uint64_t *ns = calloc(n, sizeof *ns);
        if (!ns)
            return -ENOMEM;
        uint64_t *old = s->slots;
        size_t oldn = s->nslots;
        s->slots = ns;
        s->nslots = n;
        for (size_t j = 0; j < oldn; j++)
            if (old[j])
                stream_index(s, (uint32_t)old[j] - 1, old[j] >> 32);
        free(old);
    }
    return 0;
}

static int stream_key(stream *s, const pk_value *kv, const pk_value *v)
{
    int rc = stream_grow(s);
    if (rc)
        return rc;
    ck_key *k = &s->keys[s->nkeys];
    memset(k, 0, sizeof *k);
    if ((rc = build_key(s->c, k, s->nkeys, kv, v)))
        return rc;
    uint64_t h = ck_fnv1a_str(k->fqn);
    if (stream_find_hashed(s, k->fqn, h))
        return -EINVAL; /* a duplicate: the tree path names it */
    stream_index(s, s->nkeys++, h);
    return 0;
}

/* A batch of chunks, or NULL when any is not the plain shape. */
static chunk_batch *stream_chunks(stream *s, const pk_batch *b, size_t n)
{
    ck_checkpoint *ck = s->c->ck;
    if (n == 0 || n > UINT32_MAX)
        return NULL;
    chunk_batch *cb = ck_arena_calloc(ck->arena, 1, sizeof *cb);
    if (!cb || !(cb->chunks = ck_arena_calloc(ck->arena, n, sizeof *cb->chunks)))
        return NULL;
    cb->n = (uint32_t)n;
    for (size_t i = 0; i < n; i++) {
        const pk_value *v = pk_batch_at(b, i);
        const char *cls = class_name(v);
        const pk_value *cf = fields_of(v);
        if (!cls || strcmp(cls, "ChunkStorageMetadata") != 0 || !cf)
            return NULL;
        uint32_t nd = i ? cb->ndim : UINT32_MAX;
        ck_chunk *ch = &cb->chunks[i];
        if (read_dims(s->c, pk_dict_get(cf, "offsets"), "?", &nd, &ch->offsets) ||
            read_dims(s->c, pk_dict_get(cf, "sizes"), "?", &nd, &ch->sizes))
            return NULL;
        cb->ndim = nd;
        ch->file = UINT32_MAX;
    }
    if (ck_dialect_note_class(ck, CK_MDC_CHUNK, pk_batch_at(b, 0)))
        return NULL;
    return cb;
}

static int on_items(void *ctx, const pk_value *target, const pk_batch *b, size_t n, void **opaque)
{
    stream *s = ctx;
    if (target->kind == PK_LIST) {
        chunk_batch *cb = stream_chunks(s, b, n);
        if (!cb)
            return PK_HOOK_KEEP;
        s->batches_made++;
        *opaque = cb;
        return PK_HOOK_OPAQUE;
    }
    if (n == 0)
        return PK_HOOK_KEEP;
    const pk_value *k0 = pk_batch_at(b, 0), *v0 = pk_batch_at(b, 1);
    const char *kc = class_name(k0), *vc = class_name(v0);
    bool sdm = k0->kind == PK_STR && vc &&
               (!strcmp(vc, "TensorStorageMetadata") || !strcmp(vc, "BytesStorageMetadata"));
    bool sd = kc && !strcmp(kc, "MetadataIndex");
    if (!sdm && !sd)
        return PK_HOOK_KEEP;
    const pk_value **mine = sdm ? &s->sdm : &s->sd;
    if (*mine && *mine != target)
        goto give_up; /* a second such dict: not a shape torch writes */
    *mine = target;
    for (size_t i = 0; i < n; i += 2) {
        int rc = sdm ? stream_key(s, pk_batch_at(b, i), pk_batch_at(b, i + 1))
                     : build_storage_entry(s->c, pk_batch_at(b, i), pk_batch_at(b, i + 1));
        if (rc)
            goto give_up;
    }
    /* TensorProperties seen are compared by pointer: this batch's go away */
    ck_dialect_forget_seen(s->c->ck);
    return PK_HOOK_TAKEN;
give_up:
    s->gave_up = true;
    return -ECANCELED;
}

static void stream_free(stream *s)
{
    free(s->keys);
    free(s->slots);
}

/* Whether what was streamed is exactly the document's state_dict_metadata
 * and storage_data, and every chunk batch went into a key. */
static bool stream_fits(const stream *s, const pk_value *fields)
{
    const pk_value *sdm = pk_dict_get(fields, "state_dict_metadata");
    const pk_value *sd = pk_dict_get(fields, "storage_data");
    if (s->sdm != sdm || !sdm || sdm->u.dict.len || s->batches_made != s->batches_used)
        return false;
    if (s->sd)
        return s->sd == sd && !sd->u.dict.len;
    /* no entry streamed: only right for a checkpoint without chunks */
    return sd && sd->kind == PK_DICT && !sd->u.dict.len;
}

static int build_rest(dcp_ctx *c, const pk_value *fields)
{
    ck_checkpoint *ck = c->ck;
    int rc = build_planner_data(c, pk_dict_get(fields, "planner_data"));
    if (!rc && (rc = ck_dialect_note_fields(ck, fields)) && rc != -ENOMEM)
        rc = fail(c, "Metadata's fields are too large or not named by strings");
    const char *ver = pk_as_str(pk_dict_get(fields, "version"));
    if (!rc && ver && !(ck->version = ck_arena_strdup(ck->arena, ver)))
        rc = -ENOMEM;
    return rc;
}

/* The streamed parse.  1: start over with the whole tree; else the
 * result, with err set on failure. */
static int build_streamed(dcp_ctx *c, const uint8_t *buf, size_t len)
{
    ck_checkpoint *ck = c->ck;
    stream s = { .c = c };
    pk_hooks hooks = { &s, on_items };
    pk_doc *doc = NULL;
    char why[256] = "";
    if (!ck_dialect_new(ck))
        return -ENOMEM;
    c->s = &s;
    int rc = pk_parse_hooked(buf, len, &hooks, &doc, why, sizeof why);
    c->s = NULL;
    if (rc && !s.gave_up) {
        stream_free(&s);
        snprintf(c->err, c->errlen, "%s/.metadata: corrupt metadata: %s", ck->source, why);
        return -EINVAL;
    }
    const pk_value *root = rc ? NULL : pk_root(doc);
    const char *cls = class_name(root);
    const pk_value *fields = fields_of(root);
    if (rc || !cls || strcmp(cls, "Metadata") != 0 || !fields || !stream_fits(&s, fields) ||
        ck_dialect_note_class(ck, CK_MDC_METADATA, root)) {
        stream_free(&s);
        pk_free(doc);
        return 1;
    }
    ck->kind = CK_SRC_DCP;
    ck->nkeys = s.nkeys;
    ck->keys = ck_arena_calloc(ck->arena, s.nkeys ? s.nkeys : 1, sizeof *ck->keys);
    if (!ck->keys)
        rc = -ENOMEM;
    else if (s.nkeys)
        memcpy(ck->keys, s.keys, s.nkeys * sizeof *ck->keys);
    stream_free(&s);
    if (!rc) {
        ck_sort_keys(ck);
        rc = check_storage(c);
    }
    if (!rc)
        rc = build_rest(c, fields);
    ck_dialect_parse_done(ck);
    pk_free(doc);
    return rc;
}

int ck_build_dcp(ck_checkpoint *ck, bool whole_tree, char *err, size_t errlen)
{
    dcp_ctx c = { ck, err, errlen, NULL };
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
    rc = whole_tree ? 1 : build_streamed(&c, buf, len);
    if (rc != 1) {
        ck->metadata_streamed = rc == 0;
        free(buf);
        return rc;
    }
    /* start over from nothing: what the stream added is not ours */
    ck_forget_files(ck);
    ck->kind = 0;
    ck->nkeys = 0;
    ck->keys = NULL;
    ck->version = NULL;
    if (err && errlen)
        err[0] = '\0';
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
            rc = build_rest(&c, fields);
    }
    ck_dialect_parse_done(ck);
    pk_free(doc);
    return rc;
}
