/* A commit: the next state of a DCP checkpoint written next to the current
 * one and made current by one rename.
 *
 *   1. every chunk the save plan marks (and every new key, and every
 *      replaced bytes payload) is written as a new item -- a torch.save
 *      archive, zstd-compressed when the item it replaces was -- into one
 *      new data file `__ckptfs_<unix-ns>_<n>.distcp` (O_EXCL, so it clashes
 *      with neither DCP's `__R_N.distcp` nor an earlier commit); fsync it and
 *      the directory (its name must survive a power loss before a metadata
 *      names it);
 *   2. the new `.metadata` goes to `.metadata.ckptfs-tmp-<unix-ns>`; fsync;
 *   3. rename it over `.metadata`; fsync the directory;
 *   4. remove the data files the old metadata referenced and the new one
 *      does not, and leftovers of commits that died (`__ckptfs_*.distcp`
 *      no metadata references, stale temporary metadata).
 *
 * Until the rename in step 3 nothing the old metadata references has been
 * touched, so a failure (ENOSPC, EIO) or a crash before it leaves the old
 * checkpoint; after it, the new one.  A failed commit removes what it wrote. */
#ifndef CKPT_COMMIT_H
#define CKPT_COMMIT_H

#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"
#include "save_plan.h"

/* The archive name of every item a commit writes (what torch.save names an
 * archive written to a buffer); streamed items (save_plan.h) must use it. */
#define CK_ITEM_ARCHIVE_NAME "archive"

typedef struct {
    int dirfd;                 /* the checkpoint directory, O_RDONLY|O_DIRECTORY; -1 when remote */
    /* dirfd < 0: a checkpoint in an object store, written through its
     * storage (storage.h): the data file is a new object, `.metadata` is
     * replaced by a conditional write against the identity ck read (a
     * lost race is -EAGAIN and replaces nothing), leftovers are deleted. */
    ck_storage *storage;
    const char *checkpoint_id; /* StorageMeta.checkpoint_id (e.g. the absolute path), or NULL */
    /* Test hooks, counted over the write/fsync/rename/unlink syscalls of one
     * commit: the daemon is killed with SIGKILL right after syscall number
     * crash_after, or syscall number fail_after fails with fail_errno
     * instead of running.  0 disables each. */
    uint64_t crash_after;
    uint64_t fail_after;
    int fail_errno;
} ck_commit_opts;

typedef struct {
    uint64_t items;       /* items written */
    uint64_t item_bytes;  /* their bytes in the data file */
    uint64_t syscalls;    /* counted steps (see the test hooks) */
    uint64_t removed;     /* data files removed after the rename */
    char data_file[96];   /* the new data file, "" if none was needed */
} ck_commit_stats;

/* Writes the state described by keys -- the complete set of keys the new
 * checkpoint holds, each continuing a key of ck or new -- as the checkpoint
 * in opts->dirfd, whose current state ck is.  Returns 0 once the new
 * metadata is in place (stats may be NULL), or -errno with err set and the
 * old checkpoint untouched: -EINVAL (duplicate names, bad dtype/shape,
 * keys of ck that cannot be carried over), -ESTALE (the directory's
 * .metadata is no longer the one ck was read from: someone else replaced
 * it, and nothing is written over theirs), -EIO, -ENOSPC, ... */
int ck_commit(ck_checkpoint *ck, const ck_save_key *keys, size_t nkeys, const ck_commit_opts *opts,
              ck_commit_stats *stats, char *err, size_t errlen);

/* Writes an empty checkpoint (a Metadata with no keys) into dirfd the same
 * crash-safe way; for `-o rw,create`. */
int ck_commit_empty(int dirfd, const char *checkpoint_id, char *err, size_t errlen);
/* The same into a storage, where no `.metadata` may exist yet. */
int ck_commit_empty_storage(ck_storage *st, const char *checkpoint_id, char *err, size_t errlen);

#endif
