/* The ranged-GET pool; see s3_pool.h.  Only the I/O thread touches the
 * multi handle and the easy handles; submitters only append to a queue
 * (under a mutex held for the append alone) and wake the thread. */
#include "s3_pool.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s3_xml.h"

/* A GET of a few MiB on a healthy store ends in well under this. */
#define GET_TIMEOUT_MS 30000L
#define RECV_BUFFER (512L << 10)

struct ck_s3_pool {
    ck_s3_client *client;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    ck_s3_get *queue; /* submitted or waiting for a retry; guarded by mu */
    int stop;         /* guarded by mu */
    int running;      /* thread started (in process pid) */
    pid_t pid;
    ck_s3_get *active; /* transfers in the multi handle: the I/O thread's alone */
};

static void now(struct timespec *t)
{
    clock_gettime(CLOCK_MONOTONIC, t);
}

static int64_t ms_until(const struct timespec *t)
{
    struct timespec n;
    now(&n);
    return (int64_t)(t->tv_sec - n.tv_sec) * 1000 + (t->tv_nsec - n.tv_nsec) / 1000000;
}

static size_t on_data(char *p, size_t size, size_t n, void *u)
{
    ck_s3_get *g = u;
    size_t len = size * n;
    long status = 0;
    curl_easy_getinfo(g->h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 206 && status != 200) {
        /* an error document: keep its start for the <Code> */
        size_t room = sizeof g->err_body - 1 - g->err_len;
        size_t take = len < room ? len : room;
        memcpy(g->err_body + g->err_len, p, take);
        g->err_len += take;
        g->err_body[g->err_len] = '\0';
        return len;
    }
    if (status == 200 && g->off != 0)
        return 0; /* the whole object instead of a range: refuse it */
    if (g->got > g->len || len > g->len - g->got)
        return 0; /* more than asked for: never write past the buffers */
    g->sink(g->ctx, g->got, p, len);
    g->got += len;
    return len;
}

