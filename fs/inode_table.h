/* Inode numbers of the low-level front end (ll_ops.c): which path each
 * number the kernel holds stands for, and how many lookups it holds.
 *
 * A number is made from its path's hash (probing on the rare collision),
 * so the same path gets the same number again after the kernel forgot it,
 * and st_ino in a listing (d_ino) agrees with stat without a lookup.  A
 * number keeps its entry across commits, and a rename moves the entry (and
 * everything under it) to the new path with its number: files keep their
 * identity the way they would on a disk.  Unlinked or replaced entries are
 * detached: lookups no longer find them, and they go with their last
 * forget.  The root, "/", is number 1 and never goes.
 *
 * Paths are refcounted, immutable strings: a request takes one and keeps
 * it while a rename may replace the entry's.  Thread-safe (one mutex, held
 * for table work only).  FUSE-free. */
#ifndef CKPTFS_INODE_TABLE_H
#define CKPTFS_INODE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#define FS_ROOT_INO 1

typedef struct fs_itable fs_itable;

typedef struct fs_ipath {
    _Atomic unsigned long refs;
    size_t len;
    char s[]; /* "/a/b", NUL-terminated */
} fs_ipath;

int fs_itable_new(fs_itable **out);
void fs_itable_free(fs_itable *t);

/* Counts one kernel lookup of path ("/" included): the number, created if
 * needed, in *ino and its generation in *gen.  0 or -ENOMEM. */
int fs_itable_lookup(fs_itable *t, const char *path, uint64_t *ino, uint64_t *gen);
/* The number path has or would get now, counting nothing (d_ino). */
uint64_t fs_itable_peek(fs_itable *t, const char *path);
/* The kernel dropped n lookups of ino. */
void fs_itable_forget(fs_itable *t, uint64_t ino, uint64_t n);
/* The path of ino, referenced; NULL if the kernel holds no such number. */
fs_ipath *fs_itable_path(fs_itable *t, uint64_t ino);
void fs_ipath_put(fs_ipath *p);

/* rename(2) from -> to: an entry at to is detached; the entry at from and
 * every entry under from/ move below to, keeping their numbers.  0 or
 * -ENOMEM (then nothing moved). */
int fs_itable_rename(fs_itable *t, const char *from, const char *to);
/* unlink/rmdir: the entry at path (if any) is detached. */
void fs_itable_detach(fs_itable *t, const char *path);

/* What the kernel may hold under prefix ("" for everything, or "/step_1"):
 * the entry at prefix and every one below it. */
typedef struct {
    uint64_t ino;
    uint64_t parent; /* the parent's number, 0 if the kernel holds none */
    char *name;      /* the last component (malloc'd); "" for the root */
} fs_iname;
int fs_itable_list_under(fs_itable *t, const char *prefix, fs_iname **out, size_t *n);
void fs_inames_free(fs_iname *v, size_t n);

/* Entries held (tests, statistics). */
size_t fs_itable_count(fs_itable *t);

#endif
