/* The HuggingFace directory view (see view_hf.h). */
#include "view_hf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include "converted_read.h"
#include "dtype_convert.h"
#include "json_num.h"
#include "name_search.h"

#define HF_SINGLE "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"

bool fs_hf_name_reserved(const char *name)
{
    if (strcmp(name, HF_SINGLE) == 0 || strcmp(name, HF_INDEX) == 0)
        return true;
    /* model-<digits>-of-<digits>.safetensors */
    const char *p = name;
    if (strncmp(p, "model-", 6) != 0)
        return false;
    p += 6;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    if (strncmp(p, "-of-", 4) != 0)
        return false;
    p += 4;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return strcmp(p, ".safetensors") == 0;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const fs_st_member *)a)->name, ((const fs_st_member *)b)->name);
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const fs_hf_file *)a)->name, ((const fs_hf_file *)b)->name);
}

/* The keys shown and the JSON list of those left out. */
static int select_members(const ck_checkpoint *ck, const fs_hf_opts *o, fs_st_member **out,
                          size_t *nout, cJSON *skipped)
{
    size_t plen = o->prefix ? strlen(o->prefix) : 0;
    fs_st_member *m = ck->nkeys ? calloc(ck->nkeys, sizeof *m) : NULL;
    if (ck->nkeys && !m)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        const char *name = k->fqn;
        if (o->prefix) {
            if (strncmp(name, o->prefix, plen) != 0 || name[plen] != '.')
                continue;
            name += plen + 1;
        }
        char why[160];
        const char *reason = strcmp(name, "__metadata__") == 0
                                 ? "name reserved by safetensors"
                                 : fs_st_skip_reason(k, o->view_dtype, why, sizeof why);
        if (reason) {
            cJSON *e = cJSON_CreateObject();
            if (!e || !cJSON_AddStringToObject(e, "name", name) ||
                !cJSON_AddStringToObject(e, "reason", reason) || !cJSON_AddItemToArray(skipped, e)) {
                cJSON_Delete(e);
                free(m);
                return -ENOMEM;
            }
            continue;
        }
        m[n++] = (fs_st_member){ name, k };
    }
    /* ck->keys are in FQN order and a common prefix keeps it, but the
     * layout must not depend on that */
    if (n)
        qsort(m, n, sizeof *m, cmp_member);
    *out = m;
    *nout = n;
    return 0;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

/* Greedy cut of members into shards; bounds[i] = index of the first member
 * of shard i, bounds[nshards] = n. */
static int plan_shards(const fs_st_member *m, size_t n, const fs_hf_opts *o,
                       const char *skipped_text, size_t **bounds, size_t *nshards)
{
    size_t *b = malloc((n + 2) * sizeof *b);
    if (!b)
        return -ENOMEM;
    size_t ns = 0;
    b[ns++] = 0;
    /* the skipped list sits in the first shard only */
    uint64_t used = fs_st_base_header_bound(skipped_text);
    size_t in_shard = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t bytes, cost;
        int rc = ck_key_nbytes_as(m[i].key, ck_dtype_view(m[i].key->dtype, o->view_dtype), &bytes);
        if (rc || __builtin_add_overflow(bytes, fs_st_member_header_bound(&m[i], o->view_dtype),
                                         &cost)) {
            free(b);
            return rc ? rc : -EOVERFLOW;
        }
        if (in_shard && sat_add(used, cost) > o->shard_bytes) {
            b[ns++] = i;
            used = fs_st_base_header_bound(NULL);
            in_shard = 0;
        }
        uint64_t next = sat_add(used, cost);
        used = next;
        in_shard++;
    }
    b[ns] = n;
    *bounds = b;
    *nshards = ns;
    return 0;
}

static int add_file(fs_hf_view *v, size_t *cap, const char *name, fs_hf_file_kind kind,
                    size_t index, uint64_t size)
{
    if (v->nfiles == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        fs_hf_file *f = realloc(v->files, nc * sizeof *f);
        if (!f)
            return -ENOMEM;
        v->files = f;
        *cap = nc;
    }
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    v->files[v->nfiles++] = (fs_hf_file){ copy, kind, index, size };
    return 0;
}

