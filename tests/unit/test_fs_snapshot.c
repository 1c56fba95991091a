/* Reference-counted snapshots (fs/snapshot.h): readers pin the current
 * snapshot of an rw mount (fs_rw_pin) and use it while a publisher swaps
 * new ones in (fs_rw_publish, as commits do); a snapshot must stay whole while anyone pins it and be freed by
 * whoever drops the last pin.  Built with ASan (make unit): a use after
 * free fails the run, and the allocator's poisoning says whether a
 * snapshot was freed without touching it. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ckpt.h"
#include "chunk_reader.h"
#include "options.h"
#include "snapshot.h"
#include "tree.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define FREED(p) (__asan_address_is_poisoned(p) != 0)
#define HAVE_FREED 1
#else
#define FREED(p) 0
#define HAVE_FREED 0
#endif

#define SRC "tests/fixtures/torch-2.11/dcp_single"
#define KEY "model.embed.weight"
#define READERS 4
#define PUBLISHES 12

static fs_options opts;
static fs_mount *rwm; /* the mount: its cur is the published snapshot */
static _Atomic int stop;
static uint8_t want[2048]; /* model.embed.weight's bytes */

static fs_mount *open_gen(uint64_t gen)
{
    fs_mount *m = NULL;
    char err[512] = "";
    if (fs_snapshot_open(&opts, SRC, gen, &m, err, sizeof err)) {
        printf("# %s\n", err);
        return NULL;
    }
    return m;
}

static fs_mount *pin(void)
{
    return fs_rw_pin(rwm);
}

static void publish(fs_mount *m)
{
    fs_rw_publish(rwm, m);
}

/* A pinned snapshot is whole: its tree finds the key, its checkpoint reads its bytes. */
static int whole(fs_mount *m)
{
    fs_node *n = fs_tree_lookup(m->tree, "/model/embed/weight");
    if (!n || !n->key || strcmp(n->key->fqn, KEY) != 0)
        return 0;
    uint8_t got[2048];
    size_t len = 0;
    return ck_key_read(m->ck, n->key, 0, got, sizeof got, &len) == 0 && len == sizeof got &&
           memcmp(got, want, sizeof got) == 0;
}

typedef struct {
    unsigned pins, broken, backwards;
    uint64_t last_gen;
} reader_stats;

static void *reader(void *arg)
{
    reader_stats *s = arg;
    while (!atomic_load(&stop)) {
        fs_mount *m = pin();
        if (!m)
            continue;
        s->pins++;
        s->broken += !whole(m);
        s->backwards += m->gen < s->last_gen; /* publishes only go forward */
        s->last_gen = m->gen;
        fs_snapshot_unref(m);
    }
    return NULL;
}

static void test_readers_during_publishes(void)
{
    pthread_t th[READERS];
    reader_stats st[READERS];
    memset(st, 0, sizeof st);
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, reader, &st[i]);
    unsigned published = 0;
    for (uint64_t g = 2; g < 2 + PUBLISHES; g++) {
        fs_mount *m = open_gen(g);
        if (m) {
            publish(m);
            published++;
        }
    }
    atomic_store(&stop, 1);
    unsigned pins = 0, broken = 0, backwards = 0;
    for (int i = 0; i < READERS; i++) {
        pthread_join(th[i], NULL);
        pins += st[i].pins;
        broken += st[i].broken;
        backwards += st[i].backwards;
    }
    CHECK_EQ_INT(published, PUBLISHES);
    CHECK(pins > 0);
    CHECK_EQ_INT(broken, 0);
    CHECK_EQ_INT(backwards, 0);
    /* the publisher's last snapshot is current, held by the publisher alone */
    CHECK_EQ_INT(rwm->cur->gen, 1 + PUBLISHES);
    CHECK_EQ_INT(atomic_load(&rwm->cur->refs), 1);
    printf("# %u pins over %u publishes\n", pins, published);
}

/* Several threads pin one snapshot, a new one is published, and they
 * unpin one by one: the old one lives until the last of them. */
static pthread_barrier_t pinned, go;
static fs_mount *held[READERS];
static _Atomic int broken_after_swap;

static void *holder(void *arg)
{
    int i = (int)(intptr_t)arg;
    held[i] = pin();
    pthread_barrier_wait(&pinned);
    pthread_barrier_wait(&go); /* the new snapshot is published */
    if (!whole(held[i]))
        atomic_fetch_add(&broken_after_swap, 1);
    fs_snapshot_unref(held[i]);
    return NULL;
}

