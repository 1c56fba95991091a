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
