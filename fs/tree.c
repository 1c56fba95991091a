/* Building the path tree once at mount: directories first (every proper
 * prefix of every key), then files, so a key that collides with a
 * directory is named NAME.tensor/NAME.bytes whatever the key order. */
#include "tree.h"
#include "arena.h"
#include "grow.h"
#include "hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct fs_tree {
    fs_node *root;
    fs_node **slots; /* open-addressing map path -> node */
    size_t cap, count;
    fs_node **all;   /* every node (their children arrays are malloc'd) */
    size_t nall, allcap;
    ck_arena *arena; /* the nodes, their names and paths */
    size_t name_max; /* longest name lookup answers, views included */
};

static uint64_t hash_path(const char *s)
{
    return ck_fnv1a_str(s);
}

/* dir's path joined with name ("/" + name under the root), malloc'd, or
 * from arena when one is given. */
static char *join_path(const char *dir, const char *name, ck_arena *arena)
{
    size_t pl = strcmp(dir, "/") == 0 ? 0 : strlen(dir), nl = strlen(name);
    char *s = arena ? ck_arena_alloc(arena, pl + nl + 2) : malloc(pl + nl + 2);
    if (s) {
        memcpy(s, dir, pl);
        s[pl] = '/';
        memcpy(s + pl + 1, name, nl + 1);
    }
    return s;
}

