/* The filesystem's operations by path, below the low-level FUSE front end
 * (ll_ops.c), which turns inode numbers into paths (inode_table.h) and
 * answers the kernel.  ops_read.c: lookup, attributes, listings, reads and
 * xattrs of every mount; ops_write.c and wr_*.c (rw mounts): creation, writes, renames,
 * commits, answering what it does not change with the read half.
 *
 * Every operation returns 0 (or a count) or -errno. */
#ifndef CKPTFS_OPS_H
#define CKPTFS_OPS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <sys/statvfs.h>
#include "mount.h"

/* An open file: a tree node or a view.  Writers add their buffer. */
typedef struct fs_handle {
    struct fs_node *node;
    struct fs_view *view;
    void *wbuf;          /* wr_common.h: the writer side of an rw file */
    /* the snapshot the file was opened on, pinned until release, so a new
     * state never changes what it reads */
    fs_mount *m;
    bool reply_pinned;   /* m stays pinned until replies are sent: fd buffers may go */
    char *pc_path;       /* the path it was opened by */
    size_t inner_off;    /* where the path inside m starts in pc_path */
    bool pc_registered;  /* counted in the page-cache table (page_cache.h) */
} fs_handle;

/* One directory entry for a listing: st is NULL when the entry carries no
 * attributes (the kernel then looks the name up itself).  Non-zero: the
 * listing is full, stop. */
typedef int (*fs_dir_fill)(void *ctx, const char *name, const struct stat *st);

typedef struct fs_path_ops {
    /* fi: the open file for fstat, or NULL */
    int (*getattr)(fs_root *r, const char *path, struct stat *st, struct fuse_file_info *fi);
    /* Entries other than "." and "..", in order, from the skip-th on (a
     * listing read in pieces costs no work for the entries before its
     * piece); with plus, each with its attributes where they are cheap. */
    int (*readdir)(fs_root *r, const char *path, fs_dir_fill fill, void *ctx, bool plus,
                   uint64_t skip);
    int (*opendir)(fs_root *r, const char *path);
    int (*access)(fs_root *r, const char *path, int mask);
    int (*open)(fs_root *r, const char *path, struct fuse_file_info *fi);
    int (*create)(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi);
    int (*mknod)(fs_root *r, const char *path, mode_t mode, dev_t rdev);
    /* *bufp: malloc'd, with buffers the caller frees (fs_bufvec_free) */
    int (*read_buf)(fs_root *r, const char *path, struct fuse_bufvec **bufp, size_t size,
                    off_t off, struct fuse_file_info *fi);
    int (*write)(fs_root *r, const char *path, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi);
    int (*flush)(fs_root *r, const char *path, struct fuse_file_info *fi);
    int (*fsync)(fs_root *r, const char *path, int datasync, struct fuse_file_info *fi);
    int (*release)(fs_root *r, const char *path, struct fuse_file_info *fi);
    int (*truncate)(fs_root *r, const char *path, off_t size, struct fuse_file_info *fi);
    int (*mkdir)(fs_root *r, const char *path, mode_t mode);
    int (*rmdir)(fs_root *r, const char *path);
    int (*unlink)(fs_root *r, const char *path);
    int (*rename)(fs_root *r, const char *from, const char *to, unsigned int flags);
    int (*setxattr)(fs_root *r, const char *path, const char *name, const char *value,
                    size_t size, int flags);
    int (*getxattr)(fs_root *r, const char *path, const char *name, char *value, size_t size);
    int (*listxattr)(fs_root *r, const char *path, char *list, size_t size);
    int (*removexattr)(fs_root *r, const char *path, const char *name);
    int (*chmod)(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi);
    int (*chown)(fs_root *r, const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi);
    int (*utimens)(fs_root *r, const char *path, const struct timespec tv[2],
                   struct fuse_file_info *fi);
    int (*statfs)(fs_root *r, const char *path, struct statvfs *sv);
} fs_path_ops;

extern const fs_path_ops fs_read_ops;  /* ops_read.c: read-only mounts */
extern const fs_path_ops fs_write_ops; /* ops_write.c: -o rw */

/* Frees a bufvec from read_buf and the memory buffers it owns. */
void fs_bufvec_free(struct fuse_bufvec *bv);

/* rw mounts: sets up m->ws before anything is mounted (it opens SOURCE
 * while relative paths still resolve).  0 or -errno with err set. */
int fs_write_init(fs_mount *m, char *err, size_t errlen);
/* Commits what is still pending when the filesystem goes away (rw), then
 * frees m->ws. */
void fs_unmount_commit(fs_mount *m);

/* Shared by the read and write halves. */
void fs_fill_stat(fs_mount *m, const fs_node *n, uint64_t size, struct stat *st);
/* Answers getxattr/listxattr with the n bytes of data: size 0 asks only
 * for n; a smaller buffer than n is -ERANGE; else they are copied to out. */
int fs_xattr_reply(const void *data, size_t n, char *out, size_t size);

#endif
