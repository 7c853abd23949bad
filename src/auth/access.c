#include "auth/access.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/config.h"
#include "util/log.h"

/* ------------------------------------------------------------------ CORS */

int cors_origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin || !strcmp(origin, "null") || strlen(origin) > 512)
        return 0;
    for (const char *ch = origin; *ch; ch++)
        if ((unsigned char)*ch <= 0x20 || *ch == 0x7f || *ch == ',')
            return 0;
    size_t ol = strlen(origin);
    const char *p = list, *s;
    size_t n;
    while ((n = config_list_next(&p, &s))) {
        if (n == 1 && *s == '*')
            return 1;
        size_t el = n;
        while (el > 0 && s[el - 1] == '/') /* "https://x.com/" means the origin https://x.com */
            el--;
        if (el == ol && !strncasecmp(s, origin, ol))
            return 1;
    }
    return 0;
}

static int header_allowed(const char *h, size_t n)
{
    static const char *const names[] = {"authorization", "content-type", "accept",
                                        "accept-language", "cache-control", "last-event-id",
                                        "x-requested-with", "x-csrf-token"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && !strncasecmp(names[i], h, n))
            return 1;
    return (n > 10 && !strncasecmp(h, "x-chatkit-", 10)) || (n > 7 && !strncasecmp(h, "openai-", 7));
}

int cors_request_headers(const char *acr, char *out, size_t outlen)
{
    size_t len = 0;
    if (!outlen)
        return -1;
    out[0] = 0;
    if (!acr)
        return 0;
    const char *p = acr, *s;
    size_t n;
    while ((n = config_list_next(&p, &s))) {
        for (size_t i = 0; i < n; i++)
            if (!(isalnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '_'))
                return -1;
        if (!header_allowed(s, n) || len + n + 3 > outlen)
            return -1;
        if (len) {
            out[len++] = ',';
            out[len++] = ' ';
        }
        for (size_t i = 0; i < n; i++)
            out[len++] = (char)tolower((unsigned char)s[i]);
        out[len] = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ rate limits */

typedef struct rl_user {
    double tokens;
    uint64_t last_ms;
    unsigned streams;
} rl_user;

void rl_init(rate_limits *rl, unsigned rpm, unsigned max_streams)
{
    memset(rl, 0, sizeof *rl);
    rl->rpm = rpm;
    rl->max_streams = max_streams;
}

void rl_free(rate_limits *rl)
{
    for (size_t i = 0; i < rl->users.cap; i++)
        if (map_live(&rl->users, i))
            free(rl->users.slots[i].val);
    map_free(&rl->users);
}

static rl_user *user_of(rate_limits *rl, const char *user, uint64_t now_ms)
{
    rl_user *u = map_get(&rl->users, user);
    if (!u) {
        u = xcalloc(1, sizeof *u);
        u->tokens = rl->rpm;
        u->last_ms = now_ms;
        map_put(&rl->users, user, u);
    }
    return u;
}

static void refill(const rate_limits *rl, rl_user *u, uint64_t now_ms)
{
    if (now_ms > u->last_ms) {
        u->tokens += (double)(now_ms - u->last_ms) * rl->rpm / 60000.0;
        if (u->tokens > rl->rpm)
            u->tokens = rl->rpm;
    }
    u->last_ms = now_ms;
}

int rl_request(rate_limits *rl, const char *user, uint64_t now_ms, unsigned *retry_s)
{
    if (!rl->rpm)
        return 0;
    rl_user *u = user_of(rl, user, now_ms);
    refill(rl, u, now_ms);
    if (u->tokens >= 1.0) {
        u->tokens -= 1.0;
        return 0;
    }
    /* seconds until one whole token is back, rounded up */
    double wait_ms = (1.0 - u->tokens) * 60000.0 / rl->rpm;
    unsigned s = (unsigned)((wait_ms + 999.0) / 1000.0);
    *retry_s = s ? s : 1;
    return -1;
}

int rl_stream_check(rate_limits *rl, const char *user)
{
    if (!rl->max_streams)
        return 0;
    return rl_streams(rl, user) >= rl->max_streams ? -1 : 0;
}

void rl_stream(rate_limits *rl, const char *user, int delta)
{
    rl_user *u = map_get(&rl->users, user);
    if (!u) {
        if (delta <= 0)
            return;
        u = xcalloc(1, sizeof *u);
        u->tokens = rl->rpm;
        map_put(&rl->users, user, u);
    }
    if (delta < 0 && u->streams < (unsigned)-delta)
        u->streams = 0;
    else
        u->streams = (unsigned)((int)u->streams + delta);
}

unsigned rl_streams(const rate_limits *rl, const char *user)
{
    const rl_user *u = map_get(&rl->users, user);
    return u ? u->streams : 0;
}

void rl_prune(rate_limits *rl, uint64_t now_ms)
{
    for (size_t i = 0; i < rl->users.cap; i++) {
        if (!map_live(&rl->users, i))
            continue;
        rl_user *u = rl->users.slots[i].val;
        refill(rl, u, now_ms);
        if (!u->streams && u->tokens >= rl->rpm) {
            free(map_del(&rl->users, rl->users.slots[i].key));
        }
    }
}
