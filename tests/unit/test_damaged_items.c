/* Damaged items, exhaustively: every byte of a real item is flipped in
 * turn (in a private copy of the fixture), the checkpoint is opened afresh
 * and the key read whole.  The read must fail with EIO or give exactly the
 * original bytes: damage may go unnoticed only where it changes nothing.
 *
 *  - a torch.save item stored as is (dcp_single_perfile): every byte of the
 *    archive's structure (local headers, data.pkl, central directory, end
 *    records).  The bytes of data/0 itself are left alone: they are served
 *    straight from the file and nothing in the format protects them short of
 *    reading the whole member, which a direct read never does.
 *  - a zstd-compressed item (dcp_zstd): every byte of its frame.  torch's
 *    frames carry no checksum, so damage inside a compressed block is caught
 *    by the zip CRC-32 of data/0 once decoded. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "chunk_reader.h"
#include "ckpt.h"
#include "zip_reader.h"

#define FIX "tests/fixtures/torch-2.11/"

typedef struct {
    char path[256];   /* the item's file in the private copy */
    uint64_t off, len; /* the item inside it */
    uint64_t skip_lo, skip_hi; /* item bytes not flipped: [lo, hi) */
    uint8_t *want;    /* the key's bytes */
    uint64_t want_len;
} target;

static int read_key(const char *dir, const char *fqn, uint8_t **out, uint64_t *len)
{
    ck_checkpoint *ck = NULL;
    char err[1024];
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    if (rc)
        return rc;
    const ck_key *k = ck_find_key(ck, fqn);
    uint64_t size = 0;
    if (!k || ck_key_size(ck, k, &size) || size > (64u << 20)) {
        ck_close(ck);
        return -EIO;
    }
    uint8_t *buf = malloc(size ? size : 1);
    size_t got = 0;
    rc = buf ? ck_key_read(ck, k, 0, buf, size, &got) : -ENOMEM;
    if (!rc && got != size)
        rc = -EIO;
    ck_close(ck);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = size;
    return 0;
}

/* Copies fixture NAME into a fresh temp dir; fills dir. */
static int copy_fixture(const char *name, char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/ckpt-dmg-XXXXXX");
    if (!mkdtemp(dir))
        return -errno;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cp -r '" FIX "%s/.' '%s/' && chmod -R u+w '%s'", name, dir, dir);
    return system(cmd) == 0 ? 0 : -EIO;
}

static void remove_dir(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Where key fqn's (single) item lives. */
static int locate_item(const char *dir, const char *fqn, target *t)
{
    ck_checkpoint *ck = NULL;
    char err[1024];
    int rc = ck_open(dir, NULL, &ck, err, sizeof err);
    if (rc)
        return rc;
    const ck_key *k = ck_find_key(ck, fqn);
    if (!k || k->nchunks != 1) {
        ck_close(ck);
        return -ENOENT;
    }
    snprintf(t->path, sizeof t->path, "%s/%s", dir, ck->files[k->chunks[0].file].path);
    t->off = k->chunks[0].offset;
    t->len = k->chunks[0].length;
    ck_close(ck);
    return 0;
}

static int flip_at(const char *path, uint64_t pos, uint8_t mask)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t b;
    int rc = -EIO;
    if (pread(fd, &b, 1, (off_t)pos) == 1) {
        b ^= mask;
        rc = pwrite(fd, &b, 1, (off_t)pos) == 1 ? 0 : -EIO;
    }
    close(fd);
    return rc;
}

/* Flips every byte of the item outside [skip_lo, skip_hi) with mask. */
static void flip_all(const char *dir, const char *fqn, const target *t, uint8_t mask)
{
    uint64_t tried = 0, refused = 0, same = 0, wrong = 0, other = 0;
    for (uint64_t p = 0; p < t->len; p++) {
        if (p >= t->skip_lo && p < t->skip_hi)
            continue;
        if (flip_at(t->path, t->off + p, mask)) {
            other++;
            break;
        }
        uint8_t *got = NULL;
        uint64_t n = 0;
        int rc = read_key(dir, fqn, &got, &n);
        tried++;
        if (rc == -EIO) {
            refused++;
        } else if (rc == 0 && n == t->want_len && memcmp(got, t->want, n) == 0) {
            same++;
        } else if (rc == 0) {
            if (wrong++ < 5)
                printf("# %s: flipping item byte %llu (^0x%02x) gives wrong bytes\n", fqn,
                       (unsigned long long)p, mask);
        } else {
            if (other++ < 5)
                printf("# %s: flipping item byte %llu gives %d, not EIO\n", fqn,
                       (unsigned long long)p, rc);
        }
        free(got);
        flip_at(t->path, t->off + p, mask); /* restore */
    }
    printf("# %s ^0x%02x: %llu flips, %llu EIO, %llu harmless, %llu wrong, %llu other\n", fqn,
           mask, (unsigned long long)tried, (unsigned long long)refused,
           (unsigned long long)same, (unsigned long long)wrong, (unsigned long long)other);
    CHECK(tried > 0);
    CHECK(refused > 0);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(other, 0);
}

static void run(const char *fixture, const char *fqn, int skip_payload)
{
    char dir[64];
    target t = { 0 };
    if (copy_fixture(fixture, dir, sizeof dir)) {
        CHECK(!"copy fixture");
        return;
    }
    int rc = locate_item(dir, fqn, &t);
    CHECK_EQ_INT(rc, 0);
    if (!rc)
        rc = read_key(dir, fqn, &t.want, &t.want_len);
    CHECK_EQ_INT(rc, 0);
    if (!rc && skip_payload) {
        /* the data/0 member's bytes, from the undamaged item */
        uint8_t *item = malloc(t.len);
        int fd = open(t.path, O_RDONLY | O_CLOEXEC);
        ck_zip_member m;
        char err[256];
        rc = (item && fd >= 0 && pread(fd, item, t.len, (off_t)t.off) == (ssize_t)t.len) ? 0 : -EIO;
        if (fd >= 0)
            close(fd);
        if (!rc) {
            ck_byte_source src = ck_byte_source_mem(item, t.len);
            rc = ck_zip_find(&src, "/data/0", &m, err, sizeof err);
        }
        CHECK_EQ_INT(rc, 0);
        if (!rc) {
            t.skip_lo = m.data_offset;
            t.skip_hi = m.data_offset + m.size;
        }
        free(item);
    }
    if (!rc) {
        flip_all(dir, fqn, &t, 0x01);
        flip_all(dir, fqn, &t, 0xff);
    }
    free(t.want);
    remove_dir(dir);
}

int main(void)
{
    /* a plain 2-D tensor, a strided (transposed) one, a view into a bigger storage */
    run("dcp_single_perfile", "model.embed.weight", 1);
    run("dcp_single_perfile", "model.transposed", 1);
    run("dcp_single_perfile", "model.view_of_bigger", 1);
    run("dcp_zstd", "model.embed.weight", 0);
    run("dcp_zstd", "model.transposed", 0);
    return check_done();
}
