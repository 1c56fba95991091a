/* Streamed writes of a new tensor file: its bytes go straight to the data
 * file the commit will name, at the offset its item puts them, so a `cp` of
 * a large .npy is written once and the commit adds only the archive around
 * it (planner/torch_save_writer.h's frame), an fsync and the metadata.
 *
 * A stream starts at a new file's first write when its dtype and shape are
 * known by then: a `.npy` whose first write holds the whole header, or a
 * file whose user.ckpt.dtype/shape were set before.  The content of the
 * file (what reads see) is then, whatever is written afterwards:
 *   [0, hdr)        the npy header region, in memory (hdr = header length)
 *   [hdr, ...)      content byte x at x - hdr + data_off of the stream file;
 *                   holes and bytes past its end read as zeros
 * where the stream file is an unnamed file (O_TMPFILE) in the checkpoint
 * directory: nothing can see it, remove it or trip over it until a commit
 * links it, and it vanishes with its descriptor if the daemon dies.
 *
 * Any write pattern is kept exactly (out of order, overlapping, past the
 * payload, truncations); only the commit decides whether the content as it
 * is then can become the item in place (fs_wstream_placed: same dtype,
 * shape and header length as when the stream started).  If it cannot (the
 * header was rewritten to another shape, the file was renamed to a plain
 * name), the commit copies the content like any pending file, reading it
 * through fs_wstream_read.
 *
 * Writes of payload bytes are written behind: copied and handed to the
 * stream's own thread, which writes them to the file while the writer goes
 * on (a failure shows at the next call).  The payload's CRC-32 is taken as
 * in-order bytes arrive; a commit reads
 * back only the bytes no in-order write covered (none for cp).  Writeback of
 * the completed part is started as the stream grows (sync_file_range), so
 * the commit's fsync finds little left to write.
 *
 * FUSE-free; calls are not thread-safe: the owner (write_state.c, under
 * wf->lock) serializes them.  Every function returns 0 or -errno. */
#ifndef CKPTFS_WRITE_STREAM_H
#define CKPTFS_WRITE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "save_plan.h" /* ck_placed_item */

typedef struct fs_wstream fs_wstream;

/* A stream for a tensor (dt, ndim, shape) whose content starts with a
 * header of hdr_len bytes (a .npy header; 0 for none), in directory dirfd.
 * -EOPNOTSUPP where the filesystem has no O_TMPFILE (the caller keeps its
 * buffer), -EINVAL for a dtype or shape no item can hold, -errno. */
int fs_wstream_open(int dirfd, ck_dtype dt, uint32_t ndim, const uint64_t *shape, size_t hdr_len,
                    fs_wstream **out);
void fs_wstream_free(fs_wstream *s);

/* Content bytes [off, off+len) := src. */
int fs_wstream_write(fs_wstream *s, uint64_t off, const void *src, size_t len);
/* Content bytes [off, off+len) into dst (zeros where nothing was written). */
int fs_wstream_read(fs_wstream *s, uint64_t off, void *dst, size_t len);
/* The content ends at size: bytes from size on read as zeros again. */
int fs_wstream_truncate(fs_wstream *s, uint64_t size);

/* For a commit that found the content to be tensor (dt, ndim, shape) after
 * shift header bytes: fills pi for ck_commit (fd, data offset, CRC, first
 * bytes) and returns 0, or returns 1 when the stream does not hold that
 * tensor in place (the commit then copies it), or -errno (reading back the
 * bytes the CRC still lacks). */
int fs_wstream_placed(fs_wstream *s, ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                      uint64_t shift, ck_placed_item *pi);
/* After a commit that used pi failed: what it wrote past the payload is cut
 * off again, so the content reads as before; if it had linked the file,
 * later commits copy the content (fs_wstream_placed returns 1). */
void fs_wstream_commit_failed(fs_wstream *s, const ck_placed_item *pi);

/* Waits for the write-behind (see write_stream.c): 0, or the error of a
 * queued write that failed (every later call reports it too). */
int fs_wstream_flush(fs_wstream *s);

/* Test hooks and figures. */
uint64_t fs_wstream_data_off(const fs_wstream *s);
/* The stream file's descriptor (the stream keeps it; for fstat). */
int fs_wstream_fd(const fs_wstream *s);
/* Payload bytes the CRC covers so far (in-order bytes from the start). */
uint64_t fs_wstream_crc_covered(fs_wstream *s);

#endif
