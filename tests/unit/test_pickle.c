/* pk_parse against torch 2.11's real .metadata and data.pkl files, every
 * opcode family, and every class of malformed input. */
#include "check.h"
#include "test_util.h"
#include "pickle.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/torch-2.11/"
#define DCP_MOD "torch.distributed.checkpoint.metadata"

static int parse(const void *buf, size_t len, pk_doc **doc, char *err, size_t errlen)
{
    return pk_parse(buf, len, doc, err, errlen);
}

/* The document in buf (len bytes read from path), or NULL with the failed
 * check reported: buf NULL (path unreadable) or a parse error. */
static pk_doc *parse_checked(const char *path, const void *buf, size_t len)
{
    CHECK(buf != NULL);
    if (!buf)
        return NULL;
    char err[256];
    pk_doc *doc = NULL;
    int rc = parse(buf, len, &doc, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s: %s\n", path, err);
        return NULL;
    }
    return doc;
}

static int64_t int_at(const pk_value *seq, size_t i)
{
    int64_t v = INT64_MIN;
    if (pk_as_int(pk_seq_at(seq, i), &v))
        return INT64_MIN;
    return v;
}

/* The (d0, d1, ...) tuple inside torch.Size((d0, d1, ...)). */
static const pk_value *size_dims(const pk_value *size)
{
    if (!pk_is_object_of(size, "torch", "Size") || pk_seq_len(size->u.obj.args) != 1)
        return NULL;
    return pk_seq_at(size->u.obj.args, 0);
}

