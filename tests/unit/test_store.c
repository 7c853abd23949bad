/* Store contract (protocol reference §16 "Store contract", §10 pagination) on SQLite, and the
 * async dispatcher. Each test gets a fresh database file in a temp directory. */
/* cmocka needs these first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <glob.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "store/store.h"
#include "util/log.h"

static char tmpdir[] = "/tmp/test_store.XXXXXX";
static int db_seq;
static int disk_full; /* atomic: every SQLite write fails with ENOSPC (set_disk_full) */

typedef struct fx {
    char url[300];
    char path[256];
    store_conn *c;
    store_scope a;  /* account 1, user 1 */
    store_scope a2; /* account 1, user 2 */
    store_scope b;  /* account 2, user 1 */
} fx;

static int group_setup(void **st)
{
    (void)st;
    log_level = LOG_ERROR;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **st)
{
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void scope_set(store_scope *sc, const char *acct, const char *usr)
{
    memset(sc, 0, sizeof *sc);
    snprintf(sc->account_id, sizeof sc->account_id, "%s", acct);
    snprintf(sc->user_id, sizeof sc->user_id, "%s", usr);
}

static int setup(void **st)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s/db%d.sqlite", tmpdir, ++db_seq);
    snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    char *err = NULL;
    f->c = store_conn_open(f->url, 1, &err);
    if (!f->c) {
        fprintf(stderr, "open: %s\n", err);
        free(err);
        free(f);
        return -1;
    }
    scope_set(&f->a, "acct_1", "usr_1");
    scope_set(&f->a2, "acct_1", "usr_2");
    scope_set(&f->b, "acct_2", "usr_1");
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fx *f = *st;
    __atomic_store_n(&disk_full, 0, __ATOMIC_RELEASE); /* a failed test must not leave it on */
    store_conn_close(f->c);
    free(f);
    return 0;
}

static void mk_thread(fx *f, const store_scope *sc, const char *id, int64_t created,
                      const char *agent, const char *title)
{
    store_thread t = {0};
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.agent_id, sizeof t.agent_id, "%s", agent ? agent : "agt_1");
    t.title = (char *)title;
    t.status_json = "{\"type\":\"active\"}";
    t.metadata_json = "{}";
    t.created_us = created;
    assert_int_equal(store_thread_insert(f->c, sc, &t), 0);
}

static void item_set(store_item *it, const char *thread, const char *id, int64_t created,
                     const char *type, char *json)
{
    memset(it, 0, sizeof *it);
    snprintf(it->thread_id, sizeof it->thread_id, "%s", thread);
    snprintf(it->id, sizeof it->id, "%s", id);
    snprintf(it->type, sizeof it->type, "%s", type);
    it->created_us = created;
    it->json = json;
}

static int add_item(store_conn *c, const store_scope *sc, const char *thread, const char *id,
                    int64_t created)
{
    char json[128];
    snprintf(json, sizeof json, "{\"id\":\"%s\",\"type\":\"user_message\"}", id);
    store_item it;
    item_set(&it, thread, id, created, "user_message", json);
    return store_item_add(c, sc, &it);
}

static store_page_req page(int limit, int desc, const char *after)
{
    store_page_req pr = {limit, desc, after};
    return pr;
}

/* ---- schema / connection ---- */

static void t_migrate(void **st)
{
    fx *f = *st;
    assert_int_equal(store_schema_version(f->c), 3);
    assert_int_equal(store_migrate(f->c), 3); /* idempotent */
    char *err = NULL;
    store_conn *c2 = store_conn_open(f->url, 1, &err);
    assert_non_null(c2);
    assert_int_equal(store_schema_version(c2), 3);
    store_conn_close(c2);

    assert_null(store_conn_open("postgres://x", 1, &err));
    assert_non_null(err);
    free(err);
    err = NULL;
    char bad[300];
    snprintf(bad, sizeof bad, "sqlite:%s/no/such/dir/x.db", tmpdir);
    assert_null(store_conn_open(bad, 1, &err));
    assert_non_null(err);
    assert_non_null(strstr(err, "no/such/dir"));
    free(err);
}

static void t_memory(void **st)
{
    (void)st;
    char *err = NULL;
    store_conn *c = store_conn_open("sqlite::memory:", 1, &err);
    assert_non_null(c);
    store_scope sc;
    scope_set(&sc, "acct_m", "usr_m");
    store_thread t = {.id = "thr_m", .agent_id = "agt_m", .metadata_json = "{}"};
    assert_int_equal(store_thread_insert(c, &sc, &t), 0);
    assert_int_equal(add_item(c, &sc, "thr_m", "msg_1", 5), 0);
    store_thread out;
    assert_int_equal(store_thread_load(c, &sc, "thr_m", &out), 0);
    assert_string_equal(out.status_json, "{\"type\":\"active\"}"); /* default */
    assert_int_equal(out.last_item_us, 5);
    store_thread_clear(&out);
    store_thread_clear(&out); /* idempotent */
    store_conn_close(c);
}

static void t_txn(void **st)
{
    fx *f = *st;
    assert_int_equal(store_begin(f->c), 0);
    mk_thread(f, &f->a, "thr_tx", 1, NULL, NULL);
    assert_int_equal(store_rollback(f->c), 0);
    store_thread t;
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_tx", &t), STORE_ENOTFOUND);
    assert_int_equal(store_begin(f->c), 0);
    mk_thread(f, &f->a, "thr_tx", 1, NULL, NULL);
    assert_int_equal(store_commit(f->c), 0);
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_tx", &t), 0);
    store_thread_clear(&t);
    /* a duplicate thread id is a conflict */
    store_thread d = {.id = "thr_tx", .agent_id = "agt_1"};
    assert_int_equal(store_thread_insert(f->c, &f->b, &d), STORE_ECONFLICT);
    assert_non_null(strstr(store_errmsg(f->c), "UNIQUE"));
}

/* ---- tenants and tokens ---- */

