/* NumPy .npy headers.  The writer reproduces numpy.lib.format byte for
 * byte (numpy >= 1.24 adds room for the first axis to grow to 21 digits, so
 * np.save output and ours agree); the reader takes what NumPy's
 * safe_eval accepts for the three keys, and nothing else. */
#include "npy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "errmsg.h"
#include "le.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64
/* numpy.lib.format.GROWTH_AXIS_MAX_DIGITS: log10(2**64) rounded up. */
#define NPY_GROWTH_AXIS_MAX_DIGITS 21

long ck_npy_header(ck_dtype dt, uint32_t ndim, const uint64_t *shape, char *buf, size_t cap)
{
    const ck_dtype_info *info = ck_dtype_get(dt);
    if (!info || ndim > CK_MAX_DIMS || (ndim && !shape))
        return -EINVAL;

    /* The dict is at most ~40 + 32 dims * 22 chars: well inside this. */
    char dict[1024];
    size_t n = 0;
    int w = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     info->npy_descr);
    if (w < 0 || (size_t)w >= sizeof dict)
        return -EINVAL;
    n = (size_t)w;
    for (uint32_t i = 0; i < ndim; i++) {
        /* Python's repr of a 1-tuple keeps the trailing comma: (5,) */
        w = snprintf(dict + n, sizeof dict - n, i + 1 < ndim ? "%" PRIu64 ", " :
                     ndim == 1 ? "%" PRIu64 "," : "%" PRIu64, shape[i]);
        if (w < 0 || (size_t)w >= sizeof dict - n)
            return -EINVAL;
        n += (size_t)w;
    }
    w = snprintf(dict + n, sizeof dict - n, "), }");
    if (w < 0 || (size_t)w >= sizeof dict - n)
        return -EINVAL;
    n += (size_t)w;
    if (ndim > 0) {
        char digits[24];
        int dn = snprintf(digits, sizeof digits, "%" PRIu64, shape[0]);
        size_t grow = dn < NPY_GROWTH_AXIS_MAX_DIGITS ? (size_t)(NPY_GROWTH_AXIS_MAX_DIGITS - dn) : 0;
        if (grow >= sizeof dict - n)
            return -EINVAL;
        memset(dict + n, ' ', grow);
        n += grow;
    }

    /* Same arithmetic as numpy's _wrap_header: hlen counts the '\n', and
     * an already aligned header still gets a full 64 bytes of padding. */
    size_t hlen = n + 1;
    size_t prefix = NPY_MAGIC_LEN + 2 + 2;
    size_t pad = NPY_ALIGN - ((prefix + hlen) % NPY_ALIGN);
    size_t total = prefix + hlen + pad;
    if (hlen + pad > 0xffff)
        return -EINVAL;
    if (total > cap)
        return -ENOSPC;

    unsigned char *out = (unsigned char *)buf;
    memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
    out[6] = 1;
    out[7] = 0;
    ck_put_le16(out + 8, (uint16_t)(hlen + pad));
    memcpy(out + prefix, dict, n);
    memset(out + prefix + n, ' ', pad);
    out[total - 1] = '\n';
    return (long)total;
}

/* ---- reading ---- */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int accept(cursor *c, char ch)
{
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted Python string without escapes (no key or descr we accept has
 * one).  Returns the bytes between the quotes. */
static int parse_str(cursor *c, const char **s, size_t *n)
{
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return -1;
    char q = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n')
            return -1;
        c->p++;
    }
    if (c->p >= c->end)
        return -1;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return 0;
}

static int parse_word(cursor *c, const char *word)
{
    skip_ws(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    const char *after = c->p + n;
    if (after < c->end && ((*after >= 'a' && *after <= 'z') || (*after >= 'A' && *after <= 'Z') ||
                           (*after >= '0' && *after <= '9') || *after == '_'))
        return 0;
    c->p = after;
    return 1;
}

/* Non-negative decimal integer; Python 2 era files may carry an 'L'. */
static int parse_uint(cursor *c, uint64_t *v)
{
    skip_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return -1;
    uint64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, (uint64_t)(*c->p - '0'), &x))
            return -1;
        c->p++;
    }
    if (c->p < c->end && *c->p == 'L')
        c->p++;
    *v = x;
    return 0;
}

static int parse_shape(cursor *c, ck_npy_info *out, char *err, size_t errlen)
{
    if (!accept(c, '('))
        return ck_fail(err, errlen, -EINVAL, "npy header: shape is not a tuple");
    out->ndim = 0;
    if (accept(c, ')'))
        return 0;
    int comma = 0;
    for (;;) {
        uint64_t v;
        if (parse_uint(c, &v))
            return ck_fail(err, errlen, -EINVAL,
                           "npy header: shape holds something other than a non-negative integer");
        if (v > INT64_MAX)
            return ck_fail(err, errlen, -EINVAL,
                           "npy header: shape dimension %" PRIu64 " is too large", v);
        if (out->ndim >= CK_MAX_DIMS)
            return ck_fail(err, errlen, -EINVAL, "npy header: more than %d dimensions", CK_MAX_DIMS);
        out->shape[out->ndim++] = v;
        comma = accept(c, ',');
        if (accept(c, ')'))
            break;
        if (!comma)
            return ck_fail(err, errlen, -EINVAL, "npy header: malformed shape tuple");
    }
    /* (5) is the integer 5 in Python, not a tuple. */
    if (out->ndim == 1 && !comma)
        return ck_fail(err, errlen, -EINVAL, "npy header: shape is not a tuple");
    return 0;
}

