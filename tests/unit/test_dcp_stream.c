/* The two ways a DCP .metadata becomes keys (dcp_metadata.c): built while
 * the pickle is parsed (what every document torch writes takes) and from the
 * whole value tree (what odd documents fall back to).  For every real
 * checkpoint in tests/fixtures and for generated ones (many keys, a deep
 * tree, 10,000 chunks in shuffled order), the streamed build must be the one
 * taken, and it must give exactly the model of the whole-tree build: keys,
 * chunks, files, planner paths, TensorProperties, order, and the .metadata a
 * commit that changes nothing writes from it (the dialect). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ckpt.h"
#include "metadata_write.h"

static int same_dims(const uint64_t *a, const uint64_t *b, uint32_t n)
{
    return n == 0 || (a && b && memcmp(a, b, n * sizeof *a) == 0);
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The .metadata a commit that changes nothing writes from ck. */
static int rewrite(const ck_checkpoint *ck, uint8_t **out, size_t *len)
{
    char err[512] = "";
    int rc = ck_metadata_write_unchanged(ck, "/x", "test", out, len, err, sizeof err);
    if (rc)
        printf("# rewrite: %s\n", err);
    return rc;
}

/* Whether a and b describe the same checkpoint, field by field; names the
 * first difference. */
static int same_model(const ck_checkpoint *a, const ck_checkpoint *b)
{
    if (a->nkeys != b->nkeys || a->nfiles != b->nfiles || a->kind != b->kind ||
        !same_str(a->version, b->version)) {
        printf("# counts differ: %zu/%zu keys, %zu/%zu files\n", a->nkeys, b->nkeys, a->nfiles,
               b->nfiles);
        return 0;
    }
    for (size_t i = 0; i < a->nfiles; i++)
        if (!same_str(a->files[i].path, b->files[i].path)) {
            printf("# file %zu: %s / %s\n", i, a->files[i].path, b->files[i].path);
            return 0;
        }
    for (size_t i = 0; i < a->nkeys; i++) {
        const ck_key *x = &a->keys[i], *y = &b->keys[i];
        int ok = same_str(x->fqn, y->fqn) && x->kind == y->kind && x->dtype == y->dtype &&
                 x->ndim == y->ndim && same_dims(x->shape, y->shape, x->ndim) &&
                 x->numel == y->numel && x->nbytes == y->nbytes && x->nchunks == y->nchunks &&
                 x->error == y->error && x->planner_kind == y->planner_kind &&
                 x->planner_path_len == y->planner_path_len && x->props_id == y->props_id &&
                 x->md_order == y->md_order && !x->chunk_index == !y->chunk_index;
        for (uint32_t j = 0; ok && j < x->planner_path_len; j++)
            ok = same_str(x->planner_path[j], y->planner_path[j]) &&
                 x->planner_path_is_int[j] == y->planner_path_is_int[j];
        for (uint32_t j = 0; ok && j < x->nchunks; j++) {
            const ck_chunk *c = &x->chunks[j], *d = &y->chunks[j];
            ok = same_dims(c->offsets, d->offsets, x->ndim) && same_dims(c->sizes, d->sizes, x->ndim) &&
                 c->file == d->file && c->offset == d->offset && c->length == d->length &&
                 c->transforms == d->transforms && c->format == d->format;
        }
        if (!ok) {
            printf("# key %s differs\n", x->fqn);
            return 0;
        }
    }
    return 1;
}

static void check_both_ways(const char *dir)
{
    ck_checkpoint *streamed = NULL, *whole = NULL;
    char err[512] = "";
    ck_open_opts whole_opts = { .whole_tree_metadata = true };
    int rc = ck_open(dir, NULL, &streamed, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        printf("# %s: %s\n", dir, err);
    rc = ck_open(dir, &whole_opts, &whole, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!streamed || !whole) {
        ck_close(streamed);
        ck_close(whole);
        return;
    }
    printf("# %s: %zu keys\n", dir, streamed->nkeys);
    CHECK(streamed->metadata_streamed);
    CHECK(!whole->metadata_streamed);
    CHECK(same_model(streamed, whole));
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    CHECK_EQ_INT(rewrite(streamed, &a, &alen), 0);
    CHECK_EQ_INT(rewrite(whole, &b, &blen), 0);
    CHECK(a && b && alen == blen && memcmp(a, b, alen) == 0);
    free(a);
    free(b);
    ck_close(streamed);
    ck_close(whole);
}

/* scripts/gen_dcp.py into dir/name with args; 0 when /usr/bin/python3 wrote it. */
static int generate(const char *dir, const char *name, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 scripts/gen_dcp.py --out %s/%s %s >/dev/null 2>&1",
             dir, name, args);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    static const char *const fixtures[] = {
        "tests/fixtures/torch-2.11/dcp_single",
        "tests/fixtures/torch-2.11/dcp_single_perfile",
        "tests/fixtures/torch-2.11/dcp_zstd",
        "tests/fixtures/torch-2.11/dcp_fsdp2_optim",
        "tests/fixtures/torch-2.11/dcp_dtensor_ws4",
        "tests/fixtures/torch-2.11/dcp_dtensor_ws4_perfile",
        "tests/fixtures/torch-1.13/dcp_single",
        "tests/fixtures/dcp-safetensors/dcp_st_torch",
        "tests/fixtures/dcp-safetensors/dcp_st_nemo",
        "tests/fixtures/dcp-safetensors/dcp_st_nemo_ws4",
    };
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++)
        check_both_ways(fixtures[i]);

    char tmp[] = "/tmp/test_dcp_stream_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    static const struct {
        const char *name, *args;
    } generated[] = {
        { "keys", "--keys 3000 --layout single" },
        { "deep", "--keys 2000 --deep --layout single" },
        { "shuffled", "--size 1M --tensors 2 --cols 8 --layout row10k_shuffled" },
        { "grid", "--size 256K --tensors 3 --layout grid4x2 --dtype bfloat16" },
    };
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("# /usr/bin/python3 missing: generated checkpoints not tried\n");
    } else {
        for (size_t i = 0; i < sizeof generated / sizeof generated[0]; i++) {
            int rc = generate(tmp, generated[i].name, generated[i].args);
            CHECK_EQ_INT(rc, 0);
            char dir[512];
            snprintf(dir, sizeof dir, "%s/%s", tmp, generated[i].name);
            if (!rc)
                check_both_ways(dir);
        }
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    CHECK_EQ_INT(system(cmd), 0);
    return check_done();
}
