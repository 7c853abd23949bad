/* Who is calling: bearer tokens, host-minted JWTs and session cookies resolved to a
 * (account, user) and the account's agents; the per-user rate limit; login links and logout.
 *
 * Every credential is looked up by a hash (tokens are stored as SHA-256; a JWT is verified on
 * the loop, then its account/user looked up once per cache period). The cache key carries the
 * credential's kind, so a bearer token never works as a cookie and the other way round. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/jwt.h"
#include "chatkit/chatkit.h"
#include "util/log.h"
#include "util/timeutil.h"

#define AUTH_CACHE_MAX 10000

typedef struct authn {
    ck_app *app;
    http_req *req;
    ck_auth_fn cb;
    void *ud;
    char via;                     /* 't', 'j', 's' */
    char key[AUTH_HASH_HEX + 1];  /* via + hash: the cache key */
    jwt_claims claims;
    ck_auth *auth;
    int status;
    const char *code;
    const char *msg;
} authn;

void ck_auth_release(ck_auth *a)
{
    if (a && --a->refs == 0) {
        for (size_t i = 0; i < a->n_agents; i++) {
            free(a->agents[i].name);
            free(a->agents[i].model);
            free(a->agents[i].instructions);
            json_decref(a->agents[i].config);
        }
        free(a->agents);
        free(a);
    }
}

void ck_auth_cache_clear(ck_app *app)
{
    for (size_t i = 0; i < app->auth_cache.cap; i++)
        if (map_live(&app->auth_cache, i))
            ck_auth_release(app->auth_cache.slots[i].val);
    map_free(&app->auth_cache);
}

void ck_too_many(http_req *req, unsigned retry_s, const char *msg)
{
    char h[48];
    snprintf(h, sizeof h, "Retry-After: %u\r\n", retry_s);
    http_req_add_headers(req, h);
    http_respond_error(req, 429, "rate_limited", msg);
}

static void unauthorized(http_req *req, const char *msg)
{
    http_req_add_headers(req, "WWW-Authenticate: Bearer\r\n");
    http_respond_error(req, 401, "unauthorized", msg);
}

/* The 401 for a token or session the store does not know or that has expired or was ended. */
static const char *gone_msg(char via)
{
    return via == 's' ? "the session has expired or was ended: sign in again"
                      : "missing or invalid credentials";
}

/* ------------------------------------------------------------------ store side */

/* The scope's agents into a new ck_auth (store thread). */
static int load_auth(store_conn *db, const store_auth *sa, char via, ck_auth **out)
{
    const store_scope *sc = &sa->scope;
    store_agent *agents = NULL;
    size_t n = 0;
    int rc = store_agents_list(db, sc->account_id, &agents, &n);
    if (rc)
        return rc;
    ck_auth *a = xcalloc(1, sizeof *a);
    a->scope = *sc;
    a->expires_us = sa->expires_us;
    a->via = via;
    a->agents = xcalloc(n ? n : 1, sizeof *a->agents);
    a->n_agents = n;
    for (size_t i = 0; i < n; i++) {
        memcpy(a->agents[i].id, agents[i].id, sizeof a->agents[i].id);
        a->agents[i].name = xstrdup(agents[i].name);
        a->agents[i].model = xstrdup(agents[i].model ? agents[i].model : "demo");
        a->agents[i].instructions = agents[i].instructions ? xstrdup(agents[i].instructions) : NULL;
        json_t *cfg = json_loads(agents[i].config_json ? agents[i].config_json : "{}", 0, NULL);
        a->agents[i].config = json_is_object(cfg) ? cfg : json_object();
        if (!json_is_object(cfg))
            json_decref(cfg);
    }
    store_agents_free(agents, n);
    a->refs = 1;
    *out = a;
    return 0;
}