static int check_magic(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    size_t n = len < NPY_MAGIC_LEN ? len : NPY_MAGIC_LEN;
    if (memcmp(buf, NPY_MAGIC, n) != 0)
        return ck_fail(err, errlen, -EINVAL, "not a .npy file (bad magic)");
    return len < NPY_MAGIC_LEN ? -EAGAIN : 0;
}

int ck_npy_parse(const uint8_t *buf, size_t len, ck_npy_info *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rc = check_magic(buf, len, err, errlen);
    if (rc)
        return rc;
    if (len < NPY_MAGIC_LEN + 2)
        return -EAGAIN;
    uint8_t major = buf[6], minor = buf[7];
    if (minor != 0 || major < 1 || major > 3)
        return ck_fail(err, errlen, -EINVAL, "npy: unsupported format version %u.%u", major, minor);
    size_t lenbytes = major == 1 ? 2 : 4;
    size_t prefix = NPY_MAGIC_LEN + 2 + lenbytes;
    if (len < prefix)
        return -EAGAIN;
    uint64_t hlen = lenbytes == 2 ? ck_le16(buf + 8) : ck_le32(buf + 8);
    if (hlen > CK_NPY_MAX_HEADER)
        return ck_fail(err, errlen, -EINVAL,
                       "npy header length %" PRIu64 " exceeds %u", hlen, CK_NPY_MAX_HEADER);
    if (len - prefix < hlen)
        return -EAGAIN;

    cursor c = { (const char *)buf + prefix, (const char *)buf + prefix + hlen };
    if (!accept(&c, '{'))
        return ck_fail(err, errlen, -EINVAL, "npy header is not a dict literal");
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char descr[16] = "";
    while (!accept(&c, '}')) {
        const char *key;
        size_t keylen;
        if (parse_str(&c, &key, &keylen) || !accept(&c, ':'))
            return ck_fail(err, errlen, -EINVAL, "npy header: malformed dict");
        if (keylen == 5 && memcmp(key, "descr", 5) == 0) {
            const char *s;
            size_t n;
            if (have_descr++)
                return ck_fail(err, errlen, -EINVAL, "npy header: 'descr' given twice");
            if (parse_str(&c, &s, &n))
                return ck_fail(err, errlen, -EINVAL, "npy header: descr is not a simple type string "
                               "(structured dtypes are not supported)");
            if (n >= sizeof descr)
                return ck_fail(err, errlen, -EINVAL, "npy header: descr is too long");
            memcpy(descr, s, n);
            descr[n] = '\0';
        } else if (keylen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            if (have_fortran++)
                return ck_fail(err, errlen, -EINVAL, "npy header: 'fortran_order' given twice");
            if (parse_word(&c, "True")) {
                out->fortran_order = 1;
            } else if (parse_word(&c, "False")) {
                out->fortran_order = 0;
            } else {
                return ck_fail(err, errlen, -EINVAL, "npy header: fortran_order is not True or False");
            }
        } else if (keylen == 5 && memcmp(key, "shape", 5) == 0) {
            if (have_shape++)
                return ck_fail(err, errlen, -EINVAL, "npy header: 'shape' given twice");
            rc = parse_shape(&c, out, err, errlen);
            if (rc)
                return rc;
        } else {
            return ck_fail(err, errlen, -EINVAL,
                           "npy header: unexpected key '%.*s'", (int)(keylen > 40 ? 40 : keylen),
                           key);
        }
        if (!accept(&c, ',')) {
            if (accept(&c, '}'))
                break;
            return ck_fail(err, errlen, -EINVAL, "npy header: malformed dict");
        }
    }
    skip_ws(&c);
    if (c.p != c.end)
        return ck_fail(err, errlen, -EINVAL, "npy header: trailing bytes after the dict");
    if (!have_descr || !have_fortran || !have_shape)
        return ck_fail(err, errlen, -EINVAL, "npy header: missing %s", !have_descr ? "'descr'" :
                       !have_fortran ? "'fortran_order'" : "'shape'");

    if (descr[0] == '>' && !(descr[1] && descr[2] == '1' && descr[3] == '\0'))
        return ck_fail(err, errlen, -EINVAL, "npy: big-endian descr '%s' is not supported", descr);
    out->dtype = ck_dtype_from_npy_descr(descr);
    if (out->dtype == CK_DT_INVALID)
        return ck_fail(err, errlen, -EINVAL, "npy: unsupported descr '%s'", descr);
    /* numel * element size must be a byte count we can address. */
    uint64_t bytes = ck_dtype_get(out->dtype)->size;
    for (uint32_t i = 0; i < out->ndim; i++) {
        if (out->shape[i] && __builtin_mul_overflow(bytes, out->shape[i], &bytes))
            return ck_fail(err, errlen, -EINVAL, "npy: shape describes more than 2^64 bytes");
    }
    if (out->fortran_order)
        return ck_fail(err, errlen, -ENOTSUP, "npy: fortran_order True is not supported");
    out->header_len = prefix + hlen;
    return 0;
}
