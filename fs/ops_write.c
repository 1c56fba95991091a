/* The write-side operations of `-o rw` mounts (SPEC "Writes"), in wr_*.c
 * by concern, and their table.
 *
 * Every open of a key or of a new file goes through a wfile (write_state.h)
 * that holds its pending bytes; reads of a file with pending bytes are
 * answered from them, other reads by the read half (ops_read.c) with its
 * zero-copy path.  Operations the read half owns are wrapped here only to
 * add what it cannot know: new files not committed yet, directories no key
 * lies under, sizes changed by pending writes.
 *
 * When things reach the disk:
 *   - file content: at fsync, at the close of the last writable handle of
 *     the file (its flush, so close() reports a failure), and at unmount;
 *   - unlink, rename of a committed key or directory: at once, one commit
 *     each (a checkpoint has no other place to keep names);
 *   - a new file that nothing was written to yet waits (so its xattrs can
 *     be set first) until data arrives, fsync, or unmount;
 *   - mkdir: directories exist in a checkpoint only through their keys, so
 *     an empty one lasts until unmount.
 * A commit that fails leaves the checkpoint as it was; the failing close
 * or fsync returns its errno, and a file whose last handle closes after a
 * failed commit drops its pending bytes (logged). */
#include "wr_common.h"

#include <stdlib.h>

/* ---- wiring ---- */

const fs_path_ops fs_write_ops = {
    .getattr = fs_wr_getattr,
    .readdir = fs_wr_readdir,
    .opendir = fs_wr_opendir,
    .access = fs_wr_access,
    .open = fs_wr_open,
    .create = fs_wr_create,
    .mknod = fs_wr_mknod,
    .read_buf = fs_wr_read_buf,
    .write = fs_wr_write,
    .flush = fs_wr_flush,
    .fsync = fs_wr_fsync,
    .release = fs_wr_release,
    .truncate = fs_wr_truncate,
    .mkdir = fs_wr_mkdir,
    .rmdir = fs_wr_rmdir,
    .unlink = fs_wr_unlink,
    .rename = fs_wr_rename,
    .setxattr = fs_wr_setxattr,
    .getxattr = fs_wr_getxattr,
    .listxattr = fs_wr_listxattr,
    .removexattr = fs_wr_removexattr,
    .chmod = fs_wr_chmod,
    .chown = fs_wr_chown,
    .utimens = fs_wr_utimens,
    .statfs = fs_wr_statfs,
};

int fs_write_init(fs_mount *m, char *err, size_t errlen)
{
    return fs_write_state_new(m, &m->ws, err, errlen);
}

void fs_unmount_commit(fs_mount *m)
{
    fs_wstate *ws = m->ws;
    if (!ws)
        return;
    pthread_mutex_lock(&ws->commit_lock);
    pthread_mutex_lock(&ws->lock);
    size_t n = 0;
    fs_wfile **files = calloc(ws->nfiles ? ws->nfiles : 1, sizeof *files);
    for (size_t i = 0; files && i < ws->nfiles; i++) {
        fs_wfile *wf = ws->files[i];
        if (!wf->unlinked && (wf->dirty || wf->is_new)) {
            wf->refs++;
            files[n++] = wf;
        }
    }
    pthread_mutex_unlock(&ws->lock);
    if (n) {
        /* all at once; if one file spoils it, each on its own */
        int rc = fs_commit_locked(m, files, n, NULL, true);
        for (size_t i = 0; rc && n > 1 && i < n; i++)
            fs_commit_locked(m, &files[i], 1, NULL, true);
    }
    for (size_t i = 0; i < n; i++)
        fs_ws_put(ws, files[i]);
    free(files);
    pthread_mutex_unlock(&ws->commit_lock);
    fs_write_state_free(m, ws);
}

