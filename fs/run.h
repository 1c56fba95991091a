/* A training run as one mount (SPEC "Command line": a run directory whose
 * subdirectories are checkpoints).
 *
 * SOURCE is a run when it holds no checkpoint itself (no `.metadata`, no
 * `.safetensors` file) but at least one subdirectory that does.  Each such
 * subdirectory (a step) is a directory of the mount, named as on disk and
 * listed in natural order (step_2 before step_10); it is a checkpoint of
 * its own (tree, views, live reloads: live.h), opened on first use, so a
 * run of hundreds of steps mounts at once.  A subdirectory is a step while
 * it holds `.metadata` (DCP writes it last, by rename), a safetensors index
 * or `.safetensors` files; names starting with '.' and symlinks are not
 * steps.  A step whose checkpoint cannot be opened is logged once and not
 * shown until its marker changes.  At most FS_RUN_OPEN_MAX steps stay
 * open beyond those in use: opening another closes the one least recently
 * used (it opens again when next used). */
#ifndef CKPTFS_RUN_H
#define CKPTFS_RUN_H

#include <stdbool.h>
#include <sys/stat.h>
#include "mount.h"

#define FS_RUN_OPEN_MAX 16

/* 1 if dir is a run directory as above, else 0. */
int fs_run_detect(const char *dir);
int fs_run_new(fs_root *root, const char *dir, fs_run **out);
void fs_run_free(fs_run *r);

/* The source of step name if it is a step now (looked at on disk always
 * when force, else at most every FS_SOURCE_CHECK_MS), with the attributes
 * its directory shows in *st; NULL if not. */
fs_source *fs_run_step(fs_run *r, const char *name, bool force, struct stat *st);
/* Rescans the run and calls fill for every step shown, in order. */
int fs_run_list(fs_run *r, int (*fill)(void *ctx, const char *name, const struct stat *st),
                void *ctx);
/* Attributes of the run's root directory. */
void fs_run_root_stat(fs_run *r, struct stat *st);

#endif