static void test_last_pin_frees(void)
{
    fs_mount *old = rwm->cur;
    pthread_t th[READERS];
    pthread_barrier_init(&pinned, NULL, READERS + 1);
    pthread_barrier_init(&go, NULL, READERS + 1);
    for (int i = 0; i < READERS; i++)
        pthread_create(&th[i], NULL, holder, (void *)(intptr_t)i);
    pthread_barrier_wait(&pinned);
    int all_old = 1;
    for (int i = 0; i < READERS; i++)
        all_old &= held[i] == old;
    CHECK(all_old);
    CHECK_EQ_INT(atomic_load(&old->refs), READERS + 1);
    fs_mount *next = open_gen(100);
    CHECK(next != NULL);
    publish(next); /* drops the publisher's reference to old */
    CHECK_EQ_INT(atomic_load(&old->refs), READERS);
    CHECK(!FREED(old));
    CHECK(whole(old));
    {
        /* a pin taken now gets the new snapshot, and leaves old alone */
        fs_mount *m = pin();
        CHECK(m == next && m->gen == 100);
        fs_snapshot_unref(m);
        CHECK_EQ_INT(atomic_load(&old->refs), READERS);
    }
    pthread_barrier_wait(&go);
    for (int i = 0; i < READERS; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ_INT(atomic_load(&broken_after_swap), 0);
    if (HAVE_FREED)
        CHECK(FREED(old));
    else
        printf("# skip: not an ASan build, cannot see that the old snapshot was freed\n");
    CHECK_EQ_INT(atomic_load(&next->refs), 1);
    pthread_barrier_destroy(&pinned);
    pthread_barrier_destroy(&go);
}

/* The reference count itself: ref adds one, unref of the last frees, NULL is a no-op. */
static void test_counts(void)
{
    fs_mount *m = open_gen(7);
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK_EQ_INT(atomic_load(&m->refs), 1);
    CHECK(fs_snapshot_ref(m) == m);
    CHECK(fs_snapshot_ref(m) == m);
    CHECK_EQ_INT(atomic_load(&m->refs), 3);
    fs_snapshot_unref(m);
    fs_snapshot_unref(m);
    CHECK_EQ_INT(atomic_load(&m->refs), 1);
    CHECK(!FREED(m));
    fs_snapshot_unref(m);
    if (HAVE_FREED)
        CHECK(FREED(m));
    CHECK(fs_snapshot_ref(NULL) == NULL);
    fs_snapshot_unref(NULL);
    char err[512] = "";
    fs_mount *bad = NULL;
    CHECK(fs_snapshot_open(&opts, "tests/fixtures/no-such-checkpoint", 1, &bad, err, sizeof err) < 0);
    CHECK(bad == NULL && err[0] != '\0');
}

int main(void)
{
    char *argv[] = { "ckptfs", SRC, "/nonexistent-mountpoint", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    CHECK_EQ_INT(fs_options_parse(&args, &opts), 0);
    fuse_opt_free_args(&args);
    fs_mount *first = open_gen(1);
    CHECK(first != NULL);
    if (!first)
        return check_done();
    /* the bytes every pinned snapshot must serve, from the first one */
    const ck_key *k = ck_find_key(first->ck, KEY);
    size_t len = 0;
    CHECK(k && ck_key_read(first->ck, k, 0, want, sizeof want, &len) == 0 && len == sizeof want);
    /* a snapshot pins itself; the mount pins its current snapshot */
    fs_mount *self = fs_rw_pin(first);
    CHECK(self == first);
    fs_snapshot_unref(self);
    CHECK_EQ_INT(fs_rw_mount_new(first, &rwm), 0);
    CHECK(rwm->ck == NULL && rwm->cur == first);
    fs_mount *p = pin();
    CHECK(p == first);
    fs_snapshot_unref(p);
    test_counts();
    test_readers_during_publishes();
    test_last_pin_frees();
    fs_mount *last = rwm->cur;
    fs_snapshot_unref(rwm); /* the mount drops its snapshot with it */
    if (HAVE_FREED)
        CHECK(FREED(last));
    fs_options_free(&opts);
    return check_done();
}