static void t_tenants(void **st)
{
    fx *f = *st;
    store_account a1 = {.name = "acme"}, a2 = {.name = "acme"}, got;
    assert_int_equal(store_account_create(f->c, &a1), 0);
    assert_memory_equal(a1.id, "acct_", 5);
    assert_true(a1.created_us > 0);
    a2.created_us = a1.created_us + 10;
    assert_int_equal(store_account_create(f->c, &a2), 0);
    assert_string_not_equal(a1.id, a2.id);
    assert_int_equal(store_account_find_by_name(f->c, "acme", &got), 0);
    assert_string_equal(got.id, a1.id); /* oldest first */
    store_account_clear(&got);
    assert_int_equal(store_account_get(f->c, a2.id, &got), 0);
    assert_string_equal(got.name, "acme");
    assert_int_equal(got.created_us, a2.created_us);
    store_account_clear(&got);
    assert_int_equal(store_account_get(f->c, "acct_nope", &got), STORE_ENOTFOUND);
    assert_int_equal(store_account_find_by_name(f->c, "nope", &got), STORE_ENOTFOUND);
    store_account dup = {.name = "x"};
    memcpy(dup.id, a1.id, sizeof dup.id);
    assert_int_equal(store_account_create(f->c, &dup), STORE_ECONFLICT);

    store_user u = {.name = "alice"}, u2 = {.name = "bob", .external_id = "sub-1"}, ug;
    memcpy(u.account_id, a1.id, sizeof u.account_id);
    memcpy(u2.account_id, a1.id, sizeof u2.account_id);
    assert_int_equal(store_user_create(f->c, &u), 0);
    assert_memory_equal(u.id, "usr_", 4);
    assert_int_equal(store_user_create(f->c, &u2), 0);
    assert_int_equal(store_user_get(f->c, u.id, &ug), 0);
    assert_string_equal(ug.name, "alice");
    assert_string_equal(ug.account_id, a1.id);
    assert_null(ug.external_id);
    store_user_clear(&ug);
    assert_int_equal(store_user_find_by_name(f->c, a1.id, "bob", &ug), 0);
    assert_string_equal(ug.external_id, "sub-1");
    store_user_clear(&ug);
    store_user_clear(&ug);
    assert_int_equal(store_user_find_by_name(f->c, a2.id, "bob", &ug), STORE_ENOTFOUND);
    /* same external id twice in one account */
    store_user u3 = {.name = "bob2", .external_id = "sub-1"};
    memcpy(u3.account_id, a1.id, sizeof u3.account_id);
    assert_int_equal(store_user_create(f->c, &u3), STORE_ECONFLICT);
    /* unknown account: the foreign key fails */
    store_user u4 = {.name = "ghost", .account_id = "acct_ghost"};
    assert_int_equal(store_user_create(f->c, &u4), STORE_ENOTFOUND);

    store_agent g1 = {.name = "helper", .model = "demo"};
    store_agent g2 = {.name = "coder",
                      .model = "openai:gpt-4.1-mini",
                      .instructions = "be brief",
                      .config_json = "{\"x\":1}"};
    memcpy(g1.account_id, a1.id, sizeof g1.account_id);
    memcpy(g2.account_id, a1.id, sizeof g2.account_id);
    g2.created_us = a1.created_us + 1000000;
    assert_int_equal(store_agent_create(f->c, &g1), 0);
    assert_int_equal(store_agent_create(f->c, &g2), 0);
    assert_memory_equal(g1.id, "agt_", 4);
    store_agent ag;
    assert_int_equal(store_agent_get(f->c, a1.id, g2.id, &ag), 0);
    assert_string_equal(ag.model, "openai:gpt-4.1-mini");
    assert_string_equal(ag.instructions, "be brief");
    assert_string_equal(ag.config_json, "{\"x\":1}");
    store_agent_clear(&ag);
    assert_int_equal(store_agent_get(f->c, a1.id, g1.id, &ag), 0);
    assert_null(ag.instructions);
    assert_string_equal(ag.config_json, "{}");
    store_agent_clear(&ag);
    assert_int_equal(store_agent_get(f->c, a2.id, g1.id, &ag), STORE_ENOTFOUND);
    store_agent *list;
    size_t n;
    assert_int_equal(store_agents_list(f->c, a1.id, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, g1.id);
    assert_string_equal(list[1].id, g2.id);
    store_agents_free(list, n);
    assert_int_equal(store_agents_list(f->c, a2.id, &list, &n), 0);
    assert_int_equal(n, 0);
    store_agents_free(list, n);
}

static void t_tokens(void **st)
{
    fx *f = *st;
    store_account a = {.name = "acme"};
    assert_int_equal(store_account_create(f->c, &a), 0);
    store_user u = {.name = "alice"};
    memcpy(u.account_id, a.id, sizeof u.account_id);
    assert_int_equal(store_user_create(f->c, &u), 0);

    assert_int_equal(store_token_create(f->c, "h_forever", u.id, 0), 0);
    assert_int_equal(store_token_create(f->c, "h_short", u.id, 1000), 0);
    assert_int_equal(store_token_create(f->c, "h_forever", u.id, 0), STORE_ECONFLICT);
    assert_int_equal(store_token_create(f->c, "h_ghost", "usr_ghost", 0), STORE_ENOTFOUND);

    store_auth au;
    assert_int_equal(store_token_lookup(f->c, "h_forever", 5000, &au), 0);
    assert_string_equal(au.scope.account_id, a.id);
    assert_string_equal(au.scope.user_id, u.id);
    assert_int_equal(au.expires_us, 0);
    assert_int_equal(store_token_lookup(f->c, "h_short", 999, &au), 0);
    assert_int_equal(au.expires_us, 1000);
    assert_int_equal(store_token_lookup(f->c, "h_short", 1000, &au), STORE_ENOTFOUND);
    assert_int_equal(store_token_lookup(f->c, "h_unknown", 1, &au), STORE_ENOTFOUND);
    assert_int_equal(store_token_revoke(f->c, "h_forever"), 0);
    assert_int_equal(store_token_revoke(f->c, "h_forever"), 0); /* again: still fine */
    assert_int_equal(store_token_lookup(f->c, "h_forever", 5000, &au), STORE_ENOTFOUND);
    assert_int_equal(store_token_revoke(f->c, "h_unknown"), STORE_ENOTFOUND);
}

/* Accounts found by id or external id; users created on first sight; token kinds kept apart;
 * a login token works once and yields a session. */
static void t_external_and_login(void **st)
{
    fx *f = *st;
    store_account a = {.name = "acme", .external_id = "ext-acme"};
    assert_int_equal(store_account_create(f->c, &a), 0);
    a.external_id = NULL; /* not owned */
    store_account b = {.name = "other", .external_id = "ext-acme"};
    assert_int_equal(store_account_create(f->c, &b), STORE_ECONFLICT); /* external ids unique */
    store_account out;
    assert_int_equal(store_account_find_ref(f->c, "ext-acme", &out), 0);
    assert_string_equal(out.id, a.id);
    assert_string_equal(out.external_id, "ext-acme");
    store_account_clear(&out);
    assert_int_equal(store_account_find_ref(f->c, a.id, &out), 0);
    store_account_clear(&out);
    assert_int_equal(store_account_find_ref(f->c, "nope", &out), STORE_ENOTFOUND);

    store_user u1, u2;
    assert_int_equal(store_user_ensure_external(f->c, a.id, "u-42", "Alice", &u1), 0);
    assert_string_equal(u1.name, "Alice");
    assert_int_equal(store_user_ensure_external(f->c, a.id, "u-42", "Renamed", &u2), 0);
    assert_string_equal(u2.id, u1.id); /* the same user the second time */
    store_user_clear(&u2);
    assert_int_equal(store_user_ensure_external(f->c, a.id, "u-43", NULL, &u2), 0);
    assert_string_equal(u2.name, "u-43");
    assert_string_not_equal(u2.id, u1.id);
    store_user_clear(&u2);
    assert_int_equal(store_user_ensure_external(f->c, a.id, "", NULL, &u2), STORE_EINVAL);

    store_auth au;
    assert_int_equal(store_token_create_kind(f->c, "h_login", u1.id, 10000, STORE_TOKEN_LOGIN), 0);
    assert_int_equal(store_token_lookup(f->c, "h_login", 1, &au), STORE_ENOTFOUND); /* not api */
    assert_int_equal(store_login_consume(f->c, "h_login", 20000, "h_sess", 0, &au),
                     STORE_ENOTFOUND); /* expired */
    assert_int_equal(store_login_consume(f->c, "h_login", 5, "h_sess", 99999, &au), 0);
    assert_string_equal(au.scope.user_id, u1.id);
    assert_string_equal(au.scope.account_id, a.id);
    assert_int_equal(store_login_consume(f->c, "h_login", 6, "h_sess2", 0, &au), STORE_ENOTFOUND);
    assert_int_equal(store_token_lookup_kind(f->c, "h_sess", STORE_TOKEN_SESSION, 7, &au), 0);
    assert_int_equal(store_token_lookup(f->c, "h_sess", 7, &au), STORE_ENOTFOUND);
    assert_int_equal(store_token_lookup_kind(f->c, "h_sess", STORE_TOKEN_SESSION, 99999, &au),
                     STORE_ENOTFOUND);
    assert_int_equal(store_login_consume(f->c, "h_sess", 7, "h_x", 0, &au), STORE_ENOTFOUND);
    store_user_clear(&u1);
}

/* An upload is claimed once; a dead upload can be claimed again after the stale time; finish
 * ends it; the sweep removes unattached and orphaned attachments only. */
static void t_attachment_upload_states(void **st)
{
    fx *f = *st;
    store_attachment a = {.id = "atc_up", .name = "f.txt", .mime_type = "text/plain", .size = 3,
                          .json = "{}", .agent_id = "agt_1", .created_us = 100};
    assert_int_equal(store_attachment_save(f->c, &f->a, &a), 0);
    store_attachment out;
    assert_int_equal(store_attachment_claim(f->c, &f->b, "atc_up", 1000, 0, &out), STORE_ENOTFOUND);
    assert_int_equal(store_attachment_claim(f->c, &f->a2, "atc_up", 1000, 0, &out), STORE_ENOTFOUND);
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_up", 1000, 0, &out), 0);
    assert_int_equal(out.uploaded, STORE_UPLOAD_RUNNING);
    assert_int_equal(out.claimed_us, 1000);
    assert_string_equal(out.agent_id, "agt_1");
    store_attachment_clear(&out);
    /* running and not stale: refused */
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_up", 2000, 500, &out), STORE_ECONFLICT);
    store_attachment_clear(&out);
    /* stale: taken over */
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_up", 3000, 1500, &out), 0);
    store_attachment_clear(&out);
    assert_int_equal(store_attachment_finish(f->c, &f->b, "atc_up", STORE_UPLOAD_NONE, NULL),
                     STORE_ENOTFOUND);
    assert_int_equal(store_attachment_finish(f->c, &f->a, "atc_up", STORE_UPLOAD_NONE, NULL), 0);
    assert_int_equal(store_attachment_finish(f->c, &f->a, "atc_up", STORE_UPLOAD_DONE, NULL),
                     STORE_ENOTFOUND); /* nothing running */
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_up", 4000, 0, &out), 0);
    store_attachment_clear(&out);
    assert_int_equal(store_attachment_finish(f->c, &f->a, "atc_up", STORE_UPLOAD_DONE, "{\"x\":1}"), 0);
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_up", 5000, 99999, &out), STORE_ECONFLICT);
    assert_int_equal(out.uploaded, STORE_UPLOAD_DONE);
    assert_string_equal(out.json, "{\"x\":1}");
    store_attachment_clear(&out);

    /* attached to a thread: kept by the sweep until the thread goes */
    mk_thread(f, &f->a, "thr_s", 1, NULL, NULL);
    store_attachment b = {.id = "atc_att", .thread_id = "thr_s", .name = "g", .mime_type = "text/plain",
                          .json = "{}", .created_us = 50};
    assert_int_equal(store_attachment_save(f->c, &f->a, &b), 0);
    char(*ids)[STORE_ID_MAX];
    size_t n;
    assert_int_equal(store_attachments_sweep(f->c, 100, 10, &ids, &n), 0); /* atc_up is at 100 */
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(store_attachments_sweep(f->c, 101, 10, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "atc_up");
    free(ids);
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_up", &out), STORE_ENOTFOUND);
    assert_int_equal(store_thread_delete(f->c, &f->a, "thr_s"), 0);
    assert_int_equal(store_attachments_sweep(f->c, 1, 10, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "atc_att");
    free(ids);
}

/* ---- threads ---- */

static void t_thread_roundtrip(void **st)
{
    fx *f = *st;
    store_thread t = {.id = "thr_1",
                      .agent_id = "agt_1",
                      .title = NULL,
                      .status_json = "{\"type\":\"active\"}",
                      .metadata_json = "{\"k\":\"v\"}",
                      .created_us = 1000};
    assert_int_equal(store_thread_insert(f->c, &f->a, &t), 0);
    store_thread out;
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &out), 0);
    assert_string_equal(out.id, "thr_1");
    assert_string_equal(out.agent_id, "agt_1");
    assert_null(out.title);
    assert_null(out.allowed_image_domains);
    assert_string_equal(out.metadata_json, "{\"k\":\"v\"}");
    assert_string_equal(out.status_json, "{\"type\":\"active\"}");
    assert_int_equal(out.created_us, 1000);
    assert_int_equal(out.last_item_us, 0);
    store_thread_clear(&out);

    t.title = "Hello";
    t.status_json = "{\"type\":\"locked\",\"reason\":\"x\"}";
    t.allowed_image_domains = "[\"example.com\"]";
    t.metadata_json = "{\"k\":\"w\"}";
    t.created_us = 99; /* not changed by save */
    assert_int_equal(store_thread_save(f->c, &f->a, &t), 0);
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &out), 0);
    assert_string_equal(out.title, "Hello");
    assert_string_equal(out.status_json, "{\"type\":\"locked\",\"reason\":\"x\"}");
    assert_string_equal(out.allowed_image_domains, "[\"example.com\"]");
    assert_string_equal(out.metadata_json, "{\"k\":\"w\"}");
    assert_int_equal(out.created_us, 1000);
    store_thread_clear(&out);

    /* back to no title */
    t.title = NULL;
    t.allowed_image_domains = NULL;
    assert_int_equal(store_thread_save(f->c, &f->a, &t), 0);
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &out), 0);
    assert_null(out.title);
    assert_null(out.allowed_image_domains);
    store_thread_clear(&out);

    memcpy(t.id, "thr_nope", 9);
    assert_int_equal(store_thread_save(f->c, &f->a, &t), STORE_ENOTFOUND);
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_nope", &out), STORE_ENOTFOUND);
}

