/* The store contract (protocol reference §12 plus tenants and feedback).
 *
 * Two layers:
 *  1. A synchronous API on one connection (store_conn). Every function returns 0 or a negative
 *     error: STORE_ENOTFOUND (absent or not visible to the scope), STORE_ECONFLICT (duplicate
 *     id), STORE_EINVAL, STORE_EIO, STORE_EFULL (disk full). Used by worker threads and by the
 *     admin commands.
 *  2. An async dispatcher (store) that runs jobs off the event loop and completes them on it.
 *     Write jobs run on one writer thread in submission order (so writes for one thread keep
 *     their order), several at a time inside one transaction, each in its own savepoint: a job
 *     whose work returns < 0 is rolled back alone. Read jobs run on reader threads.
 *
 * Scoping: every thread/item/attachment/feedback call takes a store_scope; rows of another
 * account or user are STORE_ENOTFOUND / absent from lists. Ownership of outputs: the caller
 * frees them with the matching *_clear / *_free function. */
#ifndef CK_STORE_H
#define CK_STORE_H
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define STORE_ENOTFOUND (-2001)
#define STORE_ECONFLICT (-2002)
#define STORE_EINVAL (-2003)
#define STORE_EIO (-2004)
/* The disk is full (SQLITE_FULL, or an I/O error caused by ENOSPC): nothing of the job was kept;
 * the same job may succeed once space is freed. */
#define STORE_EFULL (-2005)
/* The database file the store opened is no longer at its path (deleted, or replaced by another
 * file) while the store runs: the async store refuses every write from then on (see
 * store_check). */
#define STORE_ELOST (-2006)

#define STORE_ID_MAX 64

typedef struct store_conn store_conn;
typedef struct store store;

typedef struct store_scope {
    char account_id[STORE_ID_MAX];
    char user_id[STORE_ID_MAX];
} store_scope;

/* ---- tenants ---- */
typedef struct store_account {
    char id[STORE_ID_MAX];
    char *name;
    char *external_id; /* NULL unless set: the host application's id (JWT "account" claim) */
    int64_t created_us;
} store_account;

typedef struct store_user {
    char id[STORE_ID_MAX];
    char account_id[STORE_ID_MAX];
    char *name;
    char *external_id; /* NULL unless set (JWT sub, later) */
    int64_t created_us;
} store_user;

typedef struct store_agent {
    char id[STORE_ID_MAX];
    char account_id[STORE_ID_MAX];
    char *name;
    char *model;        /* "demo", "openai:gpt-4.1-mini", … */
    char *instructions; /* may be NULL */
    char *config_json;  /* agent options as a JSON object text ("{}" when none) */
    int64_t created_us;
} store_agent;

/* Result of resolving a bearer token: who is calling. */
typedef struct store_auth {
    store_scope scope;
    int64_t expires_us; /* 0 = never */
} store_auth;

/* ---- threads ---- */
typedef struct store_thread {
    char id[STORE_ID_MAX];
    char agent_id[STORE_ID_MAX];
    char *title;                 /* NULL = no title */
    char *status_json;           /* ThreadStatus object text, e.g. {"type":"active"} */
    char *allowed_image_domains; /* JSON array text or NULL */
    char *metadata_json;         /* object text, "{}" when empty */
    int64_t created_us;
    int64_t last_item_us;        /* newest item created_us (0 when none); output only */
} store_thread;

/* ---- items ---- */
typedef struct store_item {
    char id[STORE_ID_MAX];
    char thread_id[STORE_ID_MAX];
    int64_t created_us;
    char type[32];  /* "user_message", "assistant_message", … */
    int hidden;     /* hidden_context_item / sdk_hidden_context: stored, never sent */
    char *json;     /* the whole item as compact JSON (the protocol shape) */
} store_item;

typedef struct store_page_req {
    int limit;          /* already defaulted by the caller (>= 1) */
    int desc;           /* 1 = newest first */
    const char *after;  /* cursor id or NULL */
} store_page_req;

