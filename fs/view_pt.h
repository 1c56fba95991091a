/* DIR.pt and /.ckptfs/model.pt: a torch.save archive of the state dict
 * under a tree directory, nested as DCP's planner_data says (what
 * torch.distributed.checkpoint.format_utils.dcp_to_torch_save writes), so
 * torch.load(p, weights_only=True) and torch.load(p, mmap=True) read it.
 *
 * Only headers live in memory: data.pkl (the pickle of the nested dict, its
 * non-tensor values inlined), the zip local headers and small records.
 * Each tensor is one record data/N whose bytes are served through the load
 * planner at read time, aligned to 64 bytes as torch writes them.
 *
 * CRC-32s.  A zip member's CRC sits in its data descriptor (after its data)
 * and in the central directory (at the end of the file); torch never checks
 * them (it builds miniz with MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS; torch
 * 1.13 loads an archive whose CRCs are all zero), but zipfile, unzip and
 * other readers do, so they are exact.  A tensor record's CRC is learnt
 * without reading it where the checkpoint already holds it (each chunk's
 * item stores data/0's CRC; row bands are combined with crc32_combine), as
 * its bytes stream past in order (cp, cat), or else by reading the record
 * once when its descriptor or the central directory is first read; either
 * way it is kept for the life of the view (the snapshot). */
#ifndef CKPTFS_VIEW_PT_H
#define CKPTFS_VIEW_PT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "tree.h"
#include "view_key.h"
#include "zip_layout.h"

typedef enum { PT_SEG_MEM, PT_SEG_TENSOR, PT_SEG_DESCRIPTOR, PT_SEG_CENTRAL } fs_pt_seg_kind;

typedef struct {
    uint64_t begin, end; /* bytes of the view file */
    fs_pt_seg_kind kind;
    size_t arg; /* MEM: offset in head; TENSOR: tensor index; DESCRIPTOR: record */
} fs_pt_seg;

typedef struct {
    fs_key_ref ref;
    ck_dtype out_dtype; /* the record's dtype (see pt_tensor_read) */
    uint64_t nbytes;    /* the record's length */
    size_t record;      /* its zip entry */
    /* a storage of a tensor inside a non-tensor value: ref is that bytes
     * entry, the record its payload's bytes from payload_off on, as is */
    bool in_payload;
    uint64_t payload_off;
    bool crc_preset;    /* crc_value known at build (payload storages) */
    uint32_t crc_value;
    /* CRC learnt from reads in order (guarded by the view's lock) */
    uint64_t crc_next;
    uint32_t crc_running;
} fs_pt_tensor;

typedef struct {
    uint8_t *head;        /* local headers and small records, in file order */
    size_t head_len;
    fs_pt_seg *segs;
    size_t nsegs;
    ck_zip_entry *zip;    /* one per record, names in `names` */
    char *names;
    size_t nzip;
    ck_zip_summary sum;
    fs_pt_tensor *tensors;
    size_t ntensors;
    uint64_t size;
    pthread_mutex_t lock; /* the fields below */
    uint32_t *crc;        /* per record */
    bool *crc_known;
    uint8_t *central;     /* rendered once every CRC is known */
} fs_pt_view;

/* dir: a directory node of the tree (the root for /.ckptfs/model.pt).
 * Non-tensor keys are read (their payload's data.pkl parsed) here. */
int fs_pt_view_build(ck_checkpoint *ck, const fs_node *dir, ck_dtype view_dtype, fs_pt_view *out);
void fs_pt_view_clear(fs_pt_view *v);
int fs_pt_view_read(ck_checkpoint *ck, fs_pt_view *v, uint64_t off, void *dst,
                    size_t len, size_t *got);

#endif
