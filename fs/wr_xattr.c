/* rw mounts: a new file's declared dtype and shape (xattrs), and the
 * metadata a checkpoint has no place for. */
#include "wr_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/xattr.h>

/* ---- extended attributes ---- */

#define XA_DTYPE "user.ckpt.dtype"
#define XA_SHAPE "user.ckpt.shape"

/* "[32,16]", "(32, 16)", "32,16", "[]" -> dims.  0 or -EINVAL. */
static int parse_shape(const char *s, size_t n, uint32_t *ndim, uint64_t *dims)
{
    size_t i = 0;
    uint32_t k = 0;
    while (i < n && (s[i] == ' ' || s[i] == '[' || s[i] == '('))
        i++;
    while (i < n) {
        if (s[i] == ']' || s[i] == ')' || s[i] == ' ' || s[i] == '\n' || s[i] == '\0') {
            i++;
            continue;
        }
        if (s[i] < '0' || s[i] > '9' || k == CK_MAX_DIMS)
            return -EINVAL;
        uint64_t v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
                return -EINVAL;
            i++;
        }
        dims[k++] = v;
        while (i < n && s[i] == ' ')
            i++;
        if (i < n && s[i] == ',')
            i++;
        else if (i < n && s[i] != ']' && s[i] != ')' && s[i] != '\n' && s[i] != '\0')
            return -EINVAL;
    }
    *ndim = k;
    return 0;
}

/* A new file's declared type decides its size: the tensor's bytes. */
static int apply_declaration(fs_wfile *wf)
{
    if (!wf->has_shape) {
        wf->limit = UINT64_MAX;
        return 0;
    }
    const ck_dtype_info *dt = ck_dtype_get(wf->has_dtype ? wf->dtype : CK_DT_UINT8);
    uint64_t numel, nbytes;
    if (ck_shape_numel(wf->ndim, wf->shape, &numel) ||
        __builtin_mul_overflow(numel, (uint64_t)dt->size, &nbytes) || nbytes > INT64_MAX)
        return -EOVERFLOW;
    if (atomic_load(&wf->size) > nbytes)
        return -EFBIG;
    wf->limit = nbytes;
    atomic_store(&wf->size, nbytes);
    return 0;
}

