/* The local storage backend (storage.h): confinement of names to the root,
 * ranged reads, identity, listing, new objects, the conditional replace
 * and removal; and ck_storage_for_source on local paths. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "storage.h"

static char root[64];

static void put(const char *name, const char *text)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static int count_names(void *ctx, const char *name, const ck_object_info *info)
{
    (*(int *)ctx)++;
    return 0;
}

static int count_tmp(void *ctx, const char *name, const ck_object_info *info)
{
    if (strstr(name, "ckptfs-tmp"))
        (*(int *)ctx)++;
    return 0;
}

static int stop_at_b(void *ctx, const char *name, const ck_object_info *info)
{
    return strcmp(name, "b") == 0 ? 7 : 0;
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/test_storage.XXXXXX");
    if (!mkdtemp(root))
        return 1;
    put("a", "hello world");
    put("b", "x");
    char p[256];
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/out", root);
    CHECK_EQ_INT(symlink("/etc/passwd", p), 0);
    snprintf(p, sizeof p, "%s/fifo", root);
    CHECK_EQ_INT(mkfifo(p, 0644), 0);

    int dirfd = open(root, O_PATH | O_DIRECTORY);
    ck_storage *st;
    CHECK_EQ_INT(ck_storage_local_new(dirfd, &st), 0);
    close(dirfd);
    CHECK(ck_storage_local_root_fd(st) >= 0);

    /* open, info, ranged read, fd */
    ck_object *o;
    CHECK_EQ_INT(ck_storage_open(st, "a", &o), 0);
    ck_object_info info;
    CHECK_EQ_INT(ck_object_info_get(o, &info), 0);
    CHECK_EQ_INT(info.size, 11);
    CHECK(info.identity[0] != '\0');
    char buf[16] = "";
    CHECK_EQ_INT(ck_object_read(o, 6, buf, 5), 0);
    CHECK_EQ_STR(buf, "world");
    CHECK_EQ_INT(ck_object_read(o, 8, buf, 5), -EIO); /* past the end */
    CHECK(ck_object_fd(o) >= 0);
    ck_object_close(o);

    /* confinement and kinds */
    CHECK(ck_storage_open(st, "out", &o) == -EXDEV || ck_storage_open(st, "out", &o) == -ELOOP);
    CHECK(ck_storage_open(st, "../x", &o) == -EXDEV || ck_storage_open(st, "../x", &o) == -ENOENT);
    CHECK_EQ_INT(ck_storage_open(st, "fifo", &o), -EINVAL);
    CHECK_EQ_INT(ck_storage_open(st, "sub", &o), -EINVAL);
    CHECK_EQ_INT(ck_storage_open(st, "missing", &o), -ENOENT);

    /* listing: regular files (and the link, which open refuses), no directories */
    int n = 0;
    CHECK_EQ_INT(ck_storage_list(st, count_names, &n), 0);
    CHECK(n >= 2);
    CHECK_EQ_INT(ck_storage_list(st, stop_at_b, NULL), 7);

    /* a new object: visible once finished, never over an existing one */
    ck_object_writer *w;
    CHECK_EQ_INT(ck_storage_create(st, "new", &w), 0);
    CHECK_EQ_INT(ck_object_writer_append(w, "abc", 3), 0);
    CHECK_EQ_INT(ck_object_writer_append(w, "def", 3), 0);
    CHECK_EQ_INT(ck_object_writer_finish(w), 0);
    uint8_t *whole;
    size_t len;
    CHECK_EQ_INT(ck_storage_read_whole(st, "new", 100, &whole, &len, NULL), 0);
    CHECK_EQ_INT(len, 6);
    CHECK(memcmp(whole, "abcdef", 6) == 0);
    free(whole);
    CHECK_EQ_INT(ck_storage_read_whole(st, "new", 5, &whole, &len, NULL), -EFBIG);
    CHECK_EQ_INT(ck_storage_create(st, "new", &w), -EEXIST);
    CHECK_EQ_INT(ck_storage_create(st, "gone", &w), 0);
    ck_object_writer_append(w, "zz", 2);
    ck_object_writer_abort(w);
    CHECK_EQ_INT(ck_storage_open(st, "gone", &o), -ENOENT);

    /* conditional replace: only over the identity read; none = must not exist */
    CHECK_EQ_INT(ck_storage_replace(st, "meta", "v1", 2, NULL), 0);
    CHECK_EQ_INT(ck_storage_replace(st, "meta", "v2", 2, NULL), -EAGAIN);
    CHECK_EQ_INT(ck_storage_open(st, "meta", &o), 0);
    ck_object_info mi;
    ck_object_info_get(o, &mi);
    ck_object_close(o);
    CHECK_EQ_INT(ck_storage_replace(st, "meta", "v3", 2, "0:0:0:0.0"), -EAGAIN);
    CHECK_EQ_INT(ck_storage_read_whole(st, "meta", 100, &whole, &len, NULL), 0);
    CHECK(len == 2 && memcmp(whole, "v1", 2) == 0);
    free(whole);
    CHECK_EQ_INT(ck_storage_replace(st, "meta", "v4", 2, mi.identity), 0);
    CHECK_EQ_INT(ck_storage_read_whole(st, "meta", 100, &whole, &len, NULL), 0);
    CHECK(len == 2 && memcmp(whole, "v4", 2) == 0);
    free(whole);
    /* no temporary files left behind, even by the refused attempts */
    int tmps = 0;
    ck_storage_list(st, count_tmp, &tmps);
    CHECK_EQ_INT(tmps, 0);
    n = 0;
    ck_storage_list(st, count_names, &n);
    int before = n;
    CHECK_EQ_INT(ck_storage_remove(st, "meta"), 0);
    CHECK_EQ_INT(ck_storage_remove(st, "meta"), -ENOENT);
    n = 0;
    ck_storage_list(st, count_names, &n);
    CHECK_EQ_INT(n, before - 1);
    ck_storage_free(st);

    /* ck_storage_for_source: a directory, a file in it (its leaf), errors */
    char err[256], *leaf;
    struct timespec mt;
    CHECK_EQ_INT(ck_storage_for_source(root, NULL, &st, &leaf, &mt, err, sizeof err), 0);
    CHECK(leaf == NULL);
    CHECK(mt.tv_sec > 0);
    ck_storage_free(st);
    snprintf(p, sizeof p, "%s/a", root);
    CHECK_EQ_INT(ck_storage_for_source(p, NULL, &st, &leaf, &mt, err, sizeof err), 0);
    CHECK_EQ_STR(leaf, "a");
    CHECK_EQ_INT(ck_storage_open(st, leaf, &o), 0);
    ck_object_close(o);
    free(leaf);
    ck_storage_free(st);
    snprintf(p, sizeof p, "%s/nothing", root);
    CHECK_EQ_INT(ck_storage_for_source(p, NULL, &st, &leaf, &mt, err, sizeof err), -ENOENT);
    CHECK(strstr(err, "nothing") != NULL);
    snprintf(p, sizeof p, "%s/fifo", root);
    CHECK_EQ_INT(ck_storage_for_source(p, NULL, &st, &leaf, &mt, err, sizeof err), -EINVAL);
    CHECK(ck_storage_is_remote("s3://b/p"));
    CHECK(!ck_storage_is_remote("/s3://b"));

    const char *names[] = { "a", "b", "new", "out", "fifo" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/sub", root);
    rmdir(p);
    rmdir(root);
    return check_done();
}
