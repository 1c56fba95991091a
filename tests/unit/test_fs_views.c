/* Views for frameworks (fs/views.h) on a fixture, without a mount: a
 * snapshot is opened the way the daemon opens one, and each view's bytes
 * are taken apart by code of this test (numpy's .npy header, the
 * safetensors header, metadata.json) and compared with the keys' bytes
 * from the planner and the fixture's manifest (sha256 by sha256sum). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "check.h"
#include "test_util.h"
#include "ckpt.h"
#include "chunk_reader.h"
#include "options.h"
#include "snapshot.h"
#include "views.h"

#define FIX "tests/fixtures/torch-2.11/"

static fs_mount *open_fixture(const char *name, fs_options *opts)
{
    char src[256];
    snprintf(src, sizeof src, FIX "%s", name);
    char *argv[] = { "ckptfs", src, "/nonexistent-mountpoint", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    memset(opts, 0, sizeof *opts);
    CHECK_EQ_INT(fs_options_parse(&args, opts), 0);
    CHECK_EQ_STR(opts->source, src);
    fuse_opt_free_args(&args);
    fs_mount *m = NULL;
    char err[512] = "";
    int rc = fs_snapshot_open(opts, src, 1, &m, err, sizeof err);
    if (rc)
        printf("# %s: %s\n", src, err);
    CHECK_EQ_INT(rc, 0);
    return rc ? NULL : m;
}

/* The whole view, read in odd-sized pieces (short only at the end). */
static uint8_t *read_view(fs_mount *m, fs_view *v, size_t *len)
{
    uint64_t size = fs_view_size(v);
    uint8_t *buf = malloc(size + 1);
    uint64_t off = 0;
    while (off < size) {
        size_t got = 0, want = 1 + (size_t)(off * 13 + 5) % 4093;
        if (fs_view_read(m, v, off, buf + off, want, &got) || got == 0)
            break;
        off += got;
    }
    size_t extra = 0;
    if (off == size && fs_view_read(m, v, size, buf + size, 1, &extra) == 0 && extra == 0) {
        *len = size;
        return buf;
    }
    free(buf);
    return NULL;
}

