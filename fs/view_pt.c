/* The torch.save view of a directory (see view_pt.h).
 *
 * Nesting.  dcp_to_torch_save loads with _EmptyStateDictLoadPlanner, which
 * puts each key at its planner_data path with _traverse.set_element: a str
 * path element is a dict key, an int element a list index (lists padded
 * with None).  The same rules are applied here, in FQN order
 * (view_pt_nest.h).  A key with no planner_data (safetensors sources, DCP's
 * HF writer) is a flat FQN key of the top dict.  For DIR.pt the components
 * of DIR are taken off the front of each path first; where DIR ends inside
 * a path element, the rest of that element is the key ("model/layers/0.pt"
 * of ("model", "layers.0.attn.w") holds "attn.w").
 * Keys whose paths collide (a value where another key needs a container)
 * are left out, as are tensors torch.save cannot hold here (quantized
 * dtypes, keys ckptfs cannot read).
 *
 * Non-tensor values.  A DCP bytes entry is a torch.save archive of the
 * object; its data.pkl is parsed by the restricted reader and written again
 * inside the outer pickle, so the archive holds the object itself.  Only
 * values weights_only=True accepts are inlined: None, bool, int, float,
 * str, bytes (protocol 2's _codecs.encode form), tuple, list, dict,
 * collections.OrderedDict, and tensors (_rebuild_tensor_v2/_v3 and
 * _rebuild_parameter over torch's storage classes), whose storages become
 * records of this archive served from the payload's own records, exactly
 * as stored (strides, offsets and dtype kept).  A payload holding anything
 * else (any other class) is left out of the view. */
#include "view_pt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "chunk_reader.h"
#include "pickle.h"
#include "pickle_write.h"
#include "torch_save_writer.h"
#include "view_head.h"
#include "view_pt_nest.h"
#include "converted_read.h"
#include "hash.h"
#include "dtype_convert.h"
#include "view_pt_object.h"
#include "view_region.h"
#include "zip_reader.h"

#define ARCHIVE "archive"
#define PT_PIECE (1u << 20)

/* ---- the tensor bytes: the one place an output dtype plugs in ---- */

/* The dtype a tensor has in the archive: the stored one, or for floating
 * tensors the mount's -o dtype= (view_dtype; CK_DT_INVALID when none). */
static ck_dtype pt_out_dtype(const ck_key *k, ck_dtype view_dtype)
{
    return ck_dtype_view(k->dtype, view_dtype);
}

/* Bytes [off, off+len) of tensor t's record: every byte of a tensor the
 * archive serves comes through here (reads, CRCs), so this and pt_out_dtype
 * are the only places an output dtype touches.  With t->out_dtype other
 * than the key's dtype, the bytes are those of the converted image
 * (converted_read.h; a range may start or end inside an element).
 * crc_from_items refuses converted records. */
static int pt_tensor_read(ck_checkpoint *ck, const fs_pt_tensor *t, uint64_t off,
                          void *dst, size_t len)
{
    const ck_key *k;
    size_t n;
    int rc = fs_key_ref_get(&t->ref, &k);
    /* a storage of a non-tensor value: bytes of that entry's payload, as is
     * (no output dtype: it is not a key's tensor) */
    if (!rc && t->in_payload)
        rc = ck_key_read(ck, k, t->payload_off + off, dst, len, &n);
    else if (!rc)
        rc = ck_key_read_as(ck, k, t->out_dtype, off, dst, len, &n);
    if (!rc && n != len)
        rc = -EIO; /* the key is shorter than its dtype and shape say */
    return rc;
}

/* ---- collecting the keys under DIR ---- */

typedef struct {
    const ck_key **v;
    size_t n, cap;
} key_vec;

static int cmp_key_fqn(const void *a, const void *b)
{
    return strcmp((*(const ck_key *const *)a)->fqn, (*(const ck_key *const *)b)->fqn);
}

