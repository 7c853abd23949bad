#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "util/base64.h"
#include "util/hmac.h"

#define NOW 1700000000
static const char SECRET[] = "0123456789abcdef0123456789abcdef"; /* 32 bytes */
#define HDR "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---- HMAC ---- */

static void hex(const unsigned char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
}

static void t_hmac_rfc4231(void **st)
{
    (void)st;
    unsigned char k20_0b[20], k20_aa[20], k25[25], k20_0c[20], k131[131], d50_dd[50], d50_cd[50];
    memset(k20_0b, 0x0b, sizeof k20_0b);
    memset(k20_aa, 0xaa, sizeof k20_aa);
    for (int i = 0; i < 25; i++)
        k25[i] = (unsigned char)(i + 1);
    memset(k20_0c, 0x0c, sizeof k20_0c);
    memset(k131, 0xaa, sizeof k131);
    memset(d50_dd, 0xdd, sizeof d50_dd);
    memset(d50_cd, 0xcd, sizeof d50_cd);
    static const char d6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
    static const char d7[] = "This is a test using a larger than block-size key and a larger than "
                             "block-size data. The key needs to be hashed before being used by "
                             "the HMAC algorithm.";
    struct {
        const void *key;
        size_t klen;
        const void *data;
        size_t dlen;
        size_t cmp; /* case 5 is truncated to 128 bits */
        const char *mac;
    } v[] = {
        {k20_0b, 20, "Hi There", 8, 32,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
        {"Jefe", 4, "what do ya want for nothing?", 28, 32,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
        {k20_aa, 20, d50_dd, 50, 32,
         "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
        {k25, 25, d50_cd, 50, 32,
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
        {k20_0c, 20, "Test With Truncation", 20, 16, "a3b6167473100ee06e0c796c2955552b"},
        {k131, 131, d6, sizeof d6 - 1, 32,
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
        {k131, 131, d7, sizeof d7 - 1, 32,
         "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned char mac[HMAC_SHA256_LEN];
        char h[2 * HMAC_SHA256_LEN + 1];
        hmac_sha256(v[i].key, v[i].klen, v[i].data, v[i].dlen, mac);
        hex(mac, v[i].cmp, h);
        assert_string_equal(h, v[i].mac);
        /* the same through the incremental API, a byte at a time */
        hmac_sha256_ctx c;
        hmac_sha256_init(&c, v[i].key, v[i].klen);
        for (size_t j = 0; j < v[i].dlen; j++)
            hmac_sha256_update(&c, (const char *)v[i].data + j, 1);
        unsigned char mac2[HMAC_SHA256_LEN];
        hmac_sha256_final(&c, mac2);
        assert_memory_equal(mac, mac2, sizeof mac);
    }
}

static void t_ct_equal(void **st)
{
    (void)st;
    unsigned char a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (unsigned char)(i * 7);
    assert_int_equal(ct_equal(a, b, 32), 1);
    assert_int_equal(ct_equal(a, b, 0), 1);
    for (int i = 0; i < 32; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(ct_equal(a, b, 32), 0);
            b[i] ^= (unsigned char)(1u << bit);
        }
    assert_int_equal(ct_equal(a, b, 32), 1);
}

/* ---- token building ---- */

static char *b64url(const void *p, size_t n)
{
    char *s = malloc(base64_len(n, 1) + 1);
    base64_encode(p, n, s, 1);
    return s;
}

/* header_b64 "." payload_b64 "." sig; header and payload are raw JSON (n = strlen). */
static char *make_signed(const char *header, size_t hn, const char *payload, size_t pn,
                         const void *key, size_t klen)
{
    char *h = b64url(header, hn), *p = b64url(payload, pn);
    size_t len = strlen(h) + 1 + strlen(p);
    char *t = malloc(len + 1 + 44);
    sprintf(t, "%s.%s", h, p);
    unsigned char mac[HMAC_SHA256_LEN];
    hmac_sha256(key, klen, t, len, mac);
    t[len] = '.';
    base64_encode(mac, sizeof mac, t + len + 1, 1);
    free(h);
    free(p);
    return t;
}

static char *make(const char *header, const char *payload)
{
    return make_signed(header, strlen(header), payload, strlen(payload), SECRET, sizeof SECRET - 1);
}

static jwt_opts opts(void)
{
    jwt_opts o = {.secret = SECRET, .secret_len = sizeof SECRET - 1, .now = NOW};
    return o;
}

/* Verifies and checks that the message does not quote the token. */
static int verify_o(const char *t, size_t n, const jwt_opts *o, jwt_claims *c)
{
    char err[128] = "untouched";
    int rc = jwt_verify(t, n, o, c, err, sizeof err);
    if (rc) {
        assert_true(rc < 0);
        assert_true(err[0] != 0 && strcmp(err, "untouched"));
        if (n >= 10) {
            char head[11];
            memcpy(head, t, 10);
            head[10] = 0;
            assert_null(strstr(err, head));
        }
        assert_null(c->sub);
        assert_null(c->account);
        assert_null(c->name);
        assert_null(c->email);
    } else {
        assert_string_equal(err, "");
    }
    return rc;
}

static int verify(const char *t, const jwt_opts *o)
{
    jwt_claims c;
    int rc = verify_o(t, strlen(t), o, &c);
    jwt_claims_clear(&c);
    return rc;
}

/* Signs header + payload with SECRET, verifies with o, frees. */
static int check(const char *header, const char *payload, const jwt_opts *o)
{
    char *t = make(header, payload);
    int rc = verify(t, o);
    free(t);
    return rc;
}

static int check_payload(const char *payload)
{
    jwt_opts o = opts();
    return check(HDR, payload, &o);
}

#define P(extra) "{\"sub\":\"u_1\",\"account\":\"acct_9\",\"exp\":1700003600" extra "}"

/* ---- valid tokens ---- */

static void t_known_answer(void **st)
{
    (void)st;
    /* minted by Python's hmac/base64 modules, independent of our encoder */
    const char *t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                    "eyJzdWIiOiJ1XzEiLCJhY2NvdW50IjoiYWNjdF85IiwibmFtZSI6IkFkYSIsImV4cCI6MjAwMDAw"
                    "MDAwMH0.l-TaPpboh0TEod0He92bJ4aUDYxXI8RzkTNt_DUMfuo";
    jwt_opts o = opts();
    jwt_claims c;
    assert_int_equal(verify_o(t, strlen(t), &o, &c), 0);
    assert_string_equal(c.sub, "u_1");
    assert_string_equal(c.account, "acct_9");
    assert_string_equal(c.name, "Ada");
    assert_null(c.email);
    assert_int_equal(c.exp, 2000000000);
    jwt_claims_clear(&c);
    jwt_claims_clear(&c); /* idempotent */
    /* the same with len covering only the token inside a larger, unterminated buffer */
    size_t n = strlen(t);
    char *buf = malloc(n + 5);
    memcpy(buf, t, n);
    memcpy(buf + n, "XXXXX", 5);
    assert_int_equal(verify_o(buf, n, &o, &c), 0);
    jwt_claims_clear(&c);
    free(buf);
}

static void t_valid(void **st)
{
    (void)st;
    char *t = make(HDR, "{\"sub\":\"user-42\",\"account\":1234,\"name\":\"Zoë\","
                        "\"email\":\"z@example.com\",\"exp\":1700003600.75,\"nbf\":1699999000,"
                        "\"iat\":1699999000,\"jti\":\"x\",\"custom\":{\"a\":[1,2]}}");
    jwt_opts o = opts();
    jwt_claims c;
    assert_int_equal(verify_o(t, strlen(t), &o, &c), 0);
    assert_string_equal(c.sub, "user-42");
    assert_string_equal(c.account, "1234");
    assert_string_equal(c.name, "Zoë");
    assert_string_equal(c.email, "z@example.com");
    assert_int_equal(c.exp, 1700003600);
    jwt_claims_clear(&c);
    assert_null(c.sub);
    free(t);

    /* typ is optional and case-insensitive; unknown header members (kid) are ignored */
    assert_int_equal(check("{\"alg\":\"HS256\"}", P(""), &o), 0);
    assert_int_equal(check("{\"typ\":\"jwt\",\"alg\":\"HS256\",\"kid\":\"k1\"}", P(""), &o), 0);

    /* now = 0 means the wall clock */
    char pl[128];
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"account\":\"b\",\"exp\":%lld}",
             (long long)time(NULL) + 3600);
    jwt_opts live = opts();
    live.now = 0;
    assert_int_equal(check(HDR, pl, &live), 0);
    snprintf(pl, sizeof pl, "{\"sub\":\"a\",\"account\":\"b\",\"exp\":%lld}",
             (long long)time(NULL) - 10);
    assert_int_equal(check(HDR, pl, &live), JWT_EEXPIRED);
}

/* ---- time ---- */

static int at(const char *payload, int64_t now, long leeway)
{
    jwt_opts o = opts();
    o.now = now;
    o.leeway_s = leeway;
    return check(HDR, payload, &o);
}

static void t_time(void **st)
{
    (void)st;
    const char *e = "{\"sub\":\"a\",\"account\":\"b\",\"exp\":1000}";
    assert_int_equal(at(e, 999, 0), 0);
    assert_int_equal(at(e, 1000, 0), JWT_EEXPIRED); /* exp is the first instant it is invalid */
    assert_int_equal(at(e, 5000, 0), JWT_EEXPIRED);
    assert_int_equal(at(e, 1029, 30), 0);
    assert_int_equal(at(e, 1030, 30), JWT_EEXPIRED);
    assert_int_equal(at(e, 1000, -5), JWT_EEXPIRED); /* negative leeway counts as 0 */
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":1000.5}", 1000, 0), 0);

    const char *n = "{\"sub\":\"a\",\"account\":\"b\",\"exp\":9000,\"nbf\":2000}";
    assert_int_equal(at(n, 2000, 0), 0);
    assert_int_equal(at(n, 1999, 0), JWT_ENOTYET);
    assert_int_equal(at(n, 1970, 30), 0);
    assert_int_equal(at(n, 1969, 30), JWT_ENOTYET);

    const char *i = "{\"sub\":\"a\",\"account\":\"b\",\"exp\":9000,\"iat\":2000}";
    assert_int_equal(at(i, 2000, 0), 0);
    assert_int_equal(at(i, 1999, 0), JWT_ENOTYET);
    assert_int_equal(at(i, 1990, 10), 0);
    assert_int_equal(at(i, 1989, 10), JWT_ENOTYET);

    /* exp required; the NumericDates must be numbers in range */
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\"}", 1, 0), JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":\"9000\"}", 1, 0), JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":null}", 1, 0), JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":true}", 1, 0), JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":1e300}", 1, 0), JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":9000,\"nbf\":true}", 1, 0),
                     JWT_ECLAIMS);
    assert_int_equal(at("{\"sub\":\"a\",\"account\":\"b\",\"exp\":9000,\"iat\":\"1\"}", 1, 0),
                     JWT_ECLAIMS);
}