static uint8_t *key_bytes(fs_mount *m, const char *fqn, size_t *len)
{
    const ck_key *k = ck_find_key(m->ck, fqn);
    uint64_t size;
    if (!k || ck_key_size(m->ck, k, &size))
        return NULL;
    uint8_t *buf = malloc(size + 1);
    size_t got = 0;
    if (ck_key_read(m->ck, k, 0, buf, size, &got) || got != size) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

static const char *manifest_sha(cJSON *man, const char *fqn)
{
    cJSON *e = cJSON_GetObjectItem(man, fqn);
    cJSON *s = e ? cJSON_GetObjectItem(e, "sha256") : NULL;
    return cJSON_IsString(s) ? s->valuestring : "";
}

/* PATH.npy: "\x93NUMPY", version 1.0, a little-endian u16 header length,
 * a header dict padded with spaces to a multiple of 64 ending in '\n'
 * (numpy's format), then the key's bytes. */
static void check_npy(fs_mount *m, cJSON *man, const char *path, const char *fqn,
                      const char *descr, const char *shape)
{
    fs_view *v = NULL;
    CHECK_EQ_INT(fs_view_lookup(m, path, &v), 0);
    if (!v)
        return;
    CHECK(!fs_view_is_dir(v));
    CHECK(fs_view_key(v) == ck_find_key(m->ck, fqn));
    size_t len = 0, klen = 0;
    uint8_t *b = read_view(m, v, &len), *k = key_bytes(m, fqn, &klen);
    CHECK(b && k);
    if (b && k && len >= 10) {
        CHECK(memcmp(b, "\x93NUMPY\x01\x00", 8) == 0);
        size_t hl = (size_t)b[8] | (size_t)b[9] << 8;
        CHECK_EQ_INT((10 + hl) % 64, 0);
        CHECK_EQ_INT(len, 10 + hl + klen);
        char *hdr = strndup((char *)b + 10, hl);
        CHECK(hl && hdr[hl - 1] == '\n');
        char want[256];
        snprintf(want, sizeof want, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                 shape);
        CHECK(strncmp(hdr, want, strlen(want)) == 0);
        if (strncmp(hdr, want, strlen(want)))
            printf("#   header %s\n#   want   %s\n", hdr, want);
        for (size_t i = strlen(want); i + 1 < hl; i++)
            if (hdr[i] != ' ') {
                CHECK(!"npy header padded with spaces");
                break;
            }
        free(hdr);
        CHECK(10 + hl + klen == len && memcmp(b + 10 + hl, k, klen) == 0);
        char hex[65] = "";
        CHECK(sha256_hex(b + 10 + hl, len - 10 - hl, hex) == 0);
        CHECK_EQ_STR(hex, manifest_sha(man, fqn));
    }
    free(b);
    free(k);
    fs_view_release(m, v);
}

/* DIR.safetensors: u64 header length, a JSON header naming every tensor
 * under DIR (relative names) with dtype, shape and data_offsets, then the
 * data; each tensor's bytes are its key's. */
static void check_safetensors(fs_mount *m, const char *path, const char *prefix,
                              const char *const *names, const char *const *dtypes, size_t n)
{
    fs_view *v = NULL;
    CHECK_EQ_INT(fs_view_lookup(m, path, &v), 0);
    if (!v)
        return;
    size_t len = 0;
    uint8_t *b = read_view(m, v, &len);
    CHECK(b && len >= 8);
    if (b && len >= 8) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--)
            hl = hl << 8 | b[i];
        CHECK(hl <= len - 8);
        cJSON *h = hl <= len - 8 ? cJSON_ParseWithLength((char *)b + 8, hl) : NULL;
        CHECK(h != NULL);
        size_t tensors = 0;
        for (cJSON *e = h ? h->child : NULL; e; e = e->next)
            tensors += strcmp(e->string, "__metadata__") != 0;
        CHECK_EQ_INT(tensors, n);
        for (size_t i = 0; h && i < n; i++) {
            cJSON *e = cJSON_GetObjectItem(h, names[i]);
            CHECK(e != NULL);
            if (!e)
                continue;
            CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(e, "dtype")), dtypes[i]);
            cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
            CHECK(cJSON_GetArraySize(off) == 2);
            uint64_t lo = (uint64_t)cJSON_GetArrayItem(off, 0)->valuedouble;
            uint64_t hi = (uint64_t)cJSON_GetArrayItem(off, 1)->valuedouble;
            char fqn[256];
            snprintf(fqn, sizeof fqn, "%s%s", prefix, names[i]);
            size_t klen = 0;
            uint8_t *k = key_bytes(m, fqn, &klen);
            CHECK(k && hi - lo == klen && 8 + hl + hi <= len &&
                  memcmp(b + 8 + hl + lo, k, klen) == 0);
            /* the shape is the key's */
            const ck_key *key = ck_find_key(m->ck, fqn);
            cJSON *shape = cJSON_GetObjectItem(e, "shape");
            int same = key && cJSON_GetArraySize(shape) == (int)key->ndim;
            for (uint32_t d = 0; same && d < key->ndim; d++)
                same = (uint64_t)cJSON_GetArrayItem(shape, (int)d)->valuedouble == key->shape[d];
            CHECK(same);
            free(k);
        }
        cJSON_Delete(h);
    }
    free(b);
    fs_view_release(m, v);
}

static int collect(void *ctx, const char *name)
{
    char *out = ctx;
    strcat(out, name);
    strcat(out, ",");
    return 0;
}

