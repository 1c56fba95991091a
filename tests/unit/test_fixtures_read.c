/* Every key of every fixture, read through ck_open + ck_key_read (no FUSE),
 * must hash to the sha256 its manifest gives: real files written by torch
 * that none of us wrote judge the planner.  Hashing is done by sha256sum so
 * no code of ours decides what the right bytes are. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "check.h"
#include "test_util.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "fd_io.h"

#define FIX "tests/fixtures/torch-2.11/"

/* A splicing mount's read: ck_key_fd_spans, and where it declines,
 * ck_key_read_plan with the load plan it made. */
static int read_as_mount(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint8_t *dst,
                         size_t len, size_t *got)
{
    ck_fd_span spans[4];
    size_t n = 0;
    ck_read_vec plan = { 0 };
    int rc = ck_key_fd_spans(ck, key, off, len, spans, 4, &n, got, &plan);
    if (rc == -EAGAIN)
        rc = ck_key_read_plan(ck, key, off, dst, len, &plan, got);
    for (size_t i = 0, at = 0; rc == 0 && i < n; at += spans[i++].len)
        rc = ck_pread_full(spans[i].fd, dst + at, spans[i].len, spans[i].off);
    ck_read_vec_free(&plan);
    return rc;
}

/* Reads the key whole, then in odd-sized pieces, and compares. */
static int key_matches(ck_checkpoint *ck, const ck_key *key, cJSON *want)
{
    uint64_t size;
    if (ck_key_size(ck, key, &size))
        return 0;
    cJSON *nb = cJSON_GetObjectItem(want, "nbytes");
    if (!cJSON_IsNumber(nb) || (uint64_t)nb->valuedouble != size)
        return 0;
    uint8_t *buf = malloc(size + 1), *pieces = malloc(size + 1);
    size_t got;
    int ok = ck_key_read(ck, key, 0, buf, size, &got) == 0 && got == size;
    for (uint64_t off = 0; ok && off < size; off += got) {
        size_t step = 1 + (off * 7 + 13) % 97;
        ok = ck_key_read(ck, key, off, pieces + off, step, &got) == 0 && got > 0;
    }
    ok = ok && memcmp(buf, pieces, size) == 0;
    for (uint64_t off = 0; ok && off < size; off += got) {
        size_t step = 1 + (off * 7 + 13) % 65599;
        ok = read_as_mount(ck, key, off, pieces + off, step, &got) == 0 && got > 0;
    }
    ok = ok && memcmp(buf, pieces, size) == 0;
    char hex[65];
    ok = ok && sha256_hex(buf, size, hex) == 0 &&
         strcmp(hex, cJSON_GetObjectItem(want, "sha256")->valuestring) == 0;
    free(buf);
    free(pieces);
    return ok;
}

static void check_fixture(const char *name, const char *source)
{
    char path[512], what[600];
    snprintf(path, sizeof path, FIX "%s.manifest.json", name);
    cJSON *man = load_json(path);
    snprintf(what, sizeof what, "%s: manifest parses", name);
    check_report(man != NULL, what, __FILE__, __LINE__);
    ck_checkpoint *ck = NULL;
    char err[512] = "";
    snprintf(path, sizeof path, FIX "%s", source);
    int rc = ck_open(path, NULL, &ck, err, sizeof err);
    snprintf(what, sizeof what, "%s: opens (%s)", name, err);
    if (!check_report(rc == 0, what, __FILE__, __LINE__) || !man) {
        cJSON_Delete(man);
        return;
    }
    snprintf(what, sizeof what, "%s: key count", name);
    check_report((int)ck->nkeys == cJSON_GetArraySize(man), what, __FILE__, __LINE__);
    cJSON *entry;
    cJSON_ArrayForEach(entry, man) {
        const ck_key *key = ck_find_key(ck, entry->string);
        snprintf(what, sizeof what, "%s: %s bytes match manifest", name, entry->string);
        int ok = key && key_matches(ck, key, entry);
        cJSON *chunks = cJSON_GetObjectItem(entry, "chunks");
        if (ok && key->kind == CK_KEY_TENSOR && cJSON_IsNumber(chunks))
            ok = key->nchunks == (uint32_t)chunks->valueint;
        cJSON *dt = cJSON_GetObjectItem(entry, "dtype");
        if (ok && cJSON_IsString(dt))
            ok = strcmp(ck_dtype_get(key->dtype)->torch_name, dt->valuestring) == 0;
        check_report(ok, what, __FILE__, __LINE__);
    }
    ck_close(ck);
    cJSON_Delete(man);
}

static void check_refused(const char *source, const char *needle)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "", what[700];
    int rc = ck_open(source, NULL, &ck, err, sizeof err);
    snprintf(what, sizeof what, "%s refused: %s", source, err);
    check_report(rc != 0 && strstr(err, needle) != NULL, what, __FILE__, __LINE__);
    if (!rc)
        ck_close(ck);
}

int main(void)
{
    static const char *const dcp[] = { "dcp_single", "dcp_single_perfile", "dcp_zstd",
                                       "dcp_dtensor_ws4", "dcp_dtensor_ws4_perfile",
                                       "dcp_fsdp2_optim" };
    for (size_t i = 0; i < sizeof dcp / sizeof *dcp; i++)
        check_fixture(dcp[i], dcp[i]);
    check_fixture("st_single", "st_single/model.safetensors");
    check_fixture("hf_llama_sharded", "hf_llama_sharded");
    check_fixture("dcp_hf", "dcp_hf");
    check_refused("tests/unit", "not a checkpoint");
    check_refused("tests/does-not-exist", "does-not-exist");
    return check_done();
}
