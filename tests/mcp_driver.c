/* A small MCP client over Streamable HTTP built on src/mcp/ (test program, not installed): the
 * client side of the MCP conformance suite (scripts/mcp-conformance.sh, docs/mcp.md), and a
 * way to poke at a server by hand.
 *
 *   mcp_driver [--header 'Name: value']... [--call NAME JSON]... [--timeout-ms N] URL
 *
 * Connects to URL (the last argument, as the conformance runner passes it), initializes,
 * lists the tools, then makes the calls: the --call ones, else the ones the scenario named by
 * MCP_CONFORMANCE_SCENARIO expects (initialize: none; tools_call: add_numbers {a, b};
 * sse-retry: test_reconnection; elicitation-sep1034-client-defaults:
 * test_client_elicitation_defaults; any other: each listed tool that takes no required
 * argument). Prints one JSON line per step on stdout ({"ready"}, {"progress"}, {"call"}) and
 * exits 0 when the server was ready and every call got a result (isError results count as
 * results), else 1. Logs (CHATKIT_LOG_LEVEL, default warn) go to stderr. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "mcp/mcp.h"
#include "util/log.h"

#define MAX_HEADERS 32
#define MAX_CALLS   32

typedef struct driver {
    uv_loop_t *loop;
    mcp_server *s;
    char *names[MAX_CALLS];
    json_t *args[MAX_CALLS];
    int ncalls, next, failed;
    const char *scenario;
} driver;

static void print_json(json_t *o)
{
    char *t = json_dumps(o, JSON_COMPACT);
    if (t)
        puts(t);
    free(t);
    fflush(stdout);
    json_decref(o);
}

static void call_next(driver *d);

static void on_progress(void *ud, double progress, double total, const char *message)
{
    print_json(
        json_pack("{s:f,s:f,s:s?}", "progress", progress, "total", total, "message", message));
}

static void on_done(void *ud, const json_t *result, const char *err)
{
    driver *d = ud;
    const char *name = d->names[d->next];
    if (result) {
        print_json(json_pack("{s:s,s:O}", "call", name, "result", result));
    } else {
        d->failed = 1;
        print_json(json_pack("{s:s,s:s}", "call", name, "error", err ? err : "?"));
    }
    d->next++;
    call_next(d);
}

/* A server's question: answered at once with the schema's defaults (what a user who accepts a
 * pre-filled form sends; the conformance suite's SEP-1034 scenario checks them). */
static void on_elicit(void *ud, mcp_elicit *e, const char *message, const json_t *schema)
{
    (void)ud;
    json_t *content = json_object();
    const char *k;
    json_t *p;
    json_object_foreach(json_object_get(schema, "properties"), k, p)
    {
        json_t *dv = json_object_get(p, "default");
        if (dv)
            json_object_set(content, k, dv);
    }
    print_json(json_pack("{s:s,s:O}", "elicitation", message ? message : "", "content", content));
    mcp_elicit_respond(e, "accept", content);
    json_decref(content);
}

static const mcp_call_cb call_cbs = {on_progress, on_done, on_elicit};

static void call_next(driver *d)
{
    if (d->next >= d->ncalls) {
        mcp_server_free(d->s); /* DELETEs the session; the loop ends when it is done */
        d->s = NULL;
        return;
    }
    mcp_call_tool(d->s, d->names[d->next], d->args[d->next], &call_cbs, d);
}

/* The calls a conformance scenario expects, from the tools the server listed. */
static void scenario_calls(driver *d)
{
    const char *sc = d->scenario;
    if (!strcmp(sc, "initialize"))
        return;
    if (!strcmp(sc, "tools_call")) {
        d->names[d->ncalls] = strdup("add_numbers");
        d->args[d->ncalls++] = json_pack("{s:i,s:i}", "a", 5, "b", 3);
        return;
    }
    size_t i;
    json_t *t;
    json_array_foreach(mcp_server_tools(d->s), i, t)
    {
        const json_t *req = json_object_get(json_object_get(t, "inputSchema"), "required");
        if (json_array_size(req) || d->ncalls >= MAX_CALLS)
            continue;
        d->names[d->ncalls] = strdup(json_string_value(json_object_get(t, "name")));
        d->args[d->ncalls++] = json_object();
    }
}

static void on_ready(void *ud, int rc, const char *err)
{
    driver *d = ud;
    if (rc < 0) {
        d->failed = 1;
        print_json(json_pack("{s:b,s:s}", "ready", 0, "error", err ? err : "?"));
        mcp_server_free(d->s);
        d->s = NULL;
        return;
    }
    json_t *names = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(mcp_server_tools(d->s), i, t)
        json_array_append(names, json_object_get(t, "name"));
    print_json(json_pack("{s:b,s:o}", "ready", 1, "tools", names));
    if (!d->ncalls && d->scenario)
        scenario_calls(d);
    call_next(d);
}

static int usage(void)
{
    fprintf(stderr, "usage: mcp_driver [--header 'Name: value']... [--call NAME JSON]... "
                    "[--timeout-ms N] URL\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *headers[MAX_HEADERS + 1] = {0};
    int nh = 0;
    driver d = {0};
    unsigned timeout_ms = 0;
    if (argc < 2)
        return usage();
    for (int i = 1; i < argc - 1; i++) {
        if (!strcmp(argv[i], "--header") && i + 1 < argc - 1 && nh < MAX_HEADERS) {
            headers[nh++] = argv[++i];
        } else if (!strcmp(argv[i], "--call") && i + 2 < argc - 1 && d.ncalls < MAX_CALLS) {
            json_error_t e;
            json_t *a = json_loads(argv[i + 2], 0, &e);
            if (!json_is_object(a)) {
                fprintf(stderr, "mcp_driver: --call %s: arguments are not a JSON object\n",
                        argv[i + 1]);
                return 2;
            }
            d.names[d.ncalls] = strdup(argv[i + 1]);
            d.args[d.ncalls++] = a;
            i += 2;
        } else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc - 1) {
            timeout_ms = (unsigned)strtoul(argv[++i], NULL, 10);
        } else {
            return usage();
        }
    }
    const char *lvl = getenv("CHATKIT_LOG_LEVEL");
    log_level = lvl && log_level_parse(lvl) >= 0 ? log_level_parse(lvl) : LOG_WARN;
    d.scenario = getenv("MCP_CONFORMANCE_SCENARIO");
    d.loop = uv_default_loop();
    mcp_server_config cfg = {.label = "driver",
                             .url = argv[argc - 1],
                             .headers = nh ? headers : NULL,
                             .init_timeout_ms = timeout_ms,
                             .call_timeout_ms = timeout_ms};
    d.s = mcp_server_new(d.loop, &cfg);
    mcp_server_ready(d.s, on_ready, &d);
    uv_run(d.loop, UV_RUN_DEFAULT);
    for (int i = 0; i < d.ncalls; i++) {
        free(d.names[i]);
        json_decref(d.args[i]);
    }
    uv_loop_close(d.loop);
    return d.failed ? 1 : 0;
}