static int work_authn(store_conn *db, void *arg)
{
    authn *x = arg;
    store_auth sa = {0};
    int rc;
    if (x->via == 'j') {
        store_account acc;
        rc = store_account_find_ref(db, x->claims.account, &acc);
        if (rc == STORE_ENOTFOUND) {
            x->status = 401;
            x->msg = "the token's account is not known to this server";
            return STORE_EINVAL;
        }
        if (rc)
            return rc;
        store_user u;
        rc = store_user_ensure_external(db, acc.id, x->claims.sub, x->claims.name, &u);
        store_account_clear(&acc);
        if (rc)
            return rc;
        snprintf(sa.scope.account_id, sizeof sa.scope.account_id, "%s", u.account_id);
        snprintf(sa.scope.user_id, sizeof sa.scope.user_id, "%s", u.id);
        store_user_clear(&u);
    } else {
        rc = store_token_lookup_kind(db, x->key + 1,
                                     x->via == 's' ? STORE_TOKEN_SESSION : STORE_TOKEN_API,
                                     ts_now_us(), &sa);
        if (rc == STORE_ENOTFOUND) {
            x->status = 401;
            x->msg = gone_msg(x->via);
            return STORE_EINVAL;
        }
        if (rc)
            return rc;
    }
    return load_auth(db, &sa, x->via, &x->auth);
}

/* ------------------------------------------------------------------ loop side */

static void authn_free(authn *x)
{
    jwt_claims_clear(&x->claims);
    ck_auth_release(x->auth);
    http_req_unref(x->req);
    free(x);
}

/* Rate limit, then the caller's continuation. */
static void authn_pass(ck_app *app, http_req *req, ck_auth *a, ck_auth_fn cb, void *ud)
{
    unsigned retry = 0;
    if (rl_request(&app->rl, a->scope.user_id, uv_now(app->loop), &retry)) {
        ck_auth_release(a);
        ck_too_many(req, retry, "too many requests: slow down (CHATKIT_RATE_LIMIT_RPM)");
        cb(app, req, NULL, ud);
        return;
    }
    cb(app, req, a, ud);
}

static void authn_done(int rc, void *arg)
{
    authn *x = arg;
    ck_app *app = x->app;
    if (x->status || rc) {
        if (x->status) {
            unauthorized(x->req, x->msg);
        } else {
            const char *code, *msg;
            int status = ck_store_status(rc, "authentication failed: storage error", &code, &msg);
            http_respond_error(x->req, status, code, msg);
        }
        x->cb(app, x->req, NULL, x->ud);
        authn_free(x);
        return;
    }
    ck_auth *a = x->auth;
    x->auth = NULL;
    a->fetched_ms = uv_now(app->loop);
    if (app->auth_cache.len >= AUTH_CACHE_MAX)
        ck_auth_cache_clear(app);
    ck_auth_release(map_get(&app->auth_cache, x->key));
    a->refs++;
    map_put(&app->auth_cache, x->key, a);
    authn_pass(app, x->req, a, x->cb, x->ud);
    authn_free(x);
}

/* The Origin of a cookie-authenticated request that changes something must be ours (the Host
 * the browser talked to) or an allowed one: SameSite=Lax already keeps the cookie off
 * cross-site POSTs in current browsers; this also covers older ones and same-site subdomains. */
static int origin_ok(ck_app *app, const http_req *req)
{
    if (req->method == HTTP_M_GET || req->method == HTTP_M_HEAD || !req->origin)
        return 1;
    const char *o = req->origin;
    const char *rest = !strncasecmp(o, "http://", 7) ? o + 7 : !strncasecmp(o, "https://", 8) ? o + 8 : NULL;
    if (rest && req->host && !strcasecmp(rest, req->host))
        return 1;
    return cors_origin_allowed(app->cfg->allowed_origins, o);
}

