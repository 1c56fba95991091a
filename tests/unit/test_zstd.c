/* zstd_stream against torch 2.11's `stream.zstd/1` items (dcp_zstd: 21
 * items, one frame each without content size, concatenated in one file),
 * plus round trips, damage and the output bound. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "byte_source.h"
#include "check.h"
#include "test_util.h"
#include "torch_item.h"
#include "zstd_stream.h"

#define FIXROOT "tests/fixtures/torch-2.11/"
#define ZFILE FIXROOT "dcp_zstd/__0_0.distcp"

/* dcp_zstd/.metadata's storage_data: key, offset, length in __0_0.distcp. */
static const struct {
    const char *key;
    uint64_t off, len;
} items[] = {
    { "step", 0, 459 },
    { "meta.name", 459, 456 },
    { "meta.lrs", 915, 480 },
    { "model.empty", 1395, 605 },
    { "model.scalar", 2000, 605 },
    { "model.mask", 2605, 613 },
    { "model.i8", 3218, 619 },
    { "model.fp8", 3837, 641 },
    { "model.cplx", 4478, 646 },
    { "model.u8", 5124, 651 },
    { "model.view_of_bigger", 5775, 666 },
    { "model.i32", 6441, 630 },
    { "model.layers.0.norm.weight", 7071, 614 },
    { "model.transposed", 7685, 771 },
    { "model.ints", 8456, 726 },
    { "model.layers.0.attn.wq.weight", 9182, 1086 },
    { "model.layers.0.attn.wk.weight", 10268, 1141 },
    { "model.layers.1.attn.wq.weight", 11409, 1092 },
    { "model.layers.1.mlp.w1.weight", 12501, 2118 },
    { "model.embed.weight", 14619, 2600 },
    { "model.layers.0.mlp.w1.weight", 17219, 2461 },
};
#define N_ITEMS (sizeof items / sizeof items[0])

