/* Writes one tensor as a torch.save archive: a DCP item.  The bytes are the
 * ones torch 2.x writes for a contiguous CPU tensor (torch.save through
 * PyTorchStreamWriter/miniz): members `<archive>/data.pkl`, `.format_version`,
 * `.storage_alignment`, `byteorder`, `data/0`, `version`,
 * `.data/serialization_id` in that order, each stored with a data descriptor
 * (general purpose bit 3) and padded with an "FB" extra field so its data
 * starts at a multiple of 64; ZIP64 end records always, ZIP64 extra fields
 * once a member or offset reaches 4 GiB.  data.pkl is the protocol 2
 * REDUCE(torch._utils._rebuild_tensor_v2, ...) over a typed storage, or
 * _rebuild_tensor_v3 over an UntypedStorage for dtypes without a legacy
 * storage class (float8, uint16/32/64...), with row-major strides.
 *
 * The tensor's bytes are pulled through a callback piece by piece (at most
 * CK_TSW_PIECE at a time) and the archive is pushed to a sequential sink, so
 * an item of any size is written with one bounded buffer and its CRC-32 is
 * computed as the bytes pass.  Writing a `stream.zstd/1` item chains the
 * sink through ck_zstd_writer (zstd_stream.h):
 *
 *     uint64_t raw_len;
 *     ck_torch_save_tensor_len("archive", dt, ndim, shape, &raw_len, err, errlen);
 *     ck_fd_sink out = { fd, file_off };
 *     ck_zstd_writer *z;
 *     ck_zstd_writer_new(&z, raw_len, ck_fd_sink_write, &out);
 *     ck_torch_save_tensor_to_sink(ck_zstd_writer_write, z, "archive", dt, ndim, shape,
 *                                  read_data, ctx, NULL, err, errlen);
 *     ck_zstd_writer_finish(z);   // item length: ck_zstd_writer_out_len(z)
 *
 * All functions return 0 or -errno with a one-line reason in err:
 * -EINVAL (bad archive name, dtype or rank), -ENOTSUP (quantized dtypes,
 * which torch saves differently), -EOVERFLOW (sizes), -ENOMEM, or whatever
 * the sink or read_data returned. */
#ifndef CKPT_TORCH_SAVE_WRITER_H
#define CKPT_TORCH_SAVE_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

#define CK_TSW_PIECE (1u << 20)

/* Appends len bytes to the output; 0 or -errno. */
typedef int (*ck_sink_fn)(void *ctx, const void *buf, size_t len);
/* Fills buf with len bytes of the tensor's row-major data starting at byte
 * off; 0 or -errno. */
typedef int (*ck_tensor_read_fn)(void *ctx, uint64_t off, void *buf, size_t len);

/* A sink that pwrites to fd at off and advances off (short writes retried,
 * EINTR handled). */
typedef struct {
    int fd;
    uint64_t off;
} ck_fd_sink;
int ck_fd_sink_write(void *ctx, const void *buf, size_t len);

/* The archive's length, known before any byte is written (it depends only
 * on the archive name, dtype and shape). */
int ck_torch_save_tensor_len(const char *archive_name, ck_dtype dt, uint32_t ndim,
                             const uint64_t *shape, uint64_t *item_len, char *err, size_t errlen);

/* Writes the archive to sink.  item_len (may be NULL) receives its length. */
int ck_torch_save_tensor_to_sink(ck_sink_fn sink, void *sink_ctx, const char *archive_name,
                                 ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                                 ck_tensor_read_fn read_data, void *read_ctx, uint64_t *item_len,
                                 char *err, size_t errlen);

/* Writes the archive with pwrite at file_off onward (nothing else in the
 * file is touched; the caller fsyncs). */
int ck_torch_save_write_tensor(int fd, uint64_t file_off, const char *archive_name, ck_dtype dt,
                               uint32_t ndim, const uint64_t *shape, ck_tensor_read_fn read_data,
                               void *read_ctx, uint64_t *item_len, char *err, size_t errlen);

/* An item whose data/0 bytes are written by the caller (streamed writes put
 * a tensor's bytes straight at their place in a new data file): the archive
 * is the same as the one above, byte for byte, split around the payload.
 *
 * ck_torch_save_tensor_data_offset gives where the payload starts in the
 * item (a multiple of 64, known from the dtype and shape alone), so the
 * caller can place bytes before it knows anything else.  Once the payload is
 * complete, ck_torch_save_tensor_frame builds the rest: head = item bytes
 * [0, head_len) (head_len == the data offset), tail = the bytes after the
 * payload up to item_len.  crc is the payload's CRC-32 (zlib's crc32), first
 * its first min(8, nbytes) bytes (torch's serialization id looks at them). */
typedef struct {
    uint8_t *buf;        /* head, then tail: one allocation */
    size_t head_len;
    const uint8_t *tail;
    size_t tail_len;
    uint64_t item_len;
} ck_item_frame;

int ck_torch_save_tensor_data_offset(const char *archive_name, ck_dtype dt, uint32_t ndim,
                                     const uint64_t *shape, uint64_t *data_off, char *err,
                                     size_t errlen);
int ck_torch_save_tensor_frame(const char *archive_name, ck_dtype dt, uint32_t ndim,
                               const uint64_t *shape, uint32_t crc, const uint8_t *first,
                               size_t first_len, ck_item_frame *out, char *err, size_t errlen);
void ck_item_frame_free(ck_item_frame *f);

/* Emits into w (a protocol 2 pickle_write.h writer) the value torch.save
 * pickles for a contiguous CPU tensor whose storage is the archive record
 * data/<storage_key>, as in the items above; *nbytes receives the record's
 * length.  For archives of many tensors (a state dict).  0 or -errno with
 * err set, as check the items above (quantized dtypes: -ENOTSUP). */
struct pkw;
int ck_torch_pickle_tensor(struct pkw *w, ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                           const char *storage_key, uint64_t *nbytes, char *err, size_t errlen);

/* The archive for a tensor whose bytes are in memory (numel * element size
 * at data), into a malloc'd buffer: for small items and tests. */
int ck_torch_save_tensor_mem(const char *archive_name, ck_dtype dt, uint32_t ndim,
                             const uint64_t *shape, const void *data, uint8_t **out,
                             uint64_t *out_len, char *err, size_t errlen);

#endif