/* ---- signature ---- */

static void t_signature(void **st)
{
    (void)st;
    jwt_opts o = opts();
    static const char other[] = "fedcba9876543210fedcba9876543210";
    char *t = make_signed(HDR, strlen(HDR), P(""), strlen(P("")), other, sizeof other - 1);
    assert_int_equal(verify(t, &o), JWT_ESIGNATURE);
    free(t);

    /* the payload swapped for another (sub changed) under the original signature */
    char *good = make(HDR, P(""));
    char *evil = make(HDR, "{\"sub\":\"admin\",\"account\":\"acct_9\",\"exp\":1700003600}");
    assert_int_equal(verify(good, &o), 0);
    char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
    char *edot1 = strchr(evil, '.'), *edot2 = strrchr(evil, '.');
    char spliced[1024];
    snprintf(spliced, sizeof spliced, "%.*s%.*s%s", (int)(dot1 - good), good, (int)(edot2 - edot1),
             edot1, dot2);
    assert_int_equal(verify(spliced, &o), JWT_ESIGNATURE);

    /* one flipped signature character; also a non-canonical last character (same bytes) */
    char flip[1024];
    strcpy(flip, good);
    char *s = strrchr(flip, '.') + 1;
    s[5] = s[5] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(flip, &o), JWT_ESIGNATURE);
    strcpy(flip, good);
    char *last = flip + strlen(flip) - 1; /* 43rd char: its low 2 bits are padding */
    *last = (char)(*last == 'A' ? 'B' : (*last == 'z' ? 'w' : *last + 1));
    int rc = verify(flip, &o);
    assert_true(rc == JWT_EMALFORMED || rc == JWT_ESIGNATURE);
    /* a signature truncated or extended */
    strcpy(flip, good);
    flip[strlen(flip) - 1] = 0;
    assert_int_equal(verify(flip, &o), JWT_EMALFORMED);
    strcpy(flip, good);
    strcat(flip, "AAAA");
    assert_int_equal(verify(flip, &o), JWT_EMALFORMED);

    /* the secret too short, or absent */
    jwt_opts weak = opts();
    weak.secret_len = 31;
    assert_int_equal(verify(good, &weak), JWT_ECONFIG);
    weak.secret = NULL;
    weak.secret_len = 32;
    assert_int_equal(verify(good, &weak), JWT_ECONFIG);
    jwt_claims c;
    assert_int_equal(jwt_verify(good, strlen(good), NULL, &c, NULL, 0), JWT_ECONFIG);
    free(good);
    free(evil);
}

