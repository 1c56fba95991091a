/* The torch.save view of a directory (see view_pt.h).
 *
 * Nesting.  dcp_to_torch_save loads with _EmptyStateDictLoadPlanner, which
 * puts each key at its planner_data path with _traverse.set_element: a str
 * path element is a dict key, an int element a list index (lists padded
 * with None).  The same rules are applied here, in FQN order.  A key with
 * no planner_data (safetensors sources, DCP's HF writer), or whose path
 * does not spell its FQN, is a flat FQN key of the top dict.  For DIR.pt
 * the components of DIR are taken off the front of each path first; where
 * DIR ends inside a path element, the rest of that element is the key
 * ("model/layers/0.pt" of ("model", "layers.0.attn.w") holds "attn.w").
 * Keys whose paths collide (a value where another key needs a container)
 * are left out, as are tensors torch.save cannot hold here (quantized
 * dtypes, keys ckptfs cannot read).
 *
 * Non-tensor values.  A DCP bytes entry is a torch.save archive of the
 * object; its data.pkl is parsed by the restricted reader and written again
 * inside the outer pickle, so the archive holds the object itself.  Only
 * values weights_only=True accepts are inlined: None, bool, int, float,
 * str, bytes (protocol 2's _codecs.encode form), tuple, list, dict,
 * collections.OrderedDict, and tensors (_rebuild_tensor_v2/_v3 and
 * _rebuild_parameter over torch's storage classes), whose storages become
 * records of this archive served from the payload's own records, exactly
 * as stored (strides, offsets and dtype kept).  A payload holding anything
 * else (any other class) is left out of the view. */
#include "view_pt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "chunk_reader.h"
#include "pickle.h"
#include "pickle_write.h"
#include "torch_save_writer.h"
#include "view_head.h"
#include "zip_reader.h"

#define ARCHIVE "archive"
#define PT_MAX_PATH 256           /* planner path elements per key */
#define PT_MAX_LIST_INDEX (1u << 24)
#define PT_MAX_PAYLOAD (64u << 20) /* bytes entries larger than this are not inlined */
#define PT_MAX_OBJ_DEPTH 64
#define PT_BATCH 1000             /* pickle's SETITEMS/APPENDS batch */
#define PT_PIECE (1u << 20)

/* ---- the tensor bytes: the one place an output dtype plugs in ---- */

/* The dtype a tensor has in the archive.  -o dtype= (engineer hf's
 * dtype_convert.h) plugs in here: for ck_dtype_is_floating(k->dtype) return
 * the mount's view_dtype, and convert in pt_tensor_read below. */
static ck_dtype pt_out_dtype(const ck_key *k)
{
    return k->dtype;
}

/* Bytes [off, off+len) of tensor t's record: every byte of a tensor the
 * archive serves comes through here (reads, CRCs), so this and pt_out_dtype
 * are the only places an output dtype touches.  With t->out_dtype !=
 * key dtype: the elements [off / out_size, (off + len - 1) / out_size] are
 * read from the key (at element * src_size), converted with
 * ck_dtype_convert(from, to, src, dst, n) into a bounce buffer and the
 * requested bytes copied out (a range may start or end inside an element).
 * crc_from_items already refuses converted records.  Today the record is
 * the key's own bytes. */
static int pt_tensor_read(ck_checkpoint *ck, const fs_pt_tensor *t, bool current, uint64_t off,
                          void *dst, size_t len)
{
    const ck_key *k;
    size_t n;
    int rc = fs_key_ref_get(ck, &t->ref, current, &k);
    /* a storage of a non-tensor value: bytes of that entry's payload, as is
     * (no output dtype: it is not a key's tensor) */
    if (!rc && t->in_payload)
        rc = ck_key_read(ck, k, t->payload_off + off, dst, len, &n);
    else if (!rc)
        rc = ck_key_read(ck, k, off, dst, len, &n);
    if (!rc && n != len)
        rc = -EIO; /* the key is shorter than its dtype and shape say */
    return rc;
}

/* ---- path elements ---- */

typedef struct {
    bool is_int;
    int64_t i;
    const char *s; /* str keys: not NUL-terminated where a suffix of an element */
    size_t len;
} pt_elem;

static bool elem_eq(const pt_elem *a, const pt_elem *b)
{
    if (a->is_int != b->is_int)
        return false;
    return a->is_int ? a->i == b->i : a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
}

static size_t count_dots(const char *s, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += s[i] == '.';
    return d;
}

/* The key's path inside DIR (depth components deep): its planner path if it
 * spells the FQN, else the FQN relative to DIR as one str. */
