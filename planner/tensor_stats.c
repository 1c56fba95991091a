/* Streaming tensor statistics (see tensor_stats.h). */
#include "tensor_stats.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "chunk_reader.h"
#include "dtype_convert.h"
#include "le.h"

#define STATS_BLOCK CK_STATS_BLOCK
/* Bytes read from the checkpoint per step of ck_key_stats. */
#define STATS_READ_BYTES (1u << 20)

bool ck_stats_supported(ck_dtype dt)
{
    switch (dt) {
    case CK_DT_INT8: case CK_DT_INT16: case CK_DT_INT32: case CK_DT_INT64:
    case CK_DT_UINT8: case CK_DT_UINT16: case CK_DT_UINT32: case CK_DT_UINT64:
    case CK_DT_BOOL:
    case CK_DT_COMPLEX32: case CK_DT_COMPLEX64: case CK_DT_COMPLEX128:
        return true;
    default:
        return ck_dtype_is_floating(dt);
    }
}

int ck_stats_init(ck_stats_acc *a, ck_dtype dt)
{
    memset(a, 0, sizeof *a);
    if (!ck_stats_supported(dt))
        return -EINVAL;
    a->dtype = dt;
    switch (dt) {
    case CK_DT_INT8: case CK_DT_INT16: case CK_DT_INT32: case CK_DT_INT64:
        a->kind = CK_STATS_SIGNED;
        break;
    case CK_DT_UINT8: case CK_DT_UINT16: case CK_DT_UINT32: case CK_DT_UINT64: case CK_DT_BOOL:
        a->kind = CK_STATS_UNSIGNED;
        break;
    case CK_DT_COMPLEX32: case CK_DT_COMPLEX64: case CK_DT_COMPLEX128:
        a->kind = CK_STATS_COMPLEX;
        break;
    default:
        a->kind = CK_STATS_FLOAT;
        break;
    }
    a->imin = INT64_MAX;
    a->imax = INT64_MIN;
    a->umin = UINT64_MAX;
    a->umax = 0;
    a->fmin = INFINITY;
    a->fmax = -INFINITY;
    return 0;
}

/* Merges n finite values (n <= STATS_BLOCK) into the running moments. */
static void add_values(ck_stats_acc *a, const double *v, size_t n)
{
    if (!n)
        return;
    double sum = 0, amax = 0, lo = a->fmin, hi = a->fmax;
    for (size_t i = 0; i < n; i++) {
        double x = v[i], ax = fabs(x);
        sum += x;
        if (ax > amax)
            amax = ax;
        if (x < lo)
            lo = x;
        if (x > hi)
            hi = x;
    }
    a->fmin = lo;
    a->fmax = hi;
    double mb = sum / (double)n;
    if (!isfinite(mb)) { /* the plain sum overflowed: average scaled values instead */
        mb = 0;
        for (size_t i = 0; i < n; i++)
            mb += v[i] / (double)n;
    }
    double m2b = 0;
    for (size_t i = 0; i < n; i++) {
        double d = v[i] - mb;
        m2b += d * d;
    }
    /* Chan et al.: combine (a->n, mean, m2) with (n, mb, m2b) */
    double na = (double)a->n, nb = (double)n, nt = na + nb;
    double delta = mb - a->mean;
    a->mean += delta * (nb / nt);
    a->m2 += m2b + delta * delta * (na * nb / nt);
    a->n += n;
    if (amax > 0) {
        double ssq = 0;
        double inv = 1.0 / amax;
        if (isfinite(inv)) {
            for (size_t i = 0; i < n; i++) {
                double s = v[i] * inv;
                ssq += s * s;
            }
        } else { /* amax is a tiny subnormal */
            for (size_t i = 0; i < n; i++) {
                double s = v[i] / amax;
                ssq += s * s;
            }
        }
        if (amax > a->l2_scale) {
            double r = a->l2_scale / amax;
            a->l2_ssq = a->l2_ssq * r * r + ssq;
            a->l2_scale = amax;
        } else {
            double r = amax / a->l2_scale;
            a->l2_ssq += ssq * r * r;
        }
    }
}

/* Queues n values, merging each block as it fills. */
static void push_values(ck_stats_acc *a, const double *v, size_t n)
{
    while (n) {
        size_t m = STATS_BLOCK - a->npend < n ? STATS_BLOCK - a->npend : n;
        memcpy(a->pend + a->npend, v, m * sizeof *v);
        a->npend += m;
        v += m;
        n -= m;
        if (a->npend == STATS_BLOCK) {
            add_values(a, a->pend, STATS_BLOCK);
            a->npend = 0;
        }
    }
}

/* Counts NaN, infinities and zeros of x; true when x is finite. */
static bool classify(ck_stats_acc *a, double x)
{
    if (isnan(x)) {
        a->nan++;
        return false;
    }
    if (isinf(x)) {
        if (x > 0)
            a->pos_inf++;
        else
            a->neg_inf++;
        return false;
    }
    if (x == 0)
        a->zeros++;
    return true;
}

