/* Background decoding of the chunks a sequential reader will need next.
 * A zstd chunk is decoded by the first reader that touches it, and a
 * reader walking a tensor touches one chunk at a time: the decode of the
 * next chunk would only start when the reader arrives there.  Read-ahead
 * (readahead.c) therefore queues the decoded chunks of its window here,
 * and a few worker threads decode them into the decoded-chunk cache while
 * the reader is still copying the current one; the reader then finds them
 * cached, or waits for that one decode already under way (chunk_cache.h),
 * never decoding twice. */
#ifndef CKPT_DECODE_AHEAD_H
#define CKPT_DECODE_AHEAD_H

#include <stdint.h>

typedef struct ck_decode_ahead_pool ck_decode_ahead_pool;
struct ck_checkpoint;

/* Queues chunk `chunk` of key `key` (indexes into ck->keys and its chunks)
 * for decoding, starting the workers on first use.  Best effort: a full
 * queue or a failed thread start drops the request. */
void ck_decode_ahead(struct ck_checkpoint *ck, uint32_t key, uint32_t chunk);

/* How many chunks the workers decode at once (their number): the CPUs, at
 * most MAX_WORKERS.  Asks the system: ck_open keeps it in ck->decode_width. */
int ck_decode_ahead_width(void);

/* Stops the workers (waiting for the decodes in progress) and frees the
 * queue; safe when none were ever started. */
void ck_decode_ahead_stop(struct ck_checkpoint *ck);

#endif
