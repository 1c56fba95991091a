/* safetensors header parser: 8-byte LE length, JSON header, data region. */
#ifndef CKPT_SAFETENSORS_H
#define CKPT_SAFETENSORS_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include "dtype.h"
#include "torch_item.h" /* CK_MAX_DIMS */

#define CK_ST_MAX_HEADER (100u << 20) /* like the reference implementation */

typedef struct {
    char *name;
    ck_dtype dtype;
    uint32_t ndim;
    uint64_t shape[CK_MAX_DIMS];
    uint64_t begin, end; /* relative to the data region */
} ck_st_tensor;

typedef struct {
    uint64_t header_len;  /* N */
    uint64_t data_start;  /* 8 + N */
    size_t ntensors;
    ck_st_tensor *tensors; /* in header order */
    size_t nmeta;
    char **meta_keys, **meta_vals; /* __metadata__ */
} ck_st_header;

/* Parses the header of a file of file_size bytes read through src.
 * Refuses: length past end of file, invalid JSON, unknown dtype, shape/offset
 * mismatch (end-begin != numel*size), offsets past the file, overlapping
 * tensors.  Returns 0 or -EINVAL with err set ("header length 900 exceeds file"). */
int ck_st_parse(const ck_byte_source *src, ck_st_header *out, char *err, size_t errlen);
/* Same, from a header already in memory (json of json_len bytes);
 * data_len is the size of the data region for bounds checks. */
int ck_st_parse_json(const char *json, size_t json_len, uint64_t data_len, ck_st_header *out,
                     char *err, size_t errlen);
/* Whether a JSON text has a \u0000 escape in a string: cJSON decodes it to
 * a NUL that cuts the name short, so a key "a\u0000b" would become "a". */
bool ck_json_has_nul_escape(const char *json, size_t len);
/* A JSON number that is a whole number in [0, 2^53), where doubles are
 * exact; 0, or -1 for anything else (cJSON would round larger ones). */
struct cJSON;
int ck_st_json_uint(const struct cJSON *v, uint64_t *out);
const char *ck_st_meta_get(const ck_st_header *h, const char *key);
void ck_st_free(ck_st_header *h);

#endif
