/* safetensors headers: the torch 2.11 fixtures parse to what their
 * manifests say, and broken headers built in memory are refused with a
 * message naming the tensor at fault. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byte_source.h"
#include "check.h"
#include "safetensors.h"

#define FIX "tests/fixtures/torch-2.11/"

static int parse_path(const char *path, ck_st_header *h, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open", path);
        return -errno;
    }
    struct stat st;
    fstat(fd, &st);
    ck_byte_source src = ck_byte_source_fd(fd, 0, (uint64_t)st.st_size);
    int rc = ck_st_parse(&src, h, err, errlen);
    close(fd);
    return rc;
}

static const ck_st_tensor *find(const ck_st_header *h, const char *name)
{
    for (size_t i = 0; i < h->ntensors; i++)
        if (strcmp(h->tensors[i].name, name) == 0)
            return &h->tensors[i];
    return NULL;
}

static void check_tensor(const ck_st_header *h, const char *name, ck_dtype dt, uint32_t ndim,
                         const uint64_t *shape, uint64_t begin, uint64_t end)
{
    const ck_st_tensor *t = find(h, name);
    if (!check_report(t != NULL, name, __FILE__, __LINE__))
        return;
    CHECK_EQ_INT(t->dtype, dt);
    CHECK_EQ_INT(t->ndim, ndim);
    CHECK(ndim == 0 || memcmp(t->shape, shape, ndim * sizeof *shape) == 0);
    CHECK_EQ_INT(t->begin, begin);
    CHECK_EQ_INT(t->end, end);
}

static void test_st_single(void)
{
    ck_st_header h;
    char err[256] = "";
    int rc = parse_path(FIX "st_single/model.safetensors", &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s\n", err);
        return;
    }
    CHECK_EQ_INT(h.header_len, 480);
    CHECK_EQ_INT(h.data_start, 488);
    CHECK_EQ_INT(h.ntensors, 7);
    /* header order is kept */
    static const char *order[] = { "c.idx", "a.bias", "a.weight", "d.scalar", "e.empty",
                                   "b.weight", "f.half" };
    for (size_t i = 0; i < 7 && i < h.ntensors; i++)
        CHECK_EQ_STR(h.tensors[i].name, order[i]);
    check_tensor(&h, "c.idx", CK_DT_INT64, 1, (uint64_t[]){ 10 }, 0, 80);
    check_tensor(&h, "a.weight", CK_DT_FLOAT32, 2, (uint64_t[]){ 8, 8 }, 112, 368);
    check_tensor(&h, "d.scalar", CK_DT_FLOAT32, 0, NULL, 368, 372);
    check_tensor(&h, "e.empty", CK_DT_FLOAT32, 1, (uint64_t[]){ 0 }, 372, 372);
    check_tensor(&h, "b.weight", CK_DT_BFLOAT16, 2, (uint64_t[]){ 4, 8 }, 372, 436);
    check_tensor(&h, "f.half", CK_DT_FLOAT16, 2, (uint64_t[]){ 3, 3 }, 436, 454);
    CHECK_EQ_INT(h.nmeta, 1);
    CHECK_EQ_STR(ck_st_meta_get(&h, "format"), "pt");
    CHECK(ck_st_meta_get(&h, "DCP_SHARDING_INFO") == NULL);
    ck_st_free(&h);
    CHECK_EQ_INT(h.ntensors, 0);
}

