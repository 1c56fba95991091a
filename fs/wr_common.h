/* What the write-side operations (wr_*.c, ops_write.c) share: what a path
 * is on an rw mount, and the handles of files opened for writing. */
#ifndef CKPTFS_WR_COMMON_H
#define CKPTFS_WR_COMMON_H

#include <stdbool.h>
#include "chunk_reader.h"
#include "geometry.h"
#include "ops.h"
#include "snapshot.h"
#include "views.h"
#include "write_state.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* An open file's writer side (fs_handle.wbuf). */
typedef struct {
    fs_wfile *wf;
    bool writable;
} wr_handle;

typedef enum { P_NONE, P_NEW, P_FILE, P_DIR, P_XDIR, P_VIEW } path_kind;

typedef struct {
    path_kind kind;
    fs_wfile *wf;          /* P_NEW: with a hold taken */
    char *fqn;             /* P_FILE: the key (malloc'd) */
    bool dir_has_children; /* P_DIR */
} path_info;

bool fs_wr_has_npy_suffix(const char *name);
const char *fs_wr_base_name(const char *path);
void fs_wr_info_clear(fs_wstate *ws, path_info *pi);

/* What path is in state cur and the table of pending files.  Caller holds
 * ws->lock and pinned cur while holding it: commits publish their state
 * under ws->lock, so the two agree.  Views are not looked at. */
int fs_wr_classify_in(fs_mount *cur, fs_wstate *ws, const char *path, path_info *pi);
/* Whether path names a view of cur (may read: not under ws->lock). */
bool fs_wr_is_view(fs_mount *cur, const char *path);
/* fs_wr_classify_in with ws->lock taken (the caller releases it) and the
 * state pinned in *curp (the caller unpins it); *view: whether path is a
 * view, looked at before the lock. */
int fs_wr_classify_lock(fs_mount *m, const char *path, path_info *pi, bool *view,
                        fs_mount **curp);
/* fs_wr_classify_lock for a name about to be made: -EEXIST when anything
 * (a key, a directory, a pending file, a view) is at path already.  Holds
 * ws->lock and pins *curp as fs_wr_classify_lock does, whatever it returns. */
int fs_wr_lock_free_name(fs_mount *m, const char *path, path_info *pi, fs_mount **curp);
/* What path is now, views included.  *curp (if given) receives the state
 * it was judged in, pinned. */
int fs_wr_classify_pinned(fs_mount *m, const char *path, path_info *pi, fs_mount **curp);
int fs_wr_classify(fs_mount *m, const char *path, path_info *pi);
bool fs_wr_is_dir_kind(path_kind k);
/* 0 if the parent of path is a directory, else -ENOENT/-ENOTDIR. */
int fs_wr_check_parent(fs_mount *m, const char *path);
/* The wfile of a committed key, created on first use; returns it held. */
int fs_wr_attach_key(fs_mount *m, const char *path, fs_wfile **out);

/* A handle on wf in fi->fh. */
int fs_wr_new_handle(fs_wfile *wf, bool writable, struct fuse_file_info *fi);
fs_handle *fs_wr_handle_of(struct fuse_file_info *fi);
/* The writer side of an open file; NULL for a view. */
wr_handle *fs_wr_of(struct fuse_file_info *fi);

/* The operations, one per function (fs_write_ops in ops_write.c). */
int fs_wr_getattr(fs_root *r, const char *path, struct stat *st, struct fuse_file_info *fi);
int fs_wr_readdir(fs_root *r, const char *path, fs_dir_fill fill, void *ctx, bool plus,
                  uint64_t skip);
int fs_wr_opendir(fs_root *r, const char *path);
int fs_wr_access(fs_root *r, const char *path, int mask);
int fs_wr_create(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi);
int fs_wr_mknod(fs_root *r, const char *path, mode_t mode, dev_t rdev);
int fs_wr_open(fs_root *r, const char *path, struct fuse_file_info *fi);
int fs_wr_read_buf(fs_root *r, const char *path, struct fuse_bufvec **bufp, size_t size,
                   off_t off, struct fuse_file_info *fi);
int fs_wr_write(fs_root *r, const char *path, const char *buf, size_t size, off_t off,
                struct fuse_file_info *fi);
int fs_wr_flush(fs_root *r, const char *path, struct fuse_file_info *fi);
int fs_wr_fsync(fs_root *r, const char *path, int datasync, struct fuse_file_info *fi);
int fs_wr_release(fs_root *r, const char *path, struct fuse_file_info *fi);
int fs_wr_truncate(fs_root *r, const char *path, off_t size, struct fuse_file_info *fi);
int fs_wr_mkdir(fs_root *r, const char *path, mode_t mode);
int fs_wr_rmdir(fs_root *r, const char *path);
int fs_wr_unlink(fs_root *r, const char *path);
int fs_wr_rename(fs_root *r, const char *from, const char *to, unsigned int flags);
int fs_wr_setxattr(fs_root *r, const char *path, const char *name, const char *value,
                   size_t size, int flags);
int fs_wr_getxattr(fs_root *r, const char *path, const char *name, char *value, size_t size);
int fs_wr_listxattr(fs_root *r, const char *path, char *list, size_t size);
int fs_wr_removexattr(fs_root *r, const char *path, const char *name);
int fs_wr_chmod(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi);
int fs_wr_chown(fs_root *r, const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi);
int fs_wr_utimens(fs_root *r, const char *path, const struct timespec tv[2],
                  struct fuse_file_info *fi);
int fs_wr_statfs(fs_root *r, const char *path, struct statvfs *sv);

#endif
