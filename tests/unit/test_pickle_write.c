/* pkw against pk_parse, against the bytes torch wrote, and against
 * Python's own pickle module (skipped where /usr/bin/python3 is missing). */
#include "check.h"
#include "test_util.h"
#include "pickle.h"
#include "pickle_write.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/fixtures/torch-2.11/"
#define PYTHON "/usr/bin/python3"

/* ---- generic re-emitter: writes a parsed value the way pickle.dumps
 * would have written it ---------------------------------------------------- */

static void emit_value(pkw *w, const pk_value *v);

static void emit_appends(pkw *w, pk_value *const *items, size_t n)
{
    /* pickle batches APPENDS by 1000 and uses APPEND for a lone item */
    for (size_t i = 0; i < n; i += 1000) {
        size_t k = n - i < 1000 ? n - i : 1000;
        if (k == 1) {
            emit_value(w, items[i]);
            pkw_op(w, PKW_APPEND);
            continue;
        }
        pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < k; j++)
            emit_value(w, items[i + j]);
        pkw_op(w, PKW_APPENDS);
    }
}

static void emit_setitems(pkw *w, const pk_value *d)
{
    size_t n = d->u.dict.len;
    for (size_t i = 0; i < n; i += 1000) {
        size_t k = n - i < 1000 ? n - i : 1000;
        if (k == 1) {
            emit_value(w, d->u.dict.keys[i]);
            emit_value(w, d->u.dict.vals[i]);
            pkw_op(w, PKW_SETITEM);
            continue;
        }
        pkw_op(w, PKW_MARK);
        for (size_t j = 0; j < k; j++) {
            emit_value(w, d->u.dict.keys[i + j]);
            emit_value(w, d->u.dict.vals[i + j]);
        }
        pkw_op(w, PKW_SETITEMS);
    }
}

static void emit_value(pkw *w, const pk_value *v)
{
    switch (v->kind) {
    case PK_NONE: pkw_none(w); break;
    case PK_OPAQUE: break; /* a streamed parse's stand-in: never emitted */
    case PK_BOOL: pkw_bool(w, v->u.b); break;
    case PK_INT: pkw_int(w, v->u.i); break;
    case PK_FLOAT: pkw_float(w, v->u.f); break;
    case PK_STR: pkw_str(w, v->u.str.data); break;
    case PK_BYTES: pkw_bytes(w, v->u.str.data, v->u.str.len); break;
    case PK_TUPLE: {
        size_t n = v->u.seq.len;
        if (n == 0) {
            pkw_op(w, PKW_EMPTY_TUPLE);
            break;
        }
        if (n > 3)
            pkw_op(w, PKW_MARK);
        for (size_t i = 0; i < n; i++)
            emit_value(w, v->u.seq.items[i]);
        pkw_op(w, n == 1 ? PKW_TUPLE1 : n == 2 ? PKW_TUPLE2 : n == 3 ? PKW_TUPLE3 : PKW_TUPLE);
        break;
    }
    case PK_LIST:
        pkw_op(w, PKW_EMPTY_LIST);
        emit_appends(w, v->u.seq.items, v->u.seq.len);
        break;
    case PK_DICT:
        pkw_op(w, PKW_EMPTY_DICT);
        emit_setitems(w, v);
        break;
    case PK_GLOBAL:
        pkw_global(w, v->u.global.module, v->u.global.name);
        break;
    case PK_OBJECT:
        emit_value(w, v->u.obj.callable);
        emit_value(w, v->u.obj.args);
        pkw_op(w, v->u.obj.newobj ? PKW_NEWOBJ : PKW_REDUCE);
        if (v->u.obj.items)
            emit_appends(w, v->u.obj.items->u.seq.items, v->u.obj.items->u.seq.len);
        if (v->u.obj.dictitems)
            emit_setitems(w, v->u.obj.dictitems);
        if (v->u.obj.state) {
            emit_value(w, v->u.obj.state);
            pkw_op(w, PKW_BUILD);
        }
        break;
    case PK_PERSID:
        emit_value(w, v->u.persid.pid);
        pkw_op(w, PKW_BINPERSID);
        break;
    }
}