static int map_grow(fs_tree *t, size_t want)
{
    size_t cap = t->cap ? t->cap * 2 : 1024;
    while (cap < want && cap <= SIZE_MAX / 4 / sizeof *t->slots)
        cap *= 2;
    fs_node **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++) {
        fs_node *n = t->slots[i];
        if (!n)
            continue;
        size_t s = n->hash & (cap - 1);
        while (slots[s])
            s = (s + 1) & (cap - 1);
        slots[s] = n;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

fs_node *fs_tree_lookup(fs_tree *t, const char *path)
{
    size_t s = hash_path(path) & (t->cap - 1);
    while (t->slots[s]) {
        if (strcmp(t->slots[s]->path, path) == 0)
            return t->slots[s];
        s = (s + 1) & (t->cap - 1);
    }
    return NULL;
}

static int map_insert(fs_tree *t, fs_node *n)
{
    if ((t->count + 1) * 2 > t->cap) {
        int rc = map_grow(t, 0);
        if (rc)
            return rc;
    }
    size_t s = n->hash & (t->cap - 1);
    while (t->slots[s])
        s = (s + 1) & (t->cap - 1);
    t->slots[s] = n;
    t->count++;
    return 0;
}

static int add_child(fs_node *dir, fs_node *child)
{
    if (dir->nchildren == dir->cap) {
        size_t cap = dir->cap ? dir->cap * 2 : 8;
        fs_node **c = realloc(dir->children, cap * sizeof *c);
        if (!c)
            return -ENOMEM;
        dir->children = c;
        dir->cap = cap;
    }
    dir->children[dir->nchildren++] = child;
    child->parent = dir;
    return 0;
}

static fs_node *new_node(fs_tree *t, fs_node *parent, const char *name, bool is_dir)
{
    fs_node **a = ck_grow(t->all, &t->allcap, t->nall + 1, sizeof *a, 1024);
    if (!a)
        return NULL;
    t->all = a;
    fs_node *n = ck_arena_alloc(t->arena, sizeof *n);
    if (!n)
        return NULL;
    n->name = ck_arena_strdup(t->arena, name);
    n->path = parent ? join_path(parent->path, name, t->arena) : ck_arena_strdup(t->arena, "/");
    n->is_dir = is_dir;
    t->all[t->nall++] = n;
    if (!n->name || !n->path)
        return NULL;
    n->hash = hash_path(n->path);
    if (parent && (add_child(parent, n) || map_insert(t, n)))
        return NULL;
    return n;
}

int fs_escape_component(const char *s, size_t n, char *out, size_t cap)
{
    const char *lit = NULL;
    if (n == 0)
        lit = "%";
    else if (n == 1 && s[0] == '.')
        lit = "%2E";
    else if (n == 2 && s[0] == '.' && s[1] == '.')
        lit = "%2E%2E";
    if (lit) {
        size_t l = strlen(lit);
        if (l + 1 > cap)
            return -ENAMETOOLONG;
        memcpy(out, lit, l + 1);
        return (int)l;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '%' ? "%25" : s[i] == '/' ? "%2F" : NULL;
        size_t l = rep ? 3 : 1;
        if (o + l + 1 > cap)
            return -ENAMETOOLONG;
        if (rep)
            memcpy(out + o, rep, 3);
        else
            out[o] = s[i];
        o += l;
    }
    out[o] = '\0';
    return (int)o;
}

#define NAME_CAP 1024 /* longer than NAME_MAX so too-long names are caught, not cut */

/* Walks/creates the directories for the first ncomp components of fqn. */
static int ensure_dirs(fs_tree *t, const char *fqn, size_t ncomp, fs_node **out)
{
    fs_node *cur = t->root;
    const char *p = fqn;
    char name[NAME_CAP];
    bool created = false;
    for (size_t i = 0; i < ncomp; i++) {
        const char *dot = strchr(p, '.');
        size_t n = (size_t)(dot - p);
        if (fs_escape_component(p, n, name, sizeof name) < 0)
            return -ENAMETOOLONG;
        fs_node *next = NULL;
        /* the most recent child is the usual match since keys are sorted */
        if (cur->nchildren && strcmp(cur->children[cur->nchildren - 1]->name, name) == 0 &&
            cur->children[cur->nchildren - 1]->is_dir)
            next = cur->children[cur->nchildren - 1];
        /* below a directory this walk created there is nothing to look up */
        if (!next && !created) {
            char *full = join_path(cur->path, name, NULL);
            if (!full)
                return -ENOMEM;
            next = fs_tree_lookup(t, full);
            free(full);
        }
        if (!next) {
            if (!(next = new_node(t, cur, name, true)))
                return -ENOMEM;
            created = true;
        }
        cur = next;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

static size_t count_dots(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '.';
    return n;
}

static int cmp_child(const void *a, const void *b)
{
    return strcmp((*(fs_node *const *)a)->name, (*(fs_node *const *)b)->name);
}

/* Keys come sorted by FQN, so most directories' children already are in
 * name order: one pass finds out, and only the others are sorted. */
static void sort_children(fs_tree *t)
{
    for (size_t i = 0; i < t->nall; i++) {
        fs_node *d = t->all[i];
        if (!d->is_dir || d->nchildren < 2)
            continue;
        size_t j = 1;
        while (j < d->nchildren && cmp_child(&d->children[j - 1], &d->children[j]) <= 0)
            j++;
        if (j < d->nchildren)
            qsort(d->children, d->nchildren, sizeof(fs_node *), cmp_child);
    }
}

/* statfs must not promise less than what is served: every node's name,
 * and the views lookup answers beside them (DIR.safetensors for a
 * directory, PATH.npy for a tensor file).  Never below the usual 255, and
 * never above FUSE's own limit on a name (1024). */
static size_t longest_name(const fs_tree *t)
{
    size_t best = 255;
    for (size_t i = 0; i < t->nall; i++) {
        const fs_node *n = t->all[i];
        size_t len = strlen(n->name);
        if (n->is_dir && n != t->root)
            len += sizeof ".safetensors" - 1;
        else if (n->key && n->key->kind == CK_KEY_TENSOR)
            len += sizeof ".npy" - 1;
        if (len > best)
            best = len;
    }
    return best < NAME_CAP ? best : NAME_CAP;
}

int fs_tree_build(const ck_checkpoint *ck, bool flat, fs_tree **out)
{
    fs_tree *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    /* a map for about a node per key and one more per key's directory */
    size_t want = ck->nkeys < SIZE_MAX / 8 ? 4 * ck->nkeys : 0;
    fs_node **dir_of = flat ? NULL : calloc(ck->nkeys ? ck->nkeys : 1, sizeof *dir_of);
    int rc = (t->arena = ck_arena_new()) && (flat || dir_of) ? map_grow(t, want) : -ENOMEM;
    if (!rc && !(t->root = new_node(t, NULL, "", true)))
        rc = -ENOMEM;
    if (!rc)
        rc = map_insert(t, t->root);
    char name[NAME_CAP + 8];
    /* pass 1: directories, every key's remembered for pass 2 */
    for (size_t i = 0; !rc && !flat && i < ck->nkeys; i++)
        rc = ensure_dirs(t, ck->keys[i].fqn, count_dots(ck->keys[i].fqn), &dir_of[i]);
    /* pass 2: files */
    for (size_t i = 0; !rc && i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        fs_node *dir = flat ? t->root : dir_of[i];
        const char *last = k->fqn;
        if (!flat) {
            const char *dot = strrchr(k->fqn, '.');
            last = dot ? dot + 1 : k->fqn;
        }
        int n = fs_escape_component(last, strlen(last), name, NAME_CAP);
        if (n < 0) {
            rc = n;
            break;
        }
        char *full = join_path(dir->path, name, NULL);
        if (!full) {
            rc = -ENOMEM;
            break;
        }
        fs_node *clash = fs_tree_lookup(t, full);
        free(full);
        if (clash)
            strcat(name, k->kind == CK_KEY_BYTES ? ".bytes" : ".tensor");
        fs_node *f = new_node(t, dir, name, false);
        if (!f) {
            rc = -ENOMEM;
            break;
        }
        f->key = k;
    }
    free(dir_of);
    if (rc) {
        fs_tree_free(t);
        return rc;
    }
    sort_children(t);
    t->name_max = longest_name(t);
    *out = t;
    return 0;
}

size_t fs_tree_name_max(const fs_tree *t)
{
    return t->name_max;
}

fs_node *fs_tree_root(fs_tree *t)
{
    return t->root;
}

void fs_tree_free(fs_tree *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nall; i++)
        free(t->all[i]->children);
    ck_arena_free(t->arena);
    free(t->all);
    free(t->slots);
    free(t);
}

int fs_tree_walk_files(const fs_node *dir, int (*visit)(void *ctx, const fs_node *file),
                       void *ctx)
{
    const fs_node **stack = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    const fs_node *cur = dir;
    for (;;) {
        if (cur->is_dir) {
            for (size_t i = 0; i < cur->nchildren; i++) {
                if (n == cap) {
                    size_t nc = cap ? cap * 2 : 64;
                    const fs_node **st = realloc(stack, nc * sizeof *st);
                    if (!st) {
                        rc = -ENOMEM;
                        goto out;
                    }
                    stack = st;
                    cap = nc;
                }
                stack[n++] = cur->children[i];
            }
        } else if (cur->key && (rc = visit(ctx, cur)) != 0) {
            goto out;
        }
        if (!n)
            break;
        cur = stack[--n];
    }
out:
    free(stack);
    return rc;
}

size_t fs_node_depth(const fs_node *n)
{
    size_t d = 0;
    for (; n && n->parent; n = n->parent)
        d++;
    return d;
}
