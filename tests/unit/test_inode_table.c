/* The inode table (fs/inode_table.h): numbers the kernel holds for paths,
 * lookup counts, forget, renames and detaching.  inode_table.c is FUSE-free
 * and included whole. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "inode_table.c"

static int path_is(fs_itable *t, uint64_t ino, const char *want)
{
    fs_ipath *p = fs_itable_path(t, ino);
    int ok = p && strcmp(p->s, want) == 0;
    if (!ok)
        printf("#   ino %llu is %s, want %s\n", (unsigned long long)ino, p ? p->s : "(none)", want);
    fs_ipath_put(p);
    return ok;
}

typedef struct {
    fs_itable *t;
    int id;
    int bad;
} worker_arg;

/* Looks up and forgets its own paths and shared ones; every number it gets
 * must name the path it asked for while it holds it. */
static void *worker(void *arg)
{
    worker_arg *w = arg;
    char path[64];
    for (int i = 0; i < 2000; i++) {
        snprintf(path, sizeof path, i % 2 ? "/shared/%d" : "/w%d/%d", i % 2 ? i % 50 : w->id, i);
        uint64_t ino, gen;
        if (fs_itable_lookup(w->t, path, &ino, &gen) != 0) {
            w->bad++;
            continue;
        }
        fs_ipath *p = fs_itable_path(w->t, ino);
        if (!p || strcmp(p->s, path) != 0)
            w->bad++;
        fs_ipath_put(p);
        fs_itable_forget(w->t, ino, 1);
    }
    return NULL;
}

