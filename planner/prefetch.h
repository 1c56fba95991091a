/* Fetch-ahead along a key's load plan, for storages where a read is a
 * round trip (object stores): a key read sequentially has the bytes of its
 * next PREFETCH_BYTES -- in whichever files and chunks they live -- asked
 * for before they are needed.  Per-object read-ahead cannot see that the
 * next bytes of a row-sharded tensor are in the next rank's file. */
#ifndef CKPT_PREFETCH_H
#define CKPT_PREFETCH_H

#include <stdint.h>
#include "ckpt.h"

/* Called after a read of bytes [off, off + n) of key; never waits for
 * I/O.  A no-op for storages without prefetch (local directories). */
void ck_key_read_ahead(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint64_t n);

#endif
