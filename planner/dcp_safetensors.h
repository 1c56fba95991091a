/* DCP items in the safetensors serialization format.
 *
 * `FileSystemWriter(serialization_format=SerializationFormat.SAFETENSORS)`
 * (torch >= 2.8) and NeMo AutoModel's backport of it write each data file's
 * tensors as one safetensors blob keyed by FQN, with DCP_SHARDING_INFO in its
 * `__metadata__`.  `.metadata` does not say so: its `_StorageInfo` is the
 * same dataclass as for torch.save items.  What it holds differs by writer:
 *   - torch: the rank's bytes entries first (raw torch.save archives), then
 *     the blob; every tensor item's offset is where the blob starts and its
 *     length the tensor's byte count;
 *   - NeMo: the blob at offset 0; every tensor item's offset is that of the
 *     tensor's own bytes (8 + header length + data offset).
 * So an item is recognised by its data file, as those writers leave it: a
 * safetensors header at offset 0 or at the item's own offset that names the
 * item's FQN, with the chunk's dtype, sizes and saved offsets, and whose
 * placement of the tensor is one of the two above.  Anything else is not
 * such an item (a torch.save archive is then read as before). */
#ifndef CKPT_DCP_SAFETENSORS_H
#define CKPT_DCP_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

/* For a tensor chunk of a DCP checkpoint, whose data file is file_size
 * bytes long (read through the checkpoint's storage); takes ck->lock for the per-file header
 * cache (chunk resolution itself runs unlocked).  item_head, when not NULL,
 * holds the item's first head_len bytes, already read: an item that cannot
 * start a safetensors header is then known without a read.  *found: whether
 * the item lies in a safetensors blob; if so, on success the chunk is laid
 * out as a direct range of raw bytes (format CK_ITEM_RAW).  Returns 0, or
 * -EIO / -ENOMEM with why set when the item is in a blob that disagrees with
 * the metadata.  When not found, note receives (or is left empty) the
 * reason a header that looked like safetensors was refused, to name if the
 * item then fails to read as a torch.save archive too. */
int ck_dcp_st_resolve(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t file_size,
                      const uint8_t *item_head, uint64_t head_len, bool *found, char *why,
                      size_t whylen, char *note, size_t notelen);

/* Whether the checkpoint's tensor items are stored in safetensors blobs
 * (what `-o rw` refuses), judged from one tensor item in each of its first
 * data files (a writer writes all files one way).  Data files that cannot
 * be read count as not. */
bool ck_dcp_st_in_use(ck_checkpoint *ck);

/* Frees what ck_dcp_st_resolve cached in ck (called by ck_close). */
void ck_dcp_st_free(ck_checkpoint *ck);

#endif
