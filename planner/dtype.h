/* Element types: torch names, sizes, and their names in storage classes,
 * safetensors and NumPy.  One table, so every format agrees. */
#ifndef CKPT_DTYPE_H
#define CKPT_DTYPE_H

#include <stddef.h>

typedef enum {
    CK_DT_INVALID = 0,
    CK_DT_FLOAT64, CK_DT_FLOAT32, CK_DT_FLOAT16, CK_DT_BFLOAT16,
    CK_DT_FLOAT8_E4M3FN, CK_DT_FLOAT8_E5M2, CK_DT_FLOAT8_E4M3FNUZ,
    CK_DT_FLOAT8_E5M2FNUZ, CK_DT_FLOAT8_E8M0FNU, CK_DT_FLOAT4_E2M1FN_X2,
    CK_DT_COMPLEX32, CK_DT_COMPLEX64, CK_DT_COMPLEX128,
    CK_DT_INT8, CK_DT_INT16, CK_DT_INT32, CK_DT_INT64,
    CK_DT_UINT8, CK_DT_UINT16, CK_DT_UINT32, CK_DT_UINT64,
    CK_DT_BOOL,
    CK_DT_QINT8, CK_DT_QUINT8, CK_DT_QINT32,
    CK_DT_COUNT
} ck_dtype;

typedef struct {
    ck_dtype id;
    const char *torch_name;    /* "float32": what torch.<name> is called */
    size_t size;               /* bytes per element */
    const char *storage_class; /* legacy typed storage, "FloatStorage"; NULL if none */
    const char *st_name;       /* safetensors "F32"; NULL if safetensors has none.
                                * "F4" counts 4-bit values, so a safetensors
                                * F4 shape's last dimension is twice that of
                                * torch's float4_e2m1fn_x2 (one byte = two). */
    const char *npy_descr;     /* "<f4"; same-width unsigned when NumPy lacks it */
    int npy_exact;             /* 1 if npy_descr is the real type */
} ck_dtype_info;

const ck_dtype_info *ck_dtype_get(ck_dtype dt); /* NULL for invalid */
/* Lookups return CK_DT_INVALID when unknown. */
ck_dtype ck_dtype_from_torch_name(const char *name);   /* "float32", also aliases "float", "half" */
ck_dtype ck_dtype_from_storage_class(const char *cls); /* "FloatStorage" */
ck_dtype ck_dtype_from_st_name(const char *st);        /* "F32" */
ck_dtype ck_dtype_from_npy_descr(const char *descr);   /* "<f4", "|u1", "|b1" (exact types only) */

#endif