static bool dims_are(const pk_value *size, size_t n, const int64_t *want)
{
    const pk_value *t = size_dims(size);
    if (!t || t->kind != PK_TUPLE || pk_seq_len(t) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (int_at(t, i) != want[i])
            return false;
    return true;
}

/* Walks a value tree counting nodes; returns false past max_depth, which
 * the parser's own limits must make impossible. */
static bool walk(const pk_value *v, int depth, uint64_t *count)
{
    if (!v)
        return true;
    if (depth > PK_MAX_DEPTH + 1)
        return false;
    (*count)++;
    switch (v->kind) {
    case PK_TUPLE:
    case PK_LIST:
        for (size_t i = 0; i < v->u.seq.len; i++)
            if (!walk(v->u.seq.items[i], depth + 1, count))
                return false;
        return true;
    case PK_DICT:
        for (size_t i = 0; i < v->u.dict.len; i++)
            if (!walk(v->u.dict.keys[i], depth + 1, count) ||
                !walk(v->u.dict.vals[i], depth + 1, count))
                return false;
        return true;
    case PK_OBJECT:
        return walk(v->u.obj.callable, depth + 1, count) &&
               walk(v->u.obj.args, depth + 1, count) && walk(v->u.obj.state, depth + 1, count) &&
               walk(v->u.obj.items, depth + 1, count) &&
               walk(v->u.obj.dictitems, depth + 1, count);
    case PK_PERSID:
        return walk(v->u.persid.pid, depth + 1, count);
    case PK_STR:
    case PK_BYTES:
        return v->u.str.data[v->u.str.len] == '\0';
    default:
        return true;
    }
}

/* ---- real .metadata --------------------------------------------------- */

struct fixture {
    const char *name;
    size_t keys, storage;
};

static const struct fixture fixtures[] = {
    /* key counts from the NAME.manifest.json files */
    { "dcp_single", 21, 21 },
    { "dcp_single_perfile", 21, 21 },
    { "dcp_zstd", 21, 21 },
    { "dcp_dtensor_ws4", 8, 22 },
    { "dcp_dtensor_ws4_perfile", 8, 22 },
    { "dcp_fsdp2_optim", 28, 40 },
};

static const pk_value *tensor_fields(const pk_value *sdm, const char *fqn)
{
    const pk_value *t = pk_dict_get(sdm, fqn);
    if (!pk_is_object_of(t, DCP_MOD, "TensorStorageMetadata"))
        return NULL;
    return pk_object_state_dict(t);
}

static void test_metadata_fixture(const struct fixture *fx)
{
    char path[256];
    snprintf(path, sizeof path, FIX "%s/.metadata", fx->name);
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    pk_doc *doc = parse_checked(path, buf, len);
    if (!doc) {
        free(buf);
        return;
    }
    const pk_value *root = pk_root(doc);
    CHECK(pk_is_object_of(root, DCP_MOD, "Metadata"));
    CHECK(root->u.obj.newobj);
    CHECK_EQ_INT(pk_seq_len(root->u.obj.args), 0);
    const pk_value *st = pk_object_state_dict(root);
    CHECK(st != NULL);
    const pk_value *sdm = pk_dict_get(st, "state_dict_metadata");
    CHECK(sdm && sdm->kind == PK_DICT);
    CHECK_EQ_INT(sdm ? sdm->u.dict.len : 0, fx->keys);
    const pk_value *pd = pk_dict_get(st, "planner_data");
    CHECK_EQ_INT(pd && pd->kind == PK_DICT ? pd->u.dict.len : 0, fx->keys);
    const pk_value *sd = pk_dict_get(st, "storage_data");
    CHECK_EQ_INT(sd && sd->kind == PK_DICT ? sd->u.dict.len : 0, fx->storage);
    CHECK_EQ_STR(pk_as_str(pk_dict_get(st, "version")), "1.0.0");
    CHECK(pk_is_object_of(pk_dict_get(st, "storage_meta"), DCP_MOD, "StorageMeta"));

    /* Every key is a str naming a tensor or bytes entry; every tensor has
     * properties, a torch.Size and a non-empty chunk list. */
    bool shapes_ok = sdm != NULL;
    for (size_t i = 0; sdm && i < sdm->u.dict.len; i++) {
        const pk_value *k = sdm->u.dict.keys[i], *v = sdm->u.dict.vals[i];
        if (!pk_as_str(k)) {
            shapes_ok = false;
        } else if (pk_is_object_of(v, DCP_MOD, "TensorStorageMetadata")) {
            const pk_value *f = pk_object_state_dict(v);
            const pk_value *props = pk_dict_get(f, "properties");
            const pk_value *chunks = pk_dict_get(f, "chunks");
            if (!pk_is_object_of(props, DCP_MOD, "TensorProperties") || !props->u.obj.state ||
                pk_seq_len(props->u.obj.state) != 5 ||
                pk_seq_at(props->u.obj.state, 0)->kind != PK_GLOBAL ||
                !size_dims(pk_dict_get(f, "size")) || !chunks || chunks->kind != PK_LIST ||
                pk_seq_len(chunks) == 0)
                shapes_ok = false;
        } else if (!pk_is_object_of(v, DCP_MOD, "BytesStorageMetadata")) {
            shapes_ok = false;
        }
    }
    CHECK(shapes_ok);
    bool storage_ok = sd != NULL;
    for (size_t i = 0; sd && i < sd->u.dict.len; i++) {
        const pk_value *mi = pk_object_state_dict(sd->u.dict.keys[i]);
        const pk_value *si = pk_object_state_dict(sd->u.dict.vals[i]);
        int64_t off, length;
        if (!pk_is_object_of(sd->u.dict.keys[i], DCP_MOD, "MetadataIndex") ||
            !pk_is_object_of(sd->u.dict.vals[i], "torch.distributed.checkpoint.filesystem",
                             "_StorageInfo") ||
            !pk_as_str(pk_dict_get(mi, "fqn")) || !pk_as_str(pk_dict_get(si, "relative_path")) ||
            pk_as_int(pk_dict_get(si, "offset"), &off) ||
            pk_as_int(pk_dict_get(si, "length"), &length) || off < 0 || length <= 0)
            storage_ok = false;
    }
    CHECK(storage_ok);
    uint64_t count = 0;
    CHECK(walk(root, 0, &count));

    if (strcmp(fx->name, "dcp_single") == 0) {
        const pk_value *f = tensor_fields(sdm, "model.embed.weight");
        CHECK(f != NULL);
        const pk_value *props = pk_dict_get(f, "properties");
        const pk_value *ps = props ? props->u.obj.state : NULL;
        CHECK(pk_is_global(pk_seq_at(ps, 0), "torch", "float32"));
        const pk_value *layout = pk_seq_at(ps, 1);
        CHECK(pk_is_object_of(layout, "torch.serialization", "_get_layout"));
        CHECK_EQ_STR(pk_as_str(pk_seq_at(layout ? layout->u.obj.args : NULL, 0)), "torch.strided");
        CHECK(pk_seq_at(ps, 2) && pk_seq_at(ps, 2)->kind == PK_BOOL && !pk_seq_at(ps, 2)->u.b);
        const pk_value *mf = pk_seq_at(ps, 3);
        CHECK(pk_is_object_of(mf, DCP_MOD, "_MEM_FORMAT_ENCODING"));
        CHECK_EQ_INT(int_at(mf ? mf->u.obj.args : NULL, 0), 0);
        CHECK(dims_are(pk_dict_get(f, "size"), 2, (int64_t[]){ 32, 16 }));
        const pk_value *chunk = pk_seq_at(pk_dict_get(f, "chunks"), 0);
        CHECK(pk_is_object_of(chunk, DCP_MOD, "ChunkStorageMetadata"));
        const pk_value *cf = pk_object_state_dict(chunk);
        CHECK(dims_are(pk_dict_get(cf, "offsets"), 2, (int64_t[]){ 0, 0 }));
        CHECK(dims_are(pk_dict_get(cf, "sizes"), 2, (int64_t[]){ 32, 16 }));

        /* The torch.Size class is pickled once and fetched from the memo
         * afterwards: both sizes share the one PK_GLOBAL. */
        const pk_value *s1 = pk_dict_get(f, "size");
        const pk_value *s2 = pk_dict_get(tensor_fields(sdm, "model.transposed"), "size");
        CHECK(s1 && s2 && s1->u.obj.callable == s2->u.obj.callable);
        CHECK(dims_are(s2, 2, (int64_t[]){ 5, 7 }));

        const pk_value *sc = tensor_fields(sdm, "model.scalar");
        CHECK(dims_are(pk_dict_get(sc, "size"), 0, NULL));
        CHECK(pk_is_global(pk_seq_at(pk_dict_get(tensor_fields(sdm, "model.fp8"), "properties")
                                         ->u.obj.state, 0),
                           "torch", "float8_e4m3fn"));
        CHECK(pk_is_object_of(pk_dict_get(sdm, "step"), DCP_MOD, "BytesStorageMetadata"));
        CHECK(pk_dict_get(sdm, "no.such.key") == NULL);

        const pk_value *fqn_path = pk_dict_get(pd, "model.layers.0.attn.wq.weight");
        CHECK_EQ_INT(pk_seq_len(fqn_path), 4);
        CHECK_EQ_STR(pk_as_str(pk_seq_at(fqn_path, 3)), "attn.wq.weight");

        /* storage_data: the bytes entry 'step' is the first item of the file. */
        const pk_value *mi = pk_object_state_dict(sd->u.dict.keys[0]);
        const pk_value *si = pk_object_state_dict(sd->u.dict.vals[0]);
        CHECK_EQ_STR(pk_as_str(pk_dict_get(mi, "fqn")), "step");
        CHECK(pk_dict_get(mi, "index") && pk_dict_get(mi, "index")->kind == PK_NONE);
        CHECK_EQ_STR(pk_as_str(pk_dict_get(si, "relative_path")), "__0_0.distcp");
        int64_t off = -1, length = -1;
        CHECK(pk_as_int(pk_dict_get(si, "offset"), &off) == 0 && off == 0);
        CHECK(pk_as_int(pk_dict_get(si, "length"), &length) == 0 && length == 1261);

        const pk_value *sm = pk_object_state_dict(pk_dict_get(st, "storage_meta"));
        const pk_value *cid = pk_dict_get(sm, "checkpoint_id");
        CHECK(pk_is_object_of(cid, "pathlib", "PosixPath"));
        CHECK_EQ_INT(pk_seq_len(cid ? cid->u.obj.args : NULL), 5);
        CHECK_EQ_STR(pk_as_str(pk_seq_at(cid->u.obj.args, 4)), "dcp_single");
    }
    if (strcmp(fx->name, "dcp_zstd") == 0) {
        const pk_value *si = pk_object_state_dict(sd->u.dict.vals[0]);
        const pk_value *td = pk_dict_get(si, "transform_descriptors");
        CHECK(td && td->kind == PK_LIST && pk_seq_len(td) == 1);
        CHECK_EQ_STR(pk_as_str(pk_seq_at(td, 0)), "stream.zstd/1");
    }
    pk_free(doc);
    free(buf);
}

/* ---- real data.pkl ---------------------------------------------------- */

struct rebuild {
    const char *file;    /* item of dcp_single_perfile */
    const char *storage; /* storage class in torch */
    int64_t numel, offset;
    size_t ndim;
    int64_t size[2], stride[2];
    const char *v3_dtype; /* _rebuild_tensor_v3's 7th argument, or NULL */
};

static const struct rebuild rebuilds[] = {
    { "__0_0.distcp", "FloatStorage", 512, 0, 2, { 32, 16 }, { 16, 1 }, NULL },
    { "__0_7.distcp", "FloatStorage", 35, 0, 2, { 5, 7 }, { 1, 5 }, NULL }, /* transposed */
    { "__0_8.distcp", "FloatStorage", 12, 0, 2, { 2, 6 }, { 6, 1 }, NULL },
    { "__0_9.distcp", "FloatStorage", 1, 0, 0, { 0 }, { 0 }, NULL }, /* 0-d */
    { "__0_13.distcp", "CharStorage", 10, 0, 1, { 10 }, { 1 }, NULL },
    { "__0_14.distcp", "ByteStorage", 37, 0, 1, { 37 }, { 1 }, NULL },
    { "__0_17.distcp", "UntypedStorage", 16, 0, 2, { 4, 4 }, { 4, 1 }, "float8_e4m3fn" },
};

static bool ints_are(const pk_value *t, size_t n, const int64_t *want)
{
    if (!t || t->kind != PK_TUPLE || pk_seq_len(t) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (int_at(t, i) != want[i])
            return false;
    return true;
}

static void test_data_pkl(const struct rebuild *r)
{
    char path[256];
    snprintf(path, sizeof path, FIX "dcp_single_perfile/%s", r->file);
    size_t zlen = 0, plen = 0;
    uint8_t *z = slurp(path, &zlen);
    const uint8_t *pkl = z ? zip_member(z, zlen, "/data.pkl", &plen) : NULL;
    pk_doc *doc = parse_checked(path, pkl, plen);
    if (!doc) {
        free(z);
        return;
    }
    const pk_value *t = pk_root(doc);
    bool v3 = r->v3_dtype != NULL;
    CHECK(pk_is_object_of(t, "torch._utils", v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2"));
    CHECK(!t->u.obj.newobj && t->u.obj.state == NULL);
    const pk_value *a = t->u.obj.args;
    CHECK_EQ_INT(pk_seq_len(a), v3 ? 7 : 6);
    const pk_value *pers = pk_seq_at(a, 0);
    CHECK(pers && pers->kind == PK_PERSID);
    const pk_value *pid = pers ? pers->u.persid.pid : NULL;
    CHECK_EQ_INT(pk_seq_len(pid), 5);
    CHECK_EQ_STR(pk_as_str(pk_seq_at(pid, 0)), "storage");
    CHECK(pk_is_global(pk_seq_at(pid, 1), v3 ? "torch.storage" : "torch", r->storage));
    CHECK_EQ_STR(pk_as_str(pk_seq_at(pid, 2)), "0");
    CHECK_EQ_STR(pk_as_str(pk_seq_at(pid, 3)), "cpu");
    CHECK_EQ_INT(int_at(pid, 4), r->numel);
    CHECK_EQ_INT(int_at(a, 1), r->offset);
    CHECK(ints_are(pk_seq_at(a, 2), r->ndim, r->size));
    CHECK(ints_are(pk_seq_at(a, 3), r->ndim, r->stride));
    CHECK(pk_seq_at(a, 4) && pk_seq_at(a, 4)->kind == PK_BOOL && !pk_seq_at(a, 4)->u.b);
    const pk_value *hooks = pk_seq_at(a, 5);
    CHECK(pk_is_object_of(hooks, "collections", "OrderedDict"));
    CHECK_EQ_INT(pk_seq_len(hooks ? hooks->u.obj.args : NULL), 0);
    if (v3)
        CHECK(pk_is_global(pk_seq_at(a, 6), "torch", r->v3_dtype));
    pk_free(doc);
    free(z);
}

/* The three bytes entries: an int, a str and a list of floats. */
static void test_data_pkl_values(void)
{
    char err[256];
    const char *files[] = { "__0_18.distcp", "__0_19.distcp", "__0_20.distcp" };
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, FIX "dcp_single_perfile/%s", files[i]);
        size_t zlen = 0, plen = 0;
        uint8_t *z = slurp(path, &zlen);
        const uint8_t *pkl = z ? zip_member(z, zlen, "data.pkl", &plen) : NULL;
        pk_doc *doc = NULL;
        CHECK(pkl && parse(pkl, plen, &doc, err, sizeof err) == 0);
        const pk_value *v = pk_root(doc);
        if (i == 0) {
            int64_t x = 0;
            CHECK(pk_as_int(v, &x) == 0 && x == 1234);
        } else if (i == 1) {
            CHECK_EQ_STR(pk_as_str(v), "tiny");
        } else {
            CHECK(v && v->kind == PK_LIST && pk_seq_len(v) == 2);
            CHECK(pk_seq_at(v, 0) && pk_seq_at(v, 0)->kind == PK_FLOAT &&
                  pk_seq_at(v, 0)->u.f == 0.1);
            CHECK(pk_seq_at(v, 1) && pk_seq_at(v, 1)->u.f == 0.01);
        }
        pk_free(doc);
        free(z);
    }
}

/* ---- opcodes ---------------------------------------------------------- */

#define P(s) (const uint8_t *)(s), sizeof(s) - 1

static const pk_value *ok_parse(pk_doc **doc, const uint8_t *buf, size_t len)
{
    char err[256];
    int rc = pk_parse(buf, len, doc, err, sizeof err);
    if (rc)
        printf("# unexpected error: %s\n", err);
    return rc ? NULL : pk_root(*doc);
}

static void test_opcodes(void)
{
    pk_doc *d = NULL;
    const pk_value *v;
    int64_t x;

    /* ints of every width, including LONG1/LONG4 sign handling */
    v = ok_parse(&d, P("\x80\x02(J\xff\xff\xff\xff" "K\xff" "M\xff\xff" "\x8a\x00"
                       "\x8a\x01\x80" "\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"
                       "\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"
                       "\x8b\x02\x00\x00\x00\x00\x01" "\x88\x89NI42\nI-7\nI01\nI00\nL123L\nl."));
    CHECK(v && v->kind == PK_LIST && pk_seq_len(v) == 16);
    int64_t want[] = { -1, 255, 65535, 0, -128, INT64_MAX, INT64_MIN, 256 };
    for (size_t i = 0; v && i < 8; i++)
        CHECK(pk_as_int(pk_seq_at(v, i), &x) == 0 && x == want[i]);
    CHECK(v && pk_seq_at(v, 8)->kind == PK_BOOL && pk_seq_at(v, 8)->u.b);
    CHECK(v && pk_seq_at(v, 9)->kind == PK_BOOL && !pk_seq_at(v, 9)->u.b);
    CHECK(v && pk_seq_at(v, 10)->kind == PK_NONE);
    CHECK(v && pk_as_int(pk_seq_at(v, 11), &x) == 0 && x == 42);
    CHECK(v && pk_as_int(pk_seq_at(v, 12), &x) == 0 && x == -7);
    CHECK(v && pk_seq_at(v, 13)->kind == PK_BOOL && pk_seq_at(v, 13)->u.b);
    CHECK(v && pk_seq_at(v, 14)->kind == PK_BOOL && !pk_seq_at(v, 14)->u.b);
    CHECK(v && pk_as_int(pk_seq_at(v, 15), &x) == 0 && x == 123);
    pk_free(d);

    /* floats */
    v = ok_parse(&d, P("\x80\x02(G\x3f\xf8\x00\x00\x00\x00\x00\x00" "F-2.25\nt."));
    CHECK(v && v->kind == PK_TUPLE && pk_seq_at(v, 0)->u.f == 1.5 &&
          pk_seq_at(v, 1)->u.f == -2.25);
    pk_free(d);

    /* strings and bytes of every form */
    v = ok_parse(&d, P("\x80\x05\x95\x00\x00\x00\x00\x00\x00\x00\x00"
                       "(X\x03\x00\x00\x00h\xc3\xa9" "\x8c\x01" "a"
                       "\x8d\x01\x00\x00\x00\x00\x00\x00\x00" "b" "U\x01" "c" "T\x01\x00\x00\x00" "d"
                       "S'e\\n\\x41\\101\\q'\n" "Vf\\u00e9\\\\u\xe9\n"
                       "C\x02\x00\x01" "B\x01\x00\x00\x00\xff"
                       "\x8e\x01\x00\x00\x00\x00\x00\x00\x00z" "\x96\x00\x00\x00\x00\x00\x00\x00\x00"
                       "\x98" "l."));
    CHECK(v && pk_seq_len(v) == 11);
    if (v && pk_seq_len(v) == 11) {
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 0)), "h\xc3\xa9");
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 1)), "a");
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 2)), "b");
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 3)), "c");
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 4)), "d");
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 5)), "e\nAA\\q");
        /* raw-unicode-escape: \u00e9 is an escape, \\u is not, byte E9 is latin-1 */
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 6)), "f\xc3\xa9\\\\u\xc3\xa9");
        const pk_value *b = pk_seq_at(v, 7);
        CHECK(b->kind == PK_BYTES && b->u.str.len == 2 && b->u.str.data[1] == 1);
        CHECK(pk_seq_at(v, 8)->kind == PK_BYTES && (uint8_t)pk_seq_at(v, 8)->u.str.data[0] == 0xff);
        CHECK(pk_seq_at(v, 9)->kind == PK_BYTES && pk_seq_at(v, 9)->u.str.len == 1);
        CHECK(pk_seq_at(v, 10)->kind == PK_BYTES && pk_seq_at(v, 10)->u.str.len == 0);
        CHECK(pk_as_str(pk_seq_at(v, 7)) == NULL);
    }
    pk_free(d);

    /* memo: BINPUT/BINGET, LONG_BINPUT/LONG_BINGET, PUT/GET, MEMOIZE;
     * DUP, POP, POP_MARK */
    v = ok_parse(&d, P("\x80\x04(K\x07q\x05r\x00\x00\x01\x00p9\n\x94" "0h\x05j\x00\x00\x01\x00g9\n"
                       "h\x03" "2" "(K\x01K\x02" "1" "(0" "t."));
    CHECK(v && v->kind == PK_TUPLE && pk_seq_len(v) == 5);
    for (size_t i = 0; v && i < pk_seq_len(v); i++)
        CHECK(pk_seq_at(v, i) == pk_seq_at(v, 0) && int_at(v, i) == 7);
    pk_free(d);

    /* dicts: EMPTY_DICT/SETITEM(S), DICT; pk_dict_get takes the last duplicate */
    v = ok_parse(&d, P("\x80\x02}(X\x01\x00\x00\x00" "aK\x01X\x01\x00\x00\x00" "bK\x02uX\x01\x00\x00\x00"
                       "aK\x03s."));
    CHECK(v && v->kind == PK_DICT && v->u.dict.len == 3);
    CHECK(pk_as_int(pk_dict_get(v, "a"), &x) == 0 && x == 3);
    CHECK(pk_as_int(pk_dict_get(v, "b"), &x) == 0 && x == 2);
    CHECK(pk_dict_get(v, "c") == NULL && pk_dict_get(v, NULL) == NULL);
    pk_free(d);
    v = ok_parse(&d, P("(K\x01K\x02" "d."));
    CHECK(v && v->kind == PK_DICT && v->u.dict.len == 1 && pk_dict_get(v, "x") == NULL);
    pk_free(d);

    /* sets as lists */
    v = ok_parse(&d, P("\x80\x04(\x8f(K\x01K\x02\x90(K\x03\x91t."));
    CHECK(v && pk_seq_len(v) == 2 && pk_seq_len(pk_seq_at(v, 0)) == 2 &&
          pk_seq_at(v, 1)->kind == PK_LIST && pk_seq_len(pk_seq_at(v, 1)) == 1);
    pk_free(d);

    /* objects: REDUCE + SETITEMS into an OrderedDict, APPENDS into an
     * object, NEWOBJ_EX with empty kwargs, BUILD with a tuple state,
     * INST, OBJ, PERSID */
    v = ok_parse(&d, P("\x80\x04(ccollections\nOrderedDict\nq\x00)R(X\x01\x00\x00\x00kK\x05u"
                       "\x8c\x01m\x8c\x01L\x93)\x81(K\x01K\x02" "e"
                       "\x8c\x01m\x8c\x01N\x93)}\x92K\x09\x85" "b"
                       "(K\x04im\nI\n" "(h\x00K\x05o" "Pabc\n" "t."));
    CHECK(v && pk_seq_len(v) == 6);
    if (v && pk_seq_len(v) == 6) {
        const pk_value *od = pk_seq_at(v, 0);
        CHECK(pk_is_object_of(od, "collections", "OrderedDict") && !od->u.obj.newobj);
        CHECK(od->u.obj.dictitems && pk_as_int(pk_dict_get(od->u.obj.dictitems, "k"), &x) == 0 &&
              x == 5);
        const pk_value *l = pk_seq_at(v, 1);
        CHECK(pk_is_object_of(l, "m", "L") && l->u.obj.newobj && pk_seq_len(l->u.obj.items) == 2);
        const pk_value *n = pk_seq_at(v, 2);
        CHECK(pk_is_object_of(n, "m", "N") && n->u.obj.state && int_at(n->u.obj.state, 0) == 9);
        CHECK(pk_object_state_dict(n) == NULL);
        const pk_value *in = pk_seq_at(v, 3);
        CHECK(pk_is_object_of(in, "m", "I") && int_at(in->u.obj.args, 0) == 4);
        const pk_value *ob = pk_seq_at(v, 4);
        CHECK(ob->kind == PK_OBJECT && ob->u.obj.callable == od->u.obj.callable &&
              int_at(ob->u.obj.args, 0) == 5);
        const pk_value *pp = pk_seq_at(v, 5);
        CHECK(pp->kind == PK_PERSID && pk_as_str(pp->u.persid.pid) &&
              strcmp(pk_as_str(pp->u.persid.pid), "abc") == 0);
        CHECK(!pk_is_object_of(pk_seq_at(v, 0), "collections", "defaultdict"));
        CHECK(!pk_is_global(od, "collections", "OrderedDict"));
    }
    pk_free(d);

    /* Bytes after STOP are ignored, as by Python; helpers refuse wrong kinds. */
    v = ok_parse(&d, P("K\x01.garbage"));
    CHECK(pk_as_int(v, &x) == 0 && x == 1 && pk_as_str(v) == NULL && pk_seq_len(v) == 0 &&
          pk_seq_at(v, 0) == NULL && pk_object_state_dict(v) == NULL);
    CHECK(pk_as_int(NULL, &x) == -EINVAL && pk_root(NULL) == NULL);
    pk_free(d);
    pk_free(NULL);
}

