/* ck_crc32 (planner/crc32.c) equals zlib's crc32_z for every length 0..2100
 * at several offsets and seeds, chained over uneven pieces, and on a large
 * buffer: the folded path and its zlib tail must agree with zlib exactly,
 * since the CRC ends up in every item's zip records. */
#include <stdint.h>
#include <stdlib.h>
#include <zlib.h>

#include "check.h"
#include "crc32.h"

int main(void)
{
    size_t n = 4u << 20;
    unsigned char *b = malloc(n + 16);
    uint32_t x = 12345;
    for (size_t i = 0; i < n + 16; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (unsigned char)(x >> 16);
    }
    int bad = 0;
    for (size_t len = 0; len <= 2100; len++)
        for (size_t off = 0; off < 4; off++) {
            uint32_t seed = (uint32_t)(len * 2654435761u + off);
            if (ck_crc32(seed, b + off, len) != (uint32_t)crc32_z(seed, b + off, len))
                bad++;
        }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(ck_crc32(0, b, 0), 0);
    /* chained over uneven pieces == one call == zlib */
    uint32_t whole = (uint32_t)crc32_z(0, b, n), c = 0;
    size_t pos = 0, step = 1;
    while (pos < n) {
        size_t m = n - pos < step ? n - pos : step;
        c = ck_crc32(c, b + pos, m);
        pos += m;
        step = step * 3 + 7;
    }
    CHECK_EQ_INT(c, whole);
    CHECK_EQ_INT(ck_crc32(0, b + 1, n), (uint32_t)crc32_z(0, b + 1, n));
    free(b);
    return check_done();
}
