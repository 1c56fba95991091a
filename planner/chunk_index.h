/* A per-tensor index of its chunks: which chunk holds a given element, in
 * O(ndim * log n) whatever order .metadata lists the chunks in.
 *
 * DCP chunkings are almost always grids: every chunk boundary in one
 * dimension is a boundary for all chunks (row sharding, column sharding,
 * 2-D meshes, FSDP's flat shards, uneven last shards).  The index cuts each
 * dimension at every chunk boundary, which splits the tensor into cells
 * that each lie in exactly one chunk, and keeps a table cell -> chunk; a
 * lookup is one binary search per dimension and one table read.  Chunkings
 * whose boundaries would make too many cells (chunks staggered like
 * bricks) fall back to the chunks sorted by their start in the dimension
 * with the most distinct starts, searched by bisection and a short scan. */
#ifndef CKPT_CHUNK_INDEX_H
#define CKPT_CHUNK_INDEX_H

#include <stddef.h>
#include <stdint.h>
#include "arena.h"
#include "ckpt.h"

typedef struct ck_chunk_index ck_chunk_index;

/* Builds the index of key's chunks, allocated in arena when it is not NULL
 * (then it lives as long as the arena) or on the heap (free it with
 * ck_chunk_index_free).  The chunks must lie inside the shape.
 * Returns 0; -EINVAL with err set when two chunks overlap or some element
 * lies in no chunk (only detected for grid-shaped chunkings, see
 * ck_chunk_index_is_grid); -ENOMEM. */
int ck_chunk_index_build(ck_arena *arena, const ck_key *key, ck_chunk_index **out, char *err,
                         size_t errlen);
void ck_chunk_index_free(ck_chunk_index *ix);

/* 1 when the index is a grid table, whose build proved that the chunks tile
 * the tensor exactly; 0 for the sorted fallback, which proves nothing. */
int ck_chunk_index_is_grid(const ck_chunk_index *ix);

/* The chunk holding element idx (ndim coordinates), or -1 if none. */
long ck_chunk_index_find(const ck_chunk_index *ix, const ck_key *key, const uint64_t *idx);

#endif
