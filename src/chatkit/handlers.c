/* Request handlers for every ChatKit request type (protocol reference §3, §11).
 *
 * A request goes: route -> authenticate (cached token lookup) -> parse and validate JSON ->
 * one store job that does all reads/writes of the request atomically (a job that fails rolls
 * back alone) -> the reply: JSON, or an SSE stream fed by the run. Validation errors and
 * missing or foreign objects are answered as JSON before any stream starts, so a failing
 * request never leaves half-written state and never sends a half stream. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth.h"
#include "chatkit/chatkit.h"
#include "chatkit/history.h"
#include "chatkit/stream.h"
#include "files/files.h"
#include "files/sniff.h"
#include "mcp/pool.h"
#include "mcp/result.h"
#include "run/human.h"
#include "run/run.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

#define MAX_CONTENT_PARTS 64
#define MAX_ATTACHMENTS 16
#define MAX_FEEDBACK_IDS 100
#define MAX_PAGE 100
#define MAX_TITLE 512
#define MAX_NAME 255
#define AUTH_CACHE_MAX 10000

typedef struct ck_call ck_call;
typedef void (*call_fn)(ck_call *call);
typedef int (*call_work)(store_conn *db, ck_call *call); /* runs on a store thread */

struct ck_call {
    ck_app *app;
    http_req *req;
    ck_auth *auth;
    const ck_agent *agent;   /* inside auth */
    json_t *body;
    json_t *params;
    const char *type;
    char token_hash[AUTH_HASH_HEX];
    store_scope scope;
    /* job inputs */
    char thread_id[STORE_ID_MAX];
    char item_id[STORE_ID_MAX];
    char agent_id[STORE_ID_MAX];
    store_page_req page;
    char after[STORE_ID_MAX];
    json_t *in;              /* request-specific input, handed to the job */
    json_t *attachment_ids;  /* user message attachments */
    char *text;              /* the user's text for the model */
    /* job outputs */
    int status;              /* HTTP status when the job refused the request */
    const char *code;
    char msg[200];
    buf out;                 /* JSON reply or the event(s) to stream first */
    store_thread thread;
    json_t *result;          /* item produced by the job (loop takes it after done) */
    json_t *history;         /* the model's input, built from the thread by the job */
    json_t *options;         /* inference_options of the newest user message (job) */
    int human;               /* work_human's verdict (HUMAN_*) */
    json_t *elicit;          /* an answered MCP elicitation: {id, action, tool_call, content?} */
    int64_t last_us;
    int not_widget;
    int slot;                /* holds one of the user's stream slots until a stream takes it */
    call_work work;
    call_fn next;
};

/* ------------------------------------------------------------------ replies */

static void call_free(ck_call *c)
{
    if (c->slot)
        rl_stream(&c->app->rl, c->scope.user_id, -1);
    ck_auth_release(c->auth);
    json_decref(c->body);
    json_decref(c->in);
    json_decref(c->attachment_ids);
    json_decref(c->result);
    json_decref(c->history);
    json_decref(c->options);
    json_decref(c->elicit);
    free(c->text);
    buf_free(&c->out);
    store_thread_clear(&c->thread);
    if (c->req)
        http_req_unref(c->req);
    free(c);
}

static void reply_error(ck_call *c, int status, const char *code, const char *msg)
{
    if (status >= 500)
        c->app->n_errors++;
    LOGD(c->req->rid, "request refused", "status=%d code=%s type=\"%s\"", status, code,
         LOGQ(c->type));
    http_respond_error(c->req, status, code, msg);
    call_free(c);
}

static void reply_out(ck_call *c)
{
    size_t len;
    char *body = buf_steal(&c->out, &len);
    http_respond_owned(c->req, 200, "application/json", body, len, NULL);
    call_free(c);
}

static void reply_empty(ck_call *c)
{
    http_respond(c->req, 200, "application/json", "{}", 2, NULL);
    call_free(c);
}

/* An SSE stream of one event. Ending it also completes a request whose client is gone. */
static void reply_lone_event(ck_call *c, const char *ev, size_t len)
{
    if (http_sse_start(c->req, NULL) == 0)
        http_sse_send(c->req, ev, len);
    http_sse_end(c->req);
    call_free(c);
}

