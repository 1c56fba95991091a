/* The .metadata writer: every fixture checkpoint re-described through
 * ck_metadata_write reopens (our reader) to the same keys, chunks, storage,
 * transforms and planner paths and the same bytes; the pickle has torch's
 * class paths; synthetic cases cover batching, wide ranks, 0-d, new keys and
 * refusals; Python's own pickle (tests/bats/read_metadata.py, stand-in
 * classes, no C code) agrees when /usr/bin/python3 is there. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "metadata_write.h"
#include "pickle.h"

#define FIX "tests/fixtures/torch-2.11/"

static int copy_file(const char *from, const char *to)
{
    size_t len;
    void *buf = slurp(from, &len);
    if (!buf)
        return -EIO;
    int rc = write_file(to, buf, len);
    free(buf);
    return rc;
}

/* The description of ck as it stands: what a commit with nothing changed
 * would write. */
static ck_md_key *describe(const ck_checkpoint *ck)
{
    ck_md_key *keys = calloc(ck->nkeys + 1, sizeof *keys);
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        ck_md_chunk *ch = calloc(k->nchunks + 1, sizeof *ch);
        for (uint32_t j = 0; j < k->nchunks; j++) {
            ch[j].offsets = k->chunks[j].offsets;
            ch[j].sizes = k->chunks[j].sizes;
            ch[j].storage = (ck_md_storage){ ck->files[k->chunks[j].file].path,
                                             k->chunks[j].offset, k->chunks[j].length,
                                             k->chunks[j].transforms };
        }
        keys[i] = (ck_md_key){ .fqn = k->fqn, .kind = k->kind, .dtype = k->dtype,
                               .ndim = k->ndim, .shape = k->shape, .nchunks = k->nchunks,
                               .chunks = ch, .planner_kind = k->planner_kind,
                               .planner_path = k->planner_path,
                               .planner_path_is_int = k->planner_path_is_int,
                               .planner_path_len = k->planner_path_len, .props_id = k->props_id };
    }
    return keys;
}

/* ck's keys in their state_dict_metadata order */
static size_t *read_order(const ck_checkpoint *ck)
{
    size_t *order = calloc(ck->nkeys + 1, sizeof *order);
    for (size_t i = 0; i < ck->nkeys; i++)
        order[ck->keys[i].md_order] = i;
    return order;
}

/* Value equality of two parsed pickles; dicts in any order (storage_data
 * is written key by key, torch writes it rank by rank); `skip` (a dict
 * key) is not compared. */
static int same_value(const pk_value *a, const pk_value *b, const char *skip)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return 0;
    switch (a->kind) {
    case PK_NONE:
        return 1;
    case PK_OPAQUE: /* a streamed parse's stand-in: never in a document tree */
        return 0;
    case PK_BOOL:
        return a->u.b == b->u.b;
    case PK_INT:
        return a->u.i == b->u.i;
    case PK_FLOAT:
        return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0;
    case PK_STR:
    case PK_BYTES:
        return a->u.str.len == b->u.str.len && !memcmp(a->u.str.data, b->u.str.data, a->u.str.len);
    case PK_TUPLE:
    case PK_LIST:
        if (pk_seq_len(a) != pk_seq_len(b))
            return 0;
        for (size_t i = 0; i < pk_seq_len(a); i++)
            if (!same_value(pk_seq_at(a, i), pk_seq_at(b, i), skip))
                return 0;
        return 1;
    case PK_DICT:
        if (a->u.dict.len != b->u.dict.len)
            return 0;
        for (size_t i = 0; i < a->u.dict.len; i++) {
            const char *name = pk_as_str(a->u.dict.keys[i]);
            if (name && skip && strcmp(name, skip) == 0)
                continue;
            size_t j = 0;
            while (j < b->u.dict.len && !same_value(a->u.dict.keys[i], b->u.dict.keys[j], skip))
                j++;
            if (j == b->u.dict.len || !same_value(a->u.dict.vals[i], b->u.dict.vals[j], skip))
                return 0;
        }
        return 1;
    case PK_GLOBAL:
        return !strcmp(a->u.global.module, b->u.global.module) &&
               !strcmp(a->u.global.name, b->u.global.name);
    case PK_OBJECT:
        return a->u.obj.newobj == b->u.obj.newobj &&
               same_value(a->u.obj.callable, b->u.obj.callable, skip) &&
               same_value(a->u.obj.args, b->u.obj.args, skip) &&
               same_value(a->u.obj.state, b->u.obj.state, skip) &&
               same_value(a->u.obj.items, b->u.obj.items, skip) &&
               same_value(a->u.obj.dictitems, b->u.obj.dictitems, skip);
    case PK_PERSID:
        return same_value(a->u.persid.pid, b->u.persid.pid, skip);
    }
    return 0;
}

