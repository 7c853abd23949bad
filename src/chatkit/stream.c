#include "chatkit/stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "run/run.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

enum entry_kind { E_EVENT, E_RAW, E_DELTA, E_TITLE, E_META, E_RUN, E_CANCEL, E_END };

typedef struct entry {
    struct entry *next;
    enum entry_kind kind;
    json_t *ev;        /* E_EVENT; E_META: the value (NULL: delete the key) */
    char *text;        /* E_RAW json, E_DELTA delta */
    size_t len;
    int index;         /* E_DELTA content index */
    char item_id[ID_MAX];
    store_run *run;    /* E_RUN */
} entry;

/* An item between thread.item.added and done. Assistant text lives in bufs (one per content
 * part) so deltas append in O(1). */
typedef struct pending {
    struct pending *next;
    json_t *item;
    buf *parts;
    size_t nparts;
} pending;

struct ck_stream {
    ck_app *app;
    http_req *req;          /* NULL once the client is gone */
    store_scope scope;
    store_thread thread;
    ck_agent agent;
    int64_t last_us;
    entry *head, *tail;
    pending *pend;
    run *run;
    int busy;               /* a store job is in flight */
    int thread_dirty;
    int announce;           /* an event went out since the change: time to announce it */
    int pumping;            /* inside pump: nested pushes only enqueue */
    int ended_pending;      /* E_END reached: free once the pump unwinds */
    int finished;           /* producer said stream_finish, or we cancelled */
    int cancelled;
    int ended;
    int paused;             /* backpressure: the run was told to stop reading the model */
    int deleted;            /* its thread was deleted: only the run's accounting is stored */
};

/* Encoding space shared by every stream: they all run on the loop thread, and each event is
 * copied out (to the socket or a batch) before the next is encoded. */
static buf scratch = BUF_INIT(0);

static void pump(ck_stream *st);
static void pump_loop(ck_stream *st);

/* ---------- small helpers ---------- */

int64_t stream_now(ck_stream *st)
{
    int64_t now = ts_now_us();
    st->last_us = now > st->last_us ? now : st->last_us + 1;
    return st->last_us;
}

const store_thread *stream_thread(ck_stream *st) { return &st->thread; }
const ck_agent *stream_agent(ck_stream *st) { return &st->agent; }
ck_app *stream_app(ck_stream *st) { return st->app; }
const char *stream_rid(ck_stream *st) { return st->req ? st->req->rid : st->thread.id; }
int stream_cancelled(ck_stream *st) { return st->cancelled; }
void stream_set_run(ck_stream *st, run *r) { st->run = r; }

json_t *stream_new_item(ck_stream *st, const char *prefix, const char *type)
{
    char id[ID_MAX], ts[TS_MAX];
    id_new(prefix, id);
    ts_format(stream_now(st), ts);
    return json_pack("{s:s,s:s,s:s,s:s}", "id", id, "thread_id", st->thread.id, "created_at", ts,
                     "type", type);
}

static void entry_free(entry *e)
{
    json_decref(e->ev);
    free(e->text);
    free(e->run);
    free(e);
}

static void push(ck_stream *st, entry *e)
{
    if (st->ended || (st->deleted && e->kind != E_RUN && e->kind != E_END)) {
        entry_free(e);
        return;
    }
    if (st->tail)
        st->tail->next = e;
    else
        st->head = e;
    st->tail = e;
    pump(st);
}

static entry *entry_new(enum entry_kind k)
{
    entry *e = xcalloc(1, sizeof *e);
    e->kind = k;
    return e;
}

static void on_drain(http_req *req, void *ud)
{
    (void)req;
    ck_stream *st = ud;
    st->paused = 0;
    if (st->run)
        run_pause(st->run, 0);
}

/* Backpressure: once a quarter of the slow-reader limit waits for the client, the run stops
 * reading the model (the upstream's TCP window fills) until the client has caught up; without
 * it a slow client would be dropped, or its stream held in memory without bound. */
