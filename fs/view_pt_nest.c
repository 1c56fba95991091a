/* Paths and the nested dict of a .pt view (see view_pt_nest.h). */
#include "view_pt_nest.h"
#include "grow.h"
#include "hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PT_MAX_LIST_INDEX (1u << 24)

static bool elem_eq(const fs_pt_elem *a, const fs_pt_elem *b)
{
    if (a->is_int != b->is_int)
        return false;
    return a->is_int ? a->i == b->i : a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
}

static size_t count_dots(const char *s, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += s[i] == '.';
    return d;
}

/* Whether k's planner path joins with '.' to its FQN, as DCP's flatten
 * makes it. */
static bool path_spells_fqn(const ck_key *k)
{
    const char *fqn = k->fqn;
    size_t pos = 0;
    for (uint32_t j = 0; j < k->planner_path_len; j++) {
        size_t n = strlen(k->planner_path[j]);
        if (strncmp(fqn + pos, k->planner_path[j], n) != 0)
            return false;
        pos += n;
        if (j + 1 < k->planner_path_len && fqn[pos++] != '.')
            return false;
    }
    return fqn[pos] == '\0';
}

/* The key's path inside DIR (depth components deep).  The whole checkpoint
 * (depth 0) takes the planner path as it is, as DCP's loader does; below
 * it, DIR's components can be taken off only a path that spells the FQN.
 * Otherwise: the FQN relative to DIR as one str. */
size_t fs_pt_rel_path(const ck_key *k, size_t depth, fs_pt_elem *out)
{
    const char *fqn = k->fqn;
    bool usable = k->planner_path && k->planner_path_len > 0 &&
                  k->planner_path_len <= FS_PT_MAX_PATH && (depth == 0 || path_spells_fqn(k));
    if (!usable) {
        const char *p = fqn;
        for (size_t i = 0; i < depth && p; i++) {
            p = strchr(p, '.');
            p = p ? p + 1 : NULL;
        }
        out[0] = (fs_pt_elem){ .s = p ? p : fqn, .len = strlen(p ? p : fqn) };
        return 1;
    }
    size_t n = 0, skip = depth;
    for (uint32_t j = 0; j < k->planner_path_len; j++) {
        const char *s = k->planner_path[j];
        size_t len = strlen(s);
        size_t comps = 1 + count_dots(s, len);
        if (skip >= comps) {
            skip -= comps;
            continue;
        }
        if (skip > 0) { /* DIR ends inside this element: keep what follows */
            for (; skip > 0; skip--) {
                const char *dot = memchr(s, '.', len);
                len -= (size_t)(dot + 1 - s);
                s = dot + 1;
            }
            out[n++] = (fs_pt_elem){ .s = s, .len = len };
            continue;
        }
        if (k->planner_path_is_int && k->planner_path_is_int[j])
            out[n++] = (fs_pt_elem){ .is_int = true, .i = strtoll(s, NULL, 10) };
        else
            out[n++] = (fs_pt_elem){ .s = s, .len = len };
    }
    if (n == 0) { /* cannot happen for a key below DIR */
        out[0] = (fs_pt_elem){ .s = fqn, .len = strlen(fqn) };
        n = 1;
    }
    return n;
}

/* ---- the nested state dict ---- */

/* (dict, key) -> child, so a dict of 100,000 keys is not searched linearly. */
struct fs_pt_map_entry {
    const fs_pt_node *parent;
    fs_pt_elem key;
    fs_pt_node *child;
};
typedef struct fs_pt_map_entry map_entry;

static uint64_t elem_hash(const fs_pt_node *parent, const fs_pt_elem *e)
{
    uint64_t h = CK_FNV1A_OFFSET ^ (uint64_t)(uintptr_t)parent;
    if (e->is_int) {
        h = (h ^ (uint64_t)e->i) * CK_FNV1A_PRIME;
        return h ^ 0x5bd1e995u;
    }
    return ck_fnv1a_update(h, e->s, e->len);
}

static map_entry *map_slot(fs_pt_nest *t, const fs_pt_node *parent, const fs_pt_elem *e)
{
    size_t mask = t->mapcap - 1;
    for (size_t i = (size_t)elem_hash(parent, e) & mask;; i = (i + 1) & mask) {
        map_entry *m = &t->map[i];
        if (!m->parent || (m->parent == parent && elem_eq(&m->key, e)))
            return m;
    }
}

static fs_pt_node *map_get(fs_pt_nest *t, const fs_pt_node *parent, const fs_pt_elem *e)
{
    return t->mapcap ? map_slot(t, parent, e)->child : NULL;
}

