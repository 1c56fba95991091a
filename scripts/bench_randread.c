/* Random fixed-size preads over a set of files, for `make bench`.
 *
 *   bench_randread SECONDS BLOCK SEED FILE...
 *
 * Each operation picks a file with probability proportional to its size and
 * a BLOCK-aligned offset inside it, and preads BLOCK bytes (less only at the
 * end of a file).  Runs until SECONDS of wall time have passed and prints one
 * line: "ops N seconds S ops_per_s R bytes B".  Exit status 1 on any short
 * or failed read, so a broken mount cannot pass as a fast one. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const char *path;
    int fd;
    uint64_t size;
    uint64_t cumulative_blocks; /* blocks in this file and every file before it */
} bench_file;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64*: fast, and seeded so two runs pick the same offsets. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t seconds, block, seed;
    if (argc < 5 || parse_u64(argv[1], &seconds) || parse_u64(argv[2], &block) ||
        parse_u64(argv[3], &seed) || block == 0 || block > (64u << 20)) {
        fprintf(stderr, "usage: %s SECONDS BLOCK SEED FILE...\n", argv[0]);
        return 2;
    }
    size_t nfiles = (size_t)(argc - 4);
    bench_file *files = calloc(nfiles, sizeof *files);
    char *buf = NULL;
    if (!files || posix_memalign((void **)&buf, 4096, block)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint64_t total_blocks = 0;
    for (size_t i = 0; i < nfiles; i++) {
        struct stat st;
        files[i].path = argv[4 + i];
        files[i].fd = open(files[i].path, O_RDONLY | O_CLOEXEC);
        if (files[i].fd < 0 || fstat(files[i].fd, &st)) {
            fprintf(stderr, "%s: %s\n", files[i].path, strerror(errno));
            return 1;
        }
        files[i].size = (uint64_t)st.st_size;
        uint64_t blocks = files[i].size / block + (files[i].size % block != 0);
        if (__builtin_add_overflow(total_blocks, blocks, &total_blocks)) {
            fprintf(stderr, "too many blocks\n");
            return 1;
        }
        files[i].cumulative_blocks = total_blocks;
    }
    if (total_blocks == 0) {
        fprintf(stderr, "no data to read\n");
        return 1;
    }

    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 1, ops = 0, bytes = 0;
    double start = now_seconds(), elapsed = 0;
    while (elapsed < (double)seconds) {
        /* check the clock every 256 reads: clock_gettime is cheap but not free */
        for (int burst = 0; burst < 256; burst++) {
            uint64_t pick = next_random(&state) % total_blocks;
            size_t lo = 0, hi = nfiles - 1;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (files[mid].cumulative_blocks > pick)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            bench_file *f = &files[lo];
            uint64_t first = f->cumulative_blocks - (f->size / block + (f->size % block != 0));
            uint64_t offset = (pick - first) * block;
            uint64_t want = f->size - offset < block ? f->size - offset : block;
            ssize_t got = pread(f->fd, buf, want, (off_t)offset);
            if (got < 0 || (uint64_t)got != want) {
                fprintf(stderr, "%s: pread %" PRIu64 "@%" PRIu64 ": %s\n", f->path, want, offset,
                        got < 0 ? strerror(errno) : "short read");
                return 1;
            }
            ops++;
            bytes += (uint64_t)got;
        }
        elapsed = now_seconds() - start;
    }
    printf("ops %" PRIu64 " seconds %.3f ops_per_s %.0f bytes %" PRIu64 "\n", ops, elapsed,
           (double)ops / elapsed, bytes);
    for (size_t i = 0; i < nfiles; i++)
        close(files[i].fd);
    free(buf);
    free(files);
    return 0;
}
