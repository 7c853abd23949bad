/* Effective configuration: embedded defaults, then the environment, then flags. */
#ifndef CK_CONFIG_H
#define CK_CONFIG_H
#include <stddef.h>
#include <stdint.h>

typedef struct config {
    char *listen;            /* CHATKIT_LISTEN, "127.0.0.1:8080" */
    char *data_dir;          /* CHATKIT_DATA_DIR, "./data" */
    char *database_url;      /* DATABASE_URL, "sqlite:<data_dir>/chatkitd.db" */
    char *public_url;        /* CHATKIT_PUBLIC_URL, "" = from the Host header */
    char *api_url;           /* CHATKIT_API_URL, "/chatkit" (seed) */
    int log_level;           /* CHATKIT_LOG_LEVEL */
    size_t max_body;         /* CHATKIT_MAX_BODY_BYTES, 1 MiB */
    size_t max_header;       /* CHATKIT_MAX_HEADER_BYTES, 16 KiB (request line + headers) */
    size_t max_url;          /* CHATKIT_MAX_URL_BYTES, 4 KiB */
    unsigned header_timeout_ms; /* CHATKIT_HEADER_TIMEOUT_MS, 10 s */
    unsigned body_timeout_ms;   /* CHATKIT_BODY_TIMEOUT_MS, 30 s */
    unsigned idle_timeout_ms;   /* CHATKIT_IDLE_TIMEOUT_MS, 60 s keep-alive */
    unsigned shutdown_timeout_ms; /* CHATKIT_SHUTDOWN_TIMEOUT_MS, 10 s */
    unsigned heartbeat_ms;   /* CHATKIT_SSE_HEARTBEAT_MS, 15 s, 0 disables */
    size_t sse_max_queue;    /* CHATKIT_SSE_MAX_QUEUE_BYTES, 1 MiB */
    unsigned max_connections; /* CHATKIT_MAX_CONNECTIONS, 10000 */
    unsigned max_per_address; /* CHATKIT_MAX_CONNECTIONS_PER_ADDRESS, 0 = no limit */
    size_t unauth_max;        /* CHATKIT_UNAUTHENTICATED_MAX_BYTES, 16 MiB held by requests
                               * whose credentials are not checked yet */
    unsigned store_readers;  /* CHATKIT_STORE_READERS, 2 */
    unsigned auth_cache_ms;  /* CHATKIT_AUTH_CACHE_MS, 5 s */
    unsigned demo_delay_ms;  /* CHATKIT_DEMO_DELAY_MS, delay between demo deltas of a "slow" turn, 250 */
    size_t upload_max_bytes; /* CHATKIT_UPLOAD_MAX_BYTES, 25 MB */
    char *allowed_mime_types; /* CHATKIT_ALLOWED_MIME_TYPES, "" = any */
    int title_enabled;       /* CHATKIT_TITLES, 1 */
    unsigned llm_retries;    /* CHATKIT_LLM_RETRIES, 3: automatic retries of a failed model call */
    unsigned llm_retry_base_ms; /* CHATKIT_LLM_RETRY_BASE_MS, 500: first backoff, doubled each time */
    unsigned llm_connect_timeout_ms;    /* CHATKIT_LLM_CONNECT_TIMEOUT_MS, 10 s */
    unsigned llm_first_byte_timeout_ms; /* CHATKIT_LLM_FIRST_BYTE_TIMEOUT_MS, 60 s */
    unsigned llm_idle_timeout_ms;       /* CHATKIT_LLM_IDLE_TIMEOUT_MS, 60 s between reads */
    char *openai_api_key;    /* OPENAI_API_KEY (secret: never printed or logged) */
    char *openai_base_url;   /* OPENAI_BASE_URL, "https://api.openai.com/v1" */
    char *anthropic_api_key; /* ANTHROPIC_API_KEY (secret) */
    char *anthropic_base_url; /* ANTHROPIC_BASE_URL, "https://api.anthropic.com" */
    char *default_model;     /* CHATKIT_DEFAULT_MODEL: what agents with model "default" run; ""
                              * = openai:gpt-4.1-mini with an OpenAI key, else
                              * anthropic:claude-sonnet-4-5 with an Anthropic key, else demo */
    int model_titles;        /* CHATKIT_MODEL_TITLES, 1: ask the model for a thread title */
    unsigned max_tool_rounds; /* CHATKIT_MAX_TOOL_ROUNDS, 8: model calls answered with tools */
    size_t attachment_text_max;  /* CHATKIT_ATTACHMENT_TEXT_MAX_BYTES, 64 KiB inlined per file */
    size_t attachment_image_max; /* CHATKIT_ATTACHMENT_IMAGE_MAX_BYTES, 20 MiB sent per request */
    unsigned mcp_init_timeout_ms; /* CHATKIT_MCP_INIT_TIMEOUT_MS, 10 s: start + initialize + list */
    unsigned mcp_call_timeout_ms; /* CHATKIT_MCP_CALL_TIMEOUT_MS, 60 s: one tools/call */
    unsigned mcp_idle_ms;         /* CHATKIT_MCP_IDLE_MS, 5 min: unused servers are stopped */
    unsigned mcp_elicit_timeout_ms; /* CHATKIT_MCP_ELICIT_TIMEOUT_MS, 10 min: an MCP server's
                                     * question to the user is answered "cancel" after it */
    /* authentication, CORS, limits (docs/security.md) */
    char *jwt_secret;        /* CHATKIT_JWT_SECRET (secret): HS256 key, "" = JWTs not accepted */
    char *jwt_issuer;        /* CHATKIT_JWT_ISSUER, "" = iss not checked */
    char *jwt_audience;      /* CHATKIT_JWT_AUDIENCE, "" = aud not checked */
    unsigned jwt_leeway_s;   /* CHATKIT_JWT_LEEWAY_S, 30: clock skew allowed on exp/nbf/iat */
    char *client_secret;     /* CHATKIT_CLIENT_SECRET (secret): hosted mode's client secret */
    char *secret_key;        /* CHATKIT_SECRET_KEY (secret): signs preview URLs; "" = a random
                              * key kept in <data_dir>/secret.key */
    char *allowed_origins;   /* CHATKIT_ALLOWED_ORIGINS: comma-separated origins for CORS */
    int cookie_secure;       /* CHATKIT_COOKIE_SECURE, 0 (1 when CHATKIT_PUBLIC_URL is https) */
    unsigned session_ttl_s;  /* CHATKIT_SESSION_TTL_S, 30 days: cookie sessions */
    unsigned login_ttl_s;    /* CHATKIT_LOGIN_TTL_S, 15 min: one-time login links */
    unsigned rate_limit_rpm; /* CHATKIT_RATE_LIMIT_RPM, 600 requests per user per minute, 0 off */
    unsigned max_streams_per_user; /* CHATKIT_MAX_STREAMS_PER_USER, 10, 0 off */
    unsigned preview_ttl_s;  /* CHATKIT_PREVIEW_TTL_S, 1 h: signed preview URLs */
    unsigned unattached_ttl_s; /* CHATKIT_UNATTACHED_TTL_S, 1 day: uploads never attached to a
                                * message are deleted after it */
    unsigned cleanup_interval_ms; /* CHATKIT_CLEANUP_INTERVAL_MS, 10 min: how often */
} config;