static int collect_key(void *ctx, const fs_node *file)
{
    key_vec *out = ctx;
    if (out->n == out->cap) {
        size_t nc = out->cap ? out->cap * 2 : 64;
        const ck_key **v = realloc(out->v, nc * sizeof *v);
        if (!v)
            return -ENOMEM;
        out->v = v;
        out->cap = nc;
    }
    out->v[out->n++] = file->key;
    return 0;
}

/* The keys under dir, in FQN order. */
static int collect(const fs_node *dir, key_vec *out)
{
    int rc = fs_tree_walk_files(dir, collect_key, out);
    qsort(out->v, out->n, sizeof *out->v, cmp_key_fqn);
    return rc;
}

static bool tensor_fits(const ck_key *k, ck_dtype view_dtype)
{
    ck_dtype dt = pt_out_dtype(k, view_dtype);
    return !k->error && ck_dtype_get(dt) && dt != CK_DT_QINT8 && dt != CK_DT_QUINT8 &&
           dt != CK_DT_QINT32;
}

/* ---- writing data.pkl ---- */

typedef struct {
    ck_checkpoint *ck;
    const key_vec *keys;
    fs_pt_object *objs;
    fs_pt_tensor *tensors; /* filled in pickling order: storage "N" is tensors[N] */
    size_t ntensors;
    int err;
    ck_dtype view_dtype;
} emit_ctx;

static void emit_elem(pkw *w, const fs_pt_elem *e)
{
    if (e->is_int) {
        pkw_int(w, e->i);
        return;
    }
    char *s = strndup(e->s, e->len);
    if (s)
        pkw_str(w, s);
    else
        pkw_op(w, 0); /* out of memory: make the writer fail */
    free(s);
}

static void emit_node(emit_ctx *c, pkw *w, const fs_pt_node *n);

static void emit_slots(emit_ctx *c, pkw *w, const fs_pt_node *n)
{
    bool dict = n->kind == FS_PT_DICT;
    for (size_t b = 0; b < n->n; b += FS_PT_BATCH) {
        size_t e = n->n - b < FS_PT_BATCH ? n->n : b + FS_PT_BATCH;
        if (e - b > 1)
            pkw_op(w, PKW_MARK);
        for (size_t i = b; i < e; i++) {
            if (dict)
                emit_elem(w, &n->slots[i].key);
            if (n->slots[i].val)
                emit_node(c, w, n->slots[i].val);
            else
                pkw_none(w);
        }
        pkw_op(w, e - b > 1 ? (dict ? PKW_SETITEMS : PKW_APPENDS)
                            : (dict ? PKW_SETITEM : PKW_APPEND));
    }
}

static void emit_node(emit_ctx *c, pkw *w, const fs_pt_node *n)
{
    switch (n->kind) {
    case FS_PT_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_slots(c, w, n);
        break;
    case FS_PT_LIST:
        pkw_op(w, PKW_EMPTY_LIST);
        emit_slots(c, w, n);
        break;
    case FS_PT_OBJECT: {
        int rc = fs_pt_object_emit(w, &c->objs[n->leaf], c->tensors, &c->ntensors);
        if (rc && !c->err)
            c->err = rc;
        break;
    }
    case FS_PT_TENSOR: {
        const ck_key *k = c->keys->v[n->leaf];
        fs_pt_tensor *t = &c->tensors[c->ntensors];
        char storage[24], err[256];
        snprintf(storage, sizeof storage, "%zu", c->ntensors);
        t->out_dtype = pt_out_dtype(k, c->view_dtype);
        int rc = ck_torch_pickle_tensor(w, t->out_dtype, k->ndim, k->shape, storage, &t->nbytes,
                                        err, sizeof err);
        if (!rc)
            rc = fs_key_ref_init(&t->ref, k);
        if (rc) {
            if (!c->err)
                c->err = rc;
            pkw_op(w, 0);
            return;
        }
        c->ntensors++;
        break;
    }
    }
}

/* ---- the archive ---- */

static const char FORMAT_VERSION[] = "1";
static const char STORAGE_ALIGNMENT[] = "64";
static const char BYTEORDER[] = "little";
static const char VERSION[] = "3\n";