static void test_fixture_items(void)
{
    cJSON *manifest = load_json(FIXROOT "dcp_zstd.manifest.json");
    CHECK(manifest != NULL);
    size_t zlen;
    uint8_t *zbuf = slurp(ZFILE, &zlen);
    CHECK(zbuf != NULL);
    int fd = open(ZFILE, O_RDONLY);
    CHECK(fd >= 0);
    uint64_t total_decoded = 0;

    for (size_t i = 0; i < N_ITEMS; i++) {
        ck_byte_source src = ck_byte_source_fd(fd, items[i].off, items[i].len);
        uint8_t *dec = NULL;
        uint64_t dec_len = 0;
        char err[256] = "";
        int rc = ck_zstd_decode(&src, 1u << 20, &dec, &dec_len, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        if (rc < 0) {
            printf("# %s: %s\n", items[i].key, err);
            continue;
        }
        total_decoded += dec_len;
        const cJSON *entry = cJSON_GetObjectItemCaseSensitive(manifest, items[i].key);
        const char *kind = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "kind"));
        const char *want = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(entry, "sha256"));
        char got[65] = "";
        ck_byte_source dsrc = ck_byte_source_mem(dec, dec_len);
        ck_torch_item it;
        rc = ck_torch_item_parse(&dsrc, &it, err, sizeof err);
        if (kind && strcmp(kind, "bytes") == 0) {
            /* a bytes entry is the decoded archive itself */
            CHECK_EQ_INT(rc, -EINVAL);
            CHECK_EQ_INT(sha256_hex(dec, (size_t)dec_len, got), 0);
            CHECK_EQ_STR(got, want);
        } else {
            CHECK_EQ_INT(rc, 0);
            if (rc == 0) {
                uint64_t n = ck_dtype_get(it.dtype)->size;
                for (uint32_t d = 0; d < it.ndim; d++)
                    n *= it.size[d];
                uint8_t *dst = malloc(n ? (size_t)n : 1);
                CHECK_EQ_INT(ck_torch_item_gather(&it, dec, dec_len, dst, n), 0);
                CHECK_EQ_INT(sha256_hex(dst, (size_t)n, got), 0);
                CHECK_EQ_STR(got, want);
                free(dst);
            }
        }

        /* our encoder writes the very frame torch wrote */
        uint8_t *enc = NULL;
        size_t enc_len = 0;
        CHECK_EQ_INT(ck_zstd_encode(dec, (size_t)dec_len, &enc, &enc_len), 0);
        CHECK_EQ_INT(enc_len, items[i].len);
        CHECK(enc_len == items[i].len && memcmp(enc, zbuf + items[i].off, enc_len) == 0);
        free(enc);

        /* output bound: exactly the size passes, one byte less does not */
        uint8_t *d2 = NULL;
        uint64_t d2_len = 0;
        CHECK_EQ_INT(ck_zstd_decode(&src, dec_len, &d2, &d2_len, err, sizeof err), 0);
        CHECK_EQ_INT(d2_len, dec_len);
        free(d2);
        d2 = NULL;
        CHECK_EQ_INT(ck_zstd_decode(&src, dec_len - 1, &d2, &d2_len, err, sizeof err), -E2BIG);
        CHECK(d2 == NULL);

        /* a truncated frame */
        ck_byte_source tsrc = ck_byte_source_fd(fd, items[i].off, items[i].len - 3);
        CHECK_EQ_INT(ck_zstd_decode(&tsrc, 1u << 20, &d2, &d2_len, err, sizeof err), -EIO);
        if (i == 0)
            printf("# truncated: %s\n", err);
        free(dec);
    }

    /* The whole file is 21 concatenated frames: decoding all of them gives
     * every item back to back; the first is the `step` archive. */
    ck_byte_source all = ck_byte_source_fd(fd, 0, zlen);
    uint8_t *dec = NULL;
    uint64_t dec_len = 0;
    char err[256] = "";
    CHECK_EQ_INT(ck_zstd_decode(&all, 1u << 20, &dec, &dec_len, err, sizeof err), 0);
    CHECK_EQ_INT(dec_len, total_decoded);
    CHECK(dec_len >= 4 && memcmp(dec, "PK\x03\x04", 4) == 0);
    free(dec);
    dec = NULL;
    CHECK_EQ_INT(ck_zstd_decode(&all, total_decoded - 1, &dec, &dec_len, err, sizeof err), -E2BIG);

    /* a damaged byte inside a frame's compressed block */
    uint8_t *bad = malloc(zlen);
    memcpy(bad, zbuf, zlen);
    bad[items[19].off + 40] ^= 0xFF;
    bad[items[19].off + 41] ^= 0xFF;
    bad[items[19].off + 300] ^= 0x55;
    ck_byte_source bsrc = ck_byte_source_mem(bad + items[19].off, items[19].len);
    dec = NULL;
    int rc = ck_zstd_decode(&bsrc, 1u << 20, &dec, &dec_len, err, sizeof err);
    /* zstd without a checksum may decode damage into different bytes; it
     * must never crash and, when it succeeds, stay within the bound */
    if (rc == 0) {
        CHECK(dec_len <= (1u << 20));
        free(dec);
    } else {
        CHECK_EQ_INT(rc, -EIO);
    }
    /* a damaged magic number is always an error */
    bad[items[19].off] ^= 0xFF;
    dec = NULL;
    CHECK_EQ_INT(ck_zstd_decode(&bsrc, 1u << 20, &dec, &dec_len, err, sizeof err), -EIO);
    printf("# bad magic: %s\n", err);
    /* garbage after a good frame */
    memcpy(bad, zbuf, zlen);
    memset(bad + items[1].off, 0x11, 16);
    ck_byte_source gsrc = ck_byte_source_mem(bad, items[1].off + 16);
    CHECK_EQ_INT(ck_zstd_decode(&gsrc, 1u << 20, &dec, &dec_len, err, sizeof err), -EIO);
    /* empty input */
    ck_byte_source esrc = ck_byte_source_mem(bad, 0);
    CHECK_EQ_INT(ck_zstd_decode(&esrc, 1u << 20, &dec, &dec_len, err, sizeof err), -EIO);
    free(bad);

    close(fd);
    free(zbuf);
    cJSON_Delete(manifest);
}

typedef struct {
    int fd;
    uint64_t off;
} fd_sink;

