/* READDIR and READDIRPLUS replies (ll_readdir.c). */
#ifndef CKPTFS_LL_READDIR_H
#define CKPTFS_LL_READDIR_H

#include <fuse_lowlevel.h>
#include "inode_table.h"
#include "ops.h"

/* An open directory of an rw mount: its listing as it was at the first
 * readdir, so later pieces of one listing agree while files come and go.
 * Read-only mounts have none (no opendir, see ll_ops.c): their snapshots
 * list the same entries every time. */
typedef struct fs_dir_handle fs_dir_handle;
int fs_dir_handle_new(fs_dir_handle **out);
void fs_dir_handle_free(fs_dir_handle *d);

/* One reply of at most size bytes for the directory at dir, starting at
 * entry off (0 ".", 1 "..", then the entries in order), in *buf (malloc'd)
 * and *len.  With plus, entries with attributes count one lookup each. */
int fs_ll_readdir(fuse_req_t req, fs_root *r, const fs_path_ops *ops, const fs_ipath *dir,
                  fs_dir_handle *d, size_t size, off_t off, bool plus, char **buf, size_t *len);

#endif