/* data.pkl, .format_version, .storage_alignment, byteorder come first */
#define FIRST_TENSOR_RECORD 4

typedef struct {
    const void *data; /* small records: their bytes; NULL for tensors */
    size_t len;
    size_t tensor;
} rec_src;

static int seg_push(fs_pt_view *v, size_t *cap, fs_pt_seg s)
{
    if (s.begin == s.end)
        return 0;
    if (v->nsegs == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        fs_pt_seg *p = realloc(v->segs, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->segs = p;
        *cap = nc;
    }
    v->segs[v->nsegs++] = s;
    return 0;
}

/* Lays out the records, renders headers and small records into v->head
 * and lists the segments. */
static int build_archive(fs_pt_view *v, const uint8_t *pkl, size_t pkl_len)
{
    size_t nrec = FIRST_TENSOR_RECORD + v->ntensors + 2;
    char id[41];
    rec_src *src = calloc(nrec, sizeof *src);
    const char **short_names = calloc(nrec, sizeof *short_names);
    char (*data_names)[32] = calloc(v->ntensors ? v->ntensors : 1, sizeof *data_names);
    v->zip = calloc(nrec, sizeof *v->zip);
    v->crc = calloc(nrec, sizeof *v->crc);
    v->crc_known = calloc(nrec, sizeof *v->crc_known);
    int rc = src && short_names && data_names && v->zip && v->crc && v->crc_known ? 0 : -ENOMEM;
    size_t r = 0;
    if (!rc) {
        /* torch 2.x's order: data.pkl and the small records torch._save
         * writes, the storages, then version and the id at the end */
        short_names[r] = "data.pkl", src[r++] = (rec_src){ pkl, pkl_len, 0 };
        short_names[r] = ".format_version", src[r++] = (rec_src){ FORMAT_VERSION, 1, 0 };
        short_names[r] = ".storage_alignment", src[r++] = (rec_src){ STORAGE_ALIGNMENT, 2, 0 };
        short_names[r] = "byteorder", src[r++] = (rec_src){ BYTEORDER, 6, 0 };
        for (size_t t = 0; t < v->ntensors; t++) {
            snprintf(data_names[t], sizeof data_names[t], "data/%zu", t);
            short_names[r] = data_names[t];
            src[r++] = (rec_src){ NULL, 0, t };
        }
        short_names[r] = "version", src[r++] = (rec_src){ VERSION, 2, 0 };
        /* torch derives the id from CRCs it has at write time; here it is
         * from what the layout knows (names, sizes), which keeps it stable */
        uint64_t h1 = CK_FNV1A_OFFSET, h2 = 0x9e3779b97f4a7c15ull;
        for (size_t i = 0; i + 1 < nrec && i < r; i++) {
            h1 = ck_fnv1a_str_update(h1, short_names[i]);
            uint64_t sz = src[i].data ? src[i].len : v->tensors[src[i].tensor].nbytes;
            h2 = (h2 ^ sz) * CK_FNV1A_PRIME ^ h1;
        }
        snprintf(id, sizeof id, "%020" PRIu64 "%020" PRIu64, (uint64_t)(h1 % 10000000000000000000ull),
                 (uint64_t)(h2 % 10000000000000000000ull));
        short_names[r] = ".data/serialization_id", src[r++] = (rec_src){ id, 40, 0 };
    }
    /* full names in one buffer */
    size_t names_len = 0;
    for (size_t i = 0; !rc && i < nrec; i++)
        names_len += strlen(ARCHIVE) + 1 + strlen(short_names[i]) + 1;
    if (!rc && !(v->names = malloc(names_len)))
        rc = -ENOMEM;
    char *p = v->names;
    for (size_t i = 0; !rc && i < nrec; i++) {
        int n = sprintf(p, "%s/%s", ARCHIVE, short_names[i]);
        v->zip[i].name = p;
        v->zip[i].size = src[i].data ? src[i].len : v->tensors[src[i].tensor].nbytes;
        if (!src[i].data)
            v->tensors[src[i].tensor].record = i;
        p += n + 1;
    }
    v->nzip = nrec;
    if (!rc)
        rc = ck_zip_layout(v->zip, nrec, &v->sum);
    /* head: every local header plus the small records' bytes */
    size_t head_cap = 0;
    for (size_t i = 0; !rc && i < nrec; i++)
        head_cap += CK_ZIP_LOCAL_MAX(strlen(v->zip[i].name)) + (src[i].data ? src[i].len : 0);
    if (!rc && !(v->head = malloc(head_cap ? head_cap : 1)))
        rc = -ENOMEM;
    size_t segcap = 0;
    for (size_t i = 0; !rc && i < nrec; i++) {
        const ck_zip_entry *e = &v->zip[i];
        size_t hl = ck_zip_local_header(e, v->head + v->head_len);
        rc = seg_push(v, &segcap, (fs_pt_seg){ e->local_off, e->local_off + hl, PT_SEG_MEM,
                                               v->head_len });
        v->head_len += hl;
        if (!rc && src[i].data) {
            memcpy(v->head + v->head_len, src[i].data, src[i].len);
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off, e->data_off + src[i].len,
                                                   PT_SEG_MEM, v->head_len });
            v->head_len += src[i].len;
            v->crc[i] = (uint32_t)crc32_z(0, src[i].data, src[i].len);
            v->crc_known[i] = true;
        } else if (!rc) {
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off, e->data_off + e->size,
                                                   PT_SEG_TENSOR, src[i].tensor });
            const fs_pt_tensor *t = &v->tensors[src[i].tensor];
            if (e->size == 0 || t->crc_preset) { /* crc32 of nothing is 0 */
                v->crc[i] = e->size ? t->crc_value : 0;
                v->crc_known[i] = true;
            }
        }
        if (!rc)
            rc = seg_push(v, &segcap, (fs_pt_seg){ e->data_off + e->size, e->end_off,
                                                   PT_SEG_DESCRIPTOR, i });
    }
    if (!rc)
        rc = seg_push(v, &segcap, (fs_pt_seg){ v->sum.cd_off, v->sum.total, PT_SEG_CENTRAL, 0 });
    v->size = v->sum.total;
    free(src);
    free(short_names);
    free(data_names);
    return rc;
}

