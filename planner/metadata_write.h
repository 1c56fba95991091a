/* Writing a DCP `.metadata`: the pickled Metadata dataclass, protocol 4.
 * A commit passes the dialect of the metadata it replaces (dcp_dialect.h):
 * class modules, Metadata's fields and their order, TensorProperties,
 * planner_data and storage_meta then come back as they were read, so a
 * torch 1.13 checkpoint stays one.  Without a dialect (a new checkpoint)
 * it writes what torch 2.x writes (see the fixtures' .metadata.dis.txt):
 *   torch.distributed.checkpoint.metadata: Metadata, TensorStorageMetadata,
 *     TensorProperties (tuple state: dtype, _get_layout('torch.strided'),
 *     False, _MEM_FORMAT_ENCODING(0), False), ChunkStorageMetadata,
 *     BytesStorageMetadata, MetadataIndex, StorageMeta
 *   torch.distributed.checkpoint.filesystem: _StorageInfo
 *   torch: Size and the dtype globals. */
#ifndef CKPT_METADATA_WRITE_H
#define CKPT_METADATA_WRITE_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "dcp_dialect.h"

/* Where one item lives: a _StorageInfo. */
typedef struct {
    const char *relative_path;
    uint64_t offset, length;
    uint32_t transforms; /* CK_TF_ZSTD -> ['stream.zstd/1']; 0 -> no descriptors */
} ck_md_storage;

typedef struct {
    const uint64_t *offsets, *sizes; /* ndim entries each (tensors) */
    ck_md_storage storage;
} ck_md_chunk;

typedef struct {
    const char *fqn;
    ck_key_kind kind;
    ck_dtype dtype;                  /* tensors */
    uint32_t ndim;
    const uint64_t *shape;
    uint32_t nchunks;                /* bytes keys: exactly 1 */
    const ck_md_chunk *chunks;
    /* planner_data entry: CK_PD_NONE -> None, CK_PD_TUPLE/LIST -> the path;
     * CK_PD_ABSENT -> no entry, unless planner_path is set (then a tuple) */
    uint8_t planner_kind;
    char *const *planner_path;
    const uint8_t *planner_path_is_int; /* may be NULL: all strings */
    uint32_t planner_path_len;
    /* tensors: 1 + index of its TensorProperties in the dialect's table
     * (dtype replaced when it differs), or 0: a new key's, which follow
     * the checkpoint's (requires_grad and pin_memory false) */
    uint32_t props_id;
} ck_md_key;

typedef struct {
    const ck_md_key *keys;
    size_t nkeys;
    /* the keys' order in state_dict_metadata: nkeys indices; NULL: as given */
    const size_t *order;
    /* what the replaced metadata was written with; NULL: torch 2.x's */
    const ck_dcp_dialect *dialect;
    /* StorageMeta: without a dialect, storage_meta is None when
     * checkpoint_id is NULL; with one, the kept storage_meta gets save_id */
    const char *checkpoint_id;
    const char *save_id;
} ck_md;

/* Pickles md into a malloc'd buffer.  0, -EINVAL (a key that cannot be
 * described: bad dtype, chunk rank, transform CK_TF_UNKNOWN, bytes key
 * without exactly one chunk) with err set, or -ENOMEM. */
int ck_metadata_write(const ck_md *md, uint8_t **out, size_t *len, char *err, size_t errlen);

/* The .metadata a commit that changes nothing would write for ck: its keys
 * in their state_dict_metadata order, chunks, planner paths and dialect as
 * read.  0, -EINVAL (as ck_metadata_write, or md_order not a permutation)
 * with err set, or -ENOMEM. */
int ck_metadata_write_unchanged(const ck_checkpoint *ck, const char *checkpoint_id,
                                const char *save_id, uint8_t **out, size_t *len, char *err,
                                size_t errlen);

#endif
