#include "admin.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"
#include "store/store.h"
#include "util/log.h"
#include "util/timeutil.h"

#define USAGE 2

static int fail(const char *what, const char *detail)
{
    fprintf(stderr, "chatkitd: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

static int usage(const char *msg)
{
    fprintf(stderr, "chatkitd: %s (see chatkitd help)\n", msg);
    return USAGE;
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0700) && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) && errno != EEXIST)
        return -errno;
    return 0;
}

int admin_prepare_data_dir(const config *cfg, char *err, size_t errlen)
{
    int rc = mkdir_p(cfg->data_dir);
    if (rc)
        snprintf(err, errlen, "cannot create CHATKIT_DATA_DIR %s: %s", cfg->data_dir, strerror(-rc));
    return rc;
}

static store_conn *open_db(const config *cfg)
{
    char err[512];
    if (admin_prepare_data_dir(cfg, err, sizeof err)) {
        fail(err, NULL);
        return NULL;
    }
    char *e = NULL;
    store_conn *c = store_conn_open(cfg->database_url, 1, &e);
    if (!c) {
        fail("cannot open the database", e);
        free(e);
    }
    return c;
}

/* Prints one object: JSON with --json, else "key: value" lines. Steals o. */
static int print_obj(json_t *o, int json)
{
    if (json) {
        char *s = json_dumps(o, JSON_COMPACT);
        puts(s);
        free(s);
    } else {
        const char *k;
        json_t *v;
        json_object_foreach(o, k, v)
        {
            if (json_is_string(v))
                printf("%s: %s\n", k, json_string_value(v));
            else {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("%s: %s\n", k, s);
                free(s);
            }
        }
    }
    json_decref(o);
    return 0;
}

/* "--name value" lookup in argv (after the subcommand). */
static const char *arg(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return NULL;
}

/* A flag without a value ("--login-url"). */
static int has_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

/* The first argument that is neither a flag nor a flag's value. */
static const char *positional(int argc, char **argv, int from)
{
    for (int i = from; i < argc; i++) {
        if (!strncmp(argv[i], "--", 2)) {
            i++;
            continue;
        }
        return argv[i];
    }
    return NULL;
}

static int parse_ttl(const char *s, int64_t *us)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n <= 0)
        return -1;
    long long mul;
    switch (*end) {
    case 's': mul = 1; break;
    case 'm': mul = 60; break;
    case 'h': mul = 3600; break;
    case 'd': mul = 86400; break;
    case 0: mul = 1; break;
    default: return -1;
    }
    if (*end && end[1])
        return -1;
    if (n > 100LL * 365 * 86400 / mul)
        return -1;
    *us = n * mul * 1000000;
    return 0;
}

static int mint_token(store_conn *db, const char *user_id, int64_t ttl_us, char token[AUTH_TOKEN_MAX],
                      int64_t *expires)
{
    char hash[AUTH_HASH_HEX];
    auth_token_new(token);
    auth_token_hash(token, strlen(token), hash);
    *expires = ttl_us ? ts_now_us() + ttl_us : 0;
    return store_token_create(db, hash, user_id, *expires);
}

/* A one-time login link for the user (CHATKIT_LOGIN_TTL_S): opening it in a browser sets the
 * session cookie. */
static int mint_login_url(const config *cfg, store_conn *db, const char *user_id, char *url,
                          size_t urllen)
{
    char token[AUTH_TOKEN_MAX], hash[AUTH_HASH_HEX];
    auth_token_new_kind(token, "ckl_");
    auth_token_hash(token, strlen(token), hash);
    int rc = store_token_create_kind(db, hash, user_id,
                                     ts_now_us() + (int64_t)cfg->login_ttl_s * 1000000,
                                     STORE_TOKEN_LOGIN);
    if (*cfg->public_url) {
        size_t n = strlen(cfg->public_url);
        while (n && cfg->public_url[n - 1] == '/')
            n--;
        snprintf(url, urllen, "%.*s/login?token=%s", (int)n, cfg->public_url, token);
    } else {
        snprintf(url, urllen, "http://%s/login?token=%s", cfg->listen, token);
    }
    memset(token, 0, sizeof token);
    return rc;
}

#define PROVIDERS "openai, openai-responses, anthropic, demo"

/* A model name: 1 to 127 bytes, no whitespace. */
static int model_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n && n < 128 && !s[strcspn(s, " \t\r\n\v\f")];
}

