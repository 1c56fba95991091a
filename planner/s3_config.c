/* Resolution of an s3:// source's endpoint, region, credentials and
 * addressing: see s3_config.h for the order, which is the AWS CLI's. */
#include "s3_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define AWS_FILE_MAX (1u << 20) /* credentials/config files beyond 1 MiB are not read */
#define VALUE_MAX 1024

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int ck_ini_get(const char *text, size_t len, const char *section, const char *key, char *out,
               size_t cap)
{
    size_t seclen = strlen(section), keylen = strlen(key);
    int in_section = 0;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl != NULL);
        /* indented lines are sub-settings (`s3 =` blocks): not ours */
        if (n && is_space(line[0]) && line[0] != '\r')
            continue;
        while (n && is_space(line[n - 1]))
            n--;
        if (n == 0 || line[0] == '#' || line[0] == ';')
            continue;
        if (line[0] == '[') {
            const char *s = line + 1, *e = line + n - 1;
            if (*e != ']')
                continue;
            while (s < e && is_space(*s))
                s++;
            while (e > s && is_space(e[-1]))
                e--;
            in_section = (size_t)(e - s) == seclen && memcmp(s, section, seclen) == 0;
            continue;
        }
        if (!in_section)
            continue;
        const char *eq = memchr(line, '=', n);
        if (!eq)
            continue;
        const char *ke = eq;
        while (ke > line && is_space(ke[-1]))
            ke--;
        if ((size_t)(ke - line) != keylen || memcmp(line, key, keylen) != 0)
            continue;
        const char *v = eq + 1, *ve = line + n;
        while (v < ve && is_space(*v))
            v++;
        size_t vlen = (size_t)(ve - v);
        if (vlen >= cap)
            return 0;
        memcpy(out, v, vlen);
        out[vlen] = '\0';
        return 1;
    }
    return 0;
}