void ck_authenticate(ck_app *app, http_req *req, ck_auth_fn cb, void *ud)
{
    const char *tok;
    char key[AUTH_HASH_HEX + 1];
    char via;
    jwt_claims claims = {0};
    int tl = auth_bearer(req->authorization, &tok);
    if (tl > 0) {
        int dots = 0;
        for (int i = 0; i < tl; i++)
            dots += tok[i] == '.';
        via = dots == 2 ? 'j' : 't';
        if (via == 'j') {
            const config *cfg = app->cfg;
            if (!*cfg->jwt_secret) {
                unauthorized(req, "JWTs are not accepted by this server (CHATKIT_JWT_SECRET)");
                return cb(app, req, NULL, ud);
            }
            jwt_opts o = {.secret = cfg->jwt_secret,
                          .secret_len = strlen(cfg->jwt_secret),
                          .issuer = *cfg->jwt_issuer ? cfg->jwt_issuer : NULL,
                          .audience = *cfg->jwt_audience ? cfg->jwt_audience : NULL,
                          .leeway_s = (long)cfg->jwt_leeway_s};
            char why[128];
            int rc = jwt_verify(tok, (size_t)tl, &o, &claims, why, sizeof why);
            if (rc) {
                LOGI(req->rid, "JWT refused", "reason=\"%s\"", why);
                unauthorized(req, rc == JWT_EEXPIRED ? "the token has expired"
                                                     : "missing or invalid credentials");
                return cb(app, req, NULL, ud);
            }
        } else if (tl >= AUTH_TOKEN_MAX) {
            unauthorized(req, "missing or invalid credentials");
            return cb(app, req, NULL, ud);
        }
    } else if (req->authorization) {
        unauthorized(req, "missing or invalid credentials");
        return cb(app, req, NULL, ud);
    } else if ((tl = auth_cookie(req->cookie, AUTH_COOKIE, &tok)) > 0) {
        via = 's';
        if (!origin_ok(app, req)) {
            http_respond_error(req, 403, "forbidden_origin",
                               "cross-site request refused (CHATKIT_ALLOWED_ORIGINS)");
            return cb(app, req, NULL, ud);
        }
    } else {
        unauthorized(req, "missing or invalid credentials");
        return cb(app, req, NULL, ud);
    }
    key[0] = via;
    auth_token_hash(tok, (size_t)tl, key + 1);
    ck_auth *a = map_get(&app->auth_cache, key);
    if (a && a->expires_us && a->expires_us <= ts_now_us()) {
        /* the cache saves the lookup, never the expiry check */
        ck_auth_release(map_del(&app->auth_cache, key));
        unauthorized(req, gone_msg(via));
        return cb(app, req, NULL, ud);
    }
    if (a && uv_now(app->loop) - a->fetched_ms < app->cfg->auth_cache_ms) {
        jwt_claims_clear(&claims);
        a->refs++;
        return authn_pass(app, req, a, cb, ud);
    }
    authn *x = xcalloc(1, sizeof *x);
    x->app = app;
    x->req = req;
    x->cb = cb;
    x->ud = ud;
    x->via = via;
    memcpy(x->key, key, sizeof key);
    x->claims = claims;
    http_req_ref(req);
    /* a JWT's user may have to be created: a write */
    int rc = via == 'j' ? store_write(app->st, work_authn, authn_done, x)
                        : store_read(app->st, work_authn, authn_done, x);
    if (rc) {
        http_respond_error(req, 503, "unavailable", "the server is shutting down");
        cb(app, req, NULL, ud);
        authn_free(x);
    }
}

/* ------------------------------------------------------------------ login / logout */

typedef struct login {
    http_req *req;
    ck_app *app;
    char hash[AUTH_HASH_HEX];
    char session[AUTH_TOKEN_MAX];
    char session_hash[AUTH_HASH_HEX];
    int64_t expires_us;
    store_auth sa;
} login;

/* Runs a login/logout job; l is freed here when it cannot be queued. */
static void login_submit(login *l, store_work_fn work, store_done_fn done)
{
    http_req_ref(l->req);
    if (store_write(l->app->st, work, done, l)) {
        http_respond_error(l->req, 503, "unavailable", "the server is shutting down");
        http_req_unref(l->req);
        memset(l, 0, sizeof *l);
        free(l);
    }
}

static int work_login(store_conn *db, void *arg)
{
    login *l = arg;
    return store_login_consume(db, l->hash, ts_now_us(), l->session_hash, l->expires_us, &l->sa);
}

