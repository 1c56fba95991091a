/* Live sources: noticing a new state and swapping it in (see live.h). */
#include "live.h"
#include "hash.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "notify.h"
#include "snapshot.h"

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* FNV-1a over the identities of dir's .safetensors files, in readdir
 * order folded commutatively (sum of per-file hashes). */
static uint64_t shards_hash(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        struct stat st;
        if (n <= 12 || strcmp(de->d_name + n - 12, ".safetensors") != 0 ||
            fstatat(dirfd(d), de->d_name, &st, 0) != 0)
            continue;
        ck_file_id id;
        ck_file_id_from_stat(&st, &id);
        uint64_t h = ck_fnv1a_str_update(ck_fnv1a(&id, sizeof id), de->d_name);
        sum += h;
    }
    closedir(d);
    return sum;
}

static bool stat_at(const char *dir, const char *name, struct stat *st)
{
    char path[4096];
    int n = name ? snprintf(path, sizeof path, "%s/%s", dir, name)
                 : snprintf(path, sizeof path, "%s", dir);
    return n > 0 && (size_t)n < sizeof path && stat(path, st) == 0;
}

/* dcp: the source is known to be DCP, so only `.metadata` marks it (a
 * missing one is torch between removing the old and renaming the new). */
static void sig_read(const char *dir, bool dcp, fs_sig *sig)
{
    memset(sig, 0, sizeof *sig);
    struct stat st;
    if (stat_at(dir, ".metadata", &st) && S_ISREG(st.st_mode)) {
        sig->ok = true;
    } else if (dcp || !stat_at(dir, NULL, &st)) {
        return;
    } else if (S_ISDIR(st.st_mode)) {
        /* safetensors directory: new or renamed shards change its mtime,
         * save_pretrained rewrites the index */
        struct stat ist;
        if (stat_at(dir, "model.safetensors.index.json", &ist)) {
            ck_file_id_from_stat(&ist, &sig->b);
            sig->bctime = ist.st_ctim;
            sig->has_b = true;
        }
        sig->shards = shards_hash(dir);
        sig->ok = true;
    } else {
        sig->ok = S_ISREG(st.st_mode); /* a .safetensors file */
    }
    if (sig->ok) {
        ck_file_id_from_stat(&st, &sig->a);
        sig->actime = st.st_ctim;
    }
}

void fs_sig_read(const char *dir, fs_sig *sig)
{
    sig_read(dir, false, sig);
}

static bool ts_equal(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool fs_sig_equal(const fs_sig *x, const fs_sig *y)
{
    if (x->ok != y->ok)
        return false;
    if (!x->ok)
        return true;
    if (!ck_file_id_equal(&x->a, &y->a) || !ts_equal(x->actime, y->actime) ||
        x->has_b != y->has_b || x->shards != y->shards)
        return false;
    return !x->has_b || (ck_file_id_equal(&x->b, &y->b) && ts_equal(x->bctime, y->bctime));
}

int fs_source_new(fs_root *root, const char *dir, const char *prefix, fs_mount *cur,
                  const fs_sig *sig, fs_source **out)
{
    fs_source *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->dir = strdup(dir);
    s->prefix = strdup(prefix);
    if (!s->dir || !s->prefix) {
        free(s->dir);
        free(s->prefix);
        free(s);
        return -ENOMEM;
    }
    s->root = root;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->reload_lock, NULL);
    s->cur = cur;
    atomic_init(&s->settled, cur ? cur->gen : 0);
    if (sig)
        s->sig = *sig;
    s->checked_ns = now_ns();
    *out = s;
    return 0;
}

void fs_source_free(fs_source *s)
{
    if (!s)
        return;
    fs_snapshot_unref(s->cur);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->reload_lock);
    free(s->dir);
    free(s->prefix);
    free(s);
}

/* Opens the state the marker sig announces and makes it current.  Caller
 * holds reload_lock.  The old state stays with whoever pinned it. */
