/* The in-memory model of a mounted checkpoint, whatever its source format:
 * keys, their dtype and global shape, the chunks that tile them, and where
 * each chunk's bytes live.  Built by dcp_metadata.c (DCP) or
 * st_source.c (safetensors); read by the load planner and chunk reader. */
#ifndef CKPT_CKPT_H
#define CKPT_CKPT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include "byte_source.h"
#include "dtype.h"
#include "file_id.h"
#include "storage.h"
#include "torch_item.h"

typedef enum { CK_KEY_TENSOR = 0, CK_KEY_BYTES = 1 } ck_key_kind;

/* CK_TF_UNKNOWN: a transform we cannot undo; reads of the chunk fail with EIO. */
enum { CK_TF_ZSTD = 1u << 0, CK_TF_UNKNOWN = 1u << 31 };

typedef enum {
    CK_ITEM_TORCH_SAVE = 0, /* a torch.save archive (DCP FileSystemWriter) */
    CK_ITEM_RAW = 1,        /* C-contiguous element bytes (safetensors; DCP items found in
                             * a safetensors blob on first read, dcp_safetensors.h) */
} ck_item_format;

typedef enum { CK_SRC_DCP = 0, CK_SRC_SAFETENSORS = 1, CK_SRC_DCP_HF = 2 } ck_source_kind;

/* How a chunk's row-major image is reached, learnt on first use. */
typedef struct {
    bool direct;          /* image = bytes [file_offset, +nbytes) of the file, as is */
    uint64_t file_offset; /* when direct */
    uint64_t nbytes;      /* image length: chunk numel * element size (bytes key: payload) */
    uint64_t cache_offset; /* decoded chunks: where the image starts in the cached buffer */
    /* The item's layout, kept only for chunks that must be decoded or
     * gathered (a direct chunk needs none of it): a checkpoint with
     * 100,000 chunks should not carry 100,000 copies of 32 strides. */
    ck_torch_item *item;
} ck_chunk_layout;

typedef struct {
    uint64_t *offsets;   /* ndim entries: where the chunk sits in the tensor */
    uint64_t *sizes;     /* ndim entries */
    uint32_t file;       /* index into ck_checkpoint.files */
    uint64_t offset;     /* item bytes in the file */
    uint64_t length;
    uint32_t transforms; /* CK_TF_* */
    ck_item_format format;
    /* resolution: 0 = not yet, 1 = ok, < 0 = -errno (sticky) */
    _Atomic int state;
    ck_chunk_layout layout;
} ck_chunk;

struct ck_chunk_index; /* chunk_index.h */

typedef struct {
    char *fqn;
    ck_key_kind kind;
    ck_dtype dtype;       /* tensors only */
    uint32_t ndim;
    uint64_t *shape;
    uint64_t numel;
    uint64_t nbytes;      /* tensors: numel * size; bytes keys: see ck_key_size() */
    uint32_t nchunks;
    ck_chunk *chunks;
    /* which chunk holds an element, for keys with more than a few chunks;
     * NULL: the planner scans (see chunk_index.h) */
    struct ck_chunk_index *chunk_index;
    /* 0, or -errno when the key cannot be read at all (chunks that do not
     * tile it): the mount goes on, reads of this key fail. */
    int error;
    /* DCP planner_data: the nested-dict path, kept for commits; may be NULL */
    char **planner_path;
    uint8_t *planner_path_is_int; /* element i was an int, not a str */
    uint32_t planner_path_len;
    uint8_t planner_kind; /* CK_PD_* (dcp_dialect.h): absent, None, tuple or list */
    /* DCP: 0, or 1 + index of its TensorProperties in ck->dialect->props */
    uint32_t props_id;
    /* DCP: its place in state_dict_metadata, kept by commits */
    size_t md_order;
} ck_key;

typedef struct {
    char *path;           /* relative to the checkpoint root */
    _Atomic int fd;       /* -1 until first opened, and for objects without an fd */
    ck_object *_Atomic obj; /* NULL until first opened; owns fd */
    /* The file's identity when this state first opened it (set before obj
     * is published; local files only: an object store pins the ETag in
     * every read); a read whose file no longer has it fails (file_id.h). */
    ck_file_id id;
    bool pinned;          /* id is set (under files_lock, or at ck_open) */
    _Atomic int changed;  /* 1 once a change was seen (logged once, sticky) */
} ck_file;

typedef struct ck_cache ck_cache;

