/* Request-level access rules that need no store: the CORS allow-list and per-user rate limits.
 * Loop thread only. */
#ifndef CK_ACCESS_H
#define CK_ACCESS_H
#include <stddef.h>
#include <stdint.h>

#include "util/map.h"

/* ---- CORS ----
 * list: CHATKIT_ALLOWED_ORIGINS, comma-separated origins ("https://app.example.com",
 * "http://localhost:3000"); "*" allows every origin (development only: credentials are then
 * accepted from any site). Matching is exact on scheme://host[:port], host case-insensitive.
 * Returns 1 when origin is allowed. A "null" origin is never allowed. */
int cors_origin_allowed(const char *list, const char *origin);
/* Checks a preflight's Access-Control-Request-Headers (comma-separated names) against the
 * headers ChatKit.js and a host page may send (authorization, content-type, accept,
 * accept-language, cache-control, last-event-id, x-requested-with, x-csrf-token, and any
 * x-chatkit-* / openai-* name). Writes the names back, lowercased, into out. Returns 0, or -1
 * when a name is not allowed or out is too small. NULL or "" is fine (out = ""). */
int cors_request_headers(const char *acr_headers, char *out, size_t outlen);

/* ---- rate limits ----
 * Per user: a token bucket of rpm requests refilled continuously (rpm per minute), and a count
 * of open streams. 0 disables a limit. Entries of idle users are dropped by rl_prune. */
typedef struct rate_limits {
    map users; /* user id -> rl_user* */
    unsigned rpm;
    unsigned max_streams;
} rate_limits;

void rl_init(rate_limits *rl, unsigned rpm, unsigned max_streams);
void rl_free(rate_limits *rl);
/* One request by user at now_ms: 0 when allowed (a token is taken), else -1 and *retry_s (>= 1)
 * says when the next one will be. */
int rl_request(rate_limits *rl, const char *user, uint64_t now_ms, unsigned *retry_s);
/* 0 when user may open one more stream, else -1. */
int rl_stream_check(rate_limits *rl, const char *user);
/* A stream of user opened (+1) or ended (-1). */
void rl_stream(rate_limits *rl, const char *user, int delta);
unsigned rl_streams(const rate_limits *rl, const char *user);
/* Drops users with a full bucket and no open stream. */
void rl_prune(rate_limits *rl, uint64_t now_ms);

#endif
