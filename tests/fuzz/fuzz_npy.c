/* libFuzzer target: the .npy header parser.  What it accepts must have a
 * known dtype, at most CK_MAX_DIMS dimensions and a header length inside
 * the input; writing that dtype/shape back with ck_npy_header and parsing
 * the result must give the same description. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_npy_info a, b;
    char err[256] = "";
    int rc = ck_npy_parse(data, size, &a, err, sizeof err);
    if (rc) {
        if (rc != -EAGAIN && !err[0]) {
            fprintf(stderr, "refused (%d) without a reason: '%s'\n", rc, err);
            __builtin_trap();
        }
        return 0;
    }
    if (!ck_dtype_get(a.dtype) || a.ndim > CK_MAX_DIMS || a.header_len > size) {
        fprintf(stderr, "accepted header is inconsistent\n");
        __builtin_trap();
    }
    char buf[CK_NPY_MAX_HEADER];
    long n = ck_npy_header(a.dtype, a.ndim, a.shape, buf, sizeof buf);
    if (n <= 0)
        return 0; /* e.g. a dtype whose descr the writer does not round-trip */
    rc = ck_npy_parse((const uint8_t *)buf, (size_t)n, &b, err, sizeof err);
    if (rc) {
        fprintf(stderr, "own header refused: %s\n", err);
        __builtin_trap();
    }
    if (b.ndim != a.ndim || memcmp(b.shape, a.shape, a.ndim * sizeof a.shape[0]) != 0 ||
        b.header_len != (uint64_t)n || b.header_len % 64 != 0) {
        fprintf(stderr, "own header does not round-trip\n");
        __builtin_trap();
    }
    return 0;
}
