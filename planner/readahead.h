/* Read-ahead across chunk and file boundaries.  The kernel reads ahead
 * within one shard file as a reader walks it, and an object store's
 * backend within one object, but a tensor's bytes come from many chunks in
 * many files, and a reader walking the tensor walks each file in small,
 * interleaved steps: the disk sees one small request at a time, the store
 * one round trip at a time.  After each sequential read of a key, the next
 * window of the tensor is planned like a read and its file ranges are
 * handed to the storage (ck_file_prefetch: posix_fadvise WILLNEED for local
 * files, background ranged GETs for object stores), which fetches them
 * while the reader is still busy with the current bytes; zstd chunks of
 * the window are decoded ahead (decode_ahead.h). */
#ifndef CKPT_READAHEAD_H
#define CKPT_READAHEAD_H

#include <stdint.h>
#include "ckpt.h"

/* How far ahead of a sequential reader the file ranges are requested:
 * local files, and object stores (whose round trips want more in flight). */
#define CK_READAHEAD_WINDOW (16ull << 20)
#define CK_READAHEAD_WINDOW_REMOTE (32ull << 20)

/* Called after a read of bytes [off, off+len) of key: when the read
 * continues the key's sequential frontier (or starts the key), requests the
 * file ranges of the window after it.  Best effort: never fails, never
 * waits for I/O. */
void ck_readahead(ck_checkpoint *ck, const ck_key *key, uint64_t off, uint64_t len);

#endif
