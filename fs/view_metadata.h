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
#include <stdint.h>
#include <cjson/cJSON.h>
#include "ckpt.h"

/* The document (cJSON_Print's text and a newline), produced by offset: a
 * read generates only the keys it covers, so a 300,000-key document never
 * sits in memory.  Init prints each key once for the offsets of their
 * texts and snapshots what may change (chunk formats found on first
 * read); reads must pass the checkpoint init saw. */
typedef struct {
    char *head, *tail;     /* before the first key's text, after the last */
    size_t head_len, tail_len;
    size_t nkeys;
    uint64_t *ends;        /* per key: where its text (and ",\n") ends */
    uint64_t *chunk_base;  /* nkeys + 1: key i's chunks are bits [base[i], base[i+1]) */
    uint8_t *raw;          /* per chunk: stored raw (else torch.save) */
    uint64_t size;
} fs_metadata_stream;

int fs_metadata_stream_init(fs_metadata_stream *s, const ck_checkpoint *ck);
void fs_metadata_stream_clear(fs_metadata_stream *s);
/* Bytes [off, off + len) of the document (fewer at its end). */
int fs_metadata_stream_read(const fs_metadata_stream *s, const ck_checkpoint *ck, uint64_t off,
                            void *dst, size_t len, size_t *got);

/* One key's entry of the document (also usable for xattrs); NULL if out
 * of memory. */
cJSON *fs_key_metadata_json(const ck_checkpoint *ck, const ck_key *k);
/* One chunk's {"offsets", "sizes", "file", "offset", "length",
 * "transforms", "format"} (offsets/sizes only for tensors). */
cJSON *fs_chunk_metadata_json(const ck_checkpoint *ck, const ck_key *k, const ck_chunk *c);

#endif
