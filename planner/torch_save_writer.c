#include "errmsg.h"
#include "torch_save_writer.h"
#include "fd_io.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "crc32.h"
#include "pickle_write.h"
#include "torch_item.h"
#include "zip_layout.h"

/* The records in the order torch writes them. */
enum { R_PKL, R_FORMAT, R_ALIGNMENT, R_BYTEORDER, R_DATA, R_VERSION, R_ID, N_RECORDS };
static const char *const RECORD_NAMES[N_RECORDS] = {
    "data.pkl", ".format_version", ".storage_alignment", "byteorder", "data/0", "version",
    ".data/serialization_id",
};
/* Name-length limit of a zip entry; the longest member is this suffix. */
#define LONGEST_SUFFIX "/.data/serialization_id"
#define MAX_NAME 65535u

/* What torch 2.x puts in the small records (torch/serialization.py _save and
 * PyTorchStreamWriter::writeEndOfFile). */
static const char FORMAT_VERSION[] = "1";
static const char STORAGE_ALIGNMENT[] = "64";
static const char BYTEORDER[] = "little";
static const char VERSION[] = "3\n";
#define SERIALIZATION_ID_LEN 40u

/* ---- serialization id ---------------------------------------------------
 * torch names each archive by "%020llu%020llu" of two hash_combine chains:
 * std::hash of every record name (libstdc++'s _Hash_bytes, a MurmurHash2
 * variant) and every CRC-32 that passes through its write callback inside a
 * data descriptor.  Reproducing it keeps our items byte-identical to
 * torch's. */

static uint64_t hash_combine(uint64_t seed, uint64_t value)
{
    return seed ^ (value + 0x9e3779b9u + (seed << 6) + (seed >> 2));
}

static uint64_t shift_mix(uint64_t v) { return v ^ (v >> 47); }

static uint64_t load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = (v << 8) | p[n];
    return v;
}

static uint64_t std_hash_string(const char *s)
{
    const uint64_t mul = ((uint64_t)0xc6a4a793u << 32) + 0x5bd1e995u;
    const uint8_t *p = (const uint8_t *)s;
    size_t len = strlen(s);
    size_t aligned = len & ~(size_t)7;
    uint64_t h = 0xc70f6907u ^ (len * mul);
    for (size_t i = 0; i < aligned; i += 8) {
        h ^= shift_mix(load_le(p + i, 8) * mul) * mul;
        h *= mul;
    }
    if (len & 7) {
        h ^= load_le(p + aligned, len & 7);
        h *= mul;
    }
    return shift_mix(shift_mix(h) * mul);
}

/* ---- archive state ------------------------------------------------------
 * Every record's size is known before the first byte (the serialization id
 * has a fixed length), so zip_layout.c places the records and renders their
 * headers, descriptors and central directory: the same bytes as an archive
 * served by the .pt view. */

typedef struct {
    ck_sink_fn sink;     /* NULL: only lay out (length computation) */
    void *sink_ctx;
    uint64_t pos;        /* archive bytes emitted or, for a frame's payload, skipped */
    ck_zip_entry ent[N_RECORDS]; /* full names "<archive>/<record>" in names */
    ck_zip_summary sum;
    uint32_t crc[N_RECORDS];
    char *names;
    uint8_t *hdr;        /* one local header, sized for the longest name */
    uint64_t crc_chain;  /* torch's combined_uncomp_crc32_ */
    uint8_t *buf;        /* one piece of tensor data */
    /* frame mode (ck_torch_save_tensor_frame): data/0's bytes are placed by
     * someone else; only their CRC and first bytes are given */
    bool frame;
    uint32_t frame_crc;
    const uint8_t *frame_first;
    size_t frame_first_len;
    char *err;
    size_t errlen;
} zwriter;

