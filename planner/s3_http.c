/* S3 requests over libcurl; see s3_http.h.  Signing is curl's
 * (CURLOPT_AWS_SIGV4): curl 7.88 does not send x-amz-content-sha256 itself,
 * so every request carries "UNSIGNED-PAYLOAD", which curl then signs. */
#include "s3_http.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "s3_xml.h"

struct ck_s3_client {
    ck_s3_config cfg;
    char *bucket;
    char *userpwd;      /* "ACCESS:SECRET" for curl, NULL when anonymous */
    char sigv4[160];    /* "aws:amz:REGION:s3" */
    char *token_hdr;    /* "x-amz-security-token: ..." or NULL */
    CURLSH *share;      /* kept-alive connections and DNS for blocking requests */
    pthread_mutex_t share_lock[CURL_LOCK_DATA_LAST];
};

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
    ck_s3_client *c = u;
    pthread_mutex_lock(&c->share_lock[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
    ck_s3_client *c = u;
    pthread_mutex_unlock(&c->share_lock[d]);
}

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

int ck_s3_client_new(ck_s3_config *cfg, const char *bucket, ck_s3_client **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, global_init);
    ck_s3_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->cfg = *cfg;
    memset(cfg, 0, sizeof *cfg);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_lock[i], NULL);
    int rc = (c->bucket = strdup(bucket)) ? 0 : -ENOMEM;
    if (!rc && c->cfg.access_key) {
        size_t n = strlen(c->cfg.access_key) + strlen(c->cfg.secret_key) + 2;
        if ((c->userpwd = malloc(n)))
            snprintf(c->userpwd, n, "%s:%s", c->cfg.access_key, c->cfg.secret_key);
        else
            rc = -ENOMEM;
        snprintf(c->sigv4, sizeof c->sigv4, "aws:amz:%s:s3", c->cfg.region);
    }
    if (!rc && c->cfg.session_token) {
        size_t n = strlen(c->cfg.session_token) + 32;
        if ((c->token_hdr = malloc(n)))
            snprintf(c->token_hdr, n, "x-amz-security-token: %s", c->cfg.session_token);
        else
            rc = -ENOMEM;
    }
    if (!rc && !(c->share = curl_share_init()))
        rc = -ENOMEM;
    if (!rc) {
        curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    if (rc) {
        ck_s3_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void ck_s3_client_free(ck_s3_client *c)
{
    if (!c)
        return;
    if (c->share)
        curl_share_cleanup(c->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&c->share_lock[i]);
    ck_s3_config_free(&c->cfg);
    if (c->userpwd) {
        memset(c->userpwd, 0, strlen(c->userpwd));
        free(c->userpwd);
    }
    free(c->token_hdr);
    free(c->bucket);
    free(c);
}

const char *ck_s3_client_bucket(const ck_s3_client *c)
{
    return c->bucket;
}

int ck_s3_uri_encode(const char *s, int keep_slash, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' ||
                    (keep_slash && ch == '/');
        if (n + (plain ? 1 : 3) >= cap)
            return -ENAMETOOLONG;
        if (plain) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    if (n >= cap)
        return -ENAMETOOLONG;
    out[n] = '\0';
    return 0;
}

int ck_s3_query(const char *const *pairs, char *out, size_t cap)
{
    size_t np = 0;
    while (pairs[2 * np])
        np++;
    if (np > 16)
        return -E2BIG;
    size_t order[16];
    for (size_t i = 0; i < np; i++)
        order[i] = i;
    /* insertion sort by name: a handful of parameters */
    for (size_t i = 1; i < np; i++)
        for (size_t j = i; j > 0 && strcmp(pairs[2 * order[j - 1]], pairs[2 * order[j]]) > 0; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    size_t n = 0;
    if (cap == 0)
        return -ENAMETOOLONG;
    out[0] = '\0';
    for (size_t i = 0; i < np; i++) {
        const char *name = pairs[2 * order[i]], *val = pairs[2 * order[i] + 1];
        if (i) {
            if (n + 1 >= cap)
                return -ENAMETOOLONG;
            out[n++] = '&';
        }
        int rc = ck_s3_uri_encode(name, 0, out + n, cap - n);
        if (rc)
            return rc;
        n += strlen(out + n);
        if (n + 1 >= cap)
            return -ENAMETOOLONG;
        out[n++] = '=';
        out[n] = '\0';
        if (val) {
            rc = ck_s3_uri_encode(val, 0, out + n, cap - n);
            if (rc)
                return rc;
            n += strlen(out + n);
        }
    }
    return 0;
}

int ck_s3_url(const ck_s3_client *c, const char *key, const char *query, char *out, size_t cap)
{
    char enc[3 * 1024 + 1];
    int rc = ck_s3_uri_encode(key, 1, enc, sizeof enc);
    if (rc)
        return rc;
    const char *ep = c->cfg.endpoint;
    const char *host = strstr(ep, "://") + 3;
    int n;
    if (c->cfg.virtual_hosted)
        n = snprintf(out, cap, "%.*s%s.%s/%s%s%s", (int)(host - ep), ep, c->bucket, host, enc,
                     query ? "?" : "", query ? query : "");
    else
        n = snprintf(out, cap, "%s/%s/%s%s%s", ep, c->bucket, enc, query ? "?" : "",
                     query ? query : "");
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int ck_s3_easy_setup(ck_s3_client *c, CURL *h, const char *method, const char *url,
                     const char *const *extra, struct curl_slist **hdrs)
{
    struct curl_slist *l = NULL, *t;
#define ADD(s)                                                                                     \
    do {                                                                                           \
        if (!(t = curl_slist_append(l, (s)))) {                                                    \
            curl_slist_free_all(l);                                                                \
            return -ENOMEM;                                                                        \
        }                                                                                          \
        l = t;                                                                                     \
    } while (0)
    ADD("x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (c->token_hdr)
        ADD(c->token_hdr);
    /* No "Expect:" here to turn 100-continue off: curl 7.88 signs the
     * emptied header, then leaves it out, and the signature fails. */
    for (size_t i = 0; extra && extra[i]; i++)
        ADD(extra[i]);
#undef ADD
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, l);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    /* never wait forever on a stalled server: under 1 KiB/s for 10 s ends it */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 10L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (c->userpwd) {
        curl_easy_setopt(h, CURLOPT_USERPWD, c->userpwd);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, c->sigv4);
    }
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    *hdrs = l;
    return 0;
}

/* ---- one blocking request ---- */

typedef struct {
    ck_s3_response *r;
    size_t max;
    const uint8_t *body;
    size_t body_len, body_off;
} xfer;

static size_t on_body(char *p, size_t size, size_t n, void *u)
{
    xfer *x = u;
    size_t len = size * n;
    ck_s3_response *r = x->r;
    size_t room = x->max > r->body_len ? x->max - r->body_len : 0;
    size_t take = len < room ? len : room;
    if (len > take)
        r->body_truncated = 1;
    if (take) {
        char *nb = realloc(r->body, r->body_len + take + 1);
        if (!nb)
            return 0;
        r->body = nb;
        memcpy(r->body + r->body_len, p, take);
        r->body_len += take;
        r->body[r->body_len] = '\0';
    }
    return len;
}

static size_t on_upload(char *p, size_t size, size_t n, void *u)
{
    xfer *x = u;
    size_t room = size * n, left = x->body_len - x->body_off;
    size_t take = left < room ? left : room;
    if (take)
        memcpy(p, x->body + x->body_off, take);
    x->body_off += take;
    return take;
}

/* Header lines: "ETag: ...", "Last-Modified: ...", "Content-Length: ..." */
static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1, *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    size_t vl = (size_t)(e - v);
    if (vl >= cap)
        return;
    memcpy(out, v, vl);
    out[vl] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *u)
{
    ck_s3_response *r = ((xfer *)u)->r;
    size_t len = size * n;
    char cl[32] = "";
    header_value(p, len, "ETag", r->etag, sizeof r->etag);
    header_value(p, len, "Last-Modified", r->last_modified, sizeof r->last_modified);
    header_value(p, len, "Content-Length", cl, sizeof cl);
    if (cl[0]) {
        char *e;
        unsigned long long v = strtoull(cl, &e, 10);
        if (!*e) {
            r->content_length = v;
            r->has_length = 1;
        }
    }
    return len;
}

void ck_s3_response_free(ck_s3_response *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

int ck_s3_retryable(long status, CURLcode curl)
{
    if (curl != CURLE_OK)
        return curl != CURLE_OUT_OF_MEMORY && curl != CURLE_URL_MALFORMAT;
    return status >= 500 || status == 429;
}

long ck_s3_backoff_ms(unsigned n)
{
    long ms = 50;
    for (unsigned i = 1; i < n && ms < 2000; i++)
        ms *= 2;
    return ms > 2000 ? 2000 : ms;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int ck_s3_request(ck_s3_client *c, const char *method, const char *key, const char *query,
                  const char *const *extra, const void *body, size_t body_len, size_t max_body,
                  ck_s3_response *r)
{
    char url[4096];
    memset(r, 0, sizeof *r);
    int rc = ck_s3_url(c, key, query, url, sizeof url);
    if (rc)
        return rc;
    for (unsigned attempt = 1;; attempt++) {
        CURL *h = curl_easy_init();
        if (!h)
            return -ENOMEM;
        struct curl_slist *hdrs = NULL;
        xfer x = { r, max_body, body, body_len, 0 };
        rc = ck_s3_easy_setup(c, h, method, url, extra, &hdrs);
        if (rc) {
            curl_easy_cleanup(h);
            return rc;
        }
        curl_easy_setopt(h, CURLOPT_SHARE, c->share);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 300L);
        if (body || strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
            curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(h, CURLOPT_READFUNCTION, on_upload);
            curl_easy_setopt(h, CURLOPT_READDATA, &x);
            curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len);
            /* CURLOPT_UPLOAD makes it a PUT; POST keeps its verb */
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        }
        r->curl = curl_easy_perform(h);
        r->status = 0;
        if (r->curl == CURLE_OK)
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_cleanup(h);
        curl_slist_free_all(hdrs);
        if (!ck_s3_retryable(r->status, r->curl) || attempt >= CK_S3_MAX_TRIES)
            break;
        sleep_ms(ck_s3_backoff_ms(attempt));
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
        r->body_truncated = 0;
        r->etag[0] = r->last_modified[0] = '\0';
        r->has_length = 0;
    }
    if (r->status >= 300 && r->body)
        ck_xml_get(r->body, r->body_len, "Code", r->code, sizeof r->code);
    return r->curl == CURLE_OK ? 0 : -ETIMEDOUT;
}

void ck_s3_describe(const ck_s3_response *r, char *out, size_t cap)
{
    if (r->curl != CURLE_OK)
        snprintf(out, cap, "no answer (%s)", curl_easy_strerror(r->curl));
    else if (r->code[0])
        snprintf(out, cap, "HTTP %ld %s", r->status, r->code);
    else
        snprintf(out, cap, "HTTP %ld", r->status);
}
