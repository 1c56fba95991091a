/* Pending writes (fs/write_buffer.h) without a mount: the bytes read back
 * are the file's old content overlaid with every write, the ranges are
 * what was written (merged), truncation forgets what lies past the size,
 * and a pool over its bound moves pages to an unnamed spill file and
 * still reads back the same bytes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "write_buffer.h"

#define PAGE FS_WBUF_PAGE
#define FILE_LEN (16 * (size_t)PAGE)

/* The file as it is without the buffer: a byte pattern the test can
 * change after a write, to see which bytes the buffer kept. */
typedef struct {
    uint8_t *bytes;
    unsigned fills;
} base_file;

static int fill_from(void *ctx, uint64_t off, void *dst, size_t len)
{
    base_file *f = ctx;
    f->fills++;
    if (off > FILE_LEN || len > FILE_LEN - off)
        return -EIO;
    memcpy(dst, f->bytes + off, len);
    return 0;
}

static void pattern(uint8_t *p, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
}

/* model = what the file should read as; compares a read of [off, off+len). */
static int reads_as(fs_wbuf *b, base_file *f, const uint8_t *model, uint64_t off, size_t len)
{
    uint8_t *got = malloc(len);
    int ok = fs_wbuf_read(b, off, got, len, fill_from, f) == 0 && memcmp(got, model + off, len) == 0;
    free(got);
    return ok;
}

static int ranges_are(fs_wbuf *b, const ck_byte_range *want, size_t nwant)
{
    size_t n;
    const ck_byte_range *r = fs_wbuf_ranges(b, &n);
    int ok = n == nwant;
    for (size_t i = 0; ok && i < n; i++)
        ok = r[i].lo == want[i].lo && r[i].hi == want[i].hi;
    if (!ok)
        for (size_t i = 0; i < n; i++)
            printf("#   range %zu: [%llu, %llu)\n", i, (unsigned long long)r[i].lo,
                   (unsigned long long)r[i].hi);
    return ok;
}

static void write_model(fs_wbuf *b, base_file *f, uint8_t *model, uint64_t off, size_t len,
                        unsigned seed)
{
    uint8_t *src = malloc(len);
    pattern(src, len, seed);
    CHECK_EQ_INT(fs_wbuf_write(b, off, src, len, fill_from, f), 0);
    memcpy(model + off, src, len);
    free(src);
}

static int dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n == 0;
}

static void test_ranges_and_fill(int dirfd)
{
    base_file f = { malloc(FILE_LEN), 0 };
    uint8_t *model = malloc(FILE_LEN);
    pattern(f.bytes, FILE_LEN, 1);
    memcpy(model, f.bytes, FILE_LEN);
    fs_wbuf_pool *pool = NULL;
    fs_wbuf *b = NULL;
    CHECK_EQ_INT(fs_wbuf_pool_new(dirfd, 64 * (uint64_t)PAGE, &pool), 0);
    CHECK_EQ_INT(fs_wbuf_new(pool, &b), 0);
    CHECK(fs_wbuf_empty(b));

    /* a write inside one page: the page is filled from the file around it */
    write_model(b, &f, model, 100, 10, 2);
    CHECK(!fs_wbuf_empty(b));
    CHECK(f.fills > 0);
    CHECK(ranges_are(b, (ck_byte_range[]){ { 100, 110 } }, 1));
    CHECK(reads_as(b, &f, model, 0, 2 * PAGE));
    CHECK_EQ_INT(fs_wbuf_pool_mem(pool), PAGE);
    /* the page holds the file's bytes as they were: a later change of the
     * file does not show through the written page, only elsewhere */
    uint8_t old0 = f.bytes[0], oldp = f.bytes[PAGE + 5];
    f.bytes[0] ^= 0xff;
    f.bytes[PAGE + 5] ^= 0xff;
    uint8_t got[2];
    CHECK_EQ_INT(fs_wbuf_read(b, 0, got, 1, fill_from, &f), 0);
    CHECK_EQ_INT(got[0], old0);
    CHECK_EQ_INT(fs_wbuf_read(b, PAGE + 5, got + 1, 1, fill_from, &f), 0);
    CHECK_EQ_INT(got[1], (uint8_t)(oldp ^ 0xff));
    f.bytes[0] = old0;
    f.bytes[PAGE + 5] = oldp;

    /* overlapping, adjacent and disjoint writes; the last one wins where they overlap */
    write_model(b, &f, model, 50, 100, 3);           /* [50,150) overlaps [100,110) */
    CHECK(ranges_are(b, (ck_byte_range[]){ { 50, 150 } }, 1));
    write_model(b, &f, model, 120, PAGE, 4);         /* [120, PAGE+120): across a page edge */
    CHECK(ranges_are(b, (ck_byte_range[]){ { 50, PAGE + 120 } }, 1));
    write_model(b, &f, model, PAGE + 120, 30, 5);    /* adjacent: merged */
    CHECK(ranges_are(b, (ck_byte_range[]){ { 50, PAGE + 150 } }, 1));
    write_model(b, &f, model, 5 * PAGE + 7, 20, 6);  /* disjoint */
    write_model(b, &f, model, 10, 5, 7);             /* disjoint, before the others */
    CHECK(ranges_are(b, (ck_byte_range[]){ { 10, 15 }, { 50, PAGE + 150 }, { 5 * PAGE + 7, 5 * PAGE + 27 } }, 3));
    CHECK(reads_as(b, &f, model, 0, 8 * PAGE));
    CHECK(reads_as(b, &f, model, PAGE - 3, 9)); /* a read across a page edge */
    write_model(b, &f, model, 0, 6 * PAGE, 8);       /* one write covering all of them */
    CHECK(ranges_are(b, (ck_byte_range[]){ { 0, 6 * PAGE } }, 1));
    CHECK(reads_as(b, &f, model, 0, 8 * PAGE));

    /* truncation at 2 pages + 100: ranges cut there, the page holding it
     * zeroed from it on, pages past it dropped (their bytes are the file's again) */
    uint64_t size = 2 * PAGE + 100;
    fs_wbuf_truncate(b, size);
    CHECK(ranges_are(b, (ck_byte_range[]){ { 0, size } }, 1));
    CHECK(reads_as(b, &f, model, 0, size));
    uint8_t *tail = malloc(PAGE);
    CHECK_EQ_INT(fs_wbuf_read(b, size, tail, PAGE - 100, fill_from, &f), 0);
    size_t zeros = 0;
    for (size_t i = 0; i < PAGE - 100; i++)
        zeros += tail[i] == 0;
    CHECK_EQ_INT(zeros, PAGE - 100);
    CHECK_EQ_INT(fs_wbuf_read(b, 4 * PAGE, tail, PAGE, fill_from, &f), 0);
    CHECK(memcmp(tail, f.bytes + 4 * PAGE, PAGE) == 0);
    CHECK_EQ_INT(fs_wbuf_pool_mem(pool), 3 * PAGE);
    free(tail);
    fs_wbuf_truncate(b, 0);
    CHECK(fs_wbuf_empty(b));
    CHECK_EQ_INT(fs_wbuf_pool_mem(pool), 0);

    write_model(b, &f, model, 3, 3, 9);
    fs_wbuf_clear(b);
    CHECK(fs_wbuf_empty(b));
    CHECK_EQ_INT(fs_wbuf_pool_mem(pool), 0);
    CHECK_EQ_INT(fs_wbuf_pool_spilled(pool), 0);
    fs_wbuf_free(b);
    fs_wbuf_pool_free(pool);
    free(model);
    free(f.bytes);
}