/* Whether the pickle in buf holds what the file at path does, but for
 * storage_meta.save_id. */
static int same_pickle_as(const char *path, const uint8_t *buf, size_t len, const char *save_id)
{
    size_t olen;
    uint8_t *old = slurp(path, &olen);
    pk_doc *a = NULL, *b = NULL;
    char err[256];
    int ok = old && !pk_parse(old, olen, &a, err, sizeof err) &&
             !pk_parse(buf, len, &b, err, sizeof err) &&
             same_value(pk_root(a), pk_root(b), "save_id");
    if (ok && save_id) {
        const pk_value *sm = pk_dict_get(pk_object_state_dict(pk_root(b)), "storage_meta");
        const pk_value *sid = pk_dict_get(pk_object_state_dict(sm), "save_id");
        ok = !sm || sm->kind == PK_NONE || (sid && strcmp(pk_as_str(sid), save_id) == 0);
    }
    pk_free(a);
    pk_free(b);
    free(old);
    return ok;
}

static void free_described(ck_md_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((void *)keys[i].chunks);
    free(keys);
}

static int same_key(ck_checkpoint *a, const ck_key *x, ck_checkpoint *b, const ck_key *y)
{
    if (strcmp(x->fqn, y->fqn) || x->kind != y->kind || x->nchunks != y->nchunks)
        return 0;
    if (x->kind == CK_KEY_TENSOR) {
        if (x->dtype != y->dtype || x->ndim != y->ndim ||
            memcmp(x->shape, y->shape, x->ndim * sizeof *x->shape))
            return 0;
    }
    for (uint32_t j = 0; j < x->nchunks; j++) {
        const ck_chunk *p = &x->chunks[j], *q = &y->chunks[j];
        if (x->kind == CK_KEY_TENSOR &&
            (memcmp(p->offsets, q->offsets, x->ndim * 8) || memcmp(p->sizes, q->sizes, x->ndim * 8)))
            return 0;
        if (strcmp(a->files[p->file].path, b->files[q->file].path) || p->offset != q->offset ||
            p->length != q->length || p->transforms != q->transforms)
            return 0;
    }
    if (x->planner_path_len != y->planner_path_len)
        return 0;
    for (uint32_t j = 0; j < x->planner_path_len; j++)
        if (strcmp(x->planner_path[j], y->planner_path[j]) ||
            x->planner_path_is_int[j] != y->planner_path_is_int[j])
            return 0;
    /* and the bytes read back through the rewritten metadata */
    uint64_t sa, sb;
    if (ck_key_size(a, x, &sa) || ck_key_size(b, y, &sb) || sa != sb)
        return 0;
    uint8_t *ba = malloc(sa + 1), *bb = malloc(sb + 1);
    size_t ga = 0, gb = 0;
    int ok = !ck_key_read(a, x, 0, ba, sa, &ga) && !ck_key_read(b, y, 0, bb, sb, &gb) && ga == gb &&
             memcmp(ba, bb, ga) == 0;
    free(ba);
    free(bb);
    return ok;
}

