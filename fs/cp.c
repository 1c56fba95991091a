/* ckptfs cp (see cp.h).
 *
 * What is copied is what a mount shows: a directory holds the names
 * readdir lists (with -o npy the NAME.npy views of tensors), /.ckptfs and
 * other view directories list their views, every file's bytes are those a
 * read through the mount returns.  The copy is planned first (every file,
 * its size), so the progress bar knows the total and a bad SOURCE or PATH
 * fails before anything is written.
 *
 * DEST as cp(1) has it: an existing directory receives SOURCE's last
 * component, anything else is the new name.  Each file is written to a
 * temporary name beside its final one and renamed only once complete, so
 * an error or a signal never leaves a partial file under the final name
 * (the temporary one is removed). */
#include "cp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chunk_reader.h"
#include "fd_io.h"
#include "mount.h"
#include "snapshot.h"
#include "views.h"

#define CP_BUF (4u << 20)
#define CKPTFS_DIR_NAME ".ckptfs"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    interrupted = sig;
}

/* ---- what is copied ---- */

typedef struct {
    char *src;  /* path inside the mount ("/model/w") */
    char *dest; /* where it goes */
    bool is_dir;
    uint64_t size;
} cp_item;

typedef struct {
    cp_item *v;
    size_t n, cap;
    uint64_t total;
} cp_plan;

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    bool slash = la && a[la - 1] != '/';
    char *s = malloc(la + slash + lb + 1);
    if (s) {
        memcpy(s, a, la);
        if (slash)
            s[la] = '/';
        memcpy(s + la + slash, b, lb + 1);
    }
    return s;
}

static int plan_push(cp_plan *p, const char *src, const char *dest, bool is_dir, uint64_t size)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        cp_item *v = realloc(p->v, nc * sizeof *v);
        if (!v)
            return -ENOMEM;
        p->v = v;
        p->cap = nc;
    }
    cp_item *it = &p->v[p->n];
    it->src = strdup(src);
    it->dest = strdup(dest);
    if (!it->src || !it->dest) {
        free(it->src);
        free(it->dest);
        return -ENOMEM;
    }
    it->is_dir = is_dir;
    it->size = size;
    p->n++;
    p->total += size;
    return 0;
}

static void plan_free(cp_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].src);
        free(p->v[i].dest);
    }
    free(p->v);
}

/* What a path names, as the daemon's getattr/open resolve it: a tree node,
 * else a view. */
typedef struct {
    fs_node *node;
    fs_view *view;
} cp_entry;

static int resolve(fs_mount *m, const char *path, cp_entry *e)
{
    e->view = NULL;
    if ((e->node = fs_tree_lookup(m->tree, path)))
        return 0;
    return fs_view_lookup(m, path, &e->view);
}

static bool entry_is_dir(const cp_entry *e)
{
    return e->node ? e->node->is_dir : fs_view_is_dir(e->view);
}

static int entry_size(fs_mount *m, const cp_entry *e, uint64_t *size)
{
    *size = 0;
    if (e->view)
        *size = fs_view_size(e->view);
    else if (!e->node->is_dir)
        return e->node->key ? ck_key_size(m->ck, e->node->key, size) : -EIO;
    return 0;
}

typedef struct {
    char **names;
    size_t n, cap;
} name_vec;

static int name_add(void *ctx, const char *name)
{
    name_vec *nv = ctx;
    if (nv->n == nv->cap) {
        size_t nc = nv->cap ? nv->cap * 2 : 16;
        char **v = realloc(nv->names, nc * sizeof *v);
        if (!v)
            return -ENOMEM;
        nv->names = v;
        nv->cap = nc;
    }
    if (!(nv->names[nv->n] = strdup(name)))
        return -ENOMEM;
    nv->n++;
    return 0;
}

static void names_free(name_vec *nv)
{
    for (size_t i = 0; i < nv->n; i++)
        free(nv->names[i]);
    free(nv->names);
}

