/* One DCP item: a torch.save archive holding one tensor.  Reads data.pkl's
 * _rebuild_tensor_v2/_v3 call to learn how data/0's bytes map to elements. */
#ifndef CKPT_TORCH_ITEM_H
#define CKPT_TORCH_ITEM_H

#include <pthread.h>
#include <stdbool.h>
#include "byte_source.h"
#include "dtype.h"

#define CK_MAX_DIMS 32
#define CK_MAX_DATA_PKL (16u << 20) /* refuse larger data.pkl members */

typedef struct {
    uint64_t data_offset;    /* data/0 bytes start here within the item */
    uint64_t data_length;    /* data/0 length in bytes */
    ck_dtype dtype;
    uint64_t storage_offset; /* in elements */
    uint32_t ndim;
    uint64_t size[CK_MAX_DIMS];
    int64_t stride[CK_MAX_DIMS]; /* in elements */
} ck_torch_item;

/* data.pkl members parsed lately, with what they said.  DCP writes one
 * archive per chunk, and the chunks of a tensor carry byte-identical
 * data.pkl (dtype, shape, storage key): a tensor in 10,000 chunks would
 * parse the same pickle 10,000 times.  A member equal, byte for byte, to
 * one remembered here is not parsed again, and its CRC-32 is known.  The
 * lock covers only copies and compares, never a read. */
#define CK_STORAGE_KEY_MAX 64 /* torch writes small decimal numbers */
#define CK_PKL_MEMO_SLOTS 4
#define CK_PKL_MEMO_BYTES 1024u /* larger members are parsed every time */
typedef struct {
    uint32_t len, crc;
    char key[CK_STORAGE_KEY_MAX + 1]; /* the storage key data.pkl names */
    ck_torch_item item;     /* data_offset/data_length unset */
    uint8_t bytes[CK_PKL_MEMO_BYTES];
} ck_pkl_memo_slot;

typedef struct {
    pthread_mutex_t lock;
    uint32_t used, next; /* slots filled; the one replaced next */
    ck_pkl_memo_slot slot[CK_PKL_MEMO_SLOTS];
} ck_pkl_memo;

void ck_pkl_memo_init(ck_pkl_memo *m);
void ck_pkl_memo_destroy(ck_pkl_memo *m);

/* Parses the archive in src.  Checks that every element the size/stride/
 * storage_offset can address lies inside data/0 (else -EINVAL with err set:
 * "data.pkl describes 400 bytes but data/0 holds 200").  Returns 0 or -errno. */
int ck_torch_item_parse(const ck_byte_source *src, ck_torch_item *out, char *err, size_t errlen);

/* ck_torch_item_parse with a memo of data.pkl members (NULL: none). */
int ck_torch_item_parse_memo(const ck_byte_source *src, ck_pkl_memo *memo, ck_torch_item *out,
                             char *err, size_t errlen);

/* True when the chunk's row-major image is one contiguous run of data/0,
 * starting at data_offset + storage_offset * element size. */
bool ck_torch_item_is_contiguous(const ck_torch_item *it);

/* Copies the tensor's elements in row-major order from a fully decoded item
 * (mem, len) into dst (numel * elsize bytes).  For strided items. */
int ck_torch_item_gather(const ck_torch_item *it, const uint8_t *item, uint64_t item_len,
                         uint8_t *dst, uint64_t dst_len);

#endif
