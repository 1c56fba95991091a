/* The save planner: which chunks a write touches (row, column and grid
 * sharding, partial and full writes), and gathering a chunk's image from
 * the tensor image, checked element by element against index arithmetic.
 * Then plans carried out by ck_commit on copies of the fixtures: partial
 * patches rewrite only their chunks, zstd stays zstd, keys are added,
 * dropped and renamed, and a commit failing at any step leaves the old
 * checkpoint byte for byte. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "test_util.h"
#include "chunk_reader.h"
#include "ckpt_build.h"
#include "commit.h"
#include "save_plan.h"

#define FIX "tests/fixtures/torch-2.11/"

#define MAXC 16

typedef struct {
    ck_key key;
    ck_chunk chunks[MAXC];
    uint64_t offs[MAXC][4], sizes[MAXC][4];
    uint64_t shape[4];
} fake_key;

/* A tensor of shape rows x cols (element size es) tiled by a grid of
 * row_splits x col_splits chunks given by their boundaries. */
static void make_grid(fake_key *f, ck_dtype dt, uint64_t rows, uint64_t cols, const uint64_t *rb,
                      size_t nr, const uint64_t *cb, size_t nc)
{
    memset(f, 0, sizeof *f);
    f->shape[0] = rows;
    f->shape[1] = cols;
    f->key.fqn = "t";
    f->key.kind = CK_KEY_TENSOR;
    f->key.dtype = dt;
    f->key.ndim = 2;
    f->key.shape = f->shape;
    ck_key_compute_size(&f->key);
    uint32_t n = 0;
    for (size_t i = 0; i + 1 < nr; i++)
        for (size_t j = 0; j + 1 < nc; j++, n++) {
            f->offs[n][0] = rb[i];
            f->offs[n][1] = cb[j];
            f->sizes[n][0] = rb[i + 1] - rb[i];
            f->sizes[n][1] = cb[j + 1] - cb[j];
            f->chunks[n].offsets = f->offs[n];
            f->chunks[n].sizes = f->sizes[n];
        }
    f->key.nchunks = n;
    f->key.chunks = f->chunks;
}

typedef struct {
    const uint8_t *img;
    uint64_t len;
    int calls;
} image_ctx;

static int read_image(void *ctx, uint64_t off, void *buf, size_t len)
{
    image_ctx *c = ctx;
    if (off > c->len || len > c->len - off)
        return -EIO;
    memcpy(buf, c->img + off, len);
    c->calls++;
    return 0;
}

/* Every chunk image gathered whole and in odd-sized pieces equals the
 * element-by-element reference. */
static void check_gather(const fake_key *f, const char *what)
{
    const ck_key *k = &f->key;
    uint64_t es = ck_dtype_get(k->dtype)->size;
    uint8_t *img = malloc(k->nbytes + 1);
    for (uint64_t i = 0; i < k->nbytes; i++)
        img[i] = (uint8_t)(i * 7 + 3);
    int ok = 1;
    for (uint32_t c = 0; c < k->nchunks; c++) {
        const ck_chunk *ch = &k->chunks[c];
        uint64_t len;
        CHECK_EQ_INT(ck_chunk_image_len(k, ch, &len), 0);
        uint8_t *want = malloc(len + 1), *got = malloc(len + 1);
        uint64_t p = 0;
        for (uint64_t r = 0; r < ch->sizes[0]; r++)
            for (uint64_t q = 0; q < ch->sizes[1]; q++) {
                uint64_t t = ((ch->offsets[0] + r) * k->shape[1] + ch->offsets[1] + q) * es;
                memcpy(want + p, img + t, es);
                p += es;
            }
        image_ctx ic = { img, k->nbytes, 0 };
        if (ck_chunk_image_read(k, ch, 0, got, len, read_image, &ic) || memcmp(got, want, len))
            ok = 0;
        /* odd pieces, including ones that start mid-element */
        memset(got, 0, len);
        for (uint64_t off = 0; off < len;) {
            uint64_t piece = 3 + (off % 5);
            if (piece > len - off)
                piece = len - off;
            if (ck_chunk_image_read(k, ch, off, got + off, piece, read_image, &ic))
                ok = 0;
            off += piece;
        }
        if (memcmp(got, want, len))
            ok = 0;
        free(want);
        free(got);
    }
    if (!ok)
        printf("# gather failed for %s\n", what);
    CHECK(ok);
    free(img);
}

