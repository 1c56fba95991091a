/* torch_item against torch 2.11's items: each file of dcp_single_perfile is
 * one item; its tensor bytes must hash to the manifest's sha256 for the key
 * the checkpoint's .metadata maps that file to. */
#include <cjson/cJSON.h>
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
#include "test_util.h"
#include "torch_item.h"
#include "zip_reader.h"

#define FIXROOT "tests/fixtures/torch-2.11/"
#define FIXDIR FIXROOT "dcp_single_perfile/"

/* From dcp_single_perfile/.metadata's storage_data (relative_path of each
 * key's only chunk; every item starts at offset 0 of its file). */
static const char *const item_key[] = {
    "model.embed.weight",         "model.layers.0.attn.wq.weight", "model.layers.0.attn.wk.weight",
    "model.layers.0.mlp.w1.weight", "model.layers.0.norm.weight",  "model.layers.1.attn.wq.weight",
    "model.layers.1.mlp.w1.weight", "model.transposed",            "model.view_of_bigger",
    "model.scalar",               "model.empty",                   "model.ints",
    "model.i32",                  "model.i8",                      "model.u8",
    "model.mask",                 "model.cplx",                    "model.fp8",
    "step",                       "meta.name",                     "meta.lrs",
};
#define N_ITEMS (int)(sizeof item_key / sizeof item_key[0])

static void test_fixture_items(void)
{
    cJSON *manifest = load_json(FIXROOT "dcp_single_perfile.manifest.json");
    CHECK(manifest != NULL);
    if (!manifest)
        return;
    int seen_transposed = 0;
    for (int i = 0; i < N_ITEMS; i++) {
        char path[256];
        snprintf(path, sizeof path, FIXDIR "__0_%d.distcp", i);
        const cJSON *entry = cJSON_GetObjectItemCaseSensitive(manifest, item_key[i]);
        CHECK(entry != NULL);
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "kind"));
        int fd = open(path, O_RDONLY);
        CHECK(fd >= 0);
        struct stat st;
        fstat(fd, &st);
        ck_byte_source src = ck_byte_source_fd(fd, 0, (uint64_t)st.st_size);
        ck_torch_item it;
        char err[256] = "";
        int rc = ck_torch_item_parse(&src, &it, err, sizeof err);
        if (kind && strcmp(kind, "bytes") == 0) {
            /* a pickled int/str/list is not a tensor */
            CHECK_EQ_INT(rc, -EINVAL);
            printf("# %s: %s\n", item_key[i], err);
            close(fd);
            continue;
        }
        CHECK_EQ_INT(rc, 0);
        if (rc < 0) {
            printf("# %s: %s\n", item_key[i], err);
            close(fd);
            continue;
        }
        const ck_dtype_info *info = ck_dtype_get(it.dtype);
        CHECK(info != NULL);
        CHECK_EQ_STR(info->torch_name,
                     cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "dtype")));
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
        CHECK_EQ_INT(it.ndim, cJSON_GetArraySize(shape));
        for (uint32_t d = 0; d < it.ndim && d < (uint32_t)cJSON_GetArraySize(shape); d++) {
            CHECK_EQ_INT(it.size[d], cJSON_GetArrayItem(shape, (int)d)->valuedouble);
            CHECK(it.stride[d] >= 0);
        }
        CHECK_EQ_INT(it.data_offset % 64, 0);
        CHECK(it.data_offset + it.data_length <= (uint64_t)st.st_size);

        size_t len;
        uint8_t *whole = slurp(path, &len);
        uint64_t nbytes = numel_of(it.ndim, it.size) * info->size;
        CHECK_EQ_INT(nbytes, cJSON_GetObjectItemCaseSensitive(entry, "nbytes")->valuedouble);
        const char *want = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "sha256"));
        char got[65] = "";
        if (strcmp(item_key[i], "model.transposed") == 0) {
            seen_transposed = 1;
            CHECK(!ck_torch_item_is_contiguous(&it));
            CHECK(it.ndim == 2 && it.size[0] == 5 && it.size[1] == 7 && it.stride[0] == 1 &&
                  it.stride[1] == 5);
        } else {
            CHECK(ck_torch_item_is_contiguous(&it));
        }
        if (ck_torch_item_is_contiguous(&it)) {
            const uint8_t *p = whole + it.data_offset + it.storage_offset * info->size;
            CHECK_EQ_INT(sha256_hex(p, (size_t)nbytes, got), 0);
            CHECK_EQ_STR(got, want);
        }
        /* gather works for every layout and agrees with the manifest */
        uint8_t *dst = malloc(nbytes ? (size_t)nbytes : 1);
        CHECK_EQ_INT(ck_torch_item_gather(&it, whole, len, dst, nbytes), 0);
        CHECK_EQ_INT(sha256_hex(dst, (size_t)nbytes, got), 0);
        CHECK_EQ_STR(got, want);
        /* a short destination is refused */
        if (nbytes > 0)
            CHECK_EQ_INT(ck_torch_item_gather(&it, whole, len, dst, nbytes - 1), -EINVAL);
        /* the item buffer must hold what the description addresses */
        if (nbytes > 0)
            CHECK_EQ_INT(ck_torch_item_gather(&it, whole, it.data_offset + 1, dst, nbytes), -EINVAL);
        free(dst);

        /* the same item from memory parses identically */
        ck_byte_source msrc = ck_byte_source_mem(whole, len);
        ck_torch_item it2;
        CHECK_EQ_INT(ck_torch_item_parse(&msrc, &it2, err, sizeof err), 0);
        CHECK(memcmp(&it, &it2, sizeof it) == 0);
        free(whole);
        close(fd);
    }
    CHECK(seen_transposed);
    cJSON_Delete(manifest);
}

