/* The safetensors view of a directory (see view_safetensors.h).
 *
 * Data regions follow each other in name order with no gap: the reference
 * reader (safetensors' Metadata::validate) rejects a file whose regions,
 * taken in offset order, leave a hole or do not end at the end of the
 * file.  The header is padded with spaces to a multiple of 8 so every
 * region starts 8-byte aligned, as safetensors' own writer does. */
#include "view_safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "chunk_reader.h"
#include "converted_read.h"
#include "dtype_convert.h"
#include "json_num.h"
#include "le.h"
#include "view_head.h"
#include "view_region.h"

typedef fs_st_member member; /* name: the suffix of key->fqn below DIR */

typedef struct {
    member *v;
    size_t n, cap;
} member_vec;

static int member_push(member_vec *mv, const char *name, const ck_key *k)
{
    if (mv->n == mv->cap) {
        size_t cap = mv->cap ? mv->cap * 2 : 64;
        member *v = realloc(mv->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        mv->v = v;
        mv->cap = cap;
    }
    mv->v[mv->n++] = (member){ name, k };
    return 0;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const member *)a)->name, ((const member *)b)->name);
}

/* The name of a key inside DIR's view: its FQN without DIR's components.
 * Taken from the FQN, not the tree path, so escaped components ("%2F")
 * come out as the original characters. */
static const char *relative_name(const char *fqn, size_t depth)
{
    const char *p = fqn;
    for (size_t i = 0; i < depth; i++) {
        const char *dot = strchr(p, '.');
        if (!dot)
            return fqn; /* cannot happen for a key under DIR */
        p = dot + 1;
    }
    return p;
}

typedef struct {
    size_t depth;
    member_vec *out;
} collect_ctx;

static int collect_member(void *ctx, const fs_node *file)
{
    collect_ctx *c = ctx;
    return member_push(c->out, relative_name(file->key->fqn, c->depth), file->key);
}

/* Every file under dir. */
static int collect(const fs_node *dir, size_t depth, member_vec *out)
{
    collect_ctx c = { depth, out };
    return fs_tree_walk_files(dir, collect_member, &c);
}

const char *fs_st_skip_reason(const ck_key *k, ck_dtype view_dtype, char *buf, size_t cap)
{
    if (k->kind == CK_KEY_BYTES)
        return "bytes entry (not a tensor)";
    if (k->error) {
        snprintf(buf, cap, "unreadable: %s", strerror(-k->error));
        return buf;
    }
    const ck_dtype_info *info = ck_dtype_get(ck_dtype_view(k->dtype, view_dtype));
    if (!info)
        return "unknown dtype";
    if (!info->st_name) {
        snprintf(buf, cap, "dtype %s has no safetensors name", info->torch_name);
        return buf;
    }
    if (k->dtype == CK_DT_FLOAT4_E2M1FN_X2 && k->ndim == 0)
        return "0-d float4_e2m1fn_x2 has no safetensors shape";
    return NULL;
}

/* {"dtype", "shape", "data_offsets"} of one tensor. */
static cJSON *tensor_json(const ck_key *k, ck_dtype as, uint64_t begin, uint64_t end)
{
    const ck_dtype_info *info = ck_dtype_get(as);
    cJSON *o = cJSON_CreateObject();
    cJSON *shape = fs_json_u64_array(k->shape, k->ndim);
    uint64_t offs[2] = { begin, end };
    cJSON *data = fs_json_u64_array(offs, 2);
    bool ok = o && shape && data && cJSON_AddStringToObject(o, "dtype", info->st_name);
    /* safetensors' F4 counts 4-bit values; torch's float4_e2m1fn_x2 packs two a byte */
    if (ok && as == CK_DT_FLOAT4_E2M1FN_X2) {
        uint64_t last;
        cJSON *l = NULL;
        ok = !__builtin_mul_overflow(k->shape[k->ndim - 1], 2, &last) &&
             (l = fs_json_u64(last)) && cJSON_ReplaceItemInArray(shape, (int)k->ndim - 1, l);
        if (!ok)
            cJSON_Delete(l);
    }
    if (ok && cJSON_AddItemToObject(o, "shape", shape)) {
        shape = NULL;
        if (cJSON_AddItemToObject(o, "data_offsets", data))
            return o;
    }
    cJSON_Delete(shape);
    cJSON_Delete(data);
    cJSON_Delete(o);
    return NULL;
}

