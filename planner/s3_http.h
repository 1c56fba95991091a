/* HTTP to an S3 endpoint over libcurl: URLs (path-style or virtual-hosted),
 * canonical query strings, SigV4 through CURLOPT_AWS_SIGV4, and one
 * blocking request with bounded retries.  The parallel ranged reads of a
 * mounted object use the same easy-handle set-up (s3_pool.c). */
#ifndef CKPT_S3_HTTP_H
#define CKPT_S3_HTTP_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include "s3_config.h"

typedef struct ck_s3_client ck_s3_client;

/* Takes cfg over (freed with the client). */
int ck_s3_client_new(ck_s3_config *cfg, const char *bucket, ck_s3_client **out);
void ck_s3_client_free(ck_s3_client *c);
const char *ck_s3_client_bucket(const ck_s3_client *c);

/* RFC 3986 encoding as SigV4 wants it: everything but A-Z a-z 0-9 - _ . ~
 * (and '/' when keep_slash) as %XX.  -ENAMETOOLONG if out is too small. */
int ck_s3_uri_encode(const char *s, int keep_slash, char *out, size_t cap);
/* "n1=v1&n2=v2" from NULL-terminated name/value pairs, names sorted and
 * both encoded: curl 7.88 signs the query string as given, so it must
 * already be canonical.  A NULL value is written as "name=". */
int ck_s3_query(const char *const *pairs, char *out, size_t cap);
/* The URL of key (may be "") with an already canonical query (may be NULL). */
int ck_s3_url(const ck_s3_client *c, const char *key, const char *query, char *out, size_t cap);

typedef struct {
    long status;            /* HTTP status, 0 when no answer came */
    CURLcode curl;          /* transport result */
    char etag[128];
    char last_modified[64];
    uint64_t content_length;
    int has_length;
    char *body;             /* NUL-terminated, at most the max asked for */
    size_t body_len;
    int body_truncated;
    char code[64];          /* <Code> of an XML error body, "" if none */
} ck_s3_response;

void ck_s3_response_free(ck_s3_response *r);

/* Sets an easy handle up for one signed request (method, URL, headers,
 * timeouts, connection sharing).  *hdrs receives the header list the
 * caller frees after the transfer; extra (NULL-terminated) are added. */
int ck_s3_easy_setup(ck_s3_client *c, CURL *h, const char *method, const char *url,
                     const char *const *extra, struct curl_slist **hdrs);

/* One request, retried with exponential backoff on 5xx, 503 SlowDown,
 * resets and timeouts (a bounded number of times).  body/body_len: the
 * request body (PUT/POST), may be NULL.  The answer's body is kept up to
 * max_body bytes.  0 once an answer came (any status: look at r->status),
 * -ETIMEDOUT when none came. */
int ck_s3_request(ck_s3_client *c, const char *method, const char *key, const char *query,
                  const char *const *extra, const void *body, size_t body_len, size_t max_body,
                  ck_s3_response *r);

/* 1 for the answers worth retrying: no answer, 5xx, 429. */
int ck_s3_retryable(long status, CURLcode curl);
/* Backoff before attempt n (1-based): 50 ms * 2^(n-1), capped at 2 s. */
long ck_s3_backoff_ms(unsigned n);

/* "HTTP 403 SignatureDoesNotMatch", "no answer (Couldn't connect to server)". */
void ck_s3_describe(const ck_s3_response *r, char *out, size_t cap);

#define CK_S3_MAX_TRIES 5

#endif
