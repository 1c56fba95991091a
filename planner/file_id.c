/* Data file identities (see file_id.h). */
#include "file_id.h"
#include "fd_io.h"
#include "name_search.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void ck_file_id_from_stat(const struct stat *st, ck_file_id *id)
{
    id->dev = (uint64_t)st->st_dev;
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_sec = (int64_t)st->st_mtim.tv_sec;
    id->mtime_nsec = st->st_mtim.tv_nsec;
}

bool ck_file_id_equal(const ck_file_id *a, const ck_file_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
}

static int dir_id_cmp(const void *a, const void *b)
{
    return strcmp(((const ck_dir_id *)a)->name, ((const ck_dir_id *)b)->name);
}

int ck_dir_ids_read(int dirfd, ck_dir_ids *out)
{
    out->v = NULL;
    out->n = 0;
    DIR *d;
    int rc = ck_opendir_at(dirfd, &d);
    if (rc)
        return rc;
    size_t cap = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        struct stat st;
        /* a symlink as the open will follow it (open_beneath confines it) */
        if (fstatat(dirfd, de->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (out->n == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            ck_dir_id *v = realloc(out->v, ncap * sizeof *v);
            if (!v) {
                rc = -ENOMEM;
                break;
            }
            out->v = v;
            cap = ncap;
        }
        if (!(out->v[out->n].name = strdup(de->d_name))) {
            rc = -ENOMEM;
            break;
        }
        ck_file_id_from_stat(&st, &out->v[out->n].id);
        out->n++;
    }
    closedir(d);
    if (rc) {
        ck_dir_ids_free(out);
        return rc;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, dir_id_cmp);
    return 0;
}

const ck_file_id *ck_dir_ids_find(const ck_dir_ids *d, const char *name)
{
    const ck_dir_id *e = CK_NAME_FIND(d->v, d->n, name, name);
    return e ? &e->id : NULL;
}

void ck_dir_ids_free(ck_dir_ids *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->v[i].name);
    free(d->v);
    d->v = NULL;
    d->n = 0;
}
