/* FUSE operations.  ops_read.c: lookup, attributes, listing, reads and
 * xattrs; ops_write.c (rw mounts): creation, writes, renames, commits. */
#ifndef CKPTFS_OPS_H
#define CKPTFS_OPS_H

#include <fuse.h>
#include <stdbool.h>
#include "mount.h"

/* An open file: a tree node or a view.  Writers add their buffer. */
typedef struct fs_handle {
    struct fs_node *node;
    struct fs_view *view;
    void *wbuf;          /* ops_write.c: dirty data of a writable handle */
    /* read-only mounts: the snapshot the file was opened on, pinned until
     * release, so a new state never changes what it reads */
    fs_mount *m;
    char *pc_path;       /* the path it was opened by */
    size_t inner_off;    /* where the path inside m starts in pc_path */
    bool pc_registered;  /* counted in the page-cache table (page_cache.h) */
} fs_handle;

static inline fs_root *fs_current_root(void)
{
    return fuse_get_context()->private_data;
}

/* The rw mount (ops_write.c); read-only requests resolve theirs (root.h). */
static inline fs_mount *fs_current_mount(void)
{
    return fs_current_root()->rw;
}

void fs_ops_fill_read(struct fuse_operations *ops);
void fs_ops_fill_write(struct fuse_operations *ops); /* ops_write.c */

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