static int count(const uint8_t *v, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += v[i] != 0;
    return c;
}

/* ---- commits on fixture copies ---- */

/* A private copy of fixture name under tmp/tag. */
static char *copy_fixture(const char *tmp, const char *tag, const char *name)
{
    static char dst[600];
    char cmd[1400];
    snprintf(dst, sizeof dst, "%s/%s", tmp, tag);
    snprintf(cmd, sizeof cmd, "cp -r '" FIX "%s' '%s' && chmod -R u+w '%s'", name, dst, dst);
    return system(cmd) == 0 ? dst : NULL;
}

static uint8_t *read_key(ck_checkpoint *ck, const ck_key *k, uint64_t *len)
{
    ck_key_size(ck, k, len);
    uint8_t *b = malloc(*len + 1);
    size_t got = 0;
    if (ck_key_read(ck, k, 0, b, *len, &got) || got != *len) {
        free(b);
        return NULL;
    }
    return b;
}

/* The new image of a key: the old bytes with one patch over them. */
typedef struct {
    const uint8_t *old;
    uint64_t old_len;
    const uint8_t *patch;
    uint64_t at, len;
} patched;

static int read_patched(void *ctx, uint64_t off, void *buf, size_t len)
{
    patched *p = ctx;
    uint8_t *o = buf;
    for (size_t i = 0; i < len; i++) {
        uint64_t b = off + i;
        if (b >= p->at && b < p->at + p->len)
            o[i] = p->patch[b - p->at];
        else if (b < p->old_len)
            o[i] = p->old[b];
        else
            o[i] = 0;
    }
    return 0;
}

static ck_save_key *unchanged_keys(ck_checkpoint *ck, size_t extra)
{
    ck_save_key *ks = calloc(ck->nkeys + extra + 1, sizeof *ks);
    for (size_t i = 0; i < ck->nkeys; i++)
        ks[i] = (ck_save_key){ .fqn = ck->keys[i].fqn, .old = &ck->keys[i] };
    return ks;
}

/* Where Python is missing the check passes: the C side still judges. */
static int python_check(const char *dir)
{
    return have_read_metadata_py() ? read_metadata_check("", dir) : 0;
}

/* A writable copy of fixture name at tmp/tag, opened, and its keys as a
 * save list that changes nothing (extra spare slots after them): the
 * checkpoint, or NULL with the failure reported. */
static ck_checkpoint *open_copy(const char *tmp, const char *tag, const char *name, size_t extra,
                                char **dir, ck_save_key **ks)
{
    *dir = copy_fixture(tmp, tag, name);
    CHECK(*dir != NULL);
    if (!*dir)
        return NULL;
    char err[512] = "";
    ck_checkpoint *ck = NULL;
    int rc = ck_open(*dir, NULL, &ck, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc) {
        printf("# %s: %s\n", *dir, err);
        return NULL;
    }
    *ks = unchanged_keys(ck, extra);
    return ck;
}

/* Patches part of row_sharded (rows 4..5 of 10x7 float32: chunk 1 only) and
 * all of grid's chunk 3; everything else must be carried over. */