static int map_put(fs_pt_nest *t, const fs_pt_node *parent, const fs_pt_elem *e, fs_pt_node *child)
{
    if ((t->maplen + 1) * 2 > t->mapcap) {
        size_t ncap = t->mapcap ? t->mapcap * 2 : 256;
        map_entry *old = t->map;
        size_t ocap = t->mapcap;
        if (!(t->map = calloc(ncap, sizeof *t->map))) {
            t->map = old;
            return -ENOMEM;
        }
        t->mapcap = ncap;
        for (size_t i = 0; i < ocap; i++)
            if (old[i].parent)
                *map_slot(t, old[i].parent, &old[i].key) = old[i];
        free(old);
    }
    *map_slot(t, parent, e) = (map_entry){ parent, *e, child };
    t->maplen++;
    return 0;
}

fs_pt_node *fs_pt_node_new(fs_pt_nest *t, int kind)
{
    fs_pt_node **v = ck_grow(t->nodes, &t->capnodes, t->nnodes + 1, sizeof *v, 64);
    if (!v)
        return NULL;
    t->nodes = v;
    fs_pt_node *n = calloc(1, sizeof *n);
    if (n) {
        n->kind = kind;
        t->nodes[t->nnodes++] = n;
    }
    return n;
}

static int slots_reserve(fs_pt_node *n, size_t want)
{
    if (want <= n->cap)
        return 0;
    size_t nc = n->cap ? n->cap : 8;
    while (nc < want)
        nc *= 2;
    fs_pt_slot *s = realloc(n->slots, nc * sizeof *s);
    if (!s)
        return -ENOMEM;
    memset(s + n->cap, 0, (nc - n->cap) * sizeof *s);
    n->slots = s;
    n->cap = nc;
    return 0;
}

static int dict_add(fs_pt_nest *t, fs_pt_node *d, const fs_pt_elem *k, fs_pt_node *v)
{
    int rc = slots_reserve(d, d->n + 1);
    if (!rc)
        rc = map_put(t, d, k, v);
    if (!rc)
        d->slots[d->n++] = (fs_pt_slot){ *k, v };
    return rc;
}

/* The list slot for index i, grown with None; NULL for an index that is not
 * a list index we accept. */
static fs_pt_slot *list_at(fs_pt_node *l, const fs_pt_elem *k, int *rc)
{
    *rc = 0;
    if (!k->is_int || k->i < 0 || k->i >= (int64_t)PT_MAX_LIST_INDEX)
        return NULL;
    size_t i = (size_t)k->i;
    if ((*rc = slots_reserve(l, i + 1)) != 0)
        return NULL;
    if (l->n <= i)
        l->n = i + 1;
    return &l->slots[i];
}

/* _traverse.set_element.  Returns 0, 1 if the path collides with another
 * key's (the key is left out), or -ENOMEM. */
int fs_pt_nest_set(fs_pt_nest *t, fs_pt_node *root, const fs_pt_elem *p, size_t n, fs_pt_node *leaf)
{
    fs_pt_node *cur = root;
    int rc;
    /* refuse a list index out of bounds before anything is made for it */
    for (size_t i = 1; i < n; i++)
        if (p[i].is_int && (p[i].i < 0 || p[i].i >= (int64_t)PT_MAX_LIST_INDEX))
            return 1;
    for (size_t i = 1; i < n; i++) {
        int want = p[i].is_int ? FS_PT_LIST : FS_PT_DICT;
        fs_pt_node *child;
        if (cur->kind == FS_PT_DICT) {
            child = map_get(t, cur, &p[i - 1]);
            if (!child) {
                if (!(child = fs_pt_node_new(t, want)))
                    return -ENOMEM;
                if ((rc = dict_add(t, cur, &p[i - 1], child)) != 0)
                    return rc;
            }
        } else {
            fs_pt_slot *s = list_at(cur, &p[i - 1], &rc);
            if (!s)
                return rc ? rc : 1;
            if (!s->val && !(s->val = fs_pt_node_new(t, want)))
                return -ENOMEM;
            child = s->val;
        }
        if (child->kind != FS_PT_DICT && child->kind != FS_PT_LIST)
            return 1; /* a value where a container is needed */
        if (child->kind == FS_PT_LIST && !p[i].is_int)
            return 1; /* Python: list indices must be integers */
        cur = child;
    }
    if (cur->kind == FS_PT_DICT) {
        if (map_get(t, cur, &p[n - 1]))
            return 1;
        return dict_add(t, cur, &p[n - 1], leaf);
    }
    fs_pt_slot *s = list_at(cur, &p[n - 1], &rc);
    if (!s)
        return rc ? rc : 1;
    if (s->val)
        return 1;
    s->val = leaf;
    return 0;
}

void fs_pt_nest_free(fs_pt_nest *t)
{
    for (size_t i = 0; i < t->nnodes; i++) {
        free(t->nodes[i]->slots);
        free(t->nodes[i]);
    }
    free(t->nodes);
    free(t->map);
}