static bool same(const pk_value *a, const pk_value *b)
{
    if (!a || !b)
        return a == b;
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case PK_NONE: return true;
    case PK_OPAQUE: return false; /* a streamed parse's stand-in */
    case PK_BOOL: return a->u.b == b->u.b;
    case PK_INT: return a->u.i == b->u.i;
    case PK_FLOAT: return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0;
    case PK_STR:
    case PK_BYTES:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.data, b->u.str.data, a->u.str.len) == 0;
    case PK_TUPLE:
    case PK_LIST:
        if (a->u.seq.len != b->u.seq.len)
            return false;
        for (size_t i = 0; i < a->u.seq.len; i++)
            if (!same(a->u.seq.items[i], b->u.seq.items[i]))
                return false;
        return true;
    case PK_DICT:
        if (a->u.dict.len != b->u.dict.len)
            return false;
        for (size_t i = 0; i < a->u.dict.len; i++)
            if (!same(a->u.dict.keys[i], b->u.dict.keys[i]) ||
                !same(a->u.dict.vals[i], b->u.dict.vals[i]))
                return false;
        return true;
    case PK_GLOBAL:
        return strcmp(a->u.global.module, b->u.global.module) == 0 &&
               strcmp(a->u.global.name, b->u.global.name) == 0;
    case PK_OBJECT:
        return a->u.obj.newobj == b->u.obj.newobj && same(a->u.obj.callable, b->u.obj.callable) &&
               same(a->u.obj.args, b->u.obj.args) && same(a->u.obj.state, b->u.obj.state) &&
               same(a->u.obj.items, b->u.obj.items) &&
               same(a->u.obj.dictitems, b->u.obj.dictitems);
    case PK_PERSID:
        return same(a->u.persid.pid, b->u.persid.pid);
    }
    return false;
}

/* Writes v with the protocol; returns the pickle (malloc'd) or NULL. */
static uint8_t *reemit(const pk_value *v, int protocol, size_t *len)
{
    pkw *w = pkw_new(protocol);
    uint8_t *out = NULL;
    if (!w)
        return NULL;
    emit_value(w, v);
    int rc = pkw_finish(w, &out, len);
    pkw_free(w);
    return rc ? NULL : out;
}

static void dump_diff(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t i = 0;
    while (i < alen && i < blen && a[i] == b[i])
        i++;
    printf("#   lengths %zu vs %zu, first difference at byte %zu\n", alen, blen, i);
}

/* ---- torch's data.pkl, byte for byte -------------------------------------- */

/* What torch.save writes for model.i8 (int8, shape (10,)), by hand. */
static void write_i8_rebuild(pkw *w)
{
    pkw_global(w, "torch._utils", "_rebuild_tensor_v2");
    pkw_op(w, PKW_MARK);
    pkw_op(w, PKW_MARK);
    pkw_str(w, "storage");
    pkw_global(w, "torch", "CharStorage");
    pkw_str(w, "0");
    pkw_str(w, "cpu");
    pkw_int(w, 10);
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_BINPERSID);
    pkw_int(w, 0);     /* storage offset */
    pkw_int(w, 10);
    pkw_op(w, PKW_TUPLE1); /* size */
    pkw_int(w, 1);
    pkw_op(w, PKW_TUPLE1); /* stride */
    pkw_bool(w, 0);    /* requires_grad */
    pkw_global(w, "collections", "OrderedDict");
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_REDUCE); /* backward hooks */
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_REDUCE);
}

static const uint8_t *fixture_pkl(const char *dir, const char *file, uint8_t **zip, size_t *len)
{
    char path[512];
    size_t zlen = 0;
    snprintf(path, sizeof path, FIX "%s/%s", dir, file);
    *zip = slurp(path, &zlen);
    return *zip ? zip_member(*zip, zlen, "/data.pkl", len) : NULL;
}

static void test_i8_matches_torch(void)
{
    uint8_t *zip = NULL, *out = NULL;
    size_t plen = 0, len = 0;
    const uint8_t *pkl = fixture_pkl("dcp_single_perfile", "__0_13.distcp", &zip, &plen);
    CHECK(pkl != NULL);
    pkw *w = pkw_new(2);
    write_i8_rebuild(w);
    CHECK_EQ_INT(pkw_finish(w, &out, &len), 0);
    pkw_free(w);
    bool equal = pkl && out && len == plen && memcmp(out, pkl, len) == 0;
    CHECK(equal);
    if (!equal && pkl && out)
        dump_diff(out, len, pkl, plen);
    free(out);
    free(zip);
}

