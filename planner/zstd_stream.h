/* Undo the `stream.zstd/1` transform: one or more zstd frames, possibly
 * without a content size (streaming writers), decoded into one buffer. */
#ifndef CKPT_ZSTD_STREAM_H
#define CKPT_ZSTD_STREAM_H

#include "byte_source.h"

/* Decodes all frames in src.  *out is malloc'd (caller frees), *out_len its
 * length.  Output beyond max_out bytes is refused with -E2BIG; a bad or
 * truncated frame is -EIO with err set. */
int ck_zstd_decode(const ck_byte_source *src, uint64_t max_out, uint8_t **out, uint64_t *out_len,
                   char *err, size_t errlen);

/* Where a decode may take its output buffer: take(ctx, want) returns a
 * malloc'd buffer of at least want bytes, or NULL (then it is malloc'd). */
typedef struct {
    uint8_t *(*take)(void *ctx, size_t want);
    void *ctx;
} ck_zstd_buffers;

/* ck_zstd_decode, its first output buffer from bufs (NULL: malloc). */
int ck_zstd_decode_into(const ck_byte_source *src, uint64_t max_out, const ck_zstd_buffers *bufs,
                        uint8_t **out, uint64_t *out_len, char *err, size_t errlen);

/* Encodes buf into one zstd frame (for writes that keep the transform).
 * The frame is byte for byte what torch's `stream.zstd/1` writer produces
 * for the same input (level 3, parameters chosen for the input's size, no
 * content size in the header, no checksum): one frame, because torch reads
 * only the first.  *out is malloc'd.  Returns 0, -ENOMEM or -EIO. */
int ck_zstd_encode(const void *buf, size_t len, uint8_t **out, size_t *out_len);

/* Streaming form of ck_zstd_encode, so an item of any size is compressed as
 * it is produced: compressed bytes go to sink(sink_ctx, ...) in order (sink
 * returns 0 or -errno).  ck_zstd_writer_write has the sink signature itself,
 * so a producer that writes to a sink can write through the compressor.
 * One writer makes one frame; finish ends it.  src_size is the exact number
 * of bytes that will be written, or CK_ZSTD_SIZE_UNKNOWN; knowing it gives
 * the same frame as ck_zstd_encode (and a different total is -EIO at finish).
 * Errors are returned as -errno (a sink error is passed through; -EIO for a
 * zstd failure) and are sticky. */
#define CK_ZSTD_SIZE_UNKNOWN UINT64_MAX
typedef struct ck_zstd_writer ck_zstd_writer;
int ck_zstd_writer_new(ck_zstd_writer **out, uint64_t src_size,
                       int (*sink)(void *ctx, const void *buf, size_t len), void *sink_ctx);
int ck_zstd_writer_write(void *writer, const void *buf, size_t len);
int ck_zstd_writer_finish(ck_zstd_writer *w);
uint64_t ck_zstd_writer_out_len(const ck_zstd_writer *w); /* compressed bytes emitted so far */
void ck_zstd_writer_free(ck_zstd_writer *w);

#endif
