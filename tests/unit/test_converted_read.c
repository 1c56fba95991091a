/* converted_read: a converted byte range at any offset and length equals
 * the same bytes of the whole tensor converted at once (ck_dtype_convert
 * over a plain ck_key_read), for sharded fixtures written by torch and for a
 * tensor larger than one conversion block, written here as safetensors. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "converted_read.h"
#include "dtype_convert.h"
#include "le.h"

#define FIX "tests/fixtures/torch-2.11/"

static const ck_dtype targets[] = { CK_DT_BFLOAT16, CK_DT_FLOAT16, CK_DT_FLOAT32 };

/* every floating key of ck, every target: pieces of odd sizes tile the view */
static void check_ckpt(ck_checkpoint *ck, const char *name)
{
    long bad = 0, n = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (k->kind != CK_KEY_TENSOR || !ck_dtype_is_floating(k->dtype))
            continue;
        uint8_t *raw = malloc(k->nbytes + 1);
        size_t got;
        if (ck_key_read(ck, k, 0, raw, k->nbytes, &got) || got != k->nbytes) {
            bad++;
            free(raw);
            continue;
        }
        for (size_t t = 0; t < 3; t++) {
            uint64_t size;
            ck_key_nbytes_as(k, targets[t], &size);
            uint8_t *want = malloc(size + 1), *piece = malloc(size + 1);
            ck_dtype_convert(k->dtype, targets[t], raw, want, k->numel);
            int ok = ck_key_read_as(ck, k, targets[t], 0, piece, size, &got) == 0 && got == size &&
                     memcmp(piece, want, size) == 0;
            memset(piece, 0xa5, size);
            for (uint64_t off = 0; ok && off < size; off += got) {
                size_t step = 1 + (off * 7 + 13) % 70001;
                ok = ck_key_read_as(ck, k, targets[t], off, piece + off, step, &got) == 0 && got > 0;
            }
            ok = ok && memcmp(piece, want, size) == 0;
            /* past the end: nothing; straddling it: clipped */
            ok = ok && ck_key_read_as(ck, k, targets[t], size, piece, 8, &got) == 0 && got == 0;
            if (size)
                ok = ok && ck_key_read_as(ck, k, targets[t], size - 1, piece, 8, &got) == 0 &&
                     got == 1 && piece[0] == want[size - 1];
            bad += !ok;
            n++;
            free(want);
            free(piece);
        }
        free(raw);
    }
    char what[200];
    snprintf(what, sizeof what, "%s: %ld converted views read in pieces", name, n);
    if (!check_report(bad == 0 && n > 0, what, __FILE__, __LINE__))
        printf("#   %ld wrong\n", bad);
}

static void check_fixture(const char *name)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "", path[256];
    snprintf(path, sizeof path, FIX "%s", name);
    int rc = ck_open(path, NULL, &ck, err, sizeof err);
    if (!check_report(rc == 0, name, __FILE__, __LINE__)) {
        printf("#   %s\n", err);
        return;
    }
    check_ckpt(ck, name);
    ck_close(ck);
}

/* A safetensors file holding one float64 tensor of n elements. */
static int write_st(const char *path, size_t n)
{
    char head[256];
    int len = snprintf(head, sizeof head,
                       "{\"big\":{\"dtype\":\"F64\",\"shape\":[%zu],\"data_offsets\":[0,%zu]}}", n,
                       n * 8);
    while (len % 8)
        head[len++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f)
        return -errno;
    uint8_t l8[8];
    ck_put_le64(l8, (uint64_t)len);
    fwrite(l8, 1, 8, f);
    fwrite(head, 1, (size_t)len, f);
    uint64_t r = 7;
    for (size_t i = 0; i < n; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        uint8_t e[8];
        ck_put_le64(e, r); /* any bits: NaNs, infs, subnormals, huge values */
        fwrite(e, 1, 8, f);
    }
    return fclose(f) ? -errno : 0;
}

static void check_big(void)
{
    char dir[] = "/tmp/ckptfs-test-converted-XXXXXX", path[64];
    if (!check_report(mkdtemp(dir) != NULL, "temporary directory", __FILE__, __LINE__))
        return;
    snprintf(path, sizeof path, "%s/big.safetensors", dir); /* SOURCE is known by its suffix */
    /* several 32K-element conversion blocks, and a partial last one */
    int rc = write_st(path, 100003);
    ck_checkpoint *ck = NULL;
    char err[512] = "";
    if (!rc)
        rc = ck_open(path, NULL, &ck, err, sizeof err);
    if (check_report(rc == 0, "a 100003-element float64 safetensors opens", __FILE__, __LINE__)) {
        check_ckpt(ck, "float64 x 100003");
        const ck_key *k = &ck->keys[0];
        uint8_t b[4];
        size_t got;
        CHECK_EQ_INT(ck_key_read_as(ck, k, CK_DT_INT8, 0, b, 4, &got), -EINVAL);
        ck_close(ck);
    }
    if (rc)
        printf("# %s\n", err);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    check_fixture("dcp_single");
    check_fixture("dcp_dtensor_ws4");
    check_fixture("dcp_zstd");
    check_big();
    return check_done();
}
