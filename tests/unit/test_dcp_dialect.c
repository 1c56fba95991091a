/* What a commit carries over from the .metadata it replaces (dcp_dialect.h):
 * a real torch 1.13 checkpoint (tests/fixtures/torch-1.13) keeps torch
 * 1.13's class paths, fields, TensorProperties (requires_grad=True
 * included) and planner_data None through a commit that renames a key,
 * drops one and adds one; re-described unchanged it pickles back to an
 * equal value tree.  New keys' planner paths follow their siblings. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"
#include "ckpt.h"
#include "commit.h"
#include "dcp_dialect.h"
#include "pickle.h"

#define FIX113 "tests/fixtures/torch-1.13/dcp_single"
#define MD113 "torch.distributed._shard.checkpoint.metadata"
#define ST113 "torch.distributed._shard.sharded_tensor.metadata"

static int copy_dir(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", from, to);
    return system(cmd) == 0 ? 0 : -EIO;
}

static int read_zeros(void *ctx, uint64_t off, void *buf, size_t len)
{
    (void)ctx;
    (void)off;
    memset(buf, 0, len);
    return 0;
}

static pk_doc *parse_file(const char *path)
{
    size_t len;
    uint8_t *buf = slurp(path, &len);
    pk_doc *doc = NULL;
    char err[256];
    if (buf && pk_parse(buf, len, &doc, err, sizeof err))
        doc = NULL;
    free(buf);
    return doc;
}

/* TensorProperties' state tuple element i of key fqn in a parsed Metadata. */
static const pk_value *prop(const pk_value *root, const char *fqn, size_t i, const pk_value **obj)
{
    const pk_value *sdm = pk_dict_get(pk_object_state_dict(root), "state_dict_metadata");
    const pk_value *p = pk_dict_get(pk_object_state_dict(pk_dict_get(sdm, fqn)), "properties");
    if (obj)
        *obj = p;
    return p && p->kind == PK_OBJECT ? pk_seq_at(p->u.obj.state, i) : NULL;
}

static int is_bool(const pk_value *v, int b)
{
    return v && v->kind == PK_BOOL && v->u.b == !!b;
}

static void reading_113(void)
{
    char err[512] = "";
    ck_checkpoint *ck = NULL;
    CHECK_EQ_INT(ck_open(FIX113, NULL, &ck, err, sizeof err), 0);
    if (!ck) {
        printf("# %s\n", err);
        return;
    }
    const ck_dcp_dialect *d = ck->dialect;
    CHECK(d != NULL);
    if (d) {
        CHECK_EQ_STR(ck_dialect_module(d, CK_MDC_METADATA), MD113);
        CHECK_EQ_STR(ck_dialect_module(d, CK_MDC_TENSOR), MD113);
        CHECK_EQ_STR(ck_dialect_module(d, CK_MDC_STORAGE), "torch.distributed._shard.checkpoint.filesystem");
        CHECK_EQ_INT(d->nfields, 3);
        CHECK(d->nfields == 3 && !strcmp(d->fields[0].name, "state_dict_metadata") &&
              !strcmp(d->fields[1].name, "planner_data") && !strcmp(d->fields[2].name, "storage_data"));
        CHECK(!d->planner_is_dict); /* None: kept verbatim */
        /* w needs grad, the others do not: two values per dtype at most */
        const ck_key *w = ck_find_key(ck, "w"), *b = ck_find_key(ck, "layer.bias");
        CHECK(w && b && w->props_id && b->props_id && w->props_id != b->props_id);
        CHECK(d->nprops >= 2 && d->nprops < ck->nkeys);
    }
    ck_close(ck);
}