/* --model: NULL when valid ("default", "demo" or PROVIDER:MODEL), else the usage message. */
static const char *model_error(const char *m)
{
    static const char *const providers[] = {"openai", "openai-responses", "anthropic", "demo"};
    static char msg[256];
    const char *colon = strchr(m, ':');
    if (!strcmp(m, "default") || !strcmp(m, "demo"))
        return NULL;
    if (!colon || colon == m || !colon[1] || !model_name_ok(m))
        return "--model must be default, demo or PROVIDER:MODEL (e.g. openai:gpt-4.1-mini)";
    size_t n = (size_t)(colon - m);
    for (size_t k = 0; k < sizeof providers / sizeof providers[0]; k++)
        if (strlen(providers[k]) == n && !strncmp(m, providers[k], n))
            return NULL;
    snprintf(msg, sizeof msg, "--model: unknown provider \"%.*s\" (known: " PROVIDERS ")",
             (int)(n > 64 ? 64 : n), m);
    return msg;
}

/* The name of an environment variable: [A-Z_][A-Z0-9_]*, at most 64 bytes. */
static int env_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n && n <= 64 && !(*s >= '0' && *s <= '9') &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

#define ENV_NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"

/* An MCP header name: an HTTP token (RFC 9110), at most 64 bytes. */
static int header_name_ok(const char *s, size_t n)
{
    if (!n || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= '0' && s[i] <= '9') && !(s[i] >= 'a' && s[i] <= 'z') &&
            !(s[i] >= 'A' && s[i] <= 'Z') && !strchr("!#$%&'*+-.^_`|~", s[i]))
            return 0;
    return 1;
}

/* An MCP server URL: http:// or https://, a host, no blanks or control characters. */
static int mcp_url_ok(const char *v)
{
    size_t skip = !strncmp(v, "http://", 7) ? 7 : !strncmp(v, "https://", 8) ? 8 : 0;
    if (!skip || !v[skip] || v[skip] == '/' || strlen(v) > 2048)
        return 0;
    for (const unsigned char *c = (const unsigned char *)v; *c; c++)
        if (*c <= ' ' || *c == 0x7f)
            return 0;
    return 1;
}

/* The last entry of an MCP list as an object {key: <the string>, sub: {}} (an entry is a
 * string until it gets headers or env); returns its sub-object. */
static json_t *mcp_entry_sub(json_t *list, const char *key, const char *sub)
{
    size_t n = json_array_size(list);
    json_t *e = json_array_get(list, n - 1);
    if (json_is_string(e)) {
        e = json_pack("{s:O,s:{}}", key, e, sub);
        json_array_set_new(list, n - 1, e);
    }
    return json_object_get(e, sub);
}

/* The agent's config_json from its flags; *bad is set to the usage message of an invalid one.
 * --mcp-header applies to the --mcp-http before it, --mcp-env to the --mcp-stdio before it. */
