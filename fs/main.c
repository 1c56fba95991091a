/* ckptfs: mount a checkpoint.  Everything that can be wrong with SOURCE is
 * found by ck_open before libfuse mounts anything, so a bad checkpoint is one
 * line on stderr and exit status 1, never a half-working mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

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
    cfg->entry_timeout = m->opts.rw ? 1.0 : 3600.0;
    cfg->attr_timeout = m->opts.rw ? 1.0 : 3600.0;
    cfg->negative_timeout = m->opts.rw ? 0.0 : 3600.0;
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    if (conn->capable & FUSE_CAP_SPLICE_MOVE)
        conn->want |= FUSE_CAP_SPLICE_MOVE;
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

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    fs_mount m;
    memset(&m, 0, sizeof m);
    if (fs_options_parse(&args, &m.opts) != 0)
        return 1;
    if (m.opts.show_version) {
        printf("ckptfs %s (libfuse %s)\n", CKPTFS_VERSION, fuse_pkgversion());
        return 0;
    }
    if (m.opts.show_help) {
        fs_options_usage(argv[0]);
        fuse_opt_add_arg(&args, "--help");
        args.argv[0][0] = '\0';
        struct fuse_operations none = { 0 };
        fuse_main(args.argc, args.argv, &none, NULL);
        return 0;
    }
    if (!m.opts.source || !m.opts.mountpoint) {
        fprintf(stderr, "usage: %s [options] SOURCE MOUNTPOINT (see --help)\n", argv[0]);
        return 1;
    }
    raise_fd_limit();
    char err[1024] = "";
    ck_open_opts oo = { .cache_bytes = m.opts.cache_bytes };
    int rc;
    if (m.opts.rw && m.opts.create)
        rc = ck_open_or_create(m.opts.source, &oo, &m.ck, err, sizeof err);
    else
        rc = ck_open(m.opts.source, &oo, &m.ck, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        return 1;
    }
    if (m.opts.rw && m.ck->kind != CK_SRC_DCP) {
        fprintf(stderr, "ckptfs: %s: -o rw needs a DCP checkpoint (safetensors sources are read-only)\n",
                m.opts.source);
        ck_close(m.ck);
        return 1;
    }
    rc = fs_tree_build(m.ck, m.opts.flat, &m.tree);
    if (!rc)
        rc = fs_views_new(&m, &m.views);
    if (rc) {
        fprintf(stderr, "ckptfs: %s: cannot build the file tree: %s\n", m.opts.source,
                strerror(-rc));
        ck_close(m.ck);
        return 1;
    }
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

    rc = fuse_main(args.argc, args.argv, &ops, &m);

    if (m.opts.rw)
        fs_unmount_commit(&m); /* pending writes: last chance, see ops_write.c */
    fs_views_free(m.views);
    fs_tree_free(m.tree);
    ck_close(m.ck);
    pthread_rwlock_destroy(&m.lock);
    fuse_opt_free_args(&args);
    free(m.opts.source);
    free(m.opts.mountpoint);
    return rc ? 1 : 0;
}
