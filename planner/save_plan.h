/* The save planner: which chunks a set of changed bytes forces to be
 * rewritten, and how a chunk's row-major image is gathered from the
 * tensor's row-major image when it is written again.  A commit describes
 * the whole next state as one ck_save_key per key (planner/commit.h). */
#ifndef CKPT_SAVE_PLAN_H
#define CKPT_SAVE_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "torch_save_writer.h" /* ck_tensor_read_fn */

/* Bytes [lo, hi) of a key's content. */
typedef struct {
    uint64_t lo, hi;
} ck_byte_range;

/* A new tensor's item already in place: streamed writes put its payload at
 * data_off of an unnamed file in the checkpoint directory (O_TMPFILE), so
 * the commit writes only the archive around it (torch_save_writer.h's
 * frame), fsyncs it and gives it a name (linkat), instead of copying the
 * bytes into its own data file.  Until that name is linked nothing refers
 * to the file, and an unnamed file vanishes with its last descriptor, so a
 * crash before the commit leaves nothing behind. */
typedef struct {
    int fd;            /* the unnamed file, open for writing */
    uint64_t data_off; /* where the payload starts: ck_torch_save_tensor_data_offset */
    uint32_t crc;      /* CRC-32 of the payload (all numel x element size bytes) */
    uint8_t first[8];  /* its first bytes (zeros past the payload's end) */
    char name[96];     /* out: the name ck_commit linked it under ("" if none) */
    int linked;        /* out: 1 once a commit linked it, even if that commit failed and
                        * removed the name again: an unnamed file can be linked only once
                        * (the kernel clears I_LINKABLE), so a later commit copies it */
} ck_placed_item;

/* One key of the state a commit writes. */
typedef struct {
    const char *fqn;        /* its name in the new .metadata */
    const ck_key *old;      /* the committed key it continues (storage of unchanged chunks,
                             * planner path, transforms), or NULL for a new tensor */
    /* new tensors (old == NULL): dtype and shape; one chunk covers the tensor */
    ck_dtype dtype;
    uint32_t ndim;
    const uint64_t *shape;
    uint32_t transforms;    /* new tensors: CK_TF_ZSTD to compress their item */
    ck_placed_item *placed; /* new tensors: the item is in place already (transforms 0,
                             * local checkpoints only), or NULL */
    /* changed bytes of an old tensor's image: every chunk they touch is
     * written again; an old key with no ranges keeps all its storage */
    const ck_byte_range *dirty;
    size_t ndirty;
    /* an old bytes key whose payload is replaced by bytes_len new bytes */
    int rewrite_bytes;
    uint64_t bytes_len;
    /* the new content (tensor image or bytes payload), for what is written */
    ck_tensor_read_fn read;
    void *read_ctx;
} ck_save_key;

/* Sets rewrite[i] = 1 for every chunk i of key whose image holds a byte of
 * one of the ranges (tensor image bytes; any order, may overlap; clipped at
 * the tensor's size).  rewrite has key->nchunks entries and is not cleared.
 * Returns 0, -EINVAL (not a tensor), -EIO (a byte no chunk holds) or -ENOMEM. */
int ck_save_plan_chunks(const ck_key *key, const ck_byte_range *ranges, size_t n,
                        uint8_t *rewrite);

/* Bytes of a chunk's row-major image. */
int ck_chunk_image_len(const ck_key *key, const ck_chunk *c, uint64_t *len);

/* Fills dst with bytes [off, off+len) of chunk c's row-major image, taking
 * them from the tensor's image through read (maximal contiguous runs, so a
 * row-sharded chunk is one call).  0, -EINVAL (range outside the chunk) or
 * what read returned. */
int ck_chunk_image_read(const ck_key *key, const ck_chunk *c, uint64_t off, void *dst, size_t len,
                        ck_tensor_read_fn read, void *read_ctx);

/* The transforms a new key gets in ck: CK_TF_ZSTD when every tensor chunk
 * of the checkpoint is compressed (it was saved that way), else none. */
uint32_t ck_default_transforms(const ck_checkpoint *ck);

#endif