static int lay_out(zwriter *z, const char *archive, const uint64_t size[N_RECORDS])
{
    size_t archive_len = strlen(archive), names_len = 0;
    for (int i = 0; i < N_RECORDS; i++)
        names_len += archive_len + 1 + strlen(RECORD_NAMES[i]) + 1;
    if (!(z->names = malloc(names_len)))
        return -ENOMEM;
    char *p = z->names;
    for (int i = 0; i < N_RECORDS; i++) {
        z->ent[i].name = p;
        z->ent[i].size = size[i];
        p += sprintf(p, "%s/%s", archive, RECORD_NAMES[i]) + 1;
    }
    int rc = ck_zip_layout(z->ent, N_RECORDS, &z->sum);
    if (rc < 0)
        return ck_fail(z->err, z->errlen, rc, "torch.save: archive too large");
    return 0;
}

/* ck_zip_layout checked that the whole archive's length fits in pos. */
static int emit(zwriter *z, const void *p, size_t n)
{
    z->pos += n;
    if (n == 0)
        return 0;
    int rc = z->sink(z->sink_ctx, p, n);
    if (rc < 0)
        return ck_fail(z->err, z->errlen, rc, "torch.save: cannot write archive bytes at %llu: %s",
                    (unsigned long long)(z->pos - n), strerror(-rc));
    return 0;
}

/* torch's write callback looks at every write it gets, not only at data
 * descriptors: any write of 8+ bytes that starts with the descriptor
 * signature feeds the id (a record whose data begins with "PK\7\b" does). */
static void observe_torch_write(zwriter *z, const uint8_t *p, uint64_t n)
{
    if (n >= 8 && p[0] == 'P' && p[1] == 'K' && p[2] == 7 && p[3] == 8)
        z->crc_chain = hash_combine(z->crc_chain, (uint32_t)load_le(p + 4, 4));
}

/* Local header, name, ZIP64 extra and "FB" padding of record i.  Of these
 * torch's id can see only the name: the others start with other bytes. */
static int begin_record(zwriter *z, int i)
{
    const char *name = z->ent[i].name;
    observe_torch_write(z, (const uint8_t *)name, strlen(name));
    return emit(z, z->hdr, ck_zip_local_header(&z->ent[i], z->hdr));
}

static int end_record(zwriter *z, int i)
{
    uint8_t dd[CK_ZIP_DESCRIPTOR_MAX];
    size_t n = ck_zip_descriptor(&z->ent[i], z->crc[i], dd);
    observe_torch_write(z, dd, n);
    return emit(z, dd, n);
}

static int small_record(zwriter *z, int i, const void *data)
{
    size_t len = (size_t)z->ent[i].size;
    int rc = begin_record(z, i);
    if (rc < 0)
        return rc;
    z->crc[i] = (uint32_t)crc32(0L, data, (uInt)len);
    observe_torch_write(z, data, len);
    rc = emit(z, data, len);
    return rc < 0 ? rc : end_record(z, i);
}

/* data/0, pulled from read_data piece by piece. */
static int data_record(zwriter *z, ck_tensor_read_fn read_data, void *read_ctx)
{
    uint64_t size = z->ent[R_DATA].size;
    int rc = begin_record(z, R_DATA);
    if (rc < 0)
        return rc;
    if (z->frame) { /* the payload is elsewhere: account for it, emit nothing */
        if (size >= 8) /* only the first 8 bytes matter (see observe_torch_write) */
            observe_torch_write(z, z->frame_first, size);
        z->pos += size;
        z->crc[R_DATA] = z->frame_crc;
        return end_record(z, R_DATA);
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t off = 0; off < size;) {
        size_t n = size - off < CK_TSW_PIECE ? (size_t)(size - off) : CK_TSW_PIECE;
        rc = read_data(read_ctx, off, z->buf, n);
        if (rc < 0)
            return ck_fail(z->err, z->errlen, rc, "torch.save: cannot read tensor bytes at %llu: %s",
                        (unsigned long long)off, strerror(-rc));
        if (off == 0)
            observe_torch_write(z, z->buf, size); /* torch writes data/0 in one call */
        crc = ck_crc32((uint32_t)crc, z->buf, n);
        rc = emit(z, z->buf, n);
        if (rc < 0)
            return rc;
        off += n;
    }
    z->crc[R_DATA] = (uint32_t)crc;
    return end_record(z, R_DATA);
}

