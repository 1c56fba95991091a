/* pk_parse_hooked: batches handed to the hook are dropped and their
 * memory reused, while memo values made inside a batch and fetched by a
 * later one still read right (they are copied out), and bad input is
 * refused as without hooks.  The pickles are written by hand here so the
 * expectations do not come from the code under test. */
#include "check.h"
#include "pickle.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *b;
    size_t len, cap;
} buf;

static void put(buf *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2;
        o->b = realloc(o->b, o->cap);
    }
    memcpy(o->b + o->len, p, n);
    o->len += n;
}

static void op(buf *o, uint8_t c)
{
    put(o, &c, 1);
}

static void str(buf *o, const char *s)
{
    op(o, 0x8c); /* SHORT_BINUNICODE */
    op(o, (uint8_t)strlen(s));
    put(o, s, strlen(s));
}

static void i32(buf *o, int32_t v)
{
    op(o, 'J');
    put(o, &v, 4);
}

typedef struct {
    size_t batches, pairs;
    int64_t sum;       /* of all values */
    size_t tagged;     /* values that are tuples whose first item is "tag" */
} seen;

static int hook(void *ctx, const pk_value *target, const pk_batch *b, size_t n, void **opaque)
{
    seen *s = ctx;
    (void)opaque;
    if (target->kind != PK_DICT)
        return PK_HOOK_KEEP;
    s->batches++;
    for (size_t i = 0; i + 1 < n; i += 2) {
        const pk_value *v = pk_batch_at(b, i + 1);
        int64_t x;
        s->pairs++;
        if (v->kind == PK_TUPLE && pk_seq_len(v) == 2) {
            const char *t = pk_as_str(pk_seq_at(v, 0));
            if (t && strcmp(t, "tag") == 0)
                s->tagged++;
            if (!pk_as_int(pk_seq_at(v, 1), &x))
                s->sum += x;
        }
    }
    return PK_HOOK_TAKEN;
}

/* {"k0": ("tag", 0), "k1": ("tag", 1), ...} in SETITEMS batches of 1000,
 * the string "tag" PUT once in the first batch and fetched by BINGET. */
static buf make_dict(size_t nkeys)
{
    buf o = { 0 };
    op(&o, 0x80);
    op(&o, 2);
    op(&o, '}');
    for (size_t at = 0; at < nkeys; at += 1000) {
        op(&o, '(');
        for (size_t i = at; i < nkeys && i < at + 1000; i++) {
            char k[32];
            snprintf(k, sizeof k, "k%zu", i);
            str(&o, k);
            if (i == 0) {
                str(&o, "tag");
                op(&o, 'q'); /* BINPUT 0 */
                op(&o, 0);
            } else {
                op(&o, 'h'); /* BINGET 0 */
                op(&o, 0);
            }
            i32(&o, (int32_t)i);
            op(&o, 0x86); /* TUPLE2 */
        }
        op(&o, 'u');
    }
    op(&o, '.');
    return o;
}

int main(void)
{
    /* many entries: all reach the hook, the memo string survives rewinds */
    size_t nkeys = 250000;
    buf o = make_dict(nkeys);
    seen s = { 0 };
    pk_hooks h = { &s, hook };
    pk_doc *doc = NULL;
    char err[256];
    CHECK_EQ_INT(pk_parse_hooked(o.b, o.len, &h, &doc, err, sizeof err), 0);
    CHECK_EQ_INT(s.batches, (nkeys + 999) / 1000);
    CHECK_EQ_INT(s.pairs, nkeys);
    CHECK_EQ_INT(s.tagged, nkeys);
    CHECK_EQ_INT(s.sum, (int64_t)nkeys * (int64_t)(nkeys - 1) / 2);
    const pk_value *root = pk_root(doc);
    CHECK(root && root->kind == PK_DICT && root->u.dict.len == 0);
    pk_free(doc);

    /* without hooks the same document is a full dict */
    CHECK_EQ_INT(pk_parse(o.b, o.len, &doc, err, sizeof err), 0);
    root = pk_root(doc);
    CHECK(root && root->kind == PK_DICT && root->u.dict.len == nkeys);
    pk_free(doc);

    /* truncated anywhere: refused with the same message as without hooks */
    size_t cuts[] = { 1, 3, 10, o.len / 3, o.len / 2, o.len - 2, o.len - 1 };
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char e1[256] = "", e2[256] = "";
        seen t = { 0 };
        pk_hooks th = { &t, hook };
        int r1 = pk_parse_hooked(o.b, cuts[i], &th, &doc, e1, sizeof e1);
        CHECK(r1 < 0 && doc == NULL);
        int r2 = pk_parse(o.b, cuts[i], &doc, e2, sizeof e2);
        CHECK_EQ_INT(r1, r2);
        CHECK_EQ_STR(e1, e2);
    }

    /* a GET of a memo index that the document never stored, inside a batch
     * after a rewound one, is refused */
    buf bad = { 0 };
    put(&bad, o.b, 3); /* PROTO 2, EMPTY_DICT */
    op(&bad, '(');
    str(&bad, "a");
    str(&bad, "x");
    op(&bad, 'q');
    op(&bad, 0);
    op(&bad, 'u');
    op(&bad, '(');
    str(&bad, "b");
    op(&bad, 'h');
    op(&bad, 0);
    op(&bad, 'h');
    op(&bad, 7);
    op(&bad, 0x86);
    op(&bad, 'u');
    op(&bad, '.');
    seen t = { 0 };
    pk_hooks th = { &t, hook };
    CHECK(pk_parse_hooked(bad.b, bad.len, &th, &doc, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "never stored") != NULL);

    free(o.b);
    free(bad.b);
    return check_done();
}
