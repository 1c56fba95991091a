/* safetensors headers.  Checks mirror the reference implementation's
 * Metadata::validate, except that gaps between tensors and bytes after the
 * last one are allowed (alignment padding harms no reader). */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byte_source.h"
#include "errmsg.h"
#include "geometry.h"
#include "le.h"

/* cJSON numbers are doubles: integers above 2^53 are no longer exact, so
 * offsets and dimensions beyond it are refused rather than rounded. */
#define ST_MAX_EXACT_INT 9007199254740992.0

void ck_st_free(ck_st_header *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->ntensors; i++)
        free(h->tensors[i].name);
    free(h->tensors);
    for (size_t i = 0; i < h->nmeta; i++) {
        free(h->meta_keys[i]);
        free(h->meta_vals[i]);
    }
    free(h->meta_keys);
    free(h->meta_vals);
    memset(h, 0, sizeof *h);
}

const char *ck_st_meta_get(const ck_st_header *h, const char *key)
{
    for (size_t i = 0; i < h->nmeta; i++)
        if (strcmp(h->meta_keys[i], key) == 0)
            return h->meta_vals[i];
    return NULL;
}

int ck_st_json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d >= ST_MAX_EXACT_INT || d != (double)(uint64_t)d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_metadata(const cJSON *meta, ck_st_header *out, char *err, size_t errlen)
{
    if (cJSON_IsNull(meta))
        return 0;
    if (!cJSON_IsObject(meta))
        return ck_fail(err, errlen, -EINVAL, "__metadata__ is not an object");
    size_t n = 0;
    for (const cJSON *e = meta->child; e; e = e->next)
        n++;
    if (n == 0)
        return 0;
    out->meta_keys = calloc(n, sizeof *out->meta_keys);
    out->meta_vals = calloc(n, sizeof *out->meta_vals);
    if (!out->meta_keys || !out->meta_vals)
        return -ENOMEM;
    for (const cJSON *e = meta->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return ck_fail(err, errlen, -EINVAL,
                           "__metadata__ value of '%s' is not a string", e->string);
        char *k = strdup(e->string), *v = strdup(e->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return -ENOMEM;
        }
        out->meta_keys[out->nmeta] = k;
        out->meta_vals[out->nmeta] = v;
        out->nmeta++;
    }
    return 0;
}

static int parse_tensor(const cJSON *e, uint64_t data_len, ck_st_tensor *t, char *err,
                        size_t errlen)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return ck_fail(err, errlen, -EINVAL, "tensor '%s': entry is not an object", name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': needs string \"dtype\", array \"shape\" and array "
                       "\"data_offsets\"", name);
    t->dtype = ck_dtype_from_st_name(dtype->valuestring);
    if (t->dtype == CK_DT_INVALID)
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': unknown dtype \"%.32s\"", name, dtype->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > CK_MAX_DIMS)
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': %d dimensions, at most %d supported", name, nd,
                       CK_MAX_DIMS);
    t->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        if (ck_st_json_uint(d, &t->shape[t->ndim]))
            return ck_fail(err, errlen, -EINVAL, "tensor '%s': shape holds something other than a "
                           "non-negative integer below 2^53", name);
        t->ndim++;
    }
    if (cJSON_GetArraySize(offs) != 2 || ck_st_json_uint(offs->child, &t->begin) ||
        ck_st_json_uint(offs->child->next, &t->end)) {
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': data_offsets is not [begin, end] of non-negative "
                       "integers below 2^53", name);
    }

    char sbuf[64];
    ck_format_shape(sbuf, sizeof sbuf, t->ndim, t->shape);
    /* safetensors counts F4 in 4-bit values, torch's float4_e2m1fn_x2 in
     * bytes holding two: the torch shape has half the last dimension. */
    if (t->dtype == CK_DT_FLOAT4_E2M1FN_X2) {
        if (t->ndim == 0 || t->shape[t->ndim - 1] % 2)
            return ck_fail(err, errlen, -EINVAL,
                           "tensor '%s': F4 shape %s needs an even last dimension", name,
                           sbuf);
        t->shape[t->ndim - 1] /= 2;
    }

    uint64_t nbytes = ck_dtype_get(t->dtype)->size;
    for (uint32_t i = 0; i < t->ndim; i++) {
        if (__builtin_mul_overflow(nbytes, t->shape[i], &nbytes))
            return ck_fail(err, errlen, -EINVAL, "tensor '%s': shape %s overflows", name, sbuf);
    }
    if (t->begin > t->end)
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before "
                       "they begin", name, t->begin, t->end);
    if (t->end > data_len)
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] pass the end "
                       "of the data (%" PRIu64 " bytes)", name, t->begin, t->end, data_len);
    if (t->end - t->begin != nbytes)
        return ck_fail(err, errlen, -EINVAL,
                       "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                       " bytes but %s shape %s needs %" PRIu64, name, t->begin, t->end,
                       t->end - t->begin, dtype->valuestring, sbuf, nbytes);
    t->name = strdup(name);
    return t->name ? 0 : -ENOMEM;
}

