/* The ChatKit protocol layer: the app context, request handlers, JSON encoders.
 * Everything here runs on the loop thread except the store work functions (ck_work_*),
 * which run on store threads and touch only the ck_call they were given. */
#ifndef CK_CHATKIT_H
#define CK_CHATKIT_H
#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "auth/access.h"
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
    int64_t expires_us;  /* the token's or session's expiry, checked on every request (0 =
                          * never; a JWT's own exp is verified on every request instead) */
    int refs;
    char via;            /* how the caller proved who they are: 't' bearer token, 'j' JWT,
                          * 's' session cookie */
} ck_auth;

typedef struct ck_app {
    uv_loop_t *loop;
    const config *cfg;
    store *st;
    http_server *http;
    map active;      /* thread id -> the request, then the ck_stream, running it (one run per
                      * thread) */
    map streams;     /* thread id -> its ck_stream until the stream is freed */
    map auth_cache;  /* token hash -> ck_auth* */
    struct mcp_pool *mcp; /* the agents' MCP servers */
    map parked;      /* interaction id -> run* waiting for a user's answer to an elicitation */
    rate_limits rl;  /* per-user request rate and open streams */
    unsigned char key[32]; /* signs preview URLs (CHATKIT_SECRET_KEY or <data_dir>/secret.key) */
    uv_timer_t sweep;      /* removes unattached attachments (CHATKIT_CLEANUP_INTERVAL_MS) */
    int sweeping;
    int64_t orphans_at_s;  /* last sweep that looked for attachment files without a row */
    int shutting_down;
    uint64_t started_ms;
    uint64_t n_requests, n_streams, n_errors;
} ck_app;

/* The HTTP handler for every route (http_handler_fn). */
void ck_handle(http_req *req, void *app);
/* Which requests stream their body (http_stream_want_fn): all of them, so that credentials
 * are checked from the head before a byte of the body is read. */
int ck_wants_stream(const http_req *req, void *app);
/* key: the preview-URL signing key (files_secret_key). Starts the attachment sweep timer. */
void ck_app_init(ck_app *app, uv_loop_t *loop, const config *cfg, store *st,
                 const unsigned char key[32]);
/* Stops the sweep timer (its close completes in the next loop run). */
void ck_app_stop(ck_app *app);
void ck_app_free(ck_app *app);

/* ---- authentication (authn.c) ---- */
/* cb gets a reference on success (release with ck_auth_release), or NULL once the request has
 * been answered: 401 without valid credentials, 403 for a cookie request from a foreign
 * origin, 429 over the user's rate limit, 503 when shutting down. */
typedef void (*ck_auth_fn)(ck_app *app, http_req *req, ck_auth *auth, void *ud);
/* Credentials, in order: "Authorization: Bearer" with an opaque token ("ckt_…") or, when
 * CHATKIT_JWT_SECRET is set, a JWT; else the session cookie. Results are cached for
 * CHATKIT_AUTH_CACHE_MS (a JWT's signature and times are checked on every request). */
void ck_authenticate(ck_app *app, http_req *req, ck_auth_fn cb, void *ud);
void ck_auth_release(ck_auth *a);
/* The agent a request is for: ?agent_id= (NULL when it is not one of the caller's), else the
 * account's only agent, else NULL. */
const ck_agent *ck_request_agent(const ck_auth *a, const http_req *req);
void ck_auth_cache_clear(ck_app *app);
/* GET /login?token=… (one-time link → session cookie), POST /logout. */
void ck_login(ck_app *app, http_req *req);
void ck_logout(ck_app *app, http_req *req);
/* The answer to a failed store job (rc not handled by the caller): 507 `storage_error` when
 * the disk is full, 503 `storage_lost` when the database file is gone, else 500 `store_error`
 * with the message what. */
int ck_store_status(int rc, const char *what, const char **code, const char **msg);
/* Answers 429 with Retry-After. */
void ck_too_many(http_req *req, unsigned retry_s, const char *msg);

/* ---- attachment bytes (uploads.c) ---- */
/* PUT/POST <api>/upload/<id>, POST <api>/upload?agent_id=, GET/HEAD <api>/attachments/<id>;
 * auth: the caller's credentials (NULL for a signed preview URL, checked inside). */
void ck_upload_route(ck_app *app, http_req *req, ck_auth *auth);
void ck_attachment_get(ck_app *app, http_req *req, ck_auth *auth);
/* Rewrites every preview URL of ours in the JSON text b to a freshly signed one. */
void ck_sign_previews(ck_app *app, buf *b);
void ck_sweep_start(ck_app *app);
/* For `serve`, once the app is initialised and before the server listens: removes every
 * temporary upload file and attachment file without a row, and, in a write job that runs before
 * any request's, releases every upload claim left in the store, so the uploads a previous
 * process was running when it died can be retried at once. Logs the counts once (info).
 * Assumes one server process per data directory and database (see uploads.c). */
void ck_uploads_recover(ck_app *app);
/* Removes an attachment's bytes (after its row is gone), off the loop. */
void ck_remove_bytes(ck_app *app, const char *id);
/* The Attachment object of an uploaded file (type image with a preview_url for the raster
 * image types we serve inline, else file). */
json_t *ck_attachment_json(ck_app *app, http_req *req, const char *id, const char *name,
                           const char *mime);
/* A declared media type lowercased without parameters into out; -1 when it is not one. */
int ck_mime_normalize(const char *in, char out[128]);
/* 1 when CHATKIT_ALLOWED_MIME_TYPES allows the (normalized) type. */
int ck_mime_allowed(const config *cfg, const char *m);

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
