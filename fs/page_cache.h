/* Which snapshot's bytes the kernel's page cache may hold for each path.
 *
 * The kernel keeps one page cache per FUSE inode, and a path keeps its
 * inode across states, so pages filled through a handle of one snapshot
 * are served to every other handle of the file.  A reader that pinned an
 * old state must never get pages of the new one, nor a new reader old
 * pages.  So at any time the pages of a path belong to one snapshot
 * generation: handles of that generation share them (keep_cache), a
 * handle of another generation opened while those are open bypasses the
 * cache (direct_io), and the first handle opened once they are all closed
 * takes the cache over and drops what it held (keep_cache off).
 * FUSE-free; the table grows with the paths ever opened. */
#ifndef CKPTFS_PAGE_CACHE_H
#define CKPTFS_PAGE_CACHE_H

#include <stdint.h>

typedef struct fs_pcache fs_pcache;

typedef enum {
    FS_PC_KEEP = 0,   /* share the cached pages: keep_cache on */
    FS_PC_PURGE = 1,  /* drop the cached pages at open: keep_cache off */
    FS_PC_DIRECT = 2, /* bypass the page cache: direct_io (not registered) */
} fs_pc_mode;

int fs_pcache_new(fs_pcache **out);
void fs_pcache_free(fs_pcache *pc);
/* A handle of snapshot gen opens path: how it must use the page cache.
 * KEEP and PURGE register the handle (release it); -ENOMEM is answered
 * with DIRECT, which is always safe. */
fs_pc_mode fs_pcache_open(fs_pcache *pc, const char *path, uint64_t gen);
/* A KEEP or PURGE handle of gen on path was released. */
void fs_pcache_release(fs_pcache *pc, const char *path, uint64_t gen);

#endif
