/* DCP items in the safetensors serialization format: finding a chunk's
 * bytes in its data file's safetensors blob (see dcp_safetensors.h for the
 * two layouts torch and NeMo write).  Each data file's blob is parsed once
 * and kept in ck->dcp_st; every item is then checked against it, so a
 * header that disagrees with `.metadata` fails that item with EIO. */
#include "dcp_safetensors.h"

#include <pthread.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "byte_source.h"
#include "errmsg.h"
#include "geometry.h"
#include "safetensors.h"

#define DCP_SHARDING_INFO "DCP_SHARDING_INFO"

enum { SAVED_NONE = 0, SAVED_OK = 1, SAVED_BAD = 2 };

/* How many data files ck_dcp_st_in_use looks at. */
#define IN_USE_FILES 64

typedef struct {
    bool valid;
    uint64_t at;         /* where the blob starts in the file */
    ck_st_header h;      /* tensor offsets count from at + h.data_start */
    size_t *by_name;     /* indices into h.tensors, sorted by name */
    bool has_info;       /* __metadata__ has DCP_SHARDING_INFO */
    uint64_t *saved;     /* per tensor, CK_MAX_DIMS saved offsets */
    uint8_t *saved_state; /* per tensor, SAVED_* */
} st_blob;

typedef struct {
    bool probed;         /* offset 0 looked at */
    st_blob head;        /* a blob at offset 0 (NeMo; torch without bytes entries) */
    st_blob tail;        /* a blob at an item's offset (torch, after bytes entries) */
    char head_err[256];  /* why offset 0 looked like a header but was refused */
} st_file;

typedef struct {
    size_t nfiles;
    st_file *files;
} st_cache;

static void blob_free(st_blob *b)
{
    ck_st_free(&b->h);
    free(b->by_name);
    free(b->saved);
    free(b->saved_state);
    memset(b, 0, sizeof *b);
}

void ck_dcp_st_free(ck_checkpoint *ck)
{
    st_cache *sc = ck->dcp_st;
    if (!sc)
        return;
    for (size_t i = 0; i < sc->nfiles; i++) {
        blob_free(&sc->files[i].head);
        blob_free(&sc->files[i].tail);
    }
    free(sc->files);
    free(sc);
    ck->dcp_st = NULL;
}

static st_cache *cache_of(ck_checkpoint *ck)
{
    st_cache *sc = ck->dcp_st;
    if (sc)
        return sc;
    sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->files = calloc(ck->nfiles ? ck->nfiles : 1, sizeof *sc->files);
    if (!sc->files) {
        free(sc);
        return NULL;
    }
    sc->nfiles = ck->nfiles;
    ck->dcp_st = sc;
    return sc;
}

static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const ck_st_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Index of the tensor called name, or -1. */
static long find_tensor(const st_blob *b, const char *name)
{
    size_t lo = 0, hi = b->h.ntensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        size_t i = b->by_name[mid];
        int c = strcmp(b->h.tensors[i].name, name);
        if (c == 0)
            return (long)i;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* DCP_SHARDING_INFO = {fqn: {"saved_offsets": [...]}}: each tensor's entry,
 * kept per tensor as ok or bad so that only the items needing a bad one
 * fail.  F4's last offset counts 4-bit values, like its safetensors shape. */
static int parse_sharding(st_blob *b, const char *info, char *err, size_t errlen)
{
    if (ck_json_has_nul_escape(info, strlen(info)))
        return ck_fail(err, errlen, -EINVAL, DCP_SHARDING_INFO " names a tensor with a NUL in it");
    cJSON *root = cJSON_Parse(info);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ck_fail(err, errlen, -EINVAL, DCP_SHARDING_INFO " is not a JSON object");
    }
    size_t n = 0, nt = b->h.ntensors;
    for (const cJSON *e = root->child; e; e = e->next)
        n++;
    const cJSON **members = malloc((n ? n : 1) * sizeof *members);
    b->saved = calloc(nt ? nt : 1, CK_MAX_DIMS * sizeof *b->saved);
    b->saved_state = calloc(nt ? nt : 1, 1);
    int rc = 0;
    if (!members || !b->saved || !b->saved_state) {
        rc = -ENOMEM;
        goto out;
    }
    n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        members[n++] = e;
    qsort(members, n, sizeof *members, cmp_member);
    for (size_t i = 0; i < nt; i++) {
        const ck_st_tensor *t = &b->h.tensors[i];
        cJSON probe = { .string = t->name };
        const cJSON *pp = &probe;
        const cJSON **hit = bsearch(&pp, members, n, sizeof *members, cmp_member);
        if (!hit)
            continue; /* SAVED_NONE */
        const cJSON *so = cJSON_GetObjectItemCaseSensitive(*hit, "saved_offsets");
        uint64_t *offs = &b->saved[i * CK_MAX_DIMS];
        b->saved_state[i] = SAVED_BAD;
        if (!cJSON_IsArray(so) || cJSON_GetArraySize(so) != (int)t->ndim)
            continue;
        uint32_t k = 0;
        for (const cJSON *v = so->child; v && k < t->ndim; v = v->next, k++)
            if (ck_st_json_uint(v, &offs[k]))
                break;
        if (k != t->ndim)
            continue;
        if (t->dtype == CK_DT_FLOAT4_E2M1FN_X2 && t->ndim) {
            if (offs[t->ndim - 1] % 2)
                continue;
            offs[t->ndim - 1] /= 2;
        }
        b->saved_state[i] = SAVED_OK;
    }
out:
    free(members);
    cJSON_Delete(root);
    return rc;
}

