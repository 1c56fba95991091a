/* Safetensors sources through ck_open: the fixtures' keys, shapes and
 * chunks agree with their manifests; DCP_SHARDING_INFO pieces join into one
 * key; inconsistent directories are refused with the culprit named. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"
#include "ckpt.h"

#define FIX "tests/fixtures/torch-2.11/"

/* Every manifest key is a key with that dtype, shape, size and chunk count,
 * and there are no others. */
static void check_manifest(const ck_checkpoint *ck, const char *manifest)
{
    cJSON *m = load_json(manifest);
    if (!check_report(m != NULL, manifest, __FILE__, __LINE__))
        return;
    size_t n = 0;
    for (const cJSON *e = m->child; e; e = e->next, n++) {
        const ck_key *k = ck_find_key(ck, e->string);
        if (!check_report(k != NULL, e->string, __FILE__, __LINE__))
            continue;
        const cJSON *dt = cJSON_GetObjectItem(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItem(e, "shape");
        const cJSON *nbytes = cJSON_GetObjectItem(e, "nbytes");
        const cJSON *chunks = cJSON_GetObjectItem(e, "chunks");
        CHECK_EQ_INT(k->kind, CK_KEY_TENSOR);
        CHECK_EQ_STR(ck_dtype_get(k->dtype)->torch_name, dt->valuestring);
        CHECK_EQ_INT(k->ndim, cJSON_GetArraySize(shape));
        uint32_t d = 0;
        for (const cJSON *s = shape->child; s && d < k->ndim; s = s->next, d++)
            CHECK_EQ_INT(k->shape[d], (uint64_t)s->valuedouble);
        CHECK_EQ_INT(k->nbytes, (uint64_t)nbytes->valuedouble);
        CHECK_EQ_INT(k->nchunks, chunks ? (uint32_t)chunks->valuedouble : 1);
        CHECK_EQ_INT(k->error, 0);
        for (uint32_t c = 0; c < k->nchunks; c++) {
            const ck_chunk *ch = &k->chunks[c];
            CHECK_EQ_INT(ch->format, CK_ITEM_RAW);
            CHECK_EQ_INT(ch->transforms, 0);
            CHECK(ch->file < ck->nfiles);
            uint64_t numel = ck_dtype_get(k->dtype)->size;
            for (uint32_t i = 0; i < k->ndim; i++)
                numel *= ch->sizes[i];
            CHECK_EQ_INT(ch->length, numel);
        }
    }
    CHECK_EQ_INT(ck->nkeys, n);
    cJSON_Delete(m);
}

static ck_checkpoint *open_ok(const char *src)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "";
    int rc = ck_open(src, NULL, &ck, err, sizeof err);
    if (!check_report(rc == 0, src, __FILE__, __LINE__)) {
        printf("#   %s\n", err);
        return NULL;
    }
    return ck;
}

static void test_st_single(void)
{
    ck_checkpoint *ck = open_ok(FIX "st_single/model.safetensors");
    if (!ck)
        return;
    CHECK_EQ_INT(ck->kind, CK_SRC_SAFETENSORS);
    CHECK_EQ_INT(ck->nfiles, 1);
    CHECK_EQ_STR(ck->files[0].path, "model.safetensors");
    check_manifest(ck, FIX "st_single.manifest.json");
    const ck_key *k = ck_find_key(ck, "a.weight");
    if (k) {
        CHECK_EQ_INT(k->chunks[0].offset, 488 + 112);
        CHECK_EQ_INT(k->chunks[0].length, 256);
        CHECK_EQ_INT(k->chunks[0].offsets[0], 0);
        CHECK_EQ_INT(k->chunks[0].sizes[1], 8);
    }
    k = ck_find_key(ck, "d.scalar");
    if (k) {
        CHECK_EQ_INT(k->ndim, 0);
        CHECK_EQ_INT(k->numel, 1);
        CHECK_EQ_INT(k->chunks[0].offset, 488 + 368);
    }
    k = ck_find_key(ck, "e.empty");
    if (k) {
        CHECK_EQ_INT(k->numel, 0);
        CHECK_EQ_INT(k->chunks[0].length, 0);
    }
    ck_close(ck);
}