static void t_noncanonical_sig(void **st)
{
    (void)st;
    /* The last of 43 characters carries 4 data bits and 2 zero bits: changing only the zero
     * bits gives the same signature bytes, which must still be refused. */
    jwt_opts o = opts();
    char *good = make(HDR, P(""));
    char *last = good + strlen(good) - 1;
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(abc, *last) - abc);
    assert_int_equal(v & 3, 0);
    *last = abc[v | 1];
    assert_int_equal(verify(good, &o), JWT_EMALFORMED);
    free(good);
}

/* ---- header ---- */

static void t_header(void **st)
{
    (void)st;
    jwt_opts o = opts();
    const char *bad[] = {
        "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS512\",\"typ\":\"JWT\"}",
        "{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"ES256\"}",
        "{\"typ\":\"JWT\"}",
        "{\"alg\":\"hs256\",\"typ\":\"JWT\"}",
        "{\"alg\":\"HS256 \"}",
        "{\"alg\":null}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":\"HS256\",\"typ\":\"JWS\"}",
        "{\"alg\":\"HS256\",\"typ\":\"application/jose\"}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}",
        "{\"alg\":\"HS256\",\"crit\":[]}",
        "{\"alg\":\"HS256\",\"b64\":false,\"crit\":[\"b64\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(check(bad[i], P(""), &o), JWT_EHEADER);

    /* alg "none" the classic way: an empty signature, and a header-only MAC with our secret */
    char *h = b64url("{\"alg\":\"none\"}", 14), *p = b64url(P(""), strlen(P("")));
    char t[512];
    snprintf(t, sizeof t, "%s.%s.", h, p);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    free(h);
    free(p);

    /* not an object, not JSON, duplicate members (a parser differential) */
    assert_int_equal(check("[\"HS256\"]", P(""), &o), JWT_EMALFORMED);
    assert_int_equal(check("\"HS256\"", P(""), &o), JWT_EMALFORMED);
    assert_int_equal(check("{\"alg\":\"HS256\"", P(""), &o), JWT_EMALFORMED);
    assert_int_equal(check("{\"alg\":\"HS256\"} x", P(""), &o), JWT_EMALFORMED);
    assert_int_equal(check("{\"alg\":\"none\",\"alg\":\"HS256\"}", P(""), &o), JWT_EMALFORMED);
    assert_int_equal(check("{\"alg\":\"HS256\",\"alg\":\"none\"}", P(""), &o), JWT_EMALFORMED);
    /* a header larger than JWT_HEADER_MAX encoded */
    char big[1200];
    snprintf(big, sizeof big, "{\"alg\":\"HS256\",\"x\":\"%0900d\"}", 0);
    assert_int_equal(check(big, P(""), &o), JWT_EMALFORMED);
}

/* ---- encoding and structure ---- */

static void t_encoding(void **st)
{
    (void)st;
    jwt_opts o = opts();
    char *good = make(HDR, P(""));
    size_t n = strlen(good);
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    int hn = (int)(d1 - good), pn = (int)(d2 - d1 - 1);
    char t[2048];

    /* parts: 2, 4, empty */
    snprintf(t, sizeof t, "%.*s", (int)(d2 - good), good);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, "%s.%s", good, d2 + 1);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, "%.*s..%s", hn, good, d2 + 1);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, ".%.*s%s", pn, d1 + 1, d2);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    assert_int_equal(verify("..", &o), JWT_EMALFORMED);
    assert_int_equal(verify("", &o), JWT_EMALFORMED);
    jwt_claims c;
    assert_int_equal(jwt_verify(NULL, 0, &o, &c, NULL, 0), JWT_EMALFORMED);

    /* padding, the standard alphabet, whitespace, a NUL inside len */
    snprintf(t, sizeof t, "%.*s=%s", hn, good, d1);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, "%s=", good);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    strcpy(t, good);
    t[3] = '+';
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    t[3] = '/';
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, " %s", good);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    snprintf(t, sizeof t, "%s\n", good);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    memcpy(t, good, n + 1);
    t[hn + 3] = 0;
    assert_int_equal(verify_o(t, n, &o, &c), JWT_EMALFORMED);
    memcpy(t, good, n + 1);
    t[5] = (char)0xc3;
    assert_int_equal(verify_o(t, n, &o, &c), JWT_EMALFORMED);

    /* a base64 token signed correctly but with padding on the payload */
    char *h = b64url(HDR, strlen(HDR));
    const char *pl = P("");
    char *pu = b64url(pl, strlen(pl));
    char padded[1024];
    snprintf(padded, sizeof padded, "%s.%s", h, pu);
    while ((strlen(padded) - strlen(h) - 1) % 4)
        strcat(padded, "=");
    unsigned char mac[HMAC_SHA256_LEN];
    hmac_sha256(SECRET, sizeof SECRET - 1, padded, strlen(padded), mac);
    char sig[48];
    base64_encode(mac, sizeof mac, sig, 1);
    strcat(padded, ".");
    strcat(padded, sig);
    assert_true(strchr(padded, '=') != NULL);
    assert_int_equal(verify(padded, &o), JWT_EMALFORMED);

    /* a part of length 1 mod 4 cannot come from an encoder: a valid payload whose encoding is
     * 0 mod 4, plus one character (whose 6 bits a lax decoder would drop), correctly signed */
    char pj[128];
    char *p5 = NULL;
    for (int pad = 0; pad < 3; pad++) {
        snprintf(pj, sizeof pj,
                 "{\"sub\":\"a\",\"account\":\"b\",\"exp\":1700003600,\"n\":\"%.*s\"}", pad, "xxx");
        if (strlen(pj) % 3 == 0)
            break;
    }
    p5 = b64url(pj, strlen(pj));
    assert_int_equal(strlen(p5) % 4, 0);
    snprintf(t, sizeof t, "%s.%s", h, p5);
    hmac_sha256(SECRET, sizeof SECRET - 1, t, strlen(t), mac);
    base64_encode(mac, sizeof mac, sig, 1);
    snprintf(t + strlen(t), sizeof t - strlen(t), ".%s", sig);
    assert_int_equal(verify(t, &o), 0);
    snprintf(t, sizeof t, "%s.%sA", h, p5);
    hmac_sha256(SECRET, sizeof SECRET - 1, t, strlen(t), mac);
    base64_encode(mac, sizeof mac, sig, 1);
    snprintf(t + strlen(t), sizeof t - strlen(t), ".%s", sig);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    free(h);
    free(pu);
    free(p5);
    free(good);
}

