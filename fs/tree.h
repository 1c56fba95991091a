/* The path tree: checkpoint keys as files and directories, named by SPEC's
 * rules (FQN split at '.', components escaped, a key that is also a prefix
 * of others shown beside its directory as NAME.tensor / NAME.bytes). */
#ifndef CKPTFS_TREE_H
#define CKPTFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

typedef struct fs_node fs_node;
struct fs_node {
    char *name;          /* escaped component as listed */
    char *path;          /* "/a/b" ("/" for the root) */
    uint64_t hash;       /* of path: the tree's map (rehashed as it grows) */
    fs_node *parent;
    bool is_dir;
    const ck_key *key;   /* files only */
    fs_node **children;  /* directories: sorted by name */
    size_t nchildren, cap;
};

typedef struct fs_tree fs_tree;

/* flat: every key at the root, named by its escaped FQN. */
int fs_tree_build(const ck_checkpoint *ck, bool flat, fs_tree **out);
void fs_tree_free(fs_tree *t);
fs_node *fs_tree_root(fs_tree *t);
/* The longest name a lookup in the tree can answer, views included (at
 * least 255, at most FUSE's 1024): statfs's namemax. */
size_t fs_tree_name_max(const fs_tree *t);
/* Exact path lookup ("/a/b"); NULL if absent. */
fs_node *fs_tree_lookup(fs_tree *t, const char *path);

/* Calls visit for every file with a key under dir (dir itself if it is
 * one), depth first without recursion (FQNs may be deep); stops at the
 * first non-zero return, which it returns.  -ENOMEM. */
int fs_tree_walk_files(const fs_node *dir, int (*visit)(void *ctx, const fs_node *file),
                       void *ctx);
/* Components between the root and n (0 for the root). */
size_t fs_node_depth(const fs_node *n);

/* Escapes one component into out (cap bytes): % -> %25, / -> %2F,
 * "" -> %, "." -> %2E, ".." -> %2E%2E.  Returns the length or -ENAMETOOLONG. */
int fs_escape_component(const char *s, size_t n, char *out, size_t cap);

#endif
