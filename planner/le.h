/* Little-endian integers in byte buffers (zip records, the safetensors
 * header length, the .npy header length).  Byte by byte, so neither the
 * host's byte order nor the buffer's alignment matters; the caller has
 * checked that the bytes are there. */
#ifndef CKPT_LE_H
#define CKPT_LE_H

#include <stdint.h>

static inline uint16_t ck_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t ck_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t ck_le64(const uint8_t *p)
{
    return (uint64_t)ck_le32(p) | ((uint64_t)ck_le32(p + 4) << 32);
}

static inline void ck_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void ck_put_le32(uint8_t *p, uint32_t v)
{
    ck_put_le16(p, (uint16_t)v);
    ck_put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline void ck_put_le64(uint8_t *p, uint64_t v)
{
    ck_put_le32(p, (uint32_t)v);
    ck_put_le32(p + 4, (uint32_t)(v >> 32));
}

#endif
