/* Safetensors sources: one file, a directory of shards (HF save_pretrained,
 * with model.safetensors.index.json), or DCP's HuggingFaceStorageWriter
 * output, whose files' DCP_SHARDING_INFO place each file's piece of a
 * tensor inside the full one (torch/distributed/checkpoint/hf_storage.py,
 * read_metadata: full size = per-dim max of offset + piece shape). */
#include "ckpt_build.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena.h"
#include "byte_source.h"
#include "name_search.h"
#include "safetensors.h"

#define ST_SUFFIX ".safetensors"
#define ST_INDEX_NAME "model.safetensors.index.json"
#define DCP_SHARDING_INFO "DCP_SHARDING_INFO"

typedef struct {
    char *name;          /* relative to the root */
    uint32_t file;       /* ck file index */
    ck_st_header h;
    /* With DCP_SHARDING_INFO: CK_MAX_DIMS offsets per tensor; else NULL. */
    uint64_t *saved_offsets;
} st_file;

typedef struct {
    const char *name;
    size_t file;   /* index into the st_file array */
    size_t tensor; /* index into that file's tensors */
} st_piece;

typedef struct {
    ck_checkpoint *ck;
    int single;    /* SOURCE is the file itself */
    char *err;
    size_t errlen;
    int reported;  /* err holds the message already */
    st_file *files;
    size_t nfiles;
    st_piece *pieces;
    size_t npieces;
} st_build;

