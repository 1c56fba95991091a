/* Telling the kernel what a new state made stale.  Read-only mounts let
 * the kernel cache names and attributes for an hour; when a checkpoint's
 * state is replaced (live.h) or a run's step appears or goes (run.h), the
 * entries it holds for the old names are invalidated.
 *
 * From a thread of its own: an invalidation waits for kernel locks that a
 * request in progress (the very lookup or open that found the new state)
 * may hold, so sending it from a request thread could deadlock. */
#ifndef CKPTFS_NOTIFY_H
#define CKPTFS_NOTIFY_H

#include <fuse_lowlevel.h>
#include "inode_table.h"
#include "mount.h"

/* it: what the kernel holds (inode_table.h), which is what gets invalidated */
int fs_notifier_start(struct fuse_session *se, fs_itable *it, fs_notifier **out);
/* Sends what is queued, then stops the thread and frees n. */
void fs_notifier_stop(fs_notifier *n);
/* A state of the checkpoint under prefix ("" or "/step_1000") replaced old
 * (NULL: there was none, nothing to invalidate): every inode the kernel
 * holds there loses its attributes, cached pages and cached listing.
 * Then, after every job queued before it too, raises *settled to gen (see
 * live.h).  n may be NULL (no thread): *settled is raised at once. */
void fs_notify_snapshot(fs_notifier *n, const char *prefix, fs_mount *old,
                        _Atomic uint64_t *settled, uint64_t gen);
/* The root's entry name (a step that appeared or went), and the root's
 * cached listing. */
void fs_notify_root_entry(fs_notifier *n, const char *name);

#endif
