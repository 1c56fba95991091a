/* The mounted checkpoint: the only state the daemon has. */
#ifndef CKPTFS_MOUNT_H
#define CKPTFS_MOUNT_H

#include <pthread.h>
#include <stdatomic.h>
#include "ckpt.h"
#include "options.h"
#include "tree.h"

/* st_blksize: readers size their buffers by it.  Files say 1 MiB, so that
 * cp, dd and Python's io read and write in the largest FUSE requests.
 * Directories say 4 KiB: glibc's opendir sizes its getdents buffer by
 * st_blksize (up to 1 MiB), and the kernel allocates a reply buffer of
 * that size for every READDIRPLUS (vmalloc'd past a few pages), which made
 * find over 100,000 directories spend most of its time in page allocation
 * and vmap; at 4 KiB glibc uses its 32 KiB default. */
#define FS_FILE_BLKSIZE (1 << 20)
#define FS_DIR_BLKSIZE 4096

typedef struct fs_views fs_views; /* views.c */
typedef struct fs_wstate fs_wstate; /* write_state.c: pending writes (rw mounts) */

typedef struct fs_mount {
    ck_checkpoint *ck;
    fs_tree *tree;
    fs_options opts;
    fs_views *views;
    fs_wstate *ws; /* rw mounts only: shared by the mount and its snapshots */
    /* A snapshot (snapshot.h): one state of a checkpoint, never changed
     * once published and freed when the last pin (request, open file)
     * goes.  Read-only mounts have one per state of each checkpoint.  An
     * rw mount (fs_root.rw) is not a snapshot itself: its ck/tree/views
     * are NULL and cur is the state it serves, which each commit replaces
     * by a new snapshot (fs_rw_pin, fs_rw_publish). */
    _Atomic unsigned long refs;
    uint64_t gen;       /* unique per snapshot in this daemon (page_cache.h) */
    pthread_mutex_t cur_lock; /* rw mount: cur, for a pin or a swap only */
    struct fs_mount *cur;
} fs_mount;

typedef struct fs_source fs_source;     /* live.h */
typedef struct fs_run fs_run;           /* run.h */
typedef struct fs_pcache fs_pcache;     /* page_cache.h */
typedef struct fs_notifier fs_notifier; /* notify.h */
typedef struct fs_itable fs_itable;     /* inode_table.h */
struct fuse_session;

/* All the daemon's state, the low-level session's userdata: the options,
 * the inode numbers the kernel holds, and either the rw mount, one live
 * read-only checkpoint, or a run directory of them. */
typedef struct fs_root {
    fs_options opts;
    char *abs_source;  /* SOURCE as an absolute path (the daemon leaves the cwd) */
    fs_mount *rw;      /* -o rw */
    fs_source *single; /* read-only checkpoint */
    fs_run *run;       /* read-only run directory */
    fs_pcache *pcache;
    fs_notifier *notify;
    fs_itable *itable;
    struct fuse_session *se; /* while mounted */
    bool splice;             /* replies of shard-file bytes may be spliced (ll_ops.c) */
    size_t read_size;        /* the largest READ the kernel sends (read_size.h) */
    _Atomic uint64_t next_gen;
} fs_root;

#endif
