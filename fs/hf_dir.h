/* -o hf_dir=DIR: the regular files of DIR (config.json, tokenizer files,
 * generation_config.json...) that /.ckptfs/hf shows beside the generated
 * weights.  Opened once at mount and kept open, so what the mount serves is
 * what DIR held then, whatever happens to DIR's names later.
 *
 * Only regular files directly in DIR whose names do not start with "."
 * are taken; subdirectories are not.  Each is opened beneath DIR
 * (openat2 RESOLVE_BENEATH): a symlink that leaves DIR refuses the mount,
 * one that stays inside is followed. */
#ifndef CKPTFS_HF_DIR_H
#define CKPTFS_HF_DIR_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *name;
    int fd;
    uint64_t size; /* at mount */
} fs_hf_dir_file;

typedef struct {
    fs_hf_dir_file *files; /* sorted by name */
    size_t n;
} fs_hf_dir;

/* 0, or -errno with one line naming the file and the fault in err. */
int fs_hf_dir_open(const char *path, fs_hf_dir *out, char *err, size_t errlen);
void fs_hf_dir_close(fs_hf_dir *d);
/* Reads at off (clipped to the size seen at mount); a file that shrank
 * since gives -EIO. */
int fs_hf_dir_read(const fs_hf_dir_file *f, uint64_t off, void *dst, size_t len, size_t *got);

#endif