/* Central directory and the ZIP64 and classic end records: a few hundred
 * bytes besides the names. */
static int central_directory(zwriter *z)
{
    size_t len = (size_t)z->sum.cd_len;
    uint8_t *cd = malloc(len);
    if (!cd)
        return -ENOMEM;
    int rc = ck_zip_central_directory(z->ent, z->crc, N_RECORDS, &z->sum, cd, len);
    if (rc == 0)
        rc = emit(z, cd, len);
    free(cd);
    return rc;
}

/* Every record in order, then the central directory, to z->sink. */
static int write_records(zwriter *z, const uint8_t *pkl, size_t archive_len,
                         ck_tensor_read_fn read_data, void *read_ctx)
{
    uint64_t nbytes = z->ent[R_DATA].size;
    if (!(z->hdr = malloc(CK_ZIP_LOCAL_MAX(archive_len + strlen(LONGEST_SUFFIX)))))
        return -ENOMEM;
    if (nbytes > 0 && !z->frame &&
        !(z->buf = malloc(nbytes < CK_TSW_PIECE ? (size_t)nbytes : CK_TSW_PIECE)))
        return -ENOMEM;
    int rc = small_record(z, R_PKL, pkl);
    if (rc == 0)
        rc = small_record(z, R_FORMAT, FORMAT_VERSION);
    if (rc == 0)
        rc = small_record(z, R_ALIGNMENT, STORAGE_ALIGNMENT);
    if (rc == 0)
        rc = small_record(z, R_BYTEORDER, BYTEORDER);
    if (rc == 0)
        rc = data_record(z, read_data, read_ctx);
    if (rc == 0)
        rc = small_record(z, R_VERSION, VERSION);
    if (rc == 0) {
        /* libstdc++'s unordered_set yields the six names before it in
         * reverse order of insertion, and torch combines them in that order */
        uint64_t names = 0;
        for (int i = R_ID; i-- > 0;)
            names = hash_combine(names, std_hash_string(RECORD_NAMES[i]));
        char id[SERIALIZATION_ID_LEN + 1];
        snprintf(id, sizeof id, "%020llu%020llu", (unsigned long long)names,
                 (unsigned long long)z->crc_chain);
        rc = small_record(z, R_ID, id);
    }
    if (rc == 0)
        rc = central_directory(z);
    return rc;
}

/* ---- data.pkl ----------------------------------------------------------- */

/* The REDUCE(_rebuild_tensor_v2/_v3, ...) of a contiguous tensor whose
 * storage is record data/<storage_key>, into w (protocol 2). */
