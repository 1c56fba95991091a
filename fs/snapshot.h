/* Snapshots: one state of one checkpoint (model, tree, views) as an
 * fs_mount, reference counted.  A read-only snapshot never changes once
 * built; each request and open file pins the one it started on, so a new
 * state can be swapped in (live.h) while old readers finish on theirs. */
#ifndef CKPTFS_SNAPSHOT_H
#define CKPTFS_SNAPSHOT_H

#include "mount.h"

/* Opens the checkpoint at dir (opts->rw && opts->create: may create it)
 * and builds its tree and views.  The snapshot borrows opts' strings, with
 * its opts.source set to dir.  refs = 1.  0 or -errno with one line in err. */
int fs_snapshot_open(const fs_options *opts, const char *dir, uint64_t gen, fs_mount **out,
                     char *err, size_t errlen);
fs_mount *fs_snapshot_ref(fs_mount *m);
/* Frees the snapshot with its last reference (NULL is a no-op). */
void fs_snapshot_unref(fs_mount *m);

#endif