typedef struct store_item_page {
    store_item *items;
    size_t n;
    int has_more;
    char after[STORE_ID_MAX]; /* "" when !has_more */
} store_item_page;

typedef struct store_thread_page {
    store_thread *threads;
    size_t n;
    int has_more;
    char after[STORE_ID_MAX];
} store_thread_page;

/* ---- attachments ---- */
typedef struct store_attachment {
    char id[STORE_ID_MAX];
    char thread_id[STORE_ID_MAX]; /* "" = not attached yet */
    char *name;
    char *mime_type;
    int64_t size;
    char *json;        /* the Attachment as sent to clients (no metadata) */
    char *metadata_json; /* server-private, "{}" when none */
    char agent_id[STORE_ID_MAX]; /* "" = none recorded */
    int uploaded;      /* STORE_UPLOAD_*: 0 waiting for bytes, 1 bytes stored, 2 upload running */
    int64_t claimed_us; /* when the running (or last) upload started */
    int64_t created_us;
} store_attachment;
enum { STORE_UPLOAD_NONE = 0, STORE_UPLOAD_DONE = 1, STORE_UPLOAD_RUNNING = 2 };

/* ---- connection (sync) ---- */
/* url: "sqlite:PATH" (":memory:" allowed for tests). Opens and applies migrations when
 * migrate != 0. On error returns NULL and sets *err (malloc'd message). */
store_conn *store_conn_open(const char *url, int migrate, char **err);
void store_conn_close(store_conn *c);
/* Applies pending migrations; returns the schema version reached or < 0. */
int store_migrate(store_conn *c);
int store_schema_version(store_conn *c);
/* Transactions for the sync API (the async writer uses them itself). */
int store_begin(store_conn *c);
int store_commit(store_conn *c);
int store_rollback(store_conn *c);
const char *store_errmsg(store_conn *c);

/* tenants */
int store_account_create(store_conn *c, store_account *a);  /* fills id, created_us if empty */
int store_account_get(store_conn *c, const char *id, store_account *out);
int store_user_create(store_conn *c, store_user *u);
int store_user_get(store_conn *c, const char *id, store_user *out);
int store_user_find_by_name(store_conn *c, const char *account_id, const char *name, store_user *out);
int store_account_find_by_name(store_conn *c, const char *name, store_account *out);
/* The account whose id or external_id is key (a JWT's "account" claim). */
int store_account_find_ref(store_conn *c, const char *key, store_account *out);
/* The user of the account with this external id, created (named name, else the external id)
 * when there is none yet: the users a host application's JWTs name appear on first sight. */
int store_user_ensure_external(store_conn *c, const char *account_id, const char *external_id,
                               const char *name, store_user *out);
int store_agent_create(store_conn *c, store_agent *a);
int store_agent_get(store_conn *c, const char *account_id, const char *id, store_agent *out);
/* All agents of an account, oldest first. */
int store_agents_list(store_conn *c, const char *account_id, store_agent **out, size_t *n);
/* token_hash: lowercase hex SHA-256 of the token. Tokens have a kind (STORE_TOKEN_*): a bearer
 * token is never accepted as a cookie or a login link and the other way round. The functions
 * without _kind are for STORE_TOKEN_API. */
#define STORE_TOKEN_API "api"
#define STORE_TOKEN_SESSION "session"
#define STORE_TOKEN_LOGIN "login"
int store_token_create(store_conn *c, const char *token_hash, const char *user_id, int64_t expires_us);
int store_token_create_kind(store_conn *c, const char *token_hash, const char *user_id,
                            int64_t expires_us, const char *kind);
/* ENOTFOUND when unknown, revoked, expired (now_us) or of another kind. */
int store_token_lookup(store_conn *c, const char *token_hash, int64_t now_us, store_auth *out);
int store_token_lookup_kind(store_conn *c, const char *token_hash, const char *kind,
                            int64_t now_us, store_auth *out);