/* The names readdir lists for a directory (op_readdir's rules). */
static int list_dir(fs_mount *m, const cp_entry *e, name_vec *out)
{
    if (e->view)
        return fs_view_list(m, e->view, name_add, out);
    char name[1100];
    for (size_t i = 0; i < e->node->nchildren; i++) {
        const fs_node *c = e->node->children[i];
        const char *shown = c->name;
        if (m->opts.npy && !c->is_dir && c->key && c->key->kind == CK_KEY_TENSOR &&
            fs_view_npy_name(c->name, name, sizeof name) == 0)
            shown = name;
        int rc = name_add(out, shown);
        if (rc)
            return rc;
    }
    return 0;
}

static void report(const char *spec_src, const char *path, int rc)
{
    fprintf(stderr, "ckptfs: cp: %s:%s: %s\n", spec_src, path[0] == '/' ? path + 1 : path,
            strerror(-rc));
}

/* Adds path (copied to dest), then everything below it: the plan itself is
 * the work list (each directory, once reached, appends its entries), so
 * however deep the tree, nothing recurses, and every directory comes
 * before what it holds. */
static int plan_one(fs_mount *m, const char *src_name, const char *path, const char *dest,
                    cp_plan *p)
{
    cp_entry e;
    int rc = resolve(m, path, &e);
    if (rc) {
        report(src_name, path, rc);
        return rc;
    }
    uint64_t size = 0;
    bool dir = entry_is_dir(&e);
    if (!dir && (rc = entry_size(m, &e, &size)) != 0)
        report(src_name, path, rc);
    if (e.view)
        fs_view_release(m, e.view);
    return rc ? rc : plan_push(p, path, dest, dir, size);
}

static int plan_tree(fs_mount *m, const char *src_name, const char *path, const char *dest,
                     cp_plan *p)
{
    int rc = plan_one(m, src_name, path, dest, p);
    for (size_t i = 0; !rc && i < p->n; i++) {
        if (!p->v[i].is_dir)
            continue;
        cp_entry e;
        name_vec names = { 0 };
        if ((rc = resolve(m, p->v[i].src, &e)) == 0) {
            rc = list_dir(m, &e, &names);
            if (e.view)
                fs_view_release(m, e.view);
        }
        if (rc)
            report(src_name, p->v[i].src, rc);
        for (size_t k = 0; !rc && k < names.n; k++) {
            /* p->v may move as it grows: join before pushing */
            char *cpath = join(p->v[i].src, names.names[k]);
            char *cdest = join(p->v[i].dest, names.names[k]);
            rc = cpath && cdest ? plan_one(m, src_name, cpath, cdest, p) : -ENOMEM;
            free(cpath);
            free(cdest);
        }
        names_free(&names);
    }
    return rc;
}

/* ---- progress ---- */

typedef struct {
    bool on;
    uint64_t total, done;
    struct timespec start, last;
} progress;