static void t_threads_paging(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thread1", 100, NULL, NULL);
    mk_thread(f, &f->a, "thread2", 200, NULL, NULL);
    mk_thread(f, &f->a, "thread3", 300, NULL, NULL);
    store_page_req pr = page(2, 0, NULL);
    store_thread_page p;
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.threads[0].id, "thread1");
    assert_string_equal(p.threads[1].id, "thread2");
    assert_true(p.has_more);
    assert_string_equal(p.after, "thread2");
    store_thread_page_clear(&p);
    pr = page(2, 0, "thread2");
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.threads[0].id, "thread3");
    assert_false(p.has_more);
    assert_string_equal(p.after, "");
    store_thread_page_clear(&p);
    store_thread_page_clear(&p);

    pr = page(2, 1, NULL);
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.threads[0].id, "thread3");
    assert_string_equal(p.threads[1].id, "thread2");
    assert_string_equal(p.after, "thread2");
    store_thread_page_clear(&p);
    pr = page(2, 1, "thread2");
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.threads[0].id, "thread1");
    assert_false(p.has_more);
    store_thread_page_clear(&p);

    /* exact fit: limit == count → has_more false */
    pr = page(3, 0, NULL);
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 3);
    assert_false(p.has_more);
    assert_string_equal(p.after, "");
    store_thread_page_clear(&p);

    pr = page(2, 0, "thread_unknown");
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), STORE_ENOTFOUND);
    pr = page(0, 0, NULL);
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), STORE_EINVAL);
}

static void t_threads_25(void **st)
{
    fx *f = *st;
    char id[32];
    for (int i = 0; i < 25; i++) {
        snprintf(id, sizeof id, "thr_%02d", i);
        mk_thread(f, &f->a, id, 1000 + i, NULL, NULL);
    }
    store_page_req pr = page(20, 1, NULL);
    store_thread_page p;
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 20);
    assert_string_equal(p.threads[0].id, "thr_24");
    assert_string_equal(p.threads[19].id, "thr_05");
    assert_true(p.has_more);
    assert_string_equal(p.after, "thr_05");
    char after[STORE_ID_MAX];
    memcpy(after, p.after, sizeof after);
    store_thread_page_clear(&p);
    pr = page(20, 1, after);
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 5);
    assert_string_equal(p.threads[0].id, "thr_04");
    assert_string_equal(p.threads[4].id, "thr_00");
    assert_false(p.has_more);
    assert_string_equal(p.after, "");
    store_thread_page_clear(&p);
}

static void t_threads_agent_filter(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "t1", 1, "agt_x", NULL);
    mk_thread(f, &f->a, "t2", 2, "agt_y", NULL);
    mk_thread(f, &f->a, "t3", 3, "agt_x", NULL);
    store_page_req pr = page(10, 0, NULL);
    store_thread_page p;
    assert_int_equal(store_threads_list(f->c, &f->a, "agt_x", &pr, &p), 0);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.threads[0].id, "t1");
    assert_string_equal(p.threads[1].id, "t3");
    store_thread_page_clear(&p);
    pr = page(1, 1, NULL);
    assert_int_equal(store_threads_list(f->c, &f->a, "agt_y", &pr, &p), 0);
    assert_int_equal(p.n, 1);
    assert_false(p.has_more);
    store_thread_page_clear(&p);
    pr = page(10, 0, NULL);
    assert_int_equal(store_threads_list(f->c, &f->a, NULL, &pr, &p), 0);
    assert_int_equal(p.n, 3);
    store_thread_page_clear(&p);
}

/* ---- items ---- */

