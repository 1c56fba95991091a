/* metadata.json produced by offset (fs/view_metadata.c): every slice equals
 * the same bytes of cJSON_Print's whole document, the one the view used to
 * build in memory.  fs/ is not a library: the FUSE-free files under test
 * are compiled into this binary. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json_num.c"
#include "view_metadata.c"
#include "view_region.c"

/* The document as it was built before streaming: the expectation. */
static char *whole_document(const ck_checkpoint *ck, size_t *len)
{
    cJSON *keys = cJSON_CreateObject();
    for (size_t i = 0; i < ck->nkeys; i++)
        cJSON_AddItemToObject(keys, ck->keys[i].fqn, fs_key_metadata_json(ck, &ck->keys[i]));
    cJSON *root = root_json(ck, keys);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    memcpy(out, text, n);
    out[n] = '\n';
    cJSON_free(text);
    *len = n + 1;
    return out;
}

static uint64_t dims[64][2];

static void make_ck(ck_checkpoint *ck, size_t nkeys, ck_key *keys, ck_chunk *chunks, char names[][40])
{
    static ck_file files[2] = { { .path = "__0_0.distcp" }, { .path = "dir/\"q\"\t.distcp" } };
    memset(ck, 0, sizeof *ck);
    ck->source = "/ckpt/with \"quotes\"\n";
    ck->kind = CK_SRC_DCP;
    ck->version = nkeys % 2 ? "1.0.0" : NULL;
    ck->nfiles = 2;
    ck->files = files;
    ck->nkeys = nkeys;
    ck->keys = keys;
    size_t c = 0;
    for (size_t i = 0; i < nkeys; i++) {
        ck_key *k = &keys[i];
        memset(k, 0, sizeof *k);
        /* names that need escaping: quote, backslash, tab, newline, UTF-8 */
        static const char *const odd[] = { "a\"b", "tab\there", "nl\nx", "back\\slash", "\xc3\xa9t\xc3\xa9" };
        snprintf(names[i], 40, "k%03zu.%s", i, odd[i % 5]);
        k->fqn = names[i];
        k->kind = i % 7 == 3 ? CK_KEY_BYTES : CK_KEY_TENSOR;
        k->dtype = CK_DT_FLOAT32;
        k->ndim = k->kind == CK_KEY_BYTES ? 0 : (uint32_t)(i % 3);
        dims[i][0] = 8;
        dims[i][1] = 4 + i;
        k->shape = dims[i];
        k->numel = 1;
        k->nchunks = k->kind == CK_KEY_BYTES ? 1 : (uint32_t)(i % 4);
        k->chunks = &chunks[c];
        k->error = i % 11 == 5 ? -EIO : 0;
        for (uint32_t j = 0; j < k->nchunks; j++, c++) {
            chunks[c].offsets = dims[j];
            chunks[c].sizes = dims[i];
            chunks[c].file = (uint32_t)(c % 3); /* 2: no such file -> null */
            chunks[c].offset = c * 1000;
            chunks[c].length = 77 + c;
            chunks[c].transforms = c % 5 == 1 ? CK_TF_ZSTD : c % 5 == 2 ? CK_TF_ZSTD | CK_TF_UNKNOWN : 0;
            atomic_init(&chunks[c].state, 0);
        }
    }
}

static void check_slices(size_t nkeys)
{
    ck_checkpoint ck;
    ck_key keys[64];
    ck_chunk chunks[256];
    char names[64][40];
    make_ck(&ck, nkeys, keys, chunks, names);
    size_t want_len;
    char *want = whole_document(&ck, &want_len);
    fs_metadata_stream s;
    CHECK_EQ_INT(fs_metadata_stream_init(&s, &ck), 0);
    CHECK_EQ_INT(s.size, want_len);
    char *buf = malloc(want_len + 64);
    size_t got;
    /* the whole document in one read, and past its end */
    CHECK_EQ_INT(fs_metadata_stream_read(&s, &ck, 0, buf, want_len + 64, &got), 0);
    CHECK(got == want_len && memcmp(buf, want, want_len) == 0);
    CHECK_EQ_INT(fs_metadata_stream_read(&s, &ck, want_len, buf, 10, &got), 0);
    CHECK_EQ_INT(got, 0);
    /* every offset with a few lengths, crossing key boundaries */
    static const size_t lens[] = { 1, 2, 7, 64, 333, 4096 };
    int bad = 0;
    for (size_t off = 0; off < want_len; off++)
        for (size_t l = 0; l < sizeof lens / sizeof *lens; l++) {
            size_t n = lens[l];
            if (fs_metadata_stream_read(&s, &ck, off, buf, n, &got) != 0)
                bad++;
            size_t expect = n < want_len - off ? n : want_len - off;
            if (got != expect || memcmp(buf, want + off, expect) != 0)
                bad++;
        }
    CHECK_EQ_INT(bad, 0);
    /* a chunk found raw after init: the document keeps the bytes it had */
    if (nkeys > 1 && keys[1].nchunks) {
        keys[1].chunks[0].format = CK_ITEM_RAW;
        atomic_store(&keys[1].chunks[0].state, 1);
        CHECK_EQ_INT(fs_metadata_stream_read(&s, &ck, 0, buf, want_len, &got), 0);
        CHECK(got == want_len && memcmp(buf, want, want_len) == 0);
        fs_metadata_stream t;
        CHECK_EQ_INT(fs_metadata_stream_init(&t, &ck), 0);
        CHECK(t.size == want_len + strlen("raw") - strlen("torch.save"));
        fs_metadata_stream_clear(&t);
    }
    fs_metadata_stream_clear(&s);
    free(buf);
    free(want);
}

int main(void)
{
    check_slices(0);
    check_slices(1);
    check_slices(2);
    check_slices(40);
    return check_done();
}