static size_t rel_path(const ck_key *k, size_t depth, pt_elem *out)
{
    const char *fqn = k->fqn;
    bool usable = k->planner_path && k->planner_path_len > 0 &&
                  k->planner_path_len <= PT_MAX_PATH;
    /* the path must join with '.' to the FQN (DCP's flatten does exactly that) */
    size_t pos = 0;
    for (uint32_t j = 0; usable && j < k->planner_path_len; j++) {
        size_t n = strlen(k->planner_path[j]);
        if (strncmp(fqn + pos, k->planner_path[j], n) != 0)
            usable = false;
        pos += n;
        if (usable && j + 1 < k->planner_path_len)
            usable = fqn[pos++] == '.';
    }
    if (usable && fqn[pos] != '\0')
        usable = false;
    if (!usable) {
        const char *p = fqn;
        for (size_t i = 0; i < depth && p; i++) {
            p = strchr(p, '.');
            p = p ? p + 1 : NULL;
        }
        out[0] = (pt_elem){ .s = p ? p : fqn, .len = strlen(p ? p : fqn) };
        return 1;
    }
    size_t n = 0, skip = depth;
    for (uint32_t j = 0; j < k->planner_path_len; j++) {
        const char *s = k->planner_path[j];
        size_t len = strlen(s);
        size_t comps = 1 + count_dots(s, len);
        if (skip >= comps) {
            skip -= comps;
            continue;
        }
        if (skip > 0) { /* DIR ends inside this element: keep what follows */
            for (; skip > 0; skip--) {
                const char *dot = memchr(s, '.', len);
                len -= (size_t)(dot + 1 - s);
                s = dot + 1;
            }
            out[n++] = (pt_elem){ .s = s, .len = len };
            continue;
        }
        if (k->planner_path_is_int && k->planner_path_is_int[j])
            out[n++] = (pt_elem){ .is_int = true, .i = strtoll(s, NULL, 10) };
        else
            out[n++] = (pt_elem){ .s = s, .len = len };
    }
    if (n == 0) { /* cannot happen for a key below DIR */
        out[0] = (pt_elem){ .s = fqn, .len = strlen(fqn) };
        n = 1;
    }
    return n;
}

/* ---- the nested state dict ---- */

enum { N_DICT, N_LIST, N_TENSOR, N_OBJECT };

typedef struct pt_node pt_node;
typedef struct {
    pt_elem key; /* dicts only */
    pt_node *val; /* lists: NULL is None */
} pt_slot;

struct pt_node {
    int kind;
    pt_slot *slots;
    size_t n, cap;
    size_t leaf; /* N_TENSOR: index in the key list; N_OBJECT: index of its doc */
};

/* (dict, key) -> child, so a dict of 100,000 keys is not searched linearly. */
typedef struct {
    const pt_node *parent;
    pt_elem key;
    pt_node *child;
} map_entry;

typedef struct {
    pt_node **nodes; /* every node, for freeing */
    size_t nnodes, capnodes;
    map_entry *map;
    size_t mapcap, maplen;
} nest;

static uint64_t elem_hash(const pt_node *parent, const pt_elem *e)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)parent;
    if (e->is_int) {
        h = (h ^ (uint64_t)e->i) * 1099511628211ull;
        return h ^ 0x5bd1e995u;
    }
    for (size_t i = 0; i < e->len; i++)
        h = (h ^ (unsigned char)e->s[i]) * 1099511628211ull;
    return h;
}

static map_entry *map_slot(nest *t, const pt_node *parent, const pt_elem *e)
{
    size_t mask = t->mapcap - 1;
    for (size_t i = (size_t)elem_hash(parent, e) & mask;; i = (i + 1) & mask) {
        map_entry *m = &t->map[i];
        if (!m->parent || (m->parent == parent && elem_eq(&m->key, e)))
            return m;
    }
}

static pt_node *map_get(nest *t, const pt_node *parent, const pt_elem *e)
{
    return t->mapcap ? map_slot(t, parent, e)->child : NULL;
}

static int map_put(nest *t, const pt_node *parent, const pt_elem *e, pt_node *child)
{
    if ((t->maplen + 1) * 2 > t->mapcap) {
        size_t ncap = t->mapcap ? t->mapcap * 2 : 256;
        map_entry *old = t->map;
        size_t ocap = t->mapcap;
        if (!(t->map = calloc(ncap, sizeof *t->map))) {
            t->map = old;
            return -ENOMEM;
        }
        t->mapcap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].parent)
                *map_slot(t, old[i].parent, &old[i].key) = old[i];
        free(old);
    }
    *map_slot(t, parent, e) = (map_entry){ parent, *e, child };
    t->maplen++;
    return 0;
}

static pt_node *node_new(nest *t, int kind)
{
    if (t->nnodes == t->capnodes) {
        size_t nc = t->capnodes ? t->capnodes * 2 : 64;
        pt_node **v = realloc(t->nodes, nc * sizeof *v);
        if (!v)
            return NULL;
        t->nodes = v;
        t->capnodes = nc;
    }
    pt_node *n = calloc(1, sizeof *n);
    if (n) {
        n->kind = kind;
        t->nodes[t->nnodes++] = n;
    }
    return n;
}