static double since(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static void human(double v, char *out, size_t cap)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static void progress_show(progress *pg, bool final)
{
    if (!pg->on)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (!final && since(&pg->last, &now) < 0.2)
        return;
    pg->last = now;
    double t = since(&pg->start, &now);
    double rate = t > 0 ? (double)pg->done / t : 0;
    char d[32], tot[32], r[32], eta[32] = "--:--";
    human((double)pg->done, d, sizeof d);
    human((double)pg->total, tot, sizeof tot);
    human(rate, r, sizeof r);
    if (rate > 0 && pg->total >= pg->done) {
        unsigned long s = (unsigned long)((double)(pg->total - pg->done) / rate);
        snprintf(eta, sizeof eta, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    }
    int pct = pg->total ? (int)((double)pg->done * 100.0 / (double)pg->total) : 100;
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    fprintf(stderr, "\r[%s] %3d%% %s / %s  %s/s  ETA %s ", bar, pct, d, tot, r, eta);
    if (final)
        fputc('\n', stderr);
}

/* ---- copying ---- */

/* The temporary name beside dest: ".NAME.ckptfs-XXXXXX". */
static char *temp_name(const char *dest)
{
    const char *slash = strrchr(dest, '/');
    size_t dl = slash ? (size_t)(slash + 1 - dest) : 0;
    const char *base = dest + dl;
    char *t = malloc(dl + 1 + strlen(base) + sizeof ".ckptfs-XXXXXX");
    if (t)
        sprintf(t, "%.*s.%s.ckptfs-XXXXXX", (int)dl, dest, base);
    return t;
}

static int copy_file(fs_mount *m, const cp_item *it, uint8_t *buf, mode_t mode, progress *pg,
                     const char **what)
{
    cp_entry e;
    int rc = resolve(m, it->src, &e);
    *what = it->src;
    if (rc)
        return rc;
    char *tmp = temp_name(it->dest);
    int fd = tmp ? mkstemp(tmp) : -1;
    if (fd < 0) {
        rc = tmp ? -errno : -ENOMEM;
        *what = it->dest;
        free(tmp);
        if (e.view)
            fs_view_release(m, e.view);
        return rc;
    }
    for (uint64_t off = 0; !rc && off < it->size;) {
        if (interrupted) {
            rc = -EINTR;
            break;
        }
        size_t want = it->size - off < CP_BUF ? (size_t)(it->size - off) : CP_BUF;
        size_t got = 0;
        rc = e.view ? fs_view_read(m, e.view, off, buf, want, &got)
                    : ck_key_read(m->ck, e.node->key, off, buf, want, &got);
        if (!rc && got != want)
            rc = -EIO; /* shorter than its size said */
        if (rc)
            break;
        if ((rc = ck_write_full(fd, buf, got)) != 0) {
            *what = it->dest;
            break;
        }
        off += got;
        pg->done += got;
        progress_show(pg, false);
    }
    if (e.view)
        fs_view_release(m, e.view);
    /* failures from here on are DEST's */
    int wrc = 0;
    if (!rc && fchmod(fd, mode) != 0)
        wrc = -errno;
    if (close(fd) != 0 && !rc && !wrc)
        wrc = -errno;
    if (!rc && !wrc && rename(tmp, it->dest) != 0)
        wrc = -errno;
    if (wrc) {
        rc = wrc;
        *what = it->dest;
    }
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0777) == 0)
        return 0;
    int err = errno;
    struct stat st;
    if (err == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return -err;
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ckptfs cp [options] SOURCE[:PATH] DEST\n"
            "\n"
            "Copies PATH (default: the whole tree) of checkpoint SOURCE to DEST without a\n"
            "mount: a key file, a directory (always recursively), or a view such as\n"
            "model/layers/0.pt, model/w.npy, .ckptfs/model.pt or .ckptfs/model.safetensors.\n"
            "An existing directory DEST receives PATH's last component.\n"
            "\n"
            "options: -o cache=SIZE, flat, npy and the view options of the daemon\n"
            "(see ckptfs --help); -h, --help.\n");
}

/* Splits "SOURCE[:PATH]": SOURCE is the longest prefix before a ':' that
 * exists (checkpoint paths may hold ':'), else the whole argument. */
static int split_spec(const char *spec, char **source, char **path)
{
    *source = *path = NULL;
    const char *from = spec;
    if (strncmp(spec, "s3://", 5) == 0)
        from = spec + 5; /* a URL's scheme is not the separator */
    const char *cut = NULL;
    struct stat st;
    for (const char *c = strchr(from, ':'); c; c = strchr(c + 1, ':')) {
        char *pre = strndup(spec, (size_t)(c - spec));
        if (!pre)
            return -ENOMEM;
        bool ok = from != spec || stat(pre, &st) == 0;
        free(pre);
        if (ok) {
            cut = c;
            if (from != spec)
                break; /* URLs: the first ':' after the scheme */
        }
    }
    if (cut && stat(spec, &st) == 0 && from == spec)
        cut = NULL; /* the whole argument exists: it is SOURCE */
    *source = cut ? strndup(spec, (size_t)(cut - spec)) : strdup(spec);
    const char *p = cut ? cut + 1 : "";
    while (*p == '/')
        p++;
    size_t n = strlen(p);
    while (n && p[n - 1] == '/')
        n--;
    *path = malloc(n + 2);
    if (!*source || !*path)
        return -ENOMEM;
    (*path)[0] = '/';
    memcpy(*path + 1, p, n);
    (*path)[n + 1] = '\0';
    return 0;
}

/* s's last component, malloc'd ("a/b/" -> "b"). */
static char *last_component(const char *s)
{
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/')
        n--;
    const char *end = s + n;
    const char *p = end;
    while (p > s && p[-1] != '/')
        p--;
    return strndup(p, (size_t)(end - p));
}