static void fail(st_build *b, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One line: "SOURCE/FILE: what" (or "SOURCE: what" for a single file). */
static void fail(st_build *b, const char *file, const char *fmt, ...)
{
    if (!b->err || !b->errlen)
        return;
    b->reported = 1;
    int n;
    if (b->single || !file)
        n = snprintf(b->err, b->errlen, "%s: ", b->ck->source);
    else
        n = snprintf(b->err, b->errlen, "%s/%s: ", b->ck->source, file);
    if (n < 0 || (size_t)n >= b->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err + n, b->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Through the storage, which confines names to the root the same way the
 * reads later are (storage_local.c). */
static int open_file(st_build *b, const char *name, ck_object **obj, uint64_t *size)
{
    ck_object *o;
    int rc = ck_storage_open(b->ck->storage, name, &o);
    if (rc == -EXDEV || rc == -ELOOP) {
        fail(b, name, "leaves the checkpoint directory");
        return -EINVAL;
    }
    if (rc == -EINVAL) {
        fail(b, name, "not a regular file");
        return rc;
    }
    if (rc) {
        fail(b, name, "%s", strerror(-rc));
        return rc;
    }
    ck_object_info info;
    rc = ck_object_info_get(o, &info);
    if (rc) {
        fail(b, name, "%s", strerror(-rc));
        ck_object_close(o);
        return rc;
    }
    *obj = o;
    *size = info.size;
    return 0;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

typedef struct {
    char **names;
    size_t n, cap;
} name_list;

static int add_shard_name(void *ctx, const char *name, const ck_object_info *info)
{
    name_list *l = ctx;
    if (!has_suffix(name, ST_SUFFIX))
        return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        char **nn = realloc(l->names, ncap * sizeof *nn);
        if (!nn)
            return -ENOMEM;
        l->names = nn;
        l->cap = ncap;
    }
    if (!(l->names[l->n] = strdup(name)))
        return -ENOMEM;
    l->n++;
    return 0;
}

/* *.safetensors in the root, sorted.  The storage lists objects only: a
 * directory that happens to be called x.safetensors is no shard. */
static int list_dir(st_build *b, char ***out, size_t *nout)
{
    name_list l = { 0 };
    int rc = ck_storage_list(b->ck->storage, add_shard_name, &l);
    if (rc && rc != -ENOMEM)
        fail(b, NULL, "reading the directory: %s", strerror(-rc));
    if (!rc && l.n == 0) {
        fail(b, NULL, "no *" ST_SUFFIX " files");
        rc = -ENOENT;
    }
    if (rc) {
        free_names(l.names, l.n);
        return rc;
    }
    qsort(l.names, l.n, sizeof *l.names, cmp_str);
    *out = l.names;
    *nout = l.n;
    return 0;
}

static int cmp_json_key(const void *a, const void *b)
{
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Object members sorted by name, for bsearch with cmp_json_key: a
 * header of many thousand tensors must not cost a linear lookup each. */
static const cJSON **sorted_members(const cJSON *obj, size_t *n)
{
    size_t count = 0;
    for (const cJSON *e = obj->child; e; e = e->next)
        count++;
    const cJSON **v = malloc((count ? count : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t i = 0;
    for (const cJSON *e = obj->child; e; e = e->next)
        v[i++] = e;
    qsort(v, count, sizeof *v, cmp_json_key);
    *n = count;
    return v;
}

static const cJSON *find_member(const cJSON **sorted, size_t n, const char *name)
{
    cJSON probe = { .string = (char *)name };
    const cJSON *pp = &probe;
    const cJSON **hit = bsearch(&pp, sorted, n, sizeof *sorted, cmp_json_key);
    return hit ? *hit : NULL;
}

/* DCP_SHARDING_INFO: a JSON string {fqn: {"saved_offsets": [...]}}.  Every
 * tensor of the file needs its entry (torch's reader raises KeyError
 * without one). */
static int parse_sharding(st_build *b, st_file *f, const char *info)
{
    if (ck_json_has_nul_escape(info, strlen(info))) {
        fail(b, f->name, DCP_SHARDING_INFO " names a tensor with a NUL (\\u0000) in it");
        return -EINVAL;
    }
    cJSON *root = cJSON_Parse(info);
    if (!cJSON_IsObject(root)) {
        fail(b, f->name, DCP_SHARDING_INFO " is not a JSON object");
        cJSON_Delete(root);
        return -EINVAL;
    }
    int rc = 0;
    size_t nt = f->h.ntensors, nents = 0;
    const cJSON **ents = sorted_members(root, &nents);
    f->saved_offsets = calloc(nt ? nt : 1, CK_MAX_DIMS * sizeof(uint64_t));
    if (!ents || !f->saved_offsets) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nt; i++) {
        const ck_st_tensor *t = &f->h.tensors[i];
        uint64_t *offs = &f->saved_offsets[i * CK_MAX_DIMS];
        const cJSON *e = find_member(ents, nents, t->name);
        const cJSON *so = cJSON_IsObject(e) ? cJSON_GetObjectItemCaseSensitive(e, "saved_offsets")
                                            : NULL;
        if (!cJSON_IsArray(so)) {
            fail(b, f->name, DCP_SHARDING_INFO " has no saved_offsets for tensor '%s'", t->name);
            rc = -EINVAL;
            goto out;
        }
        if (cJSON_GetArraySize(so) != (int)t->ndim) {
            fail(b, f->name, "tensor '%s': saved_offsets has %d entries for %u dimensions",
                 t->name, cJSON_GetArraySize(so), t->ndim);
            rc = -EINVAL;
            goto out;
        }
        uint32_t k = 0;
        for (const cJSON *v = so->child; v; v = v->next, k++) {
            if (ck_st_json_uint(v, &offs[k])) {
                fail(b, f->name, "tensor '%s': saved_offsets holds something other than a "
                     "non-negative integer", t->name);
                rc = -EINVAL;
                goto out;
            }
        }
        /* F4 offsets count 4-bit values like its safetensors shape does. */
        if (t->dtype == CK_DT_FLOAT4_E2M1FN_X2 && t->ndim) {
            if (offs[t->ndim - 1] % 2) {
                fail(b, f->name, "tensor '%s': odd F4 offset in the packed dimension", t->name);
                rc = -EINVAL;
                goto out;
            }
            offs[t->ndim - 1] /= 2;
        }
    }
out:
    free(ents);
    cJSON_Delete(root);
    return rc;
}

static int load_file(st_build *b, st_file *f)
{
    ck_object *obj;
    uint64_t size;
    int rc = open_file(b, f->name, &obj, &size);
    if (rc)
        return rc;
    ck_byte_source src = ck_byte_source_object(obj, 0, size);
    char why[512] = "";
    rc = ck_st_parse(&src, &f->h, why, sizeof why);
    ck_object_close(obj);
    if (rc) {
        fail(b, f->name, "%s", why[0] ? why : strerror(-rc));
        return rc;
    }
    const char *info = ck_st_meta_get(&f->h, DCP_SHARDING_INFO);
    if (info) {
        rc = parse_sharding(b, f, info);
        if (rc)
            return rc;
    }
    rc = ck_add_file(b->ck, f->name, &f->file);
    if (rc)
        fail(b, f->name, "cannot register the file: %s", strerror(-rc));
    return rc;
}

static int cmp_piece(const void *a, const void *b)
{
    const st_piece *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    if (x->file != y->file)
        return x->file < y->file ? -1 : 1;
    return x->tensor < y->tensor ? -1 : x->tensor > y->tensor;
}

/* First piece named `name` in the sorted pieces, or npieces. */
static size_t find_piece(const st_build *b, const char *name)
{
    const st_piece *p = CK_NAME_FIND(b->pieces, b->npieces, name, name);
    return p ? (size_t)(p - b->pieces) : b->npieces;
}

static int read_whole(st_build *b, const char *name, char **out, size_t *len)
{
    ck_object *obj;
    uint64_t size;
    int rc = open_file(b, name, &obj, &size);
    if (rc)
        return rc;
    if (size > CK_ST_MAX_HEADER) {
        fail(b, name, "%" PRIu64 " bytes, more than an index can sensibly be", size);
        ck_object_close(obj);
        return -EINVAL;
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        ck_object_close(obj);
        return -ENOMEM;
    }
    rc = ck_object_read(obj, 0, buf, size);
    ck_object_close(obj);
    if (rc) {
        fail(b, name, "%s", strerror(-rc));
        free(buf);
        return rc;
    }
    *out = buf;
    *len = size;
    return 0;
}

/* Files are in name order (list_dir sorts them). */
static int file_known(const st_build *b, const char *name)
{
    return CK_NAME_FIND(b->files, b->nfiles, name, name) != NULL;
}

/* Whether an index entry names a path that stays in SOURCE: not absolute
 * and without a ".." component (symlinks are judged when shards open). */
static int name_is_inside(const char *p)
{
    if (p[0] == '/')
        return 0;
    for (const char *c = p; *c;) {
        size_t n = strcspn(c, "/");
        if (n == 2 && c[0] == '.' && c[1] == '.')
            return 0;
        c += n;
        if (*c == '/')
            c++;
    }
    return 1;
}

/* The index must describe exactly the tensors the shards hold: a missing
 * shard or a stray file would otherwise mount a partial or mixed model. */
static int check_index(st_build *b)
{
    ck_object *probe;
    int prc = ck_storage_open(b->ck->storage, ST_INDEX_NAME, &probe);
    if (prc == -ENOENT)
        return 0;
    ck_object_close(prc ? NULL : probe);
    char *text;
    size_t len;
    int rc = read_whole(b, ST_INDEX_NAME, &text, &len);
    if (rc)
        return rc;
    if (ck_json_has_nul_escape(text, len)) {
        free(text);
        fail(b, ST_INDEX_NAME, "names a tensor or file with a NUL (\\u0000) in it");
        return -EINVAL;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *wm = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "weight_map")
                                           : NULL;
    if (!cJSON_IsObject(wm)) {
        fail(b, ST_INDEX_NAME, "%s", root ? "no \"weight_map\" object" : "not valid JSON");
        cJSON_Delete(root);
        return -EINVAL;
    }
    size_t n = 0;
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            fail(b, ST_INDEX_NAME, "weight_map value of '%s' is not a file name", e->string);
            rc = -EINVAL;
            goto out;
        }
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!name_is_inside(e->valuestring)) {
            fail(b, ST_INDEX_NAME, "names %s (for '%s'), which is outside %s", e->valuestring,
                 e->string, b->ck->source);
            rc = -EINVAL;
            goto out;
        }
        if (!file_known(b, e->valuestring)) {
            fail(b, ST_INDEX_NAME, "names %s (for '%s'), which is missing", e->valuestring,
                 e->string);
            rc = -ENOENT;
            goto out;
        }
    }
    for (const cJSON *e = wm->child; e; e = e->next) {
        size_t p = find_piece(b, e->string);
        if (p == b->npieces) {
            fail(b, ST_INDEX_NAME, "names tensor '%s' (in %s), which no shard holds",
                 e->string, e->valuestring);
            rc = -EINVAL;
            goto out;
        }
        int found = 0;
        for (; p < b->npieces && strcmp(b->pieces[p].name, e->string) == 0; p++)
            found |= strcmp(b->files[b->pieces[p].file].name, e->valuestring) == 0;
        if (!found) {
            fail(b, ST_INDEX_NAME, "puts tensor '%s' in %s, which does not hold it", e->string,
                 e->valuestring);
            rc = -EINVAL;
            goto out;
        }
    }
    const cJSON **keys = sorted_members(wm, &n);
    if (!keys) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < b->npieces; i++) {
        if (i && strcmp(b->pieces[i - 1].name, b->pieces[i].name) == 0)
            continue;
        if (!find_member(keys, n, b->pieces[i].name)) {
            const st_piece *pc = &b->pieces[i];
            fail(b, ST_INDEX_NAME, "does not list tensor '%s' of %s", pc->name,
                 b->files[pc->file].name);
            rc = -EINVAL;
            break;
        }
    }
    free(keys);
out:
    cJSON_Delete(root);
    return rc;
}

static const uint64_t *piece_offsets(const st_build *b, const st_piece *p)
{
    const st_file *f = &b->files[p->file];
    return f->saved_offsets ? &f->saved_offsets[p->tensor * CK_MAX_DIMS] : NULL;
}

static const ck_st_tensor *piece_tensor(const st_build *b, const st_piece *p)
{
    return &b->files[p->file].h.tensors[p->tensor];
}

/* pieces [first, first+n) all carry one name: one key. */
static int build_key(st_build *b, size_t first, size_t n, ck_key *key)
{
    ck_arena *a = b->ck->arena;
    const st_piece *p0 = &b->pieces[first];
    const ck_st_tensor *t0 = piece_tensor(b, p0);
    const char *f0 = b->files[p0->file].name;
    uint32_t ndim = t0->ndim;

    if (n > UINT32_MAX) {
        fail(b, f0, "tensor '%s' has too many pieces", t0->name);
        return -EINVAL;
    }
    for (size_t i = 1; i < n; i++) {
        const st_piece *p = &b->pieces[first + i];
        const ck_st_tensor *t = piece_tensor(b, p);
        const char *fi = b->files[p->file].name;
        /* Pieces only make sense where DCP said where each one goes. */
        if (!piece_offsets(b, p0) || !piece_offsets(b, p)) {
            fail(b, NULL, "tensor '%s' is in both %s and %s without " DCP_SHARDING_INFO,
                 t0->name, f0, fi);
            return -EINVAL;
        }
        if (t->dtype != t0->dtype || t->ndim != ndim) {
            fail(b, NULL, "tensor '%s': pieces in %s and %s differ in dtype or rank", t0->name,
                 f0, fi);
            return -EINVAL;
        }
    }

    key->fqn = ck_arena_strdup(a, t0->name);
    key->shape = ck_arena_calloc(a, ndim ? ndim : 1, sizeof(uint64_t));
    key->chunks = ck_arena_calloc(a, n, sizeof(ck_chunk));
    if (!key->fqn || !key->shape || !key->chunks)
        return -ENOMEM;
    key->kind = CK_KEY_TENSOR;
    key->dtype = t0->dtype;
    key->ndim = ndim;
    key->nchunks = (uint32_t)n;

    for (size_t i = 0; i < n; i++) {
        const st_piece *p = &b->pieces[first + i];
        const ck_st_tensor *t = piece_tensor(b, p);
        const st_file *f = &b->files[p->file];
        const uint64_t *offs = piece_offsets(b, p);
        ck_chunk *c = &key->chunks[i];
        c->offsets = ck_arena_calloc(a, ndim ? ndim : 1, sizeof(uint64_t));
        c->sizes = ck_arena_calloc(a, ndim ? ndim : 1, sizeof(uint64_t));
        if (!c->offsets || !c->sizes)
            return -ENOMEM;
        for (uint32_t d = 0; d < ndim; d++) {
            uint64_t end;
            c->offsets[d] = offs ? offs[d] : 0;
            c->sizes[d] = t->shape[d];
            if (__builtin_add_overflow(c->offsets[d], c->sizes[d], &end)) {
                fail(b, f->name, "tensor '%s': saved_offsets + shape overflow", t->name);
                return -EINVAL;
            }
            if (end > key->shape[d])
                key->shape[d] = end;
        }
        c->file = f->file;
        if (__builtin_add_overflow(f->h.data_start, t->begin, &c->offset)) {
            fail(b, f->name, "tensor '%s': file offset overflows", t->name);
            return -EINVAL;
        }
        c->length = t->end - t->begin;
        c->transforms = 0;
        c->format = CK_ITEM_RAW;
    }

    uint64_t numel = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        if (__builtin_mul_overflow(numel, key->shape[d], &numel)) {
            fail(b, f0, "tensor '%s': full shape overflows", t0->name);
            return -EINVAL;
        }
    }
    key->numel = numel;
    if (__builtin_mul_overflow(numel, (uint64_t)ck_dtype_get(key->dtype)->size, &key->nbytes)) {
        fail(b, f0, "tensor '%s': full size overflows", t0->name);
        return -EINVAL;
    }
    return 0;
}