typedef struct ck_checkpoint {
    char *source;         /* as given */
    int root_fd;          /* O_PATH|O_DIRECTORY fd of the root directory; -1 when remote */
    ck_storage *storage;  /* where the files live (storage.h) */
    /* DCP: `.metadata` as read at open; a commit refuses to replace a
     * .metadata that no longer has its identity (someone else wrote it) */
    ck_object_info metadata_info;
    ck_source_kind kind;
    size_t nkeys;
    ck_key *keys;         /* sorted by fqn (strcmp) */
    size_t nfiles;
    ck_file *files;
    struct timespec mtime;
    char *version;        /* Metadata.version or NULL */
    /* DCP: the keys were built while .metadata was parsed (dcp_metadata.c);
     * false: from its whole value tree (an odd document, or asked for) */
    bool metadata_streamed;
    struct ck_dcp_dialect *dialect; /* DCP: what commits carry over (dcp_dialect.h) */
    ck_cache *cache;
    /* per key (same index as keys): tensor bytes handed to the kernel's
     * read-ahead so far (readahead.c); NULL: no read-ahead */
    _Atomic uint64_t *readahead;
    /* decode workers for read-ahead of decoded chunks (decode_ahead.c), started
     * on first use; decode_pool_failed: could not start, decode in the
     * foreground */
    struct ck_decode_ahead_pool *_Atomic decode_pool;
    int decode_pool_failed;
    int decode_width; /* its number of workers, fixed at open (ck_decode_ahead_width) */
    /* Guards the arena during chunk resolution, the wait for a chunk
     * another thread is resolving (resolved), and the safetensors header
     * cache (dcp_st; held across a data file's first header read). */
    pthread_mutex_t lock;
    pthread_cond_t resolved;
    pthread_mutex_t files_lock; /* first opens of files not opened at ck_open */
    ck_pkl_memo pkl_memo; /* data.pkl members parsed lately (torch_item.h) */
    void *arena;          /* owner of strings/arrays above (ck_arena) */
    void *file_index;     /* path -> file index while building (ckpt.c) */
    void *dcp_st;         /* data files' safetensors blobs (dcp_safetensors.c), under lock */
} ck_checkpoint;

typedef struct {
    uint64_t cache_bytes; /* decoded-chunk cache bound (default 256 MiB) */
    const ck_storage_opts *storage; /* object-store settings; NULL = defaults */
    /* build DCP keys from .metadata's whole value tree, never while parsing:
     * the slow path every odd document takes, for tests to compare with */
    bool whole_tree_metadata;
} ck_open_opts;

/* Opens SOURCE: a DCP directory, a .safetensors file or a directory of them.
 * Every structural check happens here (see dcp_metadata.c, st_source.c):
 * bad metadata, storage paths leaving SOURCE, chunks that do not tile the
 * tensor.  On error returns -errno and writes one line naming the file and
 * the fault to err. */
int ck_open(const char *source, const ck_open_opts *opts, ck_checkpoint **out, char *err,
            size_t errlen);
void ck_close(ck_checkpoint *ck);
/* For `-o rw,create`: like ck_open, but an empty or missing directory
 * becomes a new, empty DCP checkpoint (its .metadata written at once). */
int ck_open_or_create(const char *source, const ck_open_opts *opts, ck_checkpoint **out,
                      char *err, size_t errlen);

const ck_key *ck_find_key(const ck_checkpoint *ck, const char *fqn);

/* Opens (once) and returns the fd of file i, refusing symlinks that leave
 * the root.  0 or -errno (-EOPNOTSUPP for objects without an fd). */
int ck_file_fd(ck_checkpoint *ck, uint32_t i, int *fd);
/* Opens (once) file i through the storage and returns its object. */
int ck_file_object(ck_checkpoint *ck, uint32_t i, ck_object **obj);
/* A byte source over bytes [base, base + len) of file i. */
int ck_file_source(ck_checkpoint *ck, uint32_t i, uint64_t base, uint64_t len,
                   ck_byte_source *src);
/* Reads exactly len bytes of file i at off: straight pread into dst where
 * the file has an fd.  -EIO for an error or a short file; -ETIMEDOUT (an
 * object store that did not answer) and -ENOMEM are transient. */
int ck_file_pread(ck_checkpoint *ck, uint32_t i, void *dst, size_t len, uint64_t off);
/* Starts fetching bytes [off, off + len) of file i where the storage gains
 * from it (object stores); returns at once. */
void ck_file_prefetch(ck_checkpoint *ck, uint32_t i, uint64_t off, uint64_t len);
/* File i's size as this state pinned it (local files, file_id.h) or as
 * seen at open (object stores). */
int ck_file_size(ck_checkpoint *ck, uint32_t i, uint64_t *size);

/* After bytes were read from file i: 0 if the file still has the identity
 * pinned for this state, else -EIO, logged once per file.  Reads check
 * after reading, so bytes that reached the caller before a rewrite began
 * pass and bytes of a rewrite never do.  Object stores pin every read to
 * the ETag seen at open instead: always 0 there unless marked changed. */
int ck_file_check(ck_checkpoint *ck, uint32_t i);

/* Size of a key's content: numel*elsize for tensors, the decoded payload for
 * bytes keys (may decode a zstd item). */
int ck_key_size(ck_checkpoint *ck, const ck_key *key, uint64_t *size);

/* Checks that chunks lie inside the shape, do not overlap and cover it.
 * ck_open runs it on every tensor key and marks failing keys' error. */
int ck_key_check_chunks(const ck_key *key, char *err, size_t errlen);

#endif