static void check_metadata(fs_mount *m)
{
    fs_view *dir = NULL;
    CHECK_EQ_INT(fs_view_lookup(m, "/.ckptfs", &dir), 0);
    if (dir) {
        CHECK(fs_view_is_dir(dir));
        char names[256] = "";
        CHECK_EQ_INT(fs_view_list(m, dir, collect, names), 0);
        CHECK_EQ_STR(names, "hf,metadata.json,model.pt,model.safetensors,");
        fs_view_release(m, dir);
    }
    fs_view *v = NULL;
    CHECK_EQ_INT(fs_view_lookup(m, "/.ckptfs/metadata.json", &v), 0);
    if (!v)
        return;
    size_t len = 0;
    uint8_t *b = read_view(m, v, &len);
    CHECK(b && len && b[len - 1] == '\n');
    cJSON *doc = b ? cJSON_ParseWithLength((char *)b, len) : NULL;
    CHECK(doc != NULL);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(doc, "kind")), "dcp");
    cJSON *keys = cJSON_GetObjectItem(doc, "keys");
    CHECK_EQ_INT(cJSON_GetArraySize(keys), m->ck->nkeys);
    cJSON *w = cJSON_GetObjectItem(keys, "model.embed.weight");
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(w, "dtype")), "float32");
    cJSON *shape = cJSON_GetObjectItem(w, "shape");
    CHECK(cJSON_GetArraySize(shape) == 2 && cJSON_GetArrayItem(shape, 0)->valuedouble == 32 &&
          cJSON_GetArrayItem(shape, 1)->valuedouble == 16);
    CHECK_EQ_INT((long long)cJSON_GetNumberValue(cJSON_GetObjectItem(w, "nbytes")), 2048);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(w, "chunks")) >= 1);
    CHECK_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(keys, "step"), "kind")),
                 "bytes");
    cJSON_Delete(doc);
    free(b);
    fs_view_release(m, v);
}

static void check_absent(fs_mount *m)
{
    fs_view *v = NULL;
    CHECK_EQ_INT(fs_view_lookup(m, "/model/embed/weight", &v), -ENOENT); /* a key, not a view */
    CHECK_EQ_INT(fs_view_lookup(m, "/model/nothing.npy", &v), -ENOENT);
    CHECK_EQ_INT(fs_view_lookup(m, "/step.npy", &v), -ENOENT); /* bytes keys have no .npy */
    CHECK_EQ_INT(fs_view_lookup(m, "/model/embed/weight.safetensors", &v), -ENOENT);
    CHECK_EQ_INT(fs_view_lookup(m, "/.ckptfs/nothing", &v), -ENOENT);
    CHECK(v == NULL);
    char name[64];
    CHECK(fs_view_npy_name("weight", name, sizeof name) >= 0);
    CHECK_EQ_STR(name, "weight.npy");
}

int main(void)
{
    fs_options opts;
    fs_mount *m = open_fixture("dcp_single", &opts);
    cJSON *man = load_json(FIX "dcp_single.manifest.json");
    CHECK(man != NULL);
    if (m && man) {
        check_npy(m, man, "/model/embed/weight.npy", "model.embed.weight", "<f4", "(32, 16)");
        check_npy(m, man, "/model/ints.npy", "model.ints", "<i8", "(4, 10)");
        check_npy(m, man, "/model/i8.npy", "model.i8", "|i1", "(10,)");
        check_npy(m, man, "/model/scalar.npy", "model.scalar", "<f4", "()");
        check_npy(m, man, "/model/layers/0/attn/wk/weight.npy", "model.layers.0.attn.wk.weight",
                  "<f2", "(16, 16)");
        static const char *const names[] = { "attn.wk.weight", "attn.wq.weight", "mlp.w1.weight",
                                             "norm.weight" };
        static const char *const dtypes[] = { "F16", "BF16", "F64", "F32" };
        check_safetensors(m, "/model/layers/0.safetensors", "model.layers.0.", names, dtypes, 4);
        static const char *const n1[] = { "attn.wq.weight", "mlp.w1.weight" };
        static const char *const d1[] = { "BF16", "F32" };
        check_safetensors(m, "/model/layers/1.safetensors", "model.layers.1.", n1, d1, 2);
        check_metadata(m);
        check_absent(m);
    }
    cJSON_Delete(man);
    fs_snapshot_unref(m);
    fs_options_free(&opts);
    return check_done();
}