static void test_hf_llama(void)
{
    ck_checkpoint *ck = open_ok(FIX "hf_llama_sharded");
    if (!ck)
        return;
    CHECK_EQ_INT(ck->kind, CK_SRC_SAFETENSORS);
    CHECK_EQ_INT(ck->nfiles, 4);
    check_manifest(ck, FIX "hf_llama_sharded.manifest.json");
    const ck_key *k = ck_find_key(ck, "lm_head.weight");
    if (k)
        CHECK_EQ_STR(ck->files[k->chunks[0].file].path, "model-00004-of-00004.safetensors");
    k = ck_find_key(ck, "model.embed_tokens.weight");
    if (k) {
        CHECK_EQ_STR(ck->files[k->chunks[0].file].path, "model-00001-of-00004.safetensors");
        CHECK_EQ_INT(k->chunks[0].offset, 8 + 536);
    }
    ck_close(ck);
}

static void test_dcp_hf(void)
{
    ck_checkpoint *ck = open_ok(FIX "dcp_hf");
    if (!ck)
        return;
    CHECK_EQ_INT(ck->kind, CK_SRC_DCP_HF);
    CHECK_EQ_INT(ck->nfiles, 2);
    check_manifest(ck, FIX "dcp_hf.manifest.json");
    ck_close(ck);
}

/* ---- built directories ---- */

static char tmpdir[64];

static void write_st(const char *name, const char *json, size_t data_len)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    size_t n = strlen(json);
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)n >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(json, 1, n, f);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0xff), f);
    fclose(f);
}

static void write_text(const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static void remove_file(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    unlink(path);
}

static void expect_fail(const char *what, const char *needle1, const char *needle2)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "";
    int rc = ck_open(tmpdir, NULL, &ck, err, sizeof err);
    int ok = rc < 0 && strstr(err, needle1) && (!needle2 || strstr(err, needle2)) &&
             !strchr(err, '\n');
    if (!check_report(ok, what, __FILE__, __LINE__))
        printf("#   rc %d, err \"%s\"\n", rc, err);
    else
        printf("#   %s\n", err);
    if (!rc)
        ck_close(ck);
}

#define HALF_A "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{\\\"w\\\": {\\\"saved_offsets\\\": " \
               "[0, 0]}, \\\"s\\\": {\\\"saved_offsets\\\": []}}\"}," \
               "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}," \
               "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}"
#define HALF_B "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{\\\"w\\\": {\\\"saved_offsets\\\": " \
               "[2, 0]}}\"}," \
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}"

