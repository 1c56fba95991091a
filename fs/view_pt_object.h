/* Non-tensor values of a .pt view (view_pt.h): a DCP bytes entry is a
 * torch.save archive of an object; its data.pkl is parsed by the
 * restricted reader and, if it holds only what torch's weights_only
 * unpickler accepts, written again inside the view's pickle, with the
 * storages of any tensors in it becoming records of the view. */
#ifndef CKPTFS_VIEW_PT_OBJECT_H
#define CKPTFS_VIEW_PT_OBJECT_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "pickle.h"
#include "pickle_write.h"
#include "view_pt.h"

#define FS_PT_BATCH 1000 /* pickle's SETITEMS/APPENDS batch */

/* One storage of a tensor inside the value. */
typedef struct {
    char *key;          /* the payload's storage key ("0") */
    uint64_t off, size; /* its record's bytes within the payload */
    uint32_t crc;       /* of those bytes (read at load) */
    size_t out;         /* its index in the view's tensors once emitted, else SIZE_MAX */
} fs_pt_storage;

typedef struct {
    pk_doc *doc;       /* NULL: not inlinable */
    const ck_key *key; /* the bytes entry */
    fs_pt_storage *st;
    size_t nst;
} fs_pt_object;

/* Reads and parses k's payload into o.  o->doc stays NULL (and 0 is
 * returned) when it cannot be inlined: unreadable, larger than 64 MiB,
 * or holding other classes.  -ENOMEM otherwise. */
int fs_pt_object_load(ck_checkpoint *ck, const ck_key *k, fs_pt_object *o);
void fs_pt_object_clear(fs_pt_object *o);
/* Emits o's value into w (protocol 2).  A storage met for the first time
 * becomes tensors[*ntensors] (in_payload, CRC preset) and *ntensors grows;
 * the caller has room for o->nst more.  0 or -ENOMEM. */
int fs_pt_object_emit(pkw *w, fs_pt_object *o, fs_pt_tensor *tensors, size_t *ntensors);

#endif
