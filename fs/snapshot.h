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
/* A snapshot of ck and tree (both owned by it from now on, freed on
 * failure too) with the options and write state of like, and views of
 * its own.  0 or -ENOMEM. */
int fs_snapshot_wrap(const fs_mount *like, ck_checkpoint *ck, fs_tree *tree, fs_mount **out);
fs_mount *fs_snapshot_ref(fs_mount *m);

/* -o rw: the mount serving first (whose reference it takes) until a
 * commit publishes the next state.  0 or -ENOMEM. */
int fs_rw_mount_new(fs_mount *first, fs_mount **out);
/* The state m serves, pinned (fs_snapshot_unref it): m itself for a
 * snapshot, an rw mount's current one.  Never waits for I/O. */
fs_mount *fs_rw_pin(fs_mount *m);
/* Makes next (whose reference it takes) the rw mount's state; the old one
 * goes with its last pin. */
void fs_rw_publish(fs_mount *m, fs_mount *next);
/* Frees the snapshot with its last reference (NULL is a no-op). */
void fs_snapshot_unref(fs_mount *m);

#endif
