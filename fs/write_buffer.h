/* Pending writes of one open file: the exact byte ranges written (what the
 * save planner needs) and the file's new content over those ranges, kept
 * in fixed-size pages.  A page a write covers only in part is first filled
 * from the file's current content, so a page always holds whole content.
 *
 * All buffers of a mount share one pool whose memory is bounded (-o cache=):
 * past the bound a buffer moves its own pages to a spill file in SOURCE
 * (O_TMPFILE, or `.ckptfs-spill-XXXXXX` unlinked at once) and reads them
 * back from there.  A buffer is not thread-safe: its owner locks it. */
#ifndef CKPTFS_WRITE_BUFFER_H
#define CKPTFS_WRITE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "save_plan.h" /* ck_byte_range */

#define FS_WBUF_PAGE (64u << 10)

typedef struct fs_wbuf_pool fs_wbuf_pool;
typedef struct fs_wbuf fs_wbuf;

/* Content of bytes not written yet, for filling partly written pages:
 * fills dst with bytes [off, off+len) of the file as it is without this
 * buffer.  0 or -errno. */
typedef int (*fs_wbuf_fill_fn)(void *ctx, uint64_t off, void *dst, size_t len);

/* dirfd: where the spill file goes; mem_limit: bytes of pages in memory. */
int fs_wbuf_pool_new(int dirfd, uint64_t mem_limit, fs_wbuf_pool **out);
void fs_wbuf_pool_free(fs_wbuf_pool *p);
/* Bytes of pages in memory / in the spill file, over all buffers. */
uint64_t fs_wbuf_pool_mem(fs_wbuf_pool *p);
uint64_t fs_wbuf_pool_spilled(fs_wbuf_pool *p);

int fs_wbuf_new(fs_wbuf_pool *p, fs_wbuf **out);
void fs_wbuf_free(fs_wbuf *b);

/* Records src as bytes [off, off+len).  0, -ENOMEM, -EOVERFLOW, -ENOSPC/-EIO
 * (spill file) or what fill returned. */
int fs_wbuf_write(fs_wbuf *b, uint64_t off, const void *src, size_t len, fs_wbuf_fill_fn fill,
                  void *fill_ctx);

/* Bytes [off, off+len) of the new content: pages where there are any, fill
 * elsewhere. */
int fs_wbuf_read(fs_wbuf *b, uint64_t off, void *dst, size_t len, fs_wbuf_fill_fn fill,
                 void *fill_ctx);

/* Forgets everything written at or past size (a truncation): pages past it
 * are dropped, the page holding it is zeroed from it on. */
void fs_wbuf_truncate(fs_wbuf *b, uint64_t size);

/* The written ranges: sorted, disjoint, adjacent ones merged. */
const ck_byte_range *fs_wbuf_ranges(const fs_wbuf *b, size_t *n);
bool fs_wbuf_empty(const fs_wbuf *b);
/* Drops every page and range (after a commit took them). */
void fs_wbuf_clear(fs_wbuf *b);

#endif