static uint8_t *find_bytes(uint8_t *hay, size_t hay_len, const void *needle, size_t n)
{
    for (size_t i = 0; i + n <= hay_len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

static void test_malformed(void)
{
    size_t len;
    uint8_t *buf = slurp(FIXDIR "__0_14.distcp", &len); /* model.u8: uint8[37] */
    CHECK(buf != NULL);
    ck_byte_source src = ck_byte_source_mem(buf, len);
    ck_torch_item it;
    char err[256] = "";
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), 0);

    /* size (37,) -> (38,): data.pkl now describes one byte more than data/0 */
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    uint8_t *size_op = find_bytes(copy, len, "K\x00K%\x85", 5);
    CHECK(size_op != NULL);
    size_op[3] = 38;
    src = ck_byte_source_mem(copy, len);
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), -EINVAL);
    CHECK_EQ_STR(err, "data.pkl describes 38 bytes but data/0 holds 37");

    /* storage_offset 1 with the original size also runs one past */
    memcpy(copy, buf, len);
    size_op = find_bytes(copy, len, "K\x00K%\x85", 5);
    size_op[1] = 1;
    src = ck_byte_source_mem(copy, len);
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), -EINVAL);
    CHECK_EQ_STR(err, "data.pkl describes 38 bytes but data/0 holds 37");

    /* stride 2 over 37 elements addresses 73 bytes */
    memcpy(copy, buf, len);
    uint8_t *stride_op = find_bytes(copy, len, "K\x01\x85q\x07", 5);
    CHECK(stride_op != NULL);
    stride_op[1] = 2;
    src = ck_byte_source_mem(copy, len);
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), -EINVAL);
    CHECK_EQ_STR(err, "data.pkl describes 73 bytes but data/0 holds 37");

    /* an unknown storage class */
    memcpy(copy, buf, len);
    uint8_t *cls = find_bytes(copy, len, "ByteStorage", 11);
    CHECK(cls != NULL);
    cls[0] = 'X';
    src = ck_byte_source_mem(copy, len);
    CHECK(ck_torch_item_parse(&src, &it, err, sizeof err) < 0);
    printf("# unknown class: %s\n", err);

    /* the storage key names a member that does not exist */
    memcpy(copy, buf, len);
    uint8_t *key = find_bytes(copy, len, "X\x01\x00\x00\x00" "0", 6);
    CHECK(key != NULL);
    key[5] = '7';
    src = ck_byte_source_mem(copy, len);
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), -ENOENT);

    /* a truncated pickle */
    memcpy(copy, buf, len);
    uint8_t *stop = find_bytes(copy, len, "q\x0b.", 3);
    CHECK(stop != NULL);
    stop[2] = 'N';
    src = ck_byte_source_mem(copy, len);
    CHECK(ck_torch_item_parse(&src, &it, err, sizeof err) < 0);
    printf("# no STOP: %s\n", err);

    /* a truncated archive */
    src = ck_byte_source_mem(buf, len - 10);
    CHECK_EQ_INT(ck_torch_item_parse(&src, &it, err, sizeof err), -EINVAL);
    free(copy);
    free(buf);
}

/* gather of synthetic layouts against the definition: element (i,j,k) is
 * at storage_offset + i*s0 + j*s1 + k*s2. */
