/* File descriptors: opening beneath a directory, listing one, and
 * whole-buffer reads and writes (the loops every caller of pread/write
 * needs: short transfers, EINTR), each in one place. */
#ifndef CKPT_FD_IO_H
#define CKPT_FD_IO_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Opens path (relative) for reading so that neither "..", absolute
 * symlinks nor links that climb out can take it outside dirfd: openat2
 * RESOLVE_BENEATH where the kernel has it, else O_NOFOLLOW on the last
 * component (callers check paths lexically first).  O_NONBLOCK, so that a
 * FIFO planted in a checkpoint cannot hang the open.  fd or -errno
 * (-EXDEV or -ELOOP for a link leaving dirfd). */
int ck_open_beneath(int dirfd, const char *path);

/* Opens dirfd's directory for readdir on a descriptor of its own, so that
 * listing it neither moves nor closes dirfd.  0 or -errno; closedir(*out)
 * releases it. */
int ck_opendir_at(int dirfd, DIR **out);

/* Reads exactly n bytes at off.  0; -EIO if the file ends first (it is
 * shorter than whoever asked expected); -errno from pread; -EIO for a
 * range past what off_t can say. */
int ck_pread_full(int fd, void *buf, size_t n, uint64_t off);
/* ck_pread_full into the n buffers iov[0..n) in turn (a scatter read: one
 * syscall per IOV_MAX buffers).  iov is consumed: its entries are advanced
 * past what was read.  Same results as ck_pread_full. */
int ck_preadv_full(int fd, struct iovec *iov, size_t n, uint64_t off);
/* Writes all n bytes at the file position.  0 or -errno. */
int ck_write_full(int fd, const void *buf, size_t n);
/* Writes all n bytes at off.  0, -EFBIG past off_t, -errno. */
int ck_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);

#endif
