/* The dtype table: every entry is complete, every name maps back to its
 * dtype, and no name is claimed twice. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "dtype.h"

static void test_entries(void)
{
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++) {
        const ck_dtype_info *d = ck_dtype_get((ck_dtype)i);
        CHECK(d != NULL);
        if (!d)
            continue;
        CHECK_EQ_INT(d->id, i);
        CHECK(d->torch_name && d->torch_name[0]);
        CHECK(d->size == 1 || d->size == 2 || d->size == 4 || d->size == 8 || d->size == 16);
        CHECK(d->npy_descr && strlen(d->npy_descr) >= 3);

        /* Each name leads back to this dtype. */
        CHECK_EQ_INT(ck_dtype_from_torch_name(d->torch_name), i);
        if (d->storage_class)
            CHECK_EQ_INT(ck_dtype_from_storage_class(d->storage_class), i);
        if (d->st_name)
            CHECK_EQ_INT(ck_dtype_from_st_name(d->st_name), i);

        /* The descr's width is the element width, exact or not. */
        const char *digits = d->npy_descr + 2;
        CHECK_EQ_INT(strtoul(digits, NULL, 10), d->size);
        ck_dtype back = ck_dtype_from_npy_descr(d->npy_descr);
        if (d->npy_exact) {
            CHECK_EQ_INT(back, i);
        } else {
            /* Stands in for this dtype: a different, exact, same-width type. */
            CHECK(back != CK_DT_INVALID && back != (ck_dtype)i);
            if (back != CK_DT_INVALID)
                CHECK_EQ_INT(ck_dtype_get(back)->size, d->size);
        }
        /* Multi-byte descrs are little-endian; byte types say '|'. */
        CHECK(d->npy_descr[0] == (d->size == 1 ? '|' : '<'));
    }
}

static void test_unique_names(void)
{
    for (int i = CK_DT_INVALID + 1; i < CK_DT_COUNT; i++) {
        for (int j = i + 1; j < CK_DT_COUNT; j++) {
            const ck_dtype_info *a = ck_dtype_get((ck_dtype)i), *b = ck_dtype_get((ck_dtype)j);
            CHECK(strcmp(a->torch_name, b->torch_name) != 0);
            if (a->storage_class && b->storage_class)
                CHECK(strcmp(a->storage_class, b->storage_class) != 0);
            if (a->st_name && b->st_name)
                CHECK(strcmp(a->st_name, b->st_name) != 0);
            if (a->npy_exact && b->npy_exact)
                CHECK(strcmp(a->npy_descr, b->npy_descr) != 0);
        }
    }
}

static void test_known_values(void)
{
    CHECK(ck_dtype_get(CK_DT_INVALID) == NULL);
    CHECK(ck_dtype_get(CK_DT_COUNT) == NULL);
    CHECK(ck_dtype_get((ck_dtype)-1) == NULL);

    CHECK_EQ_INT(ck_dtype_get(CK_DT_FLOAT32)->size, 4);
    CHECK_EQ_INT(ck_dtype_get(CK_DT_COMPLEX128)->size, 16);
    CHECK_EQ_INT(ck_dtype_get(CK_DT_COMPLEX32)->size, 4);
    CHECK_EQ_INT(ck_dtype_get(CK_DT_FLOAT4_E2M1FN_X2)->size, 1);
    CHECK_EQ_STR(ck_dtype_get(CK_DT_BFLOAT16)->storage_class, "BFloat16Storage");
    CHECK_EQ_STR(ck_dtype_get(CK_DT_INT8)->storage_class, "CharStorage");
    CHECK_EQ_STR(ck_dtype_get(CK_DT_UINT8)->storage_class, "ByteStorage");
    CHECK_EQ_STR(ck_dtype_get(CK_DT_COMPLEX64)->storage_class, "ComplexFloatStorage");
    CHECK(ck_dtype_get(CK_DT_FLOAT8_E4M3FN)->storage_class == NULL);
    CHECK(ck_dtype_get(CK_DT_UINT16)->storage_class == NULL);
    CHECK(ck_dtype_get(CK_DT_UINT64)->storage_class == NULL);
    CHECK(ck_dtype_get(CK_DT_COMPLEX128)->st_name == NULL);

    CHECK_EQ_INT(ck_dtype_from_torch_name("float"), CK_DT_FLOAT32);
    CHECK_EQ_INT(ck_dtype_from_torch_name("double"), CK_DT_FLOAT64);
    CHECK_EQ_INT(ck_dtype_from_torch_name("half"), CK_DT_FLOAT16);
    CHECK_EQ_INT(ck_dtype_from_torch_name("cfloat"), CK_DT_COMPLEX64);
    CHECK_EQ_INT(ck_dtype_from_torch_name("cdouble"), CK_DT_COMPLEX128);
    CHECK_EQ_INT(ck_dtype_from_torch_name("chalf"), CK_DT_COMPLEX32);
    CHECK_EQ_INT(ck_dtype_from_torch_name("long"), CK_DT_INT64);
    CHECK_EQ_INT(ck_dtype_from_torch_name("int"), CK_DT_INT32);
    CHECK_EQ_INT(ck_dtype_from_torch_name("short"), CK_DT_INT16);
    CHECK_EQ_INT(ck_dtype_from_torch_name("float8_e4m3fn"), CK_DT_FLOAT8_E4M3FN);
    CHECK_EQ_INT(ck_dtype_from_torch_name("float32 "), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_torch_name(""), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_torch_name(NULL), CK_DT_INVALID);

    CHECK_EQ_INT(ck_dtype_from_storage_class("FloatStorage"), CK_DT_FLOAT32);
    CHECK_EQ_INT(ck_dtype_from_storage_class("UntypedStorage"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_st_name("F8_E4M3"), CK_DT_FLOAT8_E4M3FN);
    CHECK_EQ_INT(ck_dtype_from_st_name("F8_E8M0"), CK_DT_FLOAT8_E8M0FNU);
    CHECK_EQ_INT(ck_dtype_from_st_name("F4"), CK_DT_FLOAT4_E2M1FN_X2);
    CHECK_EQ_INT(ck_dtype_from_st_name("BOOL"), CK_DT_BOOL);
    CHECK_EQ_INT(ck_dtype_from_st_name("f32"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_st_name("F6_E2M3"), CK_DT_INVALID);

    CHECK_EQ_INT(ck_dtype_from_npy_descr("<f4"), CK_DT_FLOAT32);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("<c16"), CK_DT_COMPLEX128);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("|b1"), CK_DT_BOOL);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("|u1"), CK_DT_UINT8);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("u1"), CK_DT_UINT8);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("<i1"), CK_DT_INT8);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("<u2"), CK_DT_UINT16);
    CHECK_EQ_INT(ck_dtype_from_npy_descr(">f4"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("f4"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("|f4"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_npy_descr("<f16"), CK_DT_INVALID);
    CHECK_EQ_INT(ck_dtype_from_npy_descr(""), CK_DT_INVALID);
    CHECK_EQ_STR(ck_dtype_get(CK_DT_BFLOAT16)->npy_descr, "<u2");
    CHECK_EQ_STR(ck_dtype_get(CK_DT_FLOAT8_E5M2)->npy_descr, "|u1");
    CHECK_EQ_STR(ck_dtype_get(CK_DT_COMPLEX32)->npy_descr, "<u4");
}

int main(void)
{
    test_entries();
    test_unique_names();
    test_known_values();
    return check_done();
}
