/* Layout and headers of a torch.save-style zip archive (see zip_layout.h):
 * miniz's flags, padding and end records, so an archive served or written
 * with them looks to a zip reader like one torch wrote. */
#include "zip_layout.h"

#include <errno.h>
#include <string.h>
#include "le.h"

#define LFH_SIZE 30u
#define CDH_SIZE 46u
#define DD32_SIZE 16u
#define DD64_SIZE 24u
#define Z64_EOCD_SIZE 56u
#define Z64_LOCATOR_SIZE 20u
#define EOCD_SIZE 22u
#define U32_SAT 0xFFFFFFFFu
#define MAX_NAME 65535u

static uint32_t sat32(uint64_t v) { return v >= U32_SAT ? U32_SAT : (uint32_t)v; }

static int needs_zip64(const ck_zip_entry *e)
{
    return e->size >= U32_SAT || e->local_off >= U32_SAT;
}

/* The ZIP64 extra of a local header as miniz writes it for torch: the size
 * and a compressed size of 0 (not known yet when it is written) when the
 * size needs them, the header's own offset when that does. */
static size_t local_zip64_len(const ck_zip_entry *e)
{
    size_t n = (e->size >= U32_SAT ? 16 : 0) + (e->local_off >= U32_SAT ? 8 : 0);
    return n ? 4 + n : 0;
}

/* Central directory ZIP64 extra: sizes if saturated, then the offset if
 * saturated, in the order readers expect them. */
static size_t cd_zip64(const ck_zip_entry *e, uint8_t out[4 + 24])
{
    size_t f = 4;
    if (e->size >= U32_SAT) {
        ck_put_le64(out + f, e->size);
        ck_put_le64(out + f + 8, e->size);
        f += 16;
    }
    if (e->local_off >= U32_SAT) {
        ck_put_le64(out + f, e->local_off);
        f += 8;
    }
    if (f == 4)
        return 0;
    ck_put_le16(out, 0x0001);
    ck_put_le16(out + 2, (uint16_t)(f - 4));
    return f;
}

static size_t padding_len(const ck_zip_entry *e, size_t name_len)
{
    uint64_t start = e->local_off + LFH_SIZE + name_len + local_zip64_len(e) + 4;
    return (size_t)((CK_ZIP_ALIGN - start % CK_ZIP_ALIGN) % CK_ZIP_ALIGN);
}

static size_t descriptor_len(const ck_zip_entry *e)
{
    return e->size == 0 ? 0 : needs_zip64(e) ? DD64_SIZE : DD32_SIZE;
}

int ck_zip_layout(ck_zip_entry *e, size_t n, ck_zip_summary *out)
{
    uint64_t pos = 0, cd = 0;
    for (size_t i = 0; i < n; i++) {
        size_t name_len = strlen(e[i].name);
        if (name_len > MAX_NAME)
            return -EINVAL;
        e[i].local_off = pos;
        uint64_t hdr = LFH_SIZE + name_len + local_zip64_len(&e[i]) + 4 +
                       padding_len(&e[i], name_len);
        if (__builtin_add_overflow(pos, hdr, &e[i].data_off) ||
            __builtin_add_overflow(e[i].data_off, e[i].size, &pos) ||
            __builtin_add_overflow(pos, (uint64_t)descriptor_len(&e[i]), &pos))
            return -EOVERFLOW;
        e[i].end_off = pos;
        uint8_t z64[4 + 24];
        cd += CDH_SIZE + name_len + cd_zip64(&e[i], z64);
    }
    out->cd_off = pos;
    out->cd_len = cd + Z64_EOCD_SIZE + Z64_LOCATOR_SIZE + EOCD_SIZE;
    if (__builtin_add_overflow(pos, out->cd_len, &out->total))
        return -EOVERFLOW;
    return 0;
}