static json_t *agent_config(int argc, char **argv, const char **bad)
{
    json_t *mcp_stdio = json_array(), *mcp_http = json_array(), *tools = json_array();
    json_t *models = json_array();
    json_t *o = json_pack("{s:o,s:o,s:o,s:o}", "mcp_stdio", mcp_stdio, "mcp_http", mcp_http,
                          "tools", tools, "models", models);
    static const char *const builtin[] = {"get_current_time", "request_human_input"};
    int last = 0; /* 1: the last MCP server flag was --mcp-stdio, 2: --mcp-http */
    for (int i = 0; i + 1 < argc; i++) {
        const char *f = argv[i], *v = argv[i + 1];
        if (!strcmp(f, "--mcp-stdio")) {
            if (!v[strspn(v, " \t")])
                *bad = "--mcp-stdio takes a command line ('CMD ARGS')";
            json_array_append_new(mcp_stdio, json_string(v));
            last = 1;
        } else if (!strcmp(f, "--mcp-http")) {
            if (!mcp_url_ok(v))
                *bad = "--mcp-http takes an http:// or https:// URL (no spaces)";
            json_array_append_new(mcp_http, json_string(v));
            last = 2;
        } else if (!strcmp(f, "--mcp-header")) {
            const char *colon = strchr(v, ':');
            const char *val = colon ? colon + 1 + strspn(colon + 1, " \t") : NULL;
            if (last != 2)
                *bad = "--mcp-header must follow the --mcp-http URL it applies to";
            else if (!colon || !header_name_ok(v, (size_t)(colon - v)) || strpbrk(v, "\r\n"))
                *bad = "--mcp-header takes 'Name: value' (Name: letters, digits and "
                       "!#$%&'*+-.^_`|~, at most 64; no line breaks)";
            else {
                char name[65];
                snprintf(name, sizeof name, "%.*s", (int)(colon - v), v);
                json_object_set_new(mcp_entry_sub(mcp_http, "url", "headers"), name,
                                    json_string(val));
            }
        } else if (!strcmp(f, "--mcp-env")) {
            const char *eq = strchr(v, '=');
            size_t kl = eq ? (size_t)(eq - v) : 0;
            if (last != 1)
                *bad = "--mcp-env must follow the --mcp-stdio command it applies to";
            else if (!eq || !kl || kl > 128 || (v[0] >= '0' && v[0] <= '9') ||
                     strspn(v, ENV_NAME_CHARS) != kl)
                *bad = "--mcp-env takes K=V with K matching [A-Za-z_][A-Za-z0-9_]*";
            else {
                char name[129];
                snprintf(name, sizeof name, "%.*s", (int)kl, v);
                json_object_set_new(mcp_entry_sub(mcp_stdio, "command", "env"), name,
                                    json_string(eq + 1));
            }
        } else if (!strcmp(f, "--tool")) {
            int ok = 0;
            for (size_t k = 0; k < sizeof builtin / sizeof builtin[0]; k++)
                ok |= !strcmp(v, builtin[k]);
            if (!ok)
                *bad = "--tool takes a built-in tool: get_current_time, request_human_input";
            json_array_append_new(tools, json_string(v));
        } else if (!strcmp(f, "--base-url")) {
            if ((strncmp(v, "http://", 7) || !v[7]) && (strncmp(v, "https://", 8) || !v[8]))
                *bad = "--base-url must be an http:// or https:// URL";
            json_object_set_new(o, "base_url", json_string(v));
        } else if (!strcmp(f, "--api-key-env")) {
            if (!env_name_ok(v))
                *bad = "--api-key-env takes the NAME of an environment variable holding the key "
                       "([A-Z_][A-Z0-9_]*, at most 64 characters), never the key itself";
            json_object_set_new(o, "api_key_env", json_string(v));
        } else if (!strcmp(f, "--forms")) {
            if (strcmp(v, "widget") && strcmp(v, "structured"))
                *bad = "--forms takes widget (a form widget, the default) or structured (the "
                       "protocol's structured_input when the questions fit it)";
            json_object_set_new(o, "forms", json_string(v));
        } else if (!strcmp(f, "--allow-model")) {
            if (!model_name_ok(v))
                *bad = "--allow-model takes a model name or PROVIDER:MODEL (1 to 127 characters, "
                       "no spaces)";
            json_array_append_new(models, json_string(v));
        } else
            continue;
        i++;
    }
    return o;
}

/* A name that looks like it holds a secret (the rule stdio.c keeps out of servers' env). */
static int secret_env_name(const char *k)
{
    static const char *const suffix[] = {"KEY", "SECRET", "TOKEN", "PASSWORD"};
    size_t kl = strlen(k);
    for (size_t i = 0; i < sizeof suffix / sizeof *suffix; i++) {
        size_t n = strlen(suffix[i]);
        if (kl >= n && !strcasecmp(k + kl - n, suffix[i]))
            return 1;
    }
    return 0;
}

/* The agent's config as printed: MCP header values (tokens) and secret-looking env values
 * masked; what is stored is untouched. */
static json_t *printable_config(const json_t *cfg)
{
    json_t *c = json_deep_copy(cfg);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(c, "mcp_http"), i, e)
    {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(e, "headers"), k, v)
        {
            json_string_set(v, "***");
        }
    }
    json_array_foreach(json_object_get(c, "mcp_stdio"), i, e)
    {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(e, "env"), k, v)
        {
            if (secret_env_name(k))
                json_string_set(v, "***");
        }
    }
    return c;
}

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = xmalloc(max + 1);
    size_t n = fread(b, 1, max, f);
    int more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        free(b);
        errno = EFBIG;
        return NULL;
    }
    b[n] = 0;
    return b;
}

