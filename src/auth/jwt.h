/* Verification of HS256-signed JWTs (RFC 7519 over the compact JWS of RFC 7515) minted by the
 * host application for its users. Only HS256 is accepted: the algorithm is pinned here, never
 * taken from the token, so "none", other HMACs and public-key algorithms (the alg-confusion
 * attacks) are refused. The signature is checked in constant time before any claim is read.
 *
 * Claims read (all strings are UTF-8 without NULs or control characters, at most
 * JWT_CLAIM_MAX bytes):
 *   sub      required string: the host's user id.
 *   account  required string or integer (rendered in decimal): the host's account id, the
 *            tenant every thread is scoped to (Current.account in the Rails host). No
 *            fallback to "org" or "tenant": one name, so issuers cannot be ambiguous.
 *   name     optional string.
 *   email    optional string.
 *   exp      required NumericDate; valid while now < exp + leeway.
 *   nbf      optional NumericDate; valid once now + leeway >= nbf.
 *   iat      optional NumericDate; refused when later than now + leeway.
 *   iss      optional string; must equal opts.issuer when that is set.
 *   aud      optional string or array of strings; must contain opts.audience when that is set.
 * Registered claims present with the wrong type are refused even when not configured. */
#ifndef CK_JWT_H
#define CK_JWT_H
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_LEN_DEFAULT 8192        /* token bytes, when opts.max_len is 0 */
#define JWT_MAX_LEN_LIMIT   (64 * 1024) /* opts.max_len is clamped to this */
#define JWT_HEADER_MAX      1024        /* encoded header bytes */
#define JWT_CLAIM_MAX       512         /* bytes of any string claim we copy */
#define JWT_SECRET_MIN      32          /* RFC 7518 §3.2: an HS256 key has at least 256 bits */

/* Error codes (all < 0). Map every one of them to 401; the message is for the log. */
enum {
    JWT_EMALFORMED = -1, /* not three canonical base64url parts, bad JSON, too large */
    JWT_EHEADER = -2,    /* alg other than HS256, typ other than JWT, crit present */
    JWT_ESIGNATURE = -3, /* signature does not match */
    JWT_EEXPIRED = -4,   /* exp passed (beyond leeway) */
    JWT_ENOTYET = -5,    /* nbf or iat in the future (beyond leeway) */
    JWT_EISSUER = -6,    /* iss differs from opts.issuer */
    JWT_EAUDIENCE = -7,  /* aud does not contain opts.audience */
    JWT_ECLAIMS = -8,    /* a required claim is missing, or a claim has the wrong type */
    JWT_ECONFIG = -9,    /* opts unusable: no secret, or one shorter than JWT_SECRET_MIN */
    JWT_ENOMEM = -10,
};

typedef struct jwt_opts {
    const void *secret; /* HMAC key; borrowed */
    size_t secret_len;
    const char *issuer;   /* NULL: iss not checked (its type still is) */
    const char *audience; /* NULL: aud not checked (its type still is) */
    long leeway_s;        /* clock skew allowed on exp/nbf/iat; negative counts as 0 */
    int64_t now;          /* unix seconds; 0: the real-time clock (not the coarse time(NULL)) */
    size_t max_len;       /* token bytes; 0: JWT_MAX_LEN_DEFAULT */
} jwt_opts;

/* Owned copies; free with jwt_claims_clear. */
typedef struct jwt_claims {
    char *sub;
    char *account;
    char *name;  /* NULL when absent */
    char *email; /* NULL when absent */
    int64_t exp; /* seconds, fractional part dropped */
} jwt_claims;

/* Verifies token[0..len) (no NUL needed). Returns 0 and fills out, or a JWT_E* code with out
 * zeroed and a short message in err (which never quotes the token). err may be NULL. */
int jwt_verify(const char *token, size_t len, const jwt_opts *o, jwt_claims *out, char *err,
               size_t errlen);
/* Frees the strings and zeroes c; safe on a zeroed or already cleared struct. */
void jwt_claims_clear(jwt_claims *c);

#endif
