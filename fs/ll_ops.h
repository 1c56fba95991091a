/* The low-level FUSE operations (ll_ops.c) and what ll_readdir.c shares
 * with them. */
#ifndef CKPTFS_LL_OPS_H
#define CKPTFS_LL_OPS_H

#include <fuse_lowlevel.h>
#include "inode_table.h"
#include "mount.h"

extern const struct fuse_lowlevel_ops fs_ll_ops;

/* How long the kernel may keep names and attributes (seconds). */
double fs_ll_timeout(const fs_root *r);
/* parent's path joined with name, malloc'd; NULL for an empty or too long
 * name (over FUSE's 1024) or ENOMEM. */
char *fs_ll_child_path(const fs_ipath *parent, const char *name);
/* The entry for path with attributes st, counted as one kernel lookup.
 * 0 or -ENOMEM. */
int fs_ll_entry(fs_root *r, const char *path, const struct stat *st, struct fuse_entry_param *e);

#endif