/* CRCs already in the checkpoint: a tensor stored as row bands (every
 * chunk spans every dimension but the first), each chunk a plain
 * torch.save item whose data/0 is exactly that chunk's row-major image,
 * has the CRC of the items' data/0 combined in row order.  Reads only zip
 * directories and data.pkl.  false when that does not apply. */
static bool crc_from_items(ck_checkpoint *ck, const ck_key *k, ck_dtype out_dtype, uint32_t *out)
{
    const ck_dtype_info *info = ck_dtype_get(k->dtype);
    if (!info || k->error || k->nchunks == 0 || k->nchunks > 4096 || out_dtype != k->dtype)
        return false;
    uint32_t *order = malloc(k->nchunks * sizeof *order);
    if (!order)
        return false;
    uint32_t n = 0;
    for (uint32_t i = 0; i < k->nchunks; i++) {
        const ck_chunk *c = &k->chunks[i];
        if (c->format != CK_ITEM_TORCH_SAVE || c->transforms)
            goto fail;
        for (uint32_t d = 1; d < k->ndim; d++)
            if (c->offsets[d] != 0 || c->sizes[d] != k->shape[d])
                goto fail;
        /* insertion sort by row offset: chunk counts are small */
        uint32_t j = n++;
        for (; j > 0 && k->ndim && k->chunks[order[j - 1]].offsets[0] > c->offsets[0]; j--)
            order[j] = order[j - 1];
        order[j] = i;
    }
    uint32_t crc = 0;
    uint64_t row = 0;
    for (uint32_t i = 0; i < n; i++) {
        const ck_chunk *c = &k->chunks[order[i]];
        uint64_t numel = 1, nbytes;
        for (uint32_t d = 0; d < k->ndim; d++)
            if (__builtin_mul_overflow(numel, c->sizes[d], &numel))
                goto fail;
        if (__builtin_mul_overflow(numel, (uint64_t)info->size, &nbytes))
            goto fail;
        if (k->ndim && c->offsets[0] != row)
            goto fail; /* gaps were refused at open; be sure anyway */
        row += k->ndim ? c->sizes[0] : 0;
        if (nbytes == 0)
            continue;
        /* the planner's own resolution (kept for the reads to come) says
         * whether the image is stored as is; data/0 must be exactly it */
        int fd;
        char err[256];
        ck_zip_member m;
        ck_chunk *cc = &k->chunks[order[i]];
        if (ck_chunk_resolve(ck, k, cc) != 0 || !cc->layout.direct ||
            cc->layout.nbytes != nbytes || ck_file_fd(ck, c->file, &fd) != 0)
            goto fail;
        ck_byte_source src = ck_byte_source_fd(fd, c->offset, c->length);
        if (ck_zip_find(&src, "/data/0", &m, err, sizeof err) != 0 || m.size != nbytes ||
            c->offset + m.data_offset != cc->layout.file_offset)
            goto fail;
        crc = i == 0 ? m.crc32 : (uint32_t)crc32_combine(crc, m.crc32, (z_off_t)nbytes);
    }
    free(order);
    *out = crc;
    return true;
fail:
    free(order);
    return false;
}

