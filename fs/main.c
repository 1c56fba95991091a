/* ckptfs: mount a checkpoint.  Everything that can be wrong with SOURCE is
 * found by ck_open before libfuse mounts anything, so a bad checkpoint is one
 * line on stderr and exit status 1, never a half-working mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <fuse_lowlevel.h>

#include "cp.h"
#include "live.h"
#include "notify.h"
#include "ops.h"
#include "page_cache.h"
#include "root.h"
#include "run.h"
#include "snapshot.h"

#ifndef CKPTFS_VERSION
#define CKPTFS_VERSION "0.1.0"
#endif

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    fs_root *r = fuse_get_context()->private_data;
    int rw = r->opts.rw;
    cfg->use_ino = 0;
    /* Read-only: the kernel keeps names and attributes for an hour; a new
     * state of a live checkpoint invalidates what it made stale (notify.h).
     * Pages are kept per open (ops_read.c, page_cache.h), so kernel_cache,
     * which would keep them whatever the open says, stays off.  Names that
     * did not exist are not remembered: a new state or a new step may bring
     * them, and nothing lists the kernel's negative entries for us to
     * invalidate. */
    cfg->kernel_cache = 0;
    /* rw: names and sizes change under open files (commits turn X.npy into
     * X, xattrs give a new file its size), so the kernel asks every time */
    cfg->entry_timeout = rw ? 0.0 : 3600.0;
    cfg->attr_timeout = rw ? 0.0 : 3600.0;
    cfg->negative_timeout = 0.0;
    /* rw: an unlinked open file must not be renamed to .fuse_hidden*, which
     * would commit a key of that name (ops_write.c) */
    cfg->hard_remove = rw;
    /* No splice for replies.  The high-level API cannot choose per reply,
     * and with splice on, every reply assembled in memory (column-sharded
     * rows, zstd chunks) is written into a pipe and spliced again: measured
     * on 512 MiB, column-sharded first reads took 0.86 s with splice and
     * 0.36 s without; row-sharded ones, whose runs could be spliced from the
     * shard file, 0.23 s with and 0.26 s without.  fd buffers still spare us
     * a copy: libfuse preads them straight into the reply. */
    conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ);
    if (conn->capable & FUSE_CAP_ASYNC_READ)
        conn->want |= FUSE_CAP_ASYNC_READ;
    conn->max_readahead = 1u << 20;
    if (!rw && fs_notifier_start(fuse_get_context()->fuse, &r->notify) != 0)
        fprintf(stderr, "ckptfs: cannot start the invalidation thread: kernel entries of "
                "replaced states expire on their own\n");
    return r;
}

/* Shard-per-item checkpoints can have thousands of files kept open. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* fuse_main, spelled out so the loop gets its settings from us. */
static int run_fuse(struct fuse_args *args, const struct fuse_operations *ops, fs_root *m)
{
    struct fuse_cmdline_opts co;
    if (fuse_parse_cmdline(args, &co) != 0)
        return 1;
    int rc = 1;
    struct fuse *f = fuse_new(args, ops, sizeof *ops, m);
    if (!f)
        goto out;
    if (fuse_mount(f, co.mountpoint) != 0)
        goto out_destroy;
    if (fuse_daemonize(co.foreground) != 0)
        goto out_unmount;
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0)
        goto out_unmount;
    rc = co.singlethread ? fuse_loop(f) : fuse_loop_mt(f, co.clone_fd);
    rc = rc < 0 ? 1 : 0; /* a positive value is the signal that ended the loop: a clean exit */
    /* No request runs now; the notifier goes before libfuse frees the
     * node table it invalidates through. */
    fs_notifier_stop(m->notify);
    m->notify = NULL;
    fuse_remove_signal_handlers(se);
out_unmount:
    fuse_unmount(f);
out_destroy:
    fuse_destroy(f);
out:
    free(co.mountpoint);
    return rc;
}

/* Opens SOURCE: the rw mount, a live read-only checkpoint, or a run
 * directory (run.h; nothing of it is opened yet).  0, or -errno after
 * printing the one-line reason. */
static int mount_prepare(fs_root *r)
{
    char err[1024] = "";
    int rc = fs_pcache_new(&r->pcache);
    if (rc) {
        fprintf(stderr, "ckptfs: %s\n", strerror(-rc));
        return rc;
    }
    /* libfuse leaves the working directory: reloads use an absolute path */
    r->abs_source = realpath(r->opts.source, NULL);
    if (!r->abs_source && !(r->abs_source = strdup(r->opts.source)))
        return -ENOMEM;
    int is_run = fs_run_detect(r->abs_source);
    if (r->opts.rw && is_run) {
        fprintf(stderr, "ckptfs: %s: is a run directory (checkpoints in subdirectories); "
                "-o rw needs one checkpoint: mount a step\n", r->opts.source);
        return -EINVAL;
    }
    if (is_run) {
        rc = fs_run_new(r, r->abs_source, &r->run);
        if (rc)
            fprintf(stderr, "ckptfs: %s: %s\n", r->opts.source, strerror(-rc));
        return rc;
    }
    uint64_t gen = atomic_fetch_add(&r->next_gen, 1);
    fs_sig sig;
    fs_sig_read(r->abs_source, &sig); /* before the state it describes is read */
    fs_mount *m = NULL;
    rc = fs_snapshot_open(&r->opts, r->opts.source, gen, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ckptfs: %s\n", err);
        return rc;
    }
    if (r->opts.rw) {
        r->rw = m;
        if ((rc = fs_write_init(m, err, sizeof err)) != 0)
            fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        return rc;
    }
    rc = fs_source_new(r, r->abs_source, "", m, &sig, &r->single);
    if (rc) {
        fs_snapshot_unref(m);
        fprintf(stderr, "ckptfs: %s\n", strerror(-rc));
    }
    return rc;
}

int main(int argc, char *argv[])
{
    /* `ckptfs cp ...` copies without mounting (a checkpoint named "cp" is ./cp) */
    if (argc > 1 && strcmp(argv[1], "cp") == 0)
        return fs_cp_main(argc - 1, argv + 1);
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    fs_root m;
    memset(&m, 0, sizeof m);
    int status = 1;
    if (fs_options_parse(&args, &m.opts) != 0)
        goto out;
    if (m.opts.show_version) {
        printf("ckptfs %s (libfuse %s)\n", CKPTFS_VERSION, fuse_pkgversion());
        status = 0;
        goto out;
    }
    if (m.opts.show_help) {
        fs_options_usage(argv[0]);
        fuse_cmdline_help();
        fuse_lib_help(&args);
        status = 0;
        goto out;
    }
    if (!m.opts.source || !m.opts.mountpoint) {
        fprintf(stderr, "usage: %s [options] SOURCE MOUNTPOINT (see --help)\n", argv[0]);
        goto out;
    }
    raise_fd_limit();
    if (mount_prepare(&m) != 0)
        goto out;

    struct fuse_operations ops = { 0 };
    ops.init = op_init;
    fs_ops_fill_read(&ops);
    if (m.opts.rw)
        fs_ops_fill_write(&ops);
    else
        fuse_opt_add_arg(&args, "-oro");
    fuse_opt_add_arg(&args, "-ofsname=ckptfs");
    fuse_opt_add_arg(&args, "-osubtype=ckptfs");

    status = run_fuse(&args, &ops, &m) ? 1 : 0;

    if (m.rw)
        fs_unmount_commit(m.rw); /* pending writes: last chance, see ops_write.c */
out:
    fs_root_free(&m);
    fuse_opt_free_args(&args);
    fs_options_free(&m.opts);
    return status;
}
