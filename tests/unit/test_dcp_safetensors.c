/* DCP checkpoints in the safetensors serialization format (dcp_safetensors.c):
 * every key of the tests/fixtures/dcp-safetensors checkpoints reads as its
 * manifest says (hashed by sha256sum); copies with one header or metadata
 * lie fail that key alone with EIO; ck_dcp_st_in_use tells the format apart
 * from torch.save checkpoints.  Also the hostile-name refusals of issue 11:
 * duplicate and NUL FQNs, a .metadata symlink, an index path outside. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "check.h"
#include "test_util.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "dcp_safetensors.h"
#include "safetensors.h"

#define STFIX "tests/fixtures/dcp-safetensors/"
#define FIX "tests/fixtures/torch-2.11/"

static int key_hash_is(ck_checkpoint *ck, const ck_key *key, const char *want_hex, uint64_t nbytes)
{
    uint64_t size;
    if (ck_key_size(ck, key, &size) || size != nbytes)
        return 0;
    uint8_t *buf = malloc(size + 1);
    size_t got;
    int ok = ck_key_read(ck, key, 0, buf, size, &got) == 0 && got == size;
    char hex[65];
    ok = ok && sha256_hex(buf, size, hex) == 0 && strcmp(hex, want_hex) == 0;
    free(buf);
    return ok;
}

/* Opens dir and checks every manifest key: the ones named in bad (NULL-
 * terminated) must fail with EIO, all others read their exact bytes. */
static void check_dir(const char *what, const char *dir, const char *manifest,
                      const char *const *bad)
{
    char line[700], err[512] = "";
    cJSON *man = load_json(manifest);
    ck_checkpoint *ck = NULL;
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    snprintf(line, sizeof line, "%s: opens (%s)", what, err);
    if (!check_report(rc == 0 && man, line, __FILE__, __LINE__)) {
        cJSON_Delete(man);
        return;
    }
    cJSON *e;
    cJSON_ArrayForEach(e, man) {
        const ck_key *key = ck_find_key(ck, e->string);
        int is_bad = 0;
        for (const char *const *b = bad; b && *b; b++)
            is_bad |= strcmp(*b, e->string) == 0;
        int ok = key != NULL;
        if (ok && is_bad) {
            uint8_t *buf = malloc(key->nbytes + 1);
            size_t got;
            ok = buf && ck_key_read(ck, key, 0, buf, key->nbytes, &got) == -EIO;
            free(buf);
        } else if (ok) {
            ok = key_hash_is(ck, key, cJSON_GetObjectItem(e, "sha256")->valuestring,
                             (uint64_t)cJSON_GetObjectItem(e, "nbytes")->valuedouble);
        }
        snprintf(line, sizeof line, "%s: %s %s", what, e->string, is_bad ? "fails with EIO" : "reads exactly");
        check_report(ok, line, __FILE__, __LINE__);
    }
    ck_close(ck);
    cJSON_Delete(man);
}

static int run(const char *cmd)
{
    return system(cmd) == 0 ? 0 : -1;
}

/* A fresh copy of a fixture directory under a temp dir; path into out. */
static int copy_dir(const char *src, char *out, size_t cap)
{
    char tmpl[] = "/tmp/ckpt-test-st-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    const char *base = strrchr(src, '/') ? strrchr(src, '/') + 1 : src;
    snprintf(out, cap, "%s/%s", tmpl, base);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && chmod -R u+w '%s'", src, out, out);
    return run(cmd);
}

static void remove_copy(const char *path)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf \"$(dirname '%s')\"", path);
    (void)run(cmd);
}

/* Replaces the first occurrence of old by new (same length) in file. */
static int patch_file(const char *path, const char *old, const char *new)
{
    size_t len, n = strlen(old);
    if (strlen(new) != n)
        return -1;
    uint8_t *buf = slurp(path, &len);
    if (!buf)
        return -1;
    uint8_t *hit = memmem(buf, len, old, n);
    int rc = -1;
    if (hit) {
        memcpy(hit, new, n);
        rc = write_file(path, buf, len);
    }
    free(buf);
    return rc;
}