/* Two buffers in a pool bounded to 3 pages: past it they spill their own
 * pages, memory stays at the bound, and every byte reads back. */
static void test_spill(int dirfd, const char *dir)
{
    base_file f = { malloc(FILE_LEN), 0 };
    uint8_t *m1 = malloc(FILE_LEN), *m2 = malloc(FILE_LEN);
    pattern(f.bytes, FILE_LEN, 11);
    memcpy(m1, f.bytes, FILE_LEN);
    memcpy(m2, f.bytes, FILE_LEN);
    fs_wbuf_pool *pool = NULL;
    fs_wbuf *b1 = NULL, *b2 = NULL;
    CHECK_EQ_INT(fs_wbuf_pool_new(dirfd, 3 * (uint64_t)PAGE, &pool), 0);
    CHECK_EQ_INT(fs_wbuf_new(pool, &b1), 0);
    CHECK_EQ_INT(fs_wbuf_new(pool, &b2), 0);
    for (unsigned i = 0; i < 8; i++) {
        write_model(b1, &f, m1, (uint64_t)i * PAGE + 17, PAGE - 30, 20 + i); /* partial pages */
        write_model(b2, &f, m2, (uint64_t)(15 - i) * PAGE, PAGE, 40 + i);
    }
    CHECK(fs_wbuf_pool_mem(pool) <= 3 * (uint64_t)PAGE + PAGE);
    CHECK(fs_wbuf_pool_spilled(pool) >= 12 * (uint64_t)PAGE);
    CHECK(reads_as(b1, &f, m1, 0, FILE_LEN));
    CHECK(reads_as(b2, &f, m2, 0, FILE_LEN));
    CHECK(reads_as(b1, &f, m1, 3 * PAGE + 5, 2 * PAGE)); /* spilled pages, unaligned */
    /* overwrite in spilled pages, then truncate inside one */
    write_model(b1, &f, m1, 2 * PAGE + 1000, 10, 60);
    CHECK(reads_as(b1, &f, m1, 0, FILE_LEN));
    fs_wbuf_truncate(b2, 12 * PAGE + 7);
    memset(m2 + 12 * PAGE + 7, 0, PAGE - 7);
    memcpy(m2 + 13 * PAGE, f.bytes + 13 * PAGE, 3 * PAGE);
    CHECK(reads_as(b2, &f, m2, 8 * PAGE, 8 * PAGE));
    CHECK(ranges_are(b2, (ck_byte_range[]){ { 8 * PAGE, 12 * PAGE + 7 } }, 1));
    /* the spill file has no name in SOURCE */
    CHECK(dir_is_empty(dir));
    fs_wbuf_free(b1);
    fs_wbuf_free(b2);
    CHECK_EQ_INT(fs_wbuf_pool_mem(pool), 0);
    fs_wbuf_pool_free(pool);
    free(m1);
    free(m2);
    free(f.bytes);
}

int main(void)
{
    char dir[] = "/tmp/test_fs_wbuf.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    CHECK(dirfd >= 0);
    test_ranges_and_fill(dirfd);
    test_spill(dirfd, dir);
    close(dirfd);
    rmdir(dir);
    return check_done();
}
