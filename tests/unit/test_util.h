/* Helpers several unit tests share: whole files in and out, a SHA-256
 * taken by sha256sum, a JSON manifest, and a small zip scan.  They live
 * here (static inline, like check.h) so each test stays one file and one
 * binary.  None of them goes through the planner's parsers, so a test
 * judges the planner by code the planner does not share. */
#ifndef CKPT_TEST_UTIL_H
#define CKPT_TEST_UTIL_H

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "le.h"

/* How many entries of dir have names starting with prefix (0 if it cannot
 * be read). */
static inline int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return n;
}

/* The whole file at path in a malloc'd buffer with a NUL after its last
 * byte (so text can be parsed in place), its length in *len; NULL if it
 * cannot be opened or read.  Reads to the end instead of trusting a size
 * from fseek, so an empty file gives a (1-byte) buffer and length 0. */
static inline void *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    int failed = 0;
    for (;;) {
        if (cap - n < 2) { /* room for one more byte and the NUL */
            size_t ncap = cap ? 0 : 65536;
            if (cap && __builtin_mul_overflow(cap, (size_t)2, &ncap)) {
                failed = 1;
                break;
            }
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                failed = 1;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        if (got == 0)
            break;
        n += got;
    }
    failed = failed || ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Writes len bytes to path (created or truncated, mode 0644): 0 or -errno. */
static inline int write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    const uint8_t *p = data;
    int rc = 0;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            break;
        }
        p += w;
        len -= (size_t)w;
    }
    if (close(fd) != 0 && !rc)
        rc = -errno;
    return rc;
}

/* The lowercase hex SHA-256 of data, by sha256sum on a temp file: tests
 * need a digest to compare with the fixtures' manifests, the library never
 * does, and a digest of our own making would be one more thing to trust.
 * 0, or -1 if sha256sum could not be run. */
static inline int sha256_hex(const void *data, size_t len, char out[65])
{
    char path[] = "/tmp/ckpt-test-sha-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    int ok = write_file(path, data, len) == 0;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "sha256sum %s", path);
    FILE *p = ok ? popen(cmd, "r") : NULL;
    int rc = -1;
    if (p) {
        if (fscanf(p, "%64s", out) == 1 && strlen(out) == 64)
            rc = 0;
        pclose(p);
    }
    unlink(path);
    return rc;
}

/* The JSON document in the file at path (a fixture's manifest), or NULL
 * if it cannot be read or parsed.  Free with cJSON_Delete. */
static inline cJSON *load_json(const char *path)
{
    size_t len;
    char *text = slurp(path, &len);
    if (!text)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    return j;
}

/* Elements of a tensor of these dims (1 for a scalar).  Test shapes are
 * small, so the product is not checked for overflow. */
static inline uint64_t numel_of(uint32_t ndim, const uint64_t *dims)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < ndim; d++)
        n *= dims[d];
    return n;
}

#define READ_METADATA_PY "tests/bats/read_metadata.py"

/* Whether /usr/bin/python3 (the one with numpy) and read_metadata.py are
 * there; checks that ask Python are skipped where they are not. */
static inline int have_read_metadata_py(void)
{
    return access("/usr/bin/python3", X_OK) == 0 && access(READ_METADATA_PY, R_OK) == 0;
}

/* read_metadata.py --check [opts] DIR: Python's pickle with stand-in
 * classes reads the .metadata we wrote, and zipfile the items unless opts
 * is "--metadata-only".  Returns its exit status (0: no problems); the
 * problems it names go to stdout as TAP comments. */
static inline int read_metadata_check(const char *opts, const char *dir)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 " READ_METADATA_PY " --check %s '%s' 2>&1", opts,
             dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    char line[1024];
    while (fgets(line, sizeof line, p))
        printf("# %s", line);
    return pclose(p);
}

/* A stored member of a small zip whose name ends in suffix, found through
 * the central directory (torch writes sizes in data descriptors, so the
 * local headers say 0); NULL if there is none or the zip is not sound.
 * Independent of planner/zip_reader.c on purpose: tests of the pickle
 * code reach data.pkl without it.  No zip64: fixtures are small. */
static inline const uint8_t *zip_member(const uint8_t *z, size_t zlen, const char *suffix,
                                        size_t *len)
{
    if (zlen < 22)
        return NULL;
    size_t e = zlen - 22;
    for (;; e--) {
        if (memcmp(z + e, "PK\5\6", 4) == 0)
            break;
        if (e == 0 || zlen - e > 22 + 65535)
            return NULL;
    }
    size_t count = ck_le16(z + e + 10), off = ck_le32(z + e + 16);
    size_t slen = strlen(suffix);
    for (size_t i = 0; i < count; i++) {
        if (off > zlen || zlen - off < 46 || memcmp(z + off, "PK\1\2", 4) != 0)
            return NULL;
        size_t csize = ck_le32(z + off + 20), nlen = ck_le16(z + off + 28);
        size_t xlen = ck_le16(z + off + 30), clen = ck_le16(z + off + 32);
        size_t lho = ck_le32(z + off + 42);
        const uint8_t *name = z + off + 46;
        if (zlen - off - 46 < nlen)
            return NULL;
        if (nlen >= slen && memcmp(name + nlen - slen, suffix, slen) == 0) {
            if (lho > zlen || zlen - lho < 30 || memcmp(z + lho, "PK\3\4", 4) != 0)
                return NULL;
            size_t data = lho + 30 + ck_le16(z + lho + 26) + ck_le16(z + lho + 28);
            if (data > zlen || zlen - data < csize || ck_le16(z + off + 10) != 0)
                return NULL;
            *len = csize;
            return z + data;
        }
        off += 46 + nlen + xlen + clen;
    }
    return NULL;
}

#endif