static void test_sharded_pieces(void)
{
    write_st("model-00001-of-00002.safetensors", HALF_A, 32);
    write_st("model-00002-of-00002.safetensors", HALF_B, 12);
    ck_checkpoint *ck = open_ok(tmpdir);
    if (ck) {
        CHECK_EQ_INT(ck->kind, CK_SRC_DCP_HF);
        CHECK_EQ_INT(ck->nkeys, 2);
        const ck_key *k = ck_find_key(ck, "w");
        if (check_report(k != NULL, "key w", __FILE__, __LINE__)) {
            CHECK_EQ_INT(k->nchunks, 2);
            CHECK_EQ_INT(k->ndim, 2);
            CHECK_EQ_INT(k->shape[0], 3);
            CHECK_EQ_INT(k->shape[1], 3);
            CHECK_EQ_INT(k->numel, 9);
            CHECK_EQ_INT(k->nbytes, 36);
            CHECK_EQ_INT(k->error, 0);
            CHECK_EQ_INT(k->chunks[0].offsets[0], 0);
            CHECK_EQ_INT(k->chunks[0].sizes[0], 2);
            CHECK_EQ_INT(k->chunks[1].offsets[0], 2);
            CHECK_EQ_INT(k->chunks[1].sizes[0], 1);
            CHECK_EQ_STR(ck->files[k->chunks[1].file].path, "model-00002-of-00002.safetensors");
            CHECK_EQ_INT(k->chunks[1].offset, 8 + strlen(HALF_B));
            CHECK_EQ_INT(k->chunks[1].length, 12);
        }
        ck_close(ck);
    }

    /* an index that agrees */
    write_text("model.safetensors.index.json",
               "{\"metadata\": {}, \"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\", "
               "\"s\": \"model-00001-of-00002.safetensors\"}}");
    ck = open_ok(tmpdir);
    if (ck)
        ck_close(ck);

    /* an index naming a shard that is not there */
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\", "
               "\"s\": \"model-00003-of-00003.safetensors\"}}");
    expect_fail("index names a missing file", "model-00003-of-00003.safetensors", "missing");
    /* an index that forgets a key, or names one nobody holds */
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\"}}");
    expect_fail("index lacks a key", "'s'", "index.json");
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\", "
               "\"s\": \"model-00001-of-00002.safetensors\", "
               "\"t\": \"model-00001-of-00002.safetensors\"}}");
    expect_fail("index names an absent key", "'t'", NULL);
    write_text("model.safetensors.index.json",
               "{\"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\", "
               "\"s\": \"model-00002-of-00002.safetensors\"}}");
    expect_fail("index puts a key in the wrong file", "'s'", "model-00002-of-00002");
    write_text("model.safetensors.index.json", "{\"weight_map\": ");
    expect_fail("index is not JSON", "index.json", "JSON");
    remove_file("model.safetensors.index.json");

    /* a piece without an entry in DCP_SHARDING_INFO */
    write_st("model-00002-of-00002.safetensors",
             "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{}\"},"
             "\"w\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}", 12);
    expect_fail("sharding info lacks a tensor", "model-00002-of-00002.safetensors", "'w'");
    /* pieces that disagree on dtype */
    write_st("model-00002-of-00002.safetensors",
             "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{\\\"w\\\": {\\\"saved_offsets\\\": "
             "[2, 0]}}\"},\"w\":{\"dtype\":\"F64\",\"shape\":[1,3],\"data_offsets\":[0,24]}}", 24);
    expect_fail("pieces differ in dtype", "'w'", "dtype");
    /* saved_offsets of the wrong rank */
    write_st("model-00002-of-00002.safetensors",
             "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{\\\"w\\\": {\\\"saved_offsets\\\": "
             "[2]}}\"},\"w\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}", 12);
    expect_fail("saved_offsets rank", "'w'", "saved_offsets");

    /* the same tensor in two plain files */
    write_st("model-00001-of-00002.safetensors",
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}", 12);
    write_st("model-00002-of-00002.safetensors",
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[0,12]}}", 12);
    expect_fail("duplicate key without sharding info", "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors");

    /* a broken shard is named */
    write_st("model-00002-of-00002.safetensors",
             "{\"v\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 12);
    expect_fail("bad shard header", "model-00002-of-00002.safetensors", "'v'");
    remove_file("model-00002-of-00002.safetensors");

    /* a shard that is a symlink out of the directory */
    char target[256], link[256];
    snprintf(target, sizeof target, "%s.outside.safetensors", tmpdir);
    snprintf(link, sizeof link, "%s/model-00002-of-00002.safetensors", tmpdir);
    FILE *f = fopen(target, "wb");
    fwrite("\x02\0\0\0\0\0\0\0{}", 1, 10, f);
    fclose(f);
    CHECK_EQ_INT(symlink(target, link), 0);
    expect_fail("symlink leaving the root", "model-00002-of-00002.safetensors", "leaves");
    unlink(link);
    unlink(target);

    remove_file("model-00001-of-00002.safetensors");
}

int main(void)
{
    test_st_single();
    test_hf_llama();
    test_dcp_hf();

    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_st_source.XXXXXX");
    if (check_report(mkdtemp(tmpdir) != NULL, "mkdtemp", __FILE__, __LINE__)) {
        test_sharded_pieces();
        rmdir(tmpdir);
    }
    return check_done();
}