static cJSON *skipped_entry(const char *name, const char *reason)
{
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddStringToObject(o, "name", name) &&
        cJSON_AddStringToObject(o, "reason", reason))
        return o;
    cJSON_Delete(o);
    return NULL;
}

static int build_header(fs_st_view *out, cJSON *root)
{
    char *text = cJSON_PrintUnformatted(root);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text), padded, total;
    int rc = 0;
    /* 8 + padded is a multiple of 8: padded is len rounded up to 8 */
    if (__builtin_add_overflow(len, 7, &padded))
        rc = -EOVERFLOW;
    padded &= ~(size_t)7;
    if (!rc && __builtin_add_overflow(padded, 8, &total))
        rc = -EOVERFLOW;
    if (!rc && !(out->header = malloc(total)))
        rc = -ENOMEM;
    if (!rc) {
        ck_put_le64(out->header, padded);
        memcpy(out->header + 8, text, len);
        memset(out->header + 8 + len, ' ', padded - len);
        out->header_len = total;
    }
    cJSON_free(text);
    return rc;
}

int fs_st_view_build_members(const fs_st_member *members, size_t n, ck_dtype view_dtype,
                             const char *skipped_json, fs_st_view *out)
{
    memset(out, 0, sizeof *out);
    cJSON *root = cJSON_CreateObject();
    /* first, so a reader meets it before the tensors */
    cJSON *meta = root ? cJSON_AddObjectToObject(root, "__metadata__") : NULL;
    int rc = meta && cJSON_AddStringToObject(meta, "format", "pt") ? 0 : -ENOMEM;
    if (!rc && skipped_json && !cJSON_AddStringToObject(meta, "ckptfs.skipped", skipped_json))
        rc = -ENOMEM;
    if (!rc && n && !(out->entries = calloc(n, sizeof *out->entries)))
        rc = -ENOMEM;
    uint64_t off = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const ck_key *k = members[i].key;
        ck_dtype as = ck_dtype_view(k->dtype, view_dtype);
        uint64_t nbytes, end;
        rc = ck_key_nbytes_as(k, as, &nbytes);
        if (!rc && __builtin_add_overflow(off, nbytes, &end))
            rc = -EOVERFLOW;
        if (rc)
            break;
        cJSON *t = tensor_json(k, as, off, end);
        if (!t || !cJSON_AddItemToObject(root, members[i].name, t)) {
            cJSON_Delete(t);
            rc = -ENOMEM;
            break;
        }
        fs_st_entry *e = &out->entries[out->nentries];
        rc = fs_key_ref_init(&e->ref, k);
        if (rc)
            break;
        out->nentries++;
        e->as = as;
        e->begin = off;
        e->end = end;
        off = end;
    }
    if (!rc)
        rc = build_header(out, root);
    if (!rc && __builtin_add_overflow(off, (uint64_t)out->header_len, &out->size))
        rc = -EOVERFLOW;
    for (size_t i = 0; !rc && i < out->nentries; i++) {
        out->entries[i].begin += out->header_len;
        out->entries[i].end += out->header_len;
    }
    cJSON_Delete(root);
    if (rc)
        fs_st_view_clear(out);
    return rc;
}

/* cJSON writes a string's byte as at most 6 ("\u001f"). */
#define JSON_ESCAPE_MAX 6

uint64_t fs_st_member_header_bound(const fs_st_member *m, ck_dtype view_dtype)
{
    (void)view_dtype; /* every dtype name is at most 7 characters */
    /* "NAME":{"dtype":"F8_E4M3","shape":[d,...],"data_offsets":[b,e]}, */
    uint64_t n = (uint64_t)strlen(m->name) * JSON_ESCAPE_MAX + 2;
    return n + 64 + (uint64_t)m->key->ndim * 21 + 2 * 21;
}

