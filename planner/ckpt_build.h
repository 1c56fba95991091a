/* Internal to planner/: the source-specific builders ck_open() calls, and
 * the helpers they share (ckpt_build.c, which knows nothing of ckpt.c).
 * Each fills ck->keys/nkeys and ck->files/nfiles (allocated from
 * ck->arena; keys in any order, ck_open sorts and checks them) and sets
 * ck->kind.  ck->storage is already open on the root (storage.h). */
#ifndef CKPT_CKPT_BUILD_H
#define CKPT_CKPT_BUILD_H

#include "ckpt.h"

/* DCP: parse root/.metadata (dcp_metadata.c); whole_tree: from the whole
 * value tree, never streamed (ck_open_opts.whole_tree_metadata). */
int ck_build_dcp(ck_checkpoint *ck, bool whole_tree, char *err, size_t errlen);
/* Safetensors (st_source.c): `file` is the name of one .safetensors file in
 * the root directory, or NULL for every *.safetensors there (using
 * model.safetensors.index.json when present to check completeness).
 * DCP_SHARDING_INFO pieces become chunks of one key (kind CK_SRC_DCP_HF). */
int ck_build_safetensors(ck_checkpoint *ck, const char *file, char *err, size_t errlen);

/* Registers a data file path (relative, already validated) and returns its
 * index; the same path twice gives the same index.  -EINVAL for paths that
 * are absolute, contain "..", or are empty. */
int ck_add_file(ck_checkpoint *ck, const char *relpath, uint32_t *index);
/* Drops every file ck_add_file added (none opened yet): a reader starting
 * over adds them again in its own order. */
void ck_forget_files(ck_checkpoint *ck);

/* Frees what building needed beyond the model (the path -> file table). */
void ck_build_done(ck_checkpoint *ck);

/* Sorts ck->keys by fqn so ck_find_key works (ck_open sorts again). */
void ck_sort_keys(ck_checkpoint *ck);
/* Sets numel and nbytes from shape and dtype; -EOVERFLOW if they overflow,
 * -EINVAL for an unknown dtype. */
int ck_key_compute_size(ck_key *k);

#endif