int fs_pt_view_build(ck_checkpoint *ck, const fs_node *dir, ck_dtype view_dtype, fs_pt_view *out)
{
    memset(out, 0, sizeof *out);
    if (!dir->is_dir)
        return -ENOTDIR;
    int rc = pthread_mutex_init(&out->lock, NULL);
    if (rc)
        return -rc;
    key_vec keys = { 0 };
    fs_pt_nest t = { 0 };
    fs_pt_object *objs = NULL;
    size_t ndocs = 0, nstorages = 0;
    fs_pt_elem *path = malloc(FS_PT_MAX_PATH * sizeof *path);
    fs_pt_node *root = fs_pt_node_new(&t, FS_PT_DICT);
    rc = path && root ? 0 : -ENOMEM;
    if (!rc)
        rc = collect(dir, &keys);
    if (!rc && keys.n && !(objs = calloc(keys.n, sizeof *objs)))
        rc = -ENOMEM;
    size_t ntensors = 0, depth = fs_node_depth(dir);
    for (size_t i = 0; !rc && i < keys.n; i++) {
        const ck_key *k = keys.v[i];
        fs_pt_node *leaf = NULL;
        if (k->kind == CK_KEY_TENSOR) {
            if (!tensor_fits(k, view_dtype))
                continue;
            leaf = fs_pt_node_new(&t, FS_PT_TENSOR);
        } else {
            rc = fs_pt_object_load(ck, k, &objs[ndocs]);
            if (rc || !objs[ndocs].doc)
                continue;
            leaf = fs_pt_node_new(&t, FS_PT_OBJECT);
        }
        if (!leaf) {
            rc = -ENOMEM;
            break;
        }
        leaf->leaf = k->kind == CK_KEY_TENSOR ? i : ndocs;
        size_t n = fs_pt_rel_path(k, depth, path);
        /* a pickle str must be UTF-8 (a safetensors name need not be): such a
         * key is left out like a colliding one */
        int set = 0;
        for (size_t j = 0; j < n; j++)
            if (!path[j].is_int && !pk_utf8_valid(path[j].s, path[j].len))
                set = 1;
        if (!set)
            set = fs_pt_nest_set(&t, root, path, n, leaf);
        if (set < 0) {
            rc = set;
        } else if (set == 0) {
            ntensors += k->kind == CK_KEY_TENSOR;
            if (k->kind != CK_KEY_TENSOR)
                nstorages += objs[ndocs++].nst;
        } else if (k->kind != CK_KEY_TENSOR) {
            fs_pt_object_clear(&objs[ndocs]);
        }
    }
    uint8_t *pkl = NULL;
    size_t pkl_len = 0;
    /* key tensors, then the storages of tensors inside values */
    if (!rc && ntensors + nstorages &&
        !(out->tensors = calloc(ntensors + nstorages, sizeof *out->tensors)))
        rc = -ENOMEM;
    if (!rc) {
        emit_ctx c = { ck, &keys, objs, out->tensors, 0, 0, view_dtype };
        pkw *w = pkw_new(2);
        if (!w) {
            rc = -ENOMEM;
        } else {
            emit_node(&c, w, root);
            rc = pkw_finish(w, &pkl, &pkl_len);
            pkw_free(w);
        }
        out->ntensors = c.ntensors;
        if (c.err)
            rc = c.err;
    }
    if (!rc)
        rc = build_archive(out, pkl, pkl_len);
    free(pkl);
    for (size_t i = 0; i < ndocs; i++)
        fs_pt_object_clear(&objs[i]);
    free(objs);
    free(path);
    free(keys.v);
    fs_pt_nest_free(&t);
    if (rc)
        fs_pt_view_clear(out);
    return rc;
}

