#include "errmsg.h"
#include "torch_item.h"

#include <errno.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32.h"
#include "pickle.h"
#include "zip_reader.h"

/* Storage keys torch writes are small decimal numbers; anything longer is
 * not a torch.save archive we know. */
#define MAX_STORAGE_KEY CK_STORAGE_KEY_MAX


static bool is_global_named(const pk_value *v, const char *const *modules, size_t n_modules,
                            const char *name)
{
    for (size_t i = 0; i < n_modules; i++)
        if (pk_is_global(v, modules[i], name))
            return true;
    return false;
}

/* Reads a size or stride tuple: at most CK_MAX_DIMS non-negative ints. */
static int read_dims(const pk_value *v, const char *what, uint32_t *ndim, int64_t *vals, char *err,
                     size_t errlen)
{
    if (!v || (v->kind != PK_TUPLE && v->kind != PK_LIST))
        return ck_fail(err, errlen, -EINVAL, "data.pkl: %s is not a tuple", what);
    size_t n = pk_seq_len(v);
    if (n > CK_MAX_DIMS)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: %zu dimensions exceed the limit of %d", n,
                    CK_MAX_DIMS);
    for (size_t i = 0; i < n; i++) {
        int64_t x;
        if (pk_as_int(pk_seq_at(v, i), &x) < 0 || x < 0)
            return ck_fail(err, errlen, -EINVAL, "data.pkl: %s[%zu] is not a non-negative integer", what, i);
        vals[i] = x;
    }
    *ndim = (uint32_t)n;
    return 0;
}

/* The largest byte count the tensor can address: (storage_offset +
 * sum((size-1)*stride) + 1) * elsize, or 0 when it has no elements. */
static int addressed_bytes(const ck_torch_item *it, size_t elsize, uint64_t *out)
{
    for (uint32_t d = 0; d < it->ndim; d++) {
        if (it->size[d] == 0) {
            *out = 0;
            return 0;
        }
    }
    uint64_t last = it->storage_offset;
    for (uint32_t d = 0; d < it->ndim; d++) {
        uint64_t step;
        if (it->stride[d] < 0 ||
            __builtin_mul_overflow(it->size[d] - 1, (uint64_t)it->stride[d], &step) ||
            __builtin_add_overflow(last, step, &last))
            return -EOVERFLOW;
    }
    uint64_t n;
    if (__builtin_add_overflow(last, 1, &n) || __builtin_mul_overflow(n, (uint64_t)elsize, out))
        return -EOVERFLOW;
    return 0;
}

static int parse_pickle(const pk_value *root, ck_torch_item *out, char *key, char *err, size_t errlen)
{
    if (!root || root->kind != PK_OBJECT || root->u.obj.newobj)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: not a tensor (expected a _rebuild_tensor call)");
    bool v3 = pk_is_global(root->u.obj.callable, "torch._utils", "_rebuild_tensor_v3");
    if (!v3 && !pk_is_global(root->u.obj.callable, "torch._utils", "_rebuild_tensor_v2")) {
        const pk_value *c = root->u.obj.callable;
        if (c && c->kind == PK_GLOBAL)
            return ck_fail(err, errlen, -EINVAL, "data.pkl: not a tensor (built by %s.%s)",
                        c->u.global.module, c->u.global.name);
        return ck_fail(err, errlen, -EINVAL, "data.pkl: not a tensor");
    }
    const pk_value *args = root->u.obj.args;
    size_t nargs = pk_seq_len(args);
    /* (storage, storage_offset, size, stride, requires_grad, backward_hooks
     *  [, dtype if v3] [, metadata]) */
    if (nargs < (v3 ? 7u : 6u))
        return ck_fail(err, errlen, -EINVAL, "data.pkl: _rebuild_tensor_%s has %zu arguments",
                    v3 ? "v3" : "v2", nargs);

    const pk_value *storage = pk_seq_at(args, 0);
    if (!storage || storage->kind != PK_PERSID)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: tensor storage is not a persistent id");
    const pk_value *pid = storage->u.persid.pid;
    if (!pid || pid->kind != PK_TUPLE || pk_seq_len(pid) != 5)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: storage id is not a 5-tuple");
    const char *tag = pk_as_str(pk_seq_at(pid, 0));
    if (!tag || strcmp(tag, "storage") != 0)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: persistent id is not a storage");
    const pk_value *storage_type = pk_seq_at(pid, 1);
    const char *key_str = pk_as_str(pk_seq_at(pid, 2));
    if (!key_str || key_str[0] == '\0' || strlen(key_str) > MAX_STORAGE_KEY || strchr(key_str, '/'))
        return ck_fail(err, errlen, -EINVAL, "data.pkl: bad storage key");
    strcpy(key, key_str);
    int64_t storage_numel;
    if (pk_as_int(pk_seq_at(pid, 4), &storage_numel) < 0 || storage_numel < 0)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: bad storage size");

    ck_dtype dt;
    if (v3) {
        static const char *const untyped_modules[] = { "torch.storage", "torch" };
        if (!is_global_named(storage_type, untyped_modules, 2, "UntypedStorage"))
            return ck_fail(err, errlen, -EINVAL, "data.pkl: _rebuild_tensor_v3 storage is not UntypedStorage");
        const pk_value *dtv = pk_seq_at(args, 6);
        if (!dtv || dtv->kind != PK_GLOBAL || strcmp(dtv->u.global.module, "torch") != 0)
            return ck_fail(err, errlen, -EINVAL, "data.pkl: _rebuild_tensor_v3 dtype is not a torch dtype");
        dt = ck_dtype_from_torch_name(dtv->u.global.name);
        if (dt == CK_DT_INVALID)
            return ck_fail(err, errlen, -ENOTSUP, "data.pkl: unknown dtype torch.%s", dtv->u.global.name);
    } else {
        if (!storage_type || storage_type->kind != PK_GLOBAL ||
            strcmp(storage_type->u.global.module, "torch") != 0)
            return ck_fail(err, errlen, -EINVAL, "data.pkl: storage type is not a torch storage class");
        dt = ck_dtype_from_storage_class(storage_type->u.global.name);
        if (dt == CK_DT_INVALID)
            return ck_fail(err, errlen, -ENOTSUP, "data.pkl: unknown storage class torch.%s",
                        storage_type->u.global.name);
    }

    int64_t storage_offset;
    if (pk_as_int(pk_seq_at(args, 1), &storage_offset) < 0 || storage_offset < 0)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: bad storage offset");

    int64_t sizes[CK_MAX_DIMS], strides[CK_MAX_DIMS];
    uint32_t nsize, nstride;
    int rc = read_dims(pk_seq_at(args, 2), "size", &nsize, sizes, err, errlen);
    if (rc < 0)
        return rc;
    rc = read_dims(pk_seq_at(args, 3), "stride", &nstride, strides, err, errlen);
    if (rc < 0)
        return rc;
    if (nsize != nstride)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: %u sizes but %u strides", nsize, nstride);

    out->dtype = dt;
    out->storage_offset = (uint64_t)storage_offset;
    out->ndim = nsize;
    for (uint32_t d = 0; d < nsize; d++) {
        out->size[d] = (uint64_t)sizes[d];
        out->stride[d] = strides[d];
    }
    return 0;
}