static void send_text(ck_stream *st, const char *json, size_t len)
{
    if (!st->req || st->cancelled)
        return;
    http_sse_send(st->req, json, len);
    if (!st->paused && st->run && st->req &&
        http_sse_queued(st->req) > st->app->cfg->sse_max_queue / 4) {
        st->paused = 1;
        LOGD(stream_rid(st), "client is slow: model stream paused", "queued=%zu",
             http_sse_queued(st->req));
        run_pause(st->run, 1);
        http_sse_on_drain(st->req, on_drain, st);
    }
}

/* ---------- pending items ---------- */

static pending *pending_find(ck_stream *st, const char *id, pending ***link)
{
    pending **pp = &st->pend;
    for (; *pp; pp = &(*pp)->next) {
        const char *pid = json_string_value(json_object_get((*pp)->item, "id"));
        if (pid && !strcmp(pid, id)) {
            if (link)
                *link = pp;
            return *pp;
        }
    }
    return NULL;
}

static void pending_free(pending *p)
{
    for (size_t i = 0; i < p->nparts; i++)
        buf_free(&p->parts[i]);
    free(p->parts);
    json_decref(p->item);
    free(p);
}

static void pending_drop(ck_stream *st, const char *id)
{
    pending **link;
    pending *p = pending_find(st, id, &link);
    if (p) {
        *link = p->next;
        pending_free(p);
    }
}

/* Pads the content list up to index (reference §5). */
static buf *pending_part(pending *p, size_t index)
{
    if (index >= 256)
        return NULL; /* no model writes that many parts; bound the padding */
    if (index >= p->nparts) {
        p->parts = realloc(p->parts, (index + 1) * sizeof *p->parts);
        if (!p->parts)
            log_oom();
        for (size_t i = p->nparts; i <= index; i++)
            p->parts[i] = (buf)BUF_INIT(0);
        json_t *content = json_object_get(p->item, "content");
        while (json_array_size(content) <= index)
            json_array_append_new(content, json_pack("{s:[],s:s,s:s}", "annotations", "text", "",
                                                     "type", "output_text"));
        p->nparts = index + 1;
    }
    return &p->parts[index];
}

/* The pending assistant message with all deltas applied (new reference). */
static json_t *pending_materialize(pending *p)
{
    json_t *item = json_deep_copy(p->item);
    json_t *content = json_object_get(item, "content");
    for (size_t i = 0; i < p->nparts && i < json_array_size(content); i++) {
        json_t *part = json_array_get(content, i);
        json_object_set_new(part, "text", json_stringn(p->parts[i].data ? p->parts[i].data : "",
                                                       p->parts[i].len));
    }
    return item;
}

static void apply_update(ck_stream *st, pending *p, json_t *update)
{
    const char *ut = json_string_value(json_object_get(update, "type"));
    long long idx = json_integer_value(json_object_get(update, "content_index"));
    if (!ut)
        return;
    if (!strncmp(ut, "assistant_message.content_part.", 31) && idx >= 0) {
        buf *b = pending_part(p, (size_t)idx);
        if (!b)
            return;
        json_t *part = json_array_get(json_object_get(p->item, "content"), (size_t)idx);
        if (!strcmp(ut + 31, "text_delta")) {
            const char *d = json_string_value(json_object_get(update, "delta"));
            if (d)
                buf_append(b, d, json_string_length(json_object_get(update, "delta")));
        } else if (!strcmp(ut + 31, "added") || !strcmp(ut + 31, "done")) {
            json_t *c = json_object_get(update, "content");
            if (json_is_object(c)) {
                json_array_set(json_object_get(p->item, "content"), (size_t)idx, c);
                buf_reset(b);
                const char *t = json_string_value(json_object_get(c, "text"));
                if (t)
                    buf_append(b, t, json_string_length(json_object_get(c, "text")));
            }
        } else if (!strcmp(ut + 31, "annotation_added") && part) {
            json_t *anns = json_object_get(part, "annotations");
            if (!json_is_array(anns)) {
                anns = json_array();
                json_object_set_new(part, "annotations", anns);
            }
            long long ai = json_integer_value(json_object_get(update, "annotation_index"));
            json_t *a = json_object_get(update, "annotation");
            if (ai >= 0 && (size_t)ai < json_array_size(anns))
                json_array_insert(anns, (size_t)ai, a);
            else
                json_array_append(anns, a);
        }
    } else if (!strcmp(ut, "workflow.task.added") || !strcmp(ut, "workflow.task.updated")) {
        json_t *tasks = json_object_get(json_object_get(p->item, "workflow"), "tasks");
        json_t *task = json_object_get(update, "task");
        long long ti = json_integer_value(json_object_get(update, "task_index"));
        if (!json_is_array(tasks) || !task)
            return;
        if (ut[14] == 'a' || ti < 0 || (size_t)ti >= json_array_size(tasks))
            json_array_append_new(tasks, json_deep_copy(task)); /* copies: no aliasing (§16) */
        else
            json_array_set_new(tasks, (size_t)ti, json_deep_copy(task));
    } else if (!strcmp(ut, "widget.root.updated")) {
        json_t *w = json_object_get(update, "widget");
        if (w)
            json_object_set_new(p->item, "widget", json_deep_copy(w));
    }
    (void)st;
}

