#include "util/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util/log.h"

/* One table drives env parsing, flags and `chatkitd config`. */
enum kind { K_STR, K_SIZE, K_MS, K_UINT, K_BOOL, K_LEVEL };

typedef struct opt {
    const char *flag;
    const char *env;
    enum kind kind;
    size_t off;
    const char *def;
    int secret;
} opt;

#define O(f) offsetof(config, f)
static const opt opts[] = {
    {"listen", "CHATKIT_LISTEN", K_STR, O(listen), "127.0.0.1:8080", 0},
    {"data-dir", "CHATKIT_DATA_DIR", K_STR, O(data_dir), "./data", 0},
    {"database-url", "DATABASE_URL", K_STR, O(database_url), "", 1},
    {"public-url", "CHATKIT_PUBLIC_URL", K_STR, O(public_url), "", 0},
    {"api-url", "CHATKIT_API_URL", K_STR, O(api_url), "/chatkit", 0},
    {"log-level", "CHATKIT_LOG_LEVEL", K_LEVEL, O(log_level), "info", 0},
    {"max-body", "CHATKIT_MAX_BODY_BYTES", K_SIZE, O(max_body), "1MiB", 0},
    {"max-header", "CHATKIT_MAX_HEADER_BYTES", K_SIZE, O(max_header), "16KiB", 0},
    {"max-url", "CHATKIT_MAX_URL_BYTES", K_SIZE, O(max_url), "4KiB", 0},
    {"header-timeout", "CHATKIT_HEADER_TIMEOUT_MS", K_MS, O(header_timeout_ms), "10000", 0},
    {"body-timeout", "CHATKIT_BODY_TIMEOUT_MS", K_MS, O(body_timeout_ms), "30000", 0},
    {"idle-timeout", "CHATKIT_IDLE_TIMEOUT_MS", K_MS, O(idle_timeout_ms), "60000", 0},
    {"shutdown-timeout", "CHATKIT_SHUTDOWN_TIMEOUT_MS", K_MS, O(shutdown_timeout_ms), "10000", 0},
    {"heartbeat", "CHATKIT_SSE_HEARTBEAT_MS", K_MS, O(heartbeat_ms), "15000", 0},
    {"sse-max-queue", "CHATKIT_SSE_MAX_QUEUE_BYTES", K_SIZE, O(sse_max_queue), "1MiB", 0},
    {"max-connections", "CHATKIT_MAX_CONNECTIONS", K_UINT, O(max_connections), "10000", 0},
    {"max-connections-per-address", "CHATKIT_MAX_CONNECTIONS_PER_ADDRESS", K_UINT,
     O(max_per_address), "0", 0},
    {"unauthenticated-max", "CHATKIT_UNAUTHENTICATED_MAX_BYTES", K_SIZE, O(unauth_max),
     "16MiB", 0},
    {"store-readers", "CHATKIT_STORE_READERS", K_UINT, O(store_readers), "2", 0},
    {"auth-cache", "CHATKIT_AUTH_CACHE_MS", K_MS, O(auth_cache_ms), "5000", 0},
    {"demo-delay", "CHATKIT_DEMO_DELAY_MS", K_MS, O(demo_delay_ms), "250", 0},
    {"upload-max-bytes", "CHATKIT_UPLOAD_MAX_BYTES", K_SIZE, O(upload_max_bytes), "25MB", 0},
    {"allowed-mime-types", "CHATKIT_ALLOWED_MIME_TYPES", K_STR, O(allowed_mime_types), "", 0},
    {"titles", "CHATKIT_TITLES", K_BOOL, O(title_enabled), "1", 0},
    {"llm-retries", "CHATKIT_LLM_RETRIES", K_UINT, O(llm_retries), "3", 0},
    {"llm-retry-base", "CHATKIT_LLM_RETRY_BASE_MS", K_MS, O(llm_retry_base_ms), "500", 0},
    {"llm-connect-timeout", "CHATKIT_LLM_CONNECT_TIMEOUT_MS", K_MS, O(llm_connect_timeout_ms), "10000", 0},
    {"llm-first-byte-timeout", "CHATKIT_LLM_FIRST_BYTE_TIMEOUT_MS", K_MS, O(llm_first_byte_timeout_ms), "60000", 0},
    {"llm-idle-timeout", "CHATKIT_LLM_IDLE_TIMEOUT_MS", K_MS, O(llm_idle_timeout_ms), "60000", 0},
    /* no flag for the key: a command line is visible to every user of the machine */
    {NULL, "OPENAI_API_KEY", K_STR, O(openai_api_key), "", 1},
    {"openai-base-url", "OPENAI_BASE_URL", K_STR, O(openai_base_url), "https://api.openai.com/v1", 0},
    {NULL, "ANTHROPIC_API_KEY", K_STR, O(anthropic_api_key), "", 1},
    {"anthropic-base-url", "ANTHROPIC_BASE_URL", K_STR, O(anthropic_base_url), "https://api.anthropic.com", 0},
    {"default-model", "CHATKIT_DEFAULT_MODEL", K_STR, O(default_model), "", 0},
    {"model-titles", "CHATKIT_MODEL_TITLES", K_BOOL, O(model_titles), "1", 0},
    {"max-tool-rounds", "CHATKIT_MAX_TOOL_ROUNDS", K_UINT, O(max_tool_rounds), "8", 0},
    {"attachment-text-max", "CHATKIT_ATTACHMENT_TEXT_MAX_BYTES", K_SIZE, O(attachment_text_max), "64KiB", 0},
    {"mcp-init-timeout", "CHATKIT_MCP_INIT_TIMEOUT_MS", K_MS, O(mcp_init_timeout_ms), "10000", 0},
    {"mcp-call-timeout", "CHATKIT_MCP_CALL_TIMEOUT_MS", K_MS, O(mcp_call_timeout_ms), "60000", 0},
    {"mcp-idle", "CHATKIT_MCP_IDLE_MS", K_MS, O(mcp_idle_ms), "300000", 0},
    {"mcp-elicit-timeout", "CHATKIT_MCP_ELICIT_TIMEOUT_MS", K_MS, O(mcp_elicit_timeout_ms), "600000", 0},
    {"attachment-image-max", "CHATKIT_ATTACHMENT_IMAGE_MAX_BYTES", K_SIZE, O(attachment_image_max), "20MiB", 0},
    /* authentication, CORS, limits (docs/security.md) */
    {NULL, "CHATKIT_JWT_SECRET", K_STR, O(jwt_secret), "", 1},
    {"jwt-issuer", "CHATKIT_JWT_ISSUER", K_STR, O(jwt_issuer), "", 0},
    {"jwt-audience", "CHATKIT_JWT_AUDIENCE", K_STR, O(jwt_audience), "", 0},
    {"jwt-leeway", "CHATKIT_JWT_LEEWAY_S", K_UINT, O(jwt_leeway_s), "30", 0},
    {NULL, "CHATKIT_CLIENT_SECRET", K_STR, O(client_secret), "", 1},
    {NULL, "CHATKIT_SECRET_KEY", K_STR, O(secret_key), "", 1},
    {"allowed-origins", "CHATKIT_ALLOWED_ORIGINS", K_STR, O(allowed_origins), "", 0},
    {"cookie-secure", "CHATKIT_COOKIE_SECURE", K_BOOL, O(cookie_secure), "0", 0},
    {"session-ttl", "CHATKIT_SESSION_TTL_S", K_UINT, O(session_ttl_s), "2592000", 0},
    {"login-ttl", "CHATKIT_LOGIN_TTL_S", K_UINT, O(login_ttl_s), "900", 0},
    {"rate-limit-rpm", "CHATKIT_RATE_LIMIT_RPM", K_UINT, O(rate_limit_rpm), "600", 0},
    {"max-streams-per-user", "CHATKIT_MAX_STREAMS_PER_USER", K_UINT, O(max_streams_per_user), "10", 0},
    {"preview-ttl", "CHATKIT_PREVIEW_TTL_S", K_UINT, O(preview_ttl_s), "3600", 0},
    {"unattached-ttl", "CHATKIT_UNATTACHED_TTL_S", K_UINT, O(unattached_ttl_s), "86400", 0},
    {"cleanup-interval", "CHATKIT_CLEANUP_INTERVAL_MS", K_MS, O(cleanup_interval_ms), "600000", 0},
};
#define NOPTS (sizeof opts / sizeof opts[0])