static void commit_patch_sharded(const char *tmp)
{
    char *dir, err[512] = "";
    ck_save_key *ks;
    ck_checkpoint *ck = open_copy(tmp, "sharded", "dcp_dtensor_ws4", 0, &dir, &ks);
    if (!ck)
        return;
    const ck_key *rs = ck_find_key(ck, "row_sharded"), *gr = ck_find_key(ck, "grid");
    uint64_t rlen, glen;
    uint8_t *rold = read_key(ck, rs, &rlen), *gold = read_key(ck, gr, &glen);
    uint8_t rp[2 * 7 * 4], gp[16 * 4];
    for (size_t i = 0; i < sizeof rp; i++)
        rp[i] = (uint8_t)(0xA0 + i);
    for (size_t i = 0; i < sizeof gp; i++)
        gp[i] = (uint8_t)(0x10 + i);
    patched pr = { rold, rlen, rp, 4 * 7 * 4 + 2, sizeof rp - 4 }; /* mid-element start */
    patched pg = { gold, glen, gp, (5 * 12 + 6) * 4, 6 * 4 };       /* row 5, cols 6..11 */
    ck_byte_range rr = { pr.at, pr.at + pr.len }, gr_r = { pg.at, pg.at + pg.len };
    for (size_t i = 0; i < ck->nkeys; i++) {
        if (ks[i].old == rs)
            ks[i].dirty = &rr, ks[i].ndirty = 1, ks[i].read = read_patched, ks[i].read_ctx = &pr;
        if (ks[i].old == gr)
            ks[i].dirty = &gr_r, ks[i].ndirty = 1, ks[i].read = read_patched, ks[i].read_ctx = &pg;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_commit_opts o = { .dirfd = dfd, .checkpoint_id = dir };
    ck_commit_stats st;
    int rc = ck_commit(ck, ks, ck->nkeys, &o, &st, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        printf("# %s\n", err);
    CHECK_EQ_INT(st.items, 2); /* one chunk of each: rows 3..5 of row_sharded, grid (1,1) */
    CHECK_EQ_INT(st.removed, 0);
    CHECK(strncmp(st.data_file, "__ckptfs_", 9) == 0);
    /* pwrite + fsync of the data file, directory fsync, pwrite + fsync of the
     * temporary metadata, rename, directory fsync */
    CHECK_EQ_INT(st.syscalls, 7);
    ck_checkpoint *back = NULL;
    CHECK_EQ_INT(ck_open(dir, NULL, &back, err, sizeof err), 0);
    if (back) {
        int same = back->nkeys == ck->nkeys;
        for (size_t i = 0; same && i < ck->nkeys; i++) {
            const ck_key *a = &ck->keys[i], *b = &back->keys[i];
            uint64_t la, lb;
            uint8_t *ba = read_key(ck, a, &la), *bb = read_key(back, b, &lb);
            if (a == rs || a == gr) {
                patched *pp = a == rs ? &pr : &pg;
                read_patched(pp, 0, ba, la);
            }
            same = ba && bb && la == lb && memcmp(ba, bb, la) == 0;
            if (!same)
                printf("# key %s differs after the commit\n", a->fqn);
            free(ba);
            free(bb);
        }
        CHECK(same);
        const ck_key *r2 = ck_find_key(back, "row_sharded");
        int moved = 0;
        for (uint32_t j = 0; r2 && j < r2->nchunks; j++)
            moved += strncmp(back->files[r2->chunks[j].file].path, "__ckptfs_", 9) == 0;
        CHECK_EQ_INT(moved, 1);
        CHECK_EQ_INT(python_check(dir), 0);
        ck_close(back);
    }
    close(dfd);
    free(rold);
    free(gold);
    free(ks);
    ck_close(ck);
}

/* zstd stays zstd; a new key in an all-zstd checkpoint is zstd; a renamed
 * key and a dropped key; a replaced bytes payload; files nothing uses any
 * more disappear. */
static void commit_zstd_and_namespace(const char *tmp)
{
    char *dir, err[512] = "";
    ck_save_key *ks;
    ck_checkpoint *ck = open_copy(tmp, "zstd", "dcp_zstd", 1, &dir, &ks);
    if (!ck)
        return;
    size_t n = ck->nkeys;
    const ck_key *emb = ck_find_key(ck, "model.embed.weight");
    const ck_key *step = ck_find_key(ck, "step");
    CHECK(emb && step);
    uint64_t elen;
    uint8_t *eold = read_key(ck, emb, &elen);
    uint8_t p4[4] = { 1, 2, 3, 4 };
    patched pe = { eold, elen, p4, 100, 4 };
    ck_byte_range er = { 100, 104 };
    uint64_t slen;
    uint8_t *sold = read_key(ck, step, &slen); /* same payload written back as new bytes */
    patched ps = { sold, slen, NULL, 0, 0 };
    static uint64_t shape[2] = { 3, 5 };
    uint8_t newdata[3 * 5 * 2];
    for (size_t i = 0; i < sizeof newdata; i++)
        newdata[i] = (uint8_t)(i * 3);
    patched pn = { newdata, sizeof newdata, NULL, 0, 0 };
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        ck_save_key k = ks[i];
        if (strcmp(k.fqn, "model.i8") == 0)
            continue; /* dropped */
        if (strcmp(k.fqn, "model.layers.1.mlp.w1.weight") == 0)
            k.fqn = "renamed.w1";
        if (k.old == emb)
            k.dirty = &er, k.ndirty = 1, k.read = read_patched, k.read_ctx = &pe;
        if (k.old == step)
            k.rewrite_bytes = 1, k.bytes_len = slen, k.read = read_patched, k.read_ctx = &ps;
        ks[w++] = k;
    }
    CHECK_EQ_INT(w, n - 1);
    ks[w++] = (ck_save_key){ .fqn = "added.w", .dtype = CK_DT_BFLOAT16, .ndim = 2, .shape = shape,
                             .transforms = ck_default_transforms(ck), .read = read_patched,
                             .read_ctx = &pn };
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_commit_opts o = { .dirfd = dfd, .checkpoint_id = dir };
    ck_commit_stats st;
    int rc = ck_commit(ck, ks, w, &o, &st, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        printf("# %s\n", err);
    CHECK_EQ_INT(st.items, 3);
    ck_checkpoint *back = NULL;
    CHECK_EQ_INT(ck_open(dir, NULL, &back, err, sizeof err), 0);
    if (back) {
        CHECK(ck_find_key(back, "model.i8") == NULL);
        const ck_key *rb = ck_find_key(back, "renamed.w1");
        const ck_key *ob = ck_find_key(ck, "model.layers.1.mlp.w1.weight");
        uint64_t l1, l2;
        uint8_t *b1 = rb ? read_key(back, rb, &l1) : NULL, *b2 = read_key(ck, ob, &l2);
        CHECK(b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0);
        /* no sibling's path prefixes the new name, and the checkpoint's
         * paths are not FQNs split at '.' (torch 2.11 keeps module names
         * whole): one element */
        CHECK(rb && rb->planner_path_len == 1 && strcmp(rb->planner_path[0], "renamed.w1") == 0);
        /* a key that kept its name keeps its path */
        const ck_key *kept = ck_find_key(back, "model.embed.weight");
        CHECK(kept && kept->planner_path_len == 2 && strcmp(kept->planner_path[1], "embed.weight") == 0);
        free(b1);
        free(b2);
        const ck_key *e2 = ck_find_key(back, "model.embed.weight");
        uint8_t *eb = e2 ? read_key(back, e2, &l1) : NULL;
        read_patched(&pe, 0, eold, elen);
        CHECK(eb && l1 == elen && memcmp(eb, eold, elen) == 0);
        CHECK(e2 && e2->chunks[0].transforms == CK_TF_ZSTD &&
              strncmp(back->files[e2->chunks[0].file].path, "__ckptfs_", 9) == 0);
        free(eb);
        const ck_key *s2 = ck_find_key(back, "step");
        uint8_t *sb = s2 ? read_key(back, s2, &l1) : NULL;
        CHECK(sb && l1 == slen && memcmp(sb, sold, slen) == 0 &&
              s2->chunks[0].transforms == CK_TF_ZSTD);
        free(sb);
        const ck_key *a = ck_find_key(back, "added.w");
        uint8_t *ab = a ? read_key(back, a, &l1) : NULL;
        CHECK(a && a->dtype == CK_DT_BFLOAT16 && a->ndim == 2 && a->shape[1] == 5 &&
              a->chunks[0].transforms == CK_TF_ZSTD && ab && l1 == sizeof newdata &&
              memcmp(ab, newdata, l1) == 0);
        free(ab);
        CHECK_EQ_INT(python_check(dir), 0);
        ck_close(back);
    }
    /* a second commit that rewrites every non-empty key leaves the first
     * commit's file unreferenced: it is removed; the fixture's file still
     * holds model.empty's item (a 0-element tensor has no bytes to change) */
    ck_close(ck);
    ck = NULL;
    ck_open(dir, NULL, &ck, err, sizeof err);
    if (ck) {
        uint8_t **imgs = calloc(ck->nkeys, sizeof *imgs);
        patched *pp = calloc(ck->nkeys, sizeof *pp);
        ck_byte_range *all = calloc(ck->nkeys, sizeof *all);
        ck_save_key *k2 = unchanged_keys(ck, 0);
        for (size_t i = 0; i < ck->nkeys; i++) {
            uint64_t l;
            imgs[i] = read_key(ck, &ck->keys[i], &l);
            pp[i] = (patched){ imgs[i], l, NULL, 0, 0 };
            all[i] = (ck_byte_range){ 0, l };
            k2[i].read = read_patched;
            k2[i].read_ctx = &pp[i];
            if (ck->keys[i].kind == CK_KEY_BYTES)
                k2[i].rewrite_bytes = 1, k2[i].bytes_len = l;
            else
                k2[i].dirty = &all[i], k2[i].ndirty = 1;
        }
        rc = ck_commit(ck, k2, ck->nkeys, &o, &st, err, sizeof err);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(st.removed, 1);
        CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 1);
        CHECK_EQ_INT(count_files(dir, "__0_0.distcp"), 1);
        CHECK_EQ_INT(python_check(dir), 0);
        for (size_t i = 0; i < ck->nkeys; i++)
            free(imgs[i]);
        free(imgs);
        free(pp);
        free(all);
        free(k2);
        ck_close(ck);
    }
    close(dfd);
    free(eold);
    free(sold);
    free(ks);
}

/* Every step failing in turn: the commit reports it, .metadata is byte for
 * byte the old one and no file of the failed commit is left. */
static void commit_failures(const char *tmp)
{
    char *dir, err[512] = "", mpath[700];
    ck_save_key *ks;
    ck_checkpoint *ck = open_copy(tmp, "failures", "dcp_single", 0, &dir, &ks);
    if (!ck)
        return;
    snprintf(mpath, sizeof mpath, "%s/.metadata", dir);
    size_t olen;
    uint8_t *orig = slurp(mpath, &olen);
    CHECK(orig != NULL);
    if (!orig) {
        free(ks);
        ck_close(ck);
        return;
    }
    const ck_key *wq = ck_find_key(ck, "model.layers.0.attn.wq.weight");
    uint64_t len;
    uint8_t *old = read_key(ck, wq, &len);
    uint8_t pat[8] = { 9, 9, 9, 9, 9, 9, 9, 9 };
    patched p = { old, len, pat, 16, 8 };
    ck_byte_range r = { 16, 24 };
    for (size_t i = 0; i < ck->nkeys; i++)
        if (ks[i].old == wq)
            ks[i].dirty = &r, ks[i].ndirty = 1, ks[i].read = read_patched, ks[i].read_ctx = &p;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    int all_ok = 1;
    /* steps up to the rename: data pwrite, data fsync, directory fsync,
     * metadata pwrite, metadata fsync, rename */
    for (uint64_t k = 1; k <= 6; k++) {
        ck_commit_opts o = { .dirfd = dfd, .checkpoint_id = dir, .fail_after = k,
                             .fail_errno = k % 2 ? ENOSPC : EIO };
        int rc = ck_commit(ck, ks, ck->nkeys, &o, NULL, err, sizeof err);
        size_t nlen;
        uint8_t *now = slurp(mpath, &nlen);
        int ok = rc == (k % 2 ? -ENOSPC : -EIO) && now && nlen == olen &&
                 memcmp(now, orig, olen) == 0 && count_files(dir, "__ckptfs_") == 0 &&
                 count_files(dir, ".metadata.ckptfs") == 0;
        if (!ok)
            printf("# failing step %d: rc %d, err %s\n", (int)k, rc, err);
        all_ok &= ok;
        free(now);
    }
    CHECK(all_ok);
    /* step 7 (fsync of the directory, after the rename) is reported in the
     * log only: the new state is already the visible one */
    ck_commit_opts o6 = { .dirfd = dfd, .checkpoint_id = dir, .fail_after = 7, .fail_errno = EIO };
    CHECK_EQ_INT(ck_commit(ck, ks, ck->nkeys, &o6, NULL, err, sizeof err), 0);
    CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 1);
    close(dfd);
    free(orig);
    free(old);
    free(ks);
    ck_close(ck);
}