/* Uses a one-time login token: revokes it and creates a session token (session_hash, expiring
 * at session_expires_us) for its user, whom out names. ENOTFOUND when the login token is
 * unknown, used, revoked or expired. Run it inside a write transaction. */
int store_login_consume(store_conn *c, const char *login_hash, int64_t now_us,
                        const char *session_hash, int64_t session_expires_us, store_auth *out);
int store_token_revoke(store_conn *c, const char *token_hash);

/* threads */
int store_thread_insert(store_conn *c, const store_scope *sc, const store_thread *t);
/* Upserts title/status/allowed_image_domains/metadata of an existing visible thread. */
int store_thread_save(store_conn *c, const store_scope *sc, const store_thread *t);
int store_thread_load(store_conn *c, const store_scope *sc, const char *id, store_thread *out);
/* agent_id NULL = all agents of the user. Ordered by created_us (ties by insertion order). */
int store_threads_list(store_conn *c, const store_scope *sc, const char *agent_id,
                       const store_page_req *pr, store_thread_page *out);
/* Deletes the thread, its items, feedback; detaches nothing else. ENOTFOUND if not visible. */
int store_thread_delete(store_conn *c, const store_scope *sc, const char *id);

/* items (thread must be visible to sc, else ENOTFOUND) */
int store_item_add(store_conn *c, const store_scope *sc, const store_item *it);  /* ECONFLICT on dup id */
int store_item_save(store_conn *c, const store_scope *sc, const store_item *it); /* upsert by id */
int store_item_load(store_conn *c, const store_scope *sc, const char *thread_id, const char *id,
                    store_item *out);
int store_item_delete(store_conn *c, const store_scope *sc, const char *thread_id, const char *id);
/* Includes hidden items. Unknown cursor -> ENOTFOUND. Semantics: protocol reference §10.
 * A thread that is absent or not visible gives an empty page (reference store behaviour). */
int store_items_list(store_conn *c, const store_scope *sc, const char *thread_id,
                     const store_page_req *pr, store_item_page *out);

/* attachments (upsert; owner = sc) */
int store_attachment_save(store_conn *c, const store_scope *sc, const store_attachment *a);
int store_attachment_load(store_conn *c, const store_scope *sc, const char *id, store_attachment *out);
int store_attachment_delete(store_conn *c, const store_scope *sc, const char *id);
/* Unscoped: only for a request that proved its right to the attachment otherwise (a signed
 * preview URL names the id it may read). */
int store_attachment_get(store_conn *c, const char *id, store_attachment *out);
/* Starts the upload of an attachment's bytes: it must be visible to sc and waiting for them
 * (uploaded 0, or 2 with claimed_us before stale_us: an upload that died). Sets uploaded = 2,
 * claimed_us = now_us and returns the row in out. ENOTFOUND when not visible, ECONFLICT when
 * its bytes are stored or another upload runs. */
int store_attachment_claim(store_conn *c, const store_scope *sc, const char *id, int64_t now_us,
                           int64_t stale_us, store_attachment *out);
/* Ends the running upload (uploaded 2) with state STORE_UPLOAD_DONE (json: the attachment as
 * clients see it, NULL keeps it) or STORE_UPLOAD_NONE (failed: may be uploaded again).
 * ENOTFOUND when the attachment is gone or no upload runs. */
int store_attachment_finish(store_conn *c, const store_scope *sc, const char *id, int state,
                            const char *json);
/* Ends every running upload (uploaded 2 → 0), unscoped; *n gets how many. For start-up, when
 * no upload can be running (one server process per database): the uploads a process left
 * running when it died (kill -9, power loss) or stopped before it could release them become
 * uploadable again at once. */
int store_attachments_reset_uploads(store_conn *c, int64_t *n);
/* Deletes up to limit attachments that were never attached to a message and were created
 * before before_us, or whose thread was deleted; *ids (malloc'd, free with free()) gets their
 * ids so the caller can remove the bytes. */
