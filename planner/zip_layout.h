/* The layout of a stored (uncompressed) zip archive written the way torch's
 * PyTorchStreamWriter (miniz) writes torch.save files: offsets come from
 * member names and sizes alone, and each header is rendered on demand, so
 * the .pt view serves archives with it and torch_save_writer.c streams its
 * items with it.  Members' data start at
 * multiples of 64 (an "FB" padding extra field), local headers carry no
 * CRC or sizes (general purpose bit 3: they follow the data in a data
 * descriptor), ZIP64 end records are always written and ZIP64 extra fields
 * once a size or offset reaches 4 GiB.
 *
 * Only the data descriptors and the central directory hold CRC-32s, so a
 * caller that learns them late (by reading the members) needs them only
 * when those bytes are read. */
#ifndef CKPT_ZIP_LAYOUT_H
#define CKPT_ZIP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define CK_ZIP_ALIGN 64u
/* A local header: 30 bytes, the name, ZIP64 extra (at most 4 + 24), padding
 * field (4 + at most 63). */
#define CK_ZIP_LOCAL_MAX(name_len) (30u + (name_len) + 28u + 4u + CK_ZIP_ALIGN)
#define CK_ZIP_DESCRIPTOR_MAX 24u

typedef struct {
    const char *name;   /* full member name ("archive/data/0"), owned by the caller */
    uint64_t size;      /* member bytes */
    /* set by ck_zip_layout */
    uint64_t local_off; /* where its local header starts */
    uint64_t data_off;  /* where its bytes start: a multiple of CK_ZIP_ALIGN */
    uint64_t end_off;   /* after its data descriptor (none for an empty member) */
} ck_zip_entry;

typedef struct {
    uint64_t cd_off;    /* central directory */
    uint64_t cd_len;    /* central directory + ZIP64 end + locator + end record */
    uint64_t total;     /* the archive's length */
} ck_zip_summary;

/* Places n entries one after the other from offset 0.  -EINVAL for a name
 * longer than 65535 bytes, -EOVERFLOW if offsets overflow. */
int ck_zip_layout(ck_zip_entry *e, size_t n, ck_zip_summary *out);
/* Renders e's local header (everything from local_off to data_off) into
 * out, which has CK_ZIP_LOCAL_MAX(strlen(name)) bytes; returns its length. */
size_t ck_zip_local_header(const ck_zip_entry *e, uint8_t *out);
/* Renders e's data descriptor (end_off - data_off - size bytes) given the
 * member's CRC-32; returns its length (0 for an empty member). */
size_t ck_zip_descriptor(const ck_zip_entry *e, uint32_t crc, uint8_t out[CK_ZIP_DESCRIPTOR_MAX]);
/* Renders the central directory and end records (s->cd_len bytes) into out
 * given every member's CRC-32.  0, or -EINVAL if cap is too small. */
int ck_zip_central_directory(const ck_zip_entry *e, const uint32_t *crc, size_t n,
                             const ck_zip_summary *s, uint8_t *out, size_t cap);

#endif