void fs_pt_view_clear(fs_pt_view *v)
{
    for (size_t i = 0; i < v->ntensors; i++)
        fs_key_ref_clear(&v->tensors[i].ref);
    free(v->tensors);
    free(v->head);
    free(v->segs);
    free(v->zip);
    free(v->names);
    free(v->crc);
    free(v->crc_known);
    free(v->central);
    pthread_mutex_destroy(&v->lock);
    memset(v, 0, sizeof *v);
}

/* ---- reading ---- */

/* Record r's CRC: known (small records, reads in order), else from the
 * checkpoint's items where they hold it, else by reading the tensor once. */
static int record_crc(ck_checkpoint *ck, fs_pt_view *v, size_t r, uint32_t *out)
{
    pthread_mutex_lock(&v->lock);
    bool known = v->crc_known[r];
    *out = v->crc[r];
    pthread_mutex_unlock(&v->lock);
    if (known)
        return 0;
    /* tensors are records FIRST_TENSOR_RECORD.. in order */
    size_t t = r - FIRST_TENSOR_RECORD;
    if (r < FIRST_TENSOR_RECORD || t >= v->ntensors || v->tensors[t].record != r)
        return -EIO; /* cannot happen: small records' CRCs are known */
    const fs_pt_tensor *ten = &v->tensors[t];
    const ck_key *k;
    uint32_t stored;
    if (!ten->in_payload && fs_key_ref_get(&ten->ref, &k) == 0 &&
        crc_from_items(ck, k, ten->out_dtype, &stored)) {
        pthread_mutex_lock(&v->lock);
        v->crc[r] = stored;
        v->crc_known[r] = true;
        pthread_mutex_unlock(&v->lock);
        *out = stored;
        return 0;
    }
    uint8_t *buf = malloc(ten->nbytes < PT_PIECE ? (size_t)ten->nbytes : PT_PIECE);
    if (!buf)
        return -ENOMEM;
    uLong crc = crc32(0L, Z_NULL, 0);
    int rc = 0;
    for (uint64_t off = 0; off < ten->nbytes;) {
        size_t n = ten->nbytes - off < PT_PIECE ? (size_t)(ten->nbytes - off) : PT_PIECE;
        if ((rc = pt_tensor_read(ck, ten, off, buf, n)) != 0)
            break;
        crc = crc32_z(crc, buf, n);
        off += n;
    }
    free(buf);
    /* A record that cannot be read (damaged chunks: EIO, sticky) gets CRC 0,
     * so the archive still opens and every other member reads; reading that
     * one fails with EIO anyway.  Other errors (ENOMEM) fail this read only. */
    if (rc == -EIO)
        crc = 0;
    else if (rc)
        return rc;
    pthread_mutex_lock(&v->lock);
    v->crc[r] = (uint32_t)crc;
    v->crc_known[r] = true;
    pthread_mutex_unlock(&v->lock);
    *out = (uint32_t)crc;
    return 0;
}