/* Every data.pkl torch wrote in the one-file-per-item fixtures, parsed
 * and written again, comes out byte-identical. */
static void test_reemit_data_pkls(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, FIX "%s", dir);
    DIR *d = opendir(path);
    CHECK(d != NULL);
    if (!d)
        return;
    int total = 0, identical = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strstr(de->d_name, ".distcp"))
            continue;
        uint8_t *zip = NULL, *out = NULL;
        size_t plen = 0, len = 0;
        const uint8_t *pkl = fixture_pkl(dir, de->d_name, &zip, &plen);
        pk_doc *doc = NULL;
        char err[256];
        total++;
        if (pkl && pk_parse(pkl, plen, &doc, err, sizeof err) == 0)
            out = reemit(pk_root(doc), 2, &len);
        if (out && len == plen && memcmp(out, pkl, len) == 0) {
            identical++;
        } else {
            printf("# %s/%s differs\n", dir, de->d_name);
            if (out && pkl)
                dump_diff(out, len, pkl, plen);
        }
        free(out);
        pk_free(doc);
        free(zip);
    }
    closedir(d);
    printf("# %s: %d of %d data.pkl re-written byte-identical\n", dir, identical, total);
    CHECK(total > 0 && identical == total);
}

/* Each .metadata written again with both protocols reads back equal. */
static void test_reemit_metadata(const char *name)
{
    char path[512], err[256];
    snprintf(path, sizeof path, FIX "%s/.metadata", name);
    size_t len = 0;
    uint8_t *buf = slurp(path, &len);
    pk_doc *orig = NULL;
    CHECK(buf && pk_parse(buf, len, &orig, err, sizeof err) == 0);
    for (int proto = 2; orig && proto <= 4; proto += 2) {
        size_t olen = 0;
        uint8_t *out = reemit(pk_root(orig), proto, &olen);
        pk_doc *back = NULL;
        int rc = out ? pk_parse(out, olen, &back, err, sizeof err) : -1;
        CHECK(out && rc == 0 && same(pk_root(orig), pk_root(back)));
        if (proto == 4) {
            /* PROTO 4, then one FRAME holding all the rest */
            CHECK(out && olen > 11 && out[0] == 0x80 && out[1] == 4 && out[2] == 0x95 &&
                  ck_le32(out + 3) == olen - 11 && ck_le32(out + 7) == 0 && out[olen - 1] == '.');
            printf("# %s: torch wrote %zu bytes, protocol 4 re-write %zu\n", name, len, olen);
        }
        pk_free(back);
        free(out);
    }
    pk_free(orig);
    free(buf);
}

/* ---- direct checks -------------------------------------------------------- */

static uint8_t *finish(pkw *w, size_t *len)
{
    uint8_t *out = NULL;
    int rc = pkw_finish(w, &out, len);
    pkw_free(w);
    return rc ? NULL : out;
}

static bool bytes_are(const uint8_t *got, size_t len, const char *want, size_t wlen)
{
    return got && len == wlen && memcmp(got, want, wlen) == 0;
}

#define WANT(s) s, sizeof(s) - 1

