/* Bounded scanning of S3's XML answers; see s3_xml.h. */
#include "s3_xml.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *find_bytes(const char *h, size_t hl, const char *n, size_t nl)
{
    return nl <= hl ? memmem(h, hl, n, nl) : NULL;
}

int ck_xml_find(const char *xml, size_t len, const char *tag, const char **inner,
                size_t *inner_len)
{
    char open[80], close[80];
    size_t tl = strlen(tag);
    if (tl + 4 > sizeof open)
        return 0;
    int on = snprintf(open, sizeof open, "<%s", tag);
    int cn = snprintf(close, sizeof close, "</%s>", tag);
    const char *p = xml, *end = xml + len;
    while (p < end) {
        const char *o = find_bytes(p, (size_t)(end - p), open, (size_t)on);
        if (!o)
            return 0;
        const char *after = o + on;
        /* <Key> or <Key attr=...>, not <KeyCount> */
        if (after < end && (*after == '>' || *after == ' ' || *after == '/')) {
            const char *gt = memchr(after, '>', (size_t)(end - after));
            if (!gt)
                return 0;
            if (gt[-1] == '/') { /* <Tag/>: empty */
                *inner = gt + 1;
                *inner_len = 0;
                return 1;
            }
            const char *c = find_bytes(gt + 1, (size_t)(end - gt - 1), close, (size_t)cn);
            if (!c)
                return 0;
            *inner = gt + 1;
            *inner_len = (size_t)(c - gt - 1);
            return 1;
        }
        p = after;
    }
    return 0;
}

static int put_utf8(unsigned long cp, char *out, size_t cap, size_t *n)
{
    unsigned char b[4];
    size_t k;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -EINVAL;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (cp >> 18));
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    if (*n + k >= cap)
        return -ENAMETOOLONG;
    memcpy(out + *n, b, k);
    *n += k;
    return 0;
}

int ck_xml_text(const char *text, size_t len, char *out, size_t cap)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = { { "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' }, { "quot;", '"' }, { "apos;", '\'' } };
    size_t n = 0;
    if (cap == 0)
        return -ENAMETOOLONG;
    for (size_t i = 0; i < len;) {
        if (text[i] != '&') {
            if (n + 1 >= cap)
                return -ENAMETOOLONG;
            out[n++] = text[i++];
            continue;
        }
        const char *semi = memchr(text + i, ';', len - i > 12 ? 12 : len - i);
        if (!semi)
            return -EINVAL;
        size_t rl = (size_t)(semi - (text + i)) + 1; /* "&...;" */
        int done = 0;
        for (size_t e = 0; e < sizeof ents / sizeof ents[0] && !done; e++) {
            size_t el = strlen(ents[e].name);
            if (rl == el + 1 && memcmp(text + i + 1, ents[e].name, el) == 0) {
                if (n + 1 >= cap)
                    return -ENAMETOOLONG;
                out[n++] = ents[e].c;
                done = 1;
            }
        }
        if (!done) {
            if (rl < 4 || text[i + 1] != '#')
                return -EINVAL;
            int hex = text[i + 2] == 'x' || text[i + 2] == 'X';
            unsigned long cp = 0;
            size_t d0 = i + 2 + (size_t)hex;
            if (d0 >= i + rl - 1)
                return -EINVAL;
            for (size_t d = d0; d < i + rl - 1; d++) {
                char c = text[d];
                int v = c >= '0' && c <= '9' ? c - '0'
                        : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (v < 0 || cp > 0x10FFFF)
                    return -EINVAL;
                cp = cp * (hex ? 16 : 10) + (unsigned long)v;
            }
            int rc = put_utf8(cp, out, cap, &n);
            if (rc)
                return rc;
        }
        i += rl;
    }
    out[n] = '\0';
    return 0;
}

int ck_xml_get(const char *xml, size_t len, const char *tag, char *out, size_t cap)
{
    const char *in;
    size_t il;
    if (!ck_xml_find(xml, len, tag, &in, &il))
        return 0;
    int rc = ck_xml_text(in, il, out, cap);
    return rc ? rc : 1;
}

int ck_s3_parse_list(const char *xml, size_t len, ck_s3_list_fn fn, void *ctx, int *truncated,
                     char *token, size_t token_cap)
{
    const char *in;
    size_t il;
    if (!ck_xml_find(xml, len, "ListBucketResult", &in, &il))
        return -EINVAL;
    char flag[16];
    *truncated = ck_xml_get(in, il, "IsTruncated", flag, sizeof flag) == 1 &&
                 strcmp(flag, "true") == 0;
    if (token_cap)
        token[0] = '\0';
    if (*truncated && ck_xml_get(in, il, "NextContinuationToken", token, token_cap) != 1)
        return -EINVAL; /* a truncated page must say where to go on */
    const char *p = in, *end = in + il;
    const char *c;
    size_t cl;
    while (p < end && ck_xml_find(p, (size_t)(end - p), "Contents", &c, &cl)) {
        ck_s3_list_entry e;
        char size[32];
        memset(&e, 0, sizeof e);
        if (ck_xml_get(c, cl, "Key", e.key, sizeof e.key) != 1 ||
            ck_xml_get(c, cl, "Size", size, sizeof size) != 1)
            return -EINVAL;
        char *se;
        errno = 0;
        unsigned long long sz = strtoull(size, &se, 10);
        if (errno || *se || se == size || size[0] == '-')
            return -EINVAL;
        e.size = sz;
        if (ck_xml_get(c, cl, "ETag", e.etag, sizeof e.etag) < 0 ||
            ck_xml_get(c, cl, "LastModified", e.last_modified, sizeof e.last_modified) < 0)
            return -EINVAL;
        int rc = fn(ctx, &e);
        if (rc)
            return rc;
        p = c + cl;
    }
    return 0;
}

int ck_s3_parse_time(const char *s, int64_t *sec, long *nsec)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *r = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!r) {
        /* HTTP dates (Last-Modified): "Tue, 01 Dec 2026 17:39:16 GMT" */
        r = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        if (!r || *r)
            return -EINVAL;
        *sec = (int64_t)timegm(&tm);
        *nsec = 0;
        return 0;
    }
    long ns = 0;
    if (*r == '.') {
        long scale = 100000000;
        for (r++; *r >= '0' && *r <= '9'; r++) {
            ns += (*r - '0') * scale;
            scale /= 10;
        }
    }
    if (*r != 'Z' || r[1])
        return -EINVAL;
    *sec = (int64_t)timegm(&tm);
    *nsec = ns;
    return 0;
}