static int start(ck_s3_pool *p, ck_s3_get *g)
{
    char range[64], im[200];
    const char *extra[3] = { range, NULL, NULL };
    snprintf(range, sizeof range, "Range: bytes=%" PRIu64 "-%" PRIu64, g->off, g->off + g->len - 1);
    if (g->if_match) {
        snprintf(im, sizeof im, "If-Match: %s", g->if_match);
        extra[1] = im;
    }
    g->got = 0;
    g->err_len = 0;
    g->err_body[0] = '\0';
    g->code[0] = '\0';
    g->status = 0;
    g->h = curl_easy_init();
    if (!g->h)
        return -ENOMEM;
    int rc = ck_s3_easy_setup(p->client, g->h, "GET", g->url, extra, &g->hdrs);
    if (rc) {
        curl_easy_cleanup(g->h);
        g->h = NULL;
        return rc;
    }
    curl_easy_setopt(g->h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(g->h, CURLOPT_WRITEDATA, g);
    curl_easy_setopt(g->h, CURLOPT_PRIVATE, g);
    curl_easy_setopt(g->h, CURLOPT_TIMEOUT_MS, GET_TIMEOUT_MS);
    /* fewer, larger recv()s and wake-ups than curl's default 16 KiB */
    curl_easy_setopt(g->h, CURLOPT_BUFFERSIZE, RECV_BUFFER);
    g->tries++;
    if (curl_multi_add_handle(p->multi, g->h) != CURLM_OK) {
        curl_slist_free_all(g->hdrs);
        curl_easy_cleanup(g->h);
        g->h = NULL;
        g->hdrs = NULL;
        return -ENOMEM;
    }
    g->next = p->active;
    p->active = g;
    return 0;
}

static void requeue(ck_s3_pool *p, ck_s3_get *g, long delay_ms)
{
    now(&g->not_before);
    g->not_before.tv_sec += delay_ms / 1000;
    g->not_before.tv_nsec += (delay_ms % 1000) * 1000000L;
    if (g->not_before.tv_nsec >= 1000000000L) {
        g->not_before.tv_sec++;
        g->not_before.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->mu);
    g->next = p->queue;
    p->queue = g;
    pthread_mutex_unlock(&p->mu);
}

static void unlink_active(ck_s3_pool *p, ck_s3_get *g)
{
    for (ck_s3_get **pp = &p->active; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    g->next = NULL;
}

static void finish(ck_s3_pool *p, ck_s3_get *g, CURLcode res)
{
    unlink_active(p, g);
    g->curl = res;
    curl_easy_getinfo(g->h, CURLINFO_RESPONSE_CODE, &g->status);
    curl_multi_remove_handle(p->multi, g->h);
    curl_easy_cleanup(g->h);
    curl_slist_free_all(g->hdrs);
    g->h = NULL;
    g->hdrs = NULL;
    if (g->err_len)
        ck_xml_get(g->err_body, g->err_len, "Code", g->code, sizeof g->code);
    int ok = res == CURLE_OK && (g->status == 206 || (g->status == 200 && g->off == 0)) &&
             g->got == g->len;
    if (ok) {
        g->done(g, 0);
        return;
    }
    /* a short or oversized body from a 2xx is the store's fault, not the
     * network's: it is not retried */
    int bad_body = (res == CURLE_OK || res == CURLE_WRITE_ERROR) &&
                   (g->status == 206 || g->status == 200);
    if (!bad_body && ck_s3_retryable(g->status, res == CURLE_WRITE_ERROR ? CURLE_OK : res) &&
        g->tries < CK_S3_MAX_TRIES) {
        requeue(p, g, ck_s3_backoff_ms(g->tries));
        return;
    }
    int transient = !bad_body && ck_s3_retryable(g->status, res);
    g->done(g, transient ? -ETIMEDOUT : -EIO);
}

static void *io_thread(void *arg)
{
    ck_s3_pool *p = arg;
    for (;;) {
        ck_s3_get *ready = NULL;
        long wait_ms = 1000;
        pthread_mutex_lock(&p->mu);
        int stop = p->stop;
        ck_s3_get **pp = &p->queue;
        while (*pp) {
            ck_s3_get *g = *pp;
            int64_t ms = ms_until(&g->not_before);
            if (stop || ms <= 0) {
                *pp = g->next;
                g->next = ready;
                ready = g;
            } else {
                if (ms < wait_ms)
                    wait_ms = (long)ms;
                pp = &g->next;
            }
        }
        pthread_mutex_unlock(&p->mu);
        while (ready) {
            ck_s3_get *g = ready;
            ready = g->next;
            if (stop) {
                g->done(g, -ETIMEDOUT);
                continue;
            }
            if (start(p, g))
                g->done(g, -ETIMEDOUT);
        }
        int running = 0;
        curl_multi_perform(p->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(p->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            ck_s3_get *g = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&g);
            finish(p, g, m->data.result);
        }
        if (stop) {
            /* transfers still running end here, reported as failed */
            while (p->active) {
                ck_s3_get *g = p->active;
                p->active = g->next;
                curl_multi_remove_handle(p->multi, g->h);
                curl_easy_cleanup(g->h);
                curl_slist_free_all(g->hdrs);
                g->h = NULL;
                g->hdrs = NULL;
                g->done(g, -ETIMEDOUT);
            }
            break;
        }
        curl_multi_poll(p->multi, NULL, 0, (int)(wait_ms > 0 ? wait_ms : 1), NULL);
    }
    return NULL;
}

int ck_s3_pool_new(ck_s3_client *c, unsigned max_connections, ck_s3_pool **out)
{
    ck_s3_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->client = c;
    pthread_mutex_init(&p->mu, NULL);
    p->multi = curl_multi_init();
    if (!p->multi) {
        ck_s3_pool_free(p);
        return -ENOMEM;
    }
    curl_multi_setopt(p->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)max_connections);
    curl_multi_setopt(p->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_connections);
    curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    *out = p;
    return 0;
}

/* Under p->mu.  The thread starts with the first GET, and again in a
 * process that forked since (libfuse daemonizes after the mount-time
 * reads; threads do not survive fork, the queue is empty then). */
static int ensure_thread(ck_s3_pool *p)
{
    if (p->running && p->pid == getpid())
        return 0;
    p->active = NULL;
    int rc = pthread_create(&p->thread, NULL, io_thread, p);
    if (rc)
        return -rc;
    p->running = 1;
    p->pid = getpid();
    return 0;
}

void ck_s3_pool_free(ck_s3_pool *p)
{
    if (!p)
        return;
    if (p->running && p->pid == getpid()) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_mutex_unlock(&p->mu);
        curl_multi_wakeup(p->multi);
        pthread_join(p->thread, NULL);
    }
    if (p->multi)
        curl_multi_cleanup(p->multi);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int ck_s3_pool_submit(ck_s3_pool *p, ck_s3_get *g)
{
    g->tries = 0;
    g->not_before.tv_sec = 0;
    g->not_before.tv_nsec = 0;
    pthread_mutex_lock(&p->mu);
    int rc = ensure_thread(p);
    if (!rc) {
        g->next = p->queue;
        p->queue = g;
    }
    pthread_mutex_unlock(&p->mu);
    if (!rc)
        curl_multi_wakeup(p->multi);
    return rc;
}