static void t_size(void **st)
{
    (void)st;
    jwt_opts o = opts();
    /* a correctly signed token just over the default cap, then allowed by a larger max_len */
    size_t fill = 6200;
    static char pl[6200 + 128];
    int k = sprintf(pl, "{\"sub\":\"a\",\"account\":\"b\",\"exp\":1700003600,\"x\":\"");
    memset(pl + k, 'y', fill);
    strcpy(pl + k + fill, "\"}");
    char *t = make(HDR, pl);
    assert_true(strlen(t) > JWT_MAX_LEN_DEFAULT);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    o.max_len = 16384;
    assert_int_equal(verify(t, &o), 0);
    o.max_len = 100;
    char *small = make(HDR, P(""));
    assert_int_equal(verify(small, &o), JWT_EMALFORMED);
    free(small);
    free(t);

    /* a huge buffer is refused before it is scanned */
    size_t huge = 1 << 20;
    char *hb = malloc(huge + 1);
    memset(hb, 'A', huge);
    hb[huge] = 0;
    o = opts();
    assert_int_equal(verify(hb, &o), JWT_EMALFORMED);
    o.max_len = (size_t)-1; /* clamped to JWT_MAX_LEN_LIMIT */
    assert_int_equal(verify(hb, &o), JWT_EMALFORMED);
    free(hb);

    /* nesting deeper than the parser is allowed to recurse */
    char deep[512];
    int d = sprintf(deep, "{\"sub\":\"a\",\"account\":\"b\",\"exp\":1700003600,\"x\":");
    for (int i = 0; i < 40; i++)
        deep[d++] = '[';
    for (int i = 0; i < 40; i++)
        deep[d++] = ']';
    strcpy(deep + d, "}");
    o = opts();
    assert_int_equal(check(HDR, deep, &o), JWT_EMALFORMED);
}