size_t config_list_next(const char **p, const char **start)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    const char *e = s;
    while (*e && *e != ',')
        e++;
    *p = e;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *start = s;
    return (size_t)(e - s);
}

int config_parse_size(const char *s, size_t *out)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned long long mul = 1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b"))
        mul = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kib"))
        mul = 1024ULL;
    else if (!strcasecmp(end, "kb"))
        mul = 1000ULL;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib"))
        mul = 1024ULL * 1024;
    else if (!strcasecmp(end, "mb"))
        mul = 1000ULL * 1000;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gib"))
        mul = 1024ULL * 1024 * 1024;
    else if (!strcasecmp(end, "gb"))
        mul = 1000ULL * 1000 * 1000;
    else
        return -EINVAL;
    if (v > (unsigned long long)SIZE_MAX / mul)
        return -EINVAL;
    *out = (size_t)(v * mul);
    return 0;
}

int config_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -EINVAL;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') { /* [::1]:8080 */
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    if (!strcmp(host, "localhost"))
        snprintf(host, hostlen, "127.0.0.1");
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || *end || p < 0 || p > 65535 || end == colon + 1)
        return -EINVAL;
    *port = (int)p;
    return 0;
}

static int set_opt(config *c, const opt *o, const char *v, const char *src, char *err,
                   size_t errlen)
{
    char *p = (char *)c + o->off;
    switch (o->kind) {
    case K_STR:
        free(*(char **)p);
        *(char **)p = xstrdup(v);
        return 0;
    case K_SIZE:
        if (config_parse_size(v, (size_t *)p) == 0)
            return 0;
        break;
    case K_MS:
    case K_UINT: {
        char *end;
        errno = 0;
        unsigned long n = strtoul(v, &end, 10);
        if (!errno && *v && !*end && isdigit((unsigned char)*v) && n <= 0x7fffffffUL) {
            *(unsigned *)p = (unsigned)n;
            return 0;
        }
        break;
    }
    case K_BOOL:
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on")) {
            *(int *)p = 1;
            return 0;
        }
        if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
            !strcasecmp(v, "off")) {
            *(int *)p = 0;
            return 0;
        }
        break;
    case K_LEVEL: {
        int l = log_level_parse(v);
        if (l >= 0) {
            *(int *)p = l;
            return 0;
        }
        break;
    }
    }
    snprintf(err, errlen, "invalid value for %s: \"%.80s\"", src, v);
    return -EINVAL;
}

