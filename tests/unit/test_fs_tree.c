/* The path tree (fs/tree.h) without a mount: a real fixture's keys become
 * the paths SPEC's tree rules give, and a hand-made key list covers what
 * the fixtures lack (escaped components, a key that is also a prefix of
 * others, bytes keys, flat mode). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt.h"
#include "tree.h"

#define FIX "tests/fixtures/torch-2.11/"

/* SPEC's rule for a key with no special characters: FQN with '.' as '/'. */
static void fqn_path(const char *fqn, char *out, size_t cap)
{
    snprintf(out, cap, "/%s", fqn);
    for (char *p = out; *p; p++)
        if (*p == '.')
            *p = '/';
}

typedef struct {
    size_t n;
    const fs_node *first;
    size_t stop_after; /* 0: never stop */
} walk_ctx;

static int count_file(void *ctx, const fs_node *file)
{
    walk_ctx *w = ctx;
    if (!w->n)
        w->first = file;
    w->n++;
    return w->stop_after && w->n == w->stop_after ? 7 : 0;
}

static void test_fixture(void)
{
    ck_checkpoint *ck = NULL;
    char err[512] = "";
    int rc = ck_open(FIX "dcp_single", NULL, &ck, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc)
        return;
    fs_tree *t = NULL;
    CHECK_EQ_INT(fs_tree_build(ck, false, &t), 0);
    if (!t) {
        ck_close(ck);
        return;
    }
    /* every key at its FQN path, pointing back at its key */
    size_t found = 0;
    for (size_t i = 0; i < ck->nkeys; i++) {
        char path[1024];
        fqn_path(ck->keys[i].fqn, path, sizeof path);
        fs_node *n = fs_tree_lookup(t, path);
        if (n && !n->is_dir && n->key == &ck->keys[i] && strcmp(n->path, path) == 0)
            found++;
        else
            printf("# %s: not found as %s\n", ck->keys[i].fqn, path);
    }
    CHECK_EQ_INT(found, ck->nkeys);
    CHECK_EQ_INT(ck->nkeys, 21);

    fs_node *wq = fs_tree_lookup(t, "/model/layers/0/attn/wq/weight");
    CHECK(wq && wq->key && strcmp(wq->key->fqn, "model.layers.0.attn.wq.weight") == 0);
    CHECK_EQ_INT(fs_node_depth(wq), 6);
    CHECK_EQ_INT(fs_node_depth(fs_tree_root(t)), 0);
    CHECK(wq && wq->parent && strcmp(wq->parent->path, "/model/layers/0/attn/wq") == 0);

    fs_node *layers = fs_tree_lookup(t, "/model/layers");
    CHECK(layers && layers->is_dir && layers->nchildren == 2);
    if (layers && layers->nchildren == 2) {
        CHECK_EQ_STR(layers->children[0]->name, "0");
        CHECK_EQ_STR(layers->children[1]->name, "1");
    }
    /* the root lists meta, model, step, sorted */
    fs_node *root = fs_tree_root(t);
    CHECK_EQ_INT(root->nchildren, 3);
    if (root->nchildren == 3) {
        CHECK_EQ_STR(root->children[0]->name, "meta");
        CHECK_EQ_STR(root->children[1]->name, "model");
        CHECK_EQ_STR(root->children[2]->name, "step");
        CHECK(!root->children[2]->is_dir && root->children[2]->key->kind == CK_KEY_BYTES);
    }
    CHECK(fs_tree_lookup(t, "/model/layers/2") == NULL);
    CHECK(fs_tree_lookup(t, "/model/embed/weight/x") == NULL);
    CHECK(fs_tree_lookup(t, "/") == root);

    walk_ctx w = { 0 };
    CHECK_EQ_INT(fs_tree_walk_files(root, count_file, &w), 0);
    CHECK_EQ_INT(w.n, ck->nkeys);
    walk_ctx wl = { 0 };
    CHECK_EQ_INT(fs_tree_walk_files(layers, count_file, &wl), 0);
    CHECK_EQ_INT(wl.n, 6); /* 0: wk, wq, w1, norm; 1: wq, w1 */
    CHECK(fs_tree_name_max(t) >= 255);
    fs_tree_free(t);
    ck_close(ck);
}