static void pickle_tensor(pkw *w, const ck_dtype_info *info, uint32_t ndim, const uint64_t *shape,
                          uint64_t numel, uint64_t nbytes, const char *storage_key)
{
    int64_t stride[CK_MAX_DIMS];
    uint64_t s = 1;
    for (uint32_t d = ndim; d-- > 0;) {
        /* torch's contiguous strides treat a 0-size dim as 1 */
        stride[d] = (int64_t)s;
        s *= shape[d] ? shape[d] : 1;
    }
    bool v3 = info->storage_class == NULL;
    pkw_global(w, "torch._utils", v3 ? "_rebuild_tensor_v3" : "_rebuild_tensor_v2");
    pkw_op(w, PKW_MARK);
    /* persistent id ('storage', class, key, location, count) */
    pkw_op(w, PKW_MARK);
    pkw_str(w, "storage");
    if (v3)
        pkw_global(w, "torch.storage", "UntypedStorage");
    else
        pkw_global(w, "torch", info->storage_class);
    pkw_str(w, storage_key);
    pkw_str(w, "cpu");
    pkw_int(w, (int64_t)(v3 ? nbytes : numel)); /* UntypedStorage counts bytes */
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_BINPERSID);
    pkw_int(w, 0); /* storage_offset */
    for (int pass = 0; pass < 2; pass++) {
        /* size, then stride: tuples as pickle writes them */
        if (ndim == 0) {
            pkw_op(w, PKW_EMPTY_TUPLE);
            continue;
        }
        if (ndim > 3)
            pkw_op(w, PKW_MARK);
        for (uint32_t d = 0; d < ndim; d++)
            pkw_int(w, pass == 0 ? (int64_t)shape[d] : stride[d]);
        static const uint8_t tuple_n[4] = { 0, PKW_TUPLE1, PKW_TUPLE2, PKW_TUPLE3 };
        pkw_op(w, ndim > 3 ? PKW_TUPLE : tuple_n[ndim]);
    }
    pkw_bool(w, 0); /* requires_grad */
    pkw_global(w, "collections", "OrderedDict");
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_REDUCE); /* backward_hooks = OrderedDict() */
    if (v3)
        pkw_global(w, "torch", info->torch_name);
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_REDUCE);
}

static int build_data_pkl(const ck_dtype_info *info, uint32_t ndim, const uint64_t *shape,
                          uint64_t numel, uint64_t nbytes, uint8_t **out, size_t *out_len)
{
    pkw *w = pkw_new(2);
    if (!w)
        return -ENOMEM;
    pickle_tensor(w, info, ndim, shape, numel, nbytes, "0");
    int rc = pkw_finish(w, out, out_len);
    pkw_free(w);
    return rc;
}

/* ---- entry points ------------------------------------------------------- */

static int check_args(const char *archive_name, ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                      const ck_dtype_info **info, uint64_t *numel, uint64_t *nbytes, char *err,
                      size_t errlen)
{
    if (!archive_name || archive_name[0] == '\0' || strchr(archive_name, '/') ||
        strlen(archive_name) > MAX_NAME - strlen(LONGEST_SUFFIX))
        return ck_fail(err, errlen, -EINVAL, "torch.save: bad archive name");
    *info = ck_dtype_get(dt);
    if (!*info)
        return ck_fail(err, errlen, -EINVAL, "torch.save: invalid dtype %d", (int)dt);
    if (dt == CK_DT_QINT8 || dt == CK_DT_QUINT8 || dt == CK_DT_QINT32)
        return ck_fail(err, errlen, -ENOTSUP, "torch.save: quantized tensors (%s) are not written",
                    (*info)->torch_name);
    if (ndim > CK_MAX_DIMS)
        return ck_fail(err, errlen, -EINVAL, "torch.save: %u dimensions exceed the limit of %d", ndim,
                    CK_MAX_DIMS);
    uint64_t n = 1;
    for (uint32_t d = 0; d < ndim; d++)
        if (shape[d] > (uint64_t)INT64_MAX || __builtin_mul_overflow(n, shape[d], &n))
            return ck_fail(err, errlen, -EOVERFLOW, "torch.save: shape overflows");
    if (n > (uint64_t)INT64_MAX || __builtin_mul_overflow(n, (uint64_t)(*info)->size, nbytes) ||
        *nbytes > (uint64_t)INT64_MAX)
        return ck_fail(err, errlen, -EOVERFLOW, "torch.save: tensor size overflows");
    *numel = n;
    return 0;
}

