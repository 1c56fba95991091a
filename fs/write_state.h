/* What an rw mount has not committed yet, and the commit that writes it.
 *
 * A wfile is one file being read or written through open handles, or a new
 * file not committed yet: every open of a key shares the wfile of its FQN,
 * so all handles see the same pending bytes.  Handles point at wfiles, never
 * at tree nodes, so a commit can replace the tree under open files.
 *
 * The committed state is the rw mount's current snapshot (snapshot.h):
 * requests pin it, a commit publishes the next one; no lock is held while
 * a state is read, written or synced.
 *
 * Locks, always taken in this order, none across I/O but a commit's own
 * (commit_lock, and the locks of the files it commits):
 *   ws->commit_lock  one commit (or namespace change) at a time
 *   wf->lock         a wfile's content and size (several only by a commit)
 *   ws->lock         the table of wfiles, names (fqn/path) and extra dirs;
 *                    a commit publishes its state under it, so a state
 *                    pinned under it agrees with the table
 *   m->cur_lock      the current snapshot, for a pin or the swap */
#ifndef CKPTFS_WRITE_STATE_H
#define CKPTFS_WRITE_STATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "mount.h"
#include "write_buffer.h"
#include "write_stream.h"

typedef struct fs_wfile {
    pthread_mutex_t lock;
    /* under ws->lock */
    char *fqn;         /* the key it is, or becomes at its commit */
    char *path;        /* new files: where it is shown until then */
    int refs;          /* open handles, plus temporary holds */
    int writers;       /* open writable handles */
    bool unlinked;     /* removed while open: writes go nowhere */
    bool is_new;       /* no committed key yet */
    /* under lock */
    bool npy;          /* a new X.npy: the content is an npy file */
    bool replaces;     /* a new X.npy written over key X's view: replaces X */
    bool has_dtype, has_shape; /* declared by xattrs (new files) */
    ck_dtype dtype;
    uint32_t ndim;
    uint64_t shape[CK_MAX_DIMS];
    _Atomic uint64_t size; /* the file's size now */
    uint64_t limit;    /* writes past it fail with EFBIG */
    uint64_t base_size;/* committed content below it, zeros from it on */
    uint64_t committed_size;
    bool dirty;        /* something to commit */
    int failed;        /* -errno of the last failed commit, until the next change */
    bool overflowed;   /* a write past the limit was refused: the content is not
                        * what the writer meant, so it is not committed */
    fs_wbuf *buf;
    /* a new tensor file streamed to its future data file (write_stream.h)
     * instead of buf, from its first write on; NULL otherwise */
    fs_wstream *stream;
} fs_wfile;

typedef struct fs_wstate {
    pthread_mutex_t commit_lock;
    pthread_mutex_t lock;
    fs_wfile **files;
    size_t nfiles, cap;
    char **dirs;       /* directories no key lies under (mkdir, emptied by unlink) */
    size_t ndirs, dcap;
    fs_wbuf_pool *pool;
    int dirfd;         /* the checkpoint directory, O_RDONLY */
    char *source;      /* its absolute path: where commits reopen it */
    uint64_t crash_after, fail_after; /* test hooks, see planner/commit.h */
    bool broken;       /* a commit landed but could not be reopened: refuse writes */
    _Atomic bool no_stream; /* the directory cannot hold stream files: buffer every write */
} fs_wstate;

/* ---- names ---- */

/* The FQN a path stands for: components unescaped (SPEC's rules reversed)
 * and joined with '.'.  "/" -> "".  malloc'd, NULL on ENOMEM. */
char *fs_path_to_fqn(const char *path);
/* Parent directory path of a path ("/a/b" -> "/a", "/a" -> "/"), malloc'd. */
char *fs_path_parent(const char *path);

/* ---- the table (caller holds ws->lock) ---- */

fs_wfile *fs_ws_find_new(fs_wstate *ws, const char *path);   /* pending new file at path */
fs_wfile *fs_ws_find_key(fs_wstate *ws, const char *fqn);    /* wfile of a committed key */
int fs_ws_add(fs_wstate *ws, fs_wfile *wf);
/* Drops the table's reference when nothing holds or awaits the wfile. */
void fs_ws_put_locked(fs_wstate *ws, fs_wfile *wf);
/* A directory only we know of: mkdir'd, emptied by unlink/rename, or an
 * ancestor of one or of a pending file. */
bool fs_ws_is_dir(fs_wstate *ws, const char *path);
bool fs_ws_is_explicit_dir(fs_wstate *ws, const char *path);
int fs_ws_add_dir(fs_wstate *ws, const char *path);
void fs_ws_remove_dir(fs_wstate *ws, const char *path);
/* true if some pending file or extra dir lies under dir ("/a" -> "/a/..."). */
bool fs_ws_has_children(fs_wstate *ws, const char *dir);

/* Names of wfiles and extra dirs follow ns (a rename, a dropped key).
 * Caller holds ws->lock (and publishes the state ns was committed in). */
typedef struct fs_ns_change fs_ns_change;
void fs_ws_apply_ns(fs_wstate *ws, const fs_ns_change *ns);

fs_wfile *fs_wfile_new(fs_wstate *ws, const char *fqn, const char *path);
void fs_wfile_free(fs_wfile *wf);

/* Releases one hold on wf (takes ws->lock). */
void fs_ws_put(fs_wstate *ws, fs_wfile *wf);

/* ---- content ---- */

/* Bytes [off, off+len) of wf as it is now (pending bytes over the
 * committed ones, zeros past base_size), over the current state.  Caller
 * holds wf->lock. */
int fs_wfile_read(fs_mount *m, fs_wfile *wf, uint64_t off, void *dst, size_t len);
/* Records a write; caller holds wf->lock. */
int fs_wfile_write(fs_mount *m, fs_wfile *wf, uint64_t off, const void *src, size_t len);
/* Sets the size (truncate/extend); caller holds wf->lock. */
int fs_wfile_truncate(fs_wfile *wf, uint64_t size);
/* A new file holding nothing yet: it waits for xattrs and data. */
bool fs_wfile_is_placeholder(const fs_wfile *wf);

/* ---- commits ---- */

/* A namespace change that commits at once. */
struct fs_ns_change {
    const char *drop;       /* key removed (unlink, or replaced by a rename) */
    const char *from, *to;  /* key renamed; with prefix, every key starting with from
                             * (both end in '.') */
    bool prefix;
    /* a directory rename: pending files and extra dirs under from_path
     * move to to_path in the same swap */
    const char *from_path, *to_path;
};

/* Commits files (their pending content; placeholders too when
 * with_placeholders) and ns, then swaps the mount to the new state.
 * Caller holds commit_lock and a hold on each file, no other lock.
 * Returns 0 or -errno (logged). */
int fs_commit_locked(fs_mount *m, fs_wfile **files, size_t nfiles, const fs_ns_change *ns,
                     bool with_placeholders);

int fs_write_state_new(fs_mount *m, fs_wstate **out, char *err, size_t errlen);
void fs_write_state_free(fs_mount *m, fs_wstate *ws);

#endif