static void commit_113(const char *tmp)
{
    char dir[512], path[600], err[512] = "";
    snprintf(dir, sizeof dir, "%s/c113", tmp);
    CHECK_EQ_INT(copy_dir(FIX113, dir), 0);
    ck_checkpoint *ck = NULL;
    CHECK_EQ_INT(ck_open(dir, NULL, &ck, err, sizeof err), 0);
    if (!ck)
        return;
    /* keep everything but cplx, rename w -> renamed.w, add a bf16 key,
     * replace layer.bias (float32) by a new int32 tensor of that name */
    ck_save_key *ks = calloc(ck->nkeys + 1, sizeof *ks);
    size_t n = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (!strcmp(k->fqn, "cplx") || !strcmp(k->fqn, "layer.bias"))
            continue;
        ks[n].old = k;
        ks[n].fqn = strcmp(k->fqn, "w") ? k->fqn : "renamed.w";
        n++;
    }
    static const uint64_t shape[2] = { 2, 3 };
    ks[n++] = (ck_save_key){ .fqn = "added", .dtype = CK_DT_BFLOAT16, .ndim = 2, .shape = shape,
                             .read = read_zeros };
    ks[n++] = (ck_save_key){ .fqn = "layer.bias", .dtype = CK_DT_INT32, .ndim = 2, .shape = shape,
                             .read = read_zeros };
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_commit_opts o = { .dirfd = dfd, .checkpoint_id = dir };
    int rc = ck_commit(ck, ks, n, &o, NULL, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        printf("# %s\n", err);
    snprintf(path, sizeof path, "%s/.metadata", dir);
    pk_doc *doc = parse_file(path);
    CHECK(doc != NULL);
    if (doc) {
        const pk_value *root = pk_root(doc);
        const pk_value *st = pk_object_state_dict(root);
        CHECK(pk_is_object_of(root, MD113, "Metadata"));
        CHECK(st && st->u.dict.len == 3);
        CHECK(pk_dict_get(st, "storage_meta") == NULL && pk_dict_get(st, "version") == NULL);
        const pk_value *pd = pk_dict_get(st, "planner_data");
        CHECK(pd && pd->kind == PK_NONE);
        const pk_value *po = NULL;
        /* the renamed key kept requires_grad=True; the others their False */
        CHECK(is_bool(prop(root, "renamed.w", 2, &po), 1));
        CHECK(pk_is_object_of(po, ST113, "TensorProperties"));
        CHECK(pk_is_global(prop(root, "renamed.w", 0, NULL), "torch", "float32"));
        CHECK(is_bool(prop(root, "layer.weight", 2, NULL), 0));
        /* a key replaced under its name: the old key's properties, the new dtype */
        CHECK(is_bool(prop(root, "layer.bias", 2, &po), 0));
        CHECK(pk_is_global(prop(root, "layer.bias", 0, NULL), "torch", "int32"));
        CHECK(pk_is_object_of(po, ST113, "TensorProperties"));
        /* the new key: the checkpoint's TensorProperties, its own dtype, no grad */
        CHECK(is_bool(prop(root, "added", 2, &po), 0) && is_bool(prop(root, "added", 4, NULL), 0));
        CHECK(pk_is_object_of(po, ST113, "TensorProperties"));
        CHECK(pk_is_global(prop(root, "added", 0, NULL), "torch", "bfloat16"));
        /* Python 3.11's enum pickling, as read: getattr(MEM_FORMAT_ENCODING, name) */
        const pk_value *mf = prop(root, "added", 3, NULL);
        CHECK(pk_is_object_of(mf, "builtins", "getattr"));
        const pk_value *sdm = pk_dict_get(st, "state_dict_metadata");
        CHECK(pk_is_object_of(pk_dict_get(sdm, "step"), MD113, "BytesStorageMetadata"));
        CHECK(pk_dict_get(sdm, "cplx") == NULL);
        /* keys in the order torch wrote them (a replaced one in its place),
         * the new one last */
        CHECK(sdm && sdm->u.dict.len == n && !strcmp(pk_as_str(sdm->u.dict.keys[0]), "renamed.w") &&
              !strcmp(pk_as_str(sdm->u.dict.keys[2]), "layer.bias") &&
              !strcmp(pk_as_str(sdm->u.dict.keys[n - 1]), "added"));
        const pk_value *sd = pk_dict_get(st, "storage_data");
        CHECK(sd && sd->u.dict.len > 0 &&
              pk_is_object_of(sd->u.dict.keys[0], MD113, "MetadataIndex") &&
              pk_is_object_of(sd->u.dict.vals[0], "torch.distributed._shard.checkpoint.filesystem",
                              "_StorageInfo"));
        pk_free(doc);
    }
    /* and the result reads back (our reader; torch113.bats has torch's) */
    ck_checkpoint *back = NULL;
    CHECK_EQ_INT(ck_open(dir, NULL, &back, err, sizeof err), 0);
    if (back) {
        CHECK(ck_find_key(back, "renamed.w") && ck_find_key(back, "added") && !ck_find_key(back, "cplx"));
        ck_close(back);
    }
    close(dfd);
    free(ks);
    ck_close(ck);
}

/* ---- planner paths of new keys ---- */