static void test_gather_synthetic(void)
{
    uint8_t storage[4096];
    for (size_t i = 0; i < sizeof storage; i++)
        storage[i] = (uint8_t)(i * 7 + 3);
    struct {
        uint32_t ndim;
        uint64_t size[3];
        int64_t stride[3];
        uint64_t off;
    } cases[] = {
        { 3, { 2, 3, 4 }, { 12, 4, 1 }, 0 },  /* contiguous */
        { 3, { 2, 3, 4 }, { 1, 2, 6 }, 5 },   /* fully transposed */
        { 3, { 4, 1, 5 }, { 5, 99, 1 }, 1 },  /* size-1 dim with any stride */
        { 2, { 3, 4 }, { 10, 2 }, 2 },        /* every other element, row gaps */
        { 2, { 3, 4 }, { 0, 1 }, 0 },         /* broadcast rows */
        { 0, { 0 }, { 0 }, 9 },               /* 0-d */
        { 1, { 6 }, { 3 }, 1 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int es_i = 0; es_i < 2; es_i++) {
            ck_torch_item it;
            memset(&it, 0, sizeof it);
            it.dtype = es_i ? CK_DT_FLOAT32 : CK_DT_UINT8;
            size_t es = es_i ? 4 : 1;
            it.data_offset = 64;
            it.data_length = sizeof storage - 64;
            it.storage_offset = cases[c].off;
            it.ndim = cases[c].ndim;
            uint64_t sz[3] = { 1, 1, 1 };
            int64_t sd[3] = { 0, 0, 0 };
            for (uint32_t d = 0; d < it.ndim; d++) {
                it.size[d] = sz[3 - it.ndim + d] = cases[c].size[d];
                it.stride[d] = sd[3 - it.ndim + d] = cases[c].stride[d];
            }
            uint64_t numel = sz[0] * sz[1] * sz[2];
            uint8_t want[1024], got[1024];
            size_t w = 0;
            for (uint64_t i = 0; i < sz[0]; i++)
                for (uint64_t j = 0; j < sz[1]; j++)
                    for (uint64_t k = 0; k < sz[2]; k++, w += es)
                        memcpy(want + w, storage + 64 + (it.storage_offset + i * sd[0] + j * sd[1] + k * sd[2]) * es, es);
            memset(got, 0xEE, sizeof got);
            CHECK_EQ_INT(ck_torch_item_gather(&it, storage, sizeof storage, got, numel * es), 0);
            CHECK(memcmp(got, want, numel * es) == 0);
            CHECK_EQ_INT(got[numel * es], 0xEE);
        }
    }
    /* contiguity: size-1 dims do not matter, empty tensors are trivially so */
    ck_torch_item it;
    memset(&it, 0, sizeof it);
    it.dtype = CK_DT_UINT8;
    it.ndim = 3;
    it.size[0] = 4; it.size[1] = 1; it.size[2] = 5;
    it.stride[0] = 5; it.stride[1] = 123; it.stride[2] = 1;
    CHECK(ck_torch_item_is_contiguous(&it));
    it.stride[0] = 6;
    CHECK(!ck_torch_item_is_contiguous(&it));
    it.size[2] = 0;
    CHECK(ck_torch_item_is_contiguous(&it));
    it.ndim = 0;
    CHECK(ck_torch_item_is_contiguous(&it));
    /* a forged description that addresses past data/0 is refused */
    it.ndim = 1;
    it.size[0] = 10;
    it.stride[0] = 1;
    it.data_offset = 0;
    it.data_length = 9;
    uint8_t dst[16], src[16] = { 0 };
    CHECK_EQ_INT(ck_torch_item_gather(&it, src, sizeof src, dst, sizeof dst), -EINVAL);
    it.stride[0] = INT64_MAX;
    it.data_length = 16;
    CHECK(ck_torch_item_gather(&it, src, sizeof src, dst, sizeof dst) < 0);
}

/* Deterministic random damage to real items: parse either refuses or
 * returns a description whose gather stays inside the buffer (ASan would
 * catch a stray read). */