/* Looks for a safetensors blob at `at`: 0 with b->valid false when the bytes
 * there are no header at all (a torch.save archive has its compression
 * method, 0, where a header has its opening '{'), 0 with b->valid set when
 * one parses, -EINVAL with err when one looks like a header but is refused
 * (a length past the file, bad JSON, offsets past the data...). */
static int probe(ck_checkpoint *ck, uint32_t file, uint64_t file_size, uint64_t at, st_blob *b,
                 char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    if (at > file_size || file_size - at < 9)
        return 0;
    uint8_t head[9];
    ck_byte_source src;
    int orc = ck_file_source(ck, file, at, file_size - at, &src);
    if (orc)
        return orc == -ENOMEM ? orc : 0;
    if (ck_byte_source_read(&src, 0, head, sizeof head) != 0 || head[8] != '{')
        return 0;
    int rc = ck_st_parse(&src, &b->h, err, errlen);
    if (rc)
        return rc == -ENOMEM ? rc : -EINVAL;
    b->by_name = malloc((b->h.ntensors ? b->h.ntensors : 1) * sizeof *b->by_name);
    if (!b->by_name) {
        blob_free(b);
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->h.ntensors; i++)
        b->by_name[i] = i;
    qsort_r(b->by_name, b->h.ntensors, sizeof *b->by_name, cmp_name_idx, b->h.tensors);
    const char *info = ck_st_meta_get(&b->h, DCP_SHARDING_INFO);
    if (info) {
        b->has_info = true;
        rc = parse_sharding(b, info, err, errlen);
        if (rc) {
            blob_free(b);
            return rc;
        }
    }
    b->valid = true;
    b->at = at;
    return 0;
}

/* The item is tensor ti of blob b: check it against the metadata and lay
 * the chunk out as the tensor's raw bytes. */
static int match_item(const ck_key *key, ck_chunk *c, const st_blob *b, size_t ti, char *why,
                      size_t whylen)
{
    const ck_st_tensor *t = &b->h.tensors[ti];
    char got[96], want[96];
    if (c->transforms)
        return ck_fail(why, whylen, -EIO,
                       "a transform on a tensor stored in a safetensors blob (torch writes "
                       "those tensors untransformed)");
    if (t->dtype != key->dtype)
        return ck_fail(why, whylen, -EIO, "the safetensors header says %s, the metadata %s",
                       ck_dtype_get(t->dtype)->torch_name, ck_dtype_get(key->dtype)->torch_name);
    bool same = t->ndim == key->ndim;
    for (uint32_t k = 0; same && k < key->ndim; k++)
        same = t->shape[k] == c->sizes[k];
    if (!same) {
        ck_format_shape(got, sizeof got, t->ndim, t->shape);
        ck_format_shape(want, sizeof want, key->ndim, c->sizes);
        return ck_fail(why, whylen, -EIO, "the safetensors header gives shape %s, the chunk is %s",
                       got, want);
    }
    if (b->has_info && b->saved_state[ti] != SAVED_OK)
        return ck_fail(why, whylen, -EIO, DCP_SHARDING_INFO " has %s saved_offsets for it",
                       b->saved_state[ti] == SAVED_NONE ? "no" : "malformed");
    for (uint32_t k = 0; k < key->ndim; k++) {
        uint64_t saved = b->has_info ? b->saved[ti * CK_MAX_DIMS + k] : 0;
        if (saved != c->offsets[k]) {
            ck_format_shape(got, sizeof got, key->ndim,
                       b->has_info ? &b->saved[ti * CK_MAX_DIMS] : (const uint64_t[CK_MAX_DIMS]){ 0 });
            ck_format_shape(want, sizeof want, key->ndim, c->offsets);
            return ck_fail(why, whylen, -EIO,
                           "the safetensors header saves it at offsets %s, the chunk is at %s",
                           got, want);
        }
    }
    /* bounded by the file: ck_st_parse checked end against the data */
    uint64_t raw = b->at + b->h.data_start + t->begin, nbytes = t->end - t->begin;
    bool at_bytes = c->offset == raw, at_blob = c->offset == b->at;
    if ((!at_bytes && !at_blob) || c->length != nbytes)
        return ck_fail(why, whylen, -EIO,
                       "item [%" PRIu64 ", +%" PRIu64 ") is neither the tensor's bytes [%" PRIu64
                       ", +%" PRIu64 ") nor its safetensors blob at %" PRIu64,
                       c->offset, c->length, raw, nbytes, b->at);
    c->format = CK_ITEM_RAW;
    c->layout.direct = true;
    c->layout.file_offset = raw;
    c->layout.nbytes = nbytes;
    return 0;
}

