/* The metadata.json view (see view_metadata.h). */
#include "view_metadata.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "json_num.h"
#include "view_region.h"

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

/* raw: how the chunk's item is stored, as the caller saw it (a snapshot
 * keeps the document's bytes fixed while chunks resolve, see below). */
static cJSON *chunk_json(const ck_checkpoint *ck, const ck_key *k, const ck_chunk *c, bool raw)
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
         add(o, "format", cJSON_CreateString(raw ? "raw" : "torch.save"));
    if (ok)
        return o;
    cJSON_Delete(o);
    return NULL;
}

cJSON *fs_chunk_metadata_json(const ck_checkpoint *ck, const ck_key *k, const ck_chunk *c)
{
    return chunk_json(ck, k, c, chunk_format(ck, c) == CK_ITEM_RAW);
}

/* raw: bit i says chunk i is stored raw; NULL: as the chunks say now. */
static cJSON *key_json(const ck_checkpoint *ck, const ck_key *k, const uint8_t *raw)
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
            cJSON *c = raw ? chunk_json(ck, k, &k->chunks[i], raw[i / 8] >> (i % 8) & 1)
                           : fs_chunk_metadata_json(ck, k, &k->chunks[i]);
            ok = c && cJSON_AddItemToArray(chunks, c);
            if (!ok)
                cJSON_Delete(c);
        }
    } else {
        ok = add(o, "kind", cJSON_CreateString("bytes"));
        /* a bytes key is one item: its fields sit on the key itself */
        if (ok && k->nchunks) {
            cJSON *c = raw ? chunk_json(ck, k, &k->chunks[0], raw[0] & 1)
                           : fs_chunk_metadata_json(ck, k, &k->chunks[0]);
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

cJSON *fs_key_metadata_json(const ck_checkpoint *ck, const ck_key *k)
{
    return key_json(ck, k, NULL);
}

/* The root object with the given keys object (taken). */
static cJSON *root_json(const ck_checkpoint *ck, cJSON *keys)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = root && keys && add(root, "source", string_or_null(ck->source)) &&
              add(root, "kind", cJSON_CreateString(kind_name(ck->kind))) &&
              add(root, "version", string_or_null(ck->version));
    if (ok && cJSON_AddItemToObject(root, "keys", keys))
        return root;
    cJSON_Delete(keys);
    cJSON_Delete(root);
    return NULL;
}

/* cJSON_Print's text of a member of "keys": the document's objects are
 * nested two deep there, and cJSON indents every line after a newline by
 * its depth in tabs (strings escape their own tabs and newlines), so the
 * key's object printed alone, with two more tabs after each newline, is
 * byte for byte what the whole document holds. */
static int member_text(const ck_checkpoint *ck, const ck_key *k, const uint8_t *raw, char **out,
                       size_t *len)
{
    cJSON *name = cJSON_CreateString(k->fqn);
    cJSON *obj = key_json(ck, k, raw);
    char *qname = name ? cJSON_PrintUnformatted(name) : NULL;
    char *text = obj ? cJSON_Print(obj) : NULL;
    cJSON_Delete(name);
    cJSON_Delete(obj);
    int rc = -ENOMEM;
    if (qname && text) {
        size_t nl = 0, tl = strlen(text), ql = strlen(qname);
        for (size_t i = 0; i < tl; i++)
            nl += text[i] == '\n';
        /* "\t\t" qname ":\t" text, two tabs more per newline: far below SIZE_MAX */
        size_t n = 2 + ql + 2 + tl + 2 * nl;
        char *buf = malloc(n + 1);
        if (buf) {
            char *p = buf;
            *p++ = '\t';
            *p++ = '\t';
            memcpy(p, qname, ql);
            p += ql;
            *p++ = ':';
            *p++ = '\t';
            for (size_t i = 0; i < tl; i++) {
                *p++ = text[i];
                if (text[i] == '\n') {
                    *p++ = '\t';
                    *p++ = '\t';
                }
            }
            *p = '\0';
            *out = buf;
            *len = n;
            rc = 0;
        }
    }
    cJSON_free(qname);
    cJSON_free(text);
    return rc;
}

void fs_metadata_stream_clear(fs_metadata_stream *s)
{
    free(s->head);
    free(s->tail);
    free(s->ends);
    free(s->chunk_base);
    free(s->raw);
    memset(s, 0, sizeof *s);
}

/* A key's chunk formats as the document shows them: those of its chunks
 * from the snapshot. */
static const uint8_t *key_raw(const fs_metadata_stream *s, size_t i, uint8_t *scratch, size_t cap,
                              uint8_t **heap)
{
    uint64_t base = s->chunk_base[i], n = s->chunk_base[i + 1] - base;
    size_t bytes = (size_t)(n / 8 + 1);
    uint8_t *out = bytes <= cap ? scratch : (*heap = calloc(bytes, 1));
    if (!out)
        return NULL;
    memset(out, 0, bytes);
    for (uint64_t j = 0; j < n; j++)
        if (s->raw[(base + j) / 8] >> ((base + j) % 8) & 1)
            out[j / 8] |= (uint8_t)(1u << (j % 8));
    return out;
}

/* Key i's segment: its member and what follows it (",\n", or "\n" after
 * the last). */
static int segment(const fs_metadata_stream *s, const ck_checkpoint *ck, size_t i, char **out,
                   size_t *len)
{
    uint8_t scratch[512], *heap = NULL;
    const uint8_t *raw = key_raw(s, i, scratch, sizeof scratch, &heap);
    if (!raw)
        return -ENOMEM;
    char *text;
    size_t n;
    int rc = member_text(ck, &ck->keys[i], raw, &text, &n);
    free(heap);
    if (rc)
        return rc;
    char *t = realloc(text, n + 3);
    if (!t) {
        free(text);
        return -ENOMEM;
    }
    if (i + 1 < s->nkeys)
        t[n++] = ',';
    t[n++] = '\n';
    *out = t;
    *len = n;
    return 0;
}

int fs_metadata_stream_init(fs_metadata_stream *s, const ck_checkpoint *ck)
{
    memset(s, 0, sizeof *s);
    s->nkeys = ck->nkeys;
    /* head and tail: the document with one placeholder key, cut around it;
     * with no keys the document is all head */
    cJSON *keys = cJSON_CreateObject();
    if (keys && ck->nkeys && !add(keys, "@", cJSON_CreateNull())) {
        cJSON_Delete(keys);
        keys = NULL;
    }
    cJSON *root = keys ? root_json(ck, keys) : NULL;
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return -ENOMEM;
    int rc = -ENOMEM;
    size_t tl = strlen(text);
    const char *mark = "\t\t\"@\":\tnull\n";
    const char *at = ck->nkeys ? strstr(text, mark) : text + tl;
    if (!at) {
        cJSON_free(text);
        return -EIO; /* cJSON printing unlike what member_text() relies on */
    }
    s->head_len = (size_t)(at - text);
    const char *rest = ck->nkeys ? at + strlen(mark) : at;
    s->tail_len = strlen(rest) + 1;
    s->head = malloc(s->head_len + 1);
    s->tail = malloc(s->tail_len + 1);
    s->ends = calloc(ck->nkeys ? ck->nkeys : 1, sizeof *s->ends);
    s->chunk_base = calloc(ck->nkeys + 1, sizeof *s->chunk_base);
    if (!s->head || !s->tail || !s->ends || !s->chunk_base)
        goto out;
    memcpy(s->head, text, s->head_len);
    memcpy(s->tail, rest, s->tail_len - 1);
    s->tail[s->tail_len - 1] = '\n';
    uint64_t nchunks = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        s->chunk_base[i] = nchunks;
        nchunks += ck->keys[i].nchunks;
    }
    s->chunk_base[ck->nkeys] = nchunks;
    /* the chunks' formats now: reads later show these even if a chunk
     * resolves in between, so segment lengths stay what they were */
    s->raw = calloc((size_t)(nchunks / 8 + 1), 1);
    if (!s->raw)
        goto out;
    for (size_t i = 0; i < ck->nkeys; i++)
        for (uint32_t j = 0; j < ck->keys[i].nchunks; j++)
            if (chunk_format(ck, &ck->keys[i].chunks[j]) == CK_ITEM_RAW) {
                uint64_t b = s->chunk_base[i] + j;
                s->raw[b / 8] |= (uint8_t)(1u << (b % 8));
            }
    uint64_t off = s->head_len;
    for (size_t i = 0; i < ck->nkeys; i++) {
        char *seg;
        size_t n;
        if ((rc = segment(s, ck, i, &seg, &n)))
            goto out;
        free(seg);
        off += n;
        s->ends[i] = off;
    }
    s->size = off + s->tail_len;
    rc = 0;
out:
    cJSON_free(text);
    if (rc)
        fs_metadata_stream_clear(s);
    return rc;
}

