/* view_pt_nest: a key's path inside DIR from its planner_data, and the
 * dict/list tree of torch.distributed.checkpoint's _traverse.set_element.
 * fs/ is not a library, so the one FUSE-free file under test is compiled
 * into this binary. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "view_pt_nest.c"

static ck_key key(char *fqn, char **path, uint8_t *is_int, uint32_t n)
{
    ck_key k;
    memset(&k, 0, sizeof k);
    k.fqn = fqn;
    k.planner_path = path;
    k.planner_path_is_int = is_int;
    k.planner_path_len = n;
    return k;
}

static int elem_is(const fs_pt_elem *e, const char *s)
{
    return !e->is_int && e->len == strlen(s) && memcmp(e->s, s, e->len) == 0;
}

static void test_rel_path(void)
{
    fs_pt_elem out[FS_PT_MAX_PATH];
    char *p1[] = { "model", "layers.0.attn.w" };
    uint8_t i1[] = { 0, 0 };
    ck_key k = key("model.layers.0.attn.w", p1, i1, 2);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 0, out), 2);
    CHECK(elem_is(&out[0], "model") && elem_is(&out[1], "layers.0.attn.w"));
    /* DIR model/layers/0 ends inside the second element */
    CHECK_EQ_INT(fs_pt_rel_path(&k, 3, out), 1);
    CHECK(elem_is(&out[0], "attn.w"));
    CHECK_EQ_INT(fs_pt_rel_path(&k, 1, out), 1);
    CHECK(elem_is(&out[0], "layers.0.attn.w"));

    char *p2[] = { "opt", "state", "0", "exp_avg" };
    uint8_t i2[] = { 0, 0, 1, 0 };
    k = key("opt.state.0.exp_avg", p2, i2, 4);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 2, out), 2);
    CHECK(out[0].is_int && out[0].i == 0 && elem_is(&out[1], "exp_avg"));

    /* a path that does not spell the FQN: as it is for the whole checkpoint
     * (DCP's loader uses it), the relative FQN below; no path: the FQN */
    char *p3[] = { "not", "it" };
    k = key("a.b.c", p3, i1, 2);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 0, out), 2);
    CHECK(elem_is(&out[0], "not") && elem_is(&out[1], "it"));
    CHECK_EQ_INT(fs_pt_rel_path(&k, 1, out), 1);
    CHECK(elem_is(&out[0], "b.c"));
    k = key("a.b.c", NULL, NULL, 0);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 0, out), 1);
    CHECK(elem_is(&out[0], "a.b.c"));
    char *p4[] = { "a", "b" }; /* "a.b" + more: too short */
    k = key("a.b.c", p4, i1, 2);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 1, out), 1);
    CHECK(elem_is(&out[0], "b.c"));
    char *p5[] = { "a", "b.c.d" }; /* longer than the FQN */
    k = key("a.b.c", p5, i1, 2);
    CHECK_EQ_INT(fs_pt_rel_path(&k, 1, out), 1);
    CHECK(elem_is(&out[0], "b.c"));
}

static fs_pt_elem S(const char *s)
{
    return (fs_pt_elem){ .s = s, .len = strlen(s) };
}

static fs_pt_elem I(int64_t i)
{
    return (fs_pt_elem){ .is_int = true, .i = i };
}

static void test_nest(void)
{
    fs_pt_nest t;
    memset(&t, 0, sizeof t);
    fs_pt_node *root = fs_pt_node_new(&t, FS_PT_DICT);
    fs_pt_node *leaf[8];
    for (int i = 0; i < 8; i++) {
        leaf[i] = fs_pt_node_new(&t, FS_PT_TENSOR);
        leaf[i]->leaf = (size_t)i;
    }
    fs_pt_elem a[] = { S("lst"), I(0) };
    fs_pt_elem b[] = { S("lst"), I(2), S("x") };
    fs_pt_elem c[] = { S("lst"), S("y") };            /* str index into a list */
    fs_pt_elem d[] = { S("lst"), I(0), S("z") };      /* a value where a dict is needed */
    fs_pt_elem e[] = { S("lst"), I(2), S("x") };      /* taken */
    fs_pt_elem f[] = { I(3), S("w") };                /* int key at the top: a dict key */
    fs_pt_elem g[] = { S("big"), I(1 << 24) };        /* list index past the bound */
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, a, 2, leaf[0]), 0);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, b, 3, leaf[1]), 0);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, c, 2, leaf[2]), 1);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, d, 3, leaf[3]), 1);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, e, 3, leaf[4]), 1);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, f, 2, leaf[5]), 0);
    CHECK_EQ_INT(fs_pt_nest_set(&t, root, g, 2, leaf[6]), 1);
    CHECK_EQ_INT(root->kind, FS_PT_DICT);
    /* "lst" and 3: nothing was made for the refused index */
    CHECK_EQ_INT(root->n, 2);
    const fs_pt_node *lst = root->slots[0].val;
    CHECK(elem_is(&root->slots[0].key, "lst"));
    CHECK_EQ_INT(lst->kind, FS_PT_LIST);
    CHECK_EQ_INT(lst->n, 3);
    CHECK(lst->slots[0].val == leaf[0]);
    CHECK(lst->slots[1].val == NULL); /* None */
    CHECK_EQ_INT(lst->slots[2].val->kind, FS_PT_DICT);
    CHECK(lst->slots[2].val->slots[0].val == leaf[1]);
    CHECK(root->slots[1].key.is_int && root->slots[1].key.i == 3);
    CHECK_EQ_INT(root->slots[1].val->kind, FS_PT_DICT);

    /* many keys in one dict: found again by hash, not lost on growth */
    fs_pt_node *d2 = fs_pt_node_new(&t, FS_PT_DICT);
    static char names[5000][16];
    int ok = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        fs_pt_elem p[] = { S(names[i]), S("v") };
        fs_pt_node *l = fs_pt_node_new(&t, FS_PT_TENSOR);
        ok &= fs_pt_nest_set(&t, d2, p, 2, l) == 0;
    }
    CHECK(ok);
    CHECK_EQ_INT(d2->n, 5000);
    fs_pt_elem again[] = { S("k4321"), S("v") };
    CHECK_EQ_INT(fs_pt_nest_set(&t, d2, again, 2, leaf[7]), 1);
    fs_pt_nest_free(&t);
}

int main(void)
{
    test_rel_path();
    test_nest();
    return check_done();
}
