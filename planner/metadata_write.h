/* Writing a DCP `.metadata`: the pickled Metadata dataclass, protocol 4,
 * with the class paths torch 2.x writes (see the fixtures' .metadata.dis.txt)
 * so torch.distributed.checkpoint.load reads it:
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
    /* planner_data path; NULL: the FQN split at '.' (all strings) */
    char *const *planner_path;
    const uint8_t *planner_path_is_int; /* may be NULL: all strings */
    uint32_t planner_path_len;
} ck_md_key;

typedef struct {
    const ck_md_key *keys;
    size_t nkeys;
    /* StorageMeta; storage_meta is None when checkpoint_id is NULL */
    const char *checkpoint_id;
    const char *save_id;
} ck_md;

/* Pickles md into a malloc'd buffer.  0, -EINVAL (a key that cannot be
 * described: bad dtype, chunk rank, transform CK_TF_UNKNOWN, bytes key
 * without exactly one chunk) with err set, or -ENOMEM. */
int ck_metadata_write(const ck_md *md, uint8_t **out, size_t *len, char *err, size_t errlen);

#endif