static void check_fixtures(void)
{
    static const char *const names[] = { "dcp_st_nemo", "dcp_st_nemo_ws4", "dcp_st_torch" };
    char dir[256], man[256];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(dir, sizeof dir, STFIX "%s", names[i]);
        snprintf(man, sizeof man, STFIX "%s.manifest.json", names[i]);
        check_dir(names[i], dir, man, NULL);
    }
}

static void check_damage(const char *fixture, const char *file, const char *old, const char *new,
                         const char *const *bad)
{
    char src[256], copy[512], path[700], man[256], what[256];
    snprintf(src, sizeof src, STFIX "%s", fixture);
    snprintf(man, sizeof man, STFIX "%s.manifest.json", fixture);
    if (!CHECK(copy_dir(src, copy, sizeof copy) == 0))
        return;
    snprintf(path, sizeof path, "%s/%s", copy, file);
    snprintf(what, sizeof what, "%s with %s -> %s", fixture, old, new);
    check_report(patch_file(path, old, new) == 0, what, __FILE__, __LINE__);
    check_dir(what, copy, man, bad);
    remove_copy(copy);
}

static void check_damaged(void)
{
    static const char *const embed[] = { "model.embed.weight", NULL };
    check_damage("dcp_st_nemo", "__0_0.distcp", "\"model.embed.weight\":{\"dtype\":\"F32\"",
                 "\"model.embed.weight\":{\"dtype\":\"I32\"", embed);
    check_damage("dcp_st_nemo", "__0_0.distcp", "\"shape\":[8,5]", "\"shape\":[5,8]", embed);
    /* a header length 256 too large: the JSON then runs into the data */
    static const char *const rank3[] = { "row_sharded", "col_sharded", "grid", NULL };
    size_t len;
    char src[512];
    if (CHECK(copy_dir(STFIX "dcp_st_nemo_ws4", src, sizeof src) == 0)) {
        char path[700];
        snprintf(path, sizeof path, "%s/__3_0.distcp", src);
        uint8_t *g = slurp(path, &len);
        if (CHECK(g && len > 8)) {
            g[1]++; /* +256 on the little-endian length */
            CHECK(write_file(path, g, len) == 0);
            check_dir("ws4 rank 3 header length +256", src, STFIX "dcp_st_nemo_ws4.manifest.json", rank3);
        }
        free(g);
        remove_copy(src);
    }
    static const char *const col[] = { "col_sharded", NULL };
    check_damage("dcp_st_nemo_ws4", "__1_1.distcp", "\\\"col_sharded\\\": {\\\"saved_offsets\\\": [0, 2]}",
                 "\\\"col_sharded\\\": {\\\"saved_offsets\\\": [0, 3]}", col);
    static const char *const bw[] = { "model.b", NULL };
    check_damage("dcp_st_torch", "__0_0.distcp", "\"model.b\":{\"dtype\":\"BF16\"",
                 "\"model.b\":{\"dtype\":\"F16\" ", bw);
}

