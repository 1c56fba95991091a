/* /.ckptfs/hf: the checkpoint as a HuggingFace model directory, built from
 * headers alone.
 *
 * Layout, and why:
 * - The keys taken are every key, or with -o hf_prefix=P those whose FQN
 *   starts with "P." (P. removed from the name).  Keys safetensors cannot
 *   hold (bytes entries, dtypes it has no name for, unreadable keys, the
 *   name "__metadata__") are left out and listed, with the reason, in the
 *   first shard's __metadata__["ckptfs.skipped"] (a JSON string, since
 *   safetensors metadata values are strings) and in the index's
 *   metadata["ckptfs.skipped"] (a JSON array).
 * - Tensors are laid out in name order (strcmp of the names shown, which
 *   is the FQN order) and cut greedily into shards: a shard is closed when
 *   the next tensor would take the shard *file* (header included) past
 *   -o hf_shard; a tensor that alone exceeds it gets a shard of its own.
 *   Name order makes the layout a function of the key set, dtypes, shapes
 *   and options only: the same checkpoint and options always give the same
 *   names and bytes, however the checkpoint was sharded or saved.
 * - One shard is "model.safetensors" with no index (what save_pretrained
 *   writes); more are "model-%05u-of-%05u.safetensors" plus
 *   "model.safetensors.index.json" with metadata.total_size (the tensor
 *   bytes, headers excluded, as transformers counts it) and weight_map.
 * - hf_dir files are added by name; a name the generated layout uses or
 *   could use (model.safetensors, model.safetensors.index.json,
 *   model-N-of-M.safetensors) is not taken from hf_dir, so stale weights of
 *   another model never mix with these. */
#ifndef CKPTFS_VIEW_HF_H
#define CKPTFS_VIEW_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "hf_dir.h"
#include "view_safetensors.h"

typedef enum { FS_HF_SHARD, FS_HF_INDEX, FS_HF_EXTRA } fs_hf_file_kind;

typedef struct {
    char *name;
    fs_hf_file_kind kind;
    size_t index; /* FS_HF_SHARD: into shards; FS_HF_EXTRA: into the hf_dir files */
    uint64_t size;
} fs_hf_file;

typedef struct {
    fs_st_view *shards;
    size_t nshards;
    char *index_json; /* NULL with one shard */
    size_t index_len;
    fs_hf_file *files; /* sorted by name */
    size_t nfiles;
} fs_hf_view;

typedef struct {
    const char *prefix;  /* NULL: every key */
    uint64_t shard_bytes;
    ck_dtype view_dtype; /* -o dtype= */
    const fs_hf_dir *extra; /* may be NULL */
} fs_hf_opts;

int fs_hf_view_build(const ck_checkpoint *ck, const fs_hf_opts *o, fs_hf_view *out);
void fs_hf_view_clear(fs_hf_view *v);
const fs_hf_file *fs_hf_view_find(const fs_hf_view *v, const char *name);
/* true for the names the generated layout uses or could use */
bool fs_hf_name_reserved(const char *name);

#endif