void ck_pkl_memo_init(ck_pkl_memo *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
}

void ck_pkl_memo_destroy(ck_pkl_memo *m)
{
    pthread_mutex_destroy(&m->lock);
}

/* True when data.pkl bytes buf[0..len) are remembered: *out and key get
 * what they said, *crc their CRC-32. */
static bool memo_lookup(ck_pkl_memo *m, const uint8_t *buf, size_t len, ck_torch_item *out,
                        char *key, uint32_t *crc)
{
    if (!m || len > CK_PKL_MEMO_BYTES)
        return false;
    bool hit = false;
    pthread_mutex_lock(&m->lock);
    for (uint32_t i = 0; i < m->used && !hit; i++) {
        const ck_pkl_memo_slot *s = &m->slot[i];
        if (s->len == len && memcmp(s->bytes, buf, len) == 0) {
            *out = s->item;
            memcpy(key, s->key, sizeof s->key);
            *crc = s->crc;
            hit = true;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return hit;
}

static void memo_remember(ck_pkl_memo *m, const uint8_t *buf, size_t len, const ck_torch_item *it,
                          const char *key, uint32_t crc)
{
    if (!m || len > CK_PKL_MEMO_BYTES)
        return;
    pthread_mutex_lock(&m->lock);
    ck_pkl_memo_slot *s = &m->slot[m->next];
    m->next = (m->next + 1) % CK_PKL_MEMO_SLOTS;
    m->used += m->used < CK_PKL_MEMO_SLOTS;
    s->len = (uint32_t)len;
    s->crc = crc;
    memcpy(s->bytes, buf, len);
    s->item = *it;
    memcpy(s->key, key, strlen(key) + 1); /* parse_pickle bounded it */
    pthread_mutex_unlock(&m->lock);
}

int ck_torch_item_parse(const ck_byte_source *src, ck_torch_item *out, char *err, size_t errlen)
{
    return ck_torch_item_parse_memo(src, NULL, out, err, errlen);
}

int ck_torch_item_parse_memo(const ck_byte_source *src, ck_pkl_memo *memo, ck_torch_item *out,
                             char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    ck_zip_member pkl;
    int rc = ck_zip_find(src, "/data.pkl", &pkl, err, errlen);
    if (rc < 0)
        return rc;
    if (pkl.size > CK_MAX_DATA_PKL)
        return ck_fail(err, errlen, -EINVAL, "data.pkl of %llu bytes exceeds the limit of %u",
                    (unsigned long long)pkl.size, (unsigned)CK_MAX_DATA_PKL);
    uint8_t small[CK_PKL_MEMO_BYTES];
    uint8_t *buf = pkl.size <= sizeof small ? small : malloc((size_t)pkl.size);
    if (!buf)
        return -ENOMEM;
    rc = ck_byte_source_read(src, pkl.data_offset, buf, (size_t)pkl.size);
    if (rc < 0) {
        if (buf != small)
            free(buf);
        return ck_fail(err, errlen, rc, "cannot read data.pkl at offset %llu",
                    (unsigned long long)pkl.data_offset);
    }
    /* data.pkl says where every element lies: a flipped bit in a stride or
     * the storage offset would serve wrong bytes without a word, and the
     * member is small, so its CRC-32 (0: not recorded) is checked -- last,
     * so that damage the checks below can name is named. */
    char key[MAX_STORAGE_KEY + 1];
    uint32_t crc;
    if (!memo_lookup(memo, buf, (size_t)pkl.size, out, key, &crc)) {
        crc = ck_crc32(0, buf, (size_t)pkl.size);
        pk_doc *doc = NULL;
        rc = pk_parse(buf, (size_t)pkl.size, &doc, err, errlen);
        if (rc == 0) {
            rc = parse_pickle(pk_root(doc), out, key, err, errlen);
            pk_free(doc);
        }
        if (rc == 0)
            memo_remember(memo, buf, (size_t)pkl.size, out, key, crc);
    }
    if (buf != small)
        free(buf);
    if (rc < 0)
        return rc;
    bool pkl_crc_ok = pkl.crc32 == 0 || crc == pkl.crc32;

    char member[MAX_STORAGE_KEY + 8];
    snprintf(member, sizeof member, "/data/%s", key);
    ck_zip_member data;
    rc = ck_zip_find(src, member, &data, err, errlen);
    if (rc < 0)
        return rc;
    out->data_offset = data.data_offset;
    out->data_length = data.size;

    const ck_dtype_info *info = ck_dtype_get(out->dtype);
    if (!info || info->size == 0)
        return ck_fail(err, errlen, -ENOTSUP, "data.pkl: dtype without an element size");
    uint64_t need;
    if (addressed_bytes(out, info->size, &need) < 0)
        return ck_fail(err, errlen, -EINVAL, "data.pkl: size/stride/offset overflow");
    if (need > data.size)
        return ck_fail(err, errlen, -EINVAL, "data.pkl describes %llu bytes but data/%s holds %llu",
                    (unsigned long long)need, key, (unsigned long long)data.size);
    if (!pkl_crc_ok)
        return ck_fail(err, errlen, -EINVAL, "data.pkl fails its CRC-32 check");
    return 0;
}

bool ck_torch_item_is_contiguous(const ck_torch_item *it)
{
    uint64_t expect = 1;
    for (uint32_t d = it->ndim; d-- > 0;) {
        if (it->size[d] == 0)
            return true; /* no elements: any layout reads as nothing */
    }
    for (uint32_t d = it->ndim; d-- > 0;) {
        if (it->size[d] != 1 && (it->stride[d] < 0 || (uint64_t)it->stride[d] != expect))
            return false;
        if (__builtin_mul_overflow(expect, it->size[d], &expect))
            return false;
    }
    return true;
}

int ck_torch_item_gather(const ck_torch_item *it, const uint8_t *item, uint64_t item_len,
                         uint8_t *dst, uint64_t dst_len)
{
    const ck_dtype_info *info = ck_dtype_get(it->dtype);
    if (!info || info->size == 0 || it->ndim > CK_MAX_DIMS)
        return -EINVAL;
    size_t es = info->size;
    uint64_t numel = 1, need;
    for (uint32_t d = 0; d < it->ndim; d++)
        if (__builtin_mul_overflow(numel, it->size[d], &numel))
            return -EOVERFLOW;
    if (__builtin_mul_overflow(numel, (uint64_t)es, &need))
        return -EOVERFLOW;
    if (dst_len < need)
        return -EINVAL;
    if (numel == 0)
        return 0;
    /* The item may not be the one parse checked; every read below stays
     * within data/0 only because of this. */
    uint64_t addressed;
    if (addressed_bytes(it, es, &addressed) < 0)
        return -EOVERFLOW;
    if (it->data_offset > item_len || it->data_length > item_len - it->data_offset ||
        addressed > it->data_length)
        return -EINVAL;
    const uint8_t *base = item + it->data_offset;

    if (it->ndim == 0) {
        memcpy(dst, base + it->storage_offset * es, es);
        return 0;
    }
    uint32_t inner = it->ndim - 1;
    uint64_t run = it->size[inner];
    int64_t inner_stride = it->stride[inner];
    uint64_t idx[CK_MAX_DIMS] = { 0 };
    uint64_t off = it->storage_offset; /* element offset of the current run */
    uint8_t *w = dst;
    for (;;) {
        if (inner_stride == 1 || run == 1) {
            memcpy(w, base + off * es, run * es);
            w += run * es;
        } else {
            uint64_t e = off;
            for (uint64_t j = 0; j < run; j++, e += (uint64_t)inner_stride, w += es)
                memcpy(w, base + e * es, es);
        }
        /* Odometer over the outer dimensions, last-but-one fastest. */
        uint32_t d = inner;
        for (;;) {
            if (d == 0)
                return 0;
            d--;
            idx[d]++;
            off += (uint64_t)it->stride[d];
            if (idx[d] < it->size[d])
                break;
            off -= it->size[d] * (uint64_t)it->stride[d];
            idx[d] = 0;
        }
    }
}
