/* Where an s3:// SOURCE lives and how to sign for it, resolved as the AWS
 * CLI does (SPEC "Object storage"):
 *   endpoint     -o endpoint=, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the
 *                profile's endpoint_url, else https://s3.REGION.amazonaws.com
 *   region       -o region=, AWS_REGION, AWS_DEFAULT_REGION, the profile's
 *                region, else us-east-1
 *   credentials  with -o profile=: that profile first; else
 *                AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN,
 *                then the profile (AWS_PROFILE, else "default") in
 *                AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) and
 *                AWS_CONFIG_FILE (~/.aws/config, "[profile NAME]"); none
 *                found: unsigned (anonymous) requests
 *   addressing   path-style (endpoint/BUCKET/KEY) unless -o addressing=virtual
 *                (BUCKET.host/KEY); AWS's own endpoint defaults to virtual. */
#ifndef CKPT_S3_CONFIG_H
#define CKPT_S3_CONFIG_H

#include <stddef.h>
#include "storage.h"

typedef const char *(*ck_s3_getenv_fn)(void *ctx, const char *name);

typedef struct {
    char *endpoint;      /* "http[s]://host[:port]", no trailing slash */
    char *region;
    char *access_key;    /* NULL: anonymous */
    char *secret_key;
    char *session_token; /* may be NULL */
    int virtual_hosted;
} ck_s3_config;

/* "s3://BUCKET/KEY..." -> bucket and the rest without leading or trailing
 * slashes (may be "").  -EINVAL with a message for anything else. */
int ck_s3_parse_source(const char *source, char **bucket, char **key, char *err, size_t errlen);

/* Resolves cfg from opts, the environment (through getenv_fn, so tests can
 * supply their own) and the AWS files.  -EINVAL with one line in err for a
 * malformed setting. */
int ck_s3_config_resolve(const ck_storage_opts *opts, ck_s3_getenv_fn getenv_fn, void *ctx,
                         ck_s3_config *cfg, char *err, size_t errlen);
void ck_s3_config_free(ck_s3_config *cfg);

/* Value of `key` in `[section]` of an INI text of len bytes (AWS files:
 * `key = value`, comments with # or ;, indented sub-settings skipped).
 * 1 and the value copied into out (truncation is an error: 0), 0 if absent. */
int ck_ini_get(const char *text, size_t len, const char *section, const char *key, char *out,
               size_t cap);

#endif