/* ---- malformed input -------------------------------------------------- */

struct bad {
    const char *what;
    const char *buf;
    size_t len;
    int rc;
    const char *msg; /* substring of the error */
};

#define BAD(what, s, rc, msg) { what, s, sizeof(s) - 1, rc, msg }

static const struct bad bads[] = {
    BAD("empty", "", -EINVAL, "before STOP"),
    BAD("no STOP", "\x80\x02K\x01", -EINVAL, "before STOP"),
    BAD("truncated PROTO", "\x80", -EINVAL, "truncated PROTO"),
    BAD("truncated BININT", "\x80\x02J\x01\x02", -EINVAL, "truncated BININT"),
    BAD("truncated BINUNICODE length", "\x80\x02X\x01\x00", -EINVAL, "truncated BINUNICODE"),
    BAD("truncated GLOBAL", "\x80\x02" "ctorch\nFloat", -EINVAL, "truncated GLOBAL"),
    BAD("truncated LONG1", "\x80\x02\x8a\x04\x01\x02", -EINVAL, "truncated LONG1"),
    BAD("unknown opcode", "\x80\x02\xff.", -EINVAL, "unknown opcode 0xff at offset 2"),
    BAD("huge BINUNICODE", "\x80\x02X\xff\xff\xff\xff" "abc.", -EINVAL, "exceeds"),
    BAD("huge BINUNICODE8", "\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f" "abc.", -EINVAL, "exceeds"),
    BAD("huge BINBYTES8", "\x80\x04\x8e\x00\x00\x00\x00\x01\x00\x00\x00.", -EINVAL, "exceeds"),
    BAD("huge FRAME", "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x01\x00N.", -EINVAL, "FRAME length"),
    BAD("negative BINSTRING", "T\xff\xff\xff\xff.", -EINVAL, "negative length"),
    BAD("bad memo index", "\x80\x02K\x01q\x00h\x05.", -EINVAL, "memo index 5"),
    BAD("bad LONG_BINGET", "\x80\x02j\x00\x00\x01\x00.", -EINVAL, "never stored"),
    BAD("bad GET", "g-1\n.", -EINVAL, "out of range"),
    BAD("LONG1 of 9 bytes", "\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", -EINVAL,
        "wider than 64 bits"),
    BAD("LONG4 negative length", "\x8b\xff\xff\xff\xff.", -EINVAL, "negative length"),
    BAD("text INT overflow", "I99999999999999999999\n.", -EINVAL, "wider than 64 bits"),
    BAD("text INT junk", "I12x\n.", -EINVAL, "bad number"),
    BAD("text FLOAT junk", "F1.5x\n.", -EINVAL, "bad number"),
    BAD("unquoted STRING", "Sabc\n.", -EINVAL, "not quoted"),
    BAD("bad \\x in STRING", "S'\\x4'\n.", -EINVAL, "\\x escape"),
    BAD("truncated \\u in UNICODE", "V\\u12\n.", -EINVAL, "\\u escape"),
    BAD("stack underflow APPEND", "\x80\x02" "a.", -EINVAL, "stack underflow in APPEND"),
    BAD("stack underflow STOP", "\x80\x02.", -EINVAL, "stack underflow in STOP"),
    BAD("stack underflow REDUCE", "\x80\x02)R.", -EINVAL, "stack underflow in REDUCE"),
    BAD("underflow across MARK", "\x80\x02K\x01(\x85.", -EINVAL, "stack underflow in TUPLE1"),
    BAD("TUPLE without MARK", "\x80\x02K\x01t.", -EINVAL, "TUPLE without MARK"),
    BAD("APPENDS without MARK", "\x80\x02]K\x01" "e.", -EINVAL, "APPENDS without MARK"),
    BAD("SETITEMS target under MARK", "(K\x01K\x02u.", -EINVAL, "stack underflow in SETITEMS"),
    BAD("POP_MARK without MARK", "K\x01" "1.", -EINVAL, "without MARK"),
    BAD("odd SETITEMS", "}(K\x01u.", -EINVAL, "odd number"),
    BAD("odd DICT", "(K\x01" "d.", -EINVAL, "odd number"),
    BAD("BUILD on non-object", "\x80\x02]}b.", -EINVAL, "BUILD on a value that is not an object"),
    BAD("second BUILD", "\x80\x02" "cm\nC\n)\x81}b}b.", -EINVAL, "second BUILD"),
    BAD("APPEND onto tuple", "\x80\x02)K\x01" "a.", -EINVAL, "not a list"),
    BAD("SETITEM onto list", "\x80\x02]K\x01K\x02s.", -EINVAL, "not a dict"),
    BAD("ADDITEMS onto list", "\x80\x04](K\x01\x90.", -EINVAL, "not a set"),
    BAD("ADDITEMS onto frozenset", "\x80\x04(\x91(K\x01\x90.", -EINVAL, "frozenset"),
    BAD("list inside itself", "\x80\x02]q\x00h\x00" "a.", -EINVAL, "inside itself"),
    BAD("object state is itself", "\x80\x02" "cm\nC\n)\x81q\x00h\x00" "b.", -EINVAL, "inside itself"),
    BAD("object item is itself", "\x80\x02" "cm\nC\n)Rq\x00h\x00" "a.", -EINVAL, "inside itself"),
    BAD("modified after use", "\x80\x02]q\x00]h\x00" "ah\x00K\x01" "a.", -EINVAL, "already used"),
    BAD("REDUCE args not tuple", "\x80\x02" "cm\nf\n]R.", -EINVAL, "not a tuple"),
    BAD("NEWOBJ_EX kwargs", "\x80\x04" "cm\nC\n)}X\x01\x00\x00\x00kK\x01s\x92.", -EINVAL,
        "keyword arguments"),
    BAD("STACK_GLOBAL of ints", "\x80\x04K\x01K\x02\x93.", -EINVAL, "two strings"),
    BAD("NUL in STACK_GLOBAL", "\x80\x04\x8c\x03" "a\x00" "b\x8c\x01" "c\x93.", -EINVAL, "class name"),
    BAD("invalid UTF-8", "\x80\x02X\x02\x00\x00\x00\xc3\x28.", -EINVAL, "invalid UTF-8"),
    BAD("overlong UTF-8", "\x80\x04\x8c\x02\xc0\xaf.", -EINVAL, "invalid UTF-8"),
    BAD("protocol 6", "\x80\x06N.", -EINVAL, "unsupported protocol 6"),
    BAD("EXT1", "\x80\x02\x82\x01.", -EINVAL, "extension registry"),
    BAD("NEXT_BUFFER", "\x80\x05\x97.", -EINVAL, "out-of-band"),
    BAD("READONLY_BUFFER of int", "\x80\x05K\x01\x98.", -EINVAL, "not bytes"),
    BAD("OBJ without class", "(o.", -EINVAL, "stack underflow in OBJ"),
};