static void roundtrip_fixture(const char *name, const char *tmp)
{
    char src[512], dst[512], path[1024];
    /* torch 2.11's fixtures, and torch 1.13's (another dialect: no
     * storage_meta or version, classes under _shard) */
    bool v113 = strncmp(name, "../", 3) == 0;
    snprintf(src, sizeof src, FIX "%s", name);
    if (v113)
        name = strrchr(name, '/') + 1;
    snprintf(dst, sizeof dst, "%s/%s", tmp, name);
    mkdir(dst, 0755);
    char err[512] = "";
    ck_checkpoint *ck = NULL;
    int rc = ck_open(src, NULL, &ck, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err);
        return;
    }
    for (size_t i = 0; i < ck->nfiles; i++) {
        char from[1024];
        snprintf(from, sizeof from, "%s/%s", src, ck->files[i].path);
        snprintf(path, sizeof path, "%s/%s", dst, ck->files[i].path);
        copy_file(from, path);
    }
    ck_md_key *keys = describe(ck);
    size_t *order = read_order(ck);
    ck_md md = { .keys = keys, .nkeys = ck->nkeys, .order = order, .dialect = ck->dialect,
                 .checkpoint_id = "/somewhere/ckpt", .save_id = "0c8a2f5e-ckptfs" };
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = ck_metadata_write(&md, &buf, &len, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    /* nothing changed: everything comes back as torch wrote it, but the
     * save id (class paths, properties, planner_data, storage_meta) */
    snprintf(path, sizeof path, "%s/.metadata", src);
    CHECK(same_pickle_as(path, buf, len, "0c8a2f5e-ckptfs"));
    free(order);
    snprintf(path, sizeof path, "%s/.metadata", dst);
    CHECK_EQ_INT(write_file(path, buf, len), 0);

    /* our reader */
    ck_checkpoint *back = NULL;
    rc = ck_open(dst, NULL, &back, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK_EQ_INT(back->nkeys, ck->nkeys);
        int same = back->nkeys == ck->nkeys;
        for (size_t i = 0; same && i < ck->nkeys; i++)
            if (!same_key(ck, &ck->keys[i], back, &back->keys[i])) {
                printf("# %s: key %s differs\n", name, ck->keys[i].fqn);
                same = 0;
            }
        CHECK(same);
        if (v113)
            CHECK(back->version == NULL);
        else
            CHECK_EQ_STR(back->version, "1.0.0");
        ck_close(back);
    } else {
        printf("# %s\n", err);
    }

    /* the pickle names torch's classes */
    pk_doc *doc = NULL;
    CHECK_EQ_INT(pk_parse(buf, len, &doc, err, sizeof err), 0);
    if (doc && v113) {
        const pk_value *root = pk_root(doc);
        CHECK(pk_is_object_of(root, "torch.distributed._shard.checkpoint.metadata", "Metadata"));
        pk_free(doc);
        doc = NULL;
    }
    if (doc) {
        const pk_value *root = pk_root(doc);
        CHECK(pk_is_object_of(root, "torch.distributed.checkpoint.metadata", "Metadata"));
        const pk_value *st = pk_object_state_dict(root);
        const pk_value *sm = pk_dict_get(st, "storage_meta");
        CHECK(pk_is_object_of(sm, "torch.distributed.checkpoint.metadata", "StorageMeta"));
        const pk_value *sd = pk_dict_get(st, "storage_data");
        CHECK(sd && sd->kind == PK_DICT && sd->u.dict.len > 0);
        if (sd && sd->u.dict.len) {
            CHECK(pk_is_object_of(sd->u.dict.keys[0], "torch.distributed.checkpoint.metadata",
                                  "MetadataIndex"));
            CHECK(pk_is_object_of(sd->u.dict.vals[0], "torch.distributed.checkpoint.filesystem",
                                  "_StorageInfo"));
        }
        pk_free(doc);
    }
    if (have_read_metadata_py())
        CHECK_EQ_INT(read_metadata_check("", dst), 0);
    free(buf);
    free_described(keys, ck->nkeys);
    ck_close(ck);
}

/* A tensor's properties as torch pickles them. */
static void check_properties(const pk_value *tsm)
{
    const pk_value *props = pk_dict_get(pk_object_state_dict(tsm), "properties");
    CHECK(pk_is_object_of(props, "torch.distributed.checkpoint.metadata", "TensorProperties"));
    const pk_value *st = props ? props->u.obj.state : NULL;
    CHECK(st && st->kind == PK_TUPLE && pk_seq_len(st) == 5);
    if (!st || pk_seq_len(st) != 5)
        return;
    CHECK(pk_is_global(pk_seq_at(st, 0), "torch", "bfloat16"));
    const pk_value *layout = pk_seq_at(st, 1);
    CHECK(pk_is_object_of(layout, "torch.serialization", "_get_layout"));
    CHECK_EQ_STR(pk_as_str(pk_seq_at(layout->u.obj.args, 0)), "torch.strided");
    CHECK(pk_seq_at(st, 2)->kind == PK_BOOL && !pk_seq_at(st, 2)->u.b);
    const pk_value *mf = pk_seq_at(st, 3);
    CHECK(pk_is_object_of(mf, "torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"));
    int64_t v = -1;
    CHECK(pk_as_int(pk_seq_at(mf->u.obj.args, 0), &v) == 0 && v == 0);
    CHECK(pk_seq_at(st, 4)->kind == PK_BOOL && !pk_seq_at(st, 4)->u.b);
}

