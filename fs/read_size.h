/* How large the kernel's read requests are.  Each READ costs a round trip
 * whatever its size, so larger ones are cheaper per byte; but a reply of
 * shard-file bytes is spliced through a pipe, and a pipe can hold no more
 * than /proc/sys/fs/pipe-max-size (1 MiB by default) even for root without
 * CAP_SYS_RESOURCE.  libfuse, when the pipe cannot hold a reply, copies it
 * through freshly mapped memory instead, which measured twice as slow as
 * the 256 KiB requests FUSE gets by default.  So requests are made as large
 * as a spliced reply can be, and the mount's read-ahead window is opened to
 * two of them (the kernel caps a FUSE mount's window at 128 KiB whatever
 * the daemon asks, see fs_bdi_set_readahead). */
#ifndef CKPTFS_READ_SIZE_H
#define CKPTFS_READ_SIZE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Shard-file buffers one reply may carry (ops_read.c); more runs than this
 * and the reply is assembled in memory. */
#define FS_FD_SPANS_MAX 16

/* Requests are never made smaller than FUSE's usual ones, nor larger than
 * the most pages a FUSE request may carry. */
#define FS_READ_SIZE_MIN (128u << 10)
#define FS_READ_SIZE_MAX (1u << 20)

/* The largest power-of-two request whose spliced reply fits a pipe of
 * pipe_max bytes, given a reply of at most fd_spans shard-file buffers
 * (libfuse asks one page of pipe per buffer, plus two, besides the data),
 * within [FS_READ_SIZE_MIN, FS_READ_SIZE_MAX]. */
size_t fs_read_size_for_pipe(uint64_t pipe_max, size_t fd_spans, size_t page);

/* /proc/sys/fs/pipe-max-size, or 1 MiB (the kernel's default) when it
 * cannot be read. */
uint64_t fs_pipe_max_size(void);

/* The device of the mount at mountpoint (an absolute path) in
 * /proc/self/mountinfo's text [text, text+len): the last such line, the
 * mount on top.  0, -ENOENT when none is there, -EINVAL for a malformed
 * line on the way. */
int fs_mountinfo_dev(const char *text, size_t len, const char *mountpoint, dev_t *dev);

/* fs_mountinfo_dev over this process's /proc/self/mountinfo. */
int fs_mount_dev(const char *mountpoint, dev_t *dev);

/* Sets the read-ahead window of the mount on device dev to kb KiB through
 * sysfs (/sys/class/bdi/MAJOR:MINOR/read_ahead_kb, under sysfs_root).  Only
 * root may; 0 or -errno, and nothing else changes on failure. */
int fs_bdi_set_readahead(const char *sysfs_root, dev_t dev, unsigned kb);

#endif