typedef struct {
    const char *fqn;
    const char *path[6];
    uint8_t is_int[6];
} pk_case;

static ck_checkpoint *fake(const pk_case *c, size_t n, ck_key *keys, char ***paths)
{
    static ck_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    for (size_t i = 0; i < n; i++) {
        uint32_t len = 0;
        while (len < 6 && c[i].path[len])
            len++;
        paths[i] = calloc(len + 1, sizeof(char *));
        for (uint32_t j = 0; j < len; j++)
            paths[i][j] = (char *)c[i].path[j];
        keys[i] = (ck_key){ .fqn = (char *)c[i].fqn, .planner_kind = CK_PD_TUPLE,
                            .planner_path = paths[i], .planner_path_is_int = (uint8_t *)c[i].is_int,
                            .planner_path_len = len };
    }
    ck.keys = keys;
    ck.nkeys = n;
    return &ck;
}

static int path_is(const pk_case *c, size_t n, const char *fqn, const char *want, const char *ints)
{
    ck_key keys[8];
    char **paths[8];
    ck_checkpoint *ck = fake(c, n, keys, paths);
    char **p = NULL;
    uint8_t *is_int = NULL;
    uint32_t len = 0;
    ck_planner_pattern pat;
    ck_planner_pattern_of(ck, &pat);
    int ok = ck_planner_path_for(ck, &pat, fqn, &p, &is_int, &len) == 0;
    char got[256] = "", gi[16] = "";
    for (uint32_t j = 0; ok && j < len; j++) {
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", j ? "|" : "", p[j]);
        gi[j < 15 ? j : 15] = is_int[j] ? '1' : '0';
    }
    ok = ok && strcmp(got, want) == 0 && (!ints || strcmp(gi, ints) == 0);
    if (!ok)
        printf("# %s: got %s (%s), want %s\n", fqn, got, gi, want);
    ck_planner_path_free(p, is_int, len);
    for (size_t i = 0; i < n; i++)
        free(paths[i]);
    return ok;
}

static void planner_paths(void)
{
    /* torch 2.x flattening a nested dict of modules: module names stay whole */
    static const pk_case nested[] = {
        { "model.embed.weight", { "model", "embed.weight" }, { 0 } },
        { "model.layers.0.attn.wq.weight", { "model", "layers", "0", "attn.wq.weight" }, { 0 } },
        { "optim.state.0.exp_avg", { "optim", "state", "0", "exp_avg" }, { 0, 0, 1, 0 } },
    };
    CHECK(path_is(nested, 3, "model.layers.0.extra.bias", "model|layers|0|extra.bias", NULL));
    CHECK(path_is(nested, 3, "model.head.w", "model|head.w", NULL));
    CHECK(path_is(nested, 3, "optim.state.0.exp_avg_sq", "optim|state|0|exp_avg_sq", "0010"));
    /* a directory renamed: grouped as its siblings are, ints where they were */
    CHECK(path_is(nested, 3, "model.layers.7.attn.wq.weight", "model|layers|7|attn.wq.weight", NULL));
    CHECK(path_is(nested, 3, "optim.state.12.exp_avg", "optim|state|12|exp_avg", "0010"));
    CHECK(path_is(nested, 3, "optim.state.x.exp_avg", "optim|state|x|exp_avg", "0000"));
    CHECK(path_is(nested, 3, "model.layers.0.extra", "model|layers|0|extra", NULL));
    CHECK(path_is(nested, 3, "other.w", "other.w", NULL));
    /* every path is its FQN split at '.': so is a new one */
    static const pk_case split[] = {
        { "a.b.c", { "a", "b", "c" }, { 0 } },
        { "a.d", { "a", "d" }, { 0 } },
    };
    CHECK(path_is(split, 2, "a.x.y", "a|x|y", NULL));
    CHECK(path_is(split, 2, "z.y", "z|y", NULL));
    /* fqn -> (fqn,): stays flat */
    static const pk_case flat[] = {
        { "layer.bias", { "layer.bias" }, { 0 } },
        { "layer.weight", { "layer.weight" }, { 0 } },
    };
    CHECK(path_is(flat, 2, "layer.extra", "layer.extra", NULL));
    /* nothing to follow */
    CHECK(path_is(flat, 0, "a.b", "a.b", NULL));
}

int main(void)
{
    char tmp[] = "/tmp/test_dcp_dialect.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    reading_113();
    commit_113(tmp);
    planner_paths();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmp);
    return check_done();
}