static void test_errors(void)
{
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        const struct bad *b = &bads[i];
        char err[256] = "untouched";
        pk_doc *doc = (pk_doc *)&err; /* must be reset to NULL */
        int rc = pk_parse((const uint8_t *)b->buf, b->len, &doc, err, sizeof err);
        bool ok = rc == b->rc && doc == NULL && strstr(err, b->msg) && strstr(err, "at offset") &&
                  !strchr(err, '\n');
        check_report(ok, b->what, __FILE__, __LINE__);
        if (!ok)
            printf("#   rc %d, err \"%s\", want \"%s\"\n", rc, err, b->msg);
    }
    /* A NULL err buffer is allowed. */
    pk_doc *doc = NULL;
    CHECK_EQ_INT(pk_parse((const uint8_t *)"\xff", 1, &doc, NULL, 0), -EINVAL);
}

/* Limits: marks, nesting, exponential sharing. */
static void test_limits(void)
{
    char err[256];
    pk_doc *doc = NULL;
    uint8_t buf[2048];
    size_t n;

    /* PK_MAX_DEPTH MARKs are fine, one more is not */
    n = 0;
    for (int i = 0; i < PK_MAX_DEPTH; i++)
        buf[n++] = '(';
    buf[n++] = 'N';
    buf[n++] = '.';
    CHECK_EQ_INT(pk_parse(buf, n, &doc, err, sizeof err), 0);
    pk_free(doc);
    memmove(buf + 1, buf, n);
    buf[0] = '(';
    CHECK_EQ_INT(pk_parse(buf, n + 1, &doc, err, sizeof err), -E2BIG);
    CHECK(strstr(err, "nested MARK") != NULL);

    /* lists nested PK_MAX_DEPTH deep: ok; one deeper: refused */
    for (int depth = PK_MAX_DEPTH; depth <= PK_MAX_DEPTH + 1; depth++) {
        n = 0;
        for (int i = 0; i <= depth; i++)
            buf[n++] = ']';
        for (int i = 0; i < depth; i++)
            buf[n++] = 'a';
        buf[n++] = '.';
        int rc = pk_parse(buf, n, &doc, err, sizeof err);
        if (depth == PK_MAX_DEPTH) {
            uint64_t count = 0;
            CHECK_EQ_INT(rc, 0);
            CHECK(rc == 0 && walk(pk_root(doc), 0, &count) && count == (uint64_t)depth + 1);
            pk_free(doc);
        } else {
            CHECK_EQ_INT(rc, -E2BIG);
            CHECK(strstr(err, "nesting deeper") != NULL);
        }
    }

    /* x = [0, 0]; then [x, x] 40 times: a few hundred bytes whose full walk
     * would visit 2^40 values. */
    n = 0;
    buf[n++] = 0x80;
    buf[n++] = 0x02;
    buf[n++] = 'K';
    buf[n++] = 0;
    buf[n++] = 'q';
    buf[n++] = 0;
    for (int i = 0; i < 40; i++) {
        buf[n++] = ']';
        for (int k = 0; k < 2; k++) {
            buf[n++] = 'h';
            buf[n++] = (uint8_t)i;
            buf[n++] = 'a';
        }
        buf[n++] = 'q';
        buf[n++] = (uint8_t)(i + 1);
    }
    buf[n++] = '.';
    CHECK_EQ_INT(pk_parse(buf, n, &doc, err, sizeof err), -E2BIG);
    CHECK(strstr(err, "counted each time") != NULL);
}