static int build_index(fs_hf_view *v, const fs_st_member *m, const size_t *bounds,
                       cJSON *skipped)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = root ? cJSON_AddObjectToObject(root, "metadata") : NULL;
    cJSON *map = meta ? cJSON_AddObjectToObject(root, "weight_map") : NULL;
    int rc = map ? 0 : -ENOMEM;
    uint64_t total = 0;
    for (size_t s = 0; !rc && s < v->nshards; s++) {
        const fs_st_view *sv = &v->shards[s];
        const char *file = v->files[s].name; /* shards are added first, in order */
        for (size_t i = 0; !rc && i < sv->nentries; i++) {
            uint64_t len = sv->entries[i].end - sv->entries[i].begin;
            if (__builtin_add_overflow(total, len, &total))
                rc = -EOVERFLOW;
            else if (!cJSON_AddStringToObject(map, m[bounds[s] + i].name, file))
                rc = -ENOMEM;
        }
    }
    if (!rc)
        rc = fs_json_add_u64(meta, "total_size", total);
    if (!rc && cJSON_GetArraySize(skipped) > 0) {
        cJSON *copy = cJSON_Duplicate(skipped, 1);
        if (!copy || !cJSON_AddItemToObject(meta, "ckptfs.skipped", copy)) {
            cJSON_Delete(copy);
            rc = -ENOMEM;
        }
    }
    if (!rc) {
        char *text = cJSON_Print(root);
        if (!text) {
            rc = -ENOMEM;
        } else {
            v->index_len = strlen(text);
            v->index_json = malloc(v->index_len + 1);
            if (v->index_json) {
                memcpy(v->index_json, text, v->index_len);
                v->index_json[v->index_len] = '\n';
                v->index_len++;
            } else {
                rc = -ENOMEM;
            }
            cJSON_free(text);
        }
    }
    cJSON_Delete(root);
    return rc;
}

int fs_hf_view_build(const ck_checkpoint *ck, const fs_hf_opts *o, fs_hf_view *out)
{
    memset(out, 0, sizeof *out);
    fs_st_member *m = NULL;
    size_t n = 0, *bounds = NULL, ns = 0, cap = 0;
    char *skipped_text = NULL;
    cJSON *skipped = cJSON_CreateArray();
    int rc = skipped ? 0 : -ENOMEM;
    if (!rc)
        rc = select_members(ck, o, &m, &n, skipped);
    if (!rc && cJSON_GetArraySize(skipped) > 0 && !(skipped_text = cJSON_PrintUnformatted(skipped)))
        rc = -ENOMEM;
    if (!rc)
        rc = plan_shards(m, n, o, skipped_text, &bounds, &ns);
    if (!rc && !(out->shards = calloc(ns, sizeof *out->shards)))
        rc = -ENOMEM;
    for (size_t s = 0; !rc && s < ns; s++) {
        rc = fs_st_view_build_members(m + bounds[s], bounds[s + 1] - bounds[s], o->view_dtype,
                                      s == 0 ? skipped_text : NULL, &out->shards[s]);
        if (rc)
            break;
        out->nshards++;
        char name[64];
        if (ns == 1)
            snprintf(name, sizeof name, "%s", HF_SINGLE);
        else
            snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, ns);
        rc = add_file(out, &cap, name, FS_HF_SHARD, s, out->shards[s].size);
    }
    if (!rc && ns > 1) {
        rc = build_index(out, m, bounds, skipped);
        if (!rc)
            rc = add_file(out, &cap, HF_INDEX, FS_HF_INDEX, 0, out->index_len);
    }
    for (size_t i = 0; !rc && o->extra && i < o->extra->n; i++) {
        const fs_hf_dir_file *f = &o->extra->files[i];
        if (!fs_hf_name_reserved(f->name))
            rc = add_file(out, &cap, f->name, FS_HF_EXTRA, i, f->size);
    }
    if (!rc && out->nfiles)
        qsort(out->files, out->nfiles, sizeof *out->files, cmp_file);
    cJSON_free(skipped_text);
    cJSON_Delete(skipped);
    free(bounds);
    free(m);
    if (rc)
        fs_hf_view_clear(out);
    return rc;
}

void fs_hf_view_clear(fs_hf_view *v)
{
    for (size_t i = 0; i < v->nshards; i++)
        fs_st_view_clear(&v->shards[i]);
    free(v->shards);
    for (size_t i = 0; i < v->nfiles; i++)
        free(v->files[i].name);
    free(v->files);
    free(v->index_json);
    memset(v, 0, sizeof *v);
}

const fs_hf_file *fs_hf_view_find(const fs_hf_view *v, const char *name)
{
    return CK_NAME_FIND(v->files, v->nfiles, name, name);
}
