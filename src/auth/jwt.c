#include "auth/jwt.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util/base64.h"
#include "util/hmac.h"
#include "util/log.h"
#include "util/timeutil.h"

#define SIG_B64_LEN      43 /* 32 bytes, base64url without padding */
#define JSON_DEPTH_MAX   16
#define NUMERIC_DATE_MAX 9007199254740992.0 /* 2^53: past it a double is no longer exact */

static int fail(char *err, size_t errlen, int code, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return code;
}

static int b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '-' ? 62 : 63;
}

/* Canonical unpadded base64url only (the alphabet was checked over the whole token): a length
 * of 1 mod 4 cannot be produced by an encoder, and the bits below the last byte must be zero,
 * so each byte string has exactly one accepted encoding (no signature malleability). out needs
 * n * 3 / 4 + 1 bytes. */
static long b64url_decode(const char *s, size_t n, unsigned char *out)
{
    if (n % 4 == 1)
        return -1;
    if (n % 4) {
        int last = b64url_value((unsigned char)s[n - 1]);
        if (last & (n % 4 == 2 ? 0x0f : 0x03))
            return -1;
    }
    return base64_decode(s, n, out);
}

/* jansson's parser recurses, up to 2048 levels; an input-chosen depth is refused first. */
static int json_shallow(const unsigned char *p, size_t n)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > JSON_DEPTH_MAX)
                return 0;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 1;
}

/* Duplicate member names are refused: two parsers reading different values of one claim is a
 * known way around JWT checks. Invalid UTF-8 and \u0000 are refused by jansson itself. */
static json_t *parse_object(const unsigned char *p, size_t n)
{
    if (!json_shallow(p, n))
        return NULL;
    json_t *j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* A claim string we are willing to copy: no NUL, no control characters, bounded. */
static int clean_string(const json_t *v)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > JWT_CLAIM_MAX || strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    return 1;
}

/* 1 and *t set when the claim is absent (*present = 0) or a usable NumericDate; 0 if mistyped. */
static int numeric_date(json_t *pl, const char *name, double *t, int *present)
{
    json_t *v = json_object_get(pl, name);
    *present = v != NULL;
    if (!v)
        return 1;
    if (!json_is_number(v))
        return 0;
    *t = json_number_value(v);
    return *t >= -NUMERIC_DATE_MAX && *t <= NUMERIC_DATE_MAX;
}

static int check_audience(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return !want || (clean_string(aud) && !strcmp(json_string_value(aud), want))
                   ? 0
                   : JWT_EAUDIENCE;
    if (!json_is_array(aud) || json_array_size(aud) == 0)
        return JWT_ECLAIMS;
    int found = 0;
    size_t i;
    json_t *a;
    json_array_foreach(aud, i, a)
    {
        if (!json_is_string(a))
            return JWT_ECLAIMS;
        if (want && clean_string(a) && !strcmp(json_string_value(a), want))
            found = 1;
    }
    return !want || found ? 0 : JWT_EAUDIENCE;
}

static int read_header(const char *b64, size_t n, char *err, size_t errlen)
{
    unsigned char raw[JWT_HEADER_MAX * 3 / 4 + 1];
    long rn = b64url_decode(b64, n, raw);
    if (rn < 0)
        return fail(err, errlen, JWT_EMALFORMED, "header: bad base64url");
    json_t *h = parse_object(raw, (size_t)rn);
    if (!h)
        return fail(err, errlen, JWT_EMALFORMED, "header: not a JSON object");
    int rc = 0;
    json_t *alg = json_object_get(h, "alg"), *typ = json_object_get(h, "typ");
    /* the one algorithm we accept is fixed here; the token only gets to confirm it */
    if (!json_is_string(alg) || json_string_length(alg) != 5 ||
        strcmp(json_string_value(alg), "HS256"))
        rc = fail(err, errlen, JWT_EHEADER, "header: alg must be HS256");
    else if (typ && (!json_is_string(typ) || json_string_length(typ) != 3 ||
                     strcasecmp(json_string_value(typ), "JWT")))
        rc = fail(err, errlen, JWT_EHEADER, "header: typ must be JWT");
    else if (json_object_get(h, "crit")) /* RFC 7515 §4.1.11: we understand no extensions */
        rc = fail(err, errlen, JWT_EHEADER, "header: crit not supported");
    json_decref(h);
    return rc;
}