int ck_s3_parse_source(const char *source, char **bucket, char **key, char *err, size_t errlen)
{
    *bucket = *key = NULL;
    if (strncmp(source, "s3://", 5) != 0) {
        snprintf(err, errlen, "%s: not an s3:// URL", source);
        return -EINVAL;
    }
    const char *b = source + 5;
    const char *slash = strchr(b, '/');
    size_t blen = slash ? (size_t)(slash - b) : strlen(b);
    /* S3 bucket names: 3-63 of [a-z0-9.-]; RGW also allows _ and capitals */
    int ok = blen >= 1 && blen <= 255;
    for (size_t i = 0; ok && i < blen; i++) {
        char c = b[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '-' || c == '_';
    }
    if (!ok) {
        snprintf(err, errlen, "%s: not a valid bucket name in s3://BUCKET/PREFIX", source);
        return -EINVAL;
    }
    const char *k = slash ? slash + 1 : "";
    while (*k == '/')
        k++;
    size_t klen = strlen(k);
    while (klen && k[klen - 1] == '/')
        klen--;
    *bucket = strndup(b, blen);
    *key = strndup(k, klen);
    if (!*bucket || !*key) {
        free(*bucket);
        free(*key);
        *bucket = *key = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* The whole of a small file, NUL-terminated; NULL if absent or too big. */
static char *read_small_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= AWS_FILE_MAX &&
        (buf = malloc((size_t)st.st_size + 1))) {
        size_t got = 0;
        while (got < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        buf[got] = '\0';
        *len = got;
    }
    close(fd);
    return buf;
}

typedef struct {
    char *cred, *conf;
    size_t cred_len, conf_len;
    char conf_section[VALUE_MAX + 16];
    const char *profile;
} aws_files;

static const char *env(ck_s3_getenv_fn fn, void *ctx, const char *name)
{
    const char *v = fn(ctx, name);
    return v && *v ? v : NULL;
}

static void load_files(aws_files *f, ck_s3_getenv_fn fn, void *ctx, const char *profile)
{
    char path[4096];
    const char *home = env(fn, ctx, "HOME");
    const char *cred = env(fn, ctx, "AWS_SHARED_CREDENTIALS_FILE");
    const char *conf = env(fn, ctx, "AWS_CONFIG_FILE");
    memset(f, 0, sizeof *f);
    f->profile = profile;
    if (cred || home) {
        if (!cred)
            snprintf(path, sizeof path, "%s/.aws/credentials", home);
        f->cred = read_small_file(cred ? cred : path, &f->cred_len);
    }
    if (conf || home) {
        if (!conf)
            snprintf(path, sizeof path, "%s/.aws/config", home);
        f->conf = read_small_file(conf ? conf : path, &f->conf_len);
    }
    /* ~/.aws/config names profiles "[profile NAME]", except the default */
    if (strcmp(profile, "default") == 0)
        snprintf(f->conf_section, sizeof f->conf_section, "default");
    else
        snprintf(f->conf_section, sizeof f->conf_section, "profile %s", profile);
}

/* The profile's setting: the credentials file first, then the config file. */
static int profile_get(const aws_files *f, const char *key, char *out, size_t cap)
{
    if (f->cred && ck_ini_get(f->cred, f->cred_len, f->profile, key, out, cap))
        return 1;
    return f->conf && ck_ini_get(f->conf, f->conf_len, f->conf_section, key, out, cap);
}

static int set(char **dst, const char *v)
{
    free(*dst);
    *dst = v ? strdup(v) : NULL;
    return v && !*dst ? -ENOMEM : 0;
}

static int profile_credentials(const aws_files *f, ck_s3_config *cfg)
{
    char id[VALUE_MAX], secret[VALUE_MAX], token[VALUE_MAX];
    if (!profile_get(f, "aws_access_key_id", id, sizeof id) ||
        !profile_get(f, "aws_secret_access_key", secret, sizeof secret))
        return 0;
    int has_token = profile_get(f, "aws_session_token", token, sizeof token);
    if (set(&cfg->access_key, id) || set(&cfg->secret_key, secret) ||
        set(&cfg->session_token, has_token ? token : NULL))
        return -ENOMEM;
    return 1;
}

/* A header value must not carry CR/LF (curl would send them as is). */
static int printable(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

int ck_s3_config_resolve(const ck_storage_opts *opts, ck_s3_getenv_fn fn, void *ctx,
                         ck_s3_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    const char *profile = opts && opts->profile ? opts->profile : env(fn, ctx, "AWS_PROFILE");
    int explicit_profile = opts && opts->profile;
    if (!profile)
        profile = "default";
    aws_files f;
    load_files(&f, fn, ctx, profile);
    int rc = 0;
    char val[VALUE_MAX];

    /* credentials */
    int found = 0;
    if (explicit_profile)
        found = profile_credentials(&f, cfg);
    if (!found && env(fn, ctx, "AWS_ACCESS_KEY_ID") && env(fn, ctx, "AWS_SECRET_ACCESS_KEY")) {
        if (set(&cfg->access_key, env(fn, ctx, "AWS_ACCESS_KEY_ID")) ||
            set(&cfg->secret_key, env(fn, ctx, "AWS_SECRET_ACCESS_KEY")) ||
            set(&cfg->session_token, env(fn, ctx, "AWS_SESSION_TOKEN")))
            found = -ENOMEM;
        else
            found = 1;
    }
    if (!found)
        found = profile_credentials(&f, cfg);
    if (found < 0)
        rc = found;
    if (!rc && explicit_profile && !found && !f.cred && !f.conf) {
        snprintf(err, errlen, "profile %s: no ~/.aws/credentials or ~/.aws/config", profile);
        rc = -EINVAL;
    }

    /* region */
    const char *region = opts && opts->region ? opts->region : NULL;
    if (!region)
        region = env(fn, ctx, "AWS_REGION");
    if (!region)
        region = env(fn, ctx, "AWS_DEFAULT_REGION");
    if (!region && profile_get(&f, "region", val, sizeof val))
        region = val;
    if (!rc)
        rc = set(&cfg->region, region ? region : "us-east-1");

    /* endpoint */
    const char *ep = opts && opts->endpoint ? opts->endpoint : NULL;
    if (!ep)
        ep = env(fn, ctx, "AWS_ENDPOINT_URL_S3");
    if (!ep)
        ep = env(fn, ctx, "AWS_ENDPOINT_URL");
    char epbuf[VALUE_MAX];
    if (!ep && profile_get(&f, "endpoint_url", epbuf, sizeof epbuf))
        ep = epbuf;
    int aws_own = ep == NULL;
    char own[256];
    if (!rc && !ep) {
        snprintf(own, sizeof own, "https://s3.%s.amazonaws.com", cfg->region);
        ep = own;
    }
    if (!rc && strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) {
        snprintf(err, errlen, "endpoint %s: not an http:// or https:// URL", ep);
        rc = -EINVAL;
    }
    if (!rc && (rc = set(&cfg->endpoint, ep)) == 0) {
        size_t n = strlen(cfg->endpoint);
        while (n > 8 && cfg->endpoint[n - 1] == '/')
            cfg->endpoint[--n] = '\0';
        if (strchr(strstr(cfg->endpoint, "//") + 2, '/') || strchr(cfg->endpoint, '?')) {
            snprintf(err, errlen, "endpoint %s: must be scheme://host[:port] without a path", ep);
            rc = -EINVAL;
        }
    }

    /* addressing */
    const char *addr = opts && opts->addressing ? opts->addressing : NULL;
    if (!rc) {
        if (!addr)
            cfg->virtual_hosted = aws_own;
        else if (strcmp(addr, "virtual") == 0)
            cfg->virtual_hosted = 1;
        else if (strcmp(addr, "path") == 0)
            cfg->virtual_hosted = 0;
        else {
            snprintf(err, errlen, "addressing=%s: expected path or virtual", addr);
            rc = -EINVAL;
        }
    }
    if (!rc && (!printable(cfg->access_key) || !printable(cfg->secret_key) ||
                !printable(cfg->session_token) || !printable(cfg->region) ||
                !printable(cfg->endpoint))) {
        snprintf(err, errlen, "credentials or settings hold control characters");
        rc = -EINVAL;
    }
    free(f.cred);
    free(f.conf);
    if (rc)
        ck_s3_config_free(cfg);
    return rc;
}

void ck_s3_config_free(ck_s3_config *cfg)
{
    free(cfg->endpoint);
    free(cfg->region);
    free(cfg->access_key);
    free(cfg->secret_key);
    free(cfg->session_token);
    memset(cfg, 0, sizeof *cfg);
}
