/* Just enough XML for S3's answers: ListObjectsV2 results, errors and
 * multipart upload ids.  Not a general parser: S3 answers are flat
 * elements of text, so this finds <Tag>text</Tag> pairs inside a bounded
 * buffer and decodes the five entities and numeric references.  Every
 * function is bounded by the length it is given. */
#ifndef CKPT_S3_XML_H
#define CKPT_S3_XML_H

#include <stddef.h>
#include <stdint.h>

/* The first element <tag>...</tag> in [xml, xml+len): *inner and *inner_len
 * are its content (undecoded).  1 if found, 0 if not. */
int ck_xml_find(const char *xml, size_t len, const char *tag, const char **inner,
                size_t *inner_len);
/* Decodes entities of text[0..len) into out (NUL-terminated).  0, or
 * -ENAMETOOLONG if it does not fit, -EINVAL for a malformed reference. */
int ck_xml_text(const char *text, size_t len, char *out, size_t cap);
/* ck_xml_find + ck_xml_text: 1 found and decoded, 0 absent, -errno. */
int ck_xml_get(const char *xml, size_t len, const char *tag, char *out, size_t cap);

typedef struct {
    char key[1024 + 1];  /* S3 keys are at most 1024 bytes */
    uint64_t size;
    char etag[128];      /* as sent, quotes included */
    char last_modified[40];
} ck_s3_list_entry;

/* Called for each <Contents> of a ListObjectsV2 answer; non-zero stops. */
typedef int (*ck_s3_list_fn)(void *ctx, const ck_s3_list_entry *e);

/* Parses one ListObjectsV2 page: each entry to fn, *truncated, and the
 * continuation token (if any) into token.  -EINVAL for a malformed answer. */
int ck_s3_parse_list(const char *xml, size_t len, ck_s3_list_fn fn, void *ctx, int *truncated,
                     char *token, size_t token_cap);

/* "2026-12-01T17:39:16.343Z" (ISO 8601, UTC) -> seconds and nanoseconds. */
int ck_s3_parse_time(const char *s, int64_t *sec, long *nsec);

#endif