static void test_encodings(void)
{
    size_t len;
    uint8_t *out;
    pkw *w;

    static const struct {
        int64_t v;
        const char *bytes;
        size_t len;
    } ints[] = {
        { 0, WANT("K\x00") },
        { 255, WANT("K\xff") },
        { 256, WANT("M\x00\x01") },
        { 65535, WANT("M\xff\xff") },
        { 65536, WANT("J\x00\x00\x01\x00") },
        { -1, WANT("J\xff\xff\xff\xff") },
        { INT32_MIN, WANT("J\x00\x00\x00\x80") },
        { INT32_MAX, WANT("J\xff\xff\xff\x7f") },
        { (int64_t)INT32_MAX + 1, WANT("\x8a\x05\x00\x00\x00\x80\x00") },
        { (int64_t)INT32_MIN - 1, WANT("\x8a\x05\xff\xff\xff\x7f\xff") },
        { (int64_t)1 << 40, WANT("\x8a\x06\x00\x00\x00\x00\x00\x01") },
        { INT64_MAX, WANT("\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f") },
        { INT64_MIN, WANT("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80") },
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        w = pkw_new(2);
        pkw_int(w, ints[i].v);
        out = finish(w, &len);
        bool ok = out && len == ints[i].len + 3 && memcmp(out, "\x80\x02", 2) == 0 &&
                  memcmp(out + 2, ints[i].bytes, ints[i].len) == 0 && out[len - 1] == '.';
        char what[80];
        snprintf(what, sizeof what, "pkw_int(%lld) encoding", (long long)ints[i].v);
        check_report(ok, what, __FILE__, __LINE__);
        pk_doc *doc = NULL;
        int64_t back = 0;
        CHECK(out && pk_parse(out, len, &doc, NULL, 0) == 0 &&
              pk_as_int(pk_root(doc), &back) == 0 && back == ints[i].v);
        pk_free(doc);
        free(out);
    }

    /* protocol 2: BINUNICODE + BINPUT, repeated string -> BINGET */
    w = pkw_new(2);
    pkw_op(w, PKW_EMPTY_LIST);
    pkw_op(w, PKW_MARK);
    pkw_str(w, "ab");
    pkw_str(w, "ab");
    pkw_float(w, 1.5);
    pkw_none(w);
    pkw_bool(w, 1);
    pkw_op(w, PKW_APPENDS);
    out = finish(w, &len);
    CHECK(bytes_are(out, len, WANT("\x80\x02]q\x00(X\x02\x00\x00\x00" "abq\x01h\x01"
                                   "G\x3f\xf8\x00\x00\x00\x00\x00\x00N\x88" "e.")));
    free(out);

    /* protocol 4: a tiny body gets no FRAME (under 4 bytes) */
    w = pkw_new(4);
    pkw_none(w);
    out = finish(w, &len);
    CHECK(bytes_are(out, len, WANT("\x80\x04N.")));
    free(out);

    /* protocol 4: SHORT_BINUNICODE + MEMOIZE, STACK_GLOBAL, global memo
     * hit -> BINGET, module string reused -> BINGET */
    w = pkw_new(4);
    pkw_global(w, "torch", "Size");
    pkw_global(w, "torch", "Size");
    pkw_global(w, "torch", "float32");
    pkw_op(w, PKW_TUPLE3);
    out = finish(w, &len);
    CHECK(bytes_are(out, len, WANT("\x80\x04\x95\x24\x00\x00\x00\x00\x00\x00\x00"
                                   "\x8c\x05torch\x94\x8c\x04Size\x94\x93\x94h\x02"
                                   "h\x00\x8c\x07" "float32\x94\x93\x94\x87\x94.")));
    free(out);

    /* protocol 2 GLOBAL + BINPUT; protocol 2 bytes as _codecs.encode */
    w = pkw_new(2);
    pkw_global(w, "collections", "OrderedDict");
    pkw_bytes(w, "\x00\xe9", 2);
    pkw_op(w, PKW_TUPLE2);
    out = finish(w, &len);
    CHECK(bytes_are(out, len, WANT("\x80\x02" "ccollections\nOrderedDict\nq\x00"
                                   "c_codecs\nencode\nq\x01X\x03\x00\x00\x00\x00\xc3\xa9q\x02"
                                   "X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05\x86q\x06.")));
    free(out);

    /* protocol 4 bytes: SHORT_BINBYTES / BINBYTES + MEMOIZE */
    static uint8_t big[300];
    memset(big, 7, sizeof big);
    w = pkw_new(4);
    pkw_bytes(w, "\x01", 1);
    pkw_bytes(w, big, sizeof big);
    pkw_op(w, PKW_TUPLE2);
    out = finish(w, &len);
    CHECK(out && len == 2 + 9 + 4 + 5 + 300 + 1 + 2 + 1 && out[11] == 'C' && out[14] == 0x94 &&
          out[15] == 'B' && ck_le32(out + 16) == 300);
    pk_doc *doc = NULL;
    CHECK(out && pk_parse(out, len, &doc, NULL, 0) == 0 &&
          pk_seq_at(pk_root(doc), 1)->kind == PK_BYTES &&
          pk_seq_at(pk_root(doc), 1)->u.str.len == 300);
    pk_free(doc);
    free(out);

    /* more than 256 memo entries: LONG_BINPUT / LONG_BINGET */
    w = pkw_new(2);
    pkw_op(w, PKW_EMPTY_LIST);
    pkw_op(w, PKW_MARK);
    char s[16];
    for (int i = 0; i < 300; i++) {
        snprintf(s, sizeof s, "s%d", i);
        pkw_str(w, s);
    }
    pkw_str(w, "s299");
    pkw_str(w, "s5");
    pkw_op(w, PKW_APPENDS);
    out = finish(w, &len);
    CHECK(out && memcmp(out + len - 9, "j\x2c\x01\x00\x00h\x06" "e.", 9) == 0);
    doc = NULL;
    const pk_value *l = NULL;
    CHECK(out && pk_parse(out, len, &doc, NULL, 0) == 0 && (l = pk_root(doc)) &&
          pk_seq_len(l) == 302 && strcmp(pk_as_str(pk_seq_at(l, 300)), "s299") == 0 &&
          strcmp(pk_as_str(pk_seq_at(l, 301)), "s5") == 0);
    pk_free(doc);
    free(out);
}

