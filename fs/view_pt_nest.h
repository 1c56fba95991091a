/* The nested state dict of a .pt view (view_pt.h): each key's path inside
 * the view's directory, from DCP's planner_data, and the tree of dicts and
 * lists that torch.distributed.checkpoint's _traverse.set_element builds
 * from those paths.  Only the shape is kept: leaves are indices the caller
 * gives meaning to. */
#ifndef CKPTFS_VIEW_PT_NEST_H
#define CKPTFS_VIEW_PT_NEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ckpt.h"

#define FS_PT_MAX_PATH 256 /* planner path elements per key (longer: a flat key) */

typedef struct {
    bool is_int;
    int64_t i;
    const char *s; /* str keys: not NUL-terminated where a suffix of an element */
    size_t len;
} fs_pt_elem;

/* Fills out (FS_PT_MAX_PATH entries) with k's path inside a directory depth
 * components deep: for the whole checkpoint (depth 0) its planner path as
 * it is; below, its planner path if that spells its FQN, with DIR's
 * components taken off the front (where DIR ends inside an element, the
 * rest of it is the first); else the FQN relative to DIR as one str.
 * Returns the number of elements (at least 1).  Elements point into k. */
size_t fs_pt_rel_path(const ck_key *k, size_t depth, fs_pt_elem *out);

enum { FS_PT_DICT, FS_PT_LIST, FS_PT_TENSOR, FS_PT_OBJECT };

typedef struct fs_pt_node fs_pt_node;
typedef struct {
    fs_pt_elem key;  /* dicts only */
    fs_pt_node *val; /* lists: NULL is None */
} fs_pt_slot;

struct fs_pt_node {
    int kind;          /* FS_PT_* */
    fs_pt_slot *slots; /* dicts in insertion order; lists by index */
    size_t n, cap;
    size_t leaf;       /* FS_PT_TENSOR, FS_PT_OBJECT: the caller's index */
};

struct fs_pt_map_entry;
typedef struct {
    fs_pt_node **nodes; /* every node, for freeing */
    size_t nnodes, capnodes;
    struct fs_pt_map_entry *map; /* (dict, key) -> child */
    size_t mapcap, maplen;
} fs_pt_nest;

/* A node owned by t (zeroed t to start); NULL if out of memory. */
fs_pt_node *fs_pt_node_new(fs_pt_nest *t, int kind);
/* Puts leaf at path p (n elements) under root, creating dicts for str and
 * lists for int elements as set_element does.  Returns 0, 1 if the path
 * collides with another's (a value where a container is needed, a taken
 * slot, a str index into a list, a list index < 0 or >= 2^24; nothing is
 * placed), or -ENOMEM. */
int fs_pt_nest_set(fs_pt_nest *t, fs_pt_node *root, const fs_pt_elem *p, size_t n,
                   fs_pt_node *leaf);
void fs_pt_nest_free(fs_pt_nest *t);

#endif