static void set_cookie(ck_app *app, http_req *req, const char *value, unsigned max_age)
{
    char h[256];
    snprintf(h, sizeof h, "Set-Cookie: %s=%s; Path=/; Max-Age=%u; HttpOnly; SameSite=Lax%s\r\n"
             "Cache-Control: no-store\r\n",
             AUTH_COOKIE, value, max_age, app->cfg->cookie_secure ? "; Secure" : "");
    http_req_add_headers(req, h);
}

static void login_done(int rc, void *arg)
{
    login *l = arg;
    if (rc == STORE_ENOTFOUND) {
        http_respond_error(l->req, 401, "invalid_login_link",
                           "this login link is invalid, has expired or was already used");
    } else if (rc) {
        const char *code, *msg;
        int status = ck_store_status(rc, "sign-in failed: storage error", &code, &msg);
        http_respond_error(l->req, status, code, msg);
    } else {
        LOGI(l->req->rid, "signed in", "user=%s", l->sa.scope.user_id);
        set_cookie(l->app, l->req, l->session, l->app->cfg->session_ttl_s);
        http_req_add_headers(l->req, "Location: /\r\n");
        static const char body[] = "<!doctype html><p>Signed in. <a href=\"/\">Continue</a></p>\n";
        http_respond(l->req, 303, "text/html; charset=utf-8", body, sizeof body - 1, NULL);
    }
    http_req_unref(l->req);
    memset(l, 0, sizeof *l);
    free(l);
}

void ck_login(ck_app *app, http_req *req)
{
    if (req->method != HTTP_M_GET)
        return http_respond_error(req, 405, "method_not_allowed", "use GET");
    char tok[AUTH_TOKEN_MAX];
    int n = req->query ? http_query_get(req->query, "token", tok, sizeof tok) : -1;
    if (n <= 0)
        return http_respond_error(req, 401, "invalid_login_link",
                                  "this login link is invalid, has expired or was already used");
    login *l = xcalloc(1, sizeof *l);
    l->req = req;
    l->app = app;
    auth_token_hash(tok, (size_t)n, l->hash);
    memset(tok, 0, sizeof tok);
    auth_token_new_kind(l->session, "cks_");
    auth_token_hash(l->session, strlen(l->session), l->session_hash);
    l->expires_us = ts_now_us() + (int64_t)app->cfg->session_ttl_s * 1000000;
    login_submit(l, work_login, login_done);
}

static int work_logout(store_conn *db, void *arg)
{
    login *l = arg;
    int rc = store_token_revoke(db, l->hash);
    return rc == STORE_ENOTFOUND ? 0 : rc;
}

static void logout_done(int rc, void *arg)
{
    login *l = arg;
    char key[AUTH_HASH_HEX + 1];
    key[0] = 's';
    memcpy(key + 1, l->hash, AUTH_HASH_HEX);
    ck_auth_release(map_del(&l->app->auth_cache, key));
    set_cookie(l->app, l->req, "", 0);
    if (rc) {
        const char *code, *msg;
        int status = ck_store_status(rc, "sign-out failed: storage error", &code, &msg);
        http_respond_error(l->req, status, code, msg);
    } else
        http_respond(l->req, 204, NULL, NULL, 0, NULL);
    http_req_unref(l->req);
    free(l);
}

void ck_logout(ck_app *app, http_req *req)
{
    if (req->method != HTTP_M_POST)
        return http_respond_error(req, 405, "method_not_allowed", "use POST");
    const char *tok;
    int n = auth_cookie(req->cookie, AUTH_COOKIE, &tok);
    if (n <= 0) {
        set_cookie(app, req, "", 0);
        return http_respond(req, 204, NULL, NULL, 0, NULL);
    }
    if (!origin_ok(app, req))
        return http_respond_error(req, 403, "forbidden_origin",
                                  "cross-site request refused (CHATKIT_ALLOWED_ORIGINS)");
    login *l = xcalloc(1, sizeof *l);
    l->req = req;
    l->app = app;
    auth_token_hash(tok, (size_t)n, l->hash);
    login_submit(l, work_logout, logout_done);
}
