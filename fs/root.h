/* From a request's path to the snapshot that answers it: the rw mount, the
 * live checkpoint's current state, or, in a run, the step named by the
 * first component with the rest of the path inside it. */
#ifndef CKPTFS_ROOT_H
#define CKPTFS_ROOT_H

#include <stdbool.h>
#include <sys/stat.h>
#include "mount.h"

enum {
    FS_REQ_FORCE = 1, /* look for a new state now (opens), not at most every 100 ms */
    FS_REQ_PIN = 2,   /* a step's own directory must be opened too (listing it) */
};

typedef struct {
    fs_mount *m;      /* pinned; NULL when synthetic */
    fs_source *src;   /* read-only mounts: where m comes from */
    const char *path; /* the path inside m */
    size_t path_off;  /* where it starts in the request's path (0: "/", a step's root) */
    bool synthetic;   /* no snapshot: the run's root, or a step's directory, with st */
    bool run_root;
    struct stat st;
} fs_req;

/* 0, or -ENOENT (no such step) / -EIO. */
int fs_req_begin(fs_root *r, const char *path, int flags, fs_req *q);
void fs_req_end(fs_req *q);

void fs_root_free(fs_root *r);

#endif
