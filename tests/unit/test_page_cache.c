/* The page-cache owner table (fs/page_cache.h): the kernel's pages of a
 * path hold one snapshot's bytes at a time.  fs/page_cache.c is FUSE-free
 * and included whole, the unit tests linking only the planner library. */
#include <stdio.h>

#include "check.h"
#include "page_cache.c"

int main(void)
{
    fs_pcache *pc = NULL;
    CHECK(fs_pcache_new(&pc) == 0);
    /* first opens of a path share the cache */
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 1), FS_PC_KEEP);
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 1), FS_PC_KEEP);
    /* a new state while the old one's handles are open: bypass */
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 2), FS_PC_DIRECT);
    /* other paths are not affected */
    CHECK_EQ_INT(fs_pcache_open(pc, "/b", 2), FS_PC_KEEP);
    fs_pcache_release(pc, "/a", 1);
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 2), FS_PC_DIRECT); /* one gen-1 handle left */
    fs_pcache_release(pc, "/a", 1);
    /* the old state's handles are gone: the new state takes the cache over */
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 2), FS_PC_PURGE);
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 2), FS_PC_KEEP);
    /* an older state's handle opened late (it pinned its state before the
     * swap) must not read the newer pages either */
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 1), FS_PC_DIRECT);
    fs_pcache_release(pc, "/a", 2);
    fs_pcache_release(pc, "/a", 2);
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 1), FS_PC_PURGE);
    /* a stray release of a generation that does not own the cache changes nothing */
    fs_pcache_release(pc, "/a", 7);
    CHECK_EQ_INT(fs_pcache_open(pc, "/a", 3), FS_PC_DIRECT);
    /* many paths: the table grows and keeps every entry */
    char name[32];
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "/k%d", i);
        ok &= fs_pcache_open(pc, name, 5) == FS_PC_KEEP;
    }
    CHECK(ok);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "/k%d", i);
        ok &= fs_pcache_open(pc, name, 6) == FS_PC_DIRECT;
    }
    CHECK(ok);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "/k%d", i);
        fs_pcache_release(pc, name, 5);
        ok &= fs_pcache_open(pc, name, 6) == FS_PC_PURGE;
    }
    CHECK(ok);
    fs_pcache_free(pc);
    return check_done();
}