static void test_hf_llama(void)
{
    static const char *files[] = {
        FIX "hf_llama_sharded/model-00001-of-00004.safetensors",
        FIX "hf_llama_sharded/model-00002-of-00004.safetensors",
        FIX "hf_llama_sharded/model-00003-of-00004.safetensors",
        FIX "hf_llama_sharded/model-00004-of-00004.safetensors",
    };
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        ck_st_header h;
        char err[256] = "";
        int rc = parse_path(files[i], &h, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        if (rc) {
            printf("# %s\n", err);
            continue;
        }
        total += h.ntensors;
        for (size_t k = 0; k < h.ntensors; k++)
            CHECK_EQ_INT(h.tensors[k].dtype, CK_DT_BFLOAT16);
        if (i == 0) {
            CHECK_EQ_INT(h.ntensors, 5);
            check_tensor(&h, "model.embed_tokens.weight", CK_DT_BFLOAT16, 2,
                         (uint64_t[]){ 256, 64 }, 0, 32768);
            check_tensor(&h, "model.layers.0.self_attn.k_proj.weight", CK_DT_BFLOAT16, 2,
                         (uint64_t[]){ 32, 64 }, 32768, 36864);
            CHECK_EQ_INT(h.data_start, 8 + 536);
        }
        if (i == 3)
            CHECK(find(&h, "lm_head.weight") != NULL);
        ck_st_free(&h);
    }
    /* hf_llama_sharded.manifest.json lists 21 keys */
    CHECK_EQ_INT(total, 21);
}

static void test_dcp_hf(void)
{
    ck_st_header h;
    char err[256] = "";
    int rc = parse_path(FIX "dcp_hf/model-00001-of-00002.safetensors", &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK_EQ_INT(h.ntensors, 3);
        check_tensor(&h, "a.bias", CK_DT_FLOAT32, 1, (uint64_t[]){ 8 }, 0, 32);
        check_tensor(&h, "d.scalar", CK_DT_FLOAT32, 0, NULL, 32, 36);
        check_tensor(&h, "b.weight", CK_DT_BFLOAT16, 2, (uint64_t[]){ 4, 8 }, 36, 100);
        CHECK_EQ_STR(ck_st_meta_get(&h, "DCP_VERSION"), "1.0");
        const char *info = ck_st_meta_get(&h, "DCP_SHARDING_INFO");
        CHECK(info && strstr(info, "\"saved_offsets\"") != NULL);
        ck_st_free(&h);
    }
    rc = parse_path(FIX "dcp_hf/model-00002-of-00002.safetensors", &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK_EQ_INT(h.ntensors, 3);
        check_tensor(&h, "c.idx", CK_DT_INT64, 1, (uint64_t[]){ 10 }, 0, 80);
        check_tensor(&h, "a.weight", CK_DT_FLOAT32, 2, (uint64_t[]){ 8, 8 }, 80, 336);
        check_tensor(&h, "f.half", CK_DT_FLOAT16, 2, (uint64_t[]){ 3, 3 }, 336, 354);
        CHECK_EQ_INT(h.header_len, 384);
        ck_st_free(&h);
    }
}

/* A file in memory: length prefix, header, data_len zero bytes. */
static int parse_mem(const char *json, size_t data_len, ck_st_header *h, char *err,
                     size_t errlen)
{
    size_t n = strlen(json);
    size_t total = 8 + n + data_len;
    uint8_t *buf = calloc(1, total);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, n);
    ck_byte_source src = ck_byte_source_mem(buf, total);
    err[0] = '\0';
    int rc = ck_st_parse(&src, h, err, errlen);
    free(buf);
    return rc;
}

