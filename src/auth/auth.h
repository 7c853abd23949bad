/* Bearer tokens: minted once, stored as SHA-256 hex, compared by hash. */
#ifndef CK_AUTH_H
#define CK_AUTH_H
#include <stddef.h>

#define AUTH_TOKEN_MAX 80
#define AUTH_HASH_HEX 65

/* A new opaque token "ckt_" + 43 base64url chars (256 random bits). */
void auth_token_new(char out[AUTH_TOKEN_MAX]);
/* Lowercase hex SHA-256 of the token. */
void auth_token_hash(const char *token, size_t len, char out[AUTH_HASH_HEX]);
/* Extracts the token of an "Authorization: Bearer …" value; returns its length or -1. */
int auth_bearer(const char *header, const char **token);

#endif
