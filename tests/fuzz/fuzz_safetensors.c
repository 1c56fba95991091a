/* libFuzzer target: the safetensors header parser, both as a whole file
 * (ck_st_parse over a memory source) and as a bare JSON header
 * (ck_st_parse_json).  Whatever it accepts must be self-consistent:
 * every tensor's bytes inside the data region, sizes matching shapes. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "byte_source.h"
#include "safetensors.h"

static void check(const ck_st_header *h, uint64_t data_len)
{
    for (size_t i = 0; i < h->ntensors; i++) {
        const ck_st_tensor *t = &h->tensors[i];
        const ck_dtype_info *dt = ck_dtype_get(t->dtype);
        if (!dt || !t->name || t->ndim > CK_MAX_DIMS || t->begin > t->end || t->end > data_len) {
            fprintf(stderr, "accepted tensor %zu is inconsistent\n", i);
            __builtin_trap();
        }
    }
    for (size_t i = 0; i < h->nmeta; i++)
        if (!h->meta_keys[i] || !h->meta_vals[i])
            __builtin_trap();
    (void)ck_st_meta_get(h, "DCP_SHARDING_INFO");
    (void)ck_st_meta_get(h, "format");
}

static void check_err(int rc, const char *err)
{
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "refused (%d) without a reason: '%s'\n", rc, err);
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_st_header h;
    char err[256] = "";
    ck_byte_source src = ck_byte_source_mem(data, size);
    int rc = ck_st_parse(&src, &h, err, sizeof err);
    if (rc == 0) {
        if (h.data_start > size)
            __builtin_trap();
        check(&h, size - h.data_start);
        ck_st_free(&h);
    } else {
        check_err(rc, err);
    }

    /* As a bare header: the first byte picks a data-region size, so that
     * both generous and tight bounds are exercised. */
    if (size >= 1) {
        uint64_t data_len = (uint64_t)data[0] << (data[0] & 0x3f);
        err[0] = '\0';
        rc = ck_st_parse_json((const char *)data + 1, size - 1, data_len, &h, err, sizeof err);
        if (rc == 0) {
            check(&h, data_len);
            ck_st_free(&h);
        } else {
            check_err(rc, err);
        }
    }
    return 0;
}
