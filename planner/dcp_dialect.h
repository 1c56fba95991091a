/* What of a DCP `.metadata` a commit carries over unchanged: the facts of
 * the torch version that wrote it, so an edit never turns a torch 1.13
 * checkpoint (classes under torch.distributed._shard.checkpoint, no
 * storage_meta, planner_data None) into a torch 2.x one or the reverse.
 *
 * Global facts live here: the module each class was pickled from,
 * Metadata's fields in the order read (with the values of those ckptfs
 * does not interpret kept as small standalone pickles), and the distinct
 * TensorProperties values seen (a checkpoint of 10^6 keys has a handful).
 * Per key, ck_key keeps only an index into that table (props_id) and its
 * planner_data entry (planner_kind, planner_path): a few bytes each. */
#ifndef CKPT_DCP_DIALECT_H
#define CKPT_DCP_DIALECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "pickle.h"

typedef enum {
    CK_MDC_METADATA,
    CK_MDC_TENSOR,   /* TensorStorageMetadata */
    CK_MDC_CHUNK,    /* ChunkStorageMetadata */
    CK_MDC_BYTES,    /* BytesStorageMetadata */
    CK_MDC_INDEX,    /* MetadataIndex */
    CK_MDC_STORAGE,  /* _StorageInfo */
    CK_MDC_STORAGE_META, /* StorageMeta (new checkpoints only: read ones are kept whole) */
    CK_MDC_COUNT
} ck_md_class;

typedef enum {
    CK_MDF_STATE_DICT,   /* state_dict_metadata: rebuilt from the keys */
    CK_MDF_PLANNER,      /* planner_data: rebuilt when a dict of paths, else kept */
    CK_MDF_STORAGE_DATA, /* storage_data: rebuilt */
    CK_MDF_STORAGE_META, /* storage_meta: kept, with a new save_id */
    CK_MDF_KEPT,         /* anything else (version, fields of newer torch): kept */
} ck_md_field_kind;

/* A value as a standalone protocol-4 pickle (pickle_copy.h). */
typedef struct {
    uint8_t *pkl;
    size_t len;
} ck_pickled;

typedef struct {
    char *name;
    ck_md_field_kind kind;
    ck_pickled value; /* CK_MDF_STORAGE_META, CK_MDF_KEPT, CK_MDF_PLANNER when kept */
} ck_md_field;

/* planner_data entry of one key. */
enum {
    CK_PD_ABSENT = 0, /* no entry */
    CK_PD_NONE,       /* the entry is None */
    CK_PD_TUPLE,      /* a tuple path (planner_path) */
    CK_PD_LIST,       /* a list path */
};

typedef struct ck_dcp_dialect {
    char *module[CK_MDC_COUNT]; /* as read; NULL where that class never appeared */
    ck_md_field *fields;
    uint32_t nfields;
    /* planner_data is a dict of per-key paths, rebuilt from the keys; when
     * false it is kept verbatim (None, as torch 1.13 writes, or what a
     * custom planner put there) */
    bool planner_is_dict;
    /* _StorageInfo states spell out transform_descriptors=None (torch
     * versions whose _StorageInfo has no __getstate__ dropping it) */
    bool storage_none_transforms;
    ck_pickled *props; /* distinct TensorProperties values */
    uint64_t *props_hash;
    const pk_value **props_seen; /* while parsing: the value each was first read as */
    uint64_t budget; /* values still to be encoded/compared for this document */
    uint32_t nprops, props_cap;
} ck_dcp_dialect;

struct ck_checkpoint;

/* A new, empty dialect in ck's arena (ck->dialect); NULL on out of memory. */
ck_dcp_dialect *ck_dialect_new(struct ck_checkpoint *ck);
/* Remembers the module obj's class was pickled from, the first time. */
int ck_dialect_note_class(struct ck_checkpoint *ck, ck_md_class cls, const pk_value *obj);
/* Interns one TensorProperties value: *id = 1 + its index in props. */
int ck_dialect_add_properties(struct ck_checkpoint *ck, const pk_value *props, uint32_t *id);
/* The parsed document is about to be freed: forget pointers into it. */
void ck_dialect_parse_done(struct ck_checkpoint *ck);
/* The values seen so far are about to be freed (a streamed batch), though
 * parsing goes on: forget them, and remember the next equal one instead. */
void ck_dialect_forget_seen(struct ck_checkpoint *ck);
/* Records Metadata's fields (its BUILD dict), keeping the values of those
 * not rebuilt.  planner_is_dict must be settled first. */
int ck_dialect_note_fields(struct ck_checkpoint *ck, const pk_value *fields);

/* The module to write class cls from: as read, or derived from the
 * Metadata module (torch 2.x's when d is NULL). */
const char *ck_dialect_module(const ck_dcp_dialect *d, ck_md_class cls);

/* How the checkpoint's planner paths look, computed once per commit:
 * split when every path is its FQN split at '.'. */
typedef struct {
    bool split;
} ck_planner_pattern;
void ck_planner_pattern_of(const struct ck_checkpoint *ck, ck_planner_pattern *pat);

/* The planner_data path for a key that had none under its name (new or
 * renamed), following its siblings (ck's keys, sorted, near fqn):
 *   - a key of as many '.'-components sharing the most leading ones with
 *     fqn: fqn is cut into elements as that key's FQN is cut into its path
 *     (int elements stay ints where fqn has a number there), so a rename of
 *     model.layers.0.w -> model.layers.5.w follows ('model', 'layers', 0, 'w');
 *   - else the longest path prefix of a key that matches fqn at a '.',
 *     then the rest as one element, or split at '.' when pat->split;
 *   - without siblings: (fqn,).
 * Elements and flags are malloc'd (free with ck_planner_path_free). */
int ck_planner_path_for(const struct ck_checkpoint *ck, const ck_planner_pattern *pat,
                        const char *fqn, char ***path, uint8_t **is_int, uint32_t *len);
void ck_planner_path_free(char **path, uint8_t *is_int, uint32_t len);

#endif
