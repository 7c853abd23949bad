#include "mcp/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define IDLE_CHECK_MS 10000u

struct mcp_agent_servers {
    mcp_agent_servers *next;
    mcp_pool *pool;
    char *key;          /* agent id + its MCP configuration */
    mcp_server **servers;
    size_t n;
    int refs;
    int stale;          /* the agent's configuration changed: free when released */
};

struct mcp_pool {
    uv_loop_t *loop;
    const config *cfg;
    mcp_agent_servers *agents;
    uv_timer_t *idle;
};

/* "K=V" strings of an object, NULL-terminated (NULL when there are none); free with
 * free_strv. fmt: "%s=%s" for env, "%s: %s" for headers. */
static char **strv_of(const json_t *obj, const char *fmt)
{
    if (!json_object_size(obj))
        return NULL;
    char **v = xcalloc(json_object_size(obj) + 1, sizeof *v);
    size_t n = 0;
    const char *k;
    json_t *val;
    json_object_foreach((json_t *)obj, k, val)
    {
        if (!json_is_string(val))
            continue;
        int len = snprintf(NULL, 0, fmt, k, json_string_value(val));
        v[n] = xmalloc((size_t)len + 1);
        snprintf(v[n++], (size_t)len + 1, fmt, k, json_string_value(val));
    }
    return v;
}

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static mcp_server *server_from(mcp_pool *p, const json_t *spec, int http, size_t index)
{
    const char *target = json_is_string(spec) ? json_string_value(spec)
                                              : json_string_value(json_object_get(
                                                    spec, http ? "url" : "command"));
    if (!target || !*target)
        return NULL;
    char label[32];
    snprintf(label, sizeof label, "%s%zu", http ? "http" : "stdio", index + 1);
    char **extra = strv_of(json_object_get(spec, http ? "headers" : "env"),
                           http ? "%s: %s" : "%s=%s");
    mcp_server_config c = {.label = label,
                           .command = http ? NULL : target,
                           .url = http ? target : NULL,
                           .env = http ? NULL : (const char *const *)extra,
                           .headers = http ? (const char *const *)extra : NULL,
                           .init_timeout_ms = p->cfg->mcp_init_timeout_ms,
                           .call_timeout_ms = p->cfg->mcp_call_timeout_ms};
    mcp_server *s = mcp_server_new(p->loop, &c);
    free_strv(extra);
    return s;
}

static void agent_free(mcp_agent_servers *a)
{
    for (size_t i = 0; i < a->n; i++)
        mcp_server_free(a->servers[i]);
    free(a->servers);
    free(a->key);
    free(a);
}

static void unlink_agent(mcp_pool *p, mcp_agent_servers *a)
{
    for (mcp_agent_servers **pp = &p->agents; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            return;
        }
}

/* Stops the servers of agents nobody used for a while (they start again when needed). */
static void on_idle_check(uv_timer_t *t)
{
    mcp_pool *p = t->data;
    uint64_t now = uv_now(p->loop);
    for (mcp_agent_servers **pp = &p->agents; *pp;) {
        mcp_agent_servers *a = *pp;
        int idle = a->refs == 0;
        for (size_t i = 0; idle && i < a->n; i++)
            idle = !mcp_server_busy(a->servers[i]) &&
                   now - mcp_server_last_used(a->servers[i]) >= p->cfg->mcp_idle_ms;
        if (idle) {
            LOGI(NULL, "stopping idle MCP servers", "servers=%zu", a->n);
            *pp = a->next;
            agent_free(a);
        } else {
            pp = &a->next;
        }
    }
}

mcp_pool *mcp_pool_new(uv_loop_t *loop, const config *cfg)
{
    mcp_pool *p = xcalloc(1, sizeof *p);
    p->loop = loop;
    p->cfg = cfg;
    p->idle = xmalloc(sizeof *p->idle);
    uv_timer_init(loop, p->idle);
    p->idle->data = p;
    unsigned every = cfg->mcp_idle_ms < IDLE_CHECK_MS ? cfg->mcp_idle_ms : IDLE_CHECK_MS;
    uv_timer_start(p->idle, on_idle_check, every ? every : IDLE_CHECK_MS,
                   every ? every : IDLE_CHECK_MS);
    uv_unref((uv_handle_t *)p->idle);
    return p;
}

static void on_timer_closed(uv_handle_t *h) { free(h); }

void mcp_pool_free(mcp_pool *p)
{
    if (!p)
        return;
    while (p->agents) {
        mcp_agent_servers *a = p->agents;
        p->agents = a->next;
        if (a->refs) {
            a->stale = 1; /* a run still holds it: freed when released */
            a->pool = NULL;
            continue;
        }
        agent_free(a);
    }
    uv_close((uv_handle_t *)p->idle, on_timer_closed);
    free(p);
}