static int slots_reserve(pt_node *n, size_t want)
{
    if (want <= n->cap)
        return 0;
    size_t nc = n->cap ? n->cap : 8;
    while (nc < want)
        nc *= 2;
    pt_slot *s = realloc(n->slots, nc * sizeof *s);
    if (!s)
        return -ENOMEM;
    memset(s + n->cap, 0, (nc - n->cap) * sizeof *s);
    n->slots = s;
    n->cap = nc;
    return 0;
}

static int dict_add(nest *t, pt_node *d, const pt_elem *k, pt_node *v)
{
    int rc = slots_reserve(d, d->n + 1);
    if (!rc)
        rc = map_put(t, d, k, v);
    if (!rc)
        d->slots[d->n++] = (pt_slot){ *k, v };
    return rc;
}

/* The list slot for index i, grown with None; NULL for an index that is not
 * a list index we accept. */
static pt_slot *list_at(pt_node *l, const pt_elem *k, int *rc)
{
    *rc = 0;
    if (!k->is_int || k->i < 0 || k->i >= (int64_t)PT_MAX_LIST_INDEX)
        return NULL;
    size_t i = (size_t)k->i;
    if ((*rc = slots_reserve(l, i + 1)) != 0)
        return NULL;
    if (l->n <= i)
        l->n = i + 1;
    return &l->slots[i];
}

/* _traverse.set_element.  Returns 0, 1 if the path collides with another
 * key's (the key is left out), or -ENOMEM. */
static int nest_set(nest *t, pt_node *root, const pt_elem *p, size_t n, pt_node *leaf)
{
    pt_node *cur = root;
    int rc;
    for (size_t i = 1; i < n; i++) {
        int want = p[i].is_int ? N_LIST : N_DICT;
        pt_node *child;
        if (cur->kind == N_DICT) {
            child = map_get(t, cur, &p[i - 1]);
            if (!child) {
                if (!(child = node_new(t, want)))
                    return -ENOMEM;
                if ((rc = dict_add(t, cur, &p[i - 1], child)) != 0)
                    return rc;
            }
        } else {
            pt_slot *s = list_at(cur, &p[i - 1], &rc);
            if (!s)
                return rc ? rc : 1;
            if (!s->val && !(s->val = node_new(t, want)))
                return -ENOMEM;
            child = s->val;
        }
        if (child->kind != N_DICT && child->kind != N_LIST)
            return 1; /* a value where a container is needed */
        if (child->kind == N_LIST && !p[i].is_int)
            return 1; /* Python: list indices must be integers */
        cur = child;
    }
    if (cur->kind == N_DICT) {
        if (map_get(t, cur, &p[n - 1]))
            return 1;
        return dict_add(t, cur, &p[n - 1], leaf);
    }
    pt_slot *s = list_at(cur, &p[n - 1], &rc);
    if (!s)
        return rc ? rc : 1;
    if (s->val)
        return 1;
    s->val = leaf;
    return 0;
}

static void nest_free(nest *t)
{
    for (size_t i = 0; i < t->nnodes; i++) {
        free(t->nodes[i]->slots);
        free(t->nodes[i]);
    }
    free(t->nodes);
    free(t->map);
}

/* ---- non-tensor values ---- */

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

/* One storage of a tensor inside a non-tensor value. */
typedef struct {
    char *key;          /* the payload's storage key ("0") */
    uint64_t off, size; /* its record's bytes within the payload */
    uint32_t crc;       /* of those bytes (read at build) */
    size_t out;         /* its index in the view's tensors once emitted, else SIZE_MAX */
} pt_storage;

/* A non-tensor value to inline. */
typedef struct {
    pk_doc *doc;
    const ck_key *key; /* the bytes entry */
    pt_storage *st;
    size_t nst;
} pt_object;

static void object_clear(pt_object *o)
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
    pt_object *obj;
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
    pt_storage *st = realloc(c->obj->st, (c->obj->nst + 1) * sizeof *st);
    char *k = strdup(key);
    if (!st || !k) {
        free(k);
        if (st)
            c->obj->st = st;
        c->err = -ENOMEM;
        return false;
    }
    c->obj->st = st;
    st[c->obj->nst++] = (pt_storage){ k, m.data_offset, m.size,
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
    pt_object *obj;
    int err;
} obj_emit;

static void emit_value(pkw *w, const pk_value *v, obj_emit *oe);

/* Emits a dict's items (or an OrderedDict's) as pickle batches them. */
static void emit_items(pkw *w, const pk_value *d, obj_emit *oe)
{
    size_t n = d ? d->u.dict.len : 0;
    for (size_t b = 0; b < n; b += PT_BATCH) {
        size_t e = n - b < PT_BATCH ? n : b + PT_BATCH;
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
    pt_storage *st = NULL;
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
        for (size_t b = 0; b < n; b += PT_BATCH) {
            size_t e = n - b < PT_BATCH ? n : b + PT_BATCH;
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
static int load_object(ck_checkpoint *ck, const ck_key *k, pt_object *o)
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
                object_clear(o);
                o->key = k;
            }
        }
    }
    free(buf);
    return rc;
}