int fs_cp_main(int argc, char **argv)
{
    /* -r/-R are what cp users type; directories are always copied whole */
    char **av = calloc((size_t)argc + 1, sizeof *av);
    if (!av)
        return 1;
    int ac = 0;
    for (int i = 0; i < argc; i++)
        if (i == 0 || (strcmp(argv[i], "-r") != 0 && strcmp(argv[i], "-R") != 0))
            av[ac++] = argv[i];
    struct fuse_args args = FUSE_ARGS_INIT(ac, av);
    fs_options opts;
    memset(&opts, 0, sizeof opts);
    fs_mount *m = NULL;
    int status = 1;
    char *source = NULL, *path = NULL, *dest = NULL;
    cp_plan plan = { 0 };
    uint8_t *buf = NULL;
    if (fs_options_parse(&args, &opts) != 0)
        goto out;
    if (opts.show_help) {
        usage(stdout);
        status = 0;
        goto out;
    }
    for (int i = 1; i < args.argc; i++) {
        if (args.argv[i][0] == '-' && args.argv[i][1] != '\0') {
            /* fuse_opt hands unknown -o options back as "-o" "a,b" */
            bool o = strcmp(args.argv[i], "-o") == 0 && i + 1 < args.argc;
            fprintf(stderr, "ckptfs: cp: unknown option '%s%s%s' (see ckptfs cp --help)\n",
                    args.argv[i], o ? " " : "", o ? args.argv[i + 1] : "");
            goto out;
        }
    }
    if (!opts.source || !opts.mountpoint) {
        fprintf(stderr, "usage: ckptfs cp [options] SOURCE[:PATH] DEST (see ckptfs cp --help)\n");
        goto out;
    }
    if (opts.rw || opts.create) {
        fprintf(stderr, "ckptfs: cp: -o rw/create do not apply: cp only reads SOURCE\n");
        goto out;
    }
    if (split_spec(opts.source, &source, &path) != 0)
        goto out;

    /* the daemon's own snapshot: same checkpoint model, tree and views */
    char err[1024] = "";
    int rc = fs_snapshot_open(&opts, source, 0, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        goto out;
    }

    /* DEST: an existing directory receives the last component */
    struct stat st;
    char *name = last_component(strcmp(path, "/") == 0 ? source : path);
    bool into = stat(opts.mountpoint, &st) == 0 && S_ISDIR(st.st_mode);
    dest = !name ? NULL : into ? join(opts.mountpoint, name) : strdup(opts.mountpoint);
    free(name);
    if (!dest)
        goto out;
    if (plan_tree(m, source, path, dest, &plan) != 0)
        goto out;

    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    mode_t um = umask(0);
    umask(um);
    progress pg = { .on = isatty(2), .total = plan.total };
    clock_gettime(CLOCK_MONOTONIC, &pg.start);
    pg.last = pg.start;
    buf = malloc(CP_BUF);
    if (!buf)
        goto out;
    status = 0;
    for (size_t i = 0; i < plan.n && !interrupted; i++) {
        const cp_item *it = &plan.v[i];
        const char *what = it->dest;
        if (it->is_dir) {
            rc = make_dir(it->dest);
        } else {
            rc = copy_file(m, it, buf, 0666 & ~um, &pg, &what);
            if (rc == -EINTR && interrupted)
                break;
        }
        if (rc) {
            if (pg.on)
                fputc('\n', stderr);
            if (what == it->src)
                report(source, it->src, rc);
            else
                fprintf(stderr, "ckptfs: cp: %s: %s\n", what, strerror(-rc));
            status = 1;
            if (it->is_dir)
                break; /* nothing below it can be written */
        }
    }
    progress_show(&pg, true);
    if (interrupted) {
        fprintf(stderr, "ckptfs: cp: interrupted\n");
        status = 128 + interrupted;
    }
out:
    free(buf);
    plan_free(&plan);
    free(dest);
    free(source);
    free(path);
    fs_snapshot_unref(m);
    fuse_opt_free_args(&args);
    fs_options_free(&opts);
    free(av);
    return status;
}
