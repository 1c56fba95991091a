/* Run directories: which subdirectories are steps, and their sources (see
 * run.h).  Steps are never freed while mounted (a name that went away may
 * come back); a step that went has no state. */
#include "run.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "live.h"
#include "notify.h"

typedef struct {
    char *name;
    fs_source *src;
    bool present;       /* a step on disk when last looked at */
    bool seen;          /* fs_run_list: found in this scan */
    uint64_t used_ns;   /* last request under it */
    struct timespec mtime;
    uint64_t checked_ns;
} run_step;

struct fs_run {
    char *dir;
    fs_root *root;
    pthread_mutex_t lock; /* steps */
    run_step *steps;
    size_t n, cap;
    struct timespec mtime;
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static bool has_safetensors(int dfd)
{
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        found = n > 12 && strcmp(de->d_name + n - 12, ".safetensors") == 0;
    }
    closedir(d);
    return found;
}

/* Is dir/name a step now?  *mtime: what its directory shows. */
static bool is_step(int run_fd, const char *name, struct timespec *mtime)
{
    if (name[0] == '.' || strchr(name, '/'))
        return false;
    struct stat st;
    if (fstatat(run_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
        return false;
    int dfd = openat(run_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return false;
    struct stat mst;
    bool step = false;
    if (fstatat(dfd, ".metadata", &mst, 0) == 0 && S_ISREG(mst.st_mode)) {
        *mtime = mst.st_mtim; /* a DCP checkpoint's mtime is its .metadata's */
        step = true;
    } else if (fstatat(dfd, "model.safetensors.index.json", &mst, 0) == 0 ||
               has_safetensors(dfd)) {
        *mtime = st.st_mtim;
        step = true;
    }
    close(dfd);
    return step;
}

static bool has_any_checkpoint(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    if (fstatat(fd, ".metadata", &st, 0) == 0 || has_safetensors(fd)) {
        close(fd);
        return false; /* a checkpoint itself */
    }
    int dup_fd = dup(fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    bool found = false;
    if (d) {
        struct dirent *de;
        struct timespec mt;
        while (!found && (de = readdir(d)))
            found = is_step(fd, de->d_name, &mt);
        closedir(d);
    } else if (dup_fd >= 0) {
        close(dup_fd);
    }
    close(fd);
    return found;
}

int fs_run_detect(const char *dir)
{
    return has_any_checkpoint(dir) ? 1 : 0;
}

int fs_run_new(fs_root *root, const char *dir, fs_run **out)
{
    fs_run *r = calloc(1, sizeof *r);
    if (!r || !(r->dir = strdup(dir))) {
        free(r);
        return -ENOMEM;
    }
    struct stat st;
    if (stat(dir, &st) == 0)
        r->mtime = st.st_mtim;
    r->root = root;
    pthread_mutex_init(&r->lock, NULL);
    *out = r;
    return 0;
}

void fs_run_free(fs_run *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        fs_source_free(r->steps[i].src);
        free(r->steps[i].name);
    }
    free(r->steps);
    pthread_mutex_destroy(&r->lock);
    free(r->dir);
    free(r);
}

/* Natural order: runs of digits compare as numbers (step_2 < step_10). */
static int natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0')
                a++;
            while (*b == '0')
                b++;
            size_t na = 0, nb = 0;
            while (isdigit((unsigned char)a[na]))
                na++;
            while (isdigit((unsigned char)b[nb]))
                nb++;
            if (na != nb)
                return na < nb ? -1 : 1;
            int c = memcmp(a, b, na);
            if (c)
                return c;
            a += na;
            b += nb;
        } else {
            if (*a != *b)
                return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    if (*a || *b)
        return *a ? 1 : -1;
    return 0;
}

static int step_cmp(const void *x, const void *y)
{
    const run_step *a = x, *b = y;
    int c = natural_cmp(a->name, b->name);
    return c ? c : strcmp(a->name, b->name);
}

/* Caller holds r->lock. */
static run_step *find_step(fs_run *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->steps[i].name, name) == 0)
            return &r->steps[i];
    return NULL;
}

/* Caller holds r->lock; keeps steps sorted. */
static run_step *add_step(fs_run *r, const char *name)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        run_step *s = realloc(r->steps, cap * sizeof *s);
        if (!s)
            return NULL;
        r->steps = s;
        r->cap = cap;
    }
    char dir[4096], prefix[1024];
    int n1 = snprintf(dir, sizeof dir, "%s/%s", r->dir, name);
    int n2 = snprintf(prefix, sizeof prefix, "/%s", name);
    if (n1 < 0 || (size_t)n1 >= sizeof dir || n2 < 0 || (size_t)n2 >= sizeof prefix)
        return NULL;
    run_step st = { .name = strdup(name) };
    if (!st.name || fs_source_new(r->root, dir, prefix, NULL, NULL, &st.src) != 0) {
        free(st.name);
        return NULL;
    }
    r->steps[r->n++] = st;
    qsort(r->steps, r->n, sizeof *r->steps, step_cmp);
    return find_step(r, name);
}