size_t ck_zip_local_header(const ck_zip_entry *e, uint8_t *out)
{
    size_t name_len = strlen(e->name);
    size_t pad = padding_len(e, name_len);
    size_t z64 = local_zip64_len(e);
    memset(out, 0, LFH_SIZE);
    ck_put_le32(out, 0x04034b50u);
    /* version needed 0, method 0 (stored), time/date 0; CRC and sizes 0:
     * they are in the data descriptor, which miniz omits for empty members */
    ck_put_le16(out + 6, (uint16_t)(e->size > 0 ? 0x0808 : 0x0800));
    ck_put_le16(out + 26, (uint16_t)name_len);
    ck_put_le16(out + 28, (uint16_t)(z64 + 4 + pad));
    size_t p = LFH_SIZE;
    memcpy(out + p, e->name, name_len);
    p += name_len;
    if (z64) {
        size_t f = p + 4;
        if (e->size >= U32_SAT) {
            ck_put_le64(out + f, e->size);
            ck_put_le64(out + f + 8, 0);
            f += 16;
        }
        if (e->local_off >= U32_SAT) {
            ck_put_le64(out + f, e->local_off);
            f += 8;
        }
        ck_put_le16(out + p, 0x0001);
        ck_put_le16(out + p + 2, (uint16_t)(z64 - 4));
        p += z64;
    }
    out[p] = 'F';
    out[p + 1] = 'B';
    ck_put_le16(out + p + 2, (uint16_t)pad);
    memset(out + p + 4, 'Z', pad);
    return p + 4 + pad;
}

size_t ck_zip_descriptor(const ck_zip_entry *e, uint32_t crc, uint8_t out[CK_ZIP_DESCRIPTOR_MAX])
{
    size_t n = descriptor_len(e);
    if (n == 0)
        return 0;
    ck_put_le32(out, 0x08074b50u);
    ck_put_le32(out + 4, crc);
    if (n == DD64_SIZE) {
        ck_put_le64(out + 8, e->size);
        ck_put_le64(out + 16, e->size);
    } else {
        ck_put_le32(out + 8, (uint32_t)e->size);
        ck_put_le32(out + 12, (uint32_t)e->size);
    }
    return n;
}

int ck_zip_central_directory(const ck_zip_entry *e, const uint32_t *crc, size_t n,
                             const ck_zip_summary *s, uint8_t *out, size_t cap)
{
    if (s->cd_len > cap)
        return -EINVAL;
    size_t p = 0;
    for (size_t i = 0; i < n; i++) {
        size_t name_len = strlen(e[i].name);
        uint8_t z64[4 + 24];
        size_t x = cd_zip64(&e[i], z64);
        uint8_t *h = out + p;
        memset(h, 0, CDH_SIZE);
        ck_put_le32(h, 0x02014b50u);
        ck_put_le16(h + 8, (uint16_t)(e[i].size > 0 ? 0x0808 : 0x0800));
        ck_put_le32(h + 16, crc[i]);
        ck_put_le32(h + 20, sat32(e[i].size));
        ck_put_le32(h + 24, sat32(e[i].size));
        ck_put_le16(h + 28, (uint16_t)name_len);
        ck_put_le16(h + 30, (uint16_t)x);
        ck_put_le32(h + 42, sat32(e[i].local_off));
        p += CDH_SIZE;
        memcpy(out + p, e[i].name, name_len);
        p += name_len;
        memcpy(out + p, z64, x);
        p += x;
    }
    uint64_t cd_size = p;
    uint64_t z64_off = s->cd_off + cd_size;
    uint8_t *q = out + p;
    memset(q, 0, Z64_EOCD_SIZE + Z64_LOCATOR_SIZE + EOCD_SIZE);
    ck_put_le32(q, 0x06064b50u);
    ck_put_le64(q + 4, Z64_EOCD_SIZE - 12);
    ck_put_le16(q + 12, 0x031E);
    ck_put_le16(q + 14, 0x002D);
    ck_put_le64(q + 24, (uint64_t)n);
    ck_put_le64(q + 32, (uint64_t)n);
    ck_put_le64(q + 40, cd_size);
    ck_put_le64(q + 48, s->cd_off);
    q += Z64_EOCD_SIZE;
    ck_put_le32(q, 0x07064b50u);
    ck_put_le64(q + 8, z64_off);
    ck_put_le32(q + 16, 1);
    q += Z64_LOCATOR_SIZE;
    ck_put_le32(q, 0x06054b50u);
    uint16_t n16 = n >= 0xFFFF ? 0xFFFF : (uint16_t)n;
    ck_put_le16(q + 8, n16);
    ck_put_le16(q + 10, n16);
    ck_put_le32(q + 12, sat32(cd_size));
    ck_put_le32(q + 16, sat32(s->cd_off));
    return 0;
}