static int central_directory(ck_checkpoint *ck, fs_pt_view *v, const uint8_t **out)
{
    pthread_mutex_lock(&v->lock);
    *out = v->central;
    pthread_mutex_unlock(&v->lock);
    if (*out)
        return 0;
    uint32_t *crc = malloc(v->nzip * sizeof *crc);
    uint8_t *cd = malloc(v->sum.cd_len);
    int rc = crc && cd ? 0 : -ENOMEM;
    for (size_t r = 0; !rc && r < v->nzip; r++)
        rc = record_crc(ck, v, r, &crc[r]);
    if (!rc)
        rc = ck_zip_central_directory(v->zip, crc, v->nzip, &v->sum, cd, v->sum.cd_len);
    free(crc);
    if (rc) {
        free(cd);
        return rc;
    }
    pthread_mutex_lock(&v->lock);
    if (v->central)
        free(cd); /* another reader rendered it meanwhile */
    else
        v->central = cd;
    *out = v->central;
    pthread_mutex_unlock(&v->lock);
    return 0;
}

/* A read of tensor t's bytes [off, off+n) that continues the ones before it
 * extends the running CRC; the last such read makes it known. */
static void crc_follow(fs_pt_view *v, fs_pt_tensor *t, uint64_t off, const void *buf, size_t n)
{
    pthread_mutex_lock(&v->lock);
    bool follows = !v->crc_known[t->record] && t->crc_next == off;
    pthread_mutex_unlock(&v->lock);
    if (!follows)
        return;
    uint32_t part = (uint32_t)crc32_z(0, buf, n);
    pthread_mutex_lock(&v->lock);
    if (!v->crc_known[t->record] && t->crc_next == off) {
        t->crc_running = off == 0 ? part
                                  : (uint32_t)crc32_combine(t->crc_running, part, (z_off_t)n);
        t->crc_next = off + n;
        if (t->crc_next == t->nbytes) {
            v->crc[t->record] = t->crc_running;
            v->crc_known[t->record] = true;
        }
    }
    pthread_mutex_unlock(&v->lock);
}

int fs_pt_view_read(ck_checkpoint *ck, fs_pt_view *v, uint64_t off, void *dst,
                    size_t len, size_t *got)
{
    *got = 0;
    if (off >= v->size)
        return 0;
    if (len > v->size - off)
        len = (size_t)(v->size - off);
    uint8_t *out = dst;
    size_t done = 0;
    size_t first = fs_region_first_after(v->segs, v->nsegs, sizeof *v->segs,
                                         offsetof(fs_pt_seg, end), off);
    for (size_t i = first; done < len && i < v->nsegs; i++) {
        const fs_pt_seg *s = &v->segs[i];
        uint64_t pos = off + done;
        if (s->begin > pos)
            return -EIO; /* cannot happen: segments tile the file */
        uint64_t in = pos - s->begin;
        size_t want = s->end - pos < len - done ? (size_t)(s->end - pos) : len - done;
        int rc = 0;
        switch (s->kind) {
        case PT_SEG_MEM:
            memcpy(out + done, v->head + s->arg + in, want);
            break;
        case PT_SEG_TENSOR:
            rc = pt_tensor_read(ck, &v->tensors[s->arg], in, out + done, want);
            if (!rc)
                crc_follow(v, &v->tensors[s->arg], in, out + done, want);
            break;
        case PT_SEG_DESCRIPTOR: {
            uint32_t crc;
            uint8_t dd[CK_ZIP_DESCRIPTOR_MAX];
            rc = record_crc(ck, v, s->arg, &crc);
            if (!rc) {
                ck_zip_descriptor(&v->zip[s->arg], crc, dd);
                memcpy(out + done, dd + in, want);
            }
            break;
        }
        case PT_SEG_CENTRAL: {
            const uint8_t *cd;
            rc = central_directory(ck, v, &cd);
            if (!rc)
                memcpy(out + done, cd + in, want);
            break;
        }
        }
        if (rc)
            return rc;
        done += want;
    }
    if (done != len)
        return -EIO;
    *got = done;
    return 0;
}