static char *copy_string(json_t *v)
{
    return xstrndup(json_string_value(v), json_string_length(v));
}

/* The payload, once its signature has been checked. */
static int read_claims(json_t *pl, const jwt_opts *o, int64_t now, jwt_claims *out, char *err,
                       size_t errlen)
{
    long leeway = o->leeway_s > 0 ? o->leeway_s : 0;
    double exp = 0, nbf = 0, iat = 0;
    int has_exp, has_nbf, has_iat;
    if (!numeric_date(pl, "exp", &exp, &has_exp) || !numeric_date(pl, "nbf", &nbf, &has_nbf) ||
        !numeric_date(pl, "iat", &iat, &has_iat))
        return fail(err, errlen, JWT_ECLAIMS, "claims: exp/nbf/iat must be numbers");
    if (!has_exp)
        return fail(err, errlen, JWT_ECLAIMS, "claims: exp missing");
    /* exact in a double: |now| and leeway are far below 2^53 */
    if (!(exp > (double)now - (double)leeway))
        return fail(err, errlen, JWT_EEXPIRED, "token expired");
    if (has_nbf && !(nbf <= (double)now + (double)leeway))
        return fail(err, errlen, JWT_ENOTYET, "token not yet valid (nbf)");
    if (has_iat && !(iat <= (double)now + (double)leeway))
        return fail(err, errlen, JWT_ENOTYET, "token issued in the future (iat)");

    json_t *iss = json_object_get(pl, "iss");
    if (iss && !json_is_string(iss))
        return fail(err, errlen, JWT_ECLAIMS, "claims: iss must be a string");
    if (o->issuer && (!iss || !clean_string(iss) || strcmp(json_string_value(iss), o->issuer)))
        return fail(err, errlen, JWT_EISSUER, "issuer mismatch");

    json_t *aud = json_object_get(pl, "aud");
    if (aud) {
        int rc = check_audience(aud, o->audience);
        if (rc == JWT_ECLAIMS)
            return fail(err, errlen, rc, "claims: aud must be a string or array of strings");
        if (rc)
            return fail(err, errlen, rc, "audience mismatch");
    } else if (o->audience) {
        return fail(err, errlen, JWT_EAUDIENCE, "audience mismatch");
    }

    json_t *sub = json_object_get(pl, "sub"), *acct = json_object_get(pl, "account");
    json_t *name = json_object_get(pl, "name"), *email = json_object_get(pl, "email");
    if (!sub)
        return fail(err, errlen, JWT_ECLAIMS, "claims: sub missing");
    if (!json_is_string(sub) || !clean_string(sub))
        return fail(err, errlen, JWT_ECLAIMS, "claims: sub must be a non-empty clean string");
    if (!acct)
        return fail(err, errlen, JWT_ECLAIMS, "claims: account missing");
    if (!(json_is_string(acct) && clean_string(acct)) &&
        !(json_is_integer(acct) && json_integer_value(acct) >= 0))
        return fail(err, errlen, JWT_ECLAIMS, "claims: account must be a string or integer");
    if (name && (!json_is_string(name) || !clean_string(name)))
        return fail(err, errlen, JWT_ECLAIMS, "claims: name must be a clean string");
    if (email && (!json_is_string(email) || !clean_string(email)))
        return fail(err, errlen, JWT_ECLAIMS, "claims: email must be a clean string");

    out->sub = copy_string(sub);
    if (json_is_string(acct)) {
        out->account = copy_string(acct);
    } else {
        char num[32];
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(acct));
        out->account = xstrdup(num);
    }
    out->name = name ? copy_string(name) : NULL;
    out->email = email ? copy_string(email) : NULL;
    out->exp = (int64_t)exp;
    return 0;
}