int fs_wr_setxattr(fs_root *r, const char *path, const char *name, const char *value, size_t size,
                       int flags)
{
    fs_mount *m = r->rw;
    bool is_dtype = strcmp(name, XA_DTYPE) == 0, is_shape = strcmp(name, XA_SHAPE) == 0;
    if (!is_dtype && !is_shape)
        return strncmp(name, "user.ckpt.", 10) == 0 ? -EPERM : -ENOTSUP;
    char text[512];
    if (size >= sizeof text)
        return -EINVAL;
    memcpy(text, value, size);
    text[size] = '\0';
    while (size && (text[size - 1] == '\n' || text[size - 1] == ' '))
        text[--size] = '\0';
    ck_dtype dt = CK_DT_INVALID;
    uint32_t ndim = 0;
    uint64_t dims[CK_MAX_DIMS];
    if (is_dtype && (dt = ck_dtype_from_torch_name(text)) == CK_DT_INVALID)
        return -EINVAL;
    if (is_shape && parse_shape(text, size, &ndim, dims))
        return -EINVAL;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (rc)
        return rc;
    switch (pi.kind) {
    case P_NEW: {
        fs_wfile *wf = pi.wf;
        pthread_mutex_lock(&wf->lock);
        if (wf->npy) {
            rc = -EINVAL; /* its npy header says what it is */
        } else {
            bool had_dtype = wf->has_dtype, had_shape = wf->has_shape;
            ck_dtype old_dt = wf->dtype;
            uint32_t old_ndim = wf->ndim;
            uint64_t old_dims[CK_MAX_DIMS];
            memcpy(old_dims, wf->shape, sizeof old_dims);
            if (is_dtype) {
                wf->has_dtype = true;
                wf->dtype = dt;
            } else {
                wf->has_shape = true;
                wf->ndim = ndim;
                memcpy(wf->shape, dims, ndim * sizeof *dims);
            }
            rc = apply_declaration(wf);
            if (rc) { /* put the old declaration back */
                wf->has_dtype = had_dtype;
                wf->has_shape = had_shape;
                wf->dtype = old_dt;
                wf->ndim = old_ndim;
                memcpy(wf->shape, old_dims, sizeof old_dims);
                apply_declaration(wf);
            }
        }
        pthread_mutex_unlock(&wf->lock);
        break;
    }
    case P_FILE: {
        /* a committed key keeps its type: the same value is accepted (cp -a,
         * rsync -X), another is refused */
        fs_mount *cur = fs_rw_pin(m);
        const ck_key *k = ck_find_key(cur->ck, pi.fqn);
        if (!k || k->kind != CK_KEY_TENSOR)
            rc = -EPERM;
        else if (is_dtype)
            rc = dt == k->dtype ? 0 : -EPERM;
        else
            rc = ndim == k->ndim && memcmp(dims, k->shape, ndim * sizeof *dims) == 0 ? 0 : -EPERM;
        fs_snapshot_unref(cur);
        break;
    }
    case P_NONE: rc = -ENOENT; break;
    default: rc = -EPERM;
    }
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

/* fs_wr_classify() for the xattr calls, which only a pending new file answers
 * here: 1 with pi filled for one; 0 (pi cleared) for anything else, which
 * the read half answers; or -errno. */
static int classify_new(fs_mount *m, const char *path, path_info *pi)
{
    int rc = fs_wr_classify(m, path, pi);
    if (rc)
        return rc;
    if (pi->kind == P_NEW)
        return 1;
    fs_wr_info_clear(m->ws, pi);
    return 0;
}

int fs_wr_getxattr(fs_root *r, const char *path, const char *name, char *value, size_t size)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify_new(m, path, &pi);
    if (rc <= 0)
        return rc < 0 ? rc : fs_read_ops.getxattr(r, path, name, value, size);
    fs_wfile *wf = pi.wf;
    char buf[CK_SHAPE_STR_MAX];
    pthread_mutex_lock(&wf->lock);
    pthread_mutex_lock(&m->ws->lock);
    const char *s = NULL;
    if (strcmp(name, "user.ckpt.fqn") == 0)
        s = wf->fqn;
    else if (strcmp(name, "user.ckpt.kind") == 0)
        s = "tensor";
    else if (strcmp(name, XA_DTYPE) == 0 && wf->has_dtype)
        s = ck_dtype_get(wf->dtype)->torch_name;
    else if (strcmp(name, XA_SHAPE) == 0 && wf->has_shape &&
             ck_format_shape(buf, sizeof buf, wf->ndim, wf->shape) > 0)
        s = buf;
    rc = s ? fs_xattr_reply(s, strlen(s), value, size) : -ENODATA;
    pthread_mutex_unlock(&m->ws->lock);
    pthread_mutex_unlock(&wf->lock);
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

int fs_wr_listxattr(fs_root *r, const char *path, char *list, size_t size)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = classify_new(m, path, &pi);
    if (rc <= 0)
        return rc < 0 ? rc : fs_read_ops.listxattr(r, path, list, size);
    char names[128];
    size_t n = 0;
    pthread_mutex_lock(&pi.wf->lock);
    const char *all[] = { "user.ckpt.fqn", "user.ckpt.kind", pi.wf->has_dtype ? XA_DTYPE : NULL,
                          pi.wf->has_shape ? XA_SHAPE : NULL };
    pthread_mutex_unlock(&pi.wf->lock);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (all[i]) {
            size_t l = strlen(all[i]) + 1;
            memcpy(names + n, all[i], l);
            n += l;
        }
    fs_wr_info_clear(m->ws, &pi);
    return fs_xattr_reply(names, n, list, size);
}

int fs_wr_removexattr(fs_root *r, const char *path, const char *name)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (rc)
        return rc;
    bool is_dtype = strcmp(name, XA_DTYPE) == 0, is_shape = strcmp(name, XA_SHAPE) == 0;
    if (pi.kind == P_NEW && (is_dtype || is_shape)) {
        pthread_mutex_lock(&pi.wf->lock);
        if (is_dtype)
            pi.wf->has_dtype = false;
        else
            pi.wf->has_shape = false;
        apply_declaration(pi.wf);
        pthread_mutex_unlock(&pi.wf->lock);
    } else if (pi.kind == P_NONE) {
        rc = -ENOENT;
    } else {
        rc = strncmp(name, "user.ckpt.", 10) == 0 ? -EPERM : -ENODATA;
    }
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

/* ---- metadata a checkpoint has no place for: accepted so cp -p works ---- */

static int exists(fs_root *r, const char *path)
{
    fs_mount *m = r->rw;
    path_info pi;
    int rc = fs_wr_classify(m, path, &pi);
    if (!rc && pi.kind == P_NONE)
        rc = -ENOENT;
    fs_wr_info_clear(m->ws, &pi);
    return rc;
}

int fs_wr_chmod(fs_root *r, const char *path, mode_t mode, struct fuse_file_info *fi)
{
    return fs_wr_of(fi) ? 0 : exists(r, path);
}

int fs_wr_chown(fs_root *r, const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    return fs_wr_of(fi) ? 0 : exists(r, path);
}

int fs_wr_utimens(fs_root *r, const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    return fs_wr_of(fi) ? 0 : exists(r, path);
}

int fs_wr_statfs(fs_root *r, const char *path, struct statvfs *sv)
{
    return fs_read_ops.statfs(r, path, sv); /* pending files are not counted */
}