static void test_mutations(void)
{
    static const int files[] = { 0, 7, 9, 10, 17, 18 };
    uint32_t x = 0x12345678u;
    int parsed = 0, refused = 0, bad_gather = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[256];
        snprintf(path, sizeof path, FIXDIR "__0_%d.distcp", files[f]);
        size_t len;
        uint8_t *orig = slurp(path, &len);
        uint8_t *copy = malloc(len);
        for (int round = 0; round < 400; round++) {
            memcpy(copy, orig, len);
            int flips = 1 + round % 4;
            for (int k = 0; k < flips; k++) {
                x = x * 1664525u + 1013904223u;
                uint64_t at = (x >> 8) % len;
                x = x * 1664525u + 1013904223u;
                copy[at] ^= (uint8_t)(1u << ((x >> 16) % 8));
            }
            /* every other round, cut the archive short too */
            uint64_t n = round % 2 ? len - ((x >> 4) % (len / 4)) : len;
            ck_byte_source src = ck_byte_source_mem(copy, n);
            ck_torch_item it;
            char err[256];
            if (ck_torch_item_parse(&src, &it, err, sizeof err) < 0) {
                refused++;
                continue;
            }
            parsed++;
            uint64_t numel = numel_of(it.ndim, it.size), es = ck_dtype_get(it.dtype)->size;
            if (numel * es > (1u << 20))
                continue;
            uint8_t *dst = malloc(numel * es + 1);
            if (ck_torch_item_gather(&it, copy, n, dst, numel * es) < 0)
                bad_gather++;
            free(dst);
        }
        free(copy);
        free(orig);
    }
    printf("# mutations: %d parsed, %d refused\n", parsed, refused);
    CHECK(refused > 0);
    CHECK_EQ_INT(bad_gather, 0);
}

/* The data.pkl memo: every fixture item parsed through one memo, twice (the
 * second pass finds each member remembered), says what a parse without it
 * says; a remembered member whose archive records another CRC-32 is still
 * refused; one slot's worth of bytes changed is parsed afresh. */
static void test_pkl_memo(void)
{
    ck_pkl_memo memo;
    ck_pkl_memo_init(&memo);
    int parsed = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N_ITEMS; i++) {
            char path[256], err[256] = "", err2[256] = "";
            snprintf(path, sizeof path, FIXDIR "__0_%d.distcp", i);
            size_t len;
            uint8_t *whole = slurp(path, &len);
            CHECK(whole != NULL);
            if (!whole)
                continue;
            ck_byte_source src = ck_byte_source_mem(whole, len);
            ck_torch_item plain, memoized;
            int rc = ck_torch_item_parse(&src, &plain, err, sizeof err);
            int rc2 = ck_torch_item_parse_memo(&src, &memo, &memoized, err2, sizeof err2);
            CHECK_EQ_INT(rc2, rc);
            CHECK_EQ_STR(err2, err);
            if (rc == 0) {
                CHECK(memcmp(&plain, &memoized, sizeof plain) == 0);
                parsed++;
            }
            free(whole);
        }
    }
    CHECK(parsed >= 2 * 16);

    size_t len;
    uint8_t *buf = slurp(FIXDIR "__0_14.distcp", &len); /* model.u8: uint8[37] */
    CHECK(buf != NULL);
    if (!buf) {
        ck_pkl_memo_destroy(&memo);
        return;
    }
    ck_byte_source src = ck_byte_source_mem(buf, len);
    ck_torch_item it;
    char err[256] = "";
    CHECK_EQ_INT(ck_torch_item_parse_memo(&src, &memo, &it, err, sizeof err), 0);
    ck_zip_member pkl;
    CHECK_EQ_INT(ck_zip_find(&src, "/data.pkl", &pkl, err, sizeof err), 0);

    /* the same data.pkl bytes under another recorded CRC-32 (local header and
     * central directory): remembered, and still refused */
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    uint8_t crc_le[4] = { (uint8_t)pkl.crc32, (uint8_t)(pkl.crc32 >> 8),
                          (uint8_t)(pkl.crc32 >> 16), (uint8_t)(pkl.crc32 >> 24) };
    int flipped = 0;
    for (uint8_t *p = copy; (p = find_bytes(p, len - (size_t)(p - copy), crc_le, 4)) != NULL; p += 4) {
        p[0] ^= 1;
        flipped++;
    }
    CHECK(flipped >= 1);
    src = ck_byte_source_mem(copy, len);
    CHECK_EQ_INT(ck_torch_item_parse_memo(&src, &memo, &it, err, sizeof err), -EINVAL);
    CHECK_EQ_STR(err, "data.pkl fails its CRC-32 check");

    /* a changed size in data.pkl is not the remembered member */
    memcpy(copy, buf, len);
    uint8_t *size_op = find_bytes(copy, len, "K\x00K%\x85", 5);
    CHECK(size_op != NULL);
    if (size_op) {
        size_op[3] = 38;
        src = ck_byte_source_mem(copy, len);
        CHECK_EQ_INT(ck_torch_item_parse_memo(&src, &memo, &it, err, sizeof err), -EINVAL);
        CHECK_EQ_STR(err, "data.pkl describes 38 bytes but data/0 holds 37");
    }
    free(copy);
    free(buf);
    ck_pkl_memo_destroy(&memo);
}

int main(void)
{
    test_fixture_items();
    test_malformed();
    test_gather_synthetic();
    test_mutations();
    test_pkl_memo();
    return check_done();
}