static int cmd_demo(const config *cfg, store_conn *db, int json)
{
    int rc;
    store_account acc = {0};
    store_user u = {0};
    store_agent ag = {0};
    store_agent *agents = NULL;
    size_t n = 0;
    char token[AUTH_TOKEN_MAX] = "";
    char path[4096];
    int status = 1;
    if ((rc = store_begin(db)))
        goto out;
    rc = store_account_find_by_name(db, "Demo", &acc);
    if (rc == STORE_ENOTFOUND) {
        store_account_clear(&acc);
        acc.name = xstrdup("Demo");
        rc = store_account_create(db, &acc);
    }
    if (rc)
        goto out;
    rc = store_user_find_by_name(db, acc.id, "demo", &u);
    if (rc == STORE_ENOTFOUND) {
        store_user_clear(&u);
        snprintf(u.account_id, sizeof u.account_id, "%s", acc.id);
        u.name = xstrdup("demo");
        rc = store_user_create(db, &u);
    }
    if (rc)
        goto out;
    if ((rc = store_agents_list(db, acc.id, &agents, &n)))
        goto out;
    if (n) {
        ag = agents[0];
        memset(&agents[0], 0, sizeof agents[0]);
    } else {
        snprintf(ag.account_id, sizeof ag.account_id, "%s", acc.id);
        ag.name = xstrdup("Demo agent");
        ag.model = xstrdup("default"); /* resolved when it runs: demo unless a key is set */
        ag.instructions = xstrdup("You are the chatkitd demo assistant.");
        /* the bundled MCP server: this very binary, `chatkitd mcp-demo` */
        char exe[PATH_MAX], cmd[PATH_MAX + 16];
        ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[el > 0 ? el : 0] = 0;
        snprintf(cmd, sizeof cmd, "\"%s\" mcp-demo", el > 0 ? exe : "chatkitd");
        json_t *acfg = json_pack("{s:[s],s:[],s:[s,s],s:[]}", "mcp_stdio", cmd, "mcp_http",
                                 "tools", "get_current_time", "request_human_input", "models");
        ag.config_json = json_dumps(acfg, JSON_COMPACT);
        json_decref(acfg);
        if ((rc = store_agent_create(db, &ag)))
            goto out;
    }
    /* the token file keeps `chatkitd demo` idempotent although only the hash is stored */
    snprintf(path, sizeof path, "%s/demo.token", cfg->data_dir);
    char *saved = read_file(path, AUTH_TOKEN_MAX);
    if (saved) {
        saved[strcspn(saved, "\r\n")] = 0;
        char hash[AUTH_HASH_HEX];
        store_auth sa;
        auth_token_hash(saved, strlen(saved), hash);
        if (strlen(saved) < AUTH_TOKEN_MAX && store_token_lookup(db, hash, ts_now_us(), &sa) == 0 &&
            !strcmp(sa.scope.user_id, u.id))
            snprintf(token, sizeof token, "%s", saved);
        free(saved);
    }
    if (!token[0]) {
        int64_t exp;
        if ((rc = mint_token(db, u.id, 0, token, &exp)))
            goto out;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, token, strlen(token)) != (ssize_t)strlen(token) || fsync(fd)) {
            if (fd >= 0)
                close(fd);
            fail("cannot write the demo token file", path);
            rc = STORE_EIO;
            goto out;
        }
        close(fd);
    }
    char login[600];
    if ((rc = mint_login_url(cfg, db, u.id, login, sizeof login)))
        goto out;
    if ((rc = store_commit(db)))
        goto out;
    char url[300];
    snprintf(url, sizeof url, "http://%s/", cfg->listen);
    print_obj(json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "account_id", acc.id, "user_id", u.id,
                        "agent_id", ag.id, "token", token, "url", url, "login_url", login),
              json);
    memset(login, 0, sizeof login);
    status = 0;
out:
    if (status) {
        store_rollback(db);
        if (rc)
            fail("demo setup failed", store_errmsg(db));
    }
    memset(token, 0, sizeof token);
    store_account_clear(&acc);
    store_user_clear(&u);
    store_agent_clear(&ag);
    store_agents_free(agents, n);
    return status;
}

/* usage --account ID [--thread ID] [--limit N]: the account's runs, newest first, and their
 * token totals. */
