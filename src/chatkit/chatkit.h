/* The ChatKit protocol layer: the app context, request handlers, JSON encoders.
 * Everything here runs on the loop thread except the store work functions (ck_work_*),
 * which run on store threads and touch only the ck_call they were given. */
#ifndef CK_CHATKIT_H
#define CK_CHATKIT_H
#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "http/http.h"
#include "store/store.h"
#include "util/buf.h"
#include "util/config.h"
#include "util/map.h"

typedef struct ck_agent {
    char id[STORE_ID_MAX];
    char *name;
    char *model;
    char *instructions;
    /* the agent's configuration (chatkitd agent create): {"tools": [built-in names],
     * "mcp_stdio": [...], "mcp_http": [...], "base_url"?, "api_key_env"?, "models"?: [allowed
     * inference_options.model values]}; an object, never NULL */
    json_t *config;
} ck_agent;

/* What a bearer token resolves to; cached for cfg->auth_cache_ms. */
typedef struct ck_auth {
    store_scope scope;
    ck_agent *agents;
    size_t n_agents;
    uint64_t fetched_ms; /* uv_now at lookup */
    int refs;
} ck_auth;

typedef struct ck_app {
    uv_loop_t *loop;
    const config *cfg;
    store *st;
    http_server *http;
    map active;      /* thread id -> ck_stream* (one run per thread) */
    map auth_cache;  /* token hash -> ck_auth* */
    struct mcp_pool *mcp; /* the agents' MCP servers */
    map parked;      /* interaction id -> run* waiting for a user's answer to an elicitation */
    int shutting_down;
    uint64_t started_ms;
    uint64_t n_requests, n_streams, n_errors;
} ck_app;

/* The HTTP handler for every route (http_handler_fn). */
void ck_handle(http_req *req, void *app);
void ck_app_init(ck_app *app, uv_loop_t *loop, const config *cfg, store *st);
void ck_app_free(ck_app *app);

/* ---- encoders (encode.c) ---- */
#define CK_HIDDEN_TYPE(t) (!strcmp((t), "hidden_context_item") || !strcmp((t), "sdk_hidden_context"))
/* Thread JSON (metadata always {}); items: the embedded page, or NULL for an empty one. */
int ck_thread_json(buf *b, const store_thread *t, const store_item_page *items);
/* Page of items: visible items only, has_more/after from the raw page. */
int ck_items_page_json(buf *b, const store_item_page *p);
/* Compact JSON text of v into b. */
int ck_dump(buf *b, const json_t *v);
/* A full item object parsed from stored text (NULL on corrupt data). */
json_t *ck_item_parse(const store_item *it);
/* Lax integer (pydantic "lax": 5 or "5"); returns 0 or -1. */
int ck_lax_int(const json_t *v, long long *out);

#endif
