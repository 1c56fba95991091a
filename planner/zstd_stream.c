#include "errmsg.h"
#include "zstd_stream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Compressed input is read in pieces of this size, so decoding a large item
 * never holds its compressed form whole next to the decoded one. */
#define INPUT_PIECE (1u << 20)
#define MIN_OUT_CAP (64u << 10)
/* torch writes with python-zstandard's default level. */
#define TORCH_ZSTD_LEVEL 3


static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* First guess for the output size: the first frame's declared size when it
 * has one, else twice the input (tensor data compresses little).  Growth
 * covers a wrong guess; the buffer is trimmed at the end. */
static uint64_t initial_capacity(const uint8_t *in, size_t in_len, uint64_t src_len, uint64_t max_out)
{
    uint64_t guess = src_len > UINT64_MAX / 2 ? UINT64_MAX : src_len * 2;
    unsigned long long fcs = ZSTD_getFrameContentSize(in, in_len);
    if (fcs != ZSTD_CONTENTSIZE_UNKNOWN && fcs != ZSTD_CONTENTSIZE_ERROR)
        guess = fcs;
    if (guess < MIN_OUT_CAP)
        guess = MIN_OUT_CAP;
    guess = min_u64(guess, max_out);
    return min_u64(guess, SIZE_MAX / 2);
}

int ck_zstd_decode(const ck_byte_source *src, uint64_t max_out, uint8_t **out, uint64_t *out_len,
                   char *err, size_t errlen)
{
    return ck_zstd_decode_into(src, max_out, NULL, out, out_len, err, errlen);
}

int ck_zstd_decode_into(const ck_byte_source *src, uint64_t max_out, const ck_zstd_buffers *bufs,
                        uint8_t **out, uint64_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (src->len == 0)
        return ck_fail(err, errlen, -EIO, "zstd: empty input, no frame");

    size_t piece_cap = (size_t)min_u64(src->len, INPUT_PIECE);
    uint8_t *piece = malloc(piece_cap);
    ZSTD_DStream *ds = ZSTD_createDStream();
    uint8_t *buf = NULL;
    int rc = 0;
    if (!piece || !ds) {
        rc = -ENOMEM;
        goto out;
    }

    uint64_t src_off = 0;
    ZSTD_inBuffer in = { piece, 0, 0 };
    ZSTD_outBuffer ob = { NULL, 0, 0 };
    size_t last_ret = 1; /* nonzero: a frame is open (or none seen yet) */
    bool started = false;

    for (;;) {
        if (in.pos == in.size && src_off < src->len) {
            size_t n = (size_t)min_u64(piece_cap, src->len - src_off);
            rc = ck_byte_source_read(src, src_off, piece, n);
            if (rc < 0) {
                rc = ck_fail(err, errlen, rc, "zstd: cannot read compressed bytes at offset %llu",
                          (unsigned long long)src_off);
                goto out;
            }
            src_off += n;
            in.size = n;
            in.pos = 0;
        }
        bool input_left = in.pos < in.size;
        if (!input_left && started && (last_ret == 0 || ob.pos < ob.size))
            break; /* all frames closed, or the decoder wants input that does not exist */

        if (ob.pos == ob.size) {
            uint64_t cap = ob.size == 0 ? initial_capacity(in.src, in.size - in.pos, src->len, max_out)
                                        : min_u64(min_u64((uint64_t)ob.size * 2, max_out), SIZE_MAX / 2);
            uint8_t *given = !buf && bufs ? bufs->take(bufs->ctx, (size_t)cap) : NULL;
            if (given) {
                /* capacity beyond cap stays unused: the limits are cap's */
                buf = given;
                ob.dst = buf;
                ob.size = (size_t)cap;
            } else if (cap > ob.size) {
                uint8_t *nb = realloc(buf, (size_t)cap);
                if (!nb) {
                    rc = -ENOMEM;
                    goto out;
                }
                buf = nb;
                ob.dst = buf;
                ob.size = (size_t)cap;
            }
        }

        size_t in_before = in.pos, out_before = ob.pos;
        size_t r = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(r)) {
            rc = ck_fail(err, errlen, -EIO, "zstd: bad frame near compressed offset %llu: %s",
                      (unsigned long long)(src_off - (in.size - in.pos)), ZSTD_getErrorName(r));
            goto out;
        }
        started = true;
        last_ret = r;
        if (r != 0 && in.pos == in_before && ob.pos == out_before) {
            if (ob.pos == ob.size) {
                rc = ck_fail(err, errlen, -E2BIG, "zstd: decoded item exceeds the limit of %llu bytes",
                          (unsigned long long)max_out);
                goto out;
            }
            if (!input_left)
                break;
            rc = ck_fail(err, errlen, -EIO, "zstd: decoder made no progress");
            goto out;
        }
    }
    if (last_ret != 0) {
        rc = ck_fail(err, errlen, -EIO, "zstd: truncated frame (input ends at %llu bytes)",
                  (unsigned long long)src->len);
        goto out;
    }
    *out_len = ob.pos;
    if (ob.pos == 0) {
        free(buf);
        buf = malloc(1); /* callers free *out unconditionally */
        if (!buf) {
            rc = -ENOMEM;
            goto out;
        }
    } else if (ob.size - ob.pos > ob.pos / 8) {
        /* the decoded item may live long in a cache: give back the slack */
        uint8_t *nb = realloc(buf, ob.pos);
        if (nb)
            buf = nb;
    }
    *out = buf;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    free(piece);
    ZSTD_freeDStream(ds);
    return rc;
}