/* ---------- store jobs ----------
 * Events whose store effects are pending travel in one job: all store effects of the entries
 * queued at that moment run in one transaction, then all their events go out in order. A
 * streamed turn whose tail is queued at once (item.done, title) costs one commit. */

enum op_kind { J_ADD, J_SAVE, J_DELETE, J_THREAD, J_WIDGET, J_RUN };

typedef struct op {
    enum op_kind kind;
    store_item item;     /* J_ADD/J_SAVE; J_DELETE and J_WIDGET use id (+ json = new root) */
    store_thread thread; /* J_THREAD */
    store_run run;       /* J_RUN */
} op;

typedef struct job {
    ck_stream *st;
    op *ops;
    size_t nops;
    buf out;       /* encoded events, each preceded by its length as a size_t */
} job;

static int job_work(store_conn *c, void *arg)
{
    job *j = arg;
    ck_stream *st = j->st;
    int rc = 0;
    for (size_t i = 0; !rc && i < j->nops; i++) {
        op *o = &j->ops[i];
        switch (o->kind) {
        case J_ADD: rc = store_item_add(c, &st->scope, &o->item); break;
        case J_SAVE: rc = store_item_save(c, &st->scope, &o->item); break;
        case J_DELETE: rc = store_item_delete(c, &st->scope, o->item.thread_id, o->item.id); break;
        case J_THREAD: rc = store_thread_save(c, &st->scope, &o->thread); break;
        case J_RUN: rc = store_run_add(c, &st->scope, &o->run); break;
        case J_WIDGET: {
            /* a widget update on a stored item: keep the stored copy current */
            store_item cur = {0};
            rc = store_item_load(c, &st->scope, o->item.thread_id, o->item.id, &cur);
            if (rc) {
                store_item_clear(&cur);
                rc = rc == STORE_ENOTFOUND ? 0 : rc;
                break;
            }
            json_t *it = ck_item_parse(&cur);
            json_t *w = json_loads(o->item.json, 0, NULL);
            if (it && w && !strcmp(cur.type, "widget")) {
                json_object_set_new(it, "widget", w);
                w = NULL;
                free(cur.json);
                cur.json = json_dumps(it, JSON_COMPACT);
                rc = cur.json ? store_item_save(c, &st->scope, &cur) : STORE_EIO;
            }
            json_decref(it);
            json_decref(w);
            store_item_clear(&cur);
            break;
        }
        }
    }
    return rc;
}

static void job_free(job *j)
{
    for (size_t i = 0; i < j->nops; i++) {
        store_item_clear(&j->ops[i].item);
        store_thread_clear(&j->ops[i].thread);
    }
    free(j->ops);
    buf_free(&j->out);
    free(j);
}