/* A job refusal: remember the status for the done callback and roll the job back. */
static int refuse(ck_call *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(ck_call *c, int status, const char *code, const char *fmt, ...)
{
    c->status = status;
    c->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return STORE_EINVAL;
}

static int not_found(ck_call *c, int rc, const char *what)
{
    if (rc == STORE_ENOTFOUND)
        return refuse(c, 404, "not_found", "%s not found", what);
    return rc;
}

static const char storage_lost_msg[] =
    "the server's database file was deleted or replaced; nothing can be saved until an operator "
    "restores it";

int ck_store_status(int rc, const char *what, const char **code, const char **msg)
{
    if (rc == STORE_EFULL) {
        *code = "storage_error";
        *msg = "the disk is full; nothing was kept";
        return 507;
    }
    if (rc == STORE_ELOST) {
        *code = "storage_lost";
        *msg = storage_lost_msg;
        return 503;
    }
    *code = "store_error";
    *msg = what;
    return 500;
}

/* Common done: refusal -> JSON error; store failure -> 507 (disk full), 503 (database lost) or
 * 500 (docs/protocol.md); else the next step. */
static void job_done(int rc, void *arg)
{
    ck_call *c = arg;
    if (c->status) {
        reply_error(c, c->status, c->code, c->msg);
        return;
    }
    if (rc) {
        /* a full disk or a lost database is the operator's problem, and the store logged it */
        LOG(rc == STORE_EFULL || rc == STORE_ELOST ? LOG_WARN : LOG_ERROR, c->req->rid,
            "store job failed", "type=\"%s\" rc=%d", LOGQ(c->type), rc);
        const char *code, *msg;
        int status = ck_store_status(rc, "storage failed; nothing was changed", &code, &msg);
        reply_error(c, status, code, msg);
        return;
    }
    ck_sign_previews(c->app, &c->out);
    c->next(c);
}

static int trampoline(store_conn *db, void *arg)
{
    ck_call *c = arg;
    return c->work(db, c);
}

static void run_job(ck_call *c, int write, call_work work, call_fn next)
{
    c->work = work;
    c->next = next;
    int rc = write ? store_write(c->app->st, trampoline, job_done, c)
                   : store_read(c->app->st, trampoline, job_done, c);
    if (rc)
        reply_error(c, 503, "unavailable", "the server is shutting down");
}

/* ------------------------------------------------------------------ validation */

static int get_id(ck_call *c, const char *key, char out[STORE_ID_MAX], int required)
{
    json_t *v = json_object_get(c->params, key);
    if (!v || json_is_null(v)) {
        if (!required)
            return 1;
        snprintf(c->msg, sizeof c->msg, "params.%s is required", key);
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n == 0 || n >= STORE_ID_MAX || strlen(s) != n) {
        snprintf(c->msg, sizeof c->msg, "params.%s must be a non-empty id string", key);
        return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

static int get_page(ck_call *c)
{
    json_t *l = json_object_get(c->params, "limit");
    long long limit = 0;
    if (l && !json_is_null(l) && (ck_lax_int(l, &limit) || limit < 0)) {
        snprintf(c->msg, sizeof c->msg, "params.limit must be a non-negative integer");
        return -1;
    }
    if (limit == 0)
        limit = 20; /* DEFAULT_PAGE_SIZE */
    if (limit > MAX_PAGE)
        limit = MAX_PAGE;
    c->page.limit = (int)limit;
    json_t *o = json_object_get(c->params, "order");
    const char *order = json_string_value(o);
    if (o && !json_is_null(o) && (!order || (strcmp(order, "asc") && strcmp(order, "desc")))) {
        snprintf(c->msg, sizeof c->msg, "params.order must be \"asc\" or \"desc\"");
        return -1;
    }
    c->page.desc = !order || !strcmp(order, "desc");
    int rc = get_id(c, "after", c->after, 0);
    if (rc < 0)
        return -1;
    c->page.after = rc == 0 ? c->after : NULL;
    return 0;
}

static int bad(ck_call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(ck_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* UserMessageInput -> normalized content (c->in), attachment ids, model text. */
static int parse_input(ck_call *c)
{
    json_t *input = json_object_get(c->params, "input");
    if (!json_is_object(input))
        return bad(c, "params.input must be an object");
    json_t *content = json_object_get(input, "content");
    if (!json_is_array(content))
        return bad(c, "params.input.content must be an array");
    if (json_array_size(content) > MAX_CONTENT_PARTS)
        return bad(c, "params.input.content has more than %d parts", MAX_CONTENT_PARTS);
    json_t *norm = json_array();
    buf text = BUF_INIT(0);
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *t = json_string_value(json_object_get(part, "type"));
        json_t *tx = json_object_get(part, "text");
        if (!t || !json_is_string(tx)) {
            json_decref(norm);
            buf_free(&text);
            return bad(c, "params.input.content[%zu] needs a type and a text string", i);
        }
        if (!strcmp(t, "input_text")) {
            json_array_append_new(norm, json_pack("{s:s,s:O}", "type", "input_text", "text", tx));
        } else if (!strcmp(t, "input_tag")) {
            json_t *id = json_object_get(part, "id");
            json_t *data = json_object_get(part, "data");
            json_t *group = json_object_get(part, "group");
            json_t *inter = json_object_get(part, "interactive");
            if (!json_is_string(id) || !json_is_object(data) ||
                (group && !json_is_null(group) && !json_is_string(group)) ||
                (inter && !json_is_boolean(inter))) {
                json_decref(norm);
                buf_free(&text);
                return bad(c, "params.input.content[%zu] is not a valid input_tag", i);
            }
            json_t *tag = json_pack("{s:s,s:O,s:O,s:O}", "type", "input_tag", "id", id, "text", tx,
                                    "data", data);
            if (json_is_string(group))
                json_object_set(tag, "group", group);
            json_object_set_new(tag, "interactive", json_boolean(json_is_true(inter)));
            json_array_append_new(norm, tag);
        } else {
            json_decref(norm);
            buf_free(&text);
            return bad(c, "params.input.content[%zu].type \"%.40s\" is not supported", i, t);
        }
        if (text.len)
            buf_putc(&text, ' ');
        buf_append(&text, json_string_value(tx), json_string_length(tx));
    }
    json_t *atts = json_object_get(input, "attachments");
    if (atts && !json_is_null(atts)) {
        if (!json_is_array(atts) || json_array_size(atts) > MAX_ATTACHMENTS) {
            json_decref(norm);
            buf_free(&text);
            return bad(c, "params.input.attachments must be an array of at most %d ids",
                       MAX_ATTACHMENTS);
        }
        json_t *a;
        json_array_foreach(atts, i, a)
        {
            size_t n = json_string_length(a);
            if (!json_is_string(a) || n == 0 || n >= STORE_ID_MAX) {
                json_decref(norm);
                buf_free(&text);
                return bad(c, "params.input.attachments[%zu] must be an attachment id", i);
            }
        }
        c->attachment_ids = json_incref(atts);
    } else {
        c->attachment_ids = json_array();
    }
    json_t *q = json_object_get(input, "quoted_text");
    if (q && !json_is_null(q) && !json_is_string(q)) {
        json_decref(norm);
        buf_free(&text);
        return bad(c, "params.input.quoted_text must be a string");
    }
    json_t *io = json_object_get(input, "inference_options");
    json_t *opts = json_object();
    if (io && !json_is_null(io)) {
        json_t *tc = json_object_get(io, "tool_choice");
        json_t *model = json_object_get(io, "model");
        if (!json_is_object(io) || (tc && !json_is_null(tc) &&
                                    !json_is_string(json_object_get(tc, "id"))) ||
            (model && !json_is_null(model) && !json_is_string(model))) {
            json_decref(norm);
            json_decref(opts);
            buf_free(&text);
            return bad(c, "params.input.inference_options is malformed");
        }
        if (json_is_object(tc))
            json_object_set_new(opts, "tool_choice",
                                json_pack("{s:O}", "id", json_object_get(tc, "id")));
        if (json_is_string(model))
            json_object_set(opts, "model", model);
    }
    c->in = json_pack("{s:o,s:o}", "content", norm, "inference_options", opts);
    if (json_is_string(q))
        json_object_set(c->in, "quoted_text", q);
    c->text = buf_steal(&text, NULL);
    return 0;
}

/* ------------------------------------------------------------------ store work helpers */

static int load_thread(store_conn *db, ck_call *c)
{
    int rc = store_thread_load(db, &c->scope, c->thread_id, &c->thread);
    return rc ? not_found(c, rc, "thread") : 0;
}

static int64_t next_us(ck_call *c)
{
    int64_t now = ts_now_us();
    int64_t min = c->last_us > c->thread.last_item_us ? c->last_us : c->thread.last_item_us;
    c->last_us = now > min ? now : min + 1;
    return c->last_us;
}

static int item_json_to_store(ck_call *c, json_t *item, store_item *it)
{
    memset(it, 0, sizeof *it);
    snprintf(it->id, sizeof it->id, "%s", json_string_value(json_object_get(item, "id")));
    snprintf(it->thread_id, sizeof it->thread_id, "%s", c->thread.id);
    snprintf(it->type, sizeof it->type, "%s", json_string_value(json_object_get(item, "type")));
    it->hidden = CK_HIDDEN_TYPE(it->type);
    const char *ca = json_string_value(json_object_get(item, "created_at"));
    if (!ca || ts_parse(ca, &it->created_us))
        it->created_us = next_us(c);
    it->json = json_dumps(item, JSON_COMPACT);
    return it->json ? 0 : STORE_EIO;
}

static int load_history(store_conn *db, ck_call *c)
{
    json_decref(c->history);
    json_decref(c->options);
    c->history = c->options = NULL;
    return history_load(db, &c->scope, c->thread_id, c->app->cfg, &c->history, &c->options);
}

/* The job's history for the run (the call gives it up). */
static json_t *take_history(ck_call *c)
{
    json_t *h = c->history ? c->history : json_array();
    c->history = NULL;
    return h;
}

/* Writes the user message of c->in (with its attachments) into c->thread; leaves the
 * thread.item.done event in c->out. Reference §9 step 3 and §11.2. */
static int add_user_message(store_conn *db, ck_call *c)
{
    char id[ID_MAX], ts[TS_MAX];
    id_new("msg", id);
    int64_t us = next_us(c);
    ts_format(us, ts);
    json_t *atts = json_array();
    json_t *item = json_pack("{s:s,s:s,s:s,s:s,s:O,s:o}", "id", id, "thread_id", c->thread.id,
                             "created_at", ts, "type", "user_message", "content",
                             json_object_get(c->in, "content"), "attachments", atts);
    if (json_object_get(c->in, "quoted_text"))
        json_object_set(item, "quoted_text", json_object_get(c->in, "quoted_text"));
    json_object_set(item, "inference_options", json_object_get(c->in, "inference_options"));
    size_t i;
    json_t *aid;
    int rc = 0;
    json_array_foreach(c->attachment_ids, i, aid)
    {
        store_attachment a = {0};
        rc = store_attachment_load(db, &c->scope, json_string_value(aid), &a);
        if (!rc && a.agent_id[0] && strcmp(a.agent_id, c->thread.agent_id))
            rc = STORE_ENOTFOUND; /* made for another agent: as if it did not exist */
        if (!rc && a.uploaded != STORE_UPLOAD_DONE)
            rc = refuse(c, 409, "attachment_not_uploaded",
                        "attachment %.64s has no file yet: upload it first", a.id);
        else if (!rc && a.thread_id[0] && strcmp(a.thread_id, c->thread.id))
            rc = refuse(c, 409, "attachment_in_use",
                        "attachment %.64s is already attached in another thread", a.id);
        if (rc) {
            store_attachment_clear(&a);
            json_decref(item);
            return rc == STORE_ENOTFOUND
                       ? refuse(c, 404, "not_found", "attachment %.64s not found",
                                json_string_value(aid))
                       : rc;
        }
        json_t *aj = json_loads(a.json, 0, NULL);
        if (!json_is_object(aj)) {
            json_decref(aj);
            aj = json_pack("{s:s,s:s,s:s,s:s}", "id", a.id, "name", a.name, "mime_type",
                           a.mime_type, "type", "file");
        }
        json_object_set_new(aj, "thread_id", json_string(c->thread.id));
        snprintf(a.thread_id, sizeof a.thread_id, "%s", c->thread.id);
        free(a.json);
        a.json = json_dumps(aj, JSON_COMPACT);
        rc = a.json ? store_attachment_save(db, &c->scope, &a) : STORE_EIO;
        store_attachment_clear(&a);
        json_array_append_new(atts, aj);
        if (rc) {
            json_decref(item);
            return rc;
        }
    }
    store_item it;
    rc = item_json_to_store(c, item, &it);
    if (!rc)
        rc = store_item_add(db, &c->scope, &it);
    if (!rc) {
        buf_puts(&c->out, "{\"type\":\"thread.item.done\",\"item\":");
        buf_puts(&c->out, it.json);
        buf_putc(&c->out, '}');
    }
    store_item_clear(&it);
    json_decref(item);
    return rc;
}

/* ------------------------------------------------------------------ streaming handlers */

static const ck_agent *agent_by_id(const ck_auth *a, const char *id)
{
    for (size_t i = 0; i < a->n_agents; i++)
        if (!strcmp(a->agents[i].id, id))
            return &a->agents[i];
    return NULL;
}

/* Starts the stream for c->thread; the thread id is reserved in app->active. */
static ck_stream *open_stream(ck_call *c)
{
    const ck_agent *agent = agent_by_id(c->auth, c->thread.agent_id);
    static const ck_agent none = {"", "unknown", "none:unknown", NULL, NULL};
    ck_stream *st = stream_new(c->app, c->req, &c->scope, &c->thread, agent ? agent : &none,
                               c->last_us > c->thread.last_item_us ? c->last_us
                                                                   : c->thread.last_item_us);
    if (c->slot) { /* the stream counts itself now */
        rl_stream(&c->app->rl, c->scope.user_id, -1);
        c->slot = 0;
    }
    return st;
}

static const char stream_options_ev[] = "{\"type\":\"stream_options\",\"stream_options\":"
                                        "{\"allow_cancel\":true}}";

static void emit_stream_options(ck_stream *st)
{
    stream_emit_raw(st, stream_options_ev, sizeof stream_options_ev - 1);
}

/* Reserve the thread for this request's run: one run per thread. */
static int reserve_thread(ck_call *c)
{
    if (map_get(&c->app->active, c->thread_id))
        return -1;
    map_put(&c->app->active, c->thread_id, c);
    return 0;
}

static void release_thread(ck_call *c)
{
    if (map_get(&c->app->active, c->thread_id) == c)
        map_del(&c->app->active, c->thread_id);
}

/* Streams a lone error event: the thread is busy with another run. */
static void reply_busy(ck_call *c)
{
    static const char ev[] =
        "{\"type\":\"error\",\"code\":\"custom\",\"message\":\"This thread is still answering a "
        "previous message. Wait for it to finish or stop it, then send again.\","
        "\"allow_retry\":false}";
    reply_lone_event(c, ev, sizeof ev - 1);
}

/* add_user_message on a busy thread: the stored message, then why no answer follows. */
static void reply_busy_message(ck_call *c)
{
    static const char ev[] =
        "{\"type\":\"error\",\"code\":\"custom\",\"message\":\"This thread is still answering a "
        "previous message. Your message is saved: retry it once the answer is done.\","
        "\"allow_retry\":true}";
    if (http_sse_start(c->req, NULL) == 0) {
        http_sse_send(c->req, c->out.data, c->out.len);
        http_sse_send(c->req, stream_options_ev, sizeof stream_options_ev - 1);
        http_sse_send(c->req, ev, sizeof ev - 1);
    }
    http_sse_end(c->req);
    call_free(c);
}

/* Wraps a streaming job's done: a refused or failed job must free the reservation. */
static void stream_job_done(int rc, void *arg)
{
    ck_call *c = arg;
    if (c->status || rc)
        release_thread(c);
    job_done(rc, arg);
}

static void run_stream_job(ck_call *c, call_work work, call_fn next)
{
    c->work = work;
    c->next = next;
    if (store_write(c->app->st, trampoline, stream_job_done, c)) {
        release_thread(c);
        reply_error(c, 503, "unavailable", "the server is shutting down");
    }
}

/* threads.create */
static int work_create(store_conn *db, ck_call *c)
{
    store_thread *t = &c->thread;
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", c->thread_id);
    snprintf(t->agent_id, sizeof t->agent_id, "%s", c->agent->id);
    t->status_json = xstrdup("{\"type\":\"active\"}");
    t->metadata_json = xstrdup("{}");
    t->created_us = next_us(c);
    int rc = store_thread_insert(db, &c->scope, t);
    if (!rc)
        rc = add_user_message(db, c);
    return rc ? rc : load_history(db, c);
}

static void done_create(ck_call *c)
{
    buf ev = BUF_INIT(0);
    buf_puts(&ev, "{\"type\":\"thread.created\",\"thread\":");
    ck_thread_json(&ev, &c->thread, NULL);
    buf_putc(&ev, '}');
    release_thread(c);
    ck_stream *st = open_stream(c);
    stream_emit_raw(st, ev.data, ev.len);
    buf_free(&ev);
    stream_emit_raw(st, c->out.data, c->out.len);
    emit_stream_options(st);
    run_start(st, take_history(c), c->text, c->options);
    call_free(c);
}

/* threads.add_user_message */
/* Stores the message only: for a busy thread, where no run follows. */
static int work_store_message(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    return rc ? rc : add_user_message(db, c);
}

static int work_add_message(store_conn *db, ck_call *c)
{
    int rc = work_store_message(db, c);
    return rc ? rc : load_history(db, c);
}

/* The interaction (issue 5) the thread waits for: its record item id, or NULL. */
static const char *pending_interaction(ck_call *c, char out[STORE_ID_MAX])
{
    json_t *md = json_loads(c->thread.metadata_json ? c->thread.metadata_json : "{}", 0, NULL);
    const char *id = json_string_value(json_object_get(md, "pending_interaction"));
    if (id)
        snprintf(out, STORE_ID_MAX, "%s", id);
    json_decref(md);
    return id ? out : NULL;
}

/* An assistant message (stored, streamed) that ends the stream: no model is asked. */
static void say(ck_stream *st, const char *text)
{
    json_t *m = stream_new_item(st, "msg", "assistant_message");
    json_object_set_new(m, "content", json_pack("[{s:[],s:s,s:s}]", "annotations", "text", text,
                                                "type", "output_text"));
    stream_emit(st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", m));
    stream_finish(st);
}

static void done_add_message(ck_call *c)
{
    release_thread(c);
    ck_stream *st = open_stream(c);
    stream_emit_raw(st, c->out.data, c->out.len);
    emit_stream_options(st);
    char iid[STORE_ID_MAX];
    if (pending_interaction(c, iid)) /* the message is stored; the form comes first (seed) */
        say(st, HUMAN_PENDING_TEXT);
    else
        run_start(st, take_history(c), c->text, c->options);
    call_free(c);
}

/* threads.custom_action human.form_submit | human.best_judgement | human.cancel (issue 5):
 * checked and applied in one write job, so a second submission (a double click, another tab)
 * finds nothing pending and changes nothing. */
enum { HUMAN_OK, HUMAN_NOT_PENDING, HUMAN_INVALID };

/* An interaction is answered (in the caller's write job): the answer becomes the tool's result
 * (a hidden tool item: the model's), the record is closed and the thread waits no more. */
static int close_interaction(store_conn *db, ck_call *c, json_t *rec, const char *text,
                             const char *kind)
{
    json_t *hi = json_object_get(json_object_get(rec, "content"), "human_interaction");
    json_t *tool = json_pack("{s:s,s:s,s:s,s:s}", "id", "", "thread_id", c->thread.id,
                             "created_at", "", "type", "hidden_context_item");
    char tid[ID_MAX], ts[TS_MAX];
    id_new("msg", tid);
    ts_format(next_us(c), ts);
    json_object_set_new(tool, "id", json_string(tid));
    json_object_set_new(tool, "created_at", json_string(ts));
    json_object_set_new(tool, "content", json_pack("{s:O,s:s,s:i,s:s}", "tool_call",
                                                   json_object_get(hi, "tool_call"), "tool_result",
                                                   text, "call_index", 0, "human", kind));
    json_object_set_new(hi, "status", json_string(kind));
    store_item a = {0}, b = {0};
    int rc = 0;
    /* an MCP elicitation's answer goes to the server; the tool's result comes from it */
    if (!json_is_true(json_object_get(hi, "elicitation"))) {
        rc = item_json_to_store(c, tool, &a);
        if (!rc)
            rc = store_item_add(db, &c->scope, &a);
    }
    if (!rc && !(rc = item_json_to_store(c, rec, &b)))
        rc = store_item_save(db, &c->scope, &b);
    store_item_clear(&a);
    store_item_clear(&b);
    json_decref(tool);
    if (!rc) {
        json_t *md = json_loads(c->thread.metadata_json ? c->thread.metadata_json : "{}", 0, NULL);
        json_object_del(md, "pending_interaction");
        free(c->thread.metadata_json);
        c->thread.metadata_json = json_dumps(md, JSON_COMPACT);
        json_decref(md);
        rc = store_thread_save(db, &c->scope, &c->thread);
    }
    return rc;
}

/* The pending interaction's record, when the thread waits for one (NULL otherwise). */
static json_t *load_interaction(store_conn *db, ck_call *c, int *rc)
{
    char iid[STORE_ID_MAX];
    *rc = 0;
    if (!pending_interaction(c, iid))
        return NULL;
    store_item it = {0};
    *rc = store_item_load(db, &c->scope, c->thread_id, iid, &it);
    json_t *rec = *rc ? NULL : ck_item_parse(&it);
    store_item_clear(&it);
    if (*rc == STORE_ENOTFOUND)
        *rc = 0;
    if (!json_object_get(json_object_get(json_object_get(rec, "content"), "human_interaction"),
                         "form")) {
        json_decref(rec);
        return NULL;
    }
    return rec;
}

static int work_human(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    json_t *action = json_object_get(c->in, "action");
    const char *kind = json_string_value(json_object_get(action, "type")) + 6;
    if (!strcmp(kind, "form_submit"))
        kind = "submit";
    json_t *payload = json_object_get(action, "payload");
    const char *want = json_string_value(json_object_get(payload, "interaction_id"));
    json_t *rec = load_interaction(db, c, &rc);
    json_t *hi = json_object_get(json_object_get(rec, "content"), "human_interaction");
    json_t *form = json_object_get(hi, "form");
    if (!rec || !want || strcmp(want, json_string_value(json_object_get(hi, "id")) ?: "") ||
        !json_object_get(hi, "widget_item_id")) {
        json_decref(rec);
        c->human = HUMAN_NOT_PENDING;
        return rc;
    }
    json_t *answers = NULL;
    if (!strcmp(kind, "submit")) {
        char *problems = NULL;
        answers = human_answers(form, payload, &problems);
        if (!answers) {
            c->human = HUMAN_INVALID;
            c->text = problems;
            json_decref(rec);
            return 0;
        }
    }
    char *text = human_result_text(form, answers, kind);
    rc = close_interaction(db, c, rec, text, kind);
    if (json_is_true(json_object_get(hi, "elicitation"))) {
        json_t *content = answers ? human_elicit_content(json_object_get(hi, "schema"), answers)
                                  : NULL;
        c->elicit = json_pack("{s:O,s:s,s:O,s:o?}", "id", json_object_get(hi, "id"), "action",
                              !strcmp(kind, "submit") ? "accept"
                              : !strcmp(kind, "cancel") ? "cancel"
                                                        : "decline",
                              "tool_call", json_object_get(hi, "tool_call"), "content", content);
    }
    /* the summary replaces the form: loaded here, streamed (and stored) by the pipeline */
    store_item it = {0};
    const char *wid = json_string_value(json_object_get(hi, "widget_item_id"));
    if (!rc && wid && !store_item_load(db, &c->scope, c->thread_id, wid, &it)) {
        c->result = ck_item_parse(&it);
        if (c->result)
            json_object_set_new(c->result, "widget", human_summary_widget(form, answers, kind));
    }
    store_item_clear(&it);
    free(text);
    json_decref(answers);
    json_decref(rec);
    c->human = HUMAN_OK;
    return rc ? rc : load_history(db, c);
}

static void done_human(ck_call *c)
{
    release_thread(c);
    ck_stream *st = open_stream(c);
    emit_stream_options(st);
    if (c->human == HUMAN_NOT_PENDING) {
        stream_error(st, "custom", "This form is no longer waiting for an answer.", 0);
        stream_finish(st);
    } else if (c->human == HUMAN_INVALID) {
        buf b = BUF_INIT(0);
        buf_puts(&b, "Please complete the form and submit it again:\n");
        buf_puts(&b, c->text ? c->text : "");
        say(st, b.data);
        buf_free(&b);
    } else {
        if (c->result)
            stream_emit(st, json_pack("{s:s,s:O}", "type", "thread.item.replaced", "item",
                                      c->result));
        if (!c->elicit) {
            run_start(st, take_history(c), NULL, c->options); /* the model goes on */
        } else if (run_resume_elicitation(c->app, st,
                                          json_string_value(json_object_get(c->elicit, "id")),
                                          json_string_value(json_object_get(c->elicit, "action")),
                                          json_object_get(c->elicit, "content"))) {
            /* nobody waits any more (deadline, restart): the user is told, the model too */
            json_t *call = json_object_get(c->elicit, "tool_call");
            static const char why[] =
                "Error: the tool's question to the user expired before the answer came.";
            json_t *m = stream_new_item(st, "msg", "assistant_message");
            json_object_set_new(m, "content",
                                json_pack("[{s:[],s:s,s:s}]", "annotations", "text",
                                          "This request expired before your answer arrived, so "
                                          "the tool could not use it.",
                                          "type", "output_text"));
            stream_emit(st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", m));
            json_t *note = stream_new_item(st, "msg", "hidden_context_item");
            json_object_set_new(note, "content", json_pack("{s:O,s:s,s:i}", "tool_call", call,
                                                           "tool_result", why, "call_index", 0));
            stream_emit(st, json_pack("{s:s,s:o}", "type", "thread.item.done", "item", note));
            json_t *h = take_history(c);
            json_array_append_new(h, json_pack("{s:s,s:[{s:O,s:O,s:O}]}", "role", "assistant",
                                               "tool_calls", "id", json_object_get(call, "id"),
                                               "name", json_object_get(call, "name"),
                                               "arguments", json_object_get(call, "arguments")));
            json_array_append_new(h, json_pack("{s:s,s:O,s:s}", "role", "tool", "tool_call_id",
                                               json_object_get(call, "id"), "content", why));
            run_start(st, h, NULL, c->options);
        }
    }
    call_free(c);
}

/* threads.add_client_tool_output (reference §11.4) */
static int work_tool_output(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    store_item_page p = {0};
    store_page_req pr = {20, 1, NULL};
    rc = store_items_list(db, &c->scope, c->thread_id, &pr, &p);
    if (rc)
        return rc;
    json_t *newest = p.n ? ck_item_parse(&p.items[0]) : NULL;
    if (!newest || strcmp(p.items[0].type, "client_tool_call") ||
        strcmp(json_string_value(json_object_get(newest, "status")) ?: "", "pending")) {
        json_decref(newest);
        store_item_page_clear(&p);
        return refuse(c, 400, "no_pending_tool_call",
                      "the thread has no pending client tool call to complete");
    }
    json_object_set_new(newest, "status", json_string("completed"));
    json_t *result = json_object_get(c->in, "result");
    if (!json_is_null(result)) /* nulls are omitted on the wire (reference §2.1) */
        json_object_set(newest, "output", result);
    c->result = json_pack("{s:O,s:O}", "name", json_object_get(newest, "name"), "call_id",
                          json_object_get(newest, "call_id"));
    free(p.items[0].json);
    p.items[0].json = json_dumps(newest, JSON_COMPACT);
    json_decref(newest);
    rc = p.items[0].json ? store_item_save(db, &c->scope, &p.items[0]) : STORE_EIO;
    /* other calls still pending among the newest 20 are abandoned */
    for (size_t i = 1; !rc && i < p.n; i++) {
        if (strcmp(p.items[i].type, "client_tool_call"))
            continue;
        json_t *it = ck_item_parse(&p.items[i]);
        if (it && !strcmp(json_string_value(json_object_get(it, "status")) ?: "", "pending"))
            rc = store_item_delete(db, &c->scope, c->thread_id, p.items[i].id);
        json_decref(it);
    }
    store_item_page_clear(&p);
    return rc ? rc : load_history(db, c);
}

static void done_tool_output(ck_call *c)
{
    release_thread(c);
    ck_stream *st = open_stream(c);
    emit_stream_options(st);
    run_start(st, take_history(c), NULL, c->options); /* ends with the call and its output */
    call_free(c);
}

/* threads.add_structured_input (reference §11.10) */
static int work_structured(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    store_item it = {0};
    rc = store_item_load(db, &c->scope, c->thread_id, c->item_id, &it);
    if (rc)
        return not_found(c, rc, "item");
    json_t *item = ck_item_parse(&it);
    if (!item || strcmp(it.type, "structured_input") ||
        strcmp(json_string_value(json_object_get(item, "status")) ?: "", "pending")) {
        json_decref(item);
        store_item_clear(&it);
        return refuse(c, 400, "not_pending", "item %.64s is not a pending structured input",
                      c->item_id);
    }
    json_t *sub = c->in;
    const char *status = json_string_value(json_object_get(sub, "status")) ?: "answered";
    json_t *answers = json_object_get(sub, "answers");
    size_t i;
    json_t *q;
    json_array_foreach(json_object_get(item, "inputs"), i, q)
    {
        const char *qid = json_string_value(json_object_get(q, "id")) ?: "";
        json_t *a = json_object_get(answers, qid);
        json_t *vals = json_object_get(a, "values");
        json_t *ans;
        if (!strcmp(status, "skipped") || !a || json_is_true(json_object_get(a, "skipped")) ||
            json_array_size(vals) == 0) {
            ans = json_pack("{s:[],s:b}", "values", "skipped", 1);
        } else {
            json_t *v = json_deep_copy(vals);
            if (!strcmp(json_string_value(json_object_get(q, "type")) ?: "", "multiple_choice") &&
                !json_is_true(json_object_get(q, "multiple")))
                while (json_array_size(v) > 1)
                    json_array_remove(v, 1);
            ans = json_pack("{s:o,s:b}", "values", v, "skipped", 0);
        }
        json_object_set_new(q, "answer", ans);
    }
    json_object_set_new(item, "status", json_string(status));
    free(it.json);
    it.json = json_dumps(item, JSON_COMPACT);
    rc = it.json ? store_item_save(db, &c->scope, &it) : STORE_EIO;
    /* the questions of a request_human_input call (an agent with structured forms): the
     * answers are the tool's result */
    json_t *rec = rc ? NULL : load_interaction(db, c, &rc);
    json_t *hi = json_object_get(json_object_get(rec, "content"), "human_interaction");
    if (rec && !strcmp(json_string_value(json_object_get(hi, "structured_item_id")) ?: "",
                       c->item_id)) {
        char *text = human_structured_text(json_object_get(hi, "form"),
                                           json_object_get(item, "inputs"));
        rc = close_interaction(db, c, rec, text, strcmp(status, "skipped") ? "submit" : "skip");
        free(text);
    }
    json_decref(rec);
    if (!rc) {
        buf_puts(&c->out, "{\"type\":\"thread.item.replaced\",\"item\":");
        buf_puts(&c->out, it.json);
        buf_putc(&c->out, '}');
    }
    json_decref(item);
    store_item_clear(&it);
    return rc ? rc : load_history(db, c);
}

static void done_structured(ck_call *c)
{
    release_thread(c);
    ck_stream *st = open_stream(c);
    emit_stream_options(st);
    stream_emit_raw(st, c->out.data, c->out.len);
    run_start(st, take_history(c), NULL, c->options); /* ends with the answers */
    call_free(c);
}

/* threads.retry_after_item (reference §11.5) */
static int work_retry(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    store_page_req pr = {20, 1, NULL};
    char cursor[STORE_ID_MAX] = "";
    for (;;) {
        store_item_page p = {0};
        rc = store_items_list(db, &c->scope, c->thread_id, &pr, &p);
        if (rc)
            return rc;
        size_t i;
        for (i = 0; i < p.n && strcmp(p.items[i].id, c->item_id); i++)
            ;
        if (i < p.n) {
            if (strcmp(p.items[i].type, "user_message")) {
                store_item_page_clear(&p);
                return refuse(c, 400, "not_user_message", "item %.64s is not a user message",
                              c->item_id);
            }
            json_t *msg = ck_item_parse(&p.items[i]);
            buf text = BUF_INIT(0);
            size_t k;
            json_t *part;
            json_array_foreach(json_object_get(msg, "content"), k, part)
            {
                const char *t = json_string_value(json_object_get(part, "text"));
                if (t) {
                    if (text.len)
                        buf_putc(&text, ' ');
                    buf_puts(&text, t);
                }
            }
            json_decref(msg);
            c->text = buf_steal(&text, NULL);
            store_item_page_clear(&p);
            break;
        }
        int more = p.has_more;
        snprintf(cursor, sizeof cursor, "%s", p.after);
        store_item_page_clear(&p);
        if (!more)
            return refuse(c, 404, "not_found", "item not found");
        pr.after = cursor;
    }
    /* everything newer than the message goes, hidden items included, silently */
    for (;;) {
        store_item_page p = {0};
        store_page_req after = {100, 0, c->item_id};
        rc = store_items_list(db, &c->scope, c->thread_id, &after, &p);
        for (size_t i = 0; !rc && i < p.n; i++)
            rc = store_item_delete(db, &c->scope, c->thread_id, p.items[i].id);
        int more = p.has_more;
        store_item_page_clear(&p);
        if (rc || !more)
            return rc ? rc : load_history(db, c);
    }
}

static void done_retry(ck_call *c)
{
    release_thread(c);
    ck_stream *st = open_stream(c);
    emit_stream_options(st);
    run_start(st, take_history(c), c->text, c->options);
    call_free(c);
}

/* threads.custom_action / threads.sync_custom_action (reference §11.6) */
static int load_action_item(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc || !c->item_id[0])
        return rc;
    store_item it = {0};
    rc = store_item_load(db, &c->scope, c->thread_id, c->item_id, &it);
    if (rc)
        return not_found(c, rc, "item");
    if (strcmp(it.type, "widget"))
        c->not_widget = 1;
    else
        c->result = ck_item_parse(&it);
    store_item_clear(&it);
    return 0;
}

static int work_load_widget(store_conn *db, ck_call *c)
{
    int rc = load_action_item(db, c);
    if (!rc && c->not_widget)
        return refuse(c, 400, "not_widget", "item %.64s is not a widget", c->item_id);
    return rc;
}

static int work_action(store_conn *db, ck_call *c)
{
    int rc = load_action_item(db, c);
    return rc || c->not_widget ? rc : load_history(db, c);
}

static void done_action(ck_call *c)
{
    release_thread(c);
    if (c->not_widget) {
        static const char ev[] =
            "{\"type\":\"error\",\"code\":\"stream.error\",\"allow_retry\":false}";
        return reply_lone_event(c, ev, sizeof ev - 1);
    }
    ck_stream *st = open_stream(c);
    emit_stream_options(st);
    run_action(st, json_object_get(c->in, "action"), c->result, take_history(c));
    call_free(c);
}

/* threads.sync_custom_action with a "tool:NAME" action: the agent's MCP tool is called with the
 * payload; when it returns a widget, the sender widget item takes it (stored, and answered as
 * updated_item), else the answer is {}. */
static int work_save_result(store_conn *db, ck_call *c)
{
    store_item it;
    int rc = item_json_to_store(c, c->result, &it);
    if (!rc)
        rc = store_item_save(db, &c->scope, &it);
    if (!rc) {
        buf_puts(&c->out, "{\"updated_item\":");
        buf_puts(&c->out, it.json);
        buf_putc(&c->out, '}');
    }
    store_item_clear(&it);
    return rc;
}

static void sync_tool_done(void *ud, const json_t *result, const char *err)
{
    ck_call *c = ud;
    json_t *w = result ? mcp_result_widgets(result, c->req->rid) : NULL;
    json_t *first = json_array_get(w, 0);
    if (!result) {
        char q[256];
        LOGI(c->req->rid, "tool action failed", "err=\"%s\"", log_quote(err, q, sizeof q));
    }
    if (first && c->result) {
        json_object_set(c->result, "widget", json_object_get(first, "widget"));
        json_object_set(c->result, "copy_text", json_object_get(first, "copy_text"));
        json_decref(w);
        return run_job(c, 1, work_save_result, reply_out);
    }
    json_decref(w);
    if (!result)
        return reply_error(c, 502, "tool_failed", err);
    reply_empty(c);
}

static void done_sync_tool(ck_call *c)
{
    const char *type = json_string_value(json_object_get(json_object_get(c->in, "action"), "type"));
    const ck_agent *agent = agent_by_id(c->auth, c->thread.agent_id);
    mcp_pool_call(c->app->mcp, agent ? agent->id : "", agent ? agent->config : NULL, type + 5,
                  json_object_get(json_object_get(c->in, "action"), "payload"), sync_tool_done, c);
}

static int work_sync_action(store_conn *db, ck_call *c)
{
    int rc = load_action_item(db, c);
    if (rc)
        return rc;
    if (c->not_widget)
        return refuse(c, 400, "not_widget", "item %.64s is not a widget", c->item_id);
    if (!c->result || !run_demo_apply_action(c->result, json_object_get(c->in, "action"))) {
        buf_puts(&c->out, "{}");
        return 0;
    }
    /* the SDK leaves persisting updated_item to the integration: we do it */
    return work_save_result(db, c);
}

/* ------------------------------------------------------------------ JSON handlers */

static int work_get(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    store_item_page p = {0};
    store_page_req pr = {20, 0, NULL}; /* the oldest 20, reference §10 */
    rc = store_items_list(db, &c->scope, c->thread_id, &pr, &p);
    if (!rc)
        rc = ck_thread_json(&c->out, &c->thread, &p);
    store_item_page_clear(&p);
    return rc;
}

static int work_list(store_conn *db, ck_call *c)
{
    store_thread_page p = {0};
    int rc = store_threads_list(db, &c->scope, c->agent->id, &c->page, &p);
    if (rc == STORE_ENOTFOUND)
        return refuse(c, 400, "invalid_cursor", "params.after is not a thread of this list");
    if (rc)
        return rc;
    buf_puts(&c->out, "{\"data\":[");
    for (size_t i = 0; i < p.n; i++) {
        if (i)
            buf_putc(&c->out, ',');
        ck_thread_json(&c->out, &p.threads[i], NULL);
    }
    buf_printf(&c->out, "],\"has_more\":%s", p.has_more ? "true" : "false");
    if (p.has_more) {
        buf_puts(&c->out, ",\"after\":");
        buf_json_str(&c->out, p.after, strlen(p.after));
    }
    buf_putc(&c->out, '}');
    store_thread_page_clear(&p);
    return 0;
}

static int work_update(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    free(c->thread.title);
    c->thread.title = xstrdup(json_string_value(json_object_get(c->params, "title")));
    rc = store_thread_save(db, &c->scope, &c->thread);
    return rc ? rc : ck_thread_json(&c->out, &c->thread, NULL);
}

static int work_delete(store_conn *db, ck_call *c)
{
    int rc = store_thread_delete(db, &c->scope, c->thread_id);
    return rc ? not_found(c, rc, "thread") : 0;
}

/* A run still streaming on the deleted thread stops, and its client is told why. */
static void done_delete(ck_call *c)
{
    stream_thread_deleted(c->app, c->thread_id);
    reply_empty(c);
}

static int work_items(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    store_item_page p = {0};
    rc = store_items_list(db, &c->scope, c->thread_id, &c->page, &p);
    if (rc == STORE_ENOTFOUND)
        return refuse(c, 400, "invalid_cursor", "params.after is not an item of this thread");
    if (!rc)
        ck_items_page_json(&c->out, &p);
    store_item_page_clear(&p);
    return rc;
}

static int work_feedback(store_conn *db, ck_call *c)
{
    int rc = load_thread(db, c);
    if (rc)
        return rc;
    json_t *ids = json_object_get(c->params, "item_ids");
    size_t n = json_array_size(ids);
    const char *list[MAX_FEEDBACK_IDS];
    for (size_t i = 0; i < n; i++)
        list[i] = json_string_value(json_array_get(ids, i));
    rc = store_feedback_add(db, &c->scope, c->thread_id, list, n,
                            json_string_value(json_object_get(c->params, "kind")));
    return rc ? not_found(c, rc, "item") : 0;
}

static int work_attachment_create(store_conn *db, ck_call *c)
{
    store_attachment a = {0};
    json_t *aj = json_object_get(c->in, "attachment");
    snprintf(a.id, sizeof a.id, "%s", json_string_value(json_object_get(aj, "id")));
    a.name = xstrdup(json_string_value(json_object_get(aj, "name")));
    a.mime_type = xstrdup(json_string_value(json_object_get(aj, "mime_type")));
    a.size = json_integer_value(json_object_get(c->in, "size"));
    a.json = json_dumps(aj, JSON_COMPACT);
    a.metadata_json = xstrdup("{}");
    a.created_us = ts_now_us();
    snprintf(a.agent_id, sizeof a.agent_id, "%s",
             json_string_value(json_object_get(c->in, "agent_id")));
    int rc = store_attachment_save(db, &c->scope, &a);
    if (!rc)
        buf_puts(&c->out, a.json);
    store_attachment_clear(&a);
    return rc;
}

/* attachments.delete: the bytes go first, then the row, in one write job. A file that cannot
 * be removed (a read-only or failing disk) keeps the row: 500, and the delete can be repeated,
 * so no bytes are ever left without a row to find them by. Bytes first also means a full disk
 * gets its room back before the row's deletion needs some (SQLite appends it to the WAL); should
 * the row still not fit, the client gets 507 and a repeated delete needs only the row. */
static int work_attachment_delete(store_conn *db, ck_call *c)
{
    store_attachment a;
    int rc = store_attachment_load(db, &c->scope, c->item_id, &a);
    store_attachment_clear(&a);
    if (rc)
        return not_found(c, rc, "attachment");
    char path[PATH_MAX];
    if (!files_path(c->app->cfg->data_dir, c->item_id, path, sizeof path) && unlink(path) &&
        errno != ENOENT) {
        LOGW(c->req->rid, "attachment bytes not removed", "id=\"%s\" err=%s", LOGQ(c->item_id),
             strerror(errno));
        return refuse(c, 500, "storage_error",
                      "the attachment's file could not be removed; nothing was changed");
    }
    rc = store_attachment_delete(db, &c->scope, c->item_id);
    return rc ? not_found(c, rc, "attachment") : 0;
}

/* ------------------------------------------------------------------ dispatch */

int ck_mime_normalize(const char *in, char out[128])
{
    size_t n = 0;
    while (*in == ' ' || *in == '\t')
        in++;
    for (; *in && *in != ';' && *in != ' ' && *in != '\t'; in++) {
        if (n >= 127)
            return -1;
        out[n++] = (char)tolower((unsigned char)*in);
    }
    out[n] = 0;
    /* type "/" subtype, token characters only (parameters are not part of a file's type) */
    const char *slash = strchr(out, '/');
    if (!slash || slash == out || !slash[1])
        return -1;
    for (const char *p = out; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("!#$&^_.+-/", *p)) || (*p == '/' && p != slash))
            return -1;
    return 0;
}

int ck_mime_allowed(const config *cfg, const char *m)
{
    const char *list = cfg->allowed_mime_types;
    if (!list || !*list)
        return 1;
    size_t ml = strlen(m), n;
    const char *p = list, *s;
    while ((n = config_list_next(&p, &s)))
        if ((n == ml && !strncasecmp(s, m, n)) ||
            (n >= 2 && s[n - 1] == '*' && s[n - 2] == '/' && !strncasecmp(s, m, n - 1)))
            return 1;
    return 0;
}

static void public_base(ck_app *app, http_req *req, char *out, size_t len)
{
    const char *pub = app->cfg->public_url;
    if (pub && *pub) {
        snprintf(out, len, "%s", pub);
    } else {
        /* Host is client input: keep only host[:port] characters */
        const char *h = req->host ? req->host : app->cfg->listen;
        char host[256];
        size_t n = 0;
        for (; *h && n < sizeof host - 1; h++)
            if (isalnum((unsigned char)*h) || strchr(".-:[]", *h))
                host[n++] = *h;
        host[n] = 0;
        snprintf(out, len, "http://%s", host);
    }
    size_t n = strlen(out);
    while (n && out[n - 1] == '/')
        out[--n] = 0;
}

json_t *ck_attachment_json(ck_app *app, http_req *req, const char *id, const char *name,
                           const char *mime)
{
    char base[512], url[800];
    public_base(app, req, base, sizeof base);
    int image = sniff_inline_safe(mime);
    json_t *a = json_pack("{s:s,s:s,s:s,s:s}", "id", id, "name", name, "mime_type", mime, "type",
                          image ? "image" : "file");
    if (image) {
        snprintf(url, sizeof url, "%s%s/attachments/%s", base, app->cfg->api_url, id);
        json_object_set_new(a, "preview_url", json_string(url));
    }
    return a;
}

static int resolve_agent(ck_call *c);
static void handle_attachment_create(ck_call *c)
{
    json_t *name = json_object_get(c->params, "name");
    json_t *mime = json_object_get(c->params, "mime_type");
    long long size = -1;
    char clean[SNIFF_NAME_MAX + 1];
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) > MAX_NAME || strlen(json_string_value(name)) != json_string_length(name))
        return reply_error(c, 400, "invalid_request",
                           "params.name must be a file name of 1 to 255 bytes");
    if (sniff_clean_name(json_string_value(name), clean, sizeof clean))
        return reply_error(c, 400, "invalid_request",
                           "params.name must be a file name of UTF-8 text without control "
                           "characters");
    if (ck_lax_int(json_object_get(c->params, "size"), &size) || size < 0)
        return reply_error(c, 400, "invalid_request", "params.size must be a non-negative integer");
    if ((unsigned long long)size > c->app->cfg->upload_max_bytes)
        return reply_error(c, 413, "file_too_large",
                           "the file is larger than CHATKIT_UPLOAD_MAX_BYTES allows");
    if (!json_is_string(mime))
        return reply_error(c, 400, "invalid_request", "params.mime_type must be a string");
    char m[128];
    if (ck_mime_normalize(json_string_value(mime), m))
        return reply_error(c, 400, "invalid_request", "params.mime_type is not a media type");
    if (!ck_mime_allowed(c->app->cfg, m))
        return reply_error(c, 415, "unsupported_media_type",
                           "this file type is not allowed (CHATKIT_ALLOWED_MIME_TYPES)");
    if (!strncmp(m, "image/", 6) && !sniff_inline_safe(m))
        return reply_error(c, 415, "unsupported_media_type",
                           "this image type is not supported: send PNG, JPEG, GIF, WebP or BMP");
    /* the agent it is for: ?agent_id= (must be the caller's), else the only one */
    char want[STORE_ID_MAX];
    if (resolve_agent(c) && c->req->query &&
        http_query_get(c->req->query, "agent_id", want, sizeof want) > 0)
        return reply_error(c, 422, "agent_required",
                           "an agent is required: pass ?agent_id= naming an agent of your "
                           "account");
    char id[ID_MAX], base[512], url[700];
    id_new("atc", id);
    public_base(c->app, c->req, base, sizeof base);
    snprintf(url, sizeof url, "%s%s/upload/%s", base, c->app->cfg->api_url, id);
    json_t *a = ck_attachment_json(c->app, c->req, id, clean, m);
    json_object_set_new(a, "upload_descriptor",
                        json_pack("{s:s,s:s,s:{}}", "url", url, "method", "PUT", "headers"));
    c->in = json_pack("{s:o,s:I,s:s}", "attachment", a, "size", (json_int_t)size, "agent_id",
                      c->agent ? c->agent->id : "");
    run_job(c, 1, work_attachment_create, reply_out);
}

/* Which agent a request is for: ?agent_id=, or the account's only agent. */
const ck_agent *ck_request_agent(const ck_auth *a, const http_req *req)
{
    char want[STORE_ID_MAX];
    if (req->query && http_query_get(req->query, "agent_id", want, sizeof want) > 0)
        return agent_by_id(a, want);
    return a->n_agents == 1 ? &a->agents[0] : NULL;
}

static int resolve_agent(ck_call *c)
{
    c->agent = ck_request_agent(c->auth, c->req);
    return c->agent ? 0 : -1;
}

static int check_text(ck_call *c, const char *key, size_t max)
{
    json_t *v = json_object_get(c->params, key);
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return bad(c, "params.%s must be a string of at most %zu bytes", key, max);
    return 0;
}

static void dispatch(ck_call *c)
{
    const char *t = c->type;
    int streaming = !strcmp(t, "threads.add_user_message") ||
                    !strcmp(t, "threads.add_client_tool_output") ||
                    !strcmp(t, "threads.add_structured_input") ||
                    !strcmp(t, "threads.retry_after_item") || !strcmp(t, "threads.custom_action");

    if ((streaming || !strcmp(t, "threads.create")) &&
        rl_stream_check(&c->app->rl, c->scope.user_id)) {
        http_req_add_headers(c->req, "Retry-After: 5\r\n");
        return reply_error(c, 429, "too_many_streams",
                           "too many answers are streaming for you at once: wait for one to end "
                           "(CHATKIT_MAX_STREAMS_PER_USER)");
    }
    if (streaming || !strcmp(t, "threads.create")) {
        /* reserved now: requests arriving before this one's stream starts see it */
        rl_stream(&c->app->rl, c->scope.user_id, +1);
        c->slot = 1;
    }
    if (!strcmp(t, "threads.create")) {
        if (resolve_agent(c))
            return reply_error(c, 422, "agent_required",
                               "an agent is required: pass ?agent_id= naming an agent of your "
                               "account");
        if (parse_input(c))
            return reply_error(c, 400, "invalid_request", c->msg);
        id_new("thr", c->thread_id);
        map_put(&c->app->active, c->thread_id, c);
        return run_stream_job(c, work_create, done_create);
    }
    if (streaming || !strcmp(t, "threads.sync_custom_action")) {
        if (get_id(c, "thread_id", c->thread_id, 1))
            return reply_error(c, 400, "invalid_request", c->msg);
        call_work work = NULL;
        call_fn next = NULL;
        if (!strcmp(t, "threads.add_user_message")) {
            if (parse_input(c))
                return reply_error(c, 400, "invalid_request", c->msg);
            work = work_add_message;
            next = done_add_message;
        } else if (!strcmp(t, "threads.add_client_tool_output")) {
            if (!json_object_get(c->params, "result"))
                return reply_error(c, 400, "invalid_request", "params.result is required");
            c->in = json_pack("{s:O}", "result", json_object_get(c->params, "result"));
            work = work_tool_output;
            next = done_tool_output;
        } else if (!strcmp(t, "threads.add_structured_input")) {
            json_t *in = json_object_get(c->params, "input");
            json_t *st = json_object_get(in, "status");
            json_t *ans = json_object_get(in, "answers");
            if (get_id(c, "item_id", c->item_id, 1))
                return reply_error(c, 400, "invalid_request", c->msg);
            if (!json_is_object(in) ||
                (st && !json_is_null(st) && (!json_is_string(st) ||
                                             (strcmp(json_string_value(st), "answered") &&
                                              strcmp(json_string_value(st), "skipped")))) ||
                (ans && !json_is_null(ans) && !json_is_object(ans)))
                return reply_error(c, 400, "invalid_request",
                                   "params.input must be {status, answers}");
            const char *k;
            json_t *a;
            json_object_foreach(ans, k, a)
            {
                json_t *vals = json_object_get(a, "values");
                size_t i;
                json_t *v;
                if (!json_is_object(a) || (vals && !json_is_array(vals)) ||
                    json_array_size(vals) > 64)
                    return reply_error(c, 400, "invalid_request", "malformed answer");
                json_array_foreach(vals, i, v) if (!json_is_string(v)) return reply_error(
                    c, 400, "invalid_request", "answer values must be strings");
            }
            c->in = json_incref(in);
            work = work_structured;
            next = done_structured;
        } else if (!strcmp(t, "threads.retry_after_item")) {
            if (get_id(c, "item_id", c->item_id, 1))
                return reply_error(c, 400, "invalid_request", c->msg);
            work = work_retry;
            next = done_retry;
        } else {
            json_t *action = json_object_get(c->params, "action");
            if (get_id(c, "item_id", c->item_id, 0) < 0)
                return reply_error(c, 400, "invalid_request", c->msg);
            if (!json_is_object(action) || !json_is_string(json_object_get(action, "type")) ||
                json_string_length(json_object_get(action, "type")) > 256)
                return reply_error(c, 400, "invalid_request",
                                   "params.action must be an object with a string type");
            json_t *act = json_pack("{s:O,s:O}", "type", json_object_get(action, "type"),
                                    "payload", json_object_get(action, "payload") ?: json_null());
            c->in = json_pack("{s:o}", "action", act);
            if (!strcmp(t, "threads.sync_custom_action")) {
                const char *at = json_string_value(json_object_get(act, "type"));
                if (!strncmp(at, "tool:", 5) && at[5])
                    return run_job(c, 0, work_load_widget, done_sync_tool);
                return run_job(c, 1, work_sync_action, reply_out);
            }
            const char *at = json_string_value(json_object_get(act, "type"));
            if (!strcmp(at, "human.form_submit") || !strcmp(at, "human.best_judgement") ||
                !strcmp(at, "human.cancel")) {
                work = work_human;
                next = done_human;
            } else {
                work = work_action;
                next = done_action;
            }
        }
        if (reserve_thread(c)) {
            /* nothing a user typed is lost: a message is stored even when it cannot be
             * answered now, and the user is told how to get it answered */
            if (work == work_add_message)
                return run_job(c, 1, work_store_message, reply_busy_message);
            return reply_busy(c);
        }
        return run_stream_job(c, work, next);
    }
    if (!strcmp(t, "threads.get_by_id") || !strcmp(t, "threads.delete")) {
        if (get_id(c, "thread_id", c->thread_id, 1))
            return reply_error(c, 400, "invalid_request", c->msg);
        if (t[8] == 'g')
            return run_job(c, 0, work_get, reply_out);
        return run_job(c, 1, work_delete, done_delete);
    }
    if (!strcmp(t, "threads.list")) {
        if (resolve_agent(c))
            return reply_error(c, 422, "agent_required",
                               "an agent is required: pass ?agent_id= naming an agent of your "
                               "account");
        if (get_page(c))
            return reply_error(c, 400, "invalid_request", c->msg);
        return run_job(c, 0, work_list, reply_out);
    }
    if (!strcmp(t, "threads.update")) {
        if (get_id(c, "thread_id", c->thread_id, 1) || check_text(c, "title", MAX_TITLE))
            return reply_error(c, 400, "invalid_request", c->msg);
        return run_job(c, 1, work_update, reply_out);
    }
    if (!strcmp(t, "items.list")) {
        if (get_id(c, "thread_id", c->thread_id, 1) || get_page(c))
            return reply_error(c, 400, "invalid_request", c->msg);
        return run_job(c, 0, work_items, reply_out);
    }
    if (!strcmp(t, "items.feedback")) {
        json_t *ids = json_object_get(c->params, "item_ids");
        const char *kind = json_string_value(json_object_get(c->params, "kind"));
        if (get_id(c, "thread_id", c->thread_id, 1))
            return reply_error(c, 400, "invalid_request", c->msg);
        if (!json_is_array(ids) || json_array_size(ids) == 0 ||
            json_array_size(ids) > MAX_FEEDBACK_IDS)
            return reply_error(c, 400, "invalid_request",
                               "params.item_ids must be an array of 1 to 100 item ids");
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v) if (!json_is_string(v) || json_string_length(v) == 0 ||
                                          json_string_length(v) >= STORE_ID_MAX) return reply_error(
            c, 400, "invalid_request", "params.item_ids must hold item id strings");
        if (!kind || (strcmp(kind, "positive") && strcmp(kind, "negative")))
            return reply_error(c, 400, "invalid_request",
                               "params.kind must be \"positive\" or \"negative\"");
        return run_job(c, 1, work_feedback, reply_empty);
    }
    if (!strcmp(t, "attachments.create"))
        return handle_attachment_create(c);
    if (!strcmp(t, "attachments.delete")) {
        if (get_id(c, "attachment_id", c->item_id, 1))
            return reply_error(c, 400, "invalid_request", c->msg);
        return run_job(c, 1, work_attachment_delete, reply_empty);
    }
    if (!strcmp(t, "input.transcribe")) {
        if (!json_is_string(json_object_get(c->params, "audio_base64")) ||
            !json_is_string(json_object_get(c->params, "mime_type")))
            return reply_error(c, 400, "invalid_request",
                               "params.audio_base64 and params.mime_type must be strings");
        return reply_error(c, 501, "not_configured",
                           "speech transcription is not configured on this server");
    }
    char msg[160];
    snprintf(msg, sizeof msg, "unsupported request type \"%.64s\"", t);
    reply_error(c, 422, "unsupported_request", msg);
}

static void protocol(ck_call *c)
{
    json_error_t e;
    c->body = json_loadb(c->req->body ? c->req->body : "", c->req->body_len,
                         JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (!c->body) {
        char msg[200];
        snprintf(msg, sizeof msg, "invalid JSON: %s (line %d, column %d)", e.text, e.line,
                 e.column);
        return reply_error(c, 400, "invalid_json", msg);
    }
    if (!json_is_object(c->body))
        return reply_error(c, 400, "invalid_request", "the request must be a JSON object");
    c->type = json_string_value(json_object_get(c->body, "type"));
    if (!c->type)
        return reply_error(c, 400, "invalid_request", "\"type\" must be a string");
    c->params = json_object_get(c->body, "params");
    if (!json_is_object(c->params))
        return reply_error(c, 400, "invalid_request", "\"params\" must be an object");
    json_t *md = json_object_get(c->body, "metadata");
    if (md && !json_is_null(md) && !json_is_object(md))
        return reply_error(c, 400, "invalid_request", "\"metadata\" must be an object");
    c->app->n_requests++;
    dispatch(c);
}

/* ------------------------------------------------------------------ routes */

static void metrics(ck_app *app, http_req *req)
{
    char body[1024];
    int n = snprintf(body, sizeof body,
                     "# TYPE chatkitd_requests_total counter\nchatkitd_requests_total %llu\n"
                     "# TYPE chatkitd_streams_total counter\nchatkitd_streams_total %llu\n"
                     "# TYPE chatkitd_errors_total counter\nchatkitd_errors_total %llu\n"
                     "# TYPE chatkitd_connections gauge\nchatkitd_connections %u\n"
                     "# TYPE chatkitd_open_streams gauge\nchatkitd_open_streams %u\n"
                     "# TYPE chatkitd_store_pending gauge\nchatkitd_store_pending %u\n",
                     (unsigned long long)app->n_requests, (unsigned long long)app->n_streams,
                     (unsigned long long)app->n_errors, http_server_connections(app->http),
                     http_server_streams(app->http), store_pending(app->st));
    http_respond(req, 200, "text/plain; version=0.0.4", body, (size_t)n, NULL);
}

/* CORS (docs/security.md): an allowed Origin gets the headers on every answer; a preflight is
 * answered here. Returns 1 when the request was answered. */
static int cors(ck_app *app, http_req *req)
{
    if (!req->origin)
        return 0;
    int ok = cors_origin_allowed(app->cfg->allowed_origins, req->origin);
    if (ok) {
        char h[700];
        snprintf(h, sizeof h,
                 "Access-Control-Allow-Origin: %s\r\nAccess-Control-Allow-Credentials: true\r\n"
                 "Access-Control-Expose-Headers: Retry-After\r\nVary: Origin\r\n",
                 req->origin);
        http_req_add_headers(req, h);
    }
    if (req->method != HTTP_M_OPTIONS || !req->acr_method)
        return 0;
    char allow[512];
    if (!ok)
        http_respond_error(req, 403, "forbidden_origin",
                           "this origin is not allowed (CHATKIT_ALLOWED_ORIGINS)");
    else if (cors_request_headers(req->acr_headers, allow, sizeof allow))
        http_respond_error(req, 403, "forbidden_header",
                           "a requested header is not allowed by this server");
    else {
        char h[700];
        snprintf(h, sizeof h,
                 "Access-Control-Allow-Methods: GET, HEAD, POST, PUT, OPTIONS\r\n"
                 "%s%s%sAccess-Control-Max-Age: 600\r\n",
                 *allow ? "Access-Control-Allow-Headers: " : "", allow, *allow ? "\r\n" : "");
        http_req_add_headers(req, h);
        http_respond(req, 204, NULL, NULL, 0, NULL);
    }
    return 1;
}

enum route { R_API, R_UPLOAD, R_FILE, R_CLIENT_SECRET, R_SESSION, R_METRICS };

static void session_info(ck_app *app, http_req *req, ck_auth *a)
{
    json_t *agents = json_array();
    for (size_t i = 0; i < a->n_agents; i++)
        json_array_append_new(agents, json_pack("{s:s,s:s}", "id", a->agents[i].id, "name",
                                                a->agents[i].name));
    json_t *o = json_pack("{s:s,s:s,s:o}", "account_id", a->scope.account_id, "user_id",
                          a->scope.user_id, "agents", agents);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    http_respond_owned(req, 200, "application/json", body, strlen(body), NULL);
}

static void client_secret(ck_app *app, http_req *req)
{
    const char *secret = app->cfg->client_secret;
    if (!*secret)
        return http_respond_error(req, 404, "not_configured",
                                  "hosted mode is not configured (CHATKIT_CLIENT_SECRET)");
    json_t *o = json_pack("{s:s}", "client_secret", secret);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    http_req_add_headers(req, "Cache-Control: no-store\r\n");
    http_respond_owned(req, 200, "application/json", body, strlen(body), NULL);
}

/* The body of a protocol request arrived (status 0), or the server answered it already (too
 * large, malformed, too slow) or the client left: then the reply below is a no-op. */
static void on_body(http_req *req, int status, void *ud)
{
    ck_call *c = ud;
    if (status)
        return reply_error(c, 400, "bad_request", "the request body could not be read");
    protocol(c);
}

static void on_authed(ck_app *app, http_req *req, ck_auth *a, void *ud)
{
    enum route r = (enum route)(uintptr_t)ud;
    if (!a)
        return;
    switch (r) {
    case R_UPLOAD: return ck_upload_route(app, req, a);
    case R_FILE: return ck_attachment_get(app, req, a);
    case R_CLIENT_SECRET: client_secret(app, req); break;
    case R_SESSION: session_info(app, req, a); break;
    case R_METRICS: metrics(app, req); break;
    case R_API: {
        ck_call *c = xcalloc(1, sizeof *c);
        c->app = app;
        c->req = req;
        c->out = (buf)BUF_INIT(0);
        c->auth = a;
        c->scope = a->scope;
        http_req_ref(req);
        if (!req->streaming)
            return protocol(c);
        /* the body is read only now that the caller is known */
        int rc = http_body_collect(req, on_body, c);
        if (rc == -EMSGSIZE)
            return reply_error(c, 413, "payload_too_large", "request body too large");
        if (rc)
            return reply_error(c, 400, "bad_request", "the request body could not be read");
        return;
    }
    }
    ck_auth_release(a);
}

static const char index_html[] =
    "<!doctype html><meta charset=utf-8><title>chatkitd</title>\n"
    "<p id=who>chatkitd is running.</p>\n"
    "<script>fetch('/chatkit/session',{credentials:'same-origin'}).then(r=>r.ok?r.json():null)"
    ".then(s=>{if(s)document.getElementById('who').textContent='Signed in as user '+s.user_id+"
    "' of account '+s.account_id+'.'})</script>\n";

void ck_handle(http_req *req, void *ud)
{
    ck_app *app = ud;
    const char *path = req->path;
    const char *api = app->cfg->api_url;
    size_t apilen = strlen(api);

    if (!strcmp(path, "/healthz") || !strcmp(path, "/readyz")) {
        if (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD)
            return http_respond_error(req, 405, "method_not_allowed", "use GET");
        if (path[1] == 'r' && app->shutting_down)
            return http_respond_error(req, 503, "shutting_down", "the server is shutting down");
        /* /healthz stays 200 when the database is lost: restarting the process would discard
         * the data it still holds (the store copies it out first; see store_check) */
        if (path[1] == 'r' && store_check(app->st) == STORE_ELOST)
            return http_respond_error(req, 503, "storage_lost", storage_lost_msg);
        return http_respond(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    }
    if (cors(app, req))
        return;
    if (!strcmp(path, "/")) {
        if (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD)
            return http_respond_error(req, 405, "method_not_allowed", "use GET");
        return http_respond(req, 200, "text/html; charset=utf-8", index_html,
                            sizeof index_html - 1, NULL);
    }
    if (!strcmp(path, "/login"))
        return ck_login(app, req);
    if (!strcmp(path, "/logout"))
        return ck_logout(app, req);
    const char *sub = !strncmp(path, api, apilen) ? path + apilen : NULL;
    enum route r;
    if (!strcmp(path, "/metrics")) {
        if (req->method != HTTP_M_GET)
            return http_respond_error(req, 405, "method_not_allowed", "use GET");
        r = R_METRICS;
    } else if (sub && !*sub) {
        if (req->method != HTTP_M_POST)
            return http_respond_error(req, 405, "method_not_allowed", "use POST");
        r = R_API;
    } else if (sub && (!strcmp(sub, "/upload") || !strncmp(sub, "/upload/", 8))) {
        r = R_UPLOAD;
    } else if (sub && !strncmp(sub, "/attachments/", 13)) {
        r = R_FILE;
        /* a signed preview URL needs no credentials; a bad one falls back to them */
        int v = files_verify(app->key, sizeof app->key, sub + 13, req->query,
                             (long long)(ts_now_us() / 1000000));
        if (v == 0)
            return ck_attachment_get(app, req, NULL);
        const char *sess;
        if (v == -2 && !req->authorization && auth_cookie(req->cookie, AUTH_COOKIE, &sess) < 0)
            return http_respond_error(req, 403, "invalid_signature",
                                      "this link has expired or is not valid");
    } else if (sub && !strcmp(sub, "/client_secret")) {
        if (req->method != HTTP_M_POST)
            return http_respond_error(req, 405, "method_not_allowed", "use POST");
        r = R_CLIENT_SECRET;
    } else if (sub && !strcmp(sub, "/session")) {
        if (req->method != HTTP_M_GET)
            return http_respond_error(req, 405, "method_not_allowed", "use GET");
        r = R_SESSION;
    } else {
        return http_respond_error(req, 404, "not_found", "no such route");
    }
    ck_authenticate(app, req, on_authed, (void *)(uintptr_t)r);
}

/* Every body is streamed: the handler sees the head first, checks the caller's credentials,
 * and only then reads the body (http_body_collect for protocol requests, straight to disk for
 * uploads), so nothing is buffered for a caller who has not proved who they are. Routes that
 * take no body answer without reading one. */
int ck_wants_stream(const http_req *req, void *ud)
{
    (void)req;
    (void)ud;
    return 1;
}

void ck_app_init(ck_app *app, uv_loop_t *loop, const config *cfg, store *st,
                 const unsigned char key[32])
{
    memset(app, 0, sizeof *app);
    app->loop = loop;
    app->cfg = cfg;
    app->st = st;
    app->started_ms = uv_now(loop);
    app->mcp = mcp_pool_new(loop, cfg);
    memcpy(app->key, key, sizeof app->key);
    rl_init(&app->rl, cfg->rate_limit_rpm, cfg->max_streams_per_user);
    ck_sweep_start(app);
}

void ck_app_stop(ck_app *app)
{
    uv_timer_stop(&app->sweep);
    if (!uv_is_closing((uv_handle_t *)&app->sweep))
        uv_close((uv_handle_t *)&app->sweep, NULL);
}

void ck_app_free(ck_app *app)
{
    mcp_pool_free(app->mcp);
    app->mcp = NULL;
    ck_auth_cache_clear(app);
    map_free(&app->active);
    map_free(&app->streams);
    rl_free(&app->rl);
    memset(app->key, 0, sizeof app->key);
}
