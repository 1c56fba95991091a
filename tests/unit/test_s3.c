/* The FUSE-free parts of the S3 backend: settings resolution (AWS CLI
 * order), INI parsing, SOURCE parsing, canonical query and URL building,
 * ListObjectsV2 parsing, retry classification and the block runs that
 * coalesce missing blocks into GETs.  No network. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "s3_config.h"
#include "s3_http.h"
#include "s3_xml.h"
#include "storage_s3.h"

/* ---- a fake environment ---- */

typedef struct {
    const char *kv[32];
} fake_env;

static const char *fake_getenv(void *ctx, const char *name)
{
    fake_env *e = ctx;
    for (int i = 0; e->kv[i]; i += 2)
        if (strcmp(e->kv[i], name) == 0)
            return e->kv[i + 1];
    return NULL;
}

static char tmpdir[64];

static const char *write_file(const char *name, const char *text)
{
    static char path[8][128];
    static int n;
    char *p = path[n++ % 8];
    snprintf(p, 128, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

static void test_ini(void)
{
    const char *t = "# comment\n[default]\naws_access_key_id = AK1\n  nested = no\n"
                    "[other]\r\naws_access_key_id=AK2 \r\n; c\n[ profile x ]\nregion = eu-west-1\n"
                    "s3 =\n    addressing_style = virtual\n";
    char v[64];
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "default", "aws_access_key_id", v, sizeof v), 1);
    CHECK_EQ_STR(v, "AK1");
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "default", "nested", v, sizeof v), 0);
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "other", "aws_access_key_id", v, sizeof v), 1);
    CHECK_EQ_STR(v, "AK2");
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "profile x", "region", v, sizeof v), 1);
    CHECK_EQ_STR(v, "eu-west-1");
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "profile x", "addressing_style", v, sizeof v), 0);
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "missing", "region", v, sizeof v), 0);
    /* too long for the buffer: not found rather than truncated */
    CHECK_EQ_INT(ck_ini_get(t, strlen(t), "default", "aws_access_key_id", v, 3), 0);
    /* bounded by len: the text after it is not seen */
    CHECK_EQ_INT(ck_ini_get(t, 20, "default", "aws_access_key_id", v, sizeof v), 0);
}

