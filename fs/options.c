#include "options.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dtype_convert.h"

enum { KEY_HELP, KEY_VERSION, KEY_RW, KEY_RO, KEY_CACHE, KEY_DTYPE, KEY_HF_SHARD, KEY_HF_PREFIX, KEY_HF_DIR,
       KEY_S3 };

#define OPT(t, p) { t, offsetof(fs_options, p), 1 }
static const struct fuse_opt option_spec[] = {
    OPT("flat", flat),
    OPT("npy", npy),
    OPT("create", create),
    OPT("nosplice", nosplice),
    FUSE_OPT_KEY("rw", KEY_RW),
    FUSE_OPT_KEY("ro", KEY_RO),
    FUSE_OPT_KEY("cache=", KEY_CACHE),
    FUSE_OPT_KEY("dtype=", KEY_DTYPE),
    FUSE_OPT_KEY("hf_shard=", KEY_HF_SHARD),
    FUSE_OPT_KEY("hf_prefix=", KEY_HF_PREFIX),
    FUSE_OPT_KEY("hf_dir=", KEY_HF_DIR),
    FUSE_OPT_KEY("endpoint=", KEY_S3),
    FUSE_OPT_KEY("region=", KEY_S3),
    FUSE_OPT_KEY("profile=", KEY_S3),
    FUSE_OPT_KEY("addressing=", KEY_S3),
    FUSE_OPT_KEY("-h", KEY_HELP),
    FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION),
    FUSE_OPT_KEY("--version", KEY_VERSION),
    FUSE_OPT_END
};

int fs_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -EINVAL;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end == 'B')
        end++;
    if (*end || v * mul > 1.8e19)
        return -EINVAL;
    *out = (uint64_t)(v * mul);
    return 0;
}

/* The view options (views.h); 0 or -EINVAL. */
static int view_option(fs_options *o, int key, const char *val)
{
    char **slot = key == KEY_HF_PREFIX ? &o->hf_prefix : &o->hf_dir;
    switch (key) {
    case KEY_DTYPE:
        if (strcmp(val, "none") == 0) {
            o->view_dtype = CK_DT_INVALID;
            return 0;
        }
        o->view_dtype = ck_dtype_from_torch_name(val); /* also "half", "float" */
        return ck_dtype_is_convert_target(o->view_dtype) ? 0 : -EINVAL;
    case KEY_HF_SHARD:
        return fs_parse_size(val, &o->hf_shard_bytes) || o->hf_shard_bytes == 0 ? -EINVAL : 0;
    default:
        if (!*val)
            return -EINVAL;
        free(*slot);
        *slot = strdup(val);
        return *slot ? 0 : -ENOMEM;
    }
}

static int option_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    fs_options *o = data;
    switch (key) {
    case KEY_HELP:
        o->show_help = 1;
        return 0;
    case KEY_VERSION:
        o->show_version = 1;
        return 0;
    case KEY_RW:
        o->rw = 1;
        return 0; /* ours: read-only is the default and adds "ro" itself */
    case KEY_RO:
        o->rw = 0;
        return 0;
    case KEY_CACHE:
        if (fs_parse_size(arg + strlen("cache="), &o->cache_bytes)) {
            fprintf(stderr, "ckptfs: bad -o %s (want a size such as 256M or 2G)\n", arg);
            o->parse_error = 1;
        }
        return 0;
    case KEY_DTYPE:
    case KEY_HF_SHARD:
    case KEY_HF_PREFIX:
    case KEY_HF_DIR:
        if (view_option(o, key, strchr(arg, '=') + 1) != 0) {
            fprintf(stderr, "ckptfs: bad -o %s (%s)\n", arg,
                    key == KEY_DTYPE      ? "want bfloat16, float16, float32 or none"
                    : key == KEY_HF_SHARD ? "want a size above 0, such as 5G or 500M"
                                          : "want a non-empty value");
            o->parse_error = 1;
        }
        return 0;
    case KEY_S3: {
        /* endpoint=, region=, profile=, addressing=: kept as given, judged
         * when SOURCE is an s3:// URL (planner/s3_config.c) */
        const char *eq = strchr(arg, '=');
        char **slot = strncmp(arg, "endpoint=", 9) == 0 ? &o->endpoint
                      : strncmp(arg, "region=", 7) == 0  ? &o->region
                      : strncmp(arg, "profile=", 8) == 0 ? &o->profile
                                                         : &o->addressing;
        free(*slot);
        if (!(*slot = strdup(eq + 1)) || !eq[1]) {
            fprintf(stderr, "ckptfs: bad -o %s (empty value)\n", arg);
            o->parse_error = 1;
        }
        return 0;
    }
    case FUSE_OPT_KEY_NONOPT:
        if (!o->source) {
            o->source = strdup(arg);
            return 0;
        }
        if (!o->mountpoint) {
            o->mountpoint = strdup(arg);
            return 1; /* libfuse needs the mountpoint too */
        }
        fprintf(stderr, "ckptfs: unexpected argument '%s'\n", arg);
        o->parse_error = 1;
        return 0;
    default:
        return 1;
    }
}

void fs_options_usage(const char *prog)
{
    printf("usage: %s [options] SOURCE MOUNTPOINT\n"
           "       %s cp [options] SOURCE[:PATH] DEST   (copy without a mount; cp --help)\n"
           "\n"
           "Mounts a PyTorch Distributed Checkpoint (a directory with .metadata), a\n"
           ".safetensors file or a directory of them (local, or s3://BUCKET/PREFIX);\n"
           "every tensor key becomes a file.\n"
           "Unmount with: fusermount3 -u MOUNTPOINT\n"
           "\n"
           "ckptfs options:\n"
           "    -o cache=SIZE   memory for decoded (zstd/strided) chunks (default 256M)\n"
           "    -o flat         every key as one file named by its FQN at the root\n"
           "    -o npy          list PATH.npy views instead of raw tensor files\n"
           "    -o rw           allow writes, committed as new DCP save plans\n"
           "    -o create       with rw: SOURCE may be empty or missing (new checkpoint)\n"
           "    -o dtype=T      floating tensors of the views as T: bfloat16, float16, float32\n"
           "    -o hf_shard=SIZE  shard bound of /.ckptfs/hf (default 5G)\n"
           "    -o hf_prefix=P  /.ckptfs/hf holds the keys under P., without it\n"
           "    -o hf_dir=DIR   files of DIR (config.json, tokenizer...) also in /.ckptfs/hf\n"
           "    -o nosplice     replies always copied, never spliced from shard files\n"
           "    -o endpoint=URL, region=R, profile=P, addressing=path|virtual\n"
           "                    for SOURCE s3://BUCKET/PREFIX (else the AWS CLI's settings)\n"
           "    -h, --help      this help\n"
           "    -V, --version   version\n"
           "\n"
           "libfuse options:\n",
           prog, prog);
}

int fs_options_parse(struct fuse_args *args, fs_options *opts)
{
    opts->hf_shard_bytes = 5ull << 30;
    opts->uid = getuid();
    opts->gid = getgid();
    if (fuse_opt_parse(args, opts, option_spec, option_proc) != 0)
        return -EINVAL;
    return opts->parse_error ? -EINVAL : 0;
}

void fs_options_free(fs_options *opts)
{
    free(opts->source);
    free(opts->mountpoint);
    free(opts->endpoint);
    free(opts->region);
    free(opts->profile);
    free(opts->addressing);
    free(opts->hf_prefix);
    free(opts->hf_dir);
}