/* frame: NULL, or the zwriter fields of frame mode (CRC and first bytes). */
static int write_archive(ck_sink_fn sink, void *sink_ctx, const char *archive_name, ck_dtype dt,
                         uint32_t ndim, const uint64_t *shape, ck_tensor_read_fn read_data,
                         void *read_ctx, const zwriter *frame, uint64_t *item_len,
                         uint64_t *frame_split, char *err, size_t errlen)
{
    const ck_dtype_info *info = NULL;
    uint64_t numel = 0, nbytes = 0;
    int rc = check_args(archive_name, dt, ndim, shape, &info, &numel, &nbytes, err, errlen);
    if (rc < 0)
        return rc;
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    rc = build_data_pkl(info, ndim, shape, numel, nbytes, &pkl, &pkl_len);
    if (rc < 0)
        return ck_fail(err, errlen, rc, "torch.save: cannot build data.pkl");

    zwriter z = { .sink = sink, .sink_ctx = sink_ctx, .err = err, .errlen = errlen };
    if (frame) {
        z.frame = true;
        z.frame_crc = frame->frame_crc;
        z.frame_first = frame->frame_first;
        z.frame_first_len = frame->frame_first_len;
        if (nbytes >= 8 && z.frame_first_len < 8) {
            free(pkl);
            return ck_fail(err, errlen, -EINVAL, "torch.save: the payload's first bytes are missing");
        }
    }
    const uint64_t sizes[N_RECORDS] = {
        [R_PKL] = pkl_len, [R_FORMAT] = strlen(FORMAT_VERSION),
        [R_ALIGNMENT] = strlen(STORAGE_ALIGNMENT), [R_BYTEORDER] = strlen(BYTEORDER),
        [R_DATA] = nbytes, [R_VERSION] = strlen(VERSION), [R_ID] = SERIALIZATION_ID_LEN,
    };
    rc = lay_out(&z, archive_name, sizes);
    if (rc == 0 && sink)
        rc = write_records(&z, pkl, strlen(archive_name), read_data, read_ctx);
    free(z.buf);
    free(z.hdr);
    free(z.names);
    free(pkl);
    if (rc == 0 && item_len)
        *item_len = z.sum.total;
    if (rc == 0 && frame_split)
        *frame_split = z.ent[R_DATA].data_off;
    return rc;
}

int ck_torch_pickle_tensor(pkw *w, ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                           const char *storage_key, uint64_t *nbytes, char *err, size_t errlen)
{
    const ck_dtype_info *info = NULL;
    uint64_t numel = 0;
    int rc = check_args("archive", dt, ndim, shape, &info, &numel, nbytes, err, errlen);
    if (rc < 0)
        return rc;
    pickle_tensor(w, info, ndim, shape, numel, *nbytes, storage_key);
    return 0;
}

int ck_torch_save_tensor_len(const char *archive_name, ck_dtype dt, uint32_t ndim,
                             const uint64_t *shape, uint64_t *item_len, char *err, size_t errlen)
{
    return write_archive(NULL, NULL, archive_name, dt, ndim, shape, NULL, NULL, NULL, item_len, NULL,
                         err, errlen);
}

int ck_torch_save_tensor_to_sink(ck_sink_fn sink, void *sink_ctx, const char *archive_name,
                                 ck_dtype dt, uint32_t ndim, const uint64_t *shape,
                                 ck_tensor_read_fn read_data, void *read_ctx, uint64_t *item_len,
                                 char *err, size_t errlen)
{
    if (!sink || !read_data)
        return ck_fail(err, errlen, -EINVAL, "torch.save: no sink or no data source");
    return write_archive(sink, sink_ctx, archive_name, dt, ndim, shape, read_data, read_ctx, NULL,
                         item_len, NULL, err, errlen);
}

typedef struct {
    uint8_t *data;
    size_t len, cap;
} grow_out;

static int grow_out_write(void *ctx, const void *buf, size_t len)
{
    grow_out *g = ctx;
    if (len > g->cap - g->len) {
        size_t cap = g->cap ? g->cap : 1024;
        while (cap - g->len < len) {
            if (cap > SIZE_MAX / 2)
                return -ENOMEM;
            cap *= 2;
        }
        uint8_t *v = realloc(g->data, cap);
        if (!v)
            return -ENOMEM;
        g->data = v;
        g->cap = cap;
    }
    memcpy(g->data + g->len, buf, len);
    g->len += len;
    return 0;
}