/* Refusals: two keys with one name, a new key without a dtype. */
static void commit_refusals(const char *tmp)
{
    char *dir, err[512] = "";
    ck_save_key *ks;
    ck_checkpoint *ck = open_copy(tmp, "refusals", "dcp_single", 1, &dir, &ks);
    if (!ck)
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    ck_commit_opts o = { .dirfd = dfd };
    size_t n = ck->nkeys;
    ks[n] = ks[0];
    CHECK_EQ_INT(ck_commit(ck, ks, n + 1, &o, NULL, err, sizeof err), -EEXIST);
    static uint64_t shape[1] = { 4 };
    uint8_t data[4] = { 0 };
    patched pd = { data, 4, NULL, 0, 0 };
    ks[n] = (ck_save_key){ .fqn = "new", .dtype = CK_DT_INVALID, .ndim = 1, .shape = shape,
                           .read = read_patched, .read_ctx = &pd };
    CHECK_EQ_INT(ck_commit(ck, ks, n + 1, &o, NULL, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(count_files(dir, "__ckptfs_"), 0);
    close(dfd);
    free(ks);
    ck_close(ck);
}

int main(void)
{
    fake_key f;
    uint8_t rw[MAXC];

    /* row_sharded: 10 x 7 float32, rows 3,3,3,1 (Shard(0) uneven) */
    {
        uint64_t rb[] = { 0, 3, 6, 9, 10 }, cb[] = { 0, 7 };
        make_grid(&f, CK_DT_FLOAT32, 10, 7, rb, 5, cb, 2);
        CHECK_EQ_INT(f.key.nchunks, 4);
        check_gather(&f, "row");
        /* one element in row 4 -> chunk 1 only */
        ck_byte_range r1 = { (4 * 7 + 2) * 4, (4 * 7 + 3) * 4 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r1, 1, rw), 0);
        CHECK_EQ_INT(count(rw, 4), 1);
        CHECK(rw[1]);
        /* a single byte in the middle of an element still marks its chunk */
        ck_byte_range rb1 = { 9 * 7 * 4 + 1, 9 * 7 * 4 + 2 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &rb1, 1, rw), 0);
        CHECK(rw[3] && count(rw, 4) == 1);
        /* rows 2..3 straddle chunks 0 and 1 */
        ck_byte_range r2 = { 2 * 7 * 4, 4 * 7 * 4 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r2, 1, rw), 0);
        CHECK(rw[0] && rw[1] && count(rw, 4) == 2);
        /* the full tensor: every chunk */
        ck_byte_range all = { 0, f.key.nbytes };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &all, 1, rw), 0);
        CHECK_EQ_INT(count(rw, 4), 4);
        /* empty and out-of-range ranges mark nothing */
        ck_byte_range none[] = { { 8, 8 }, { f.key.nbytes, f.key.nbytes + 100 } };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, none, 2, rw), 0);
        CHECK_EQ_INT(count(rw, 4), 0);
        /* a row-sharded chunk image is one run of the tensor image */
        image_ctx ic = { NULL, 0, 0 };
        uint8_t *img = calloc(1, f.key.nbytes);
        ic.img = img;
        ic.len = f.key.nbytes;
        uint8_t buf[3 * 7 * 4];
        CHECK_EQ_INT(ck_chunk_image_read(&f.key, &f.chunks[1], 0, buf, sizeof buf, read_image, &ic), 0);
        CHECK_EQ_INT(ic.calls, 1);
        /* past the chunk's image: refused */
        CHECK_EQ_INT(ck_chunk_image_read(&f.key, &f.chunks[1], 1, buf, sizeof buf, read_image, &ic),
                     -EINVAL);
        free(img);
    }

    /* col_sharded: 6 x 10 bfloat16, columns 3,3,3,1 (Shard(1)) */
    {
        uint64_t rb[] = { 0, 6 }, cb[] = { 0, 3, 6, 9, 10 };
        make_grid(&f, CK_DT_BFLOAT16, 6, 10, rb, 2, cb, 5);
        check_gather(&f, "column");
        /* columns 2..4 of row 1: chunks 0 and 1 */
        ck_byte_range r = { (1 * 10 + 2) * 2, (1 * 10 + 5) * 2 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r, 1, rw), 0);
        CHECK(rw[0] && rw[1] && count(rw, 4) == 2);
        /* the last column of every row: only chunk 3, from several ranges */
        ck_byte_range cols[6];
        for (int i = 0; i < 6; i++)
            cols[i] = (ck_byte_range){ (uint64_t)(i * 10 + 9) * 2, (uint64_t)(i * 10 + 10) * 2 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, cols, 6, rw), 0);
        CHECK(rw[3] && count(rw, 4) == 1);
        /* one whole row touches every column chunk */
        ck_byte_range row = { 3 * 10 * 2, 4 * 10 * 2 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &row, 1, rw), 0);
        CHECK_EQ_INT(count(rw, 4), 4);
    }

    /* grid: 8 x 12 float32 on a 2 x 2 mesh (Shard(0), Shard(1)) */
    {
        uint64_t rb[] = { 0, 4, 8 }, cb[] = { 0, 6, 12 };
        make_grid(&f, CK_DT_FLOAT32, 8, 12, rb, 3, cb, 3);
        check_gather(&f, "grid");
        /* element (5, 7): chunk (1,1) = index 3 */
        ck_byte_range r = { (5 * 12 + 7) * 4, (5 * 12 + 8) * 4 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r, 1, rw), 0);
        CHECK(rw[3] && count(rw, 4) == 1);
        /* elements (3,5)..(4,6): rows 3-4 straddle, columns 5-6 straddle -> all four */
        ck_byte_range rr[] = { { (3 * 12 + 5) * 4, (3 * 12 + 7) * 4 },
                               { (4 * 12 + 5) * 4, (4 * 12 + 7) * 4 } };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, rr, 2, rw), 0);
        CHECK_EQ_INT(count(rw, 4), 4);
        /* the whole of chunk 2's first row, nothing else */
        ck_byte_range r2 = { (4 * 12 + 0) * 4, (4 * 12 + 6) * 4 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r2, 1, rw), 0);
        CHECK(rw[2] && count(rw, 4) == 1);
    }

    /* fewer rows than ranks and an uneven grid, odd element size */
    {
        uint64_t rb[] = { 0, 1, 2 }, cb[] = { 0, 4, 5, 9 };
        make_grid(&f, CK_DT_FLOAT64, 2, 9, rb, 3, cb, 4);
        check_gather(&f, "uneven grid");
    }

    /* 3-D tensor sharded on its middle dimension: runs are rows of the last */
    {
        fake_key g;
        memset(&g, 0, sizeof g);
        g.shape[0] = 2;
        g.shape[1] = 4;
        g.shape[2] = 3;
        g.key.fqn = "t3";
        g.key.kind = CK_KEY_TENSOR;
        g.key.dtype = CK_DT_INT16;
        g.key.ndim = 3;
        g.key.shape = g.shape;
        ck_key_compute_size(&g.key);
        for (int c = 0; c < 2; c++) {
            g.offs[c][1] = (uint64_t)c * 2;
            g.sizes[c][0] = 2;
            g.sizes[c][1] = 2;
            g.sizes[c][2] = 3;
            g.chunks[c].offsets = g.offs[c];
            g.chunks[c].sizes = g.sizes[c];
        }
        g.key.nchunks = 2;
        g.key.chunks = g.chunks;
        uint8_t img[2 * 4 * 3 * 2], got[2 * 2 * 3 * 2], want[sizeof got];
        for (size_t i = 0; i < sizeof img; i++)
            img[i] = (uint8_t)i;
        size_t p = 0;
        for (int a = 0; a < 2; a++)
            for (int b = 2; b < 4; b++)
                for (int c = 0; c < 3; c++, p += 2)
                    memcpy(want + p, img + ((a * 4 + b) * 3 + c) * 2, 2);
        image_ctx ic = { img, sizeof img, 0 };
        CHECK_EQ_INT(ck_chunk_image_read(&g.key, &g.chunks[1], 0, got, sizeof got, read_image, &ic), 0);
        CHECK(memcmp(got, want, sizeof got) == 0);
        CHECK_EQ_INT(ic.calls, 2); /* one run per index of dimension 0 */
        ck_byte_range r = { ((1 * 4 + 3) * 3 + 2) * 2, ((1 * 4 + 3) * 3 + 3) * 2 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&g.key, &r, 1, rw), 0);
        CHECK(rw[1] && !rw[0]);
    }

    /* 0-d tensor: one element, one chunk */
    {
        fake_key z;
        memset(&z, 0, sizeof z);
        z.key.fqn = "scalar";
        z.key.kind = CK_KEY_TENSOR;
        z.key.dtype = CK_DT_FLOAT32;
        z.key.ndim = 0;
        z.key.shape = z.shape;
        ck_key_compute_size(&z.key);
        z.chunks[0].offsets = z.offs[0];
        z.chunks[0].sizes = z.sizes[0];
        z.key.nchunks = 1;
        z.key.chunks = z.chunks;
        uint8_t img[4] = { 1, 2, 3, 4 }, got[4];
        image_ctx ic = { img, 4, 0 };
        CHECK_EQ_INT(ck_chunk_image_read(&z.key, &z.chunks[0], 0, got, 4, read_image, &ic), 0);
        CHECK(memcmp(got, img, 4) == 0);
        ck_byte_range r = { 2, 3 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&z.key, &r, 1, rw), 0);
        CHECK(rw[0]);
    }

    /* a gap in the tiling is an error, not a silent skip */
    {
        uint64_t rb[] = { 0, 3, 6, 9, 10 }, cb[] = { 0, 7 };
        make_grid(&f, CK_DT_FLOAT32, 10, 7, rb, 5, cb, 2);
        f.key.nchunks = 3; /* rows 9.. held by no chunk */
        ck_byte_range r = { 9 * 7 * 4, 10 * 7 * 4 };
        memset(rw, 0, sizeof rw);
        CHECK_EQ_INT(ck_save_plan_chunks(&f.key, &r, 1, rw), -EIO);
    }

    /* default transforms: zstd only when every tensor chunk is zstd */
    {
        uint64_t rb[] = { 0, 3, 6, 9, 10 }, cb[] = { 0, 7 };
        make_grid(&f, CK_DT_FLOAT32, 10, 7, rb, 5, cb, 2);
        ck_key bytes_key = { .fqn = "step", .kind = CK_KEY_BYTES };
        ck_key keys[2] = { bytes_key, f.key };
        ck_checkpoint ck;
        memset(&ck, 0, sizeof ck);
        ck.keys = keys;
        ck.nkeys = 2;
        CHECK_EQ_INT(ck_default_transforms(&ck), 0);
        for (int i = 0; i < 4; i++)
            f.chunks[i].transforms = CK_TF_ZSTD;
        CHECK_EQ_INT(ck_default_transforms(&ck), CK_TF_ZSTD);
        f.chunks[2].transforms = 0;
        CHECK_EQ_INT(ck_default_transforms(&ck), 0);
        ck.nkeys = 1;
        CHECK_EQ_INT(ck_default_transforms(&ck), 0);
    }

    char tmp[] = "/tmp/test_save_plan.XXXXXX";
    if (mkdtemp(tmp)) {
        commit_patch_sharded(tmp);
        commit_zstd_and_namespace(tmp);
        commit_failures(tmp);
        commit_refusals(tmp);
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0)
            printf("# could not remove %s\n", tmp);
    }
    return check_done();
}