uint64_t fs_st_base_header_bound(const char *skipped_json)
{
    /* 8-byte length, {"__metadata__":{"format":"pt","ckptfs.skipped":"..."}}, padding */
    uint64_t n = skipped_json ? (uint64_t)strlen(skipped_json) * JSON_ESCAPE_MAX : 0;
    return 8 + 64 + n + 7;
}

int fs_st_view_build(const fs_node *dir, ck_dtype view_dtype, fs_st_view *out)
{
    memset(out, 0, sizeof *out);
    if (!dir->is_dir)
        return -ENOTDIR;
    member_vec mv = { 0 };
    cJSON *skipped = cJSON_CreateArray();
    char *skipped_text = NULL;
    int rc = skipped ? 0 : -ENOMEM;
    if (!rc)
        rc = collect(dir, fs_node_depth(dir), &mv);
    if (!rc && mv.n)
        qsort(mv.v, mv.n, sizeof *mv.v, cmp_member);
    /* keep the storable members in place, list the others */
    size_t kept = 0;
    for (size_t i = 0; !rc && i < mv.n; i++) {
        char why[160];
        const char *reason = strcmp(mv.v[i].name, "__metadata__") == 0
                                 ? "name reserved by safetensors"
                                 : fs_st_skip_reason(mv.v[i].key, view_dtype, why, sizeof why);
        if (!reason) {
            mv.v[kept++] = mv.v[i];
            continue;
        }
        cJSON *e = skipped_entry(mv.v[i].name, reason);
        if (!e || !cJSON_AddItemToArray(skipped, e)) {
            cJSON_Delete(e);
            rc = -ENOMEM;
        }
    }
    /* __metadata__ values must be strings (a map of str to str), so the
     * skipped list is stored as JSON text */
    if (!rc && cJSON_GetArraySize(skipped) > 0 && !(skipped_text = cJSON_PrintUnformatted(skipped)))
        rc = -ENOMEM;
    if (!rc)
        rc = fs_st_view_build_members(mv.v, kept, view_dtype, skipped_text, out);
    cJSON_free(skipped_text);
    cJSON_Delete(skipped);
    free(mv.v);
    return rc;
}

void fs_st_view_clear(fs_st_view *v)
{
    for (size_t i = 0; i < v->nentries; i++)
        fs_key_ref_clear(&v->entries[i].ref);
    free(v->entries);
    free(v->header);
    memset(v, 0, sizeof *v);
}

int fs_st_view_read(ck_checkpoint *ck, const fs_st_view *v, uint64_t off,
                    void *dst, size_t len, size_t *got)
{
    *got = 0;
    size_t done = fs_view_read_head(v->header, v->header_len, v->size, off, dst, &len);
    if (len == 0)
        return 0;
    uint8_t *out = dst;
    size_t first = fs_region_first_after(v->entries, v->nentries, sizeof *v->entries,
                                         offsetof(fs_st_entry, end), off + done);
    for (size_t i = first; done < len && i < v->nentries; i++) {
        const fs_st_entry *e = &v->entries[i];
        uint64_t pos = off + done;
        if (e->end <= pos)
            continue; /* an empty tensor */
        uint64_t in_e = pos - e->begin;
        size_t want = e->end - pos < len - done ? (size_t)(e->end - pos) : len - done;
        const ck_key *k;
        size_t n;
        int rc = fs_key_ref_get(&e->ref, &k);
        if (!rc)
            rc = ck_key_read_as(ck, k, e->as, in_e, out + done, want, &n);
        if (rc)
            return rc;
        if (n != want)
            return -EIO; /* the key is shorter than its dtype and shape say */
        done += n;
    }
    if (done != len)
        return -EIO; /* cannot happen: the regions tile the data */
    *got = done;
    return 0;
}