mcp_agent_servers *mcp_pool_acquire(mcp_pool *p, const char *agent_id, const json_t *agent_config)
{
    json_t *stdio = json_object_get(agent_config, "mcp_stdio");
    json_t *http = json_object_get(agent_config, "mcp_http");
    if (!json_array_size(stdio) && !json_array_size(http))
        return NULL;
    json_t *k = json_pack("{s:s,s:O?,s:O?}", "agent", agent_id, "stdio", stdio, "http", http);
    char *key = json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(k);
    for (mcp_agent_servers *a = p->agents; a; a = a->next) {
        if (!strcmp(a->key, key)) {
            free(key);
            a->refs++;
            return a;
        }
    }
    /* new, or the agent's configuration changed: the old entry goes once unused */
    size_t alen = strlen(agent_id);
    for (mcp_agent_servers **pp = &p->agents; *pp;) {
        mcp_agent_servers *a = *pp;
        if (!strncmp(a->key, "{\"agent\":\"", 10) && !strncmp(a->key + 10, agent_id, alen) &&
            a->key[10 + alen] == '"') {
            *pp = a->next;
            if (a->refs)
                a->stale = 1;
            else
                agent_free(a);
        } else {
            pp = &a->next;
        }
    }
    mcp_agent_servers *a = xcalloc(1, sizeof *a);
    a->pool = p;
    a->key = key;
    a->servers = xcalloc(json_array_size(stdio) + json_array_size(http) + 1, sizeof *a->servers);
    size_t i;
    json_t *spec;
    json_array_foreach(stdio, i, spec)
    {
        mcp_server *s = server_from(p, spec, 0, i);
        if (s)
            a->servers[a->n++] = s;
    }
    json_array_foreach(http, i, spec)
    {
        mcp_server *s = server_from(p, spec, 1, i);
        if (s)
            a->servers[a->n++] = s;
    }
    a->refs = 1;
    a->next = p->agents;
    p->agents = a;
    return a;
}

void mcp_pool_release(mcp_agent_servers *a)
{
    if (!a || --a->refs > 0)
        return;
    if (a->stale) {
        if (a->pool)
            unlink_agent(a->pool, a);
        agent_free(a);
    }
}

size_t mcp_agent_nservers(const mcp_agent_servers *a) { return a ? a->n : 0; }
mcp_server *mcp_agent_server(mcp_agent_servers *a, size_t i) { return a->servers[i]; }

/* ---- one call outside a run ---- */

typedef struct pool_call {
    mcp_agent_servers *a;
    char *name;
    json_t *args;
    size_t waiting;
    mcp_pool_call_fn cb;
    void *ud;
} pool_call;

static void pool_call_end(pool_call *pc, const json_t *result, const char *err)
{
    pc->cb(pc->ud, result, err);
    mcp_pool_release(pc->a);
    free(pc->name);
    json_decref(pc->args);
    free(pc);
}

static void pool_call_done(void *ud, const json_t *result, const char *err)
{
    pool_call_end(ud, result, err);
}

static const mcp_call_cb pool_call_cbs = {NULL, pool_call_done, NULL};

static void pool_call_ready(void *ud, int rc, const char *err)
{
    (void)rc, (void)err; /* a server that failed simply has no tools */
    pool_call *pc = ud;
    if (--pc->waiting)
        return;
    for (size_t k = 0; k < pc->a->n; k++) {
        size_t i;
        json_t *t;
        json_array_foreach(mcp_server_tools(pc->a->servers[k]), i, t)
        {
            if (!strcmp(json_string_value(json_object_get(t, "name")) ?: "", pc->name)) {
                mcp_call_tool(pc->a->servers[k], pc->name, pc->args, &pool_call_cbs, pc);
                return;
            }
        }
    }
    pool_call_end(pc, NULL, "no MCP server of this agent has that tool");
}

void mcp_pool_call(mcp_pool *p, const char *agent_id, const json_t *agent_config,
                   const char *name, const json_t *args, mcp_pool_call_fn cb, void *ud)
{
    mcp_agent_servers *a = mcp_pool_acquire(p, agent_id, agent_config);
    if (!a) {
        cb(ud, NULL, "this agent has no MCP servers");
        return;
    }
    pool_call *pc = xcalloc(1, sizeof *pc);
    pc->a = a;
    pc->name = xstrdup(name);
    pc->args = json_is_object(args) ? json_deep_copy(args) : json_object();
    pc->cb = cb;
    pc->ud = ud;
    pc->waiting = a->n;
    if (!a->n) {
        pool_call_end(pc, NULL, "this agent has no MCP servers");
        return;
    }
    for (size_t k = 0; k < a->n; k++)
        mcp_server_ready(a->servers[k], pool_call_ready, pc);
}