/* Finds the blob holding the item, without touching the chunk: *b and *ti
 * when one names it; *in_blob when the item is in a safetensors file at all
 * (a file that starts with a blob holds nothing else). */
static int locate(ck_checkpoint *ck, const ck_key *key, const ck_chunk *c,
                  uint64_t file_size, const uint8_t *item_head, uint64_t head_len,
                  const st_blob **b, size_t *ti, bool *in_blob, char *note, size_t notelen)
{
    *b = NULL;
    *in_blob = false;
    st_cache *sc = cache_of(ck);
    if (!sc)
        return -ENOMEM;
    if (c->file >= sc->nfiles)
        return 0;
    st_file *f = &sc->files[c->file];
    int rc;
    if (!f->probed) {
        rc = probe(ck, c->file, file_size, 0, &f->head, f->head_err, sizeof f->head_err);
        if (rc == -ENOMEM)
            return rc;
        f->probed = true;
    }
    long i;
    if (f->head.valid) {
        *in_blob = true;
        if ((i = find_tensor(&f->head, key->fqn)) >= 0) {
            *b = &f->head;
            *ti = (size_t)i;
        }
        return 0;
    }
    if (f->head_err[0] && notelen)
        snprintf(note, notelen, "the file starts like a safetensors header, refused: %s",
                 f->head_err);
    /* A zstd item's frame could hold a '{' anywhere: only untransformed
     * items are looked at (torch never transforms its blob). */
    if (c->transforms || c->offset == 0)
        return 0;
    /* a header is 8 length bytes, then '{': a zip archive starts otherwise */
    if (item_head && head_len >= 9 && item_head[8] != '{')
        return 0;
    if (!(f->tail.valid && f->tail.at == c->offset)) {
        st_blob nb;
        char err[256] = "";
        rc = probe(ck, c->file, file_size, c->offset, &nb, err, sizeof err);
        if (rc == -ENOMEM)
            return rc;
        if (rc && notelen)
            snprintf(note, notelen, "a safetensors header at offset %" PRIu64 " is refused: %s",
                     c->offset, err);
        if (!nb.valid)
            return 0;
        blob_free(&f->tail);
        f->tail = nb;
    }
    *in_blob = true;
    if ((i = find_tensor(&f->tail, key->fqn)) >= 0) {
        *b = &f->tail;
        *ti = (size_t)i;
    }
    return 0;
}

int ck_dcp_st_resolve(ck_checkpoint *ck, const ck_key *key, ck_chunk *c,
                      uint64_t file_size, const uint8_t *item_head, uint64_t head_len, bool *found,
                      char *why, size_t whylen, char *note, size_t notelen)
{
    *found = false;
    if (notelen)
        note[0] = '\0';
    if (ck->kind != CK_SRC_DCP || key->kind != CK_KEY_TENSOR)
        return 0;
    const st_blob *b;
    size_t ti = 0;
    /* The per-file header cache is shared by every resolving thread.  The
     * lock covers the header reads of a file's first probe: once per data
     * file, small, and what the other threads would have to wait for anyway. */
    pthread_mutex_lock(&ck->lock);
    int rc = locate(ck, key, c, file_size, item_head, head_len, &b, &ti, found, note, notelen);
    if (!rc && *found)
        rc = b ? match_item(key, c, b, ti, why, whylen)
               : ck_fail(why, whylen, -EIO,
                         "the safetensors header of its data file has no tensor %s", key->fqn);
    pthread_mutex_unlock(&ck->lock);
    return rc;
}

bool ck_dcp_st_in_use(ck_checkpoint *ck)
{
    if (ck->kind != CK_SRC_DCP || ck->nfiles == 0)
        return false;
    bool *seen = calloc(ck->nfiles, sizeof *seen);
    if (!seen)
        return false;
    bool uses = false;
    size_t looked = 0;
    pthread_mutex_lock(&ck->lock);
    /* One writer writes every file of a checkpoint one way: a few files
     * tell, and a per-item checkpoint of 100,000 files is not all opened. */
    for (size_t i = 0; !uses && looked < IN_USE_FILES && i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        for (uint32_t j = 0; !uses && k->kind == CK_KEY_TENSOR && j < k->nchunks; j++) {
            const ck_chunk *c = &k->chunks[j];
            uint64_t size;
            if (c->file >= ck->nfiles || seen[c->file])
                continue;
            seen[c->file] = true; /* one item per file says how the file is written */
            looked++;
            if (ck_file_size(ck, c->file, &size))
                continue;
            const st_blob *b;
            size_t ti;
            bool in_blob = false;
            (void)locate(ck, k, c, size, NULL, 0, &b, &ti, &in_blob, NULL, 0);
            uses = in_blob;
        }
    }
    pthread_mutex_unlock(&ck->lock);
    free(seen);
    return uses;
}