/* Every prefix of a real .metadata fails cleanly; random corruptions never
 * crash (ASan/UBSan watch) and whatever parses is a finite tree. */
static void test_robustness(void)
{
    size_t len = 0;
    uint8_t *buf = slurp(FIX "dcp_single/.metadata", &len);
    CHECK(buf != NULL);
    if (!buf)
        return;
    char err[256];
    bool prefixes_fail = true;
    for (size_t n = 0; n < len; n++) {
        pk_doc *doc = NULL;
        int rc = pk_parse(buf, n, &doc, err, sizeof err);
        if (rc == 0 || doc || !strstr(err, "at offset"))
            prefixes_fail = false;
        pk_free(doc);
    }
    CHECK(prefixes_fail);

    uint8_t *m = malloc(len);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    int parsed = 0;
    bool sane = m != NULL;
    for (int iter = 0; m && iter < 3000; iter++) {
        memcpy(m, buf, len);
        int flips = 1 + iter % 4;
        for (int k = 0; k < flips; k++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            m[seed % len] = (uint8_t)(seed >> 32);
        }
        pk_doc *doc = NULL;
        err[0] = '\0';
        int rc = pk_parse(m, len, &doc, err, sizeof err);
        if (rc == 0) {
            uint64_t count = 0;
            parsed++;
            if (!doc || !walk(pk_root(doc), 0, &count))
                sane = false;
        } else if (doc || !strstr(err, "at offset") ||
                   (rc != -EINVAL && rc != -E2BIG && rc != -ENOMEM)) {
            sane = false;
        }
        pk_free(doc);
    }
    CHECK(sane);
    printf("# %d of 3000 corrupted .metadata still parsed\n", parsed);
    free(m);
    free(buf);
}

int main(void)
{
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        test_metadata_fixture(&fixtures[i]);
    for (size_t i = 0; i < sizeof rebuilds / sizeof rebuilds[0]; i++)
        test_data_pkl(&rebuilds[i]);
    test_data_pkl_values();
    test_opcodes();
    test_errors();
    test_limits();
    test_robustness();
    return check_done();
}