static void job_done(int rc, void *arg)
{
    job *j = arg;
    ck_stream *st = j->st;
    st->busy = 0;
    if (rc && st->deleted) {
        LOGD(stream_rid(st), "store write for a deleted thread failed", "rc=%d", rc);
    } else if (rc) {
        /* a full disk or a lost database is logged by the store; this is one turn's share */
        LOG(rc == STORE_EFULL || rc == STORE_ELOST ? LOG_WARN : LOG_ERROR, stream_rid(st),
            "store write failed", "rc=%d thread=%s ops=%zu", rc, st->thread.id, j->nops);
        /* the client must not see what was not stored; the store errors of a JSON reply
         * (handlers.c job_done: 507 disk full, 503 database lost) as error events */
        static const char ev[] = "{\"type\":\"error\",\"code\":\"stream.error\",\"allow_retry\":true}";
        static const char full[] =
            "{\"type\":\"error\",\"code\":\"custom\",\"message\":\"The server's disk is full: "
            "this answer could not be saved.\",\"allow_retry\":true}";
        static const char lost[] =
            "{\"type\":\"error\",\"code\":\"custom\",\"message\":\"The server's database file "
            "was deleted or replaced: nothing can be saved until an operator restores it.\","
            "\"allow_retry\":false}";
        if (rc == STORE_EFULL)
            send_text(st, full, sizeof full - 1);
        else if (rc == STORE_ELOST)
            send_text(st, lost, sizeof lost - 1);
        else
            send_text(st, ev, sizeof ev - 1);
    } else {
        for (size_t off = 0; off < j->out.len;) {
            size_t n;
            memcpy(&n, j->out.data + off, sizeof n);
            off += sizeof n;
            send_text(st, j->out.data + off, n);
            off += n;
        }
    }
    job_free(j);
    pump(st);
}

/* A new store effect in the batch being built (created on first use). */
static op *job_op(job **jp, enum op_kind kind)
{
    job *j = *jp;
    if (!j) {
        j = *jp = xcalloc(1, sizeof *j);
        j->out = (buf)BUF_INIT(0);
    }
    j->ops = realloc(j->ops, (j->nops + 1) * sizeof *j->ops);
    if (!j->ops)
        log_oom();
    op *o = &j->ops[j->nops++];
    memset(o, 0, sizeof *o);
    o->kind = kind;
    return o;
}

/* An event for the client: straight out when nothing before it awaits the store, else after
 * the batch has been stored. */
static void out_text(ck_stream *st, job *j, const char *json, size_t len)
{
    if (!j) {
        send_text(st, json, len);
        return;
    }
    if (!st->req || st->cancelled)
        return;
    buf_append(&j->out, &len, sizeof len);
    buf_append(&j->out, json, len);
}

static void out_json(ck_stream *st, job *j, const json_t *ev)
{
    if (!st->req || st->cancelled)
        return;
    buf_reset(&scratch);
    if (ck_dump(&scratch, ev) == 0)
        out_text(st, j, scratch.data, scratch.len);
    if (scratch.cap > 65536)
        buf_free(&scratch); /* do not keep the memory of one huge event */
}

static int item_to_store(ck_stream *st, const json_t *item, store_item *out)
{
    const char *id = json_string_value(json_object_get(item, "id"));
    const char *type = json_string_value(json_object_get(item, "type"));
    const char *ca = json_string_value(json_object_get(item, "created_at"));
    if (!id || !type || strlen(id) >= STORE_ID_MAX || strlen(type) >= sizeof out->type)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", id);
    snprintf(out->thread_id, sizeof out->thread_id, "%s", st->thread.id);
    snprintf(out->type, sizeof out->type, "%s", type);
    out->hidden = CK_HIDDEN_TYPE(type);
    if (!ca || ts_parse(ca, &out->created_us))
        out->created_us = stream_now(st);
    out->json = json_dumps(item, JSON_COMPACT);
    return out->json ? 0 : -ENOMEM;
}