/* ---- collecting the keys under DIR ---- */

typedef struct {
    const ck_key **v;
    size_t n, cap;
} key_vec;

static int cmp_key_fqn(const void *a, const void *b)
{
    return strcmp((*(const ck_key *const *)a)->fqn, (*(const ck_key *const *)b)->fqn);
}

static int collect(const fs_node *dir, key_vec *out)
{
    const fs_node **stack = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    const fs_node *cur = dir;
    for (;;) {
        if (cur->is_dir) {
            for (size_t i = 0; i < cur->nchildren; i++) {
                if (n == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    const fs_node **s = realloc(stack, nc * sizeof *s);
                    if (!s) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    stack = s;
                    cap = nc;
                }
                stack[n++] = cur->children[i];
            }
        } else if (cur->key) {
            if (out->n == out->cap) {
                size_t nc = out->cap ? out->cap * 2 : 64;
                const ck_key **v = realloc(out->v, nc * sizeof *v);
                if (!v) {
                    rc = -ENOMEM;
                    goto out;
                }
                out->v = v;
                out->cap = nc;
            }
            out->v[out->n++] = cur->key;
        }
        if (!n)
            break;
        cur = stack[--n];
    }
out:
    free(stack);
    qsort(out->v, out->n, sizeof *out->v, cmp_key_fqn);
    return rc;
}

static size_t node_depth(const fs_node *n)
{
    size_t d = 0;
    for (; n && n->parent; n = n->parent)
        d++;
    return d;
}

static bool tensor_fits(const ck_key *k)
{
    ck_dtype dt = pt_out_dtype(k);
    return !k->error && ck_dtype_get(dt) && dt != CK_DT_QINT8 && dt != CK_DT_QUINT8 &&
           dt != CK_DT_QINT32;
}

/* ---- writing data.pkl ---- */

typedef struct {
    ck_checkpoint *ck;
    const key_vec *keys;
    pt_object *objs;
    fs_pt_tensor *tensors; /* filled in pickling order: storage "N" is tensors[N] */
    size_t ntensors;
    int err;
} emit_ctx;

static void emit_elem(pkw *w, const pt_elem *e)
{
    if (e->is_int) {
        pkw_int(w, e->i);
        return;
    }
    char *s = strndup(e->s, e->len);
    if (s)
        pkw_str(w, s);
    else
        pkw_op(w, 0); /* out of memory: make the writer fail */
    free(s);
}

static void emit_node(emit_ctx *c, pkw *w, const pt_node *n);

static void emit_slots(emit_ctx *c, pkw *w, const pt_node *n)
{
    bool dict = n->kind == N_DICT;
    for (size_t b = 0; b < n->n; b += PT_BATCH) {
        size_t e = n->n - b < PT_BATCH ? n->n : b + PT_BATCH;
        if (e - b > 1)
            pkw_op(w, PKW_MARK);
        for (size_t i = b; i < e; i++) {
            if (dict)
                emit_elem(w, &n->slots[i].key);
            if (n->slots[i].val)
                emit_node(c, w, n->slots[i].val);
            else
                pkw_none(w);
        }
        pkw_op(w, e - b > 1 ? (dict ? PKW_SETITEMS : PKW_APPENDS)
                            : (dict ? PKW_SETITEM : PKW_APPEND));
    }
}

static void emit_node(emit_ctx *c, pkw *w, const pt_node *n)
{
    switch (n->kind) {
    case N_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_slots(c, w, n);
        break;
    case N_LIST:
        pkw_op(w, PKW_EMPTY_LIST);
        emit_slots(c, w, n);
        break;
    case N_OBJECT: {
        obj_emit oe = { c->tensors, &c->ntensors, &c->objs[n->leaf], 0 };
        emit_value(w, pk_root(c->objs[n->leaf].doc), &oe);
        if (oe.err && !c->err)
            c->err = oe.err;
        break;
    }
    case N_TENSOR: {
        const ck_key *k = c->keys->v[n->leaf];
        fs_pt_tensor *t = &c->tensors[c->ntensors];
        char storage[24], err[256];
        snprintf(storage, sizeof storage, "%zu", c->ntensors);
        t->out_dtype = pt_out_dtype(k);
        int rc = ck_torch_pickle_tensor(w, t->out_dtype, k->ndim, k->shape, storage, &t->nbytes,
                                        err, sizeof err);
        if (!rc)
            rc = fs_key_ref_init(&t->ref, k);
        if (rc) {
            if (!c->err)
                c->err = rc;
            pkw_op(w, 0);
            return;
        }
        c->ntensors++;
        break;
    }
    }
}

/* ---- the archive ---- */