int config_load(config *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTS; i++)
        if (set_opt(c, &opts[i], opts[i].def, opts[i].env, err, errlen))
            return -EINVAL;
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v && set_opt(c, &opts[i], v, opts[i].env, err, errlen))
            return -EINVAL;
    }
    return 0;
}

int config_flag(config *c, const char *name, const char *value, char *err, size_t errlen)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (!opts[i].flag || strcmp(opts[i].flag, name))
            continue;
        char src[64];
        snprintf(src, sizeof src, "--%s", name);
        return set_opt(c, &opts[i], value, src, err, errlen);
    }
    return 1;
}

int config_finish(config *c, char *err, size_t errlen)
{
    char host[64];
    int port;
    if (config_parse_listen(c->listen, host, sizeof host, &port)) {
        snprintf(err, errlen, "invalid value for CHATKIT_LISTEN: \"%.80s\" (want HOST:PORT)",
                 c->listen);
        return -EINVAL;
    }
    if (!*c->database_url) {
        free(c->database_url);
        size_t n = strlen(c->data_dir) + 32;
        c->database_url = xmalloc(n);
        snprintf(c->database_url, n, "sqlite:%s/chatkitd.db", c->data_dir);
    }
    if (strncmp(c->database_url, "sqlite:", 7)) {
        snprintf(err, errlen, "invalid value for DATABASE_URL: only sqlite:PATH is supported "
                              "by this build");
        return -EINVAL;
    }
    if (c->max_body < 1024) {
        snprintf(err, errlen, "invalid value for CHATKIT_MAX_BODY_BYTES: at least 1024");
        return -EINVAL;
    }
    if (*c->jwt_secret && strlen(c->jwt_secret) < 32) {
        snprintf(err, errlen, "invalid value for CHATKIT_JWT_SECRET: at least 32 bytes (HS256 "
                              "needs a 256-bit key)");
        return -EINVAL;
    }
    if (*c->secret_key && strlen(c->secret_key) < 32) {
        snprintf(err, errlen, "invalid value for CHATKIT_SECRET_KEY: at least 32 bytes");
        return -EINVAL;
    }
    if (!strncmp(c->public_url, "https://", 8))
        c->cookie_secure = 1;
    if (c->store_readers < 1 || c->store_readers > 64) {
        snprintf(err, errlen, "invalid value for CHATKIT_STORE_READERS: 1..64");
        return -EINVAL;
    }
    return 0;
}

char *config_dump(const config *c)
{
    json_t *o = json_object();
    for (size_t i = 0; i < NOPTS; i++) {
        const char *p = (const char *)c + opts[i].off;
        json_t *v = NULL;
        switch (opts[i].kind) {
        case K_STR: {
            const char *s = *(char *const *)p;
            /* a database URL may carry a password: show the scheme only */
            if (opts[i].secret && (strcmp(opts[i].env, "DATABASE_URL") || strncmp(s, "sqlite:", 7)))
                v = json_string(*s ? "***" : "");
            else
                v = json_string(s ? s : "");
            break;
        }
        case K_SIZE: v = json_integer((json_int_t) * (const size_t *)p); break;
        case K_MS:
        case K_UINT: v = json_integer(*(const unsigned *)p); break;
        case K_BOOL: v = json_boolean(*(const int *)p); break;
        case K_LEVEL: {
            static const char *names[] = {"error", "warn", "info", "debug"};
            v = json_string(names[*(const int *)p & 3]);
            break;
        }
        }
        json_object_set_new(o, opts[i].env, v);
    }
    char *s = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    return s;
}

void config_free(config *c)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].kind == K_STR) {
            char **p = (char **)((char *)c + opts[i].off);
            free(*p);
            *p = NULL;
        }
}