static size_t copy_part(const char *src, uint64_t src_off, size_t src_len, uint64_t off,
                        char *dst, size_t len)
{
    /* bytes [off, off + len) of the document that fall in [src_off, +src_len) */
    if (off + len <= src_off || off >= src_off + src_len)
        return 0;
    uint64_t from = off > src_off ? off : src_off;
    uint64_t to = off + len < src_off + src_len ? off + len : src_off + src_len;
    memcpy(dst + (from - off), src + (from - src_off), (size_t)(to - from));
    return (size_t)(to - from);
}

int fs_metadata_stream_read(const fs_metadata_stream *s, const ck_checkpoint *ck, uint64_t off,
                            void *dst, size_t len, size_t *got)
{
    *got = 0;
    if (off >= s->size || !len)
        return 0;
    if (len > s->size - off)
        len = (size_t)(s->size - off);
    char *out = dst;
    copy_part(s->head, 0, s->head_len, off, out, len);
    /* the first key whose segment ends after off: ends[] are the regions */
    size_t first = fs_region_first_after(s->ends, s->nkeys, sizeof *s->ends, 0, off);
    for (size_t i = first; i < s->nkeys; i++) {
        uint64_t start = i ? s->ends[i - 1] : s->head_len;
        if (start >= off + len)
            break;
        char *seg;
        size_t n;
        int rc = segment(s, ck, i, &seg, &n);
        if (rc)
            return rc;
        if (n != s->ends[i] - start) {
            free(seg);
            return -EIO; /* the key changed under the document: cannot happen in one state */
        }
        copy_part(seg, start, n, off, out, len);
        free(seg);
    }
    uint64_t tail_off = s->size - s->tail_len;
    copy_part(s->tail, tail_off, s->tail_len, off, out, len);
    *got = len;
    return 0;
}