static void t_items_in_order(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    static const char *types[] = {"user_message", "assistant_message", "client_tool_call",
                                  "hidden_context_item", "widget"};
    char json[5][96];
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "msg%d", i);
        snprintf(json[i], sizeof json[i], "{\"id\":\"%s\",\"type\":\"%s\",\"n\":%d}", id, types[i],
                 i);
        store_item it;
        item_set(&it, "thr_1", id, 10 + i, types[i], json[i]);
        it.hidden = i == 3;
        assert_int_equal(store_item_add(f->c, &f->a, &it), 0);
    }
    store_page_req pr = page(10, 0, NULL);
    store_item_page p;
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 5);
    assert_false(p.has_more);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "msg%d", i);
        assert_string_equal(p.items[i].id, id);
        assert_string_equal(p.items[i].thread_id, "thr_1");
        assert_string_equal(p.items[i].type, types[i]);
        assert_string_equal(p.items[i].json, json[i]);
        assert_int_equal(p.items[i].created_us, 10 + i);
        assert_int_equal(p.items[i].hidden, i == 3); /* hidden items are included */
    }
    store_item_page_clear(&p);
    store_item_page_clear(&p);
}

static void t_items_paging(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    char id[16];
    for (int i = 1; i <= 4; i++) {
        snprintf(id, sizeof id, "msg%d", i);
        assert_int_equal(add_item(f->c, &f->a, "thr_1", id, 100 * i), 0);
    }
    store_item_page p;
    store_page_req pr = page(10, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 4);
    assert_string_equal(p.items[0].id, "msg1");
    assert_string_equal(p.items[3].id, "msg4");
    store_item_page_clear(&p);
    pr = page(10, 1, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 4);
    assert_string_equal(p.items[0].id, "msg4");
    assert_string_equal(p.items[3].id, "msg1");
    store_item_page_clear(&p);

    pr = page(3, 0, "msg1");
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 3);
    assert_string_equal(p.items[0].id, "msg2");
    assert_string_equal(p.items[1].id, "msg3");
    assert_string_equal(p.items[2].id, "msg4");
    assert_false(p.has_more);
    assert_string_equal(p.after, "");
    store_item_page_clear(&p);

    pr = page(2, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 2);
    assert_true(p.has_more);
    assert_string_equal(p.after, "msg2");
    store_item_page_clear(&p);

    pr = page(1, 1, "msg4");
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.items[0].id, "msg3");
    assert_true(p.has_more);
    assert_string_equal(p.after, "msg3");
    store_item_page_clear(&p);

    pr = page(5, 1, "msg1"); /* nothing older */
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 0);
    assert_false(p.has_more);
    store_item_page_clear(&p);

    pr = page(2, 0, "msg_unknown");
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), STORE_ENOTFOUND);
    assert_int_equal(p.n, 0);
}

/* items.list default: 26 items, 20 newest first then the remaining 6 */
static void t_items_26(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    char id[16];
    for (int i = 0; i < 26; i++) {
        snprintf(id, sizeof id, "msg_%02d", i);
        assert_int_equal(add_item(f->c, &f->a, "thr_1", id, 10 + i), 0);
    }
    store_item_page p;
    store_page_req pr = page(20, 1, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 20);
    assert_true(p.has_more);
    assert_string_equal(p.after, "msg_06");
    char after[STORE_ID_MAX];
    memcpy(after, p.after, sizeof after);
    store_item_page_clear(&p);
    pr = page(20, 1, after);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 6);
    assert_false(p.has_more);
    assert_string_equal(p.items[5].id, "msg_00");
    store_item_page_clear(&p);
}

/* Equal timestamps page in insertion order, in both directions, without skipping any. */
static void t_items_ties(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    char id[16];
    for (int i = 0; i < 7; i++) {
        snprintf(id, sizeof id, "m%d", i);
        assert_int_equal(add_item(f->c, &f->a, "thr_1", id, 500), 0);
    }
    for (int desc = 0; desc <= 1; desc++) {
        char after[STORE_ID_MAX] = "";
        int seen = 0;
        for (;;) {
            store_item_page p;
            store_page_req pr = page(2, desc, after[0] ? after : NULL);
            assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
            for (size_t k = 0; k < p.n; k++, seen++) {
                snprintf(id, sizeof id, "m%d", desc ? 6 - seen : seen);
                assert_string_equal(p.items[k].id, id);
            }
            int more = p.has_more;
            memcpy(after, p.after, sizeof after);
            store_item_page_clear(&p);
            if (!more)
                break;
        }
        assert_int_equal(seen, 7);
    }
}

static void t_item_save(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 10), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg2", 20), 0);
    store_item it;
    item_set(&it, "thr_1", "msg1", 10, "widget", "{\"id\":\"msg1\",\"type\":\"widget\"}");
    it.hidden = 1;
    assert_int_equal(store_item_save(f->c, &f->a, &it), 0);
    store_item out;
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg1", &out), 0);
    assert_string_equal(out.type, "widget");
    assert_string_equal(out.json, "{\"id\":\"msg1\",\"type\":\"widget\"}");
    assert_int_equal(out.hidden, 1);
    store_item_clear(&out);
    store_item_clear(&out);
    /* the replaced item keeps its place */
    store_item_page p;
    store_page_req pr = page(10, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.items[0].id, "msg1");
    store_item_page_clear(&p);
    /* save of a new id inserts */
    item_set(&it, "thr_1", "msg3", 30, "assistant_message", "{}");
    assert_int_equal(store_item_save(f->c, &f->a, &it), 0);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg3", &out), 0);
    store_item_clear(&out);

    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_missing", &out), STORE_ENOTFOUND);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_missing", "msg1", &out), STORE_ENOTFOUND);
    assert_int_equal(store_item_delete(f->c, &f->a, "thr_1", "msg2"), 0);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg2", &out), STORE_ENOTFOUND);
    assert_int_equal(store_item_delete(f->c, &f->a, "thr_1", "msg2"), STORE_ENOTFOUND);
    /* items on a missing thread */
    assert_int_equal(add_item(f->c, &f->a, "thr_missing", "msg9", 1), STORE_ENOTFOUND);
}

static void t_dup_item(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    mk_thread(f, &f->a, "thr_2", 2, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 10), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 11), STORE_ECONFLICT);
    /* ids are per thread */
    assert_int_equal(add_item(f->c, &f->a, "thr_2", "msg1", 12), 0);
    store_item out;
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg1", &out), 0);
    assert_int_equal(out.created_us, 10);
    store_item_clear(&out);
}

static void t_last_item_us(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "m1", 300), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "m2", 700), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "m3", 500), 0);
    store_thread t;
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &t), 0);
    assert_int_equal(t.last_item_us, 700);
    store_thread_clear(&t);
    assert_int_equal(store_item_delete(f->c, &f->a, "thr_1", "m2"), 0);
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &t), 0);
    assert_int_equal(t.last_item_us, 500);
    store_thread_clear(&t);
}

/* ---- isolation ---- */

