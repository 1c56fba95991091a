/* The identity of a data file: which file, in which version, a checkpoint
 * state was read against.  A checkpoint rewritten in place (torch opens its
 * data files with "wb": same inode, truncated and written again) or
 * replaced by new files of the same names must never yield a mix of the old
 * and the new bytes; comparing the identity pinned when the state was read
 * with the file's identity after each read tells the two apart. */
#ifndef CKPT_FILE_ID_H
#define CKPT_FILE_ID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct {
    uint64_t dev, ino, size;
    int64_t mtime_sec;
    long mtime_nsec;
} ck_file_id;

void ck_file_id_from_stat(const struct stat *st, ck_file_id *id);
/* ctime is deliberately not compared: link, unlink and chmod change it
 * without changing a byte. */
bool ck_file_id_equal(const ck_file_id *a, const ck_file_id *b);

/* The identities of the regular files directly in a directory, taken just
 * before a checkpoint's metadata is read: a data file whose identity at
 * the state's first open differs was being rewritten meanwhile (the next
 * save racing the read).  No clock is compared, so files stamped in the
 * future (copied from a machine whose clock runs ahead) read as usual. */
typedef struct {
    char *name;
    ck_file_id id;
} ck_dir_id;

typedef struct {
    ck_dir_id *v; /* sorted by name */
    size_t n;
} ck_dir_ids;

/* 0 or -errno; *out is empty on error. */
int ck_dir_ids_read(int dirfd, ck_dir_ids *out);
const ck_file_id *ck_dir_ids_find(const ck_dir_ids *d, const char *name);
void ck_dir_ids_free(ck_dir_ids *d);

#endif
