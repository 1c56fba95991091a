/* The one dtype table.  Storage classes follow torch/storage.py
 * (_dtype_to_storage_type_map): dtypes newer than that map (float8, uint16+)
 * have no typed storage and are pickled through UntypedStorage +
 * _rebuild_tensor_v3.  Safetensors names follow the safetensors crate;
 * it has no complex128, complex32, fnuz float8 or quantized types. */
#include "dtype.h"

#include <string.h>

static const ck_dtype_info table[CK_DT_COUNT] = {
    [CK_DT_FLOAT64] = { CK_DT_FLOAT64, "float64", 8, "DoubleStorage", "F64", "<f8", 1 },
    [CK_DT_FLOAT32] = { CK_DT_FLOAT32, "float32", 4, "FloatStorage", "F32", "<f4", 1 },
    [CK_DT_FLOAT16] = { CK_DT_FLOAT16, "float16", 2, "HalfStorage", "F16", "<f2", 1 },
    [CK_DT_BFLOAT16] = { CK_DT_BFLOAT16, "bfloat16", 2, "BFloat16Storage", "BF16", "<u2", 0 },
    [CK_DT_FLOAT8_E4M3FN] = { CK_DT_FLOAT8_E4M3FN, "float8_e4m3fn", 1, NULL, "F8_E4M3", "|u1", 0 },
    [CK_DT_FLOAT8_E5M2] = { CK_DT_FLOAT8_E5M2, "float8_e5m2", 1, NULL, "F8_E5M2", "|u1", 0 },
    [CK_DT_FLOAT8_E4M3FNUZ] = { CK_DT_FLOAT8_E4M3FNUZ, "float8_e4m3fnuz", 1, NULL, NULL, "|u1", 0 },
    [CK_DT_FLOAT8_E5M2FNUZ] = { CK_DT_FLOAT8_E5M2FNUZ, "float8_e5m2fnuz", 1, NULL, NULL, "|u1", 0 },
    [CK_DT_FLOAT8_E8M0FNU] = { CK_DT_FLOAT8_E8M0FNU, "float8_e8m0fnu", 1, NULL, "F8_E8M0", "|u1", 0 },
    [CK_DT_FLOAT4_E2M1FN_X2] = { CK_DT_FLOAT4_E2M1FN_X2, "float4_e2m1fn_x2", 1, NULL, "F4", "|u1", 0 },
    [CK_DT_COMPLEX32] = { CK_DT_COMPLEX32, "complex32", 4, NULL, NULL, "<u4", 0 },
    [CK_DT_COMPLEX64] = { CK_DT_COMPLEX64, "complex64", 8, "ComplexFloatStorage", "C64", "<c8", 1 },
    [CK_DT_COMPLEX128] = { CK_DT_COMPLEX128, "complex128", 16, "ComplexDoubleStorage", NULL, "<c16", 1 },
    [CK_DT_INT8] = { CK_DT_INT8, "int8", 1, "CharStorage", "I8", "|i1", 1 },
    [CK_DT_INT16] = { CK_DT_INT16, "int16", 2, "ShortStorage", "I16", "<i2", 1 },
    [CK_DT_INT32] = { CK_DT_INT32, "int32", 4, "IntStorage", "I32", "<i4", 1 },
    [CK_DT_INT64] = { CK_DT_INT64, "int64", 8, "LongStorage", "I64", "<i8", 1 },
    [CK_DT_UINT8] = { CK_DT_UINT8, "uint8", 1, "ByteStorage", "U8", "|u1", 1 },
    [CK_DT_UINT16] = { CK_DT_UINT16, "uint16", 2, NULL, "U16", "<u2", 1 },
    [CK_DT_UINT32] = { CK_DT_UINT32, "uint32", 4, NULL, "U32", "<u4", 1 },
    [CK_DT_UINT64] = { CK_DT_UINT64, "uint64", 8, NULL, "U64", "<u8", 1 },
    [CK_DT_BOOL] = { CK_DT_BOOL, "bool", 1, "BoolStorage", "BOOL", "|b1", 1 },
    /* Quantized values without their scale/zero point are not the real
     * numbers, so their NumPy view is never exact. */
    [CK_DT_QINT8] = { CK_DT_QINT8, "qint8", 1, "QInt8Storage", NULL, "|i1", 0 },
    [CK_DT_QUINT8] = { CK_DT_QUINT8, "quint8", 1, "QUInt8Storage", NULL, "|u1", 0 },
    [CK_DT_QINT32] = { CK_DT_QINT32, "qint32", 4, "QInt32Storage", NULL, "<i4", 0 },
};

/* torch.<alias> names that are the same dtype object as a canonical one. */
static const struct {
    const char *alias;
    ck_dtype id;
} aliases[] = {
    { "float", CK_DT_FLOAT32 },   { "double", CK_DT_FLOAT64 },     { "half", CK_DT_FLOAT16 },
    { "cfloat", CK_DT_COMPLEX64 }, { "cdouble", CK_DT_COMPLEX128 }, { "chalf", CK_DT_COMPLEX32 },
    { "long", CK_DT_INT64 },      { "int", CK_DT_INT32 },          { "short", CK_DT_INT16 },
};

const ck_dtype_info *ck_dtype_get(ck_dtype dt)
{
    if (dt <= CK_DT_INVALID || dt >= CK_DT_COUNT)
        return NULL;
    return &table[dt];
}

ck_dtype ck_dtype_from_torch_name(const char *name)
{
    if (!name)
        return CK_DT_INVALID;
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++)
        if (strcmp(table[i].torch_name, name) == 0)
            return (ck_dtype)i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(aliases[i].alias, name) == 0)
            return aliases[i].id;
    return CK_DT_INVALID;
}

ck_dtype ck_dtype_from_storage_class(const char *cls)
{
    if (!cls)
        return CK_DT_INVALID;
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++)
        if (table[i].storage_class && strcmp(table[i].storage_class, cls) == 0)
            return (ck_dtype)i;
    return CK_DT_INVALID;
}

ck_dtype ck_dtype_from_st_name(const char *st)
{
    if (!st)
        return CK_DT_INVALID;
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++)
        if (table[i].st_name && strcmp(table[i].st_name, st) == 0)
            return (ck_dtype)i;
    return CK_DT_INVALID;
}

ck_dtype ck_dtype_from_npy_descr(const char *descr)
{
    if (!descr || !descr[0])
        return CK_DT_INVALID;
    /* For one-byte types byte order means nothing; NumPy writes '|' but
     * hand-written headers use '<', '>' or nothing.  Wider types must say
     * little-endian. */
    const char *body = descr;
    char order = 0;
    if (strchr("<>|=", descr[0])) {
        order = descr[0];
        body = descr + 1;
    }
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++) {
        const ck_dtype_info *d = &table[i];
        if (!d->npy_exact || strcmp(d->npy_descr + 1, body) != 0)
            continue;
        if (d->size == 1 || order == '<')
            return (ck_dtype)i;
        return CK_DT_INVALID;
    }
    return CK_DT_INVALID;
}
