/* Views for frameworks (SPEC "Views for frameworks"): PATH.npy, PATH.stats,
 * DIR.safetensors, /.ckptfs/model.safetensors, /.ckptfs/metadata.json and
 * the /.ckptfs/hf directory, answered by lookup when no real node has the
 * name.  /.ckptfs and /.ckptfs/hf list their entries. */
#ifndef CKPTFS_VIEWS_H
#define CKPTFS_VIEWS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include "mount.h"

typedef struct fs_view fs_view;

int fs_views_new(fs_mount *m, fs_views **out);
void fs_views_free(fs_views *v);
/* -o hf_dir: opens DIR's files for /.ckptfs/hf (hf_dir.h), at mount. */
int fs_views_open_hf_dir(fs_views *v, const char *path, char *err, size_t errlen);

/* If path names a view (or the /.ckptfs directory), returns 0 and a
 * referenced view (release it); -ENOENT otherwise. */
int fs_view_lookup(fs_mount *m, const char *path, fs_view **out);
void fs_view_release(fs_mount *m, fs_view *v);
int fs_view_is_dir(const fs_view *v);
uint64_t fs_view_size(const fs_view *v);
/* Reads bytes of a file view; *got may be short only at its end. */
int fs_view_read(fs_mount *m, fs_view *v, uint64_t off, void *dst, size_t len, size_t *got);
/* Directory view (/.ckptfs): calls fill for each entry name. */
int fs_view_list(fs_mount *m, fs_view *v, int (*fill)(void *ctx, const char *name), void *ctx);

/* The tensor behind an npy view (for xattrs), else NULL. */
const ck_key *fs_view_key(const fs_view *v);
/* The dtype an npy view's data holds (-o dtype= may convert), else CK_DT_INVALID. */
ck_dtype fs_view_dtype(const fs_view *v);
/* For -o npy listings: the .npy name of a tensor file node. */
int fs_view_npy_name(const char *name, char *out, size_t cap);

#endif
