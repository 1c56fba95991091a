/* Command-line options of ckptfs (SPEC "Command line"). */
#ifndef CKPTFS_OPTIONS_H
#define CKPTFS_OPTIONS_H

#include <fuse_opt.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "dtype.h"

typedef struct {
    char *source;
    char *mountpoint;
    uint64_t cache_bytes; /* -o cache=SIZE */
    /* object storage (SPEC "Object storage"): NULL = from the environment */
    char *endpoint, *region, *profile, *addressing;
    /* ints, not bools: fuse_opt stores option values through an int pointer */
    int rw, create, flat, npy, nosplice;
    int show_help, show_version;
    int parse_error;
    /* who owns every file: the daemon's user, read once (a stat per entry
     * of a listing would otherwise cost two system calls) */
    uid_t uid;
    gid_t gid;
    /* -o dtype=bfloat16|float16|float32: the dtype floating-point tensors
     * take in every view (.npy, .safetensors, /.ckptfs/hf, .pt); the
     * conversion is dtype_convert.h's (ck_dtype_view says which dtype a
     * tensor shows).  CK_DT_INVALID (no option, or dtype=none): no
     * conversion.  Raw key files are never converted. */
    ck_dtype view_dtype;
    uint64_t hf_shard_bytes; /* -o hf_shard=SIZE: bound of a /.ckptfs/hf shard (default 5G) */
    char *hf_prefix;         /* -o hf_prefix=P: /.ckptfs/hf holds keys under "P." without it */
    char *hf_dir;            /* -o hf_dir=DIR: regular files of DIR also appear in /.ckptfs/hf */
} fs_options;

/* Parses argv; leaves libfuse's own options in args.  Returns 0, or -EINVAL
 * with a message printed to stderr. */
int fs_options_parse(struct fuse_args *args, fs_options *opts);
void fs_options_free(fs_options *opts);
/* "256M", "1G", "4096", "1.5G" -> bytes; -EINVAL if malformed. */
int fs_parse_size(const char *s, uint64_t *out);
void fs_options_usage(const char *prog);

#endif
