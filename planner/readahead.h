/* Read-ahead across chunk and file boundaries.  The kernel reads ahead
 * within one shard file as a reader walks it, but a tensor's bytes come
 * from many chunks in many files, and a reader walking the tensor walks
 * each file in small, interleaved steps: the disk sees one small request
 * at a time.  After each sequential read of a key, the next window of the
 * tensor is planned like a read and its file ranges are handed to the
 * kernel (posix_fadvise WILLNEED), which fetches them in the background
 * while the reader is still busy with the current bytes. */
#ifndef CKPT_READAHEAD_H
#define CKPT_READAHEAD_H

#include <stdint.h>
#include "ckpt.h"

/* How far ahead of a sequential reader the file ranges are requested. */
#define CK_READAHEAD_WINDOW (16ull << 20)

/* Called after a read of bytes [off, off+len) of key: when the read
 * continues the key's sequential frontier (or starts the key), advises the
 * file ranges of the next window.  Best effort: never fails, never reads. */
void ck_readahead_after(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint64_t len);

#endif