static const char FORMAT_VERSION[] = "1";
static const char STORAGE_ALIGNMENT[] = "64";
static const char BYTEORDER[] = "little";
static const char VERSION[] = "3\n";

/* data.pkl, .format_version, .storage_alignment, byteorder come first */
#define FIRST_TENSOR_RECORD 4

typedef struct {
    const void *data; /* small records: their bytes; NULL for tensors */
    size_t len;
    size_t tensor;
} rec_src;

static int seg_push(fs_pt_view *v, size_t *cap, fs_pt_seg s)
{
    if (s.begin == s.end)
        return 0;
    if (v->nsegs == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        fs_pt_seg *p = realloc(v->segs, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->segs = p;
        *cap = nc;
    }
    v->segs[v->nsegs++] = s;
    return 0;
}

/* Lays out the records, renders headers and small records into v->head
 * and lists the segments. */
static int build_archive(fs_pt_view *v, const uint8_t *pkl, size_t pkl_len)
{
    size_t nrec = FIRST_TENSOR_RECORD + v->ntensors + 2;
    char id[41];
    rec_src *src = calloc(nrec, sizeof *src);
    const char **short_names = calloc(nrec, sizeof *short_names);
    char (*data_names)[32] = calloc(v->ntensors ? v->ntensors : 1, sizeof *data_names);
    v->zip = calloc(nrec, sizeof *v->zip);
    v->crc = calloc(nrec, sizeof *v->crc);
    v->crc_known = calloc(nrec, sizeof *v->crc_known);
    int rc = src && short_names && data_names && v->zip && v->crc && v->crc_known ? 0 : -ENOMEM;
    size_t r = 0;
    if (!rc) {
        /* torch 2.x's order: data.pkl and the small records torch._save
         * writes, the storages, then version and the id at the end */
        short_names[r] = "data.pkl", src[r++] = (rec_src){ pkl, pkl_len, 0 };
        short_names[r] = ".format_version", src[r++] = (rec_src){ FORMAT_VERSION, 1, 0 };
        short_names[r] = ".storage_alignment", src[r++] = (rec_src){ STORAGE_ALIGNMENT, 2, 0 };
        short_names[r] = "byteorder", src[r++] = (rec_src){ BYTEORDER, 6, 0 };
        for (size_t t = 0; t < v->ntensors; t++) {
            snprintf(data_names[t], sizeof data_names[t], "data/%zu", t);
            short_names[r] = data_names[t];
            src[r++] = (rec_src){ NULL, 0, t };
        }
        short_names[r] = "version", src[r++] = (rec_src){ VERSION, 2, 0 };
        /* torch derives the id from CRCs it has at write time; here it is
         * from what the layout knows (names, sizes), which keeps it stable */
        uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i + 1 < nrec && i < r; i++) {
            for (const char *p = short_names[i]; *p; p++)
                h1 = (h1 ^ (unsigned char)*p) * 1099511628211ull;
            uint64_t sz = src[i].data ? src[i].len : v->tensors[src[i].tensor].nbytes;
            h2 = (h2 ^ sz) * 1099511628211ull ^ h1;
        }
        snprintf(id, sizeof id, "%020" PRIu64 "%020" PRIu64, (uint64_t)(h1 % 10000000000000000000ull),
                 (uint64_t)(h2 % 10000000000000000000ull));
        short_names[r] = ".data/serialization_id", src[r++] = (rec_src){ id, 40, 0 };
    }
    /* full names in one buffer */
    size_t names_len = 0;
    for (size_t i = 0; !rc && i < nrec; i++)
        names_len += strlen(ARCHIVE) + 1 + strlen(short_names[i]) + 1;
    if (!rc && !(v->names = malloc(names_len)))
        rc = -ENOMEM;
    char *p = v->names;
    for (size_t i = 0; !rc && i < nrec; i++) {
        int n = sprintf(p, "%s/%s", ARCHIVE, short_names[i]);
        v->zip[i].name = p;
        v->zip[i].size = src[i].data ? src[i].len : v->tensors[src[i].tensor].nbytes;
        if (!src[i].data)
            v->tensors[src[i].tensor].record = i;
        p += n + 1;
    }
    v->nzip = nrec;
    if (!rc)
        rc = ck_zip_layout(v->zip, nrec, &v->sum);
    /* head: every local header plus the small records' bytes */
    size_t head_cap = 0;
    for (size_t i = 0; !rc && i < nrec; i++)
        head_cap += CK_ZIP_LOCAL_MAX(strlen(v->zip[i].name)) + (src[i].data ? src[i].len : 0);
    if (!rc && !(v->head = malloc(head_cap ? head_cap : 1)))
        rc = -ENOMEM;
    size_t segcap = 0;
    for (size_t i = 0; !rc && i < nrec; i++) {
        const ck_zip_entry *e = &v->zip[i];
        size_t hl = ck_zip_local_header(e, v->head + v->head_len);
        rc = seg_push(v, &segcap, (fs_pt_seg){ e->local_off, e->local_off + hl, PT_SEG_MEM,
                                               v->head_len });
        v->head_len += hl;
        if (!rc && src[i].data) {
            memcpy(v->head + v->head_len, src[i].data, src[i].len);
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off, e->data_off + src[i].len,
                                                   PT_SEG_MEM, v->head_len });
            v->head_len += src[i].len;
            v->crc[i] = (uint32_t)crc32_z(0, src[i].data, src[i].len);
            v->crc_known[i] = true;
        } else if (!rc) {
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off, e->data_off + e->size,
                                                   PT_SEG_TENSOR, src[i].tensor });
            const fs_pt_tensor *t = &v->tensors[src[i].tensor];
            if (e->size == 0 || t->crc_preset) { /* crc32 of nothing is 0 */
                v->crc[i] = e->size ? t->crc_value : 0;
                v->crc_known[i] = true;
            }
        }
        if (!rc)
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off + e->size, e->end_off,
                                                   PT_SEG_DESCRIPTOR, i });
    }
    if (!rc)
        rc = seg_push(v, &segcap, (fs_pt_seg){ v->sum.cd_off, v->sum.total, PT_SEG_CENTRAL, 0 });
    v->size = v->sum.total;
    free(src);
    free(short_names);
    free(data_names);
    return rc;
}

