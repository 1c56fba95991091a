/* Command-line options of ckptfs (SPEC "Command line"). */
#ifndef CKPTFS_OPTIONS_H
#define CKPTFS_OPTIONS_H

#include <fuse.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    char *source;
    char *mountpoint;
    uint64_t cache_bytes; /* -o cache=SIZE */
    /* object storage (SPEC "Object storage"): NULL = from the environment */
    char *endpoint, *region, *profile, *addressing;
    /* ints, not bools: fuse_opt stores option values through an int pointer */
    int rw, create, flat, npy;
    int show_help, show_version;
    int parse_error;
} fs_options;

/* Parses argv; leaves libfuse's own options in args.  Returns 0, or -EINVAL
 * with a message printed to stderr. */
int fs_options_parse(struct fuse_args *args, fs_options *opts);
void fs_options_free(fs_options *opts);
/* "256M", "1G", "4096", "1.5G" -> bytes; -EINVAL if malformed. */
int fs_parse_size(const char *s, uint64_t *out);
void fs_options_usage(const char *prog);

#endif