static void thread_copy(store_thread *dst, const store_thread *src)
{
    memset(dst, 0, sizeof *dst);
    memcpy(dst->id, src->id, sizeof dst->id);
    memcpy(dst->agent_id, src->agent_id, sizeof dst->agent_id);
    dst->title = src->title ? xstrdup(src->title) : NULL;
    dst->status_json = xstrdup(src->status_json ? src->status_json : "{\"type\":\"active\"}");
    dst->allowed_image_domains =
        src->allowed_image_domains ? xstrdup(src->allowed_image_domains) : NULL;
    dst->metadata_json = xstrdup(src->metadata_json ? src->metadata_json : "{}");
    dst->created_us = src->created_us;
    dst->last_item_us = src->last_item_us;
}

/* ---------- the pipeline ---------- */

static void handle_event(ck_stream *st, json_t *ev, job **jp)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *item = json_object_get(ev, "item");
    if (!type)
        type = "";
    if (!strcmp(type, "thread.item.done") || !strcmp(type, "thread.item.replaced")) {
        const char *id = json_string_value(json_object_get(item, "id"));
        const char *itype = json_string_value(json_object_get(item, "type"));
        store_item it;
        if (!id || !itype || item_to_store(st, item, &it)) {
            LOGE(stream_rid(st), "dropping malformed item event", "type=%s", type);
            return;
        }
        pending_drop(st, id);
        op *o = job_op(jp, type[12] == 'd' ? J_ADD : J_SAVE);
        o->item = it;
        if (!CK_HIDDEN_TYPE(itype)) /* hidden items: stored, never sent */
            out_json(st, *jp, ev);
        return;
    }
    if (!strcmp(type, "thread.item.removed")) {
        const char *id = json_string_value(json_object_get(ev, "item_id"));
        if (!id || strlen(id) >= STORE_ID_MAX)
            return;
        op *o = job_op(jp, J_DELETE);
        snprintf(o->item.id, sizeof o->item.id, "%s", id);
        snprintf(o->item.thread_id, sizeof o->item.thread_id, "%s", st->thread.id);
        pending_drop(st, id);
        out_json(st, *jp, ev);
        return;
    }
    if (!strcmp(type, "thread.item.added") && json_is_object(item)) {
        pending *p = xcalloc(1, sizeof *p);
        p->item = json_deep_copy(item);
        if (!json_is_array(json_object_get(p->item, "content")) &&
            !strcmp(json_string_value(json_object_get(p->item, "type")) ?: "", "assistant_message"))
            json_object_set_new(p->item, "content", json_array());
        /* parts already present in the added item */
        json_t *content = json_object_get(p->item, "content");
        for (size_t i = 0; i < json_array_size(content); i++) {
            buf *b = pending_part(p, i);
            const char *t = json_string_value(json_object_get(json_array_get(content, i), "text"));
            if (b && t)
                buf_puts(b, t);
        }
        p->next = st->pend;
        st->pend = p;
    } else if (!strcmp(type, "thread.item.updated")) {
        const char *id = json_string_value(json_object_get(ev, "item_id"));
        json_t *update = json_object_get(ev, "update");
        pending *p = id ? pending_find(st, id, NULL) : NULL;
        if (p) {
            apply_update(st, p, update);
        } else if (id && strlen(id) < STORE_ID_MAX &&
                   !strcmp(json_string_value(json_object_get(update, "type")) ?: "",
                           "widget.root.updated")) {
            /* an update to a stored widget (custom actions): store the new root too */
            char *root = json_dumps(json_object_get(update, "widget"), JSON_COMPACT);
            if (root) {
                op *o = job_op(jp, J_WIDGET);
                snprintf(o->item.id, sizeof o->item.id, "%s", id);
                snprintf(o->item.thread_id, sizeof o->item.thread_id, "%s", st->thread.id);
                o->item.json = root;
            }
        }
    }
    out_json(st, *jp, ev);
}