/* CRCs already in the checkpoint: a tensor stored as row bands (every
 * chunk spans every dimension but the first), each chunk a plain
 * torch.save item whose data/0 is exactly that chunk's row-major image,
 * has the CRC of the items' data/0 combined in row order.  Reads only zip
 * directories and data.pkl.  false when that does not apply. */
static bool crc_from_items(ck_checkpoint *ck, const ck_key *k, uint32_t *out)
{
    const ck_dtype_info *info = ck_dtype_get(k->dtype);
    if (!info || k->error || k->nchunks == 0 || k->nchunks > 4096 || pt_out_dtype(k) != k->dtype)
        return false;
    uint32_t *order = malloc(k->nchunks * sizeof *order);
    if (!order)
        return false;
    uint32_t n = 0;
    for (uint32_t i = 0; i < k->nchunks; i++) {
        const ck_chunk *c = &k->chunks[i];
        if (c->format != CK_ITEM_TORCH_SAVE || c->transforms)
            goto fail;
        for (uint32_t d = 1; d < k->ndim; d++)
            if (c->offsets[d] != 0 || c->sizes[d] != k->shape[d])
                goto fail;
        /* insertion sort by row offset: chunk counts are small */
        uint32_t j = n++;
        for (; j > 0 && k->ndim && k->chunks[order[j - 1]].offsets[0] > c->offsets[0]; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    uint32_t crc = 0;
    uint64_t row = 0;
    for (uint32_t i = 0; i < n; i++) {
        const ck_chunk *c = &k->chunks[order[i]];
        uint64_t numel = 1, nbytes;
        for (uint32_t d = 0; d < k->ndim; d++)
            if (__builtin_mul_overflow(numel, c->sizes[d], &numel))
                goto fail;
        if (__builtin_mul_overflow(numel, (uint64_t)info->size, &nbytes))
            goto fail;
        if (k->ndim && c->offsets[0] != row)
            goto fail; /* gaps were refused at open; be sure anyway */
        row += k->ndim ? c->sizes[0] : 0;
        if (nbytes == 0)
            continue;
        /* the planner's own resolution (kept for the reads to come) says
         * whether the image is stored as is; data/0 must be exactly it */
        int fd;
        char err[256];
        ck_zip_member m;
        ck_chunk *cc = &k->chunks[order[i]];
        if (ck_chunk_resolve(ck, k, cc) != 0 || !cc->layout.direct ||
            cc->layout.nbytes != nbytes || ck_file_fd(ck, c->file, &fd) != 0)
            goto fail;
        ck_byte_source src = ck_byte_source_fd(fd, c->offset, c->length);
        if (ck_zip_find(&src, "/data/0", &m, err, sizeof err) != 0 || m.size != nbytes ||
            c->offset + m.data_offset != cc->layout.file_offset)
            goto fail;
        crc = i == 0 ? m.crc32 : (uint32_t)crc32_combine(crc, m.crc32, (z_off_t)nbytes);
    }
    free(order);
    *out = crc;
    return true;
fail:
    free(order);
    return false;
}

int fs_pt_view_build(ck_checkpoint *ck, const fs_node *dir, fs_pt_view *out)
{
    memset(out, 0, sizeof *out);
    if (!dir->is_dir)
        return -ENOTDIR;
    int rc = pthread_mutex_init(&out->lock, NULL);
    if (rc)
        return -rc;
    key_vec keys = { 0 };
    nest t = { 0 };
    pt_object *objs = NULL;
    size_t ndocs = 0, nstorages = 0;
    pt_elem *path = malloc(PT_MAX_PATH * sizeof *path);
    pt_node *root = node_new(&t, N_DICT);
    rc = path && root ? 0 : -ENOMEM;
    if (!rc)
        rc = collect(dir, &keys);
    if (!rc && keys.n && !(objs = calloc(keys.n, sizeof *objs)))
        rc = -ENOMEM;
    size_t ntensors = 0, depth = node_depth(dir);
    for (size_t i = 0; !rc && i < keys.n; i++) {
        const ck_key *k = keys.v[i];
        pt_node *leaf = NULL;
        if (k->kind == CK_KEY_TENSOR) {
            if (!tensor_fits(k))
                continue;
            leaf = node_new(&t, N_TENSOR);
        } else {
            rc = load_object(ck, k, &objs[ndocs]);
            if (rc || !objs[ndocs].doc)
                continue;
            leaf = node_new(&t, N_OBJECT);
        }
        if (!leaf) {
            rc = -ENOMEM;
            break;
        }
        leaf->leaf = k->kind == CK_KEY_TENSOR ? i : ndocs;
        size_t n = rel_path(k, depth, path);
        /* a pickle str must be UTF-8 (a safetensors name need not be): such a
         * key is left out like a colliding one */
        int set = 0;
        for (size_t j = 0; j < n; j++)
            if (!path[j].is_int && !pk_utf8_valid(path[j].s, path[j].len))
                set = 1;
        if (!set)
            set = nest_set(&t, root, path, n, leaf);
        if (set < 0) {
            rc = set;
        } else if (set == 0) {
            ntensors += k->kind == CK_KEY_TENSOR;
            if (k->kind != CK_KEY_TENSOR)
                nstorages += objs[ndocs++].nst;
        } else if (k->kind != CK_KEY_TENSOR) {
            object_clear(&objs[ndocs]);
        }
    }
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    /* key tensors, then the storages of tensors inside values */
    if (!rc && ntensors + nstorages &&
        !(out->tensors = calloc(ntensors + nstorages, sizeof *out->tensors)))
        rc = -ENOMEM;
    if (!rc) {
        emit_ctx c = { ck, &keys, objs, out->tensors, 0, 0 };
        pkw *w = pkw_new(2);
        if (!w) {
            rc = -ENOMEM;
        } else {
            emit_node(&c, w, root);
            rc = pkw_finish(w, &pkl, &pkl_len);
            pkw_free(w);
        }
        out->ntensors = c.ntensors;
        if (c.err)
            rc = c.err;
    }
    if (!rc)
        rc = build_archive(out, pkl, pkl_len);
    free(pkl);
    for (size_t i = 0; i < ndocs; i++)
        object_clear(&objs[i]);
    free(objs);
    free(path);
    free(keys.v);
    nest_free(&t);
    if (rc)
        fs_pt_view_clear(out);
    return rc;
}

void fs_pt_view_clear(fs_pt_view *v)
{
    for (size_t i = 0; i < v->ntensors; i++)
        fs_key_ref_clear(&v->tensors[i].ref);
    free(v->tensors);
    free(v->head);
    free(v->segs);
    free(v->zip);
    free(v->names);
    free(v->crc);
    free(v->crc_known);
    free(v->central);
    pthread_mutex_destroy(&v->lock);
    memset(v, 0, sizeof *v);
}

/* ---- reading ---- */

/* Record r's CRC: known (small records, reads in order), else from the
 * checkpoint's items where they hold it, else by reading the tensor once. */
static int record_crc(ck_checkpoint *ck, fs_pt_view *v, bool current, size_t r, uint32_t *out)
{
    pthread_mutex_lock(&v->lock);
    bool known = v->crc_known[r];
    *out = v->crc[r];
    pthread_mutex_unlock(&v->lock);
    if (known)
        return 0;
    /* tensors are records FIRST_TENSOR_RECORD.. in order */
    size_t t = r - FIRST_TENSOR_RECORD;
    if (r < FIRST_TENSOR_RECORD || t >= v->ntensors || v->tensors[t].record != r)
        return -EIO; /* cannot happen: small records' CRCs are known */
    const fs_pt_tensor *ten = &v->tensors[t];
    const ck_key *k;
    uint32_t stored;
    if (!ten->in_payload && fs_key_ref_get(ck, &ten->ref, current, &k) == 0 &&
        crc_from_items(ck, k, &stored)) {
        pthread_mutex_lock(&v->lock);
        v->crc[r] = stored;
        v->crc_known[r] = true;
        pthread_mutex_unlock(&v->lock);
        *out = stored;
        return 0;
    }
    uint8_t *buf = malloc(ten->nbytes < PT_PIECE ? (size_t)ten->nbytes : PT_PIECE);
    if (!buf)
        return -ENOMEM;
    uLong crc = crc32(0L, Z_NULL, 0);
    int rc = 0;
    for (uint64_t off = 0; off < ten->nbytes;) {
        size_t n = ten->nbytes - off < PT_PIECE ? (size_t)(ten->nbytes - off) : PT_PIECE;
        if ((rc = pt_tensor_read(ck, ten, current, off, buf, n)) != 0)
            break;
        crc = crc32_z(crc, buf, n);
        off += n;
    }
    free(buf);
    /* A record that cannot be read (damaged chunks: EIO, sticky) gets CRC 0,
     * so the archive still opens and every other member reads; reading that
     * one fails with EIO anyway.  Other errors (ENOMEM) fail this read only. */
    if (rc == -EIO)
        crc = 0;
    else if (rc)
        return rc;
    pthread_mutex_lock(&v->lock);
    v->crc[r] = (uint32_t)crc;
    v->crc_known[r] = true;
    pthread_mutex_unlock(&v->lock);
    *out = (uint32_t)crc;
    return 0;
}

static int central_directory(ck_checkpoint *ck, fs_pt_view *v, bool current, const uint8_t **out)
{
    pthread_mutex_lock(&v->lock);
    *out = v->central;
    pthread_mutex_unlock(&v->lock);
    if (*out)
        return 0;
    uint32_t *crc = malloc(v->nzip * sizeof *crc);
    uint8_t *cd = malloc(v->sum.cd_len);
    int rc = crc && cd ? 0 : -ENOMEM;
    for (size_t r = 0; !rc && r < v->nzip; r++)
        rc = record_crc(ck, v, current, r, &crc[r]);
    if (!rc)
        rc = ck_zip_central_directory(v->zip, crc, v->nzip, &v->sum, cd, v->sum.cd_len);
    free(crc);
    if (rc) {
        free(cd);
        return rc;
    }
    pthread_mutex_lock(&v->lock);
    if (v->central)
        free(cd); /* another reader rendered it meanwhile */
    else
        v->central = cd;
    *out = v->central;
    pthread_mutex_unlock(&v->lock);
    return 0;
}

/* A read of tensor t's bytes [off, off+n) that continues the ones before it
 * extends the running CRC; the last such read makes it known. */
static void crc_follow(fs_pt_view *v, fs_pt_tensor *t, uint64_t off, const void *buf, size_t n)
{
    pthread_mutex_lock(&v->lock);
    bool follows = !v->crc_known[t->record] && t->crc_next == off;
    pthread_mutex_unlock(&v->lock);
    if (!follows)
        return;
    uint32_t part = (uint32_t)crc32_z(0, buf, n);
    pthread_mutex_lock(&v->lock);
    if (!v->crc_known[t->record] && t->crc_next == off) {
        t->crc_running = off == 0 ? part
                                  : (uint32_t)crc32_combine(t->crc_running, part, (z_off_t)n);
        t->crc_next = off + n;
        if (t->crc_next == t->nbytes) {
            v->crc[t->record] = t->crc_running;
            v->crc_known[t->record] = true;
        }
    }
    pthread_mutex_unlock(&v->lock);
}

static size_t first_seg_after(const fs_pt_view *v, uint64_t off)
{
    size_t lo = 0, hi = v->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->segs[mid].end <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int fs_pt_view_read(ck_checkpoint *ck, fs_pt_view *v, bool current, uint64_t off, void *dst,
                    size_t len, size_t *got)
{
    *got = 0;
    if (off >= v->size)
        return 0;
    if (len > v->size - off)
        len = (size_t)(v->size - off);
    uint8_t *out = dst;
    size_t done = 0;
    for (size_t i = first_seg_after(v, off); done < len && i < v->nsegs; i++) {
        const fs_pt_seg *s = &v->segs[i];
        uint64_t pos = off + done;
        if (s->begin > pos)
            return -EIO; /* cannot happen: segments tile the file */
        uint64_t in = pos - s->begin;
        size_t want = s->end - pos < len - done ? (size_t)(s->end - pos) : len - done;
        int rc = 0;
        switch (s->kind) {
        case PT_SEG_MEM:
            memcpy(out + done, v->head + s->arg + in, want);
            break;
        case PT_SEG_TENSOR:
            rc = pt_tensor_read(ck, &v->tensors[s->arg], current, in, out + done, want);
            if (!rc)
                crc_follow(v, &v->tensors[s->arg], in, out + done, want);
            break;
        case PT_SEG_DESCRIPTOR: {
            uint32_t crc;
            uint8_t dd[CK_ZIP_DESCRIPTOR_MAX];
            rc = record_crc(ck, v, current, s->arg, &crc);
            if (!rc) {
                ck_zip_descriptor(&v->zip[s->arg], crc, dd);
                memcpy(out + done, dd + in, want);
            }
            break;
        }
        case PT_SEG_CENTRAL: {
            const uint8_t *cd;
            rc = central_directory(ck, v, current, &cd);
            if (!rc)
                memcpy(out + done, cd + in, want);
            break;
        }
        }
        if (rc)
            return rc;
        done += want;
    }
    if (done != len)
        return -EIO;
    *got = done;
    return 0;
}
