/* ckptfs: mount a checkpoint.  Everything that can be wrong with SOURCE is
 * found by ck_open before libfuse mounts anything, so a bad checkpoint is one
 * line on stderr and exit status 1, never a half-working mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <fuse_lowlevel.h>

#include "ops.h"
#include "views.h"

#ifndef CKPTFS_VERSION
#define CKPTFS_VERSION "0.1.0"
#endif

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    fs_mount *m = fuse_get_context()->private_data;
    cfg->use_ino = 0;
    /* A read-only checkpoint never changes under us: let the kernel keep
     * pages, attributes and names for as long as it likes. */
    cfg->kernel_cache = !m->opts.rw;
    /* rw: names and sizes change under open files (commits turn X.npy into
     * X, xattrs give a new file its size), so the kernel asks every time */
    cfg->entry_timeout = m->opts.rw ? 0.0 : 3600.0;
    cfg->attr_timeout = m->opts.rw ? 0.0 : 3600.0;
    cfg->negative_timeout = m->opts.rw ? 0.0 : 3600.0;
    /* rw: an unlinked open file must not be renamed to .fuse_hidden*, which
     * would commit a key of that name (ops_write.c) */
    cfg->hard_remove = m->opts.rw;
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
    return m;
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
static int run_fuse(struct fuse_args *args, const struct fuse_operations *ops, fs_mount *m)
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
    fuse_remove_signal_handlers(se);
out_unmount:
    fuse_unmount(f);
out_destroy:
    fuse_destroy(f);
out:
    free(co.mountpoint);
    return rc;
}

/* Everything main allocated; safe on partly built state. */
static void mount_free(fs_mount *m, struct fuse_args *args)
{
    fs_views_free(m->views);
    fs_tree_free(m->tree);
    ck_close(m->ck);
    fuse_opt_free_args(args);
    fs_options_free(&m->opts);
}

/* Opens SOURCE and builds the tree and views; 0, or -errno after printing
 * the one-line reason. */
static int mount_prepare(fs_mount *m)
{
    char err[1024] = "";
    ck_storage_opts so = { .endpoint = m->opts.endpoint, .region = m->opts.region,
                           .profile = m->opts.profile, .addressing = m->opts.addressing };
    ck_open_opts oo = { .cache_bytes = m->opts.cache_bytes, .storage = &so };
    int rc = m->opts.rw && m->opts.create
                 ? ck_open_or_create(m->opts.source, &oo, &m->ck, err, sizeof err)
                 : ck_open(m->opts.source, &oo, &m->ck, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        return rc;
    }
    if (m->opts.rw && m->ck->kind != CK_SRC_DCP) {
        fprintf(stderr, "ckptfs: %s: -o rw needs a DCP checkpoint (safetensors sources are read-only)\n",
                m->opts.source);
        return -EINVAL;
    }
    rc = fs_tree_build(m->ck, m->opts.flat, &m->tree);
    if (!rc)
        rc = fs_views_new(m, &m->views);
    if (rc) {
        fprintf(stderr, "ckptfs: %s: cannot build the file tree: %s\n", m->opts.source,
                strerror(-rc));
        return rc;
    }
    if (m->opts.rw && (rc = fs_write_init(m, err, sizeof err)) != 0) {
        fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        return rc;
    }
    return 0;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    fs_mount m;
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
    pthread_rwlock_init(&m.lock, NULL);

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

    if (m.opts.rw)
        fs_unmount_commit(&m); /* pending writes: last chance, see ops_write.c */
    pthread_rwlock_destroy(&m.lock);
out:
    mount_free(&m, &args);
    return status;
}