static void check_in_use(void)
{
    static const struct { const char *dir; bool want; } cases[] = {
        { STFIX "dcp_st_nemo", true }, { STFIX "dcp_st_nemo_ws4", true },
        { STFIX "dcp_st_torch", true }, { FIX "dcp_single", false }, { FIX "dcp_zstd", false },
        { FIX "dcp_dtensor_ws4", false }, { FIX "dcp_hf", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ck_checkpoint *ck = NULL;
        char err[512] = "", what[600];
        int rc = ck_open(cases[i].dir, NULL, &ck, err, sizeof err);
        snprintf(what, sizeof what, "%s: safetensors format in use is %s", cases[i].dir,
                 cases[i].want ? "true" : "false");
        check_report(rc == 0 && ck_dcp_st_in_use(ck) == cases[i].want, what, __FILE__, __LINE__);
        if (!rc)
            ck_close(ck);
    }
}

/* ---- hostile names (issue 11) ---- */

static void check_nul_escape(void)
{
    CHECK(ck_json_has_nul_escape("{\"a\\u0000b\":1}", 14));
    CHECK(!ck_json_has_nul_escape("{\"a\\\\u0000b\":1}", 15)); /* an escaped backslash */
    CHECK(!ck_json_has_nul_escape("{\"a\\u0001\":1}", 13));
    CHECK(!ck_json_has_nul_escape("{\"\\\"u0000\":1}", 13));
    CHECK(ck_json_has_nul_escape("{\"x\":\"\\\"\\u0000\"}", 16));
    CHECK(!ck_json_has_nul_escape("\\u0000", 6)); /* outside a string: not JSON text anyway */
    ck_st_header h;
    char err[256] = "";
    const char *j = "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    CHECK(ck_st_parse_json(j, strlen(j), 1, &h, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "NUL") != NULL);
}

static void expect_open(const char *dir, const char *needle, const char *what)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "", line[900];
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    snprintf(line, sizeof line, "%s (%s)", what, err);
    check_report(needle ? rc != 0 && strstr(err, needle) != NULL : rc == 0, line, __FILE__, __LINE__);
    if (!rc)
        ck_close(ck);
}

static void check_dcp_names(void)
{
    char copy[512], path[700], target[800];
    if (CHECK(copy_dir(FIX "dcp_single", copy, sizeof copy) == 0)) {
        snprintf(path, sizeof path, "%s/.metadata", copy);
        CHECK(patch_file(path, "model.u8", "model.i8") == 0);
        expect_open(copy, "model.i8 appears twice", "a duplicate FQN is refused, named");
        remove_copy(copy);
    }
    if (CHECK(copy_dir(FIX "dcp_single", copy, sizeof copy) == 0)) {
        snprintf(path, sizeof path, "%s/.metadata", copy);
        size_t len;
        uint8_t *buf = slurp(path, &len);
        uint8_t *hit = buf ? memmem(buf, len, "model.u8", 8) : NULL;
        if (CHECK(hit)) {
            hit[3] = '\0';
            CHECK(write_file(path, buf, len) == 0);
            expect_open(copy, "NUL", "an FQN holding a NUL is refused, said so");
        }
        free(buf);
        remove_copy(copy);
    }
    if (CHECK(copy_dir(FIX "dcp_single", copy, sizeof copy) == 0)) {
        snprintf(path, sizeof path, "%s/.metadata", copy);
        snprintf(target, sizeof target, "%s/real.metadata", copy);
        CHECK(rename(path, target) == 0 && symlink("real.metadata", path) == 0);
        expect_open(copy, NULL, "a .metadata symlink staying inside is followed");
        snprintf(target, sizeof target, "%s/../real.metadata", copy);
        char inside[800];
        snprintf(inside, sizeof inside, "%s/real.metadata", copy);
        CHECK(rename(inside, target) == 0 && unlink(path) == 0 &&
              symlink("../real.metadata", path) == 0);
        expect_open(copy, "leaves the checkpoint directory", "a .metadata symlink leaving is refused");
        remove_copy(copy);
    }
    if (CHECK(copy_dir(FIX "hf_llama_sharded", copy, sizeof copy) == 0)) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", copy);
        CHECK(patch_file(path, "\"model-00004-of-00004.safetensors\"",
                         "\"../mo-00004-of-00004.safetensors\"") == 0);
        expect_open(copy, "outside", "an index entry climbing out of SOURCE is refused as outside");
        remove_copy(copy);
    }
}

int main(void)
{
    check_fixtures();
    check_damaged();
    check_in_use();
    check_nul_escape();
    check_dcp_names();
    return check_done();
}