/* Fills defaults then reads the environment. On a bad value returns -EINVAL and writes a
 * message naming the variable into err. */
int config_load(config *c, char *err, size_t errlen);
/* Applies one "--name value" flag (name without dashes, e.g. "listen"). Returns 0, 1 when the
 * flag is unknown, or -EINVAL with err set. */
int config_flag(config *c, const char *name, const char *value, char *err, size_t errlen);
/* Derives dependent values (database_url from data_dir). Call after env and flags. */
int config_finish(config *c, char *err, size_t errlen);
/* JSON text of the effective configuration with secrets masked; caller frees. */
char *config_dump(const config *c);
void config_free(config *c);

/* Iterates a comma-separated list value (CHATKIT_ALLOWED_ORIGINS, CHATKIT_ALLOWED_MIME_TYPES):
 * sets *start to the next element, trimmed of blanks, advances *p past it and returns its length;
 * 0 at the end. Empty elements are skipped. */
size_t config_list_next(const char **p, const char **start);
/* Parses sizes like "1048576", "1MiB", "25MB", "64k"; returns 0 or -EINVAL. */
int config_parse_size(const char *s, size_t *out);
/* Parses a "host:port" into parts; host must be an IP literal or "localhost". */
int config_parse_listen(const char *s, char *host, size_t hostlen, int *port);

#endif