/* Records what is on disk for s now; caller holds r->lock.  A step that
 * went loses its state; the kernel forgets the names of either change. */
static void set_present(fs_run *r, run_step *s, bool present, struct timespec mtime)
{
    s->checked_ns = now_ns();
    s->mtime = mtime;
    if (s->present == present)
        return;
    s->present = present;
    if (!present)
        fs_source_drop(s->src);
    fs_notify_root_entry(r->root->notify, s->name);
}

/* Shown: on disk, and not known to fail to open (a step that failed is
 * tried again once its marker changed). */
static bool shown(run_step *s)
{
    if (!s->present)
        return false;
    pthread_mutex_lock(&s->src->lock);
    bool failed = !s->src->cur && s->src->bad.ok;
    fs_sig bad = s->src->bad;
    pthread_mutex_unlock(&s->src->lock);
    if (!failed)
        return true;
    fs_sig now;
    fs_sig_read(s->src->dir, &now);
    return now.ok && !fs_sig_equal(&now, &bad);
}

static void dir_stat(const struct timespec *mtime, struct stat *st)
{
    memset(st, 0, sizeof *st);
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
    st->st_blksize = FS_DIR_BLKSIZE;
    st->st_uid = getuid();
    st->st_gid = getgid();
    st->st_mtim = st->st_ctim = st->st_atim = *mtime;
}

void fs_run_root_stat(fs_run *r, struct stat *st)
{
    pthread_mutex_lock(&r->lock);
    struct timespec mt = r->mtime;
    pthread_mutex_unlock(&r->lock);
    dir_stat(&mt, st);
}

static bool step_open(run_step *s)
{
    pthread_mutex_lock(&s->src->lock);
    bool open = s->src->cur != NULL;
    pthread_mutex_unlock(&s->src->lock);
    return open;
}

/* Closes idle steps, least recently used first, while more than
 * FS_RUN_OPEN_MAX are open; keep is about to be used.  Caller holds
 * r->lock. */
static void trim(fs_run *r, run_step *keep)
{
    size_t open = 0;
    for (size_t i = 0; i < r->n; i++)
        open += step_open(&r->steps[i]);
    while (open > FS_RUN_OPEN_MAX) {
        run_step *lru = NULL;
        for (size_t i = 0; i < r->n; i++) {
            run_step *s = &r->steps[i];
            if (s != keep && step_open(s) && (!lru || s->used_ns < lru->used_ns))
                lru = s;
        }
        if (!lru || !fs_source_drop_idle(lru->src))
            break; /* the least recently used is in use: keep them all */
        open--;
    }
}

fs_source *fs_run_step(fs_run *r, const char *name, bool force, struct stat *st)
{
    pthread_mutex_lock(&r->lock);
    run_step *s = find_step(r, name);
    if (!s || force || now_ns() - s->checked_ns >= FS_SOURCE_CHECK_MS * 1000000ull) {
        int run_fd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct timespec mt = { 0 };
        bool present = run_fd >= 0 && is_step(run_fd, name, &mt);
        if (run_fd >= 0)
            close(run_fd);
        if (!s && present)
            s = add_step(r, name);
        if (s)
            set_present(r, s, present, mt);
    }
    fs_source *src = NULL;
    if (s && shown(s)) {
        src = s->src;
        s->used_ns = now_ns();
        if (st)
            dir_stat(&s->mtime, st);
        if (!step_open(s))
            trim(r, s); /* may be about to be opened: make room */
    }
    pthread_mutex_unlock(&r->lock);
    return src;
}

int fs_run_list(fs_run *r, int (*fill)(void *ctx, const char *name, const struct stat *st),
                void *ctx)
{
    int run_fd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (run_fd < 0)
        return -errno;
    int dup_fd = dup(run_fd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        close(run_fd);
        return -ENOMEM;
    }
    pthread_mutex_lock(&r->lock);
    struct stat rst;
    if (fstat(run_fd, &rst) == 0)
        r->mtime = rst.st_mtim; /* the root shows the run directory's mtime */
    for (size_t i = 0; i < r->n; i++)
        r->steps[i].seen = false;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct timespec mt;
        if (!is_step(run_fd, de->d_name, &mt))
            continue;
        run_step *s = find_step(r, de->d_name);
        if (!s)
            s = add_step(r, de->d_name);
        if (s) {
            s->seen = true;
            set_present(r, s, true, mt);
        }
    }
    closedir(d);
    close(run_fd);
    int rc = 0;
    for (size_t i = 0; i < r->n; i++) {
        run_step *s = &r->steps[i];
        if (!s->seen && s->present)
            set_present(r, s, false, s->mtime);
    }
    for (size_t i = 0; !rc && i < r->n; i++) {
        struct stat st;
        if (!shown(&r->steps[i]))
            continue;
        dir_stat(&r->steps[i].mtime, &st);
        rc = fill(ctx, r->steps[i].name, &st);
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}