static void check_isolated(fx *f, const store_scope *other)
{
    store_thread t;
    store_item it, out;
    store_item_page p;
    store_thread_page tp;
    store_page_req pr = page(10, 0, NULL);

    assert_int_equal(store_thread_load(f->c, other, "thr_1", &t), STORE_ENOTFOUND);
    assert_int_equal(store_items_list(f->c, other, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 0);
    assert_false(p.has_more);
    store_item_page_clear(&p);
    pr = page(10, 0, "msg1");
    assert_int_equal(store_items_list(f->c, other, "thr_1", &pr, &p), STORE_ENOTFOUND);
    pr = page(10, 0, NULL);
    assert_int_equal(store_threads_list(f->c, other, NULL, &pr, &tp), 0);
    assert_int_equal(tp.n, 0);
    store_thread_page_clear(&tp);
    pr = page(10, 0, "thr_1");
    assert_int_equal(store_threads_list(f->c, other, NULL, &pr, &tp), STORE_ENOTFOUND);

    assert_int_equal(store_item_load(f->c, other, "thr_1", "msg1", &out), STORE_ENOTFOUND);
    assert_int_equal(add_item(f->c, other, "thr_1", "msg_x", 50), STORE_ENOTFOUND);
    item_set(&it, "thr_1", "msg1", 10, "widget", "{\"evil\":true}");
    assert_int_equal(store_item_save(f->c, other, &it), STORE_ENOTFOUND);
    item_set(&it, "thr_1", "msg_new", 10, "widget", "{\"evil\":true}");
    assert_int_equal(store_item_save(f->c, other, &it), STORE_ENOTFOUND);
    assert_int_equal(store_item_delete(f->c, other, "thr_1", "msg1"), STORE_ENOTFOUND);
    store_thread upd = {.id = "thr_1", .agent_id = "agt_1", .title = "pwned"};
    assert_int_equal(store_thread_save(f->c, other, &upd), STORE_ENOTFOUND);
    const char *ids[] = {"msg1"};
    assert_int_equal(store_feedback_add(f->c, other, "thr_1", ids, 1, "positive"), STORE_ENOTFOUND);
    assert_int_equal(store_feedback_count(f->c, other, "msg1", NULL), 0);
    assert_int_equal(store_thread_delete(f->c, other, "thr_1"), STORE_ENOTFOUND);
    store_attachment a;
    assert_int_equal(store_attachment_load(f->c, other, "atc_1", &a), STORE_ENOTFOUND);
    assert_int_equal(store_attachment_delete(f->c, other, "atc_1"), STORE_ENOTFOUND);
    store_attachment sa = {.id = "atc_1", .name = "x", .mime_type = "text/plain", .json = "{}"};
    assert_int_equal(store_attachment_save(f->c, other, &sa), STORE_ECONFLICT);

    /* the owner still sees everything unchanged */
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &t), 0);
    assert_null(t.title);
    store_thread_clear(&t);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg1", &out), 0);
    assert_string_equal(out.type, "user_message");
    store_item_clear(&out);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_new", &out), STORE_ENOTFOUND);
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_1", &a), 0);
    assert_string_equal(a.name, "f.txt");
    store_attachment_clear(&a);
}

static void isolation_fixture(fx *f)
{
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 10), 0);
    store_attachment a = {
        .id = "atc_1", .name = "f.txt", .mime_type = "text/plain", .size = 3, .json = "{}"};
    assert_int_equal(store_attachment_save(f->c, &f->a, &a), 0);
}

static void t_isolation_users(void **st)
{
    fx *f = *st;
    isolation_fixture(f);
    check_isolated(f, &f->a2);
}

static void t_isolation_accounts(void **st)
{
    fx *f = *st;
    isolation_fixture(f);
    check_isolated(f, &f->b);
    /* same user id under another account is another user */
    store_scope same_user;
    scope_set(&same_user, "acct_2", f->a.user_id);
    check_isolated(f, &same_user);
}

/* ---- attachments ---- */

static void t_attachments(void **st)
{
    fx *f = *st;
    store_attachment file = {.id = "atc_file",
                             .name = "doc.pdf",
                             .mime_type = "application/pdf",
                             .size = 1234,
                             .json = "{\"id\":\"atc_file\",\"type\":\"file\",\"name\":\"doc.pdf\"}",
                             .metadata_json = "{\"path\":\"/x\"}",
                             .uploaded = 0,
                             .created_us = 42};
    store_attachment img = {.id = "atc_img",
                            .name = "a.png",
                            .mime_type = "image/png",
                            .size = 10,
                            .json = "{\"id\":\"atc_img\",\"type\":\"image\",\"preview_url\":"
                                    "\"https://x/p.png\"}"};
    assert_int_equal(store_attachment_save(f->c, &f->a, &file), 0);
    assert_int_equal(store_attachment_save(f->c, &f->a, &img), 0);
    store_attachment out;
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_file", &out), 0);
    assert_string_equal(out.id, "atc_file");
    assert_string_equal(out.thread_id, "");
    assert_string_equal(out.name, "doc.pdf");
    assert_string_equal(out.mime_type, "application/pdf");
    assert_int_equal(out.size, 1234);
    assert_string_equal(out.json, file.json);
    assert_string_equal(out.metadata_json, "{\"path\":\"/x\"}");
    assert_int_equal(out.uploaded, 0);
    assert_int_equal(out.created_us, 42);
    store_attachment_clear(&out);
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_img", &out), 0);
    assert_string_equal(out.json, img.json);
    assert_string_equal(out.metadata_json, "{}");
    assert_true(out.created_us > 0);
    store_attachment_clear(&out);

    /* upsert: attach to a thread, mark uploaded */
    memcpy(file.thread_id, "thr_1", 6);
    file.uploaded = 1;
    file.created_us = 7; /* creation time is kept */
    assert_int_equal(store_attachment_save(f->c, &f->a, &file), 0);
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_file", &out), 0);
    assert_string_equal(out.thread_id, "thr_1");
    assert_int_equal(out.uploaded, 1);
    assert_int_equal(out.created_us, 42);
    store_attachment_clear(&out);
    store_attachment_clear(&out);

    assert_int_equal(store_attachment_delete(f->c, &f->a, "atc_file"), 0);
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_file", &out), STORE_ENOTFOUND);
    assert_int_equal(store_attachment_delete(f->c, &f->a, "atc_file"), STORE_ENOTFOUND);
}

/* ---- feedback and delete ---- */

static void t_feedback(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    mk_thread(f, &f->a, "thr_2", 1, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 10), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg2", 20), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_2", "msg3", 20), 0);
    const char *ids[] = {"msg1", "msg2"};
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", ids, 2, "positive"), 0);
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", ids, 1, "negative"), 0);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg1", "positive"), 1);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg1", "negative"), 1);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg1", NULL), 2);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg2", "negative"), 0);
    /* an item of another thread fails the whole call */
    const char *mixed[] = {"msg2", "msg3"};
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", mixed, 2, "negative"),
                     STORE_ENOTFOUND);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg2", "negative"), 0);
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", ids, 2, "meh"), STORE_EINVAL);
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", ids, 0, "positive"), 0);
}

static void t_thread_delete(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    mk_thread(f, &f->a, "thr_2", 2, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 10), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg2", 11), 0);
    assert_int_equal(add_item(f->c, &f->a, "thr_2", "msg3", 12), 0);
    const char *ids[] = {"msg1"};
    assert_int_equal(store_feedback_add(f->c, &f->a, "thr_1", ids, 1, "positive"), 0);
    store_attachment a = {
        .id = "atc_1", .thread_id = "thr_1", .name = "f", .mime_type = "t/p", .json = "{}"};
    assert_int_equal(store_attachment_save(f->c, &f->a, &a), 0);

    assert_int_equal(store_thread_delete(f->c, &f->a, "thr_1"), 0);
    store_thread t;
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_1", &t), STORE_ENOTFOUND);
    store_item out;
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg1", &out), STORE_ENOTFOUND);
    assert_int_equal(store_feedback_count(f->c, &f->a, "msg1", NULL), 0);
    store_item_page p;
    store_page_req pr = page(10, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, 0);
    store_item_page_clear(&p);
    assert_int_equal(store_thread_delete(f->c, &f->a, "thr_1"), STORE_ENOTFOUND);
    /* other threads untouched; attachments are not deleted */
    assert_int_equal(store_item_load(f->c, &f->a, "thr_2", "msg3", &out), 0);
    store_item_clear(&out);
    store_attachment ao;
    assert_int_equal(store_attachment_load(f->c, &f->a, "atc_1", &ao), 0);
    store_attachment_clear(&ao);
    /* the id can be reused afterwards, items too */
    mk_thread(f, &f->a, "thr_1", 3, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg1", 20), 0);
}

/* ---- dispatcher ---- */

typedef struct djob {
    fx *f;
    int idx;
    int fail; /* work: 1 = add then fail, 2 = abort the whole transaction */
    int rc;   /* rc seen by done */
    int done;
    int *order; /* done appends idx */
    int *n_order;
    sem_t *block; /* work waits on it (holds the writer) */
    sem_t *started;
    store_conn *check; /* done: the write must already be visible here */
    void *ctx;
    char id[32];
} djob;

static int w_add(store_conn *c, void *arg)
{
    djob *j = arg;
    if (j->started)
        sem_post(j->started);
    if (j->block)
        sem_wait(j->block);
    int rc = add_item(c, &j->f->a, "thr_1", j->id, 1000 + j->idx);
    if (rc < 0)
        return rc;
    if (j->fail == 1)
        return STORE_EINVAL;
    if (j->fail == 2) {
        store_rollback(c); /* simulates SQLite aborting the transaction */
        return STORE_EIO;
    }
    return 0;
}

static int r_load(store_conn *c, void *arg)
{
    djob *j = arg;
    store_item it;
    int rc = store_item_load(c, &j->f->a, "thr_1", j->id, &it);
    store_item_clear(&it);
    return rc;
}

static void on_done(int rc, void *arg)
{
    djob *j = arg;
    j->rc = rc;
    j->done++;
    if (j->order)
        j->order[(*j->n_order)++] = j->idx;
    if (j->check && rc == 0) {
        store_item it;
        assert_int_equal(store_item_load(j->check, &j->f->a, "thr_1", j->id, &it), 0);
        store_item_clear(&it);
    }
}

static store *dstore(fx *f, uv_loop_t *loop, unsigned readers)
{
    assert_int_equal(uv_loop_init(loop), 0);
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    char *err = NULL;
    store *s = store_new(loop, f->url, readers, &err);
    if (!s)
        fail_msg("store_new: %s", err);
    return s;
}

static void dclose(store *s, uv_loop_t *loop)
{
    store_free(s);
    uv_run(loop, UV_RUN_DEFAULT); /* finishes the async handle's close */
    assert_int_equal(uv_loop_close(loop), 0);
}

static void t_dispatch_order(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 2);
    enum { N = 600 };
    djob *jobs = calloc(N, sizeof *jobs);
    int *order = calloc(N, sizeof *order), n_order = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (djob){.f = f, .idx = i, .order = order, .n_order = &n_order, .check = f->c};
        snprintf(jobs[i].id, sizeof jobs[i].id, "msg_%04d", i);
        assert_int_equal(store_write(s, w_add, on_done, &jobs[i]), 0);
    }
    assert_int_equal(store_pending(s), N);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once every job has completed */
    assert_int_equal(store_pending(s), 0);
    assert_int_equal(n_order, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(order[i], i);
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(jobs[i].done, 1);
    }
    /* items were applied in submission order */
    store_item_page p;
    store_page_req pr = page(N, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, N);
    for (int i = 0; i < N; i++)
        assert_string_equal(p.items[i].id, jobs[i].id);
    store_item_page_clear(&p);
    dclose(s, &loop);
    free(jobs);
    free(order);
}