/* ---- iss / aud ---- */

static void t_iss_aud(void **st)
{
    (void)st;
    jwt_opts o = opts();
    o.issuer = "https://app.example";
    assert_int_equal(check(HDR, P(",\"iss\":\"https://app.example\""), &o), 0);
    assert_int_equal(check(HDR, P(",\"iss\":\"https://evil.example\""), &o), JWT_EISSUER);
    assert_int_equal(check(HDR, P(",\"iss\":\"https://app.example/\""), &o), JWT_EISSUER);
    assert_int_equal(check(HDR, P(""), &o), JWT_EISSUER);
    assert_int_equal(check(HDR, P(",\"iss\":7"), &o), JWT_ECLAIMS);
    o.issuer = NULL; /* not checked, but still typed */
    assert_int_equal(check(HDR, P(",\"iss\":\"anyone\""), &o), 0);
    assert_int_equal(check(HDR, P(",\"iss\":7"), &o), JWT_ECLAIMS);

    o.audience = "chatkitd";
    assert_int_equal(check(HDR, P(",\"aud\":\"chatkitd\""), &o), 0);
    assert_int_equal(check(HDR, P(",\"aud\":[\"other\",\"chatkitd\"]"), &o), 0);
    assert_int_equal(check(HDR, P(",\"aud\":\"chatkit\""), &o), JWT_EAUDIENCE);
    assert_int_equal(check(HDR, P(",\"aud\":[\"a\",\"b\"]"), &o), JWT_EAUDIENCE);
    assert_int_equal(check(HDR, P(""), &o), JWT_EAUDIENCE);
    assert_int_equal(check(HDR, P(",\"aud\":[]"), &o), JWT_ECLAIMS);
    assert_int_equal(check(HDR, P(",\"aud\":[\"chatkitd\",1]"), &o), JWT_ECLAIMS);
    assert_int_equal(check(HDR, P(",\"aud\":{\"chatkitd\":1}"), &o), JWT_ECLAIMS);
    assert_int_equal(check(HDR, P(",\"aud\":5"), &o), JWT_ECLAIMS);
    o.audience = NULL;
    assert_int_equal(check(HDR, P(",\"aud\":[\"x\"]"), &o), 0);
    assert_int_equal(check(HDR, P(",\"aud\":5"), &o), JWT_ECLAIMS);
}

