/* The decode workers (see decode_ahead.h): a fixed ring of requests under one
 * mutex, a few threads started on the first request.  The decode itself
 * runs with no lock held. */
#include "decode_ahead.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "chunk_reader.h"
#include "ckpt.h"

#define QUEUE_CAP 64u
#define MAX_WORKERS 4

typedef struct {
    uint32_t key, chunk;
} request;

struct ck_decode_ahead_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;
    request q[QUEUE_CAP];
    uint32_t head, n;
    int stop;
    int nworkers;
    pthread_t workers[MAX_WORKERS];
    ck_checkpoint *ck;
};

static void *worker_main(void *arg)
{
    ck_decode_ahead_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->n == 0)
            pthread_cond_wait(&p->work, &p->lock);
        if (p->stop)
            break;
        request r = p->q[p->head];
        p->head = (p->head + 1) % QUEUE_CAP;
        p->n--;
        pthread_mutex_unlock(&p->lock);
        ck_checkpoint *ck = p->ck;
        if (r.key < ck->nkeys && r.chunk < ck->keys[r.key].nchunks)
            (void)ck_chunk_warm(ck, &ck->keys[r.key], &ck->keys[r.key].chunks[r.chunk]);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

int ck_decode_ahead_width(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
}

/* Creates the queue and its workers, ck->decode_width of them.  As
 * many as the CPUs: a reader of decoded chunks mostly waits for decodes
 * (its copies to the kernel take a fraction of a decode's time), so with
 * one fewer, a 2-core machine decoded one chunk at a time (zstd first read
 * 0.84-0.89 s, against 0.70-0.74 s with two, 512 MiB in 64 MiB chunks).
 * Under ck->lock. */
static ck_decode_ahead_pool *start_locked(ck_checkpoint *ck)
{
    ck_decode_ahead_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    p->ck = ck;
    int want = ck->decode_width > 0 ? ck->decode_width : 1;
    for (int i = 0; i < want; i++)
        if (pthread_create(&p->workers[p->nworkers], NULL, worker_main, p) == 0)
            p->nworkers++;
    if (p->nworkers == 0) {
        pthread_cond_destroy(&p->work);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

void ck_decode_ahead(ck_checkpoint *ck, uint32_t key, uint32_t chunk)
{
    ck_decode_ahead_pool *p = atomic_load_explicit(&ck->decode_pool, memory_order_acquire);
    if (!p) {
        pthread_mutex_lock(&ck->lock);
        p = atomic_load_explicit(&ck->decode_pool, memory_order_relaxed);
        if (!p && !ck->decode_pool_failed) {
            p = start_locked(ck);
            if (p)
                atomic_store_explicit(&ck->decode_pool, p, memory_order_release);
            else
                ck->decode_pool_failed = 1; /* decode in the foreground from now on */
        }
        pthread_mutex_unlock(&ck->lock);
        if (!p)
            return;
    }
    pthread_mutex_lock(&p->lock);
    int queued = 0;
    for (uint32_t i = 0; i < p->n && !queued; i++) {
        const request *r = &p->q[(p->head + i) % QUEUE_CAP];
        queued = r->key == key && r->chunk == chunk;
    }
    if (!queued && !p->stop && p->n < QUEUE_CAP) {
        p->q[(p->head + p->n) % QUEUE_CAP] = (request){ .key = key, .chunk = chunk };
        p->n++;
        pthread_cond_signal(&p->work);
    }
    pthread_mutex_unlock(&p->lock);
}

void ck_decode_ahead_stop(ck_checkpoint *ck)
{
    ck_decode_ahead_pool *p = atomic_exchange(&ck->decode_pool, NULL);
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->workers[i], NULL);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