static void synthetic(const char *tmp)
{
    char err[512], path[1024];
    /* 1500 keys (dict batches), one with 1200 chunks (list batches), a 5-d
     * key (MARK tuples), a 0-d key, a bytes key, a zstd item, new keys
     * with no planner path, an int planner path element */
    enum { NK = 1500, NCH = 1200 };
    ck_md_key *keys = calloc(NK, sizeof *keys);
    static uint64_t zeros[8], five[5] = { 2, 1, 1, 1, 3 }, one[1] = { 1 }, big[1] = { NCH };
    static uint64_t offs[NCH][1];
    static ck_md_chunk many[NCH];
    static ck_md_chunk single = { zeros, one, { "__ckptfs_1_0.distcp", 0, 10, 0 } };
    static ck_md_chunk fivech = { zeros, five, { "__ckptfs_1_0.distcp", 10, 10, CK_TF_ZSTD } };
    static ck_md_chunk scalar = { zeros, zeros, { "__ckptfs_1_0.distcp", 20, 10, 0 } };
    static ck_md_chunk bytes = { NULL, NULL, { "__0_0.distcp", 30, 10, 0 } };
    for (int i = 0; i < NCH; i++) {
        offs[i][0] = (uint64_t)i;
        many[i] = (ck_md_chunk){ offs[i], one, { "__ckptfs_1_0.distcp", 40 + (uint64_t)i, 1, 0 } };
    }
    char **names = calloc(NK, sizeof *names);
    static char *pp[] = { "layers", "7", "w" };
    static uint8_t pp_int[] = { 0, 1, 0 };
    for (int i = 0; i < NK; i++) {
        names[i] = malloc(32);
        snprintf(names[i], 32, "model.k%04d.weight", i);
        keys[i] = (ck_md_key){ .fqn = names[i], .kind = CK_KEY_TENSOR, .dtype = CK_DT_BFLOAT16,
                               .ndim = 1, .shape = one, .nchunks = 1, .chunks = &single };
    }
    keys[1] = (ck_md_key){ .fqn = "layers.7.w", .kind = CK_KEY_TENSOR, .dtype = CK_DT_BFLOAT16,
                           .ndim = 1, .shape = big, .nchunks = NCH, .chunks = many,
                           .planner_path = pp, .planner_path_is_int = pp_int,
                           .planner_path_len = 3 };
    keys[2] = (ck_md_key){ .fqn = "five", .kind = CK_KEY_TENSOR, .dtype = CK_DT_BFLOAT16, .ndim = 5,
                           .shape = five, .nchunks = 1, .chunks = &fivech };
    keys[3] = (ck_md_key){ .fqn = "scalar", .kind = CK_KEY_TENSOR, .dtype = CK_DT_BFLOAT16,
                           .ndim = 0, .shape = zeros, .nchunks = 1, .chunks = &scalar };
    keys[4] = (ck_md_key){ .fqn = "step", .kind = CK_KEY_BYTES, .nchunks = 1, .chunks = &bytes };
    ck_md md = { .keys = keys, .nkeys = NK };
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ck_metadata_write(&md, &buf, &len, err, sizeof err), 0);
    pk_doc *doc = NULL;
    CHECK_EQ_INT(pk_parse(buf, len, &doc, err, sizeof err), 0);
    if (doc) {
        const pk_value *st = pk_object_state_dict(pk_root(doc));
        const pk_value *sdm = pk_dict_get(st, "state_dict_metadata");
        CHECK(sdm && sdm->kind == PK_DICT && sdm->u.dict.len == NK);
        const pk_value *w = pk_dict_get(sdm, "layers.7.w");
        const pk_value *chunks = pk_dict_get(pk_object_state_dict(w), "chunks");
        CHECK_EQ_INT(pk_seq_len(chunks), NCH);
        check_properties(w);
        CHECK(pk_is_object_of(pk_dict_get(sdm, "step"), "torch.distributed.checkpoint.metadata",
                              "BytesStorageMetadata"));
        const pk_value *pd = pk_dict_get(st, "planner_data");
        const pk_value *p1 = pk_dict_get(pd, "layers.7.w");
        int64_t seven = 0;
        CHECK(pk_seq_len(p1) == 3 && pk_seq_at(p1, 1)->kind == PK_INT &&
              pk_as_int(pk_seq_at(p1, 1), &seven) == 0 && seven == 7);
        /* a key with no planner path has no entry */
        CHECK(pk_dict_get(pd, "model.k0000.weight") == NULL);
        const pk_value *sd = pk_dict_get(st, "storage_data");
        CHECK(sd && sd->u.dict.len == NK - 1 + NCH);
        CHECK(pk_dict_get(st, "storage_meta") && pk_dict_get(st, "storage_meta")->kind == PK_NONE);
        CHECK_EQ_STR(pk_as_str(pk_dict_get(st, "version")), "1.0.0");
        pk_free(doc);
    }
    /* our reader on it (data files absent: only the model is checked) */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/synthetic", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/.metadata", dir);
    CHECK_EQ_INT(write_file(path, buf, len), 0);
    ck_checkpoint *ck = NULL;
    CHECK_EQ_INT(ck_open(dir, NULL, &ck, err, sizeof err), 0);
    if (ck) {
        CHECK_EQ_INT(ck->nkeys, NK);
        const ck_key *f = ck_find_key(ck, "five");
        CHECK(f && f->ndim == 5 && f->shape[4] == 3 && f->chunks[0].transforms == CK_TF_ZSTD &&
              f->chunks[0].offset == 10);
        const ck_key *s = ck_find_key(ck, "scalar");
        CHECK(s && s->ndim == 0 && s->nchunks == 1 && s->chunks[0].offset == 20);
        const ck_key *w = ck_find_key(ck, "layers.7.w");
        CHECK(w && w->nchunks == NCH && w->chunks[NCH - 1].offsets[0] == NCH - 1 &&
              w->chunks[NCH - 1].offset == 40 + NCH - 1 && w->planner_path_len == 3 &&
              w->planner_path_is_int[1] && strcmp(w->planner_path[1], "7") == 0);
        const ck_key *b = ck_find_key(ck, "step");
        CHECK(b && b->kind == CK_KEY_BYTES && b->chunks[0].offset == 30 &&
              strcmp(ck->files[b->chunks[0].file].path, "__0_0.distcp") == 0);
        const ck_key *k = ck_find_key(ck, "model.k1499.weight");
        CHECK(k && k->planner_path_len == 0 && k->planner_kind == CK_PD_ABSENT);
        ck_close(ck);
    }
    if (have_read_metadata_py())
        CHECK_EQ_INT(read_metadata_check("--metadata-only", dir), 0);
    free(buf);

    /* refusals */
    ck_md_key bad = keys[4];
    bad.nchunks = 2;
    ck_md one_bad = { .keys = &bad, .nkeys = 1 };
    CHECK_EQ_INT(ck_metadata_write(&one_bad, &buf, &len, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "step") != NULL);
    bad = keys[0];
    bad.dtype = CK_DT_INVALID;
    CHECK_EQ_INT(ck_metadata_write(&one_bad, &buf, &len, err, sizeof err), -EINVAL);
    ck_md_chunk unknown = single;
    unknown.storage.transforms = CK_TF_UNKNOWN;
    bad = keys[0];
    bad.chunks = &unknown;
    CHECK_EQ_INT(ck_metadata_write(&one_bad, &buf, &len, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "transform") != NULL);

    /* an empty checkpoint is a valid one */
    ck_md empty = { .checkpoint_id = "/x", .save_id = "id" };
    CHECK_EQ_INT(ck_metadata_write(&empty, &buf, &len, err, sizeof err), 0);
    snprintf(dir, sizeof dir, "%s/empty", tmp);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/.metadata", dir);
    write_file(path, buf, len);
    free(buf);
    CHECK_EQ_INT(ck_open(dir, NULL, &ck, err, sizeof err), 0);
    if (ck) {
        CHECK_EQ_INT(ck->nkeys, 0);
        ck_close(ck);
    }
    for (int i = 0; i < NK; i++)
        free(names[i]);
    free(names);
    free(keys);
}

int main(void)
{
    char tmp[] = "/tmp/test_metadata_write.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    const char *fixtures[] = { "dcp_single", "dcp_single_perfile", "dcp_zstd", "dcp_dtensor_ws4",
                               "dcp_dtensor_ws4_perfile", "dcp_fsdp2_optim",
                               "../torch-1.13/dcp_single" };
    for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++)
        roundtrip_fixture(fixtures[i], tmp);
    synthetic(tmp);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return check_done();
}