static int cmp_by_begin(const void *a, const void *b, void *ctx)
{
    const ck_st_tensor *t = ctx;
    const ck_st_tensor *x = &t[*(const size_t *)a], *y = &t[*(const size_t *)b];
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_by_name(const void *a, const void *b, void *ctx)
{
    const ck_st_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Duplicate names and overlapping byte ranges, both found by sorting an
 * index so the header order of out->tensors is kept. */
static int check_tensor_set(const ck_st_header *h, char *err, size_t errlen)
{
    if (h->ntensors < 2)
        return 0;
    size_t *idx = malloc(h->ntensors * sizeof *idx);
    if (!idx)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < h->ntensors; i++)
        idx[i] = i;
    qsort_r(idx, h->ntensors, sizeof *idx, cmp_by_name, h->tensors);
    for (size_t i = 1; i < h->ntensors; i++) {
        if (strcmp(h->tensors[idx[i - 1]].name, h->tensors[idx[i]].name) == 0) {
            rc = ck_fail(err, errlen, -EINVAL, "tensor '%s' appears twice in the header",
                         h->tensors[idx[i]].name);
            goto out;
        }
    }
    qsort_r(idx, h->ntensors, sizeof *idx, cmp_by_begin, h->tensors);
    /* Empty tensors occupy no bytes, so they overlap nothing. */
    const ck_st_tensor *prev = NULL;
    for (size_t i = 0; i < h->ntensors; i++) {
        const ck_st_tensor *t = &h->tensors[idx[i]];
        if (t->begin == t->end)
            continue;
        if (prev && t->begin < prev->end) {
            rc = ck_fail(err, errlen, -EINVAL,
                         "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap "
                         "tensor '%s' [%" PRIu64 ", %" PRIu64 "]", t->name, t->begin, t->end,
                         prev->name, prev->begin, prev->end);
            goto out;
        }
        if (!prev || t->end > prev->end)
            prev = t;
    }
out:
    free(idx);
    return rc;
}

static int parse_root(const cJSON *root, uint64_t data_len, ck_st_header *out, char *err,
                      size_t errlen)
{
    if (!cJSON_IsObject(root))
        return ck_fail(err, errlen, -EINVAL, "header JSON is not an object");
    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        n++;
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    if (!out->tensors)
        return -ENOMEM;
    int have_meta = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        int rc;
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta++)
                return ck_fail(err, errlen, -EINVAL, "__metadata__ appears twice in the header");
            rc = parse_metadata(e, out, err, errlen);
        } else {
            rc = parse_tensor(e, data_len, &out->tensors[out->ntensors], err, errlen);
            if (!rc)
                out->ntensors++;
        }
        if (rc)
            return rc;
    }
    return check_tensor_set(out, err, errlen);
}

bool ck_json_has_nul_escape(const char *json, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        if (!in_string) {
            in_string = json[i] == '"';
            continue;
        }
        if (json[i] == '"') {
            in_string = false;
        } else if (json[i] == '\\' && i + 1 < len) {
            if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0)
                return true;
            i++; /* the escaped character, so \\" does not end the string */
        }
    }
    return false;
}

int ck_st_parse_json(const char *json, size_t json_len, uint64_t data_len, ck_st_header *out,
                     char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (json_len > CK_ST_MAX_HEADER)
        return ck_fail(err, errlen, -EINVAL, "header length %zu exceeds the %u-byte limit", json_len,
                       CK_ST_MAX_HEADER);
    /* cJSON stops at a NUL; one inside the header would hide the rest. */
    if (memchr(json, '\0', json_len))
        return ck_fail(err, errlen, -EINVAL, "header holds a NUL byte");
    if (ck_json_has_nul_escape(json, json_len))
        return ck_fail(err, errlen, -EINVAL, "a name or string in the header holds a NUL (\\u0000)");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, json_len, &end, 0);
    if (!root) {
        /* On failure cJSON points end at the offending byte. */
        size_t pos = end && end >= json && end <= json + json_len ? (size_t)(end - json) : 0;
        return ck_fail(err, errlen, -EINVAL, "header is not valid JSON (near byte %zu)", pos);
    }
    /* Writers pad the header with spaces to align the data; anything else
     * after the JSON value means a corrupt header. */
    for (const char *p = end; p && p < json + json_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return ck_fail(err, errlen, -EINVAL,
                           "header has bytes after the JSON object (at byte %zu)",
                           (size_t)(p - json));
        }
    }
    int rc = parse_root(root, data_len, out, err, errlen);
    cJSON_Delete(root);
    if (rc) {
        if (rc == -ENOMEM)
            ck_fail(err, errlen, rc, "out of memory parsing the header");
        ck_st_free(out);
        return rc;
    }
    out->header_len = json_len;
    out->data_start = 8 + (uint64_t)json_len;
    return 0;
}

int ck_st_parse(const ck_byte_source *src, ck_st_header *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    uint8_t lenbuf[8];
    if (src->len < sizeof lenbuf)
        return ck_fail(err, errlen, -EINVAL,
                       "file is %" PRIu64 " bytes, too short for the 8-byte header length",
                       src->len);
    int rc = ck_byte_source_read(src, 0, lenbuf, sizeof lenbuf);
    if (rc)
        return ck_fail(err, errlen, rc, "reading the header length: %s", strerror(-rc));
    uint64_t n = ck_le64(lenbuf);
    if (n > CK_ST_MAX_HEADER)
        return ck_fail(err, errlen, -EINVAL, "header length %" PRIu64 " exceeds the %u-byte limit", n,
                       CK_ST_MAX_HEADER);
    if (n > src->len - 8)
        return ck_fail(err, errlen, -EINVAL,
                       "header length %" PRIu64 " exceeds the file (%" PRIu64 " bytes)", n,
                       src->len);
    char *json = malloc(n ? n : 1);
    if (!json)
        return -ENOMEM;
    rc = ck_byte_source_read(src, 8, json, n);
    if (rc) {
        free(json);
        return ck_fail(err, errlen, rc, "reading the %" PRIu64 "-byte header: %s", n,
                       strerror(-rc));
    }
    rc = ck_st_parse_json(json, n, src->len - 8 - n, out, err, errlen);
    free(json);
    return rc;
}