static void test_source(void)
{
    char *b, *k, err[256];
    CHECK_EQ_INT(ck_s3_parse_source("s3://bkt/run1/step_10/", &b, &k, err, sizeof err), 0);
    CHECK_EQ_STR(b, "bkt");
    CHECK_EQ_STR(k, "run1/step_10");
    free(b);
    free(k);
    CHECK_EQ_INT(ck_s3_parse_source("s3://bkt", &b, &k, err, sizeof err), 0);
    CHECK_EQ_STR(k, "");
    free(b);
    free(k);
    CHECK_EQ_INT(ck_s3_parse_source("s3:///x", &b, &k, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_s3_parse_source("s3://b%20/x", &b, &k, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(ck_s3_parse_source("/local/dir", &b, &k, err, sizeof err), -EINVAL);
}

static void test_resolve(void)
{
    char err[256];
    ck_s3_config c;
    const char *cred = write_file("credentials", "[default]\naws_access_key_id = FILEKEY\n"
                                  "aws_secret_access_key = FILESECRET\n[p2]\naws_access_key_id = P2KEY\n"
                                  "aws_secret_access_key = P2SECRET\naws_session_token = P2TOKEN\n");
    const char *conf = write_file("config", "[default]\nregion = eu-central-1\n[profile p2]\n"
                                  "region = ap-south-1\nendpoint_url = http://10.0.0.1:7480\n");

    /* environment keys win over the default profile's */
    fake_env e1 = { { "AWS_ACCESS_KEY_ID", "ENVKEY", "AWS_SECRET_ACCESS_KEY", "ENVSECRET",
                      "AWS_SHARED_CREDENTIALS_FILE", cred, "AWS_CONFIG_FILE", conf, NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(NULL, fake_getenv, &e1, &c, err, sizeof err), 0);
    CHECK_EQ_STR(c.access_key, "ENVKEY");
    CHECK_EQ_STR(c.secret_key, "ENVSECRET");
    CHECK(c.session_token == NULL);
    CHECK_EQ_STR(c.region, "eu-central-1");             /* from the config file */
    CHECK_EQ_STR(c.endpoint, "https://s3.eu-central-1.amazonaws.com");
    CHECK_EQ_INT(c.virtual_hosted, 1);                   /* AWS's own endpoint */
    ck_s3_config_free(&c);

    /* no environment keys: the default profile */
    fake_env e2 = { { "AWS_SHARED_CREDENTIALS_FILE", cred, "AWS_CONFIG_FILE", conf,
                      "AWS_REGION", "us-west-2", "AWS_DEFAULT_REGION", "xx", NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(NULL, fake_getenv, &e2, &c, err, sizeof err), 0);
    CHECK_EQ_STR(c.access_key, "FILEKEY");
    CHECK_EQ_STR(c.region, "us-west-2");                 /* AWS_REGION first */
    ck_s3_config_free(&c);

    /* AWS_PROFILE picks the profile, its region and endpoint_url */
    fake_env e3 = { { "AWS_SHARED_CREDENTIALS_FILE", cred, "AWS_CONFIG_FILE", conf,
                      "AWS_PROFILE", "p2", NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(NULL, fake_getenv, &e3, &c, err, sizeof err), 0);
    CHECK_EQ_STR(c.access_key, "P2KEY");
    CHECK_EQ_STR(c.session_token, "P2TOKEN");
    CHECK_EQ_STR(c.region, "ap-south-1");
    CHECK_EQ_STR(c.endpoint, "http://10.0.0.1:7480");
    CHECK_EQ_INT(c.virtual_hosted, 0);                   /* custom endpoint: path-style */
    ck_s3_config_free(&c);

    /* -o profile= beats environment keys; -o options beat everything */
    ck_storage_opts o = { .profile = "p2", .region = "r-opt", .endpoint = "http://127.0.0.1:9000/",
                          .addressing = "virtual" };
    fake_env e4 = { { "AWS_ACCESS_KEY_ID", "ENVKEY", "AWS_SECRET_ACCESS_KEY", "ENVSECRET",
                      "AWS_SHARED_CREDENTIALS_FILE", cred, "AWS_CONFIG_FILE", conf,
                      "AWS_ENDPOINT_URL", "http://other", "AWS_REGION", "r-env", NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(&o, fake_getenv, &e4, &c, err, sizeof err), 0);
    CHECK_EQ_STR(c.access_key, "P2KEY");
    CHECK_EQ_STR(c.region, "r-opt");
    CHECK_EQ_STR(c.endpoint, "http://127.0.0.1:9000");  /* trailing slash dropped */
    CHECK_EQ_INT(c.virtual_hosted, 1);
    ck_s3_config_free(&c);

    /* AWS_ENDPOINT_URL_S3 before AWS_ENDPOINT_URL; nothing at all: us-east-1, anonymous */
    fake_env e5 = { { "AWS_ENDPOINT_URL", "http://generic:1", "AWS_ENDPOINT_URL_S3", "http://s3only:2",
                      "HOME", "/nonexistent", NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(NULL, fake_getenv, &e5, &c, err, sizeof err), 0);
    CHECK_EQ_STR(c.endpoint, "http://s3only:2");
    CHECK_EQ_STR(c.region, "us-east-1");
    CHECK(c.access_key == NULL);
    ck_s3_config_free(&c);

    /* malformed settings are refused with a message */
    ck_storage_opts bad1 = { .endpoint = "ftp://x" };
    CHECK_EQ_INT(ck_s3_config_resolve(&bad1, fake_getenv, &e5, &c, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "ftp://x") != NULL);
    ck_storage_opts bad2 = { .endpoint = "http://x/path" };
    CHECK_EQ_INT(ck_s3_config_resolve(&bad2, fake_getenv, &e5, &c, err, sizeof err), -EINVAL);
    ck_storage_opts bad3 = { .addressing = "sideways" };
    CHECK_EQ_INT(ck_s3_config_resolve(&bad3, fake_getenv, &e5, &c, err, sizeof err), -EINVAL);
    fake_env e6 = { { "AWS_ACCESS_KEY_ID", "A\r\nX-Evil: 1", "AWS_SECRET_ACCESS_KEY", "s",
                      "HOME", "/nonexistent", NULL } };
    CHECK_EQ_INT(ck_s3_config_resolve(NULL, fake_getenv, &e6, &c, err, sizeof err), -EINVAL);
}

static void test_query_url(void)
{
    char q[512], url[1024];
    const char *pairs[] = { "prefix", "run 1/step=2", "list-type", "2", "delimiter", "/",
                            "continuation-token", "a+b/c==", NULL };
    CHECK_EQ_INT(ck_s3_query(pairs, q, sizeof q), 0);
    /* sorted by name, both sides encoded, '/' too */
    CHECK_EQ_STR(q, "continuation-token=a%2Bb%2Fc%3D%3D&delimiter=%2F&list-type=2&"
                    "prefix=run%201%2Fstep%3D2");
    const char *flag[] = { "uploads", NULL, NULL };
    CHECK_EQ_INT(ck_s3_query(flag, q, sizeof q), 0);
    CHECK_EQ_STR(q, "uploads=");
    CHECK_EQ_INT(ck_s3_query(pairs, q, 20), -ENAMETOOLONG);

    char enc[64];
    CHECK_EQ_INT(ck_s3_uri_encode("a b/c~d_e.f-g+h", 1, enc, sizeof enc), 0);
    CHECK_EQ_STR(enc, "a%20b/c~d_e.f-g%2Bh");
    CHECK_EQ_INT(ck_s3_uri_encode("\xc3\xa9", 1, enc, sizeof enc), 0);
    CHECK_EQ_STR(enc, "%C3%A9");

    ck_s3_config cfg = { 0 };
    cfg.endpoint = strdup("http://127.0.0.1:7480");
    cfg.region = strdup("us-east-1");
    ck_s3_client *c;
    CHECK_EQ_INT(ck_s3_client_new(&cfg, "bkt", &c), 0);
    CHECK_EQ_INT(ck_s3_url(c, "run 1/.metadata", NULL, url, sizeof url), 0);
    CHECK_EQ_STR(url, "http://127.0.0.1:7480/bkt/run%201/.metadata");
    CHECK_EQ_INT(ck_s3_url(c, "", "list-type=2", url, sizeof url), 0);
    CHECK_EQ_STR(url, "http://127.0.0.1:7480/bkt/?list-type=2");
    ck_s3_client_free(c);
    ck_s3_config vcfg = { 0 };
    vcfg.endpoint = strdup("https://s3.eu-west-1.amazonaws.com");
    vcfg.region = strdup("eu-west-1");
    vcfg.virtual_hosted = 1;
    CHECK_EQ_INT(ck_s3_client_new(&vcfg, "my.bucket", &c), 0);
    CHECK_EQ_INT(ck_s3_url(c, "k", NULL, url, sizeof url), 0);
    CHECK_EQ_STR(url, "https://my.bucket.s3.eu-west-1.amazonaws.com/k");
    ck_s3_client_free(c);
}

typedef struct {
    int n;
    char keys[8][1100];
    uint64_t sizes[8];
    char etags[8][130];
} list_seen;

static int on_entry(void *ctx, const ck_s3_list_entry *e)
{
    list_seen *s = ctx;
    if (s->n < 8) {
        snprintf(s->keys[s->n], sizeof s->keys[0], "%s", e->key);
        snprintf(s->etags[s->n], sizeof s->etags[0], "%s", e->etag);
        s->sizes[s->n] = e->size;
    }
    s->n++;
    return 0;
}

static void test_xml(void)
{
    const char *page =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        "<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys>"
        "<IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;1</NextContinuationToken>"
        "<Contents><Key>p/.metadata</Key><LastModified>2026-12-01T17:39:16.343Z</LastModified>"
        "<ETag>&quot;6f59&quot;</ETag><Size>4215</Size></Contents>"
        "<Contents><Key>p/a&lt;&#233;&#x263A;</Key><Size>0</Size><ETag>&quot;e&quot;</ETag></Contents>"
        "<CommonPrefixes><Prefix>p/sub/</Prefix></CommonPrefixes></ListBucketResult>";
    list_seen s = { 0 };
    int trunc;
    char tok[64];
    CHECK_EQ_INT(ck_s3_parse_list(page, strlen(page), on_entry, &s, &trunc, tok, sizeof tok), 0);
    CHECK_EQ_INT(s.n, 2);
    CHECK_EQ_STR(s.keys[0], "p/.metadata");
    CHECK_EQ_INT(s.sizes[0], 4215);
    CHECK_EQ_STR(s.etags[0], "\"6f59\"");
    CHECK_EQ_STR(s.keys[1], "p/a<\xc3\xa9\xe2\x98\xba");
    CHECK_EQ_INT(trunc, 1);
    CHECK_EQ_STR(tok, "tok&1");

    /* every length bounds the scan: a page cut short is malformed, not over-read */
    for (size_t cut = 0; cut < strlen(page); cut += 7) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, page, cut);
        list_seen t = { 0 };
        int rc = ck_s3_parse_list(copy, cut, on_entry, &t, &trunc, tok, sizeof tok);
        CHECK(rc == 0 || rc == -EINVAL);
        free(copy);
    }
    const char *bad_size = "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>";
    CHECK_EQ_INT(ck_s3_parse_list(bad_size, strlen(bad_size), on_entry, &s, &trunc, tok, sizeof tok), -EINVAL);
    const char *trunc_no_token = "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>";
    CHECK_EQ_INT(ck_s3_parse_list(trunc_no_token, strlen(trunc_no_token), on_entry, &s, &trunc, tok,
                                  sizeof tok), -EINVAL);
    CHECK_EQ_INT(ck_s3_parse_list("<Error/>", 8, on_entry, &s, &trunc, tok, sizeof tok), -EINVAL);

    const char *errdoc = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message/></Error>";
    char code[64];
    CHECK_EQ_INT(ck_xml_get(errdoc, strlen(errdoc), "Code", code, sizeof code), 1);
    CHECK_EQ_STR(code, "SignatureDoesNotMatch");
    CHECK_EQ_INT(ck_xml_get(errdoc, strlen(errdoc), "Message", code, sizeof code), 1);
    CHECK_EQ_STR(code, "");
    CHECK_EQ_INT(ck_xml_get(errdoc, strlen(errdoc), "Missing", code, sizeof code), 0);
    CHECK_EQ_INT(ck_xml_text("&bogus;", 7, code, sizeof code), -EINVAL);
    CHECK_EQ_INT(ck_xml_text("&#0;", 4, code, sizeof code), -EINVAL);
    CHECK_EQ_INT(ck_xml_text("abcdef", 6, code, 4), -ENAMETOOLONG);

    int64_t sec;
    long ns;
    CHECK_EQ_INT(ck_s3_parse_time("2026-12-01T17:39:16.343Z", &sec, &ns), 0);
    CHECK_EQ_INT(sec, 1796146756);
    CHECK_EQ_INT(ns, 343000000);
    CHECK_EQ_INT(ck_s3_parse_time("Tue, 01 Dec 2026 17:39:16 GMT", &sec, &ns), 0);
    CHECK_EQ_INT(sec, 1796146756);
    CHECK_EQ_INT(ck_s3_parse_time("yesterday", &sec, &ns), -EINVAL);
}

static void test_retry_and_runs(void)
{
    CHECK(ck_s3_retryable(503, CURLE_OK));
    CHECK(ck_s3_retryable(500, CURLE_OK));
    CHECK(ck_s3_retryable(429, CURLE_OK));
    CHECK(ck_s3_retryable(0, CURLE_COULDNT_CONNECT));
    CHECK(ck_s3_retryable(0, CURLE_OPERATION_TIMEDOUT));
    CHECK(ck_s3_retryable(0, CURLE_RECV_ERROR));
    CHECK(!ck_s3_retryable(403, CURLE_OK));
    CHECK(!ck_s3_retryable(404, CURLE_OK));
    CHECK(!ck_s3_retryable(412, CURLE_OK));
    CHECK(!ck_s3_retryable(206, CURLE_OK));
    CHECK_EQ_INT(ck_s3_backoff_ms(1), 50);
    CHECK_EQ_INT(ck_s3_backoff_ms(2), 100);
    CHECK_EQ_INT(ck_s3_backoff_ms(5), 800);
    CHECK_EQ_INT(ck_s3_backoff_ms(30), 2000);

    /* missing blocks 10,11,12, 14, 15..24 with runs of at most 8 */
    unsigned char miss[16] = { 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 };
    ck_s3_run r[8];
    size_t n = ck_s3_runs(10, miss, 16, 8, r, 8);
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(r[0].first, 10);
    CHECK_EQ_INT(r[0].count, 3);
    CHECK_EQ_INT(r[1].first, 14);
    CHECK_EQ_INT(r[1].count, 8);
    CHECK_EQ_INT(r[2].first, 22);
    CHECK_EQ_INT(r[2].count, 3);
    CHECK_EQ_INT(ck_s3_runs(0, miss, 16, 8, r, 1), 1); /* bounded by cap */
    unsigned char none[4] = { 0 };
    CHECK_EQ_INT(ck_s3_runs(0, none, 4, 8, r, 8), 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_s3.XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    test_ini();
    test_source();
    test_resolve();
    test_query_url();
    test_xml();
    test_retry_and_runs();
    char p[128];
    snprintf(p, sizeof p, "%s/credentials", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    return check_done();
}
