/* Parallel ranged GETs over a pool of kept-alive connections: one I/O
 * thread drives a curl multi handle; callers submit GETs and are told
 * through a callback, on that thread, when each is done.  Failures worth
 * retrying (no answer, 5xx, 503 SlowDown, resets, timeouts) are retried
 * with exponential backoff, CK_S3_MAX_TRIES times in all; every transfer
 * has a timeout, so a GET always ends. */
#ifndef CKPT_S3_POOL_H
#define CKPT_S3_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "s3_http.h"

typedef struct ck_s3_pool ck_s3_pool;
typedef struct ck_s3_get ck_s3_get;

/* rc: 0 (bytes delivered, exactly len of them), -EIO (the store refused:
 * status/code say why, e.g. 412 when If-Match failed), -ETIMEDOUT (no
 * usable answer after the retries). */
typedef void (*ck_s3_get_done_fn)(ck_s3_get *g, int rc);
/* Receives bytes [pos, pos + n) of the range, in order. */
typedef void (*ck_s3_get_sink_fn)(void *ctx, uint64_t pos, const void *p, size_t n);

struct ck_s3_get {
    /* set by the caller */
    const char *url;          /* the object's URL, kept valid until done */
    const char *if_match;     /* ETag the object must still have, or NULL */
    uint64_t off, len;        /* bytes [off, off + len) of the object; len > 0 */
    ck_s3_get_sink_fn sink;
    ck_s3_get_done_fn done;
    void *ctx;
    /* results */
    long status;
    CURLcode curl;
    unsigned tries;
    char code[64];
    /* the pool's */
    uint64_t got;
    CURL *h;
    struct curl_slist *hdrs;
    struct timespec not_before;
    char err_body[1024];
    size_t err_len;
    ck_s3_get *next;
};

int ck_s3_pool_new(ck_s3_client *c, unsigned max_connections, ck_s3_pool **out);
/* Ends the I/O thread; GETs still queued complete with -ETIMEDOUT. */
void ck_s3_pool_free(ck_s3_pool *p);
/* Queues g; its done callback then runs exactly once, on the pool's
 * thread.  -errno (the thread cannot start) and no callback otherwise, so
 * a caller may submit while holding a lock its callback takes. */
int ck_s3_pool_submit(ck_s3_pool *p, ck_s3_get *g);

#endif
