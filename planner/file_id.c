/* Data file identities (see file_id.h). */
#include "file_id.h"

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

bool ck_file_id_modified_after(const ck_file_id *id, const struct timespec *t)
{
    if (id->mtime_sec != (int64_t)t->tv_sec)
        return id->mtime_sec > (int64_t)t->tv_sec;
    return id->mtime_nsec > t->tv_nsec;
}

struct timespec ck_timespec_max(struct timespec a, struct timespec b)
{
    if (a.tv_sec != b.tv_sec)
        return a.tv_sec > b.tv_sec ? a : b;
    return a.tv_nsec >= b.tv_nsec ? a : b;
}