static int fd_sink_write(void *ctx, const void *buf, size_t len)
{
    fd_sink *s = ctx;
    ssize_t w = pwrite(s->fd, buf, len, (off_t)s->off);
    if (w != (ssize_t)len)
        return -EIO;
    s->off += len;
    return 0;
}

/* A buffer source holding one buffer, given once. */
typedef struct {
    uint8_t *buf;
    size_t cap, asked;
} given_buffer;

static uint8_t *take_given(void *ctx, size_t want)
{
    given_buffer *g = ctx;
    g->asked = want;
    if (!g->buf || g->cap < want)
        return NULL;
    uint8_t *b = g->buf;
    g->buf = NULL;
    return b;
}

/* Several MiB, so the decoder reads its input in more than one piece and
 * grows its output; compressible but not trivially. */
static void test_large_round_trip(void)
{
    size_t n = (5u << 20) + 12345;
    uint8_t *data = malloc(n);
    uint32_t x = 12345;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        data[i] = (i % 3 == 0) ? (uint8_t)(x >> 24) : (uint8_t)(i / 4096);
    }
    char path[] = "/tmp/test_zstd_big_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);

    /* two frames written by the streaming writer, one with a known size and
     * one without, placed after a 100-byte prefix */
    CHECK(pwrite(fd, "prefix-prefix-prefix", 20, 0) == 20);
    fd_sink sink = { fd, 100 };
    ck_zstd_writer *w;
    CHECK_EQ_INT(ck_zstd_writer_new(&w, n, fd_sink_write, &sink), 0);
    for (size_t p = 0; p < n; p += 100000)
        CHECK_EQ_INT(ck_zstd_writer_write(w, data + p, n - p < 100000 ? n - p : 100000), 0);
    CHECK_EQ_INT(ck_zstd_writer_finish(w), 0);
    uint64_t first_len = ck_zstd_writer_out_len(w);
    CHECK_EQ_INT(sink.off, 100 + first_len);
    ck_zstd_writer_free(w);
    CHECK(first_len > 0 && first_len < n);

    CHECK_EQ_INT(ck_zstd_writer_new(&w, CK_ZSTD_SIZE_UNKNOWN, fd_sink_write, &sink), 0);
    CHECK_EQ_INT(ck_zstd_writer_write(w, data, n), 0);
    CHECK_EQ_INT(ck_zstd_writer_finish(w), 0);
    uint64_t second_len = ck_zstd_writer_out_len(w);
    ck_zstd_writer_free(w);

    /* the one-shot encoder and the known-size streaming writer agree */
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    CHECK_EQ_INT(ck_zstd_encode(data, n, &enc, &enc_len), 0);
    CHECK_EQ_INT(enc_len, first_len);
    uint8_t *first = malloc(first_len);
    CHECK(pread(fd, first, first_len, 100) == (ssize_t)first_len);
    CHECK(memcmp(enc, first, first_len) == 0);
    CHECK_EQ_INT(ZSTD_getFrameContentSize(enc, enc_len), ZSTD_CONTENTSIZE_UNKNOWN);
    free(first);
    free(enc);

    ck_byte_source src = ck_byte_source_fd(fd, 100, first_len + second_len);
    uint8_t *dec = NULL;
    uint64_t dec_len = 0;
    char err[256] = "";
    CHECK_EQ_INT(ck_zstd_decode(&src, 2 * (uint64_t)n, &dec, &dec_len, err, sizeof err), 0);
    CHECK_EQ_INT(dec_len, 2 * (uint64_t)n);
    CHECK(dec && memcmp(dec, data, n) == 0 && memcmp(dec + n, data, n) == 0);
    free(dec);
    dec = NULL;

    /* a decode given its first buffer: takes it (asking for its first
     * guess, within the limit), decodes the same bytes into it; a source
     * with nothing left to give leaves it to malloc */
    given_buffer g = { .buf = malloc(2 * n + 4096), .cap = 2 * n + 4096 };
    ck_zstd_buffers bufs = { take_given, &g };
    CHECK_EQ_INT(ck_zstd_decode_into(&src, 2 * (uint64_t)n, &bufs, &dec, &dec_len, err, sizeof err), 0);
    CHECK(g.asked >= 64 * 1024 && g.asked <= 2 * n);
    CHECK(g.buf == NULL); /* taken */
    CHECK_EQ_INT(dec_len, 2 * (uint64_t)n);
    CHECK(dec && memcmp(dec, data, n) == 0 && memcmp(dec + n, data, n) == 0);
    free(dec);
    dec = NULL;
    CHECK_EQ_INT(ck_zstd_decode_into(&src, 2 * (uint64_t)n, &bufs, &dec, &dec_len, err, sizeof err), 0);
    CHECK(dec && dec_len == 2 * (uint64_t)n && memcmp(dec + n, data, n) == 0);
    free(dec);
    dec = NULL;
    CHECK_EQ_INT(ck_zstd_decode(&src, 2 * (uint64_t)n - 1, &dec, &dec_len, err, sizeof err), -E2BIG);
    CHECK_EQ_INT(ck_zstd_decode(&src, n, &dec, &dec_len, err, sizeof err), -E2BIG);
    /* cut in the middle of the second frame */
    src = ck_byte_source_fd(fd, 100, first_len + second_len / 2);
    CHECK_EQ_INT(ck_zstd_decode(&src, 2 * (uint64_t)n, &dec, &dec_len, err, sizeof err), -EIO);
    /* a source that claims more bytes than the file has */
    src = ck_byte_source_fd(fd, 100, first_len + second_len + 10);
    CHECK_EQ_INT(ck_zstd_decode(&src, 2 * (uint64_t)n, &dec, &dec_len, err, sizeof err), -EIO);

    /* a pledged size that the writes do not meet fails at finish */
    sink.off = 0;
    CHECK_EQ_INT(ck_zstd_writer_new(&w, n, fd_sink_write, &sink), 0);
    CHECK_EQ_INT(ck_zstd_writer_write(w, data, n - 1), 0);
    CHECK(ck_zstd_writer_finish(w) < 0);
    ck_zstd_writer_free(w);

    close(fd);
    unlink(path);
    free(data);
}

