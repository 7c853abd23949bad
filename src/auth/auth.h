/* Bearer tokens: minted once, stored as SHA-256 hex, compared by hash. */
#ifndef CK_AUTH_H
#define CK_AUTH_H
#include <stddef.h>

#define AUTH_TOKEN_MAX 80
#define AUTH_HASH_HEX 65

#define AUTH_BEARER_MAX 8192 /* a bearer value: an opaque token or a JWT */
#define AUTH_COOKIE "chatkitd_session"

/* A new opaque token "ckt_" + 43 base64url chars (256 random bits). */
void auth_token_new(char out[AUTH_TOKEN_MAX]);
/* The same with another 4-character prefix: "cks_" sessions, "ckl_" login links. */
void auth_token_new_kind(char out[AUTH_TOKEN_MAX], const char prefix[5]);
/* Lowercase hex SHA-256 of the token. */
void auth_token_hash(const char *token, size_t len, char out[AUTH_HASH_HEX]);
/* Extracts the token of an "Authorization: Bearer …" value (at most AUTH_BEARER_MAX bytes);
 * returns its length or -1. */
int auth_bearer(const char *header, const char **token);
/* The value of cookie `name` in a Cookie header (quotes removed, shorter than AUTH_TOKEN_MAX);
 * returns its length (value points into header) or -1. */
int auth_cookie(const char *header, const char *name, const char **value);

#endif