static void handle_delta(ck_stream *st, entry *e, job *j)
{
    pending *p = pending_find(st, e->item_id, NULL);
    if (p) {
        buf *b = pending_part(p, (size_t)e->index);
        if (b)
            buf_append(b, e->text, e->len);
    }
    if (!st->req || st->cancelled)
        return;
    buf *s = &scratch;
    buf_reset(s);
    buf_puts(s, "{\"type\":\"thread.item.updated\",\"item_id\":");
    buf_json_str(s, e->item_id, strlen(e->item_id));
    buf_printf(s, ",\"update\":{\"type\":\"assistant_message.content_part.text_delta\","
                  "\"content_index\":%d,\"delta\":", e->index);
    buf_json_str(s, e->text, e->len);
    buf_puts(s, "}}");
    out_text(st, j, s->data, s->len);
}

/* Reference §11.7: keep what the user saw, then tell the model the user stopped it. */
static void handle_cancel(ck_stream *st)
{
    while (st->pend) {
        pending *p = st->pend;
        st->pend = p->next;
        const char *t = json_string_value(json_object_get(p->item, "type"));
        int keep = 0;
        if (t && !strcmp(t, "assistant_message"))
            for (size_t i = 0; i < p->nparts; i++)
                for (size_t k = 0; k < p->parts[i].len; k++)
                    if (!strchr(" \t\r\n", p->parts[i].data[k]))
                        keep = 1;
        if (keep) {
            entry *e = entry_new(E_EVENT);
            e->ev = json_pack("{s:s,s:o}", "type", "thread.item.done", "item", pending_materialize(p));
            e->next = st->head;
            st->head = e;
            if (!st->tail)
                st->tail = e;
        }
        pending_free(p);
    }
    json_t *note = stream_new_item(st, "shcx", "sdk_hidden_context");
    json_object_set_new(note, "content",
                        json_string("The user cancelled the stream. Stop responding to the "
                                    "prior request."));
    entry *e = entry_new(E_EVENT);
    e->ev = json_pack("{s:s,s:o}", "type", "thread.item.done", "item", note);
    /* after the kept messages, before E_END */
    entry **pp = &st->head;
    while (*pp && (*pp)->kind != E_END)
        pp = &(*pp)->next;
    e->next = *pp;
    *pp = e;
    if (!e->next)
        st->tail = e;
}

static void end_stream(ck_stream *st)
{
    if (map_get(&st->app->active, st->thread.id) == st)
        map_del(&st->app->active, st->thread.id);
    if (map_get(&st->app->streams, st->thread.id) == st)
        map_del(&st->app->streams, st->thread.id);
    rl_stream(&st->app->rl, st->scope.user_id, -1);
    if (st->req) {
        http_req_on_close(st->req, NULL, NULL);
        http_sse_on_drain(st->req, NULL, NULL);
        http_sse_end(st->req);
        http_req_unref(st->req);
        st->req = NULL;
    }
    while (st->pend) {
        pending *p = st->pend;
        st->pend = p->next;
        pending_free(p);
    }
    store_thread_clear(&st->thread);
    free(st->agent.name);
    free(st->agent.model);
    free(st->agent.instructions);
    json_decref(st->agent.config);
    free(st);
}

/* thread.updated (reference §11.8): the save joins the batch, the event follows it. */
static void save_thread(ck_stream *st, job **jp)
{
    st->thread_dirty = 0;
    st->announce = 0;
    op *o = job_op(jp, J_THREAD);
    thread_copy(&o->thread, &st->thread);
    buf b = BUF_INIT(0);
    buf_puts(&b, "{\"type\":\"thread.updated\",\"thread\":");
    ck_thread_json(&b, &st->thread, NULL);
    buf_putc(&b, '}');
    out_text(st, *jp, b.data, b.len);
    buf_free(&b);
}

static void pump(ck_stream *st)
{
    /* a send can drop a slow client synchronously, whose close handler pushes more entries:
     * those are picked up by the loop below instead of a nested pump */
    if (st->pumping)
        return;
    st->pumping = 1;
    pump_loop(st);
    st->pumping = 0;
    if (st->ended_pending)
        end_stream(st);
}

