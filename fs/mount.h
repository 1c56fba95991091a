/* The mounted checkpoint: the only state the daemon has. */
#ifndef CKPTFS_MOUNT_H
#define CKPTFS_MOUNT_H

#include <pthread.h>
#include "ckpt.h"
#include "options.h"
#include "tree.h"

typedef struct fs_views fs_views; /* views.c */
typedef struct fs_wstate fs_wstate; /* write_state.c: pending writes (rw mounts) */

typedef struct {
    ck_checkpoint *ck;
    fs_tree *tree;
    fs_options opts;
    fs_views *views;
    /* Held shared by every operation that reads ck/tree, exclusively by a
     * commit that replaces them (rw mounts). */
    pthread_rwlock_t lock;
    fs_wstate *ws; /* rw mounts only */
} fs_mount;

#endif