int jwt_verify(const char *token, size_t len, const jwt_opts *o, jwt_claims *out, char *err,
               size_t errlen)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (err && errlen)
        err[0] = 0;
    if (!o || !out || !o->secret || o->secret_len < JWT_SECRET_MIN)
        return fail(err, errlen, JWT_ECONFIG, "jwt: no usable secret configured");
    size_t max = o->max_len ? o->max_len : JWT_MAX_LEN_DEFAULT;
    if (max > JWT_MAX_LEN_LIMIT)
        max = JWT_MAX_LEN_LIMIT;
    if (!token || len == 0)
        return fail(err, errlen, JWT_EMALFORMED, "token empty");
    if (len > max)
        return fail(err, errlen, JWT_EMALFORMED, "token too large");

    /* Everything outside the base64url alphabet and the two dots is refused up front: padding,
     * '+' and '/', whitespace, NULs. */
    size_t dot[2], ndots = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c == '.') {
            if (ndots == 2)
                return fail(err, errlen, JWT_EMALFORMED, "token must have three parts");
            dot[ndots++] = i;
        } else if (!b64url_char(c)) {
            return fail(err, errlen, JWT_EMALFORMED, "token: character outside base64url");
        }
    }
    if (ndots != 2)
        return fail(err, errlen, JWT_EMALFORMED, "token must have three parts");
    const char *hb = token, *pb = token + dot[0] + 1, *sb = token + dot[1] + 1;
    size_t hn = dot[0], pn = dot[1] - dot[0] - 1, sn = len - dot[1] - 1;
    if (hn == 0 || hn > JWT_HEADER_MAX)
        return fail(err, errlen, JWT_EMALFORMED, "header: empty or too large");
    if (pn == 0)
        return fail(err, errlen, JWT_EMALFORMED, "payload empty");
    if (sn != SIG_B64_LEN)
        return fail(err, errlen, JWT_EMALFORMED, "signature: wrong length");

    int rc = read_header(hb, hn, err, errlen);
    if (rc)
        return rc;

    unsigned char sig[SIG_B64_LEN * 3 / 4 + 1], mac[HMAC_SHA256_LEN];
    if (b64url_decode(sb, sn, sig) != HMAC_SHA256_LEN)
        return fail(err, errlen, JWT_EMALFORMED, "signature: bad base64url");
    hmac_sha256(o->secret, o->secret_len, token, dot[1], mac);
    int ok = ct_equal(sig, mac, HMAC_SHA256_LEN);
    memset(mac, 0, sizeof mac);
    if (!ok)
        return fail(err, errlen, JWT_ESIGNATURE, "signature mismatch");

    /* only now is the payload looked at */
    unsigned char *raw = malloc(pn * 3 / 4 + 1);
    if (!raw)
        return fail(err, errlen, JWT_ENOMEM, "out of memory");
    long rn = b64url_decode(pb, pn, raw);
    json_t *pl = rn < 0 ? NULL : parse_object(raw, (size_t)rn);
    free(raw);
    if (rn < 0)
        return fail(err, errlen, JWT_EMALFORMED, "payload: bad base64url");
    if (!pl)
        return fail(err, errlen, JWT_EMALFORMED, "payload: not a JSON object");
    /* not time(NULL): glibc reads the coarse clock, up to a tick behind, so a token minted
     * by the host this very second could look issued in the future */
    int64_t now = o->now ? o->now : ts_now_us() / 1000000;
    rc = read_claims(pl, o, now, out, err, errlen);
    json_decref(pl);
    if (rc)
        jwt_claims_clear(out);
    return rc;
}

void jwt_claims_clear(jwt_claims *c)
{
    if (!c)
        return;
    free(c->sub);
    free(c->account);
    free(c->name);
    free(c->email);
    memset(c, 0, sizeof *c);
}