static void pump_loop(ck_stream *st)
{
    while (!st->busy) {
        job *j = NULL;
        for (;;) {
            /* reference §11.8: a metadata change is saved and announced after the next event,
             * and once more when the producer is done */
            if (st->thread_dirty && (st->announce || (st->head && st->head->kind == E_END))) {
                save_thread(st, &j);
                continue;
            }
            entry *e = st->head;
            if (!e || (j && (e->kind == E_CANCEL || e->kind == E_END)))
                break; /* the batch goes first */
            st->head = e->next;
            if (!st->head)
                st->tail = NULL;
            switch (e->kind) {
            case E_EVENT: handle_event(st, e->ev, &j); break;
            case E_RAW: out_text(st, j, e->text, e->len); break;
            case E_DELTA: handle_delta(st, e, j); break;
            case E_TITLE:
                /* applied in queue order, so thread.updated follows the events before it */
                free(st->thread.title);
                st->thread.title = e->text;
                e->text = NULL;
                st->thread_dirty = 1;
                break;
            case E_META: {
                /* server-private thread metadata (never sent: threads carry metadata {}) */
                json_t *md = json_loads(st->thread.metadata_json ? st->thread.metadata_json : "{}",
                                        0, NULL);
                if (!json_is_object(md)) {
                    json_decref(md);
                    md = json_object();
                }
                if (e->ev)
                    json_object_set(md, e->text, e->ev);
                else
                    json_object_del(md, e->text);
                free(st->thread.metadata_json);
                st->thread.metadata_json = json_dumps(md, JSON_COMPACT);
                json_decref(md);
                st->thread_dirty = 1;
                break;
            }
            case E_RUN: job_op(&j, J_RUN)->run = *e->run; break;
            case E_CANCEL: handle_cancel(st); break;
            case E_END:
                free(e);
                st->ended = 1;
                st->ended_pending = 1;
                return;
            }
            if (st->thread_dirty && e->kind != E_TITLE && e->kind != E_META)
                st->announce = 1;
            json_decref(e->ev);
            free(e->text);
            free(e->run);
            free(e);
        }
        if (!j)
            return;
        j->st = st;
        st->busy = 1;
        if (store_write(st->app->st, job_work, job_done, j))
            job_done(STORE_EIO, j);
    }
}

/* ---------- public producers ---------- */

static void on_client_close(http_req *req, void *ud)
{
    ck_stream *st = ud;
    LOGI(req->rid, "client disconnected", "thread=%s", st->thread.id);
    st->cancelled = 1;
    http_sse_on_drain(st->req, NULL, NULL);
    http_sse_end(st->req); /* a no-op now, but it completes the request so it can be freed */
    http_req_unref(st->req);
    st->req = NULL;
    if (st->finished)
        return; /* only the tail of a finished turn was still being stored */
    st->finished = 1;
    if (st->run) {
        run_cancel(st->run);
        st->run = NULL;
    }
    push(st, entry_new(E_CANCEL));
    push(st, entry_new(E_END));
}

ck_stream *stream_new(ck_app *app, http_req *req, const store_scope *sc, const store_thread *thread,
                      const ck_agent *agent, int64_t last_us)
{
    ck_stream *st = xcalloc(1, sizeof *st);
    st->app = app;
    st->req = req;
    st->scope = *sc;
    thread_copy(&st->thread, thread);
    memcpy(st->agent.id, agent->id, sizeof st->agent.id);
    st->agent.name = xstrdup(agent->name);
    st->agent.model = xstrdup(agent->model);
    st->agent.instructions = agent->instructions ? xstrdup(agent->instructions) : NULL;
    st->agent.config = json_incref(agent->config); /* never modified */
    st->last_us = last_us;
    map_put(&app->streams, st->thread.id, st);
    http_req_ref(req);
    map_put(&app->active, st->thread.id, st);
    rl_stream(&app->rl, st->scope.user_id, +1);
    app->n_streams++;
    if (http_sse_start(req, NULL)) {
        /* gone already: nothing ran yet, nothing to cancel; ending completes the request */
        http_sse_end(req);
        http_req_unref(req);
        st->req = NULL;
        st->cancelled = 1;
    } else {
        http_req_on_close(req, on_client_close, st);
    }
    return st;
}

