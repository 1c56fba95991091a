/* libFuzzer target: a DCP `.metadata` file as ck_open meets it.  Each input
 * is written as the .metadata of one private temporary directory (made once
 * per process) which is then opened as a checkpoint; what ck_open accepts is
 * walked (keys, chunks, files) and closed again.  Storage paths that would
 * leave the directory must be refused, never opened.  What is accepted is
 * also written back as a commit with nothing changed would write it (the
 * dialect it was read in): that must succeed, or fail with a reason, and
 * give a pickle the reader takes with the same keys. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "metadata_write.h"
#include "pickle.h"

static char dir[64];
static char meta[96];

static void cleanup(void)
{
    unlink(meta);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/ckfuzz.XXXXXX", tmp && strlen(tmp) < 40 ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(meta, sizeof meta, "%s/.metadata", dir);
    atexit(cleanup);
    return 0;
}

/* ck as a commit that changes nothing writes it, then read back. */
static void rewrite(const ck_checkpoint *ck)
{
    size_t n = ck->nkeys;
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[512] = "";
    int rc = ck_metadata_write_unchanged(ck, "/x", "fuzz", &buf, &len, err, sizeof err);
    if (rc == -EINVAL && strstr(err, "place in state_dict_metadata"))
        __builtin_trap(); /* md_order is a permutation */
    if (rc && rc != -ENOMEM && (!err[0] || strchr(err, '\n'))) {
        fprintf(stderr, "ck_metadata_write failed (%d) without a one-line reason\n", rc);
        __builtin_trap();
    }
    if (!rc) {
        pk_doc *doc = NULL;
        char why[256];
        if (pk_parse(buf, len, &doc, why, sizeof why)) {
            fprintf(stderr, "rewritten metadata does not parse: %s\n", why);
            __builtin_trap();
        }
        const pk_value *sdm = pk_dict_get(pk_object_state_dict(pk_root(doc)), "state_dict_metadata");
        if (!sdm || sdm->kind != PK_DICT || sdm->u.dict.len != n)
            __builtin_trap();
        pk_free(doc);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(meta, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0)
            abort();
        done += (size_t)w;
    }
    close(fd);

    ck_checkpoint *ck = NULL;
    char err[1024] = "";
    ck_open_opts opts = { .cache_bytes = 1u << 20 };
    int rc = ck_open(dir, &opts, &ck, err, sizeof err);
    if (rc) {
        if (!err[0] || strchr(err, '\n')) {
            fprintf(stderr, "ck_open failed (%d) without a one-line reason: '%s'\n", rc, err);
            __builtin_trap();
        }
        return 0;
    }
    for (size_t i = 0; i < ck->nfiles; i++) {
        const char *p = ck->files[i].path;
        if (!p[0] || p[0] == '/' || strstr(p, "..") == p || strstr(p, "/../") ||
            (strlen(p) >= 3 && strcmp(p + strlen(p) - 3, "/..") == 0)) {
            fprintf(stderr, "storage path %s accepted\n", p);
            __builtin_trap();
        }
    }
    for (size_t i = 0; i < ck->nkeys; i++) {
        const ck_key *k = &ck->keys[i];
        if (i > 0 && strcmp(ck->keys[i - 1].fqn, k->fqn) >= 0)
            __builtin_trap(); /* sorted, no duplicates */
        (void)ck_find_key(ck, k->fqn);
        for (uint32_t c = 0; c < k->nchunks; c++)
            if (k->chunks[c].file >= ck->nfiles)
                __builtin_trap();
        if (k->kind == CK_KEY_TENSOR && !k->error) {
            char why[512];
            if (ck_key_check_chunks(k, why, sizeof why))
                __builtin_trap(); /* finish_model should have marked it */
        }
    }
    rewrite(ck);
    ck_close(ck);
    return 0;
}
