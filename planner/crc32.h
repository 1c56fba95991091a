/* CRC-32 (zlib's crc32: reflected 0xEDB88320, pre- and post-inverted), the
 * checksum of every zip member an item holds.  Same contract as zlib's
 * crc32_z(crc, buf, len) (start with 0, chain the results), but folded
 * with carry-less multiplies (PCLMULQDQ) where the CPU has them: streamed
 * writes take the CRC of every byte a `cp` writes, and zlib's table code
 * was a fifth of the daemon's time there. */
#ifndef CKPT_CRC32_H
#define CKPT_CRC32_H

#include <stddef.h>
#include <stdint.h>

uint32_t ck_crc32(uint32_t crc, const void *buf, size_t len);

#endif