/* ---- claims ---- */

static void t_claims(void **st)
{
    (void)st;
    assert_int_equal(check_payload("{\"account\":\"b\",\"exp\":1700003600}"), JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"\",\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":42,\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":null,\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":[\"a\"],\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"a\",\"exp\":1700003600}"), JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"a\",\"org\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"a\",\"account\":1.5,\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"a\",\"account\":-1,\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload("{\"sub\":\"a\",\"account\":true,\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"name\":5")), JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"name\":null")), JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"email\":[\"a@b\"]")), JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"email\":\"a@b\"")), 0);

    /* embedded NUL (escaped), control characters, invalid UTF-8, lone surrogate, too long */
    assert_int_equal(check_payload("{\"sub\":\"a\\u0000b\",\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_EMALFORMED);
    assert_int_equal(check_payload("{\"sub\":\"a\\nb\",\"account\":\"b\",\"exp\":1700003600}"),
                     JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"name\":\"a\\u001bb\"")), JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"name\":\"\\u007f\"")), JWT_ECLAIMS);
    assert_int_equal(check_payload(P(",\"name\":\"a\xff\xfe\"")), JWT_EMALFORMED);
    assert_int_equal(check_payload(P(",\"name\":\"\xc3\"")), JWT_EMALFORMED);
    assert_int_equal(check_payload(P(",\"name\":\"\\ud800\"")), JWT_EMALFORMED);
    char pl[1024];
    snprintf(pl, sizeof pl, "{\"sub\":\"%0513d\",\"account\":\"b\",\"exp\":1700003600}", 0);
    assert_int_equal(check_payload(pl), JWT_ECLAIMS);
    snprintf(pl, sizeof pl, "{\"sub\":\"%0512d\",\"account\":\"b\",\"exp\":1700003600}", 0);
    assert_int_equal(check_payload(pl), 0);

    /* the payload itself: not an object, not JSON, duplicates, trailing bytes */
    assert_int_equal(check_payload("[1]"), JWT_EMALFORMED);
    assert_int_equal(check_payload("null"), JWT_EMALFORMED);
    assert_int_equal(check_payload("{\"sub\":"), JWT_EMALFORMED);
    assert_int_equal(check_payload(P("") " "), 0); /* whitespace is JSON */
    assert_int_equal(check_payload(P("") "x"), JWT_EMALFORMED);
    assert_int_equal(check_payload(P(",\"sub\":\"admin\"")), JWT_EMALFORMED);
    assert_int_equal(check_payload(P(",\"exp\":99999999999")), JWT_EMALFORMED);

    /* embedded raw NUL in the decoded payload (jansson sees the length, not a C string) */
    char raw[] = "{\"sub\":\"a\",\"account\":\"b\",\"exp\":1700003600}\0";
    jwt_opts o = opts();
    char *t = make_signed(HDR, strlen(HDR), raw, sizeof raw - 1, SECRET, sizeof SECRET - 1);
    assert_int_equal(verify(t, &o), JWT_EMALFORMED);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_hmac_rfc4231),
        cmocka_unit_test(t_ct_equal),
        cmocka_unit_test(t_known_answer),
        cmocka_unit_test(t_valid),
        cmocka_unit_test(t_time),
        cmocka_unit_test(t_signature),
        cmocka_unit_test(t_noncanonical_sig),
        cmocka_unit_test(t_header),
        cmocka_unit_test(t_encoding),
        cmocka_unit_test(t_size),
        cmocka_unit_test(t_iss_aud),
        cmocka_unit_test(t_claims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