static void add_float_block(ck_stats_acc *a, const uint8_t *p, size_t n)
{
    double v[STATS_BLOCK];
    ck_dtype_widen_f64(a->dtype, p, v, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (classify(a, v[i]))
            v[k++] = v[i];
    push_values(a, v, k);
}

static void add_complex_block(ck_stats_acc *a, const uint8_t *p, size_t n)
{
    /* n complex elements = 2n parts of the part dtype */
    ck_dtype part = a->dtype == CK_DT_COMPLEX32   ? CK_DT_FLOAT16
                    : a->dtype == CK_DT_COMPLEX64 ? CK_DT_FLOAT32
                                                  : CK_DT_FLOAT64;
    enum { STEP = 512 }; /* complex elements widened at a time */
    double parts[2 * STEP];
    double v[STATS_BLOCK];
    size_t k = 0, psz = ck_dtype_get(part)->size;
    for (size_t off = 0; off < n; off += STEP) {
        size_t m = n - off < STEP ? n - off : STEP;
        ck_dtype_widen_f64(part, p + off * 2 * psz, parts, 2 * m);
        for (size_t i = 0; i < m; i++) {
            double re = parts[2 * i], im = parts[2 * i + 1];
            if (isnan(re) || isnan(im)) {
                a->nan++;
                continue;
            }
            if (isinf(re) || isinf(im)) {
                a->pos_inf++;
                continue;
            }
            if (re == 0 && im == 0)
                a->zeros++;
            v[k++] = hypot(re, im);
        }
    }
    push_values(a, v, k);
}

static void add_int_block(ck_stats_acc *a, const uint8_t *p, size_t n)
{
    double v[STATS_BLOCK];
    size_t sz = ck_dtype_get(a->dtype)->size;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *e = p + i * sz;
        if (a->kind == CK_STATS_SIGNED) {
            int64_t x = sz == 1 ? (int8_t)e[0]
                        : sz == 2 ? (int16_t)ck_le16(e)
                        : sz == 4 ? (int32_t)ck_le32(e)
                                  : (int64_t)ck_le64(e);
            if (x < a->imin)
                a->imin = x;
            if (x > a->imax)
                a->imax = x;
            a->isum += x;
            a->zeros += x == 0;
            v[i] = (double)x;
        } else {
            uint64_t x = sz == 1 ? e[0] : sz == 2 ? ck_le16(e) : sz == 4 ? ck_le32(e) : ck_le64(e);
            if (a->dtype == CK_DT_BOOL)
                x = x != 0;
            if (x < a->umin)
                a->umin = x;
            if (x > a->umax)
                a->umax = x;
            a->isum += (__int128)x;
            a->zeros += x == 0;
            v[i] = (double)x;
        }
    }
    push_values(a, v, n);
}

void ck_stats_add(ck_stats_acc *a, const void *elems, size_t n)
{
    const uint8_t *p = elems;
    size_t sz = ck_dtype_get(a->dtype)->size;
    while (n) {
        size_t m = n < STATS_BLOCK ? n : STATS_BLOCK;
        switch (a->kind) {
        case CK_STATS_FLOAT: add_float_block(a, p, m); break;
        case CK_STATS_COMPLEX: add_complex_block(a, p, m); break;
        default: add_int_block(a, p, m); break;
        }
        a->numel += m;
        p += m * sz;
        n -= m;
    }
}

void ck_stats_finish(ck_stats_acc *a, ck_tensor_stats *out)
{
    add_values(a, a->pend, a->npend);
    a->npend = 0;
    memset(out, 0, sizeof *out);
    out->dtype = a->dtype;
    out->kind = a->kind;
    out->numel = a->numel;
    out->nan = a->nan;
    out->pos_inf = a->pos_inf;
    out->neg_inf = a->neg_inf;
    out->zeros = a->zeros;
    uint64_t inf = a->pos_inf + a->neg_inf;
    out->has_values = a->n + inf > 0;
    if (!out->has_values)
        return;
    out->l2 = inf ? INFINITY : a->l2_scale * sqrt(a->l2_ssq);
    if (a->kind == CK_STATS_SIGNED || a->kind == CK_STATS_UNSIGNED) {
        out->imin = a->imin;
        out->imax = a->imax;
        out->umin = a->umin;
        out->umax = a->umax;
        out->min = a->kind == CK_STATS_SIGNED ? (double)a->imin : (double)a->umin;
        out->max = a->kind == CK_STATS_SIGNED ? (double)a->imax : (double)a->umax;
        out->mean = (double)((long double)a->isum / (long double)a->n);
        out->std = sqrt(a->m2 / (double)a->n);
        return;
    }
    out->min = a->neg_inf ? -INFINITY : a->fmin;
    out->max = a->pos_inf ? INFINITY : a->fmax;
    if (a->pos_inf && a->neg_inf)
        out->mean = NAN;
    else if (a->pos_inf)
        out->mean = INFINITY;
    else if (a->neg_inf)
        out->mean = -INFINITY;
    else
        out->mean = a->mean;
    out->std = inf ? NAN : sqrt(a->m2 / (double)a->n);
}

int ck_key_stats(ck_checkpoint *ck, const ck_key *key, ck_tensor_stats *out)
{
    if (key->kind != CK_KEY_TENSOR)
        return -EINVAL;
    if (key->error)
        return key->error;
    ck_stats_acc *a = malloc(sizeof *a); /* 32 KiB of pending values: not on the stack */
    if (!a)
        return -ENOMEM;
    int rc = ck_stats_init(a, key->dtype);
    if (rc) {
        free(a);
        return rc;
    }
    size_t sz = ck_dtype_get(key->dtype)->size;
    size_t step = STATS_READ_BYTES / sz * sz;
    uint8_t *buf = malloc(step);
    if (!buf) {
        free(a);
        return -ENOMEM;
    }
    for (uint64_t off = 0; off < key->nbytes;) {
        size_t want = key->nbytes - off < step ? (size_t)(key->nbytes - off) : step, got;
        rc = ck_key_read(ck, key, off, buf, want, &got);
        if (!rc && got != want)
            rc = -EIO;
        if (rc)
            break;
        ck_stats_add(a, buf, want / sz);
        off += want;
    }
    free(buf);
    if (!rc)
        ck_stats_finish(a, out);
    free(a);
    return rc;
}