/* Every tensor of every file, sorted by name so a key's pieces sit together. */
static int collect_pieces(st_build *b)
{
    size_t total = 0;
    for (size_t i = 0; i < b->nfiles; i++)
        total += b->files[i].h.ntensors;
    b->pieces = calloc(total ? total : 1, sizeof *b->pieces);
    if (!b->pieces)
        return -ENOMEM;
    for (size_t i = 0; i < b->nfiles; i++) {
        for (size_t j = 0; j < b->files[i].h.ntensors; j++) {
            st_piece *p = &b->pieces[b->npieces++];
            p->name = b->files[i].h.tensors[j].name;
            p->file = i;
            p->tensor = j;
        }
    }
    qsort(b->pieces, b->npieces, sizeof *b->pieces, cmp_piece);
    return 0;
}

int ck_build_safetensors(ck_checkpoint *ck, const char *file, char *err, size_t errlen)
{
    st_build b = { .ck = ck, .single = file != NULL, .err = err, .errlen = errlen };
    char **names = NULL;
    size_t nnames = 0;
    int rc = 0;

    if (file) {
        names = malloc(sizeof *names);
        if (!names || !(names[0] = strdup(file))) {
            free(names);
            fail(&b, NULL, "out of memory");
            return -ENOMEM;
        }
        nnames = 1;
    } else {
        rc = list_dir(&b, &names, &nnames);
        if (rc)
            return rc;
    }
    b.files = calloc(nnames, sizeof *b.files);
    if (!b.files) {
        free_names(names, nnames);
        fail(&b, NULL, "out of memory");
        return -ENOMEM;
    }
    /* st_file takes the names over. */
    for (size_t i = 0; i < nnames; i++)
        b.files[i].name = names[i];
    free(names);
    b.nfiles = nnames;

    int sharded = 0;
    for (size_t i = 0; !rc && i < b.nfiles; i++) {
        rc = load_file(&b, &b.files[i]);
        sharded |= b.files[i].saved_offsets != NULL;
    }
    if (!rc)
        rc = collect_pieces(&b);
    if (!rc && !file)
        rc = check_index(&b);
    if (!rc) {
        size_t nkeys = 0;
        for (size_t i = 0; i < b.npieces; i++)
            nkeys += !i || strcmp(b.pieces[i - 1].name, b.pieces[i].name) != 0;
        ck->keys = ck_arena_calloc(ck->arena, nkeys ? nkeys : 1, sizeof(ck_key));
        if (!ck->keys)
            rc = -ENOMEM;
        ck->nkeys = 0;
        for (size_t i = 0; !rc && i < b.npieces;) {
            size_t j = i + 1;
            while (j < b.npieces && strcmp(b.pieces[i].name, b.pieces[j].name) == 0)
                j++;
            rc = build_key(&b, i, j - i, &ck->keys[ck->nkeys]);
            if (!rc)
                ck->nkeys++;
            i = j;
        }
        ck->kind = sharded ? CK_SRC_DCP_HF : CK_SRC_SAFETENSORS;
    }
    if (rc && !b.reported)
        fail(&b, NULL, "%s", strerror(-rc));

    for (size_t i = 0; i < b.nfiles; i++) {
        free(b.files[i].name);
        ck_st_free(&b.files[i].h);
        free(b.files[i].saved_offsets);
    }
    free(b.files);
    free(b.pieces);
    return rc;
}