static void t_dispatch_batch_rollback(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 1);
    sem_t block, started;
    sem_init(&block, 0, 0);
    sem_init(&started, 0, 0);
    enum { N = 9 };
    djob jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (djob){.f = f, .idx = i};
        snprintf(jobs[i].id, sizeof jobs[i].id, "msg_%d", i);
    }
    /* job 0 holds the writer so that 1..8 queue up and run as one batch */
    jobs[0].block = &block;
    jobs[0].started = &started;
    jobs[3].fail = 1;               /* rolled back alone */
    memcpy(jobs[5].id, "msg_1", 6); /* duplicate of job 1: ECONFLICT, alone */
    assert_int_equal(store_write(s, w_add, on_done, &jobs[0]), 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* writes reach the writer at the end of a loop iteration */
    sem_wait(&started);
    for (int i = 1; i < N; i++)
        assert_int_equal(store_write(s, w_add, on_done, &jobs[i]), 0);
    sem_post(&block);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].done, 1);
    assert_int_equal(jobs[3].rc, STORE_EINVAL);
    assert_int_equal(jobs[5].rc, STORE_ECONFLICT);
    store_item it;
    for (int i = 0; i < N; i++) {
        if (i == 3 || i == 5)
            continue;
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(store_item_load(f->c, &f->a, "thr_1", jobs[i].id, &it), 0);
        assert_int_equal(it.created_us, 1000 + i);
        store_item_clear(&it);
    }
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_3", &it), STORE_ENOTFOUND);

    /* a job that loses the whole transaction takes the earlier jobs of it down with it; the
     * jobs after it run in a new transaction */
    djob more[4];
    for (int i = 0; i < 4; i++) {
        more[i] = (djob){.f = f, .idx = 100 + i};
        snprintf(more[i].id, sizeof more[i].id, "more_%d", i);
    }
    more[0].block = &block;
    more[0].started = &started;
    more[2].fail = 2;
    assert_int_equal(store_write(s, w_add, on_done, &more[0]), 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* writes reach the writer at the end of a loop iteration */
    sem_wait(&started);
    for (int i = 1; i < 4; i++)
        assert_int_equal(store_write(s, w_add, on_done, &more[i]), 0);
    sem_post(&block);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(more[0].rc, 0);
    assert_int_equal(more[1].rc, STORE_EIO);
    assert_int_equal(more[2].rc, STORE_EIO);
    assert_int_equal(more[3].rc, 0);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "more_0", &it), 0);
    store_item_clear(&it);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "more_1", &it), STORE_ENOTFOUND);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "more_2", &it), STORE_ENOTFOUND);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "more_3", &it), 0);
    store_item_clear(&it);

    dclose(s, &loop);
    sem_destroy(&block);
    sem_destroy(&started);
}

/* A read submitted from a write's done callback sees the write. */
typedef struct rw {
    fx *f;
    store *s;
    djob w[50];
    djob r[50];
    int reads_done;
} rw;

static void on_read_done(int rc, void *arg)
{
    djob *j = arg;
    j->rc = rc;
    j->done++;
}

static void on_write_then_read(int rc, void *arg)
{
    djob *j = arg;
    rw *x = j->ctx;
    j->rc = rc;
    j->done++;
    djob *r = &x->r[j->idx];
    *r = (djob){.f = j->f, .idx = j->idx};
    memcpy(r->id, j->id, sizeof r->id);
    assert_int_equal(store_read(x->s, r_load, on_read_done, r), 0);
}