static int failing_sink(void *ctx, const void *buf, size_t len)
{
    (void)ctx, (void)buf, (void)len;
    return -ENOSPC;
}

static void test_small_cases(void)
{
    /* empty input is still one frame, decoding to nothing */
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    CHECK_EQ_INT(ck_zstd_encode("", 0, &enc, &enc_len), 0);
    CHECK(enc_len > 0);
    ck_byte_source src = ck_byte_source_mem(enc, enc_len);
    uint8_t *dec = NULL;
    uint64_t dec_len = 99;
    char err[256] = "";
    CHECK_EQ_INT(ck_zstd_decode(&src, 0, &dec, &dec_len, err, sizeof err), 0);
    CHECK_EQ_INT(dec_len, 0);
    CHECK(dec != NULL);
    free(dec);
    free(enc);

    const char *msg = "hello hello hello hello";
    CHECK_EQ_INT(ck_zstd_encode(msg, strlen(msg), &enc, &enc_len), 0);
    src = ck_byte_source_mem(enc, enc_len);
    CHECK_EQ_INT(ck_zstd_decode(&src, 100, &dec, &dec_len, err, sizeof err), 0);
    CHECK(dec_len == strlen(msg) && memcmp(dec, msg, dec_len) == 0);
    free(dec);
    CHECK_EQ_INT(ck_zstd_decode(&src, 0, &dec, &dec_len, err, sizeof err), -E2BIG);
    free(enc);

    /* a sink error comes back and sticks */
    ck_zstd_writer *w;
    CHECK_EQ_INT(ck_zstd_writer_new(&w, CK_ZSTD_SIZE_UNKNOWN, failing_sink, NULL), 0);
    int rc = ck_zstd_writer_write(w, msg, strlen(msg));
    if (rc == 0)
        rc = ck_zstd_writer_finish(w);
    CHECK_EQ_INT(rc, -ENOSPC);
    CHECK_EQ_INT(ck_zstd_writer_finish(w), -ENOSPC);
    ck_zstd_writer_free(w);
}

int main(void)
{
    test_fixture_items();
    test_large_round_trip();
    test_small_cases();
    return check_done();
}
