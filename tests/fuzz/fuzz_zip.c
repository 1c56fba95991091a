/* libFuzzer target: one DCP item as ckptfs meets it -- the torch.save zip
 * reader and the data.pkl layout parser on an in-memory byte source, then a
 * strided gather of what the layout describes.  The input is also tried as
 * a zstd stream (the `stream.zstd/1` transform) and, if it decodes, the
 * decoded bytes go through the same parsers. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byte_source.h"
#include "dtype.h"
#include "torch_item.h"
#include "zip_reader.h"
#include "zstd_stream.h"

#define GATHER_MAX (4u << 20)
#define DECODE_MAX (8u << 20)

static void check_err(int rc, const char *err, const char *what)
{
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "%s failed (%d) without a reason: '%s'\n", what, rc, err);
        __builtin_trap();
    }
}

static void item(const uint8_t *data, size_t size)
{
    ck_byte_source src = ck_byte_source_mem(data, size);
    ck_zip_member m;
    char err[256] = "";
    static const char *const names[] = { "/data.pkl", "/data/0", "/byteorder", "/version" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        err[0] = '\0';
        int rc = ck_zip_find(&src, names[i], &m, err, sizeof err);
        if (rc == 0) {
            if (m.data_offset > size || m.size > size - m.data_offset) {
                fprintf(stderr, "member %s [%llu,+%llu) outside a %zu-byte archive\n", names[i],
                        (unsigned long long)m.data_offset, (unsigned long long)m.size, size);
                __builtin_trap();
            }
        } else if (rc != -ENOENT && rc != -ENOTSUP) {
            check_err(rc, err, "ck_zip_find");
        }
    }

    ck_torch_item it;
    err[0] = '\0';
    int rc = ck_torch_item_parse(&src, &it, err, sizeof err);
    if (rc) {
        check_err(rc, err, "ck_torch_item_parse");
        return;
    }
    const ck_dtype_info *dt = ck_dtype_get(it.dtype);
    if (!dt || it.ndim > CK_MAX_DIMS || it.data_offset > size ||
        it.data_length > size - it.data_offset) {
        fprintf(stderr, "parsed item is inconsistent\n");
        __builtin_trap();
    }
    uint64_t numel = 1, bytes;
    for (uint32_t k = 0; k < it.ndim; k++)
        if (__builtin_mul_overflow(numel, it.size[k], &numel))
            __builtin_trap(); /* the parser must refuse shapes that overflow */
    if (__builtin_mul_overflow(numel, (uint64_t)dt->size, &bytes))
        __builtin_trap();
    (void)ck_torch_item_is_contiguous(&it);
    if (bytes <= GATHER_MAX) {
        uint8_t *dst = malloc(bytes ? bytes : 1);
        if (dst) {
            /* parse promised every addressed element lies inside data/0 */
            int g = ck_torch_item_gather(&it, data, size, dst, bytes);
            if (g) {
                fprintf(stderr, "gather of a parsed item failed: %d\n", g);
                __builtin_trap();
            }
            free(dst);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    item(data, size);

    ck_byte_source src = ck_byte_source_mem(data, size);
    uint8_t *dec = NULL;
    uint64_t dec_len = 0;
    char err[256] = "";
    int rc = ck_zstd_decode(&src, DECODE_MAX, &dec, &dec_len, err, sizeof err);
    if (rc == 0) {
        if (dec_len > DECODE_MAX)
            __builtin_trap();
        item(dec, (size_t)dec_len);
        free(dec);
    } else {
        check_err(rc, err, "ck_zstd_decode");
    }
    return 0;
}
