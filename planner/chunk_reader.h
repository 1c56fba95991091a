/* Reading a chunk's row-major image: resolves the item layout on first use,
 * serves direct chunks with pread, others (zstd, strided) from the decoded-
 * chunk cache. */
#ifndef CKPT_CHUNK_READER_H
#define CKPT_CHUNK_READER_H

#include "ckpt.h"
#include "geometry.h"

/* Learns the chunk's layout (parses the zip and data.pkl).  0 or -errno;
 * failures are logged once with key, file and offset and are sticky. */
int ck_chunk_resolve(ck_checkpoint *ck, const ck_key *key, ck_chunk *c);

/* Resolves the chunk and, when it is served decoded, makes sure its image
 * is in the decoded-chunk cache (decoding it if needed).  0 or -errno. */
int ck_chunk_warm(ck_checkpoint *ck, const ck_key *key, ck_chunk *c);

/* Copies len bytes of the chunk's image starting at off into dst. */
int ck_chunk_read(ck_checkpoint *ck, const ck_key *key, ck_chunk *c, uint64_t off, void *dst,
                  size_t len);

/* Carries out a load plan into dst (dst[0] is tensor byte `base`): reads
 * are grouped per chunk; a direct chunk's nearby runs are fetched with one
 * pread of their span, a decoded chunk's from one cache lookup. */
int ck_execute_plan(ck_checkpoint *ck, const ck_key *key, const ck_read_vec *plan, uint64_t base,
                    void *dst);

/* Reads bytes [off, off+len) of a key's content into dst (clipped at its
 * size); *got receives the count.  Uses the load planner for tensors. */
int ck_key_read(ck_checkpoint *ck, const ck_key *key, uint64_t off, void *dst, size_t len,
                size_t *got);
/* ck_key_read carrying out plan, the load plan of the same range that
 * ck_key_fd_spans made before it declined, so a read plans its range once.
 * plan NULL or empty: the plan is made here. */
int ck_key_read_plan(ck_checkpoint *ck, const ck_key *key, uint64_t off, void *dst, size_t len,
                     const ck_read_vec *plan, size_t *got);

/* Runs shorter than this on average are read into memory instead. */
#define CK_FD_SPAN_MIN (32u << 10)

/* A run of a key's bytes that lies as it is in a local file. */
typedef struct {
    int fd;
    uint32_t file;
    uint64_t off; /* in the file */
    size_t len;
} ck_fd_span;

/* Where bytes [off, off+len) of key (clipped at its size, *got bytes) lie
 * in local files, when all of them do as they are: at most max runs, in
 * order, each file's identity checked as pinned.  -EAGAIN when some come
 * from a decoded chunk or an object store, or would take more runs or runs
 * shorter than CK_FD_SPAN_MIN on average: the caller reads them into
 * memory instead, with ck_key_read_plan and *plan.  *plan (empty on entry)
 * receives the range's load plan, or stays empty when none was made; the
 * caller frees it (ck_read_vec_free) whatever the result.  The fds stay
 * open while ck does; read-ahead is started as ck_key_read starts it. */
int ck_key_fd_spans(ck_checkpoint *ck, const ck_key *key, uint64_t off, size_t len,
                    ck_fd_span *spans, size_t max, size_t *nspans, size_t *got,
                    ck_read_vec *plan);

#endif