void stream_emit(ck_stream *st, json_t *ev)
{
    entry *e = entry_new(E_EVENT);
    e->ev = ev;
    push(st, e);
}

void stream_emit_raw(ck_stream *st, const char *json, size_t len)
{
    entry *e = entry_new(E_RAW);
    e->text = xstrndup(json, len);
    e->len = len;
    push(st, e);
}

void stream_text_delta(ck_stream *st, const char *item_id, int content_index, const char *delta,
                       size_t len)
{
    entry *e = entry_new(E_DELTA);
    snprintf(e->item_id, sizeof e->item_id, "%s", item_id);
    e->index = content_index;
    e->text = xstrndup(delta, len);
    e->len = len;
    push(st, e);
}

void stream_error(ck_stream *st, const char *code, const char *message, int allow_retry)
{
    json_t *ev = json_pack("{s:s,s:s}", "type", "error", "code", code);
    if (message)
        json_object_set_new(ev, "message", json_string(message));
    json_object_set_new(ev, "allow_retry", json_boolean(allow_retry));
    stream_emit(st, ev);
}

void stream_progress(ck_stream *st, const char *icon, const char *text)
{
    json_t *ev = json_pack("{s:s}", "type", "progress_update");
    if (icon)
        json_object_set_new(ev, "icon", json_string(icon));
    json_object_set_new(ev, "text", json_string(text));
    stream_emit(st, ev);
}

void stream_set_title(ck_stream *st, const char *title)
{
    entry *e = entry_new(E_TITLE);
    e->text = title ? xstrdup(title) : NULL;
    push(st, e);
}

void stream_set_metadata(ck_stream *st, const char *key, json_t *value)
{
    entry *e = entry_new(E_META);
    e->text = xstrdup(key);
    e->ev = value;
    push(st, e);
}

void stream_record_run(ck_stream *st, const store_run *r)
{
    entry *e = entry_new(E_RUN);
    e->run = xmalloc(sizeof *e->run);
    *e->run = *r;
    push(st, e);
}

void stream_finish(ck_stream *st)
{
    st->run = NULL; /* (a pending drain callback then only clears the flag) */
    if (st->finished)
        return;
    st->finished = 1;
    push(st, entry_new(E_END));
}

/* The thread is gone (threads.delete): what is queued or pending for it is dropped (the run's
 * accounting excepted: its tokens were spent), the client gets one error event that is not
 * worth retrying, then nothing more, and the run stops. */
static void thread_gone(ck_stream *st)
{
    static const char ev[] = "{\"type\":\"error\",\"code\":\"custom\",\"message\":\"This "
                             "thread was deleted.\",\"allow_retry\":false}";
    LOGI(stream_rid(st), "thread deleted while streaming: run cancelled", "thread=%s",
         st->thread.id);
    st->deleted = 1;
    entry *e = st->head;
    st->head = st->tail = NULL;
    for (entry *next; e; e = next) {
        next = e->next;
        e->next = NULL;
        if (e->kind != E_RUN) {
            entry_free(e);
            continue;
        }
        if (st->tail)
            st->tail->next = e;
        else
            st->head = e;
        st->tail = e;
    }
    while (st->pend) {
        pending *p = st->pend;
        st->pend = p->next;
        pending_free(p);
    }
    st->thread_dirty = 0;
    st->finished = 1;
    if (st->run) {
        run *r = st->run;
        st->run = NULL;
        run_cancel(r); /* queues its accounting */
    }
    send_text(st, ev, sizeof ev - 1);
    st->cancelled = 1; /* nothing after the error reaches the client */
    push(st, entry_new(E_END));
}

void stream_thread_deleted(ck_app *app, const char *thread_id)
{
    ck_stream *st = map_get(&app->streams, thread_id);
    if (st && !st->ended && !st->deleted)
        thread_gone(st);
}