static void test_writer_errors(void)
{
    uint8_t *out = (uint8_t *)"x";
    size_t len = 1;
    pkw *w = pkw_new(3 - 2);
    CHECK(w != NULL);
    pkw_none(w);
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    CHECK(out == NULL && len == 0);
    pkw_free(w);

    w = pkw_new(2);
    pkw_str(w, "bad \xff utf-8");
    pkw_none(w); /* sticky: ignored */
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    pkw_free(w);

    w = pkw_new(2);
    pkw_global(w, "mod\nevil", "x");
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    pkw_free(w);

    w = pkw_new(4);
    pkw_op(w, 'i'); /* INST is not one of the ops we emit */
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    pkw_free(w);

    w = pkw_new(4);
    pkw_str(w, NULL);
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    pkw_free(w);

    w = pkw_new(4);
    pkw_none(w);
    CHECK_EQ_INT(pkw_finish(w, &out, &len), 0);
    free(out);
    pkw_none(w); /* after finish */
    CHECK_EQ_INT(pkw_finish(w, &out, &len), -EINVAL);
    pkw_free(w);
    pkw_free(NULL);
    CHECK_EQ_INT(pkw_finish(NULL, &out, &len), -EINVAL);
}

/* A value over 64 KiB in protocol 4: frames are cut at value starts and
 * big payloads stand outside frames, as CPython does; all reads back. */
static uint8_t *write_big(int protocol, size_t *len)
{
    pkw *w = pkw_new(protocol);
    static char huge[70001];
    memset(huge, 'y', sizeof huge - 1);
    static uint8_t hugeb[70000];
    memset(hugeb, 'z', sizeof hugeb);
    pkw_op(w, PKW_EMPTY_LIST);
    char s[16];
    for (int b = 0; b < 20; b++) {
        pkw_op(w, PKW_MARK);
        for (int i = 0; i < 1000; i++) {
            snprintf(s, sizeof s, "s%05d", b * 1000 + i);
            pkw_str(w, s);
        }
        pkw_op(w, PKW_APPENDS);
    }
    pkw_op(w, PKW_MARK);
    pkw_str(w, huge);
    pkw_bytes(w, hugeb, sizeof hugeb);
    pkw_op(w, PKW_APPENDS);
    return finish(w, len);
}

static void test_big(void)
{
    size_t len = 0;
    uint8_t *out = write_big(4, &len);
    pk_doc *doc = NULL;
    const pk_value *l = NULL;
    CHECK(out && pk_parse(out, len, &doc, NULL, 0) == 0 && (l = pk_root(doc)) &&
          pk_seq_len(l) == 20002 && pk_seq_at(l, 20000)->u.str.len == 70000 &&
          pk_seq_at(l, 20001)->kind == PK_BYTES);
    /* walk the frames: each FRAME's length lands on an opcode */
    size_t frames = 0;
    if (out && len > 11 && out[2] == 0x95) {
        size_t p = 2;
        while (p + 9 <= len && out[p] == 0x95) {
            uint64_t flen = ck_le64(out + p + 1);
            frames++;
            p += 9 + flen;
            if (p < len && out[p] != 0x95)
                break; /* a big payload outside frames follows */
        }
    }
    printf("# %zu-byte protocol 4 pickle, %zu leading frames\n", len, frames);
    CHECK(frames >= 2);
    pk_free(doc);
    free(out);
}

/* ---- Python ------------------------------------------------------------- */