/* A checkpoint model by hand: only the fields the tree reads (fqn, kind),
 * keys sorted by strcmp as ck_open leaves them. */
static const struct {
    const char *fqn;
    ck_key_kind kind;
} hand[] = {
    { "a.b", CK_KEY_TENSOR },   /* also the prefix of a.b.c: shown as a/b.tensor */
    { "a.b.c", CK_KEY_TENSOR },
    { "e..f", CK_KEY_TENSOR },  /* an empty component: e/%/f */
    { "s.u/v", CK_KEY_TENSOR }, /* '/' in a component: s/u%2Fv */
    { "w%x", CK_KEY_TENSOR },   /* '%': w%25x */
    { "x.y", CK_KEY_BYTES },    /* a bytes key that is a prefix: x/y.bytes */
    { "x.y.z", CK_KEY_TENSOR },
};
#define NHAND (sizeof hand / sizeof hand[0])

static void hand_checkpoint(ck_checkpoint *ck, ck_key *keys)
{
    memset(ck, 0, sizeof *ck);
    memset(keys, 0, NHAND * sizeof *keys);
    for (size_t i = 0; i < NHAND; i++) {
        keys[i].fqn = (char *)hand[i].fqn;
        keys[i].kind = hand[i].kind;
    }
    ck->keys = keys;
    ck->nkeys = NHAND;
}

static const ck_key *key_at(fs_tree *t, const char *path)
{
    fs_node *n = fs_tree_lookup(t, path);
    return n && !n->is_dir ? n->key : NULL;
}

static void test_rules(void)
{
    ck_checkpoint ck;
    ck_key keys[NHAND];
    hand_checkpoint(&ck, keys);
    fs_tree *t = NULL;
    CHECK_EQ_INT(fs_tree_build(&ck, false, &t), 0);
    if (!t)
        return;
    CHECK(key_at(t, "/a/b.tensor") == &keys[0]);
    fs_node *ab = fs_tree_lookup(t, "/a/b");
    CHECK(ab && ab->is_dir && ab->key == NULL);
    CHECK(key_at(t, "/a/b/c") == &keys[1]);
    CHECK(key_at(t, "/e/%/f") == &keys[2]);
    CHECK_EQ_INT(fs_node_depth(fs_tree_lookup(t, "/e/%/f")), 3);
    CHECK(key_at(t, "/s/u%2Fv") == &keys[3]);
    CHECK(fs_tree_lookup(t, "/s/u/v") == NULL);
    CHECK(key_at(t, "/w%25x") == &keys[4]);
    CHECK(key_at(t, "/x/y.bytes") == &keys[5]);
    CHECK(fs_tree_lookup(t, "/x/y.tensor") == NULL);
    CHECK(key_at(t, "/x/y/z") == &keys[6]);
    /* /a lists the directory b before b.tensor (strcmp order) */
    fs_node *a = fs_tree_lookup(t, "/a");
    CHECK(a && a->nchildren == 2);
    if (a && a->nchildren == 2) {
        CHECK_EQ_STR(a->children[0]->name, "b");
        CHECK_EQ_STR(a->children[1]->name, "b.tensor");
    }
    fs_node *root = fs_tree_root(t);
    CHECK_EQ_INT(root->nchildren, 5);
    if (root->nchildren == 5) {
        CHECK_EQ_STR(root->children[3]->name, "w%25x");
        CHECK_EQ_STR(root->children[4]->name, "x");
    }
    /* the walk visits every key once; a non-zero return stops it and is returned */
    walk_ctx w = { 0 };
    CHECK_EQ_INT(fs_tree_walk_files(root, count_file, &w), 0);
    CHECK_EQ_INT(w.n, NHAND);
    walk_ctx wa = { 0 };
    CHECK_EQ_INT(fs_tree_walk_files(a, count_file, &wa), 0);
    CHECK_EQ_INT(wa.n, 2);
    walk_ctx ws = { .stop_after = 3 };
    CHECK_EQ_INT(fs_tree_walk_files(root, count_file, &ws), 7);
    CHECK_EQ_INT(ws.n, 3);
    walk_ctx wf = { 0 };
    fs_node *c = fs_tree_lookup(t, "/a/b/c");
    CHECK_EQ_INT(fs_tree_walk_files(c, count_file, &wf), 0);
    CHECK(wf.n == 1 && wf.first == c);
    fs_tree_free(t);

    /* flat: every key at the root under its escaped FQN, no directories */
    CHECK_EQ_INT(fs_tree_build(&ck, true, &t), 0);
    if (!t)
        return;
    root = fs_tree_root(t);
    CHECK_EQ_INT(root->nchildren, NHAND);
    size_t dirs = 0;
    for (size_t i = 0; i < root->nchildren; i++)
        dirs += root->children[i]->is_dir;
    CHECK_EQ_INT(dirs, 0);
    CHECK(key_at(t, "/a.b") == &keys[0]);
    CHECK(key_at(t, "/a.b.c") == &keys[1]);
    CHECK(key_at(t, "/s.u%2Fv") == &keys[3]);
    CHECK(key_at(t, "/w%25x") == &keys[4]);
    CHECK(key_at(t, "/x.y") == &keys[5]);
    CHECK(fs_tree_lookup(t, "/a") == NULL);
    fs_tree_free(t);
}