static void t_dispatch_read_after_write(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    rw *x = calloc(1, sizeof *x);
    x->f = f;
    x->s = dstore(f, &loop, 2);
    for (int i = 0; i < 50; i++) {
        x->w[i] = (djob){.f = f, .idx = i, .ctx = x};
        snprintf(x->w[i].id, sizeof x->w[i].id, "msg_%d", i);
        assert_int_equal(store_write(x->s, w_add, on_write_then_read, &x->w[i]), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(x->w[i].rc, 0);
        assert_int_equal(x->r[i].done, 1);
        assert_int_equal(x->r[i].rc, 0);
    }
    /* a read of something absent reports the work's error */
    djob miss = {.f = f};
    memcpy(miss.id, "nope", 5);
    assert_int_equal(store_read(x->s, r_load, on_read_done, &miss), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(miss.rc, STORE_ENOTFOUND);
    dclose(x->s, &loop);
    free(x);
}

static void t_dispatch_free_drains(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 2);
    enum { N = 300 };
    djob *jobs = calloc(N, sizeof *jobs);
    djob *reads = calloc(N, sizeof *reads);
    int *order = calloc(N, sizeof *order), n_order = 0;
    for (int i = 0; i < N; i++) {
        jobs[i] = (djob){.f = f, .idx = i, .order = order, .n_order = &n_order};
        snprintf(jobs[i].id, sizeof jobs[i].id, "msg_%d", i);
        assert_int_equal(store_write(s, w_add, on_done, &jobs[i]), 0);
        reads[i] = (djob){.f = f, .idx = i};
        memcpy(reads[i].id, "msg_0", 6);
        assert_int_equal(store_read(s, r_load, on_read_done, &reads[i]), 0);
    }
    store_free(s); /* without ever running the loop: every done runs inside */
    assert_int_equal(n_order, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(order[i], i);
        assert_int_equal(jobs[i].rc, 0);
        assert_int_equal(reads[i].done, 1);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    store_item_page p;
    store_page_req pr = page(N + 1, 0, NULL);
    assert_int_equal(store_items_list(f->c, &f->a, "thr_1", &pr, &p), 0);
    assert_int_equal(p.n, N);
    store_item_page_clear(&p);
    free(jobs);
    free(reads);
    free(order);
}

static int mk(store_conn *c, void *arg)
{
    djob *j = arg;
    store_thread t = {.id = "thr_1", .agent_id = "agt_1"};
    int rc = store_thread_insert(c, &j->f->a, &t);
    return rc < 0 ? rc : add_item(c, &j->f->a, "thr_1", j->id, 1);
}

static void t_dispatch_memory(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    char *err = NULL;
    store *s = store_new(&loop, "sqlite::memory:", 2, &err);
    assert_non_null(s);
    /* one database: reads run on the writer connection, so they see the writes */
    djob w = {.f = f, .idx = 0};
    memcpy(w.id, "msg_m", 6);
    assert_int_equal(store_write(s, mk, on_read_done, &w), 0);
    djob r = {.f = f};
    memcpy(r.id, "msg_m", 6);
    assert_int_equal(store_read(s, r_load, on_read_done, &r), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.rc, 0);
    assert_int_equal(r.rc, 0);

    assert_null(store_new(&loop, "bogus:", 1, &err));
    assert_non_null(err);
    free(err);
    dclose(s, &loop);
}

/* ---- runs (token usage) ---- */

static void run_set(store_run *r, const char *thread, int64_t started, int64_t in, int64_t out)
{
    memset(r, 0, sizeof *r);
    snprintf(r->thread_id, sizeof r->thread_id, "%s", thread);
    snprintf(r->agent_id, sizeof r->agent_id, "agt_1");
    snprintf(r->model, sizeof r->model, "openai:gpt-4.1-mini");
    snprintf(r->status, sizeof r->status, "completed");
    r->input_tokens = in;
    r->output_tokens = out;
    r->model_calls = 2;
    r->tool_calls = 1;
    r->started_us = started;
}

static void t_runs(void **st)
{
    fx *f = *st;
    store_run r, *v;
    size_t n;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        run_set(&r, i % 2 ? "thr_2" : "thr_1", 100 + i, 10 * i, i);
        r.ended_us = i ? 200 + i : 0; /* 0: now */
        assert_int_equal(store_run_add(f->c, i == 3 ? &f->a2 : &f->a, &r), 0);
        assert_memory_equal(r.id, "run_", 4);
        assert_true(r.ended_us >= 200);
    }
    run_set(&r, "thr_b", 500, 7, 7);
    assert_int_equal(store_run_add(f->c, &f->b, &r), 0);
    store_run dup = r;
    assert_int_equal(store_run_add(f->c, &f->a, &dup), STORE_ECONFLICT); /* same id */
    run_set(&r, "", 1, 0, 0);
    assert_int_equal(store_run_add(f->c, &f->a, &r), STORE_EINVAL);

    /* newest first, every user of the account, never another account's */
    assert_int_equal(store_runs_list(f->c, "acct_1", NULL, 50, &v, &n), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v[i].started_us, 103 - (int64_t)i);
    assert_string_equal(v[0].thread_id, "thr_2");
    assert_string_equal(v[0].agent_id, "agt_1");
    assert_string_equal(v[0].model, "openai:gpt-4.1-mini");
    assert_string_equal(v[0].status, "completed");
    assert_int_equal(v[0].input_tokens, 30);
    assert_int_equal(v[0].output_tokens, 3);
    assert_int_equal(v[0].model_calls, 2);
    assert_int_equal(v[0].tool_calls, 1);
    assert_int_equal(v[0].ended_us, 203);
    free(v);
    assert_int_equal(store_runs_list(f->c, "acct_1", NULL, 3, &v, &n), 0); /* limit */
    assert_int_equal(n, 3);
    assert_int_equal(v[2].started_us, 101);
    free(v);
    assert_int_equal(store_runs_list(f->c, "acct_1", NULL, 0, &v, &n), 0);
    assert_int_equal(n, 0);
    assert_null(v);

    /* by thread; usage outlives the thread */
    assert_int_equal(store_thread_delete(f->c, &f->a, "thr_1"), 0);
    assert_int_equal(store_runs_list(f->c, "acct_1", "thr_1", 50, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(v[0].started_us, 102);
    assert_int_equal(v[1].started_us, 100);
    free(v);

    /* account isolation: another account's thread id, an account with no runs */
    assert_int_equal(store_runs_list(f->c, "acct_1", "thr_b", 50, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    assert_int_equal(store_runs_list(f->c, "acct_2", NULL, 50, &v, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].thread_id, "thr_b");
    free(v);
    assert_int_equal(store_runs_list(f->c, "acct_none", NULL, 50, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
}

/* A database written by a build that stopped at schema version 1 gets the runs table and the
 * version 3 columns, and keeps its rows. */
static void t_migrate_runs(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_old", 1, NULL, NULL);
    store_conn_close(f->c);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "DROP TABLE runs; DROP INDEX accounts_external; "
                     "DROP INDEX attachments_unattached; ALTER TABLE accounts DROP external_id; "
                     "ALTER TABLE tokens DROP kind; ALTER TABLE attachments DROP agent_id; "
                     "ALTER TABLE attachments DROP claimed_us; "
                     "DELETE FROM schema_migrations WHERE version > 1",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    char *err = NULL;
    f->c = store_conn_open(f->url, 0, &err);
    assert_non_null(f->c);
    assert_int_equal(store_schema_version(f->c), 1);
    store_run r;
    run_set(&r, "thr_old", 5, 1, 1);
    assert_int_equal(store_run_add(f->c, &f->a, &r), STORE_EIO); /* no table yet */
    assert_int_equal(store_migrate(f->c), 3);
    assert_int_equal(store_schema_version(f->c), 3);
    r.id[0] = 0;
    assert_int_equal(store_run_add(f->c, &f->a, &r), 0);
    store_thread t;
    assert_int_equal(store_thread_load(f->c, &f->a, "thr_old", &t), 0);
    store_thread_clear(&t);
}

/* Start-up recovery: every running upload (of any scope, however recent its claim) becomes
 * uploadable again; stored and waiting ones are left alone. */
static void t_attachment_reset_uploads(void **st)
{
    fx *f = *st;
    int64_t n = -1;
    assert_int_equal(store_attachments_reset_uploads(f->c, &n), 0);
    assert_int_equal(n, 0); /* nothing to do */
    const char *ids[] = {"atc_r1", "atc_r2", "atc_r3", "atc_r4"};
    const store_scope *scopes[] = {&f->a, &f->b, &f->a, &f->a};
    for (int i = 0; i < 4; i++) {
        store_attachment a = {.name = "f.txt", .mime_type = "text/plain", .size = 3, .json = "{}"};
        snprintf(a.id, sizeof a.id, "%s", ids[i]);
        assert_int_equal(store_attachment_save(f->c, scopes[i], &a), 0);
    }
    store_attachment out;
    /* r1 and r2 (another user's) running, r3 stored, r4 waiting */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_attachment_claim(f->c, scopes[i], ids[i], INT64_MAX - 1, 0, &out), 0);
        store_attachment_clear(&out);
    }
    assert_int_equal(store_attachment_finish(f->c, &f->a, "atc_r3", STORE_UPLOAD_DONE, NULL), 0);
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_r1", 1, 0, &out), STORE_ECONFLICT);
    store_attachment_clear(&out);

    assert_int_equal(store_attachments_reset_uploads(f->c, &n), 0);
    assert_int_equal(n, 2);
    const int want[] = {STORE_UPLOAD_NONE, STORE_UPLOAD_NONE, STORE_UPLOAD_DONE, STORE_UPLOAD_NONE};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(store_attachment_load(f->c, scopes[i], ids[i], &out), 0);
        assert_int_equal(out.uploaded, want[i]);
        store_attachment_clear(&out);
    }
    /* claimable again at once, and finishable by the new upload */
    assert_int_equal(store_attachment_claim(f->c, &f->a, "atc_r1", 10, 0, &out), 0);
    store_attachment_clear(&out);
    assert_int_equal(store_attachment_finish(f->c, &f->a, "atc_r1", STORE_UPLOAD_DONE, NULL), 0);
    assert_int_equal(store_attachments_reset_uploads(f->c, &n), 0);
    assert_int_equal(n, 0);
}

/* ---- faults: a full disk, a database deleted or replaced while open ---- */

/* A full disk, injected under SQLite: the unix VFS lets a program replace the system calls it
 * makes, so while disk_full is set every write of any connection fails with ENOSPC. The
 * replacements stay installed; with disk_full clear they only pass the calls on. */
static sqlite3_syscall_ptr real_write, real_pwrite, real_pwrite64;
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);

static int is_full(void)
{
    if (!__atomic_load_n(&disk_full, __ATOMIC_ACQUIRE))
        return 0;
    errno = ENOSPC;
    return 1;
}
static ssize_t full_write(int fd, const void *b, size_t n)
{
    return is_full() ? -1 : ((write_fn)real_write)(fd, b, n);
}
static ssize_t full_pwrite(int fd, const void *b, size_t n, off_t off)
{
    return is_full() ? -1 : ((pwrite_fn)real_pwrite)(fd, b, n, off);
}
static ssize_t full_pwrite64(int fd, const void *b, size_t n, off_t off)
{
    return is_full() ? -1 : ((pwrite_fn)real_pwrite64)(fd, b, n, off);
}

static void set_disk_full(int on)
{
    sqlite3_vfs *v = sqlite3_vfs_find("unix");
    assert_non_null(v);
    if (!real_write) {
        real_write = v->xGetSystemCall(v, "write");
        real_pwrite = v->xGetSystemCall(v, "pwrite");
        real_pwrite64 = v->xGetSystemCall(v, "pwrite64");
        assert_non_null(real_write);
        v->xSetSystemCall(v, "write", (sqlite3_syscall_ptr)full_write);
        if (real_pwrite)
            v->xSetSystemCall(v, "pwrite", (sqlite3_syscall_ptr)full_pwrite);
        if (real_pwrite64)
            v->xSetSystemCall(v, "pwrite64", (sqlite3_syscall_ptr)full_pwrite64);
    }
    __atomic_store_n(&disk_full, on, __ATOMIC_RELEASE);
}

/* SQLITE_FULL is STORE_EFULL; nothing of the failed write is kept, and writes work again once
 * there is room. */
static void t_full(void **st)
{
    fx *f = *st;
    mk_thread(f, &f->a, "thr_1", 1, NULL, NULL);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg_1", 10), 0);
    set_disk_full(1);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg_2", 20), STORE_EFULL);
    assert_int_equal(store_attachment_delete(f->c, &f->a, "atc_none"), STORE_ENOTFOUND);
    store_item it;
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_1", &it), 0); /* reads work */
    store_item_clear(&it);
    set_disk_full(0);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_2", &it), STORE_ENOTFOUND);
    assert_int_equal(add_item(f->c, &f->a, "thr_1", "msg_2", 20), 0);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_1", &it), 0);
    store_item_clear(&it);
}

/* The dispatcher: every job of a batch whose commit finds the disk full completes with
 * STORE_EFULL (not STORE_EIO); reads keep working; later batches succeed once there is room. */
static void t_dispatch_full(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 1);
    djob ok = {.f = f, .idx = 0};
    memcpy(ok.id, "msg_ok", 7);
    assert_int_equal(store_write(s, w_add, on_done, &ok), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(ok.rc, 0);

    set_disk_full(1);
    djob w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (djob){.f = f, .idx = 1 + i};
        snprintf(w[i].id, sizeof w[i].id, "msg_full_%d", i);
        assert_int_equal(store_write(s, w_add, on_done, &w[i]), 0);
    }
    djob r = {.f = f};
    memcpy(r.id, "msg_ok", 7);
    assert_int_equal(store_read(s, r_load, on_read_done, &r), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++)
        assert_int_equal(w[i].rc, STORE_EFULL);
    assert_int_equal(r.rc, 0);

    set_disk_full(0);
    for (int i = 0; i < 3; i++) {
        w[i].done = 0;
        assert_int_equal(store_write(s, w_add, on_done, &w[i]), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 3; i++)
        assert_int_equal(w[i].rc, 0);
    dclose(s, &loop);
    store_item it;
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_ok", &it), 0);
    store_item_clear(&it);
    assert_int_equal(store_item_load(f->c, &f->a, "thr_1", "msg_full_2", &it), 0);
    store_item_clear(&it);
}

/* The copy a store makes of a lost database: exactly one, holding item id. */
static void check_rescued(fx *f, const char *id)
{
    char pat[300];
    snprintf(pat, sizeof pat, "%s.rescued-*", f->path);
    glob_t g;
    assert_int_equal(glob(pat, 0, NULL, &g), 0);
    assert_int_equal(g.gl_pathc, 1);
    char url[320];
    snprintf(url, sizeof url, "sqlite:%s", g.gl_pathv[0]);
    char *err = NULL;
    store_conn *c = store_conn_open(url, 0, &err);
    assert_non_null(c);
    store_item it;
    assert_int_equal(store_item_load(c, &f->a, "thr_1", id, &it), 0);
    store_item_clear(&it);
    store_conn_close(c);
    unlink(g.gl_pathv[0]);
    globfree(&g);
}

/* A database deleted while the store runs: store_check notices, every later write fails with
 * STORE_ELOST without running, reads keep working, and the data is copied next to the path. */
static void t_dispatch_lost(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 1);
    djob ok = {.f = f, .idx = 0};
    memcpy(ok.id, "msg_ok", 7);
    assert_int_equal(store_write(s, w_add, on_done, &ok), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(ok.rc, 0);
    assert_int_equal(store_check(s), 0);

    assert_int_equal(unlink(f->path), 0);
    assert_int_equal(store_check(s), STORE_ELOST);
    assert_int_equal(store_check(s), STORE_ELOST); /* stays lost */
    djob w = {.f = f, .idx = 1};
    memcpy(w.id, "msg_lost", 9);
    assert_int_equal(store_write(s, w_add, on_done, &w), 0);
    djob r = {.f = f};
    memcpy(r.id, "msg_ok", 7);
    assert_int_equal(store_read(s, r_load, on_read_done, &r), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.rc, STORE_ELOST);
    assert_int_equal(r.rc, 0);
    /* the path was not recreated behind the operator's back */
    assert_int_equal(access(f->path, F_OK), -1);
    check_rescued(f, "msg_ok");
    dclose(s, &loop);
}

/* Replaced (another file renamed over the path), noticed by the writer alone: the write that
 * follows fails without anyone calling store_check. */
static void t_dispatch_replaced(void **st)
{
    fx *f = *st;
    uv_loop_t loop;
    store *s = dstore(f, &loop, 1);
    djob ok = {.f = f, .idx = 0};
    memcpy(ok.id, "msg_ok", 7);
    assert_int_equal(store_write(s, w_add, on_done, &ok), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(ok.rc, 0);

    char other[300];
    snprintf(other, sizeof other, "%s.other", f->path);
    FILE *fp = fopen(other, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(rename(other, f->path), 0);
    djob w = {.f = f, .idx = 1};
    memcpy(w.id, "msg_lost", 9);
    assert_int_equal(store_write(s, w_add, on_done, &w), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.rc, STORE_ELOST);
    assert_int_equal(store_check(s), STORE_ELOST);
    check_rescued(f, "msg_ok");
    dclose(s, &loop);

    /* an in-memory store has no file to lose */
    assert_int_equal(uv_loop_init(&loop), 0);
    char *err = NULL;
    s = store_new(&loop, "sqlite::memory:", 1, &err);
    assert_non_null(s);
    assert_int_equal(store_check(s), 0);
    dclose(s, &loop);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(t_migrate),
        T(t_external_and_login),
        T(t_attachment_upload_states),
        T(t_memory),
        T(t_txn),
        T(t_tenants),
        T(t_tokens),
        T(t_thread_roundtrip),
        T(t_threads_paging),
        T(t_threads_25),
        T(t_threads_agent_filter),
        T(t_items_in_order),
        T(t_items_paging),
        T(t_items_26),
        T(t_items_ties),
        T(t_item_save),
        T(t_dup_item),
        T(t_last_item_us),
        T(t_isolation_users),
        T(t_isolation_accounts),
        T(t_attachments),
        T(t_feedback),
        T(t_thread_delete),
        T(t_runs),
        T(t_migrate_runs),
        T(t_dispatch_order),
        T(t_dispatch_batch_rollback),
        T(t_dispatch_read_after_write),
        T(t_dispatch_free_drains),
        T(t_dispatch_memory),
        T(t_full),
        T(t_dispatch_full),
        T(t_dispatch_lost),
        T(t_dispatch_replaced),
        T(t_attachment_reset_uploads),
    };
#undef T
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