static int cmd_usage(store_conn *db, int argc, char **argv, int json)
{
    const char *acc = arg(argc, argv, "--account"), *thread = arg(argc, argv, "--thread");
    const char *lim = arg(argc, argv, "--limit");
    char *end = NULL;
    errno = 0;
    long long limit = lim ? strtoll(lim, &end, 10) : 50;
    if (!acc || (lim && (errno || end == lim || *end || limit < 1 || limit > 100000)))
        return usage("usage --account ID [--thread ID] [--limit N (1 to 100000, default 50)]");
    store_account a = {0};
    store_run *v = NULL;
    size_t n = 0;
    int rc = store_account_get(db, acc, &a);
    store_account_clear(&a);
    if (rc == STORE_ENOTFOUND)
        return fail("no such account", acc);
    if (rc || (rc = store_runs_list(db, acc, thread, (size_t)limit, &v, &n)))
        return fail("command failed", store_errmsg(db));
    json_t *runs = json_array();
    json_int_t in = 0, out = 0;
    if (!json)
        printf("%-27s %-27s %-39s %-39s %-39s %-9s %5s %5s %8s %8s %s\n", "started_at", "ended_at",
               "id", "thread_id", "agent_id", "status", "calls", "tools", "input", "output",
               "model");
    for (size_t i = 0; i < n; i++) {
        const store_run *r = &v[i];
        char s[TS_MAX], e[TS_MAX];
        ts_format(r->started_us, s);
        ts_format(r->ended_us, e);
        in += r->input_tokens;
        out += r->output_tokens;
        if (!json)
            printf("%-27s %-27s %-39s %-39s %-39s %-9s %5u %5u %8lld %8lld %s\n", s, e, r->id,
                   r->thread_id, r->agent_id, r->status, r->model_calls, r->tool_calls,
                   (long long)r->input_tokens, (long long)r->output_tokens, r->model);
        else
            json_array_append_new(
                runs,
                json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:s,s:s}", "id", r->id, "thread_id",
                          r->thread_id, "agent_id", r->agent_id, "model", r->model, "status",
                          r->status, "input_tokens", (json_int_t)r->input_tokens, "output_tokens",
                          (json_int_t)r->output_tokens, "model_calls", (json_int_t)r->model_calls,
                          "tool_calls", (json_int_t)r->tool_calls, "started_at", s, "ended_at", e));
    }
    free(v);
    if (!json) {
        json_decref(runs);
        printf("total: %zu runs, %lld input tokens, %lld output tokens\n", n, (long long)in,
               (long long)out);
        return 0;
    }
    return print_obj(json_pack("{s:o,s:{s:I,s:I,s:I}}", "runs", runs, "totals", "runs",
                               (json_int_t)n, "input_tokens", in, "output_tokens", out),
                     1);
}

