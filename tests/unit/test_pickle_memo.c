/* The memo prepass of pickle.c: only keys some GET fetches are stored, yet
 * every pickle reads as before -- keys put twice, MEMOIZE numbering after
 * explicit PUTs, GETs before their PUT, and truncations inside arguments. */
#include <errno.h>
#include <string.h>

#include "check.h"
#include "pickle.h"

static int parse(const char *bytes, size_t n, const pk_value **root, pk_doc **doc)
{
    char err[256];
    int rc = pk_parse((const uint8_t *)bytes, n, doc, err, sizeof err);
    *root = rc ? NULL : pk_root(*doc);
    return rc;
}

int main(void)
{
    pk_doc *doc;
    const pk_value *v;
    /* 'a' MEMOIZE (key 0); 'b' BINPUT 5; 'c' MEMOIZE -> key 2, as len(memo) is 2;
     * then BINGET 2, 0, 5 -> ('a', 'b', 'c', 'c', 'a', 'b') */
    static const char p2[] = "\x80\x04(" "\x8c\x01" "a" "\x94" "\x8c\x01" "b" "q\x05"
                             "\x8c\x01" "c" "\x94" "h\x02" "h\x00" "h\x05" "t.";
    CHECK_EQ_INT(parse(p2, sizeof p2 - 1, &v, &doc), 0);
    CHECK_EQ_INT(pk_seq_len(v), 6);
    const char *want[] = { "a", "b", "c", "c", "a", "b" };
    for (size_t i = 0; i < 6; i++)
        CHECK_EQ_STR(pk_as_str(pk_seq_at(v, i)), want[i]);
    pk_free(doc);

    /* a key PUT twice: GET sees the second value; MEMOIZE then numbers 1 */
    static const char p3[] = "\x80\x04(" "\x8c\x01" "x" "q\x00" "\x8c\x01" "y" "q\x00"
                             "\x8c\x01" "z" "\x94" "h\x00" "h\x01" "t.";
    CHECK_EQ_INT(parse(p3, sizeof p3 - 1, &v, &doc), 0);
    CHECK_EQ_INT(pk_seq_len(v), 5);
    CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 3)), "y");
    CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 4)), "z");
    pk_free(doc);

    /* text GET/PUT (protocol 0) */
    static const char p4[] = "(S'q'\np7\ng7\ng7\nt.";
    CHECK_EQ_INT(parse(p4, sizeof p4 - 1, &v, &doc), 0);
    CHECK_EQ_INT(pk_seq_len(v), 3);
    CHECK_EQ_STR(pk_as_str(pk_seq_at(v, 2)), "q");
    pk_free(doc);

    /* a GET before any PUT of its key, and a GET of a key never put */
    static const char p5[] = "\x80\x04" "h\x00" "\x8c\x01" "a" "\x94" ".";
    CHECK_EQ_INT(parse(p5, sizeof p5 - 1, &v, &doc), -EINVAL);
    static const char p6[] = "\x80\x04" "\x8c\x01" "a" "\x94" "h\x03" ".";
    CHECK_EQ_INT(parse(p6, sizeof p6 - 1, &v, &doc), -EINVAL);
    /* a key far beyond those stored */
    static const char p7[] = "\x80\x04" "\x8c\x01" "a" "r\x00\x00\x00\x70" "j\x00\x00\x00\x70" ".";
    CHECK_EQ_INT(parse(p7, sizeof p7 - 1, &v, &doc), -EINVAL);
    /* every truncation of p2 is refused, never read past */
    int bad = 0;
    for (size_t n = 0; n + 1 < sizeof p2 - 1; n++)
        if (parse(p2, n, &v, &doc) == 0) {
            pk_free(doc);
            bad++;
        }
    CHECK_EQ_INT(bad, 0);
    /* a string whose length runs past the end hides a GET from the prepass:
     * the real pass refuses the string first */
    static const char p8[] = "\x80\x04" "\x8c\x01" "a" "\x94" "\x8c\x09" "h\x00" ".";
    CHECK_EQ_INT(parse(p8, sizeof p8 - 1, &v, &doc), -EINVAL);
    return check_done();
}
