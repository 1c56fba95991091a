/* `ckptfs cp [options] SOURCE[:PATH] DEST`: copies a file or directory of
 * the tree or of a view with no FUSE mount (containers without /dev/fuse),
 * through the same checkpoint, tree and view code the daemon serves. */
#ifndef CKPTFS_CP_H
#define CKPTFS_CP_H

/* argv[0] is "cp".  Returns the exit status: 0, or 1 after one line per
 * failure on stderr. */
int fs_cp_main(int argc, char **argv);

#endif
