/* The metadata.json view (see view_metadata.h). */
#include "view_metadata.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "json_num.h"

static const char *kind_name(ck_source_kind k)
{
    switch (k) {
    case CK_SRC_DCP: return "dcp";
    case CK_SRC_SAFETENSORS: return "safetensors";
    case CK_SRC_DCP_HF: return "dcp_hf";
    }
    return "unknown";
}

/* Transforms in the order they were applied when saving (DCP's
 * transform_descriptors order). */
static cJSON *transforms_json(uint32_t tf)
{
    cJSON *a = cJSON_CreateArray();
    if (!a)
        return NULL;
    bool ok = true;
    if (tf & CK_TF_ZSTD)
        ok = cJSON_AddItemToArray(a, cJSON_CreateString("stream.zstd/1"));
    if (ok && (tf & CK_TF_UNKNOWN))
        ok = cJSON_AddItemToArray(a, cJSON_CreateString("unknown"));
    if (ok)
        return a;
    cJSON_Delete(a);
    return NULL;
}

/* Adds item to obj under name, taking ownership either way; false if out
 * of memory (item NULL counts as that). */
static bool add(cJSON *obj, const char *name, cJSON *item)
{
    if (item && cJSON_AddItemToObject(obj, name, item))
        return true;
    cJSON_Delete(item);
    return false;
}

static cJSON *string_or_null(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

/* A DCP item is found to be raw bytes in a safetensors blob when it is
 * first read (dcp_safetensors.h), which may be happening right now: its
 * format is read only once its resolution is published. */
static ck_item_format chunk_format(const ck_checkpoint *ck, const ck_chunk *c)
{
    if (atomic_load_explicit(&((ck_chunk *)c)->state, memory_order_acquire) == 1)
        return c->format;
    return ck->kind == CK_SRC_DCP ? CK_ITEM_TORCH_SAVE : CK_ITEM_RAW;
}

cJSON *fs_chunk_metadata_json(const ck_checkpoint *ck, const ck_key *k, const ck_chunk *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = true;
    if (k->kind == CK_KEY_TENSOR)
        ok = add(o, "offsets", fs_json_u64_array(c->offsets, k->ndim)) &&
             add(o, "sizes", fs_json_u64_array(c->sizes, k->ndim));
    const char *file = c->file < ck->nfiles ? ck->files[c->file].path : NULL;
    ok = ok && add(o, "file", string_or_null(file)) &&
         fs_json_add_u64(o, "offset", c->offset) == 0 &&
         fs_json_add_u64(o, "length", c->length) == 0 &&
         add(o, "transforms", transforms_json(c->transforms)) &&
         add(o, "format", cJSON_CreateString(chunk_format(ck, c) == CK_ITEM_RAW ? "raw" : "torch.save"));
    if (ok)
        return o;
    cJSON_Delete(o);
    return NULL;
}

cJSON *fs_key_metadata_json(const ck_checkpoint *ck, const ck_key *k)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok;
    if (k->kind == CK_KEY_TENSOR) {
        const ck_dtype_info *info = ck_dtype_get(k->dtype);
        cJSON *chunks = cJSON_CreateArray();
        ok = add(o, "kind", cJSON_CreateString("tensor")) &&
             add(o, "dtype", string_or_null(info ? info->torch_name : NULL)) &&
             add(o, "shape", fs_json_u64_array(k->shape, k->ndim)) &&
             fs_json_add_u64(o, "numel", k->numel) == 0 &&
             fs_json_add_u64(o, "nbytes", k->nbytes) == 0 && add(o, "chunks", chunks);
        for (uint32_t i = 0; ok && i < k->nchunks; i++) {
            cJSON *c = fs_chunk_metadata_json(ck, k, &k->chunks[i]);
            ok = c && cJSON_AddItemToArray(chunks, c);
            if (!ok)
                cJSON_Delete(c);
        }
    } else {
        ok = add(o, "kind", cJSON_CreateString("bytes"));
        /* a bytes key is one item: its fields sit on the key itself */
        if (ok && k->nchunks) {
            cJSON *c = fs_chunk_metadata_json(ck, k, &k->chunks[0]);
            ok = c != NULL;
            while (ok && c->child) {
                cJSON *f = cJSON_DetachItemViaPointer(c, c->child);
                ok = cJSON_AddItemToObject(o, f->string, f);
                if (!ok)
                    cJSON_Delete(f);
            }
            cJSON_Delete(c);
        }
    }
    if (ok && k->error)
        ok = add(o, "error", cJSON_CreateString(strerror(-k->error)));
    if (ok)
        return o;
    cJSON_Delete(o);
    return NULL;
}

int fs_metadata_json(const ck_checkpoint *ck, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    cJSON *root = cJSON_CreateObject();
    cJSON *keys = cJSON_CreateObject();
    bool ok = root && keys && add(root, "source", string_or_null(ck->source)) &&
              add(root, "kind", cJSON_CreateString(kind_name(ck->kind))) &&
              add(root, "version", string_or_null(ck->version));
    if (ok) {
        ok = cJSON_AddItemToObject(root, "keys", keys);
        if (!ok)
            cJSON_Delete(keys);
    } else {
        cJSON_Delete(keys);
    }
    for (size_t i = 0; ok && i < ck->nkeys; i++)
        ok = add(keys, ck->keys[i].fqn, fs_key_metadata_json(ck, &ck->keys[i]));
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    char *buf = malloc(n + 2);
    if (buf) {
        memcpy(buf, text, n);
        buf[n] = '\n';
        buf[n + 1] = '\0';
        *out = buf;
        *len = n + 1;
    }
    cJSON_free(text);
    return buf ? 0 : -ENOMEM;
}
