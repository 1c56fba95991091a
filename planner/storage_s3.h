/* The S3 storage backend (storage.h) for SOURCE `s3://BUCKET/PREFIX`:
 * objects beneath PREFIX/, listed once at open with their ETags; reads are
 * ranged GETs pinned to those ETags (If-Match), fetched in blocks through a
 * pool of kept-alive connections (s3_pool.h), coalesced and read ahead on
 * sequential access within the opts->cache_bytes bound. */
#ifndef CKPT_STORAGE_S3_H
#define CKPT_STORAGE_S3_H

#include "storage.h"

/* As ck_storage_for_source.  A SOURCE whose last component ends in
 * .safetensors and names an object is that one object (*leaf); otherwise
 * it is a prefix, which must hold objects.  Refusals (403, a missing
 * bucket, an empty prefix) are one line naming the HTTP status. */
int ck_storage_s3_for_source(const char *source, const ck_storage_opts *opts, ck_storage **out,
                             char **leaf, struct timespec *mtime, char *err, size_t errlen);

/* Read-block geometry, exported for the unit tests: which blocks cover
 * bytes [off, off + n) of an object of size bytes, and how runs of
 * missing blocks are cut into GETs of at most max_run blocks. */
#define CK_S3_BLOCK (1u << 20)
#define CK_S3_MAX_RUN 8u
typedef struct {
    uint64_t first; /* block index */
    uint32_t count;
} ck_s3_run;
/* Cuts the blocks [first, first + n) whose missing[i] is set into runs of
 * consecutive missing blocks, each at most max_run long.  Returns how many
 * runs were written to out (at most cap). */
size_t ck_s3_runs(uint64_t first, const unsigned char *missing, size_t n, uint32_t max_run,
                  ck_s3_run *out, size_t cap);

#endif
