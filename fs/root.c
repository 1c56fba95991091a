/* Request resolution (see root.h). */
#include "root.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "inode_table.h"
#include "live.h"
#include "notify.h"
#include "page_cache.h"
#include "run.h"
#include "snapshot.h"

int fs_req_begin(fs_root *r, const char *path, int flags, fs_req *q)
{
    memset(q, 0, sizeof *q);
    q->path = path;
    bool force = flags & FS_REQ_FORCE;
    if (r->rw) {
        q->m = fs_rw_pin(r->rw);
        return 0;
    }
    if (r->single) {
        q->src = r->single;
        q->m = fs_source_pin(r->single, force);
        return q->m ? 0 : -EIO;
    }
    if (strcmp(path, "/") == 0) {
        q->synthetic = q->run_root = true;
        fs_run_root_stat(r->run, &q->st);
        return 0;
    }
    const char *name = path + 1;
    const char *slash = strchr(name, '/');
    size_t n = slash ? (size_t)(slash - name) : strlen(name);
    char step[256];
    if (n == 0 || n >= sizeof step)
        return -ENOENT;
    memcpy(step, name, n);
    step[n] = '\0';
    fs_source *src = fs_run_step(r->run, step, force, &q->st);
    if (!src)
        return -ENOENT;
    q->path = slash ? slash : "/";
    q->path_off = slash ? (size_t)(slash - path) : 0;
    if (!slash && !(flags & FS_REQ_PIN)) {
        q->synthetic = true; /* its attributes need no opening */
        return 0;
    }
    q->src = src;
    q->m = fs_source_pin(src, force);
    return q->m ? 0 : -ENOENT; /* it failed to open: logged, now hidden */
}

void fs_req_end(fs_req *q)
{
    fs_snapshot_unref(q->m);
    q->m = NULL;
}

void fs_root_free(fs_root *r)
{
    fs_notifier_stop(r->notify);
    r->notify = NULL;
    fs_run_free(r->run);
    fs_source_free(r->single);
    fs_snapshot_unref(r->rw);
    fs_pcache_free(r->pcache);
    fs_itable_free(r->itable);
    r->itable = NULL;
    free(r->abs_source);
    r->run = NULL;
    r->single = NULL;
    r->rw = NULL;
    r->pcache = NULL;
    r->abs_source = NULL;
}