static void test_good_in_memory(void)
{
    ck_st_header h;
    char err[256];
    /* padding spaces, unknown extra field, null metadata, zero-length
     * tensors placed anywhere, gap before the last tensor */
    int rc = parse_mem("{\"__metadata__\":null,"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16],"
                       "\"extra\":1},"
                       "\"e\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
                       "\"x\":{\"dtype\":\"F8_E8M0\",\"shape\":[3],\"data_offsets\":[20,23]}}   ",
                       24, &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK_EQ_INT(h.ntensors, 3);
        CHECK_EQ_INT(h.nmeta, 0);
        CHECK_EQ_INT(h.tensors[2].dtype, CK_DT_FLOAT8_E8M0FNU);
        ck_st_free(&h);
    }
    /* F4 counts 4-bit values: torch's x2 shape halves the last dim */
    rc = parse_mem("{\"q\":{\"dtype\":\"F4\",\"shape\":[3,8],\"data_offsets\":[0,12]}}", 12, &h,
                   err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (!rc) {
        CHECK_EQ_INT(h.tensors[0].dtype, CK_DT_FLOAT4_E2M1FN_X2);
        CHECK_EQ_INT(h.tensors[0].shape[0], 3);
        CHECK_EQ_INT(h.tensors[0].shape[1], 4);
        ck_st_free(&h);
    }
    /* an empty header */
    rc = parse_mem("{}", 0, &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(h.ntensors, 0);
    ck_st_free(&h);
    /* JSON only, as a writer checking its own header would call it */
    const char *js = "{\"a\":{\"dtype\":\"I16\",\"shape\":[3],\"data_offsets\":[0,6]}}";
    rc = ck_st_parse_json(js, strlen(js), 6, &h, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(h.data_start, 8 + strlen(js));
    ck_st_free(&h);
}

static void test_bad_in_memory(void)
{
    struct {
        const char *json;
        size_t data_len;
        const char *msg; /* must appear in the error */
    } bad[] = {
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "JSON" },
        { "not json at all", 8, "JSON" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 8, "after" },
        { "[1,2,3]", 0, "not an object" },
        { "{\"w\":{\"dtype\":\"F31\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
          "\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 16, "overlap" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlap" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16, "needs 12" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 16, "'w'" },
        { "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 16, "'w'" },
        { "{\"w\":[1,2]}", 16, "'w'" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],"
          "\"data_offsets\":[0,8]}}", 16, "overflow" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
          "1,1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 16, "dimensions" },
        { "{\"q\":{\"dtype\":\"F4\",\"shape\":[3,7],\"data_offsets\":[0,11]}}", 16, "even" },
        { "{\"q\":{\"dtype\":\"F4\",\"shape\":[],\"data_offsets\":[0,1]}}", 16, "even" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, "twice" },
        { "{\"__metadata__\":{\"a\":1}}", 0, "not a string" },
        { "{\"__metadata__\":[\"a\"]}", 0, "__metadata__" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_st_header h;
        char err[256];
        int rc = parse_mem(bad[i].json, bad[i].data_len, &h, err, sizeof err);
        if (!check_report(rc == -EINVAL && strstr(err, bad[i].msg) != NULL,
                          "bad header refused", __FILE__, __LINE__))
            printf("#   case %zu: rc %d, err \"%s\"\n", i, rc, err);
        CHECK_EQ_INT(h.ntensors, 0);
        CHECK(h.tensors == NULL);
    }
}

static void test_bad_lengths(void)
{
    ck_st_header h;
    char err[256] = "";
    /* header length past the end of the file */
    uint8_t buf[64] = { 0 };
    buf[0] = 200;
    memcpy(buf + 8, "{}", 2);
    ck_byte_source src = ck_byte_source_mem(buf, 10);
    CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "exceeds the file") != NULL);
    /* shorter than the length prefix */
    src = ck_byte_source_mem(buf, 5);
    CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "too short") != NULL);
    /* length beyond the 100 MiB limit, also one that would wrap 8 + N */
    memset(buf, 0, 8);
    buf[3] = 0x10; /* 256 MiB */
    src = ck_byte_source_mem(buf, sizeof buf);
    CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "limit") != NULL);
    memset(buf, 0xff, 8);
    CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
    /* NUL inside the header */
    memset(buf, 0, sizeof buf);
    buf[0] = 4;
    memcpy(buf + 8, "{}\0 ", 4);
    src = ck_byte_source_mem(buf, 12);
    CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
    /* a truncated fixture: its header now claims bytes past the end */
    int fd = open(FIX "st_single/model.safetensors", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    if (fd >= 0) {
        src = ck_byte_source_fd(fd, 0, 928); /* data holds 454 bytes; cut to 440 */
        CHECK_EQ_INT(ck_st_parse(&src, &h, err, sizeof err), -EINVAL);
        CHECK(strstr(err, "'f.half'") != NULL);
        close(fd);
    }
}

int main(void)
{
    test_st_single();
    test_hf_llama();
    test_dcp_hf();
    test_good_in_memory();
    test_bad_in_memory();
    test_bad_lengths();
    return check_done();
}