int admin_main(const config *cfg, int argc, char **argv, int json)
{
    const char *cmd = argv[0];
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(cmd, "config")) {
        char *s = config_dump(cfg);
        puts(s);
        free(s);
        return 0;
    }
    if (strcmp(cmd, "migrate") && strcmp(cmd, "demo") && strcmp(cmd, "usage") &&
        strcmp(sub, "create") && !(strcmp(cmd, "token") == 0 && strcmp(sub, "revoke") == 0))
        return usage("unknown command");
    store_conn *db = open_db(cfg);
    if (!db)
        return 1;
    int status = 0, rc = 0;
    if (!strcmp(cmd, "migrate")) {
        int v = store_schema_version(db);
        print_obj(json_pack("{s:i}", "schema_version", v), json);
    } else if (!strcmp(cmd, "demo")) {
        status = cmd_demo(cfg, db, json);
    } else if (!strcmp(cmd, "usage")) {
        status = cmd_usage(db, argc, argv, json);
    } else if (!strcmp(cmd, "account")) {
        const char *name = positional(argc, argv, 2);
        const char *ext = arg(argc, argv, "--external-id");
        if (!name || !*name || (ext && !*ext))
            status = usage("account create NAME [--external-id HOST_ACCOUNT_ID]");
        else {
            store_account a = {0};
            a.name = xstrdup(name);
            a.external_id = ext ? xstrdup(ext) : NULL;
            rc = store_account_create(db, &a);
            if (rc == STORE_ECONFLICT) {
                status = fail("an account with this external id exists", ext);
                rc = 0;
            } else if (!rc) {
                json_t *o = json_pack("{s:s,s:s}", "id", a.id, "name", a.name);
                if (ext)
                    json_object_set_new(o, "external_id", json_string(ext));
                print_obj(o, json);
            }
            store_account_clear(&a);
        }
    } else if (!strcmp(cmd, "user")) {
        const char *acc = arg(argc, argv, "--account");
        const char *name = positional(argc, argv, 2);
        if (!acc || !name)
            status = usage("user create --account ID NAME");
        else {
            store_user u = {0};
            store_account a = {0};
            snprintf(u.account_id, sizeof u.account_id, "%s", acc);
            u.name = xstrdup(name);
            const char *ext = arg(argc, argv, "--external-id");
            u.external_id = ext ? xstrdup(ext) : NULL;
            rc = store_account_get(db, acc, &a);
            if (rc == STORE_ENOTFOUND) {
                status = fail("no such account", acc);
                rc = 0;
            } else if (!rc && !(rc = store_user_create(db, &u)))
                print_obj(json_pack("{s:s,s:s,s:s}", "id", u.id, "account_id", u.account_id,
                                    "name", u.name),
                          json);
            store_user_clear(&u);
            store_account_clear(&a);
        }
    } else if (!strcmp(cmd, "agent")) {
        const char *acc = arg(argc, argv, "--account");
        const char *name = arg(argc, argv, "--name");
        const char *model = arg(argc, argv, "--model");
        const char *instr = arg(argc, argv, "--instructions");
        const char *instr_file = arg(argc, argv, "--instructions-file");
        const char *bad = NULL;
        json_t *acfg = agent_config(argc, argv, &bad);
        if (!bad && model)
            bad = model_error(model);
        if (!acc || !name || (instr && instr_file))
            status = usage("agent create --account ID --name NAME "
                           "[--model default|demo|PROVIDER:MODEL] "
                           "[--instructions TEXT | --instructions-file F]");
        else if (bad)
            status = usage(bad);
        else {
            store_agent ag = {0};
            store_account a = {0};
            char *text = instr_file ? read_file(instr_file, 1 << 20) : NULL;
            if (instr_file && !text) {
                status = fail("cannot read --instructions-file", strerror(errno));
            } else if ((rc = store_account_get(db, acc, &a)) == STORE_ENOTFOUND) {
                status = fail("no such account", acc);
                rc = 0;
            } else if (!rc) {
                snprintf(ag.account_id, sizeof ag.account_id, "%s", acc);
                ag.name = xstrdup(name);
                ag.model = xstrdup(model ? model : "default");
                ag.instructions = text ? text : instr ? xstrdup(instr) : NULL;
                text = NULL;
                ag.config_json = json_dumps(acfg, JSON_COMPACT);
                if (!(rc = store_agent_create(db, &ag)))
                    print_obj(json_pack("{s:s,s:s,s:s,s:s,s:o}", "id", ag.id, "account_id",
                                        ag.account_id, "name", ag.name, "model", ag.model,
                                        "config", printable_config(acfg)),
                              json);
            }
            free(text);
            store_agent_clear(&ag);
            store_account_clear(&a);
        }
        json_decref(acfg);
    } else if (!strcmp(cmd, "token") && !strcmp(sub, "create")) {
        const char *user = arg(argc, argv, "--user");
        const char *ttl = arg(argc, argv, "--ttl");
        int64_t ttl_us = 0, exp = 0;
        store_user u = {0};
        int login = has_flag(argc, argv, "--login-url");
        if (!user || (ttl && parse_ttl(ttl, &ttl_us)) || (login && ttl))
            status = usage("token create --user ID [--ttl 30d | --login-url]");
        else if ((rc = store_user_get(db, user, &u)) == STORE_ENOTFOUND) {
            status = fail("no such user", user);
            rc = 0;
        } else if (!rc && login) {
            char url[600];
            if (!(rc = mint_login_url(cfg, db, user, url, sizeof url)))
                print_obj(json_pack("{s:s,s:s,s:i}", "login_url", url, "user_id", user,
                                    "expires_in_s", (int)cfg->login_ttl_s),
                          json);
            memset(url, 0, sizeof url);
        } else if (!rc) {
            char token[AUTH_TOKEN_MAX];
            if (!(rc = mint_token(db, user, ttl_us, token, &exp))) {
                json_t *o = json_pack("{s:s,s:s}", "token", token, "user_id", user);
                if (exp) {
                    char ts[TS_MAX];
                    ts_format(exp, ts);
                    json_object_set_new(o, "expires_at", json_string(ts));
                }
                print_obj(o, json);
            }
            memset(token, 0, sizeof token);
        }
        store_user_clear(&u);
    } else if (!strcmp(cmd, "token")) {
        const char *tok = positional(argc, argv, 2);
        if (!tok)
            status = usage("token revoke TOKEN");
        else {
            char hash[AUTH_HASH_HEX];
            auth_token_hash(tok, strlen(tok), hash);
            rc = store_token_revoke(db, hash);
            if (rc == STORE_ENOTFOUND) {
                status = fail("no such token", NULL);
                rc = 0;
            } else if (!rc)
                print_obj(json_pack("{s:b}", "revoked", 1), json);
        }
    }
    if (rc)
        status = fail("command failed", store_errmsg(db));
    store_conn_close(db);
    return status;
}