int store_attachments_sweep(store_conn *c, int64_t before_us, size_t limit,
                            char (**ids)[STORE_ID_MAX], size_t *n);

/* feedback: one row per item id; kind "positive" | "negative". Items must belong to the thread. */
int store_feedback_add(store_conn *c, const store_scope *sc, const char *thread_id,
                       const char *const *item_ids, size_t n, const char *kind);
/* Number of feedback rows for an item (tests, metrics). */
int store_feedback_count(store_conn *c, const store_scope *sc, const char *item_id, const char *kind);

/* runs: one row per agent run (a model turn with its tool rounds), for token accounting.
 * Written by the run through the stream pipeline when it ends; never read by a request. */
typedef struct store_run {
    char id[STORE_ID_MAX];        /* filled by store_run_add when empty ("run_…") */
    char thread_id[STORE_ID_MAX];
    char agent_id[STORE_ID_MAX];
    char model[128];              /* the "provider:model" spec the run used */
    char status[16];              /* "completed" | "failed" | "cancelled" */
    int64_t input_tokens;         /* summed over every model call of the run */
    int64_t output_tokens;
    unsigned model_calls;         /* requests sent to the provider (retries and titles included) */
    unsigned tool_calls;
    int64_t started_us, ended_us;
} store_run;
int store_run_add(store_conn *c, const store_scope *sc, store_run *r);
/* Newest first, at most limit rows of an account; thread_id NULL = all threads. *out is
 * malloc'd (free with free()). */
int store_runs_list(store_conn *c, const char *account_id, const char *thread_id, size_t limit,
                    store_run **out, size_t *n);

void store_account_clear(store_account *a);
void store_user_clear(store_user *u);
void store_agent_clear(store_agent *a);
void store_agents_free(store_agent *a, size_t n);
void store_thread_clear(store_thread *t);
void store_item_clear(store_item *it);
void store_attachment_clear(store_attachment *a);
void store_item_page_clear(store_item_page *p);
void store_thread_page_clear(store_thread_page *p);

/* ---- async dispatcher ---- */
/* work runs inside a transaction the dispatcher owns (a write batch, or a read snapshot):
 * it must not call store_begin/commit/rollback. */
typedef int (*store_work_fn)(store_conn *c, void *arg); /* off the loop; return 0 or < 0 */
typedef void (*store_done_fn)(int rc, void *arg);       /* on the loop, with work's result */

/* Opens one writer connection (migrating) and n_readers reader connections. With n_readers 0
 * or "sqlite::memory:" (one database per connection) reads run on the writer. */
store *store_new(uv_loop_t *loop, const char *url, unsigned n_readers, char **err);
int store_write(store *s, store_work_fn work, store_done_fn done, void *arg);
int store_read(store *s, store_work_fn work, store_done_fn done, void *arg);
/* Finishes queued jobs, stops threads, closes connections; done callbacks of finished jobs run
 * before this returns (call from the loop thread, with the loop not running other work, not
 * from inside a done callback). Jobs submitted meanwhile are refused. The caller must run the
 * loop once more afterwards (uv_run): the async handle's close callback frees the memory. */
void store_free(store *s);
/* Jobs queued or running (for graceful shutdown and metrics); a job counts until its done
 * callback has started. Loop thread only. */
unsigned store_pending(store *s);
/* 0, or STORE_ELOST once the database file is no longer the one the store opened: its path
 * names no file (deleted, moved) or another file (replaced). One stat() of the path (a few
 * µs at most); the writer makes the same check before each write batch. Once lost the store
 * stays lost until the process restarts: every write job fails with STORE_ELOST without being
 * run (SQLite would write into the unlinked file, which a restart discards), while reads keep
 * working on the file still open. The first to notice logs it once (level=error), and the
 * writer copies what the store holds to "<path>.rescued-<unix time>" (VACUUM INTO) so a
 * restart need not lose it. Always 0 for "sqlite::memory:". Loop thread. */
int store_check(store *s);

#endif