struct ck_zstd_writer {
    ZSTD_CCtx *cctx;
    int (*sink)(void *ctx, const void *buf, size_t len);
    void *sink_ctx;
    uint8_t *obuf;
    size_t ocap;
    uint64_t emitted;
    int error;    /* sticky */
    bool finished;
};

int ck_zstd_writer_new(ck_zstd_writer **out, uint64_t src_size,
                       int (*sink)(void *ctx, const void *buf, size_t len), void *sink_ctx)
{
    *out = NULL;
    ck_zstd_writer *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->cctx = ZSTD_createCCtx();
    w->ocap = ZSTD_CStreamOutSize();
    w->obuf = malloc(w->ocap);
    w->sink = sink;
    w->sink_ctx = sink_ctx;
    if (!w->cctx || !w->obuf) {
        ck_zstd_writer_free(w);
        return -ENOMEM;
    }
    /* torch's frames have no content size in the header, yet their
     * parameters are the ones zstd picks for the real input size; pledging
     * the size with the content-size flag off reproduces both. */
    size_t r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, TORCH_ZSTD_LEVEL);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 0);
    if (!ZSTD_isError(r) && src_size != CK_ZSTD_SIZE_UNKNOWN)
        r = ZSTD_CCtx_setPledgedSrcSize(w->cctx, src_size);
    if (ZSTD_isError(r)) {
        ck_zstd_writer_free(w);
        return -EIO;
    }
    *out = w;
    return 0;
}

static int pump(ck_zstd_writer *w, ZSTD_inBuffer *in, ZSTD_EndDirective mode)
{
    for (;;) {
        ZSTD_outBuffer ob = { w->obuf, w->ocap, 0 };
        size_t r = ZSTD_compressStream2(w->cctx, &ob, in, mode);
        if (ZSTD_isError(r))
            return -EIO;
        if (ob.pos > 0) {
            int rc = w->sink(w->sink_ctx, w->obuf, ob.pos);
            if (rc < 0)
                return rc;
            w->emitted += ob.pos;
        }
        bool done = mode == ZSTD_e_continue ? in->pos == in->size : r == 0;
        if (done)
            return 0;
    }
}

int ck_zstd_writer_write(void *writer, const void *buf, size_t len)
{
    ck_zstd_writer *w = writer;
    if (w->error)
        return w->error;
    if (w->finished)
        return w->error = -EINVAL;
    ZSTD_inBuffer in = { buf, len, 0 };
    int rc = pump(w, &in, ZSTD_e_continue);
    if (rc < 0)
        w->error = rc;
    return rc;
}

int ck_zstd_writer_finish(ck_zstd_writer *w)
{
    if (w->error)
        return w->error;
    if (w->finished)
        return 0;
    ZSTD_inBuffer in = { NULL, 0, 0 };
    int rc = pump(w, &in, ZSTD_e_end);
    if (rc < 0)
        return w->error = rc;
    w->finished = true;
    return 0;
}

uint64_t ck_zstd_writer_out_len(const ck_zstd_writer *w) { return w->emitted; }

void ck_zstd_writer_free(ck_zstd_writer *w)
{
    if (!w)
        return;
    ZSTD_freeCCtx(w->cctx);
    free(w->obuf);
    free(w);
}

typedef struct {
    uint8_t *data;
    size_t len, cap;
} grow_buf;

static int grow_buf_append(void *ctx, const void *p, size_t n)
{
    grow_buf *g = ctx;
    if (n > SIZE_MAX - g->len)
        return -ENOMEM;
    if (g->len + n > g->cap) {
        size_t cap = g->cap ? g->cap : 4096;
        while (cap < g->len + n)
            cap = cap > SIZE_MAX / 2 ? g->len + n : cap * 2;
        uint8_t *nd = realloc(g->data, cap);
        if (!nd)
            return -ENOMEM;
        g->data = nd;
        g->cap = cap;
    }
    memcpy(g->data + g->len, p, n);
    g->len += n;
    return 0;
}

int ck_zstd_encode(const void *buf, size_t len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    grow_buf g = { NULL, 0, 0 };
    size_t bound = ZSTD_compressBound(len);
    if (!ZSTD_isError(bound) && bound > 0) {
        g.data = malloc(bound);
        if (!g.data)
            return -ENOMEM;
        g.cap = bound;
    }
    ck_zstd_writer *w;
    int rc = ck_zstd_writer_new(&w, len, grow_buf_append, &g);
    if (rc < 0) {
        free(g.data);
        return rc;
    }
    rc = ck_zstd_writer_write(w, buf, len);
    if (rc == 0)
        rc = ck_zstd_writer_finish(w);
    ck_zstd_writer_free(w);
    if (rc < 0) {
        free(g.data);
        return rc;
    }
    *out = g.data;
    *out_len = g.len;
    return 0;
}
