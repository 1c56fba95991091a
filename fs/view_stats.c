/* The text of a .stats view (see view_stats.h).  Printed by hand rather than
 * with cJSON: 64-bit integer extremes must come out exact, and doubles with
 * the 17 digits that make them round-trip. */
#include "view_stats.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tensor_stats.h"

typedef struct {
    char *buf;
    size_t len, cap;
    int err;
} strbuf;

static void sb_printf(strbuf *b, const char *fmt, ...)
{
    if (b->err)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = -EINVAL;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->buf, nc);
        if (!p) {
            b->err = -ENOMEM;
            return;
        }
        b->buf = p;
        b->cap = nc;
    }
}

static void sb_double(strbuf *b, const char *name, double v)
{
    if (isnan(v))
        sb_printf(b, ",\"%s\":\"nan\"", name);
    else if (isinf(v))
        sb_printf(b, ",\"%s\":\"%s\"", name, v > 0 ? "inf" : "-inf");
    else
        sb_printf(b, ",\"%s\":%.17g", name, v);
}

int fs_stats_json(ck_checkpoint *ck, const ck_key *k, char **text, size_t *len)
{
    ck_tensor_stats s;
    int rc = ck_key_stats(ck, k, &s);
    if (rc)
        return rc;
    strbuf b = { malloc(256), 0, 256, 0 };
    if (!b.buf)
        return -ENOMEM;
    sb_printf(&b, "{\"dtype\":\"%s\",\"shape\":[", ck_dtype_get(k->dtype)->torch_name);
    for (uint32_t i = 0; i < k->ndim; i++)
        sb_printf(&b, "%s%" PRIu64, i ? "," : "", k->shape[i]);
    sb_printf(&b, "],\"numel\":%" PRIu64, s.numel);
    if (s.kind == CK_STATS_COMPLEX)
        sb_printf(&b, ",\"of\":\"abs\"");
    if (!s.has_values) {
        sb_printf(&b, ",\"min\":null,\"max\":null,\"mean\":null,\"std\":null");
    } else {
        if (s.kind == CK_STATS_SIGNED)
            sb_printf(&b, ",\"min\":%" PRId64 ",\"max\":%" PRId64, s.imin, s.imax);
        else if (s.kind == CK_STATS_UNSIGNED)
            sb_printf(&b, ",\"min\":%" PRIu64 ",\"max\":%" PRIu64, s.umin, s.umax);
        else {
            sb_double(&b, "min", s.min);
            sb_double(&b, "max", s.max);
        }
        sb_double(&b, "mean", s.mean);
        sb_double(&b, "std", s.std);
    }
    sb_printf(&b, ",\"std_ddof\":0");
    sb_double(&b, "l2_norm", s.has_values ? s.l2 : 0.0);
    sb_printf(&b, ",\"nan\":%" PRIu64 ",\"pos_inf\":%" PRIu64 ",\"neg_inf\":%" PRIu64
                  ",\"zeros\":%" PRIu64 "}\n",
              s.nan, s.pos_inf, s.neg_inf, s.zeros);
    if (b.err) {
        free(b.buf);
        return b.err;
    }
    *text = b.buf;
    *len = b.len;
    return 0;
}
