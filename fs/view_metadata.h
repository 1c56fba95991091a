/* /.ckptfs/metadata.json: the whole checkpoint's metadata as one JSON
 * document, for jq:
 * {"source", "kind": "dcp"|"safetensors"|"dcp_hf", "version",
 *  "keys": {fqn: {"kind": "tensor", "dtype", "shape", "numel", "nbytes",
 *                 "chunks": [{"offsets", "sizes", "file", "offset",
 *                             "length", "transforms", "format"}]}
 *              | {"kind": "bytes", "file", "offset", "length",
 *                 "transforms", "format"}}}
 * A key that cannot be read also has "error" (the reason). */
#ifndef CKPTFS_VIEW_METADATA_H
#define CKPTFS_VIEW_METADATA_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "ckpt.h"

/* The document as text ending in a newline; *out is malloc'd. */
int fs_metadata_json(const ck_checkpoint *ck, char **out, size_t *len);

/* One key's entry of the document (also usable for xattrs); NULL if out
 * of memory. */
cJSON *fs_key_metadata_json(const ck_checkpoint *ck, const ck_key *k);
/* One chunk's {"offsets", "sizes", "file", "offset", "length",
 * "transforms", "format"} (offsets/sizes only for tensors). */
cJSON *fs_chunk_metadata_json(const ck_checkpoint *ck, const ck_key *k, const ck_chunk *c);

#endif