static void reload(fs_source *s, const fs_sig *sig)
{
    fs_mount *nm = NULL;
    char err[1024];
    uint64_t gen = atomic_fetch_add(&s->root->next_gen, 1);
    int rc = fs_snapshot_open(&s->root->opts, s->dir, gen, &nm, err, sizeof err);
    pthread_mutex_lock(&s->lock);
    fs_mount *old = NULL;
    if (rc) {
        bool again = s->bad.ok && fs_sig_equal(&s->bad, sig);
        s->bad = *sig;
        pthread_mutex_unlock(&s->lock);
        if (!again && s->cur)
            fprintf(stderr, "ckptfs: %s changed but cannot be opened: %s; still serving the "
                    "previous state\n", s->dir, err);
        else if (!again)
            fprintf(stderr, "ckptfs: %s cannot be opened: %s; not shown until it changes\n",
                    s->dir, err);
        return;
    }
    old = s->cur;
    s->cur = nm;
    s->sig = *sig;
    pthread_mutex_unlock(&s->lock);
    if (old)
        fprintf(stderr, "ckptfs: %s: new checkpoint state (%zu keys) for files opened from now on\n",
                s->dir, nm->ck->nkeys);
    /* queued behind any invalidation of an earlier state (fs_source_drop) */
    fs_notify_snapshot(s->root->notify, s->prefix, old, &s->settled, nm->gen);
    fs_snapshot_unref(old);
}

bool fs_source_drop_idle(fs_source *s)
{
    if (pthread_mutex_trylock(&s->reload_lock) != 0)
        return false;
    pthread_mutex_lock(&s->lock);
    fs_mount *old = NULL;
    /* pins take their reference under s->lock: none can appear meanwhile */
    if (s->cur && atomic_load(&s->cur->refs) == 1) {
        old = s->cur;
        s->cur = NULL;
        memset(&s->sig, 0, sizeof s->sig); /* the next pin opens it again */
    }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&s->reload_lock);
    if (!old)
        return false;
    fs_notify_snapshot(s->root->notify, s->prefix, old, &s->settled, 0);
    fs_snapshot_unref(old);
    return true;
}

bool fs_source_settled(fs_source *s, const fs_mount *m)
{
    return m->gen <= atomic_load(&s->settled);
}

fs_mount *fs_source_pin(fs_source *s, bool force)
{
    uint64_t now = now_ns();
    pthread_mutex_lock(&s->lock);
    bool look = force || !s->cur || now - s->checked_ns >= FS_SOURCE_CHECK_MS * 1000000ull;
    if (look)
        s->checked_ns = now;
    fs_mount *m = fs_snapshot_ref(s->cur);
    bool dcp = m && m->ck->kind != CK_SRC_SAFETENSORS;
    fs_sig have = s->sig, bad = s->bad;
    pthread_mutex_unlock(&s->lock);
    if (!look)
        return m;
    fs_sig sig;
    sig_read(s->dir, dcp, &sig);
    if (!sig.ok || (m && fs_sig_equal(&sig, &have)) || (bad.ok && fs_sig_equal(&sig, &bad)))
        return m;
    /* Requests other than opens do not wait for a reload in progress:
     * they serve the state they found. */
    if (force || !m)
        pthread_mutex_lock(&s->reload_lock);
    else if (pthread_mutex_trylock(&s->reload_lock) != 0)
        return m;
    pthread_mutex_lock(&s->lock);
    bool done = s->cur && fs_sig_equal(&s->sig, &sig);
    pthread_mutex_unlock(&s->lock);
    if (!done)
        reload(s, &sig);
    pthread_mutex_unlock(&s->reload_lock);
    fs_snapshot_unref(m);
    pthread_mutex_lock(&s->lock);
    m = fs_snapshot_ref(s->cur);
    pthread_mutex_unlock(&s->lock);
    return m;
}

void fs_source_drop(fs_source *s)
{
    pthread_mutex_lock(&s->reload_lock);
    pthread_mutex_lock(&s->lock);
    fs_mount *old = s->cur;
    s->cur = NULL;
    memset(&s->sig, 0, sizeof s->sig);
    memset(&s->bad, 0, sizeof s->bad);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&s->reload_lock);
    if (old) {
        fs_notify_snapshot(s->root->notify, s->prefix, old, &s->settled, 0);
        fs_snapshot_unref(old);
    }
}
