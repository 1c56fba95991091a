/* ckptfs: mount a checkpoint.  Everything that can be wrong with SOURCE is
 * found by ck_open before libfuse mounts anything, so a bad checkpoint is one
 * line on stderr and exit status 1, never a half-working mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "cp.h"
#include "inode_table.h"
#include "live.h"
#include "ll_ops.h"
#include "notify.h"
#include "ops.h"
#include "page_cache.h"
#include "read_size.h"
#include "root.h"
#include "run.h"
#include "snapshot.h"

#ifndef CKPTFS_VERSION
#define CKPTFS_VERSION "0.1.0"
#endif

/* Shard-per-item checkpoints can have thousands of files kept open. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The kernel caps a FUSE mount's read-ahead at 128 KiB whatever INIT asks
 * (read_size.h); root may open it to two requests.  Others keep the
 * kernel's window: reads still work, in smaller requests.  So does root
 * where /sys is missing or read-only (chroots, containers), quietly: it is
 * a speed-up, not something the user asked for. */
static void open_readahead_window(const fs_root *r, const char *mountpoint)
{
    dev_t dev;
    if (geteuid() != 0 || fs_mount_dev(mountpoint, &dev) != 0)
        return;
    int rc = fs_bdi_set_readahead("/sys", dev, (unsigned)(2 * r->read_size >> 10));
    if (rc && rc != -ENOENT && rc != -EROFS && rc != -EACCES && rc != -EPERM)
        fprintf(stderr, "ckptfs: cannot widen the mount's read-ahead (%s): reads go in "
                "smaller requests\n", strerror(-rc));
}

/* The low-level session loop (ll_ops.c answers the requests). */
static int run_fuse(struct fuse_args *args, fs_root *r)
{
    struct fuse_cmdline_opts co;
    if (fuse_parse_cmdline(args, &co) != 0)
        return 1;
    int rc = 1;
    if (fs_itable_new(&r->itable) != 0) {
        fprintf(stderr, "ckptfs: %s\n", strerror(ENOMEM));
        goto out;
    }
    struct fuse_session *se = fuse_session_new(args, &fs_ll_ops, sizeof fs_ll_ops, r);
    if (!se)
        goto out;
    r->se = se;
    if (fuse_set_signal_handlers(se) != 0)
        goto out_destroy;
    if (fuse_session_mount(se, co.mountpoint) != 0)
        goto out_signals;
    open_readahead_window(r, co.mountpoint);
    if (fuse_daemonize(co.foreground) != 0)
        goto out_unmount;
    rc = co.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, co.clone_fd);
    rc = rc < 0 ? 1 : 0; /* a positive value is the signal that ended the loop: a clean exit */
    /* No request runs now; the notifier goes before the session it
     * sends through. */
    fs_notifier_stop(r->notify);
    r->notify = NULL;
out_unmount:
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
out_destroy:
    fuse_session_destroy(se);
    r->se = NULL;
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
    /* libfuse leaves the working directory: reloads use absolute paths */
    if (r->opts.hf_dir) {
        char *abs = realpath(r->opts.hf_dir, NULL);
        if (abs) {
            free(r->opts.hf_dir);
            r->opts.hf_dir = abs;
        }
    }
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
        if ((rc = fs_rw_mount_new(m, &r->rw)) != 0) {
            fs_snapshot_unref(m);
            fprintf(stderr, "ckptfs: %s\n", strerror(-rc));
            return rc;
        }
        if ((rc = fs_write_init(r->rw, err, sizeof err)) != 0)
            fprintf(stderr, "ckptfs: %s\n", err[0] ? err : strerror(-rc));
        m->ws = r->rw->ws;
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
        fuse_lowlevel_help();
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

    /* as large as a spliced reply can be (read_size.h); ll_init says the same */
    m.read_size = m.opts.nosplice ? FS_READ_SIZE_MAX
                                  : fs_read_size_for_pipe(fs_pipe_max_size(), FS_FD_SPANS_MAX,
                                                          (size_t)sysconf(_SC_PAGESIZE));
    char max_read[40];
    snprintf(max_read, sizeof max_read, "-omax_read=%zu", m.read_size);
    fuse_opt_add_arg(&args, max_read);
    if (!m.opts.rw)
        fuse_opt_add_arg(&args, "-oro");
    fuse_opt_add_arg(&args, "-ofsname=ckptfs");
    fuse_opt_add_arg(&args, "-osubtype=ckptfs");

    status = run_fuse(&args, &m) ? 1 : 0;

    if (m.rw)
        fs_unmount_commit(m.rw); /* pending writes: last chance, see ops_write.c */
out:
    fs_root_free(&m);
    fuse_opt_free_args(&args);
    fs_options_free(&m.opts);
    return status;
}