static const char py_prelude[] =
    "import collections, io, pickle, pickletools, sys\n"
    "class P:\n"
    "    def __eq__(self, o): return type(o) is P and vars(self) == vars(o)\n"
    "class Stub:\n"
    "    def __new__(cls, *a):\n"
    "        o = object.__new__(cls)\n"
    "        o.args, o.reduced, o.state, o.items, o.dictitems = a, False, None, [], {}\n"
    "        return o\n"
    "    def __init__(self, *a): self.reduced = True\n"
    "    def __setstate__(self, s): self.state = s\n"
    "    def append(self, x): self.items.append(x)\n"
    "    def extend(self, xs): self.items.extend(xs)\n"
    "    def __setitem__(self, k, v): self.dictitems[k] = v\n"
    "class Loader(pickle.Unpickler):\n"
    "    # stand-ins for every class but the few this script really has\n"
    "    def find_class(self, m, n):\n"
    "        if (m, n) in (('_codecs', 'encode'), ('collections', 'OrderedDict'), ('__main__', 'P')):\n"
    "            return super().find_class(m, n)\n"
    "        return type(n, (Stub,), {'path': m + '.' + n})\n"
    "    def persistent_load(self, pid): return ('PERSID', pid)\n"
    "def canon(x):\n"
    "    if isinstance(x, Stub):\n"
    "        return ('OBJ', x.path, 'R' if x.reduced else 'N', canon(x.args), canon(x.state),\n"
    "                canon(x.items), canon(x.dictitems))\n"
    "    if isinstance(x, type) and issubclass(x, Stub): return ('GLOBAL', x.path)\n"
    "    if isinstance(x, tuple): return tuple(canon(i) for i in x)\n"
    "    if isinstance(x, list): return [canon(i) for i in x]\n"
    "    if isinstance(x, dict):\n"
    "        return (type(x).__name__, [(canon(k), canon(v)) for k, v in x.items()])\n"
    "    if isinstance(x, P): return ('P', canon(vars(x)))\n"
    "    return x\n"
    "def load(path):\n"
    "    data = open(path, 'rb').read()\n"
    "    pickletools.dis(data, out=io.StringIO())  # checks stack and memo use\n"
    "    return data, canon(Loader(io.BytesIO(data)).load())\n"
    "def same(a, b):\n"
    "    if a != b:\n"
    "        print('got ', repr(a)[:2000]); print('want', repr(b)[:2000]); sys.exit(1)\n";

static bool have_python(void)
{
    return access(PYTHON, X_OK) == 0;
}

/* Runs prelude + body with the arguments; true on exit status 0. */
static bool run_python(const char *dir, const char *body, const char *args)
{
    char script[512], log[512], cmd[2048];
    snprintf(script, sizeof script, "%s/check.py", dir);
    snprintf(log, sizeof log, "%s/log.txt", dir);
    FILE *f = fopen(script, "w");
    if (!f)
        return false;
    fputs(py_prelude, f);
    fputs(body, f);
    if (fclose(f) != 0)
        return false;
    snprintf(cmd, sizeof cmd, PYTHON " %s %s >%s 2>&1", script, args, log);
    int rc = system(cmd);
    if (rc != 0) {
        size_t n = 0;
        char *text = (char *)slurp(log, &n);
        printf("# python said:\n");
        for (size_t i = 0; text && i < n;) {
            size_t j = i;
            while (j < n && text[j] != '\n')
                j++;
            printf("#   %.*s\n", (int)(j - i), text + i);
            i = j + 1;
        }
        free(text);
    }
    return rc == 0;
}