/* A deep FQN (one component per level) builds and walks without recursion. */
static void test_deep(void)
{
    enum { DEPTH = 5000 };
    char *fqn = malloc(DEPTH * 2);
    for (size_t i = 0; i < DEPTH; i++) {
        fqn[2 * i] = 'd';
        fqn[2 * i + 1] = '.';
    }
    fqn[DEPTH * 2 - 1] = '\0'; /* "d.d.....d": DEPTH components */
    ck_key key = { .fqn = fqn, .kind = CK_KEY_TENSOR };
    ck_checkpoint ck = { .keys = &key, .nkeys = 1 };
    fs_tree *t = NULL;
    CHECK_EQ_INT(fs_tree_build(&ck, false, &t), 0);
    if (t) {
        walk_ctx w = { 0 };
        CHECK_EQ_INT(fs_tree_walk_files(fs_tree_root(t), count_file, &w), 0);
        CHECK(w.n == 1 && w.first->key == &key);
        CHECK_EQ_INT(w.n ? fs_node_depth(w.first) : 0, DEPTH);
        fs_tree_free(t);
    }
    free(fqn);
}

static void check_escape(const char *in, size_t n, const char *want)
{
    char out[64];
    int rc = fs_escape_component(in, n, out, sizeof out);
    CHECK_EQ_INT(rc, (long long)strlen(want));
    CHECK_EQ_STR(rc >= 0 ? out : NULL, want);
}

static void test_escape(void)
{
    check_escape("weight", 6, "weight");
    check_escape("", 0, "%");
    check_escape(".", 1, "%2E");
    check_escape("..", 2, "%2E%2E");
    check_escape("...", 3, "...");
    check_escape("a%b", 3, "a%25b");
    check_escape("a/b", 3, "a%2Fb");
    check_escape("%/", 2, "%25%2F");
    check_escape("b.tensor", 8, "b.tensor");
    check_escape("abcdef", 3, "abc"); /* n bytes only */
    char small[4];
    CHECK_EQ_INT(fs_escape_component("abcd", 4, small, sizeof small), -ENAMETOOLONG);
    CHECK_EQ_INT(fs_escape_component("a%", 2, small, sizeof small), -ENAMETOOLONG);
    CHECK_EQ_INT(fs_escape_component("abc", 3, small, sizeof small), 3);
}

int main(void)
{
    test_escape();
    test_fixture();
    test_rules();
    test_deep();
    return check_done();
}