int ck_torch_save_tensor_data_offset(const char *archive_name, ck_dtype dt, uint32_t ndim,
                                     const uint64_t *shape, uint64_t *data_off, char *err,
                                     size_t errlen)
{
    /* the count-only pass with frame mode on: nothing is emitted, the split
     * is where data/0's bytes start (no CRC or first bytes needed yet) */
    static const uint8_t zeros[8];
    zwriter f = { .frame_first = zeros, .frame_first_len = sizeof zeros };
    return write_archive(NULL, NULL, archive_name, dt, ndim, shape, NULL, NULL, &f, NULL, data_off,
                         err, errlen);
}

int ck_torch_save_tensor_frame(const char *archive_name, ck_dtype dt, uint32_t ndim,
                               const uint64_t *shape, uint32_t crc, const uint8_t *first,
                               size_t first_len, ck_item_frame *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    zwriter f = { .frame_crc = crc, .frame_first = first, .frame_first_len = first_len };
    grow_out g = { 0 };
    uint64_t item_len = 0, split = 0;
    int rc = write_archive(grow_out_write, &g, archive_name, dt, ndim, shape, NULL, NULL, &f,
                           &item_len, &split, err, errlen);
    if (rc < 0) {
        free(g.data);
        return rc;
    }
    /* what was emitted is head + tail; the payload sits between them */
    out->buf = g.data;
    out->head_len = (size_t)split;
    out->tail = g.data + split;
    out->tail_len = g.len - (size_t)split;
    out->item_len = item_len;
    return 0;
}

void ck_item_frame_free(ck_item_frame *f)
{
    free(f->buf);
    memset(f, 0, sizeof *f);
}

int ck_fd_sink_write(void *ctx, const void *buf, size_t len)
{
    ck_fd_sink *s = ctx;
    int rc = ck_pwrite_full(s->fd, buf, len, s->off);
    if (!rc)
        s->off += len;
    return rc;
}

int ck_torch_save_write_tensor(int fd, uint64_t file_off, const char *archive_name, ck_dtype dt,
                               uint32_t ndim, const uint64_t *shape, ck_tensor_read_fn read_data,
                               void *read_ctx, uint64_t *item_len, char *err, size_t errlen)
{
    ck_fd_sink s = { fd, file_off };
    return ck_torch_save_tensor_to_sink(ck_fd_sink_write, &s, archive_name, dt, ndim, shape,
                                        read_data, read_ctx, item_len, err, errlen);
}

typedef struct {
    uint8_t *data;
    uint64_t len, cap;
} mem_out;

static int mem_out_write(void *ctx, const void *buf, size_t len)
{
    mem_out *m = ctx;
    if (len > m->cap - m->len)
        return -EOVERFLOW; /* the length was computed up front; more is a bug */
    memcpy(m->data + m->len, buf, len);
    m->len += len;
    return 0;
}

static int mem_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    memcpy(buf, (const uint8_t *)ctx + off, len);
    return 0;
}

int ck_torch_save_tensor_mem(const char *archive_name, ck_dtype dt, uint32_t ndim,
                             const uint64_t *shape, const void *data, uint8_t **out,
                             uint64_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    uint64_t len;
    int rc = ck_torch_save_tensor_len(archive_name, dt, ndim, shape, &len, err, errlen);
    if (rc < 0)
        return rc;
    if (len > SIZE_MAX)
        return ck_fail(err, errlen, -EOVERFLOW, "torch.save: archive does not fit in memory");
    mem_out m = { malloc((size_t)len), 0, len };
    if (!m.data)
        return -ENOMEM;
    rc = ck_torch_save_tensor_to_sink(mem_out_write, &m, archive_name, dt, ndim, shape, mem_read,
                                      (void *)data, NULL, err, errlen);
    if (rc < 0) {
        free(m.data);
        return rc;
    }
    *out = m.data;
    *out_len = m.len;
    return 0;
}
