/* Live checkpoints (SPEC "Live checkpoints"): a read-only checkpoint that
 * is saved again in place while mounted.
 *
 * A source is one checkpoint directory (SOURCE, or a step of a run) and
 * its current snapshot.  Requests pin the current snapshot; before they
 * do, the source looks at its marker (DCP: `.metadata`; safetensors: the
 * file, or the directory and its index) and, if the marker's identity
 * (device, inode, size, mtime, ctime) changed, opens the new state and
 * swaps it in.  Opens always look; other requests at most every
 * FS_SOURCE_CHECK_MS.  Data files of each state are pinned by identity
 * in the planner (file_id.h), so a snapshot serves its own bytes or EIO.
 *
 * The marker is read as torch leaves it: DCP writes `.metadata.tmp` and
 * renames it over `.metadata` (removing the old one first), so a missing
 * marker keeps the current state, and one that does not parse (written in
 * place, still being written) keeps it too, logged once per identity;
 * when it changes again it is tried again. */
#ifndef CKPTFS_LIVE_H
#define CKPTFS_LIVE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include "mount.h"
#include "file_id.h"

#define FS_SOURCE_CHECK_MS 100

/* A marker's identity; ctime too, since a rename onto the marker changes
 * it even when mtime and size happen to agree. */
typedef struct {
    bool ok;
    ck_file_id a, b; /* b: the index of a safetensors directory, if any */
    struct timespec actime, bctime;
    bool has_b;
    /* a safetensors directory: every .safetensors file's identity, hashed
     * (a shard written in place changes neither the directory nor an index) */
    uint64_t shards;
} fs_sig;

struct fs_source {
    char *dir;        /* absolute path given to ck_open */
    char *prefix;     /* where it sits in the mount: "" or "/NAME" */
    fs_root *root;
    pthread_mutex_t lock;        /* the fields below */
    pthread_mutex_t reload_lock; /* one reload at a time, held across opening */
    fs_mount *cur;    /* the current snapshot (one reference), NULL until opened */
    fs_sig sig;       /* the marker as it was just before cur was opened */
    fs_sig bad;       /* a marker whose state could not be opened (logged) */
    uint64_t checked_ns;
    /* The newest generation whose predecessors' kernel entries have been
     * invalidated (notify.h).  Until cur is settled, the kernel may still
     * hold the old sizes of its files, so opens bypass the page cache
     * (direct_io reads are not cut at a cached size). */
    _Atomic uint64_t settled;
};

/* The marker of the checkpoint at dir, stat'ed now (sig->ok false if it
 * is missing).  DCP: `.metadata`; a .safetensors file: itself; a directory
 * of them: the directory, its index and its .safetensors files. */
void fs_sig_read(const char *dir, fs_sig *sig);
bool fs_sig_equal(const fs_sig *x, const fs_sig *y);

/* A source for dir; cur may be given (the state main opened, with the sig
 * read before it was), else it is opened on first pin.  0 or -ENOMEM. */
int fs_source_new(fs_root *root, const char *dir, const char *prefix, fs_mount *cur,
                  const fs_sig *sig, fs_source **out);
void fs_source_free(fs_source *s);

/* The snapshot to serve a request from, referenced (fs_snapshot_unref it),
 * after looking for a new state: always when force, else at most every
 * FS_SOURCE_CHECK_MS.  NULL when the source has no state that opens. */
fs_mount *fs_source_pin(fs_source *s, bool force);
/* Drops the current state (a step that went away). */
void fs_source_drop(fs_source *s);
/* Drops the current state if nothing but the source holds it and no
 * reload is under way (a run closing steps nobody uses); true if it did. */
bool fs_source_drop_idle(fs_source *s);
/* Whether files of m (a snapshot of s) may use the page cache yet. */
bool fs_source_settled(fs_source *s, const fs_mount *m);

#endif
