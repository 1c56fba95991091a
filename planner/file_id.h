/* The identity of a data file: which file, in which version, a checkpoint
 * state was read against.  A checkpoint rewritten in place (torch opens its
 * data files with "wb": same inode, truncated and written again) or
 * replaced by new files of the same names must never yield a mix of the old
 * and the new bytes; comparing the identity pinned when the state was read
 * with the file's identity after each read tells the two apart. */
#ifndef CKPT_FILE_ID_H
#define CKPT_FILE_ID_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

typedef struct {
    uint64_t dev, ino, size;
    int64_t mtime_sec;
    long mtime_nsec;
} ck_file_id;

void ck_file_id_from_stat(const struct stat *st, ck_file_id *id);
bool ck_file_id_equal(const ck_file_id *a, const ck_file_id *b);
/* true if the file was last modified after t: it is then not the file a
 * state read at t describes.  ctime is deliberately not used: link, unlink
 * and chmod change it without changing a byte. */
bool ck_file_id_modified_after(const ck_file_id *id, const struct timespec *t);
/* The later of two instants. */
struct timespec ck_timespec_max(struct timespec a, struct timespec b);

#endif