/* A value that pickle.dumps writes with the same calls: see PY_SAMPLE. */
static void write_sample(pkw *w, bool empty_bytes)
{
    static const int64_t ints[] = { 0, 1, 255, 256, 65535, 65536, -1, -129, INT32_MAX, INT32_MIN,
                                    (int64_t)INT32_MAX + 1, (int64_t)INT32_MIN - 1, INT64_MAX,
                                    INT64_MIN, (int64_t)1 << 40 };
    char x300[301];
    memset(x300, 'x', 300);
    x300[300] = '\0';
    pkw_op(w, PKW_EMPTY_LIST);
    pkw_op(w, PKW_MARK);
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        pkw_int(w, ints[i]);
    pkw_float(w, 0.5);
    pkw_float(w, -1e300);
    pkw_float(w, HUGE_VAL);
    pkw_str(w, "a");
    pkw_str(w, "a");
    pkw_str(w, "h\xc3\xa9llo");
    pkw_str(w, "");
    pkw_str(w, x300);
    pkw_bytes(w, "\x00\xff", 2);
    if (empty_bytes)
        pkw_bytes(w, "", 0);
    pkw_none(w);
    pkw_bool(w, 1);
    pkw_bool(w, 0);
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_int(w, 1);
    pkw_op(w, PKW_TUPLE1);
    pkw_int(w, 1);
    pkw_int(w, 2);
    pkw_op(w, PKW_TUPLE2);
    pkw_int(w, 1);
    pkw_int(w, 2);
    pkw_int(w, 3);
    pkw_op(w, PKW_TUPLE3);
    pkw_op(w, PKW_MARK);
    for (int i = 1; i <= 4; i++)
        pkw_int(w, i);
    pkw_op(w, PKW_TUPLE);
    pkw_op(w, PKW_EMPTY_LIST);
    pkw_op(w, PKW_EMPTY_LIST);
    pkw_str(w, "q");
    pkw_op(w, PKW_APPEND);
    pkw_op(w, PKW_EMPTY_DICT);
    pkw_op(w, PKW_EMPTY_DICT);
    pkw_str(w, "k");
    pkw_int(w, 1);
    pkw_op(w, PKW_SETITEM);
    pkw_op(w, PKW_EMPTY_DICT);
    pkw_op(w, PKW_MARK);
    pkw_str(w, "k2");
    pkw_int(w, 2);
    pkw_str(w, "k3");
    pkw_int(w, 3);
    pkw_op(w, PKW_SETITEMS);
    pkw_global(w, "collections", "OrderedDict");
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_REDUCE);
    pkw_global(w, "collections", "OrderedDict");
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_REDUCE);
    pkw_str(w, "od");
    pkw_int(w, 1);
    pkw_op(w, PKW_SETITEM);
    pkw_global(w, "__main__", "P"); /* copyreg.__newobj__ form */
    pkw_op(w, PKW_EMPTY_TUPLE);
    pkw_op(w, PKW_NEWOBJ);
    pkw_op(w, PKW_EMPTY_DICT);
    pkw_str(w, "x");
    pkw_int(w, 1);
    pkw_op(w, PKW_SETITEM);
    pkw_op(w, PKW_BUILD);
    pkw_op(w, PKW_APPENDS);
}

#define PY_SAMPLE                                                                          \
    "def sample(empty_bytes):\n"                                                           \
    "    p = P(); p.x = 1\n"                                                               \
    "    return ([0, 1, 255, 256, 65535, 65536, -1, -129, 2**31 - 1, -2**31, 2**31,\n"      \
    "             -2**31 - 1, 2**63 - 1, -2**63, 2**40, 0.5, -1e300, float('inf'),\n"     \
    "             'a', 'a', 'h\\u00e9llo', '', 'x' * 300, b'\\x00\\xff'] +\n"             \
    "            ([b''] if empty_bytes else []) +\n"                                        \
    "            [None, True, False, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], ['q'],\n" \
    "             {}, {'k': 1}, {'k2': 2, 'k3': 3}, collections.OrderedDict(),\n"           \
    "             collections.OrderedDict([('od', 1)]), p])\n"