int main(void)
{
    fs_itable *t = NULL;
    CHECK(fs_itable_new(&t) == 0);
    CHECK(path_is(t, FS_ROOT_INO, "/"));
    CHECK_EQ_INT(fs_itable_count(t), 1);

    /* a lookup makes a number from the path; the same path, the same number */
    uint64_t a, ga, a2, g2;
    CHECK(fs_itable_lookup(t, "/model/w", &a, &ga) == 0);
    CHECK(a > FS_ROOT_INO);
    CHECK(path_is(t, a, "/model/w"));
    CHECK(fs_itable_lookup(t, "/model/w", &a2, &g2) == 0);
    CHECK_EQ_INT(a2, a);
    CHECK_EQ_INT(fs_itable_peek(t, "/model/w"), a);
    /* two lookups held: one forget keeps it, the second drops it */
    fs_itable_forget(t, a, 1);
    CHECK(path_is(t, a, "/model/w"));
    fs_itable_forget(t, a, 1);
    CHECK(fs_itable_path(t, a) == NULL);
    CHECK_EQ_INT(fs_itable_count(t), 1);
    /* forgotten and looked up again: the same number (it is the path's) */
    CHECK(fs_itable_lookup(t, "/model/w", &a2, &g2) == 0);
    CHECK_EQ_INT(a2, a);
    /* peek of a path the kernel never held agrees with its later lookup */
    uint64_t peeked = fs_itable_peek(t, "/model/b");
    uint64_t b, gb;
    CHECK(fs_itable_lookup(t, "/model/b", &b, &gb) == 0);
    CHECK_EQ_INT(b, peeked);
    CHECK(b != a);
    /* the root is never counted nor dropped */
    uint64_t r, gr;
    CHECK(fs_itable_lookup(t, "/", &r, &gr) == 0);
    CHECK_EQ_INT(r, FS_ROOT_INO);
    fs_itable_forget(t, FS_ROOT_INO, 5);
    CHECK(path_is(t, FS_ROOT_INO, "/"));

    /* rename of a directory moves the entries under it, numbers kept */
    uint64_t d, gd, f, gf, other, go;
    CHECK(fs_itable_lookup(t, "/model", &d, &gd) == 0);
    CHECK(fs_itable_lookup(t, "/model/sub/x", &f, &gf) == 0);
    CHECK(fs_itable_lookup(t, "/modelx", &other, &go) == 0); /* a sibling sharing the prefix */
    CHECK(fs_itable_rename(t, "/model", "/m2") == 0);
    CHECK(path_is(t, d, "/m2"));
    CHECK(path_is(t, a, "/m2/w"));
    CHECK(path_is(t, f, "/m2/sub/x"));
    CHECK(path_is(t, other, "/modelx"));
    CHECK_EQ_INT(fs_itable_peek(t, "/m2/w"), a);
    /* the old names are free: a new lookup there is a new entry */
    uint64_t n, gn;
    CHECK(fs_itable_lookup(t, "/model/w", &n, &gn) == 0);
    CHECK(n != a);
    /* rename onto an existing name: the target is detached, kept until forgotten */
    CHECK(fs_itable_rename(t, "/m2/w", "/model/w") == 0);
    CHECK(path_is(t, a, "/model/w"));
    CHECK_EQ_INT(fs_itable_peek(t, "/model/w"), a);
    CHECK(path_is(t, n, "/model/w")); /* the replaced file's number still answers */
    fs_itable_forget(t, n, 1);
    CHECK(fs_itable_path(t, n) == NULL);
    CHECK(path_is(t, a, "/model/w"));
    /* unlink detaches: the number lives until its forget, the name is free */
    fs_itable_detach(t, "/model/w");
    CHECK(path_is(t, a, "/model/w"));
    uint64_t again, gag;
    CHECK(fs_itable_lookup(t, "/model/w", &again, &gag) == 0);
    CHECK(again != a);
    fs_itable_forget(t, a, 1);
    CHECK(fs_itable_path(t, a) == NULL);
    CHECK(fs_itable_rename(t, "/", "/x") == -EBUSY);

    /* what the kernel holds under a prefix, with parents' numbers */
    fs_iname *v;
    size_t nv;
    CHECK(fs_itable_list_under(t, "/m2", &v, &nv) == 0);
    int saw_dir = 0, saw_x = 0;
    for (size_t i = 0; i < nv; i++) {
        if (v[i].ino == d && strcmp(v[i].name, "m2") == 0 && v[i].parent == FS_ROOT_INO)
            saw_dir = 1;
        if (v[i].ino == f && strcmp(v[i].name, "x") == 0)
            saw_x = 1;
        CHECK(v[i].ino != other); /* /modelx is not under /m2 */
    }
    CHECK(saw_dir && saw_x);
    fs_inames_free(v, nv);
    CHECK(fs_itable_list_under(t, "", &v, &nv) == 0);
    CHECK_EQ_INT(nv, fs_itable_count(t));
    fs_inames_free(v, nv);

    /* many entries: the tables grow and every number still names its path */
    uint64_t inos[5000];
    char path[64];
    int bad = 0;
    for (int i = 0; i < 5000; i++) {
        snprintf(path, sizeof path, "/many/%d", i);
        uint64_t g;
        if (fs_itable_lookup(t, path, &inos[i], &g) != 0)
            bad++;
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(path, sizeof path, "/many/%d", i);
        fs_ipath *p = fs_itable_path(t, inos[i]);
        if (!p || strcmp(p->s, path) != 0)
            bad++;
        fs_ipath_put(p);
        for (int j = 0; j < i && j < 3; j++)
            if (inos[j] == inos[i])
                bad++;
    }
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < 5000; i++)
        fs_itable_forget(t, inos[i], 1);
    CHECK(fs_itable_path(t, inos[4999]) == NULL);

    /* a path ref outlives a rename that replaced the entry's path */
    uint64_t k, gk;
    CHECK(fs_itable_lookup(t, "/keep", &k, &gk) == 0);
    fs_ipath *held = fs_itable_path(t, k);
    CHECK(fs_itable_rename(t, "/keep", "/kept") == 0);
    CHECK_EQ_STR(held->s, "/keep");
    fs_ipath_put(held);
    CHECK(path_is(t, k, "/kept"));

    /* threads: lookups and forgets of own and shared paths */
    pthread_t th[4];
    worker_arg wa[4];
    for (int i = 0; i < 4; i++) {
        wa[i] = (worker_arg){ t, i, 0 };
        pthread_create(&th[i], NULL, worker, &wa[i]);
    }
    int tbad = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        tbad += wa[i].bad;
    }
    CHECK_EQ_INT(tbad, 0);

    fs_itable_free(t);
    return check_done();
}
