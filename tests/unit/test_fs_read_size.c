/* Read request sizes (fs/read_size.h): the largest request a pipe can
 * splice, finding a mount's device in mountinfo (escaped names, stacked
 * mounts, bad lines) and setting its read-ahead through a sysfs tree. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "check.h"
#include "read_size.h"
#include "test_util.h"

static int mi(const char *text, const char *mnt, dev_t *dev)
{
    return fs_mountinfo_dev(text, strlen(text), mnt, dev);
}

int main(void)
{
    /* the default 1 MiB pipe splices 512 KiB replies of up to 16 buffers */
    CHECK_EQ_INT(fs_read_size_for_pipe(1u << 20, 16, 4096), 512u << 10);
    /* a larger pipe lets the largest request through, never more */
    CHECK_EQ_INT(fs_read_size_for_pipe(4u << 20, 16, 4096), FS_READ_SIZE_MAX);
    CHECK_EQ_INT(fs_read_size_for_pipe(UINT64_MAX, 16, 4096), FS_READ_SIZE_MAX);
    /* exactly enough room for 1 MiB and its overhead */
    CHECK_EQ_INT(fs_read_size_for_pipe((1u << 20) + 18 * 4096 + 16, 16, 4096), 1u << 20);
    CHECK_EQ_INT(fs_read_size_for_pipe((1u << 20) + 18 * 4096 + 15, 16, 4096), 512u << 10);
    /* a tiny pipe: never below FUSE's usual request */
    CHECK_EQ_INT(fs_read_size_for_pipe(4096, 16, 4096), FS_READ_SIZE_MIN);
    CHECK_EQ_INT(fs_read_size_for_pipe(0, 16, 4096), FS_READ_SIZE_MIN);
    CHECK(fs_pipe_max_size() >= 4096);

    const char *text =
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        "36 22 0:40 / /tmp/a\\040b\\134c rw - fuse.ckptfs ckptfs ro,user_id=0\n"
        "37 22 0:41 / /mnt/x rw - fuse.ckptfs ckptfs ro\n"
        "38 37 0:45 / /mnt/x rw - fuse.ckptfs ckptfs ro\n"
        "\n";
    dev_t dev = 0;
    CHECK_EQ_INT(mi(text, "/tmp/a b\\c", &dev), 0);
    CHECK(major(dev) == 0 && minor(dev) == 40);
    CHECK_EQ_INT(mi(text, "/mnt/x", &dev), 0);
    CHECK(minor(dev) == 45); /* the mount on top */
    CHECK_EQ_INT(mi(text, "/mnt", &dev), -ENOENT);
    CHECK_EQ_INT(mi(text, "/mnt/x/y", &dev), -ENOENT);
    CHECK_EQ_INT(mi(text, "/tmp/a", &dev), -ENOENT);
    CHECK_EQ_INT(mi("", "/mnt/x", &dev), -ENOENT);
    /* no newline at the end of the text */
    CHECK_EQ_INT(mi("5 1 8:3 / /data rw - ext4 /dev/sda3 rw", "/data", &dev), 0);
    CHECK(major(dev) == 8 && minor(dev) == 3);
    CHECK_EQ_INT(mi("5 1 8:3x / /data rw - ext4 x rw\n", "/data", &dev), -EINVAL);
    CHECK_EQ_INT(mi("5 1\n", "/data", &dev), -EINVAL);
    /* bounded by the length given, not by a NUL */
    CHECK_EQ_INT(fs_mountinfo_dev("5 1 8:3 / /data rw", 13, "/data", &dev), -ENOENT); /* "/da" */
    CHECK_EQ_INT(fs_mountinfo_dev("5 1 8:3 / /data rw", 9, "/data", &dev), -EINVAL);

    /* read_ahead_kb written under a sysfs tree of our own */
    char root[] = "/tmp/ckpt-sysfs-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    static const char *const dirs[] = { "class", "class/bdi", "class/bdi/0:40" };
    const size_t ndirs = sizeof dirs / sizeof dirs[0];
    char path[256];
    for (size_t i = 0; i < ndirs; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        CHECK_EQ_INT(mkdir(path, 0755), 0);
    }
    snprintf(path, sizeof path, "%s/class/bdi/0:40/read_ahead_kb", root);
    CHECK_EQ_INT(write_file(path, "128\n", 4), 0);
    CHECK_EQ_INT(fs_bdi_set_readahead(root, makedev(0, 40), 1024), 0);
    size_t len = 0;
    char *got = slurp(path, &len);
    CHECK(got && len == 5 && memcmp(got, "1024\n", 5) == 0);
    free(got);
    /* no such device: nothing is created */
    CHECK_EQ_INT(fs_bdi_set_readahead(root, makedev(0, 41), 1024), -ENOENT);
    unlink(path);
    for (size_t i = ndirs; i-- > 0;) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        rmdir(path);
    }
    rmdir(root);
    return check_done();
}