static void test_python(void)
{
    if (!have_python()) {
        check_report(1, "python checks # skip: no " PYTHON, __FILE__, __LINE__);
        return;
    }
    char dir[] = "/tmp/ckptfs_pkw_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512], args[1024];
    size_t len = 0;
    uint8_t *out;

    /* 1. plain values, OrderedDict and a __main__ class: the very bytes
     *    pickle.dumps writes, and pickle.loads reads them back. */
    for (int proto = 2; proto <= 4; proto += 2) {
        for (int empty = 0; empty <= 1; empty++) {
            pkw *w = pkw_new(proto);
            write_sample(w, empty);
            out = finish(w, &len);
            snprintf(path, sizeof path, "%s/sample.pkl", dir);
            CHECK(out && write_file(path, out, len) == 0);
            free(out);
            /* Python writes b'' as bytes() in protocol 2, we as _codecs.encode:
             * only compare bytes where there is no empty bytes. */
            snprintf(args, sizeof args, "%s %d %d", path, proto, empty);
            bool ok = run_python(dir,
                                 PY_SAMPLE
                                 "data = open(sys.argv[1], 'rb').read()\n"
                                 "proto, empty = int(sys.argv[2]), int(sys.argv[3])\n"
                                 "pickletools.dis(data, out=io.StringIO())\n"
                                 "same(pickle.loads(data), sample(empty))\n"
                                 "if not empty and data != pickle.dumps(sample(0), protocol=proto):\n"
                                 "    pickletools.dis(data); pickletools.dis(pickle.dumps(sample(0), protocol=proto))\n"
                                 "    sys.exit(1)\n",
                                 args);
            char what[96];
            snprintf(what, sizeof what, "protocol %d sample%s %s pickle.dumps", proto,
                     empty ? " with b''" : "", empty ? "loads like" : "is byte-identical to");
            check_report(ok, what, __FILE__, __LINE__);
        }
    }

    /* 2. a tensor rebuild call through stand-in classes */
    {
        pkw *w = pkw_new(2);
        write_i8_rebuild(w);
        out = finish(w, &len);
        snprintf(path, sizeof path, "%s/data.pkl", dir);
        CHECK(out && write_file(path, out, len) == 0);
        free(out);
        bool ok = run_python(dir,
                         "data, got = load(sys.argv[1])\n"
                         "same(got, ('OBJ', 'torch._utils._rebuild_tensor_v2', 'R',\n"
                         "  (('PERSID', ('storage', ('GLOBAL', 'torch.CharStorage'), '0', 'cpu', 10)),\n"
                         "   0, (10,), (1,), False, ('OrderedDict', [])),\n"
                         "  None, [], ('dict', [])))\n",
                         path);
        check_report(ok, "python reads the int8 rebuild call with stand-in classes", __FILE__,
                     __LINE__);
    }

    /* 3. the real .metadata re-written with both protocols loads in Python
     *    exactly like the one torch wrote */
    {
        size_t mlen = 0;
        uint8_t *meta = slurp(FIX "dcp_single/.metadata", &mlen);
        pk_doc *doc = NULL;
        CHECK(meta && pk_parse(meta, mlen, &doc, NULL, 0) == 0);
        for (int proto = 2; doc && proto <= 4; proto += 2) {
            out = reemit(pk_root(doc), proto, &len);
            snprintf(path, sizeof path, "%s/metadata.pkl", dir);
            CHECK(out && write_file(path, out, len) == 0);
            free(out);
            snprintf(args, sizeof args, "%s " FIX "dcp_single/.metadata", path);
            bool ok = run_python(dir,
                                 "ours, a = load(sys.argv[1])\n"
                                 "theirs, b = load(sys.argv[2])\n"
                                 "same(a, b)\n",
                                 args);
            char what[96];
            snprintf(what, sizeof what, "protocol %d re-write of .metadata loads like torch's",
                     proto);
            check_report(ok, what, __FILE__, __LINE__);
        }
        pk_free(doc);
        free(meta);
    }

    /* 4. over 64 KiB: Python loads it; and (same frames) byte-identical */
    {
        out = write_big(4, &len);
        snprintf(path, sizeof path, "%s/big.pkl", dir);
        CHECK(out && write_file(path, out, len) == 0);
        free(out);
        bool ok = run_python(dir,
                         "data = open(sys.argv[1], 'rb').read()\n"
                         "want = ['s%05d' % i for i in range(20000)] + ['y' * 70000, b'z' * 70000]\n"
                         "same(pickle.loads(data), want)\n"
                         "ref = pickle.dumps(want, protocol=4)\n"
                         "if data != ref:\n"
                         "    print('frames differ from pickle.dumps', len(data), len(ref)); sys.exit(1)\n",
                         path);
        check_report(ok, "protocol 4 over 64 KiB is byte-identical to pickle.dumps (frames)",
                     __FILE__, __LINE__);
    }

    snprintf(args, sizeof args, "rm -rf '%s'", dir);
    CHECK(system(args) == 0);
}

int main(void)
{
    test_i8_matches_torch();
    test_reemit_data_pkls("dcp_single_perfile");
    test_reemit_data_pkls("dcp_dtensor_ws4_perfile");
    const char *metas[] = { "dcp_single", "dcp_single_perfile", "dcp_zstd", "dcp_dtensor_ws4",
                            "dcp_dtensor_ws4_perfile", "dcp_fsdp2_optim" };
    for (size_t i = 0; i < sizeof metas / sizeof metas[0]; i++)
        test_reemit_metadata(metas[i]);
    test_encodings();
    test_writer_errors();
    test_big();
    test_python();
    return check_done();
}
