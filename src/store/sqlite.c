/* The synchronous store API on one SQLite connection.
 *
 * A connection belongs to one thread at a time (opened with SQLITE_OPEN_NOMUTEX). Every
 * statement is prepared once per connection, on first use, and reset after each use: the
 * read path (thread + a page of items) is the server's hot path.
 *
 * Error mapping: PRIMARY KEY / UNIQUE violations → STORE_ECONFLICT; a FOREIGN KEY violation
 * (e.g. a user for an unknown account) → STORE_ENOTFOUND, since the referenced row is absent;
 * NOT NULL / CHECK → STORE_EINVAL; SQLITE_FULL, or an I/O error whose cause was ENOSPC →
 * STORE_EFULL; anything else → STORE_EIO. store_errmsg has the text. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/internal.h"
#include "store/schema.h"
#include "store/store.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

/* Small on purpose: the whole idle server must fit in a few MB, and the hot pages (thread
 * rows, the items index) are few. Negative = KiB. */
#define CACHE_SIZE_KIB  512 /* small: reads are served from the mmap; this is mostly the writer's dirty pages */
#define MMAP_SIZE       (256LL << 20)
#define BUSY_TIMEOUT_MS 5000

enum {
    S_BEGIN,
    S_BEGIN_READ,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_SP_RELEASE,
    S_SP_ROLLBACK,
    S_ACCT_INSERT,
    S_ACCT_GET,
    S_ACCT_BY_NAME,
    S_USER_INSERT,
    S_USER_GET,
    S_USER_BY_NAME,
    S_AGENT_INSERT,
    S_AGENT_GET,
    S_AGENTS_LIST,
    S_TOKEN_INSERT,
    S_TOKEN_LOOKUP,
    S_TOKEN_REVOKE,
    S_THREAD_INSERT,
    S_THREAD_SAVE,
    S_THREAD_LOAD,
    S_THREAD_CURSOR,
    S_THREADS_ASC,
    S_THREADS_DESC,
    S_THREADS_AGENT_ASC,
    S_THREADS_AGENT_DESC,
    S_THREAD_DELETE,
    S_ITEM_ADD,
    S_ITEM_SAVE,
    S_ITEM_LOAD,
    S_ITEM_DELETE,
    S_ITEM_CURSOR,
    S_ITEMS_ASC,
    S_ITEMS_DESC,
    S_ATT_SAVE,
    S_ATT_LOAD,
    S_ATT_DELETE,
    S_ATT_CLAIM,
    S_ATT_GET,
    S_ATT_FINISH,
    S_ATT_RESET,
    S_ATT_SWEEP,
    S_ATT_ORPHAN,
    S_ACCT_REF,
    S_USER_BY_EXT,
    S_TOKEN_USE,
    S_FB_ADD,
    S_FB_COUNT,
    S_RUN_ADD,
    S_RUNS_LIST,
    S_RUNS_THREAD,
    S_N
};

/* Threads: last_item_us is the last entry of the thread's items index (one b-tree probe). */
#define THREAD_COLS                                                                                \
    "t.id, t.agent_id, t.title, t.status_json, t.allowed_image_domains, t.metadata_json, "         \
    "t.created_us, coalesce((SELECT i.created_us FROM items i WHERE i.thread_id = t.id "           \
    "ORDER BY i.created_us DESC LIMIT 1), 0) "
#define THREADS_PAGE(cmp, agent, dir)                                                              \
    "SELECT " THREAD_COLS "FROM threads t WHERE t.account_id = ?1 AND t.user_id = ?2 " agent       \
    "AND (t.created_us, t.seq) " cmp " (?3, ?4) ORDER BY t.created_us " dir ", t.seq " dir         \
    " LIMIT ?5"
#define ITEM_COLS "id, thread_id, created_us, type, hidden, json "
#define ITEMS_PAGE(cmp, dir)                                                                       \
    "SELECT " ITEM_COLS "FROM items WHERE thread_id = ?1 AND account_id = ?2 AND user_id = ?3 "    \
    "AND (created_us, seq) " cmp " (?4, ?5) ORDER BY created_us " dir ", seq " dir " LIMIT ?6"
/* Item writes go through the thread row so an invisible thread inserts nothing. */
#define ITEM_INSERT                                                                                \
    "INSERT INTO items(id, thread_id, account_id, user_id, created_us, type, hidden, json) "       \
    "SELECT ?4, t.id, t.account_id, t.user_id, ?5, ?6, ?7, ?8 FROM threads t "                     \
    "WHERE t.id = ?1 AND t.account_id = ?2 AND t.user_id = ?3"
#define ACCT_COLS  "id, name, created_us, external_id "
#define USER_COLS  "id, account_id, name, external_id, created_us "
#define AGENT_COLS "id, account_id, name, model, instructions, config_json, created_us "
#define ATT_COLS                                                                                   \
    "id, thread_id, name, mime_type, size, json, metadata_json, uploaded, created_us, agent_id, "   \
    "claimed_us "
#define RUN_COLS                                                                                   \
    "id, thread_id, agent_id, model, status, input_tokens, output_tokens, model_calls, "           \
    "tool_calls, started_us, ended_us "
#define RUNS_LIST(thread)                                                                          \
    "SELECT " RUN_COLS "FROM runs WHERE account_id = ?1 " thread                                   \
    "ORDER BY started_us DESC, seq DESC LIMIT ?2"

static const char *const sql_text[S_N] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_BEGIN_READ] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT sp",
    [S_SP_RELEASE] = "RELEASE sp",
    [S_SP_ROLLBACK] = "ROLLBACK TO sp",
    [S_ACCT_INSERT] =
        "INSERT INTO accounts(id, name, created_us, external_id) VALUES(?1, ?2, ?3, ?4)",
    /* an account's own id wins over another account's external id that happens to equal it */
    [S_ACCT_REF] = "SELECT " ACCT_COLS "FROM accounts WHERE id = ?1 OR external_id = ?1 "
                   "ORDER BY id = ?1 DESC LIMIT 1",
    [S_USER_BY_EXT] = "SELECT " USER_COLS "FROM users WHERE account_id = ?1 AND external_id = ?2",
    [S_ACCT_GET] = "SELECT " ACCT_COLS "FROM accounts WHERE id = ?1",
    [S_ACCT_BY_NAME] =
        "SELECT " ACCT_COLS "FROM accounts WHERE name = ?1 ORDER BY created_us, rowid LIMIT 1",
    [S_USER_INSERT] = "INSERT INTO users(id, account_id, name, external_id, created_us) "
                      "VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_USER_GET] = "SELECT " USER_COLS "FROM users WHERE id = ?1",
    [S_USER_BY_NAME] = "SELECT " USER_COLS "FROM users WHERE account_id = ?1 AND name = ?2 "
                       "ORDER BY created_us, rowid LIMIT 1",
    [S_AGENT_INSERT] = "INSERT INTO agents(id, account_id, name, model, instructions, "
                       "config_json, created_us) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_AGENT_GET] = "SELECT " AGENT_COLS "FROM agents WHERE account_id = ?1 AND id = ?2",
    [S_AGENTS_LIST] =
        "SELECT " AGENT_COLS "FROM agents WHERE account_id = ?1 ORDER BY created_us, rowid",
    [S_TOKEN_INSERT] =
        "INSERT INTO tokens(hash, user_id, created_us, expires_us, kind) VALUES(?1, ?2, ?3, ?4, ?5)",
    [S_TOKEN_LOOKUP] = "SELECT u.account_id, u.id, t.expires_us FROM tokens t "
                       "JOIN users u ON u.id = t.user_id WHERE t.hash = ?1 AND t.kind = ?3 AND "
                       "t.revoked_us IS NULL AND (t.expires_us = 0 OR t.expires_us > ?2)",
    [S_TOKEN_USE] = "UPDATE tokens SET revoked_us = ?2 WHERE hash = ?1 AND kind = 'login' AND "
                    "revoked_us IS NULL AND (expires_us = 0 OR expires_us > ?2)",
    /* coalesce keeps the first revocation time and makes a repeat revoke succeed */
    [S_TOKEN_REVOKE] = "UPDATE tokens SET revoked_us = coalesce(revoked_us, ?2) WHERE hash = ?1",
    [S_THREAD_INSERT] = "INSERT INTO threads(id, account_id, user_id, agent_id, title, "
                        "status_json, allowed_image_domains, metadata_json, created_us) "
                        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [S_THREAD_SAVE] = "UPDATE threads SET title = ?4, status_json = ?5, "
                      "allowed_image_domains = ?6, metadata_json = ?7 "
                      "WHERE id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_THREAD_LOAD] = "SELECT " THREAD_COLS
                      "FROM threads t WHERE t.id = ?1 AND t.account_id = ?2 AND t.user_id = ?3",
    [S_THREAD_CURSOR] =
        "SELECT created_us, seq FROM threads WHERE id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_THREADS_ASC] = THREADS_PAGE(">", "", "ASC"),
    [S_THREADS_DESC] = THREADS_PAGE("<", "", "DESC"),
    [S_THREADS_AGENT_ASC] = THREADS_PAGE(">", "AND t.agent_id = ?6 ", "ASC"),
    [S_THREADS_AGENT_DESC] = THREADS_PAGE("<", "AND t.agent_id = ?6 ", "DESC"),
    [S_THREAD_DELETE] = "DELETE FROM threads WHERE id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_ITEM_ADD] = ITEM_INSERT,
    [S_ITEM_SAVE] = ITEM_INSERT " ON CONFLICT(thread_id, id) DO UPDATE SET "
                                "created_us = excluded.created_us, type = excluded.type, "
                                "hidden = excluded.hidden, json = excluded.json",
    [S_ITEM_LOAD] = "SELECT " ITEM_COLS "FROM items "
                    "WHERE thread_id = ?1 AND id = ?4 AND account_id = ?2 AND user_id = ?3",
    [S_ITEM_DELETE] =
        "DELETE FROM items WHERE thread_id = ?1 AND id = ?4 AND account_id = ?2 AND user_id = ?3",
    [S_ITEM_CURSOR] = "SELECT created_us, seq FROM items "
                      "WHERE thread_id = ?1 AND id = ?4 AND account_id = ?2 AND user_id = ?3",
    [S_ITEMS_ASC] = ITEMS_PAGE(">", "ASC"),
    [S_ITEMS_DESC] = ITEMS_PAGE("<", "DESC"),
    /* The DO UPDATE only applies to the owner's row: another scope's id is a conflict. */
    [S_ATT_SAVE] = "INSERT INTO attachments(id, account_id, user_id, thread_id, name, mime_type, "
                   "size, json, metadata_json, uploaded, created_us, agent_id, claimed_us) "
                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) "
                   "ON CONFLICT(id) DO UPDATE SET thread_id = excluded.thread_id, "
                   "name = excluded.name, mime_type = excluded.mime_type, size = excluded.size, "
                   "json = excluded.json, metadata_json = excluded.metadata_json, "
                   "uploaded = excluded.uploaded, agent_id = excluded.agent_id, "
                   "claimed_us = excluded.claimed_us WHERE attachments.account_id = "
                   "excluded.account_id AND attachments.user_id = excluded.user_id",
    [S_ATT_LOAD] =
        "SELECT " ATT_COLS "FROM attachments WHERE id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_ATT_DELETE] = "DELETE FROM attachments WHERE id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_ATT_GET] = "SELECT " ATT_COLS "FROM attachments WHERE id = ?1",
    [S_ATT_CLAIM] = "UPDATE attachments SET uploaded = 2, claimed_us = ?4 WHERE id = ?1 AND "
                    "account_id = ?2 AND user_id = ?3 AND (uploaded = 0 OR (uploaded = 2 AND "
                    "claimed_us < ?5))",
    [S_ATT_FINISH] = "UPDATE attachments SET uploaded = ?4, json = coalesce(?5, json) WHERE "
                     "id = ?1 AND account_id = ?2 AND user_id = ?3 AND uploaded = 2",
    [S_ATT_RESET] = "UPDATE attachments SET uploaded = 0 WHERE uploaded = 2",
    [S_ATT_SWEEP] = "DELETE FROM attachments WHERE id IN (SELECT id FROM attachments WHERE "
                    "thread_id IS NULL AND created_us < ?1 ORDER BY created_us LIMIT ?2) "
                    "RETURNING id",
    /* a deleted thread's attachments become unattached and due at once */
    [S_ATT_ORPHAN] = "UPDATE attachments SET thread_id = NULL, created_us = 0 WHERE "
                     "thread_id = ?1 AND account_id = ?2 AND user_id = ?3",
    [S_FB_ADD] = "INSERT INTO feedback(account_id, user_id, thread_id, item_id, kind, created_us) "
                 "SELECT i.account_id, i.user_id, i.thread_id, i.id, ?5, ?6 FROM items i "
                 "WHERE i.thread_id = ?1 AND i.account_id = ?2 AND i.user_id = ?3 AND i.id = ?4",
    [S_FB_COUNT] = "SELECT count(*) FROM feedback WHERE item_id = ?1 AND account_id = ?2 AND "
                   "user_id = ?3 AND (?4 IS NULL OR kind = ?4)",
    [S_RUN_ADD] = "INSERT INTO runs(id, account_id, user_id, thread_id, agent_id, model, status, "
                  "input_tokens, output_tokens, model_calls, tool_calls, started_us, ended_us) "
                  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [S_RUNS_LIST] = RUNS_LIST(""),
    [S_RUNS_THREAD] = RUNS_LIST("AND thread_id = ?3 "),
};

struct store_conn {
    sqlite3 *db;
    sqlite3_stmt *st[S_N];
    char err[256];
    void *wal_hook; /* wal_hook_arg, when the dispatcher set one */
    /* the database file's identity at open (store_conn_moved); path NULL for ":memory:" */
    char *path;
    dev_t dev;
    ino_t ino;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    /* Memory statistics take a global mutex on every SQLite allocation, which serialises the
     * reader threads; we never read them. Only possible before SQLite initialises. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_initialize();
}

static void set_err(store_conn *c, const char *msg)
{
    snprintf(c->err, sizeof c->err, "%s", msg);
}

/* Maps an SQLite result code (extended codes are on) to a store error. */
static int fail(store_conn *c, int rc)
{
    set_err(c, sqlite3_errmsg(c->db));
    switch (rc) {
    case SQLITE_CONSTRAINT_PRIMARYKEY:
    case SQLITE_CONSTRAINT_UNIQUE: return STORE_ECONFLICT;
    case SQLITE_CONSTRAINT_FOREIGNKEY: return STORE_ENOTFOUND;
    case SQLITE_CONSTRAINT_NOTNULL:
    case SQLITE_CONSTRAINT_CHECK: return STORE_EINVAL;
    default:
        /* a full disk can also surface as an I/O error (growing the WAL index, a truncate) */
        if ((rc & 0xff) == SQLITE_FULL ||
            ((rc & 0xff) == SQLITE_IOERR && sqlite3_system_errno(c->db) == ENOSPC))
            return STORE_EFULL;
        return STORE_EIO;
    }
}

static int not_found(store_conn *c)
{
    set_err(c, "not found");
    return STORE_ENOTFOUND;
}

static int invalid(store_conn *c, const char *what)
{
    snprintf(c->err, sizeof c->err, "invalid argument: %s", what);
    return STORE_EINVAL;
}

static sqlite3_stmt *get(store_conn *c, int k)
{
    if (c->st[k])
        return c->st[k];
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, sql_text[k], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        fail(c, rc);
        return NULL;
    }
    c->st[k] = st;
    return st;
}

/* Steps a statement that returns no rows we need; always resets it. */
static int run(store_conn *c, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int ret = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : fail(c, rc);
    sqlite3_reset(st);
    return ret;
}

static int run_k(store_conn *c, int k)
{
    sqlite3_stmt *st = get(c, k);
    return st ? run(c, st) : STORE_EIO;
}

/* SQLITE_STATIC: every bound string outlives the step, and statements are reset before the
 * functions return. A NULL pointer binds SQL NULL. */
static void bind_str(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* "" (unset fixed-size id) is stored as NULL. */
static void bind_opt_id(sqlite3_stmt *st, int i, const char *s)
{
    bind_str(st, i, s && s[0] ? s : NULL);
}

static void bind_scope(sqlite3_stmt *st, int i, const store_scope *sc)
{
    bind_str(st, i, sc->account_id);
    bind_str(st, i + 1, sc->user_id);
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *p = sqlite3_column_text(st, i);
    if (!p)
        return NULL;
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* For NOT NULL columns: callers may rely on a string. */
static char *col_str_nn(sqlite3_stmt *st, int i)
{
    char *s = col_str(st, i);
    return s ? s : xstrdup("");
}

static void col_fixed(sqlite3_stmt *st, int i, char *out, size_t cap)
{
    const unsigned char *p = sqlite3_column_text(st, i);
    size_t n = p ? (size_t)sqlite3_column_bytes(st, i) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(out, p, n);
    out[n] = '\0';
}

static int is_id(const char *s)
{
    return s && s[0] && strlen(s) < STORE_ID_MAX;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem, size_t max)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap * 2 : 16;
    if (n > max)
        n = max;
    if (n < need)
        n = need;
    void *q = realloc(p, n * elem);
    if (!q)
        log_oom();
    *cap = n;
    return q;
}

/* Steps a bound page query that asks for limit + 1 rows: the extra row only answers has_more
 * (reference §10). Rows are elem-sized structs whose first member is the id (char[]), so
 * `after` is the id of the last row kept. On error the rows read so far stay in *rows for the
 * caller's page clear. */
typedef void (*row_fn)(sqlite3_stmt *st, void *row);

static int fetch_page(store_conn *c, sqlite3_stmt *st, int limit, size_t elem, row_fn read,
                      void **rows, size_t *n, int *has_more, char after[STORE_ID_MAX])
{
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == (size_t)limit) {
            *has_more = 1;
            break;
        }
        *rows = grow(*rows, &cap, *n + 1, elem, (size_t)limit);
        void *row = (char *)*rows + elem * (*n)++;
        memset(row, 0, elem);
        read(st, row);
    }
    int ret = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : fail(c, rc);
    sqlite3_reset(st);
    if (!ret && *has_more)
        memcpy(after, (char *)*rows + elem * (*n - 1), STORE_ID_MAX);
    return ret;
}

/* ---- connection ---- */

static int exec(store_conn *c, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK)
        return 0;
    set_err(c, msg ? msg : sqlite3_errstr(rc));
    sqlite3_free(msg);
    return STORE_EIO;
}

static char *open_error(const char *path, const char *msg)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "sqlite %s: %s", path, msg);
    return xstrdup(tmp);
}

static const char *url_path(const char *url)
{
    if (!url || strncmp(url, "sqlite:", 7) != 0 || !url[7])
        return NULL;
    return url + 7;
}

int store_url_is_memory(const char *url)
{
    const char *p = url_path(url);
    return p && strcmp(p, ":memory:") == 0;
}

store_conn *store_conn_open(const char *url, int migrate, char **err)
{
    const char *path = url_path(url);
    store_conn *c = NULL;
    if (err)
        *err = NULL;
    if (!path) {
        if (err)
            *err = xstrdup("unsupported database url (want sqlite:PATH or sqlite::memory:)");
        return NULL;
    }
    pthread_once(&global_once, global_init);
    c = xcalloc(1, sizeof *c);
    int rc = sqlite3_open_v2(
        path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_err(c, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    struct stat sb; /* SQLite has opened (or created) the file: remember which one it is */
    if (!store_url_is_memory(url) && stat(path, &sb) == 0) {
        c->path = xstrdup(path);
        c->dev = sb.st_dev;
        c->ino = sb.st_ino;
    }
    /* WAL: readers never block the writer; NORMAL is durable across process crashes and only
     * loses the last commits on power loss, which is the usual server trade-off. */
    if (exec(c, "PRAGMA journal_mode=WAL") < 0 || exec(c, "PRAGMA synchronous=NORMAL") < 0 ||
        exec(c, "PRAGMA foreign_keys=ON") < 0)
        goto fail;
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size=-%d", CACHE_SIZE_KIB);
    if (exec(c, pragma) < 0)
        goto fail;
    /* reads through the page cache mapping instead of a pread per page */
    snprintf(pragma, sizeof pragma, "PRAGMA mmap_size=%lld", (long long)MMAP_SIZE);
    if (!store_url_is_memory(url) && exec(c, pragma) < 0)
        goto fail;
    if (migrate && store_migrate(c) < 0)
        goto fail;
    return c;

fail:
    if (err)
        *err = open_error(path, c->err[0] ? c->err : "cannot open");
    store_conn_close(c);
    return NULL;
}

void store_conn_close(store_conn *c)
{
    if (!c)
        return;
    for (int k = 0; k < S_N; k++)
        sqlite3_finalize(c->st[k]);
    sqlite3_close(c->db);
    free(c->wal_hook);
    free(c->path);
    free(c);
}

const char *store_errmsg(store_conn *c)
{
    return c ? c->err : "no connection";
}

/* ---- migrations ---- */

int store_schema_version(store_conn *c)
{
    sqlite3_stmt *st = NULL;
    int ver = 0, rc;
    rc = sqlite3_prepare_v2(c->db,
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'schema_migrations'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        goto fail;
    int have = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    st = NULL;
    if (!have)
        return 0;
    rc = sqlite3_prepare_v2(c->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", -1,
                            &st, NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        goto fail;
    ver = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return ver;

fail:
    set_err(c, sqlite3_errmsg(c->db));
    sqlite3_finalize(st);
    return STORE_EIO;
}

static int record_version(store_conn *c, int v)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        c->db, "INSERT INTO schema_migrations(version, applied_at) VALUES(?1, ?2)", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int(st, 1, v);
        sqlite3_bind_int64(st, 2, ts_now_us());
        rc = sqlite3_step(st);
    }
    int ret = (rc == SQLITE_DONE) ? 0 : fail(c, rc);
    sqlite3_finalize(st);
    return ret;
}

int store_migrate(store_conn *c)
{
    int cur, rc;
    if (exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations("
                "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)") < 0)
        return STORE_EIO;
    for (int v = 1; v <= STORE_SCHEMA_VERSION; v++) {
        /* IMMEDIATE, then re-read the version: another process may be migrating too. */
        if (exec(c, "BEGIN IMMEDIATE") < 0)
            return STORE_EIO;
        cur = store_schema_version(c);
        if (cur < 0) {
            rc = cur;
            goto fail;
        }
        if (cur >= v) {
            if ((rc = exec(c, "COMMIT")) < 0)
                goto fail;
            continue;
        }
        if ((rc = exec(c, store_schema_steps[v - 1])) < 0 || (rc = record_version(c, v)) < 0 ||
            (rc = exec(c, "COMMIT")) < 0)
            goto fail;
        LOGI(NULL, "store migrated", "version=%d", v);
    }
    cur = store_schema_version(c);
    if (cur > STORE_SCHEMA_VERSION) {
        /* Written by a newer build: our statements may not match its schema. */
        snprintf(c->err, sizeof c->err,
                 "database schema version %d is newer than this build supports (%d)", cur,
                 STORE_SCHEMA_VERSION);
        return STORE_EIO;
    }
    return cur;

fail:
    if (!sqlite3_get_autocommit(c->db)) {
        char keep[sizeof c->err];
        memcpy(keep, c->err, sizeof keep); /* the rollback must not hide the real error */
        exec(c, "ROLLBACK");
        memcpy(c->err, keep, sizeof keep);
    }
    return rc;
}

/* ---- transactions ---- */

/* IMMEDIATE takes the write lock up front: a deferred transaction that later writes can fail
 * with SQLITE_BUSY without waiting (WAL cannot upgrade a stale snapshot). */
int store_begin(store_conn *c)
{
    return run_k(c, S_BEGIN);
}

int store_commit(store_conn *c)
{
    return run_k(c, S_COMMIT);
}

int store_rollback(store_conn *c)
{
    return run_k(c, S_ROLLBACK);
}

int store_begin_read(store_conn *c)
{
    return run_k(c, S_BEGIN_READ);
}

int store_savepoint(store_conn *c)
{
    return run_k(c, S_SAVEPOINT);
}

int store_savepoint_release(store_conn *c)
{
    return run_k(c, S_SP_RELEASE);
}

int store_savepoint_rollback(store_conn *c)
{
    int rc = run_k(c, S_SP_ROLLBACK);
    int rc2 = run_k(c, S_SP_RELEASE);
    return rc ? rc : rc2;
}

int store_in_txn(store_conn *c)
{
    return !sqlite3_get_autocommit(c->db);
}

/* ---- tenants ---- */

static void read_account(sqlite3_stmt *st, store_account *a)
{
    col_fixed(st, 0, a->id, sizeof a->id);
    a->name = col_str_nn(st, 1);
    a->created_us = sqlite3_column_int64(st, 2);
    a->external_id = col_str(st, 3);
}

static void read_user(sqlite3_stmt *st, store_user *u)
{
    col_fixed(st, 0, u->id, sizeof u->id);
    col_fixed(st, 1, u->account_id, sizeof u->account_id);
    u->name = col_str_nn(st, 2);
    u->external_id = col_str(st, 3);
    u->created_us = sqlite3_column_int64(st, 4);
}

static void read_agent(sqlite3_stmt *st, store_agent *a)
{
    col_fixed(st, 0, a->id, sizeof a->id);
    col_fixed(st, 1, a->account_id, sizeof a->account_id);
    a->name = col_str_nn(st, 2);
    a->model = col_str_nn(st, 3);
    a->instructions = col_str(st, 4);
    a->config_json = col_str_nn(st, 5);
    a->created_us = sqlite3_column_int64(st, 6);
}

/* Steps a statement expected to return at most one row; reader fills out when there is one. */
typedef void (*row_reader)(sqlite3_stmt *st, void *out);

static int one_row(store_conn *c, sqlite3_stmt *st, row_reader rd, void *out)
{
    int rc = sqlite3_step(st);
    int ret;
    if (rc == SQLITE_ROW) {
        rd(st, out);
        ret = 0;
    } else if (rc == SQLITE_DONE) {
        ret = not_found(c);
    } else {
        ret = fail(c, rc);
    }
    sqlite3_reset(st);
    return ret;
}

/* Runs a write that must touch a row: none touched means absent or not visible. */
static int run_changed(store_conn *c, sqlite3_stmt *st)
{
    int rc = run(c, st);
    if (rc == 0 && sqlite3_changes(c->db) == 0)
        rc = not_found(c);
    return rc;
}

/* The row of a statement whose only parameter is one text key. */
static int one_by_key(store_conn *c, int k, const char *key, row_reader rd, void *out,
                      size_t outsize)
{
    memset(out, 0, outsize);
    if (!key)
        return invalid(c, "key");
    sqlite3_stmt *st = get(c, k);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, key);
    return one_row(c, st, rd, out);
}

static void rd_account(sqlite3_stmt *st, void *out)
{
    read_account(st, out);
}

static void rd_user(sqlite3_stmt *st, void *out)
{
    read_user(st, out);
}

static void rd_agent(sqlite3_stmt *st, void *out)
{
    read_agent(st, out);
}

static void fill_new(char *id, const char *prefix, int64_t *created_us)
{
    if (!id[0]) {
        char tmp[ID_MAX];
        id_new(prefix, tmp);
        memcpy(id, tmp, sizeof tmp);
    }
    if (!*created_us)
        *created_us = ts_now_us();
}

int store_account_create(store_conn *c, store_account *a)
{
    if (!a || !a->name)
        return invalid(c, "account name");
    sqlite3_stmt *st = get(c, S_ACCT_INSERT);
    if (!st)
        return STORE_EIO;
    fill_new(a->id, "acct", &a->created_us);
    bind_str(st, 1, a->id);
    bind_str(st, 2, a->name);
    sqlite3_bind_int64(st, 3, a->created_us);
    bind_opt_id(st, 4, a->external_id);
    return run(c, st);
}

int store_account_get(store_conn *c, const char *id, store_account *out)
{
    return one_by_key(c, S_ACCT_GET, id, rd_account, out, sizeof *out);
}

int store_account_find_by_name(store_conn *c, const char *name, store_account *out)
{
    return one_by_key(c, S_ACCT_BY_NAME, name, rd_account, out, sizeof *out);
}

int store_account_find_ref(store_conn *c, const char *key, store_account *out)
{
    return one_by_key(c, S_ACCT_REF, key, rd_account, out, sizeof *out);
}

int store_user_create(store_conn *c, store_user *u)
{
    if (!u || !u->name || !is_id(u->account_id))
        return invalid(c, "user name / account_id");
    sqlite3_stmt *st = get(c, S_USER_INSERT);
    if (!st)
        return STORE_EIO;
    fill_new(u->id, "usr", &u->created_us);
    bind_str(st, 1, u->id);
    bind_str(st, 2, u->account_id);
    bind_str(st, 3, u->name);
    bind_str(st, 4, u->external_id);
    sqlite3_bind_int64(st, 5, u->created_us);
    return run(c, st);
}

int store_user_get(store_conn *c, const char *id, store_user *out)
{
    return one_by_key(c, S_USER_GET, id, rd_user, out, sizeof *out);
}

int store_user_find_by_name(store_conn *c, const char *account_id, const char *name,
                            store_user *out)
{
    memset(out, 0, sizeof *out);
    if (!account_id || !name)
        return invalid(c, "account_id / name");
    sqlite3_stmt *st = get(c, S_USER_BY_NAME);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, account_id);
    bind_str(st, 2, name);
    return one_row(c, st, rd_user, out);
}

int store_user_ensure_external(store_conn *c, const char *account_id, const char *external_id,
                               const char *name, store_user *out)
{
    memset(out, 0, sizeof *out);
    if (!is_id(account_id) || !external_id || !external_id[0])
        return invalid(c, "account_id / external_id");
    sqlite3_stmt *st = get(c, S_USER_BY_EXT);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, account_id);
    bind_str(st, 2, external_id);
    int rc = one_row(c, st, rd_user, out);
    if (rc != STORE_ENOTFOUND)
        return rc;
    snprintf(out->account_id, sizeof out->account_id, "%s", account_id);
    out->name = xstrdup(name && name[0] ? name : external_id);
    out->external_id = xstrdup(external_id);
    rc = store_user_create(c, out);
    if (rc)
        store_user_clear(out);
    return rc;
}

int store_agent_create(store_conn *c, store_agent *a)
{
    if (!a || !a->name || !a->model || !is_id(a->account_id))
        return invalid(c, "agent name / model / account_id");
    sqlite3_stmt *st = get(c, S_AGENT_INSERT);
    if (!st)
        return STORE_EIO;
    fill_new(a->id, "agt", &a->created_us);
    bind_str(st, 1, a->id);
    bind_str(st, 2, a->account_id);
    bind_str(st, 3, a->name);
    bind_str(st, 4, a->model);
    bind_str(st, 5, a->instructions);
    bind_str(st, 6, a->config_json ? a->config_json : "{}");
    sqlite3_bind_int64(st, 7, a->created_us);
    return run(c, st);
}

int store_agent_get(store_conn *c, const char *account_id, const char *id, store_agent *out)
{
    memset(out, 0, sizeof *out);
    if (!account_id || !id)
        return invalid(c, "account_id / id");
    sqlite3_stmt *st = get(c, S_AGENT_GET);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, account_id);
    bind_str(st, 2, id);
    return one_row(c, st, rd_agent, out);
}

int store_agents_list(store_conn *c, const char *account_id, store_agent **out, size_t *n)
{
    store_agent *v = NULL;
    size_t len = 0, cap = 0;
    int rc, ret = 0;
    *out = NULL;
    *n = 0;
    if (!account_id)
        return invalid(c, "account_id");
    sqlite3_stmt *st = get(c, S_AGENTS_LIST);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, account_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        v = grow(v, &cap, len + 1, sizeof *v, SIZE_MAX / sizeof *v);
        memset(&v[len], 0, sizeof *v);
        read_agent(st, &v[len++]);
    }
    if (rc != SQLITE_DONE) {
        ret = fail(c, rc);
        store_agents_free(v, len);
        v = NULL;
        len = 0;
    }
    sqlite3_reset(st);
    *out = v;
    *n = len;
    return ret;
}

/* ---- tokens ---- */

int store_token_create(store_conn *c, const char *token_hash, const char *user_id,
                       int64_t expires_us)
{
    return store_token_create_kind(c, token_hash, user_id, expires_us, STORE_TOKEN_API);
}

int store_token_create_kind(store_conn *c, const char *token_hash, const char *user_id,
                            int64_t expires_us, const char *kind)
{
    if (!token_hash || !token_hash[0] || !user_id || !kind)
        return invalid(c, "token hash / user_id / kind");
    sqlite3_stmt *st = get(c, S_TOKEN_INSERT);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, token_hash);
    bind_str(st, 2, user_id);
    sqlite3_bind_int64(st, 3, ts_now_us());
    sqlite3_bind_int64(st, 4, expires_us);
    bind_str(st, 5, kind);
    return run(c, st);
}

static void rd_auth(sqlite3_stmt *st, void *out)
{
    store_auth *a = out;
    col_fixed(st, 0, a->scope.account_id, sizeof a->scope.account_id);
    col_fixed(st, 1, a->scope.user_id, sizeof a->scope.user_id);
    a->expires_us = sqlite3_column_int64(st, 2);
}

int store_token_lookup(store_conn *c, const char *token_hash, int64_t now_us, store_auth *out)
{
    return store_token_lookup_kind(c, token_hash, STORE_TOKEN_API, now_us, out);
}

int store_token_lookup_kind(store_conn *c, const char *token_hash, const char *kind,
                            int64_t now_us, store_auth *out)
{
    memset(out, 0, sizeof *out);
    if (!token_hash || !kind)
        return invalid(c, "token hash / kind");
    sqlite3_stmt *st = get(c, S_TOKEN_LOOKUP);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, token_hash);
    sqlite3_bind_int64(st, 2, now_us);
    bind_str(st, 3, kind);
    return one_row(c, st, rd_auth, out);
}

int store_login_consume(store_conn *c, const char *login_hash, int64_t now_us,
                        const char *session_hash, int64_t session_expires_us, store_auth *out)
{
    int rc = store_token_lookup_kind(c, login_hash, STORE_TOKEN_LOGIN, now_us, out);
    if (rc)
        return rc;
    sqlite3_stmt *st = get(c, S_TOKEN_USE);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, login_hash);
    sqlite3_bind_int64(st, 2, now_us);
    if ((rc = run_changed(c, st)))
        return rc;
    return store_token_create_kind(c, session_hash, out->scope.user_id, session_expires_us,
                                   STORE_TOKEN_SESSION);
}

int store_token_revoke(store_conn *c, const char *token_hash)
{
    if (!token_hash)
        return invalid(c, "token hash");
    sqlite3_stmt *st = get(c, S_TOKEN_REVOKE);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, token_hash);
    sqlite3_bind_int64(st, 2, ts_now_us());
    return run_changed(c, st);
}

/* ---- threads ---- */

static void read_thread(sqlite3_stmt *st, store_thread *t)
{
    col_fixed(st, 0, t->id, sizeof t->id);
    col_fixed(st, 1, t->agent_id, sizeof t->agent_id);
    t->title = col_str(st, 2);
    t->status_json = col_str_nn(st, 3);
    t->allowed_image_domains = col_str(st, 4);
    t->metadata_json = col_str_nn(st, 5);
    t->created_us = sqlite3_column_int64(st, 6);
    t->last_item_us = sqlite3_column_int64(st, 7);
}

static void row_thread(sqlite3_stmt *st, void *row) { read_thread(st, row); }

static void rd_thread(sqlite3_stmt *st, void *out)
{
    read_thread(st, out);
}

static void bind_thread_fields(sqlite3_stmt *st, int i, const store_thread *t)
{
    bind_str(st, i, t->title);
    bind_str(st, i + 1, t->status_json ? t->status_json : "{\"type\":\"active\"}");
    bind_str(st, i + 2, t->allowed_image_domains);
    bind_str(st, i + 3, t->metadata_json ? t->metadata_json : "{}");
}

int store_thread_insert(store_conn *c, const store_scope *sc, const store_thread *t)
{
    if (!sc || !t || !t->id[0] || !t->agent_id[0])
        return invalid(c, "thread id / agent_id");
    sqlite3_stmt *st = get(c, S_THREAD_INSERT);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, t->id);
    bind_scope(st, 2, sc);
    bind_str(st, 4, t->agent_id);
    bind_thread_fields(st, 5, t);
    sqlite3_bind_int64(st, 9, t->created_us);
    return run(c, st);
}

int store_thread_save(store_conn *c, const store_scope *sc, const store_thread *t)
{
    if (!sc || !t)
        return invalid(c, "thread");
    sqlite3_stmt *st = get(c, S_THREAD_SAVE);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, t->id);
    bind_scope(st, 2, sc);
    bind_thread_fields(st, 4, t);
    return run_changed(c, st);
}

/* The statement k, whose parameters are (id, account, user), prepared and bound: the scoped
 * single-row operations on threads and attachments. */
static int scoped_id(store_conn *c, int k, const store_scope *sc, const char *id, const char *what,
                     sqlite3_stmt **st)
{
    if (!sc || !id)
        return invalid(c, what);
    *st = get(c, k);
    if (!*st)
        return STORE_EIO;
    bind_str(*st, 1, id);
    bind_scope(*st, 2, sc);
    return 0;
}

int store_thread_load(store_conn *c, const store_scope *sc, const char *id, store_thread *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = scoped_id(c, S_THREAD_LOAD, sc, id, "thread id", &st);
    return rc ? rc : one_row(c, st, rd_thread, out);
}

int store_thread_delete(store_conn *c, const store_scope *sc, const char *id)
{
    sqlite3_stmt *st;
    int ret = scoped_id(c, S_THREAD_DELETE, sc, id, "thread id", &st);
    if (ret)
        return ret;
    /* items and feedback go with it: ON DELETE CASCADE */
    if ((ret = run_changed(c, st)))
        return ret;
    /* its attachments are swept (bytes and rows) by store_attachments_sweep */
    scoped_id(c, S_ATT_ORPHAN, sc, id, "thread id", &st);
    return run(c, st);
}

/* Position (created_us, seq) of the cursor row, scoped like the list it pages. */
static int cursor_pos(store_conn *c, int k, const char *key, const store_scope *sc, const char *id,
                      int64_t *ts, int64_t *seq)
{
    sqlite3_stmt *st = get(c, k);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, key);
    bind_scope(st, 2, sc);
    if (k == S_ITEM_CURSOR)
        bind_str(st, 4, id);
    int rc = sqlite3_step(st), ret = 0;
    if (rc == SQLITE_ROW) {
        *ts = sqlite3_column_int64(st, 0);
        *seq = sqlite3_column_int64(st, 1);
    } else if (rc == SQLITE_DONE) {
        ret = not_found(c);
    } else {
        ret = fail(c, rc);
    }
    sqlite3_reset(st);
    return ret;
}

/* Start position for a page: before everything (asc) or after everything (desc). */
static void page_start(const store_page_req *pr, int64_t *ts, int64_t *seq)
{
    *ts = pr->desc ? INT64_MAX : INT64_MIN;
    *seq = *ts;
}

int store_threads_list(store_conn *c, const store_scope *sc, const char *agent_id,
                       const store_page_req *pr, store_thread_page *out)
{
    int64_t ts, seq;
    int ret;
    memset(out, 0, sizeof *out);
    if (!sc || !pr || pr->limit < 1)
        return invalid(c, "page request");
    page_start(pr, &ts, &seq);
    if (pr->after && pr->after[0] &&
        (ret = cursor_pos(c, S_THREAD_CURSOR, pr->after, sc, NULL, &ts, &seq)) < 0)
        return ret;
    int k = agent_id ? (pr->desc ? S_THREADS_AGENT_DESC : S_THREADS_AGENT_ASC)
                     : (pr->desc ? S_THREADS_DESC : S_THREADS_ASC);
    sqlite3_stmt *st = get(c, k);
    if (!st)
        return STORE_EIO;
    bind_scope(st, 1, sc);
    sqlite3_bind_int64(st, 3, ts);
    sqlite3_bind_int64(st, 4, seq);
    sqlite3_bind_int64(st, 5, (int64_t)pr->limit + 1); /* the extra row answers has_more */
    if (agent_id)
        bind_str(st, 6, agent_id);
    void *rows = NULL;
    ret = fetch_page(c, st, pr->limit, sizeof(store_thread), row_thread, &rows, &out->n,
                     &out->has_more, out->after);
    out->threads = rows;
    if (ret < 0)
        store_thread_page_clear(out);
    return ret;
}

/* ---- items ---- */

static void read_item(sqlite3_stmt *st, store_item *it)
{
    col_fixed(st, 0, it->id, sizeof it->id);
    col_fixed(st, 1, it->thread_id, sizeof it->thread_id);
    it->created_us = sqlite3_column_int64(st, 2);
    col_fixed(st, 3, it->type, sizeof it->type);
    it->hidden = sqlite3_column_int(st, 4);
    it->json = col_str_nn(st, 5);
}

static void row_item(sqlite3_stmt *st, void *row) { read_item(st, row); }

static void rd_item(sqlite3_stmt *st, void *out)
{
    read_item(st, out);
}

static int item_write(store_conn *c, int k, const store_scope *sc, const store_item *it)
{
    if (!sc || !it || !it->id[0] || !it->type[0] || !it->json)
        return invalid(c, "item id / type / json");
    sqlite3_stmt *st = get(c, k);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, it->thread_id);
    bind_scope(st, 2, sc);
    bind_str(st, 4, it->id);
    sqlite3_bind_int64(st, 5, it->created_us);
    bind_str(st, 6, it->type);
    sqlite3_bind_int(st, 7, it->hidden ? 1 : 0);
    bind_str(st, 8, it->json);
    /* nothing inserted or updated: the thread is absent or not visible */
    return run_changed(c, st);
}

int store_item_add(store_conn *c, const store_scope *sc, const store_item *it)
{
    return item_write(c, S_ITEM_ADD, sc, it);
}

int store_item_save(store_conn *c, const store_scope *sc, const store_item *it)
{
    return item_write(c, S_ITEM_SAVE, sc, it);
}

int store_item_load(store_conn *c, const store_scope *sc, const char *thread_id, const char *id,
                    store_item *out)
{
    memset(out, 0, sizeof *out);
    if (!sc || !thread_id || !id)
        return invalid(c, "thread_id / id");
    sqlite3_stmt *st = get(c, S_ITEM_LOAD);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, thread_id);
    bind_scope(st, 2, sc);
    bind_str(st, 4, id);
    return one_row(c, st, rd_item, out);
}

int store_item_delete(store_conn *c, const store_scope *sc, const char *thread_id, const char *id)
{
    if (!sc || !thread_id || !id)
        return invalid(c, "thread_id / id");
    sqlite3_stmt *st = get(c, S_ITEM_DELETE);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, thread_id);
    bind_scope(st, 2, sc);
    bind_str(st, 4, id);
    return run_changed(c, st);
}

/* Another scope's thread simply has no items here (empty page), as in the reference store;
 * callers that must distinguish load the thread first. */
int store_items_list(store_conn *c, const store_scope *sc, const char *thread_id,
                     const store_page_req *pr, store_item_page *out)
{
    int64_t ts, seq;
    int ret;
    memset(out, 0, sizeof *out);
    if (!sc || !thread_id || !pr || pr->limit < 1)
        return invalid(c, "page request");
    page_start(pr, &ts, &seq);
    if (pr->after && pr->after[0] &&
        (ret = cursor_pos(c, S_ITEM_CURSOR, thread_id, sc, pr->after, &ts, &seq)) < 0)
        return ret;
    sqlite3_stmt *st = get(c, pr->desc ? S_ITEMS_DESC : S_ITEMS_ASC);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, thread_id);
    bind_scope(st, 2, sc);
    sqlite3_bind_int64(st, 4, ts);
    sqlite3_bind_int64(st, 5, seq);
    sqlite3_bind_int64(st, 6, (int64_t)pr->limit + 1); /* the extra row answers has_more */
    void *rows = NULL;
    ret = fetch_page(c, st, pr->limit, sizeof(store_item), row_item, &rows, &out->n,
                     &out->has_more, out->after);
    out->items = rows;
    if (ret < 0)
        store_item_page_clear(out);
    return ret;
}

/* ---- attachments ---- */

static void read_attachment(sqlite3_stmt *st, store_attachment *a)
{
    col_fixed(st, 0, a->id, sizeof a->id);
    col_fixed(st, 1, a->thread_id, sizeof a->thread_id);
    a->name = col_str_nn(st, 2);
    a->mime_type = col_str_nn(st, 3);
    a->size = sqlite3_column_int64(st, 4);
    a->json = col_str_nn(st, 5);
    a->metadata_json = col_str_nn(st, 6);
    a->uploaded = sqlite3_column_int(st, 7);
    a->created_us = sqlite3_column_int64(st, 8);
    col_fixed(st, 9, a->agent_id, sizeof a->agent_id);
    a->claimed_us = sqlite3_column_int64(st, 10);
}

static void rd_attachment(sqlite3_stmt *st, void *out)
{
    read_attachment(st, out);
}

/* The id of another scope's attachment cannot be reused: STORE_ECONFLICT. */
int store_attachment_save(store_conn *c, const store_scope *sc, const store_attachment *a)
{
    if (!sc || !a || !a->id[0] || !a->name || !a->mime_type || !a->json)
        return invalid(c, "attachment id / name / mime_type / json");
    sqlite3_stmt *st = get(c, S_ATT_SAVE);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, a->id);
    bind_scope(st, 2, sc);
    bind_opt_id(st, 4, a->thread_id);
    bind_str(st, 5, a->name);
    bind_str(st, 6, a->mime_type);
    sqlite3_bind_int64(st, 7, a->size);
    bind_str(st, 8, a->json);
    bind_str(st, 9, a->metadata_json ? a->metadata_json : "{}");
    sqlite3_bind_int(st, 10, a->uploaded);
    sqlite3_bind_int64(st, 11, a->created_us ? a->created_us : ts_now_us());
    bind_opt_id(st, 12, a->agent_id);
    sqlite3_bind_int64(st, 13, a->claimed_us);
    int rc = run(c, st);
    if (rc == 0 && sqlite3_changes(c->db) == 0) {
        set_err(c, "attachment id belongs to another user");
        rc = STORE_ECONFLICT;
    }
    return rc;
}

int store_attachment_load(store_conn *c, const store_scope *sc, const char *id,
                          store_attachment *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = scoped_id(c, S_ATT_LOAD, sc, id, "attachment id", &st);
    return rc ? rc : one_row(c, st, rd_attachment, out);
}

int store_attachment_delete(store_conn *c, const store_scope *sc, const char *id)
{
    sqlite3_stmt *st;
    int ret = scoped_id(c, S_ATT_DELETE, sc, id, "attachment id", &st);
    if (ret)
        return ret;
    return run_changed(c, st);
}

int store_attachment_get(store_conn *c, const char *id, store_attachment *out)
{
    return one_by_key(c, S_ATT_GET, id, rd_attachment, out, sizeof *out);
}

int store_attachment_claim(store_conn *c, const store_scope *sc, const char *id, int64_t now_us,
                           int64_t stale_us, store_attachment *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st;
    int rc = scoped_id(c, S_ATT_CLAIM, sc, id, "attachment id", &st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st, 4, now_us);
    sqlite3_bind_int64(st, 5, stale_us);
    if ((rc = run(c, st)))
        return rc;
    int changed = sqlite3_changes(c->db);
    if ((rc = store_attachment_load(c, sc, id, out)))
        return rc;
    if (!changed) {
        set_err(c, "the attachment's bytes are stored or being uploaded");
        return STORE_ECONFLICT;
    }
    return 0;
}

int store_attachment_finish(store_conn *c, const store_scope *sc, const char *id, int state,
                            const char *json)
{
    if (state != STORE_UPLOAD_DONE && state != STORE_UPLOAD_NONE)
        return invalid(c, "upload state");
    sqlite3_stmt *st;
    int rc = scoped_id(c, S_ATT_FINISH, sc, id, "attachment id", &st);
    if (rc)
        return rc;
    sqlite3_bind_int(st, 4, state);
    bind_str(st, 5, json);
    return run_changed(c, st);
}

/* A scan of the table (no index on uploaded): it runs once, at start-up. */
int store_attachments_reset_uploads(store_conn *c, int64_t *n)
{
    *n = 0;
    sqlite3_stmt *st = get(c, S_ATT_RESET);
    if (!st)
        return STORE_EIO;
    int rc = run(c, st);
    if (!rc)
        *n = sqlite3_changes(c->db);
    return rc;
}

int store_attachments_sweep(store_conn *c, int64_t before_us, size_t limit,
                            char (**ids)[STORE_ID_MAX], size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!limit)
        return 0;
    sqlite3_stmt *st = get(c, S_ATT_SWEEP);
    if (!st)
        return STORE_EIO;
    sqlite3_bind_int64(st, 1, before_us);
    sqlite3_bind_int64(st, 2, limit > INT32_MAX ? INT32_MAX : (int64_t)limit);
    char(*v)[STORE_ID_MAX] = NULL;
    size_t len = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        v = grow(v, &cap, len + 1, sizeof *v, SIZE_MAX / sizeof *v);
        col_fixed(st, 0, v[len++], STORE_ID_MAX);
    }
    int ret = rc == SQLITE_DONE ? 0 : fail(c, rc);
    sqlite3_reset(st);
    if (ret) {
        free(v);
        return ret;
    }
    *ids = v;
    *n = len;
    return 0;
}

/* ---- feedback ---- */

/* All or nothing (own savepoint): an item that is not in the visible thread → ENOTFOUND and
 * no row is kept. */
int store_feedback_add(store_conn *c, const store_scope *sc, const char *thread_id,
                       const char *const *item_ids, size_t n, const char *kind)
{
    int rc;
    if (!sc || !thread_id || (n && !item_ids) || !kind ||
        (strcmp(kind, "positive") != 0 && strcmp(kind, "negative") != 0))
        return invalid(c, "feedback thread_id / kind");
    sqlite3_stmt *st = get(c, S_FB_ADD);
    if (!st)
        return STORE_EIO;
    if ((rc = store_savepoint(c)) < 0)
        return rc;
    int64_t now = ts_now_us();
    for (size_t i = 0; i < n; i++) {
        bind_str(st, 1, thread_id);
        bind_scope(st, 2, sc);
        bind_str(st, 4, item_ids[i]);
        bind_str(st, 5, kind);
        sqlite3_bind_int64(st, 6, now);
        if ((rc = run(c, st)) < 0)
            goto fail;
        if (sqlite3_changes(c->db) == 0) {
            rc = not_found(c);
            goto fail;
        }
    }
    return store_savepoint_release(c);

fail:
    store_savepoint_rollback(c);
    return rc;
}

/* kind NULL counts both kinds. Returns the count (>= 0) or an error. */
int store_feedback_count(store_conn *c, const store_scope *sc, const char *item_id,
                         const char *kind)
{
    if (!sc || !item_id)
        return invalid(c, "item id");
    sqlite3_stmt *st = get(c, S_FB_COUNT);
    if (!st)
        return STORE_EIO;
    bind_str(st, 1, item_id);
    bind_scope(st, 2, sc);
    bind_str(st, 4, kind);
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : fail(c, rc);
    sqlite3_reset(st);
    return ret;
}

/* ---- runs ---- */

int store_run_add(store_conn *c, const store_scope *sc, store_run *r)
{
    if (!sc || !is_id(sc->account_id) || !is_id(sc->user_id) || !r || !r->thread_id[0] ||
        !r->agent_id[0] || !r->model[0] || !r->status[0])
        return invalid(c, "run scope / thread_id / agent_id / model / status");
    sqlite3_stmt *st = get(c, S_RUN_ADD);
    if (!st)
        return STORE_EIO;
    fill_new(r->id, "run", &r->started_us);
    if (!r->ended_us)
        r->ended_us = ts_now_us();
    const char *text[] = {r->id,       sc->account_id, sc->user_id, r->thread_id,
                          r->agent_id, r->model,       r->status};
    const int64_t num[] = {r->input_tokens, r->output_tokens, r->model_calls,
                           r->tool_calls,   r->started_us,    r->ended_us};
    for (int i = 0; i < 7; i++)
        bind_str(st, 1 + i, text[i]);
    for (int i = 0; i < 6; i++)
        sqlite3_bind_int64(st, 8 + i, num[i]);
    return run(c, st);
}

static void row_run(sqlite3_stmt *st, void *row)
{
    store_run *r = row;
    col_fixed(st, 0, r->id, sizeof r->id);
    col_fixed(st, 1, r->thread_id, sizeof r->thread_id);
    col_fixed(st, 2, r->agent_id, sizeof r->agent_id);
    col_fixed(st, 3, r->model, sizeof r->model);
    col_fixed(st, 4, r->status, sizeof r->status);
    r->input_tokens = sqlite3_column_int64(st, 5);
    r->output_tokens = sqlite3_column_int64(st, 6);
    r->model_calls = (unsigned)sqlite3_column_int64(st, 7);
    r->tool_calls = (unsigned)sqlite3_column_int64(st, 8);
    r->started_us = sqlite3_column_int64(st, 9);
    r->ended_us = sqlite3_column_int64(st, 10);
}

int store_runs_list(store_conn *c, const char *account_id, const char *thread_id, size_t limit,
                    store_run **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!account_id)
        return invalid(c, "account_id");
    if (!limit)
        return 0;
    sqlite3_stmt *st = get(c, thread_id ? S_RUNS_THREAD : S_RUNS_LIST);
    if (!st)
        return STORE_EIO;
    int lim = limit < INT_MAX ? (int)limit : INT_MAX, more = 0;
    char after[STORE_ID_MAX];
    bind_str(st, 1, account_id);
    sqlite3_bind_int64(st, 2, lim);
    if (thread_id)
        bind_str(st, 3, thread_id);
    /* the statement's LIMIT stops first: a page without has_more */
    void *rows = NULL;
    int ret = fetch_page(c, st, lim, sizeof(store_run), row_run, &rows, n, &more, after);
    if (ret < 0) {
        free(rows);
        rows = NULL;
        *n = 0;
    }
    *out = rows;
    return ret;
}

/* ---- freeing (all tolerate zeroed structs and may be called twice) ---- */

void store_account_clear(store_account *a)
{
    if (!a)
        return;
    free(a->name);
    free(a->external_id);
    memset(a, 0, sizeof *a);
}

void store_user_clear(store_user *u)
{
    if (!u)
        return;
    free(u->name);
    free(u->external_id);
    memset(u, 0, sizeof *u);
}

void store_agent_clear(store_agent *a)
{
    if (!a)
        return;
    free(a->name);
    free(a->model);
    free(a->instructions);
    free(a->config_json);
    memset(a, 0, sizeof *a);
}

void store_agents_free(store_agent *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        store_agent_clear(&a[i]);
    free(a);
}

void store_thread_clear(store_thread *t)
{
    if (!t)
        return;
    free(t->title);
    free(t->status_json);
    free(t->allowed_image_domains);
    free(t->metadata_json);
    memset(t, 0, sizeof *t);
}

void store_item_clear(store_item *it)
{
    if (!it)
        return;
    free(it->json);
    memset(it, 0, sizeof *it);
}

void store_attachment_clear(store_attachment *a)
{
    if (!a)
        return;
    free(a->name);
    free(a->mime_type);
    free(a->json);
    free(a->metadata_json);
    memset(a, 0, sizeof *a);
}

void store_item_page_clear(store_item_page *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        store_item_clear(&p->items[i]);
    free(p->items);
    memset(p, 0, sizeof *p);
}

void store_thread_page_clear(store_thread_page *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        store_thread_clear(&p->threads[i]);
    free(p->threads);
    memset(p, 0, sizeof *p);
}

/* ---- the database file's identity (internal.h) ---- */

int store_conn_moved(const store_conn *c)
{
    struct stat sb;
    if (!c->path)
        return 0;
    if (stat(c->path, &sb) != 0)
        return errno == ENOENT || errno == ENOTDIR; /* other errors say nothing about identity */
    return sb.st_dev != c->dev || sb.st_ino != c->ino;
}

const char *store_conn_path(const store_conn *c)
{
    return c->path;
}

int store_conn_copy(store_conn *c, const char *to)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->db, "VACUUM INTO ?1", -1, &st, NULL);
    if (rc == SQLITE_OK) {
        bind_str(st, 1, to);
        rc = sqlite3_step(st);
    }
    int ret = rc == SQLITE_DONE ? 0 : fail(c, rc);
    sqlite3_finalize(st);
    return ret;
}

/* ---- checkpoints (internal.h) ---- */

typedef struct wal_hook_arg {
    void (*cb)(void *arg, int wal_pages);
    void *arg;
} wal_hook_arg;

static int on_wal_commit(void *p, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    wal_hook_arg *h = p;
    h->cb(h->arg, pages);
    return SQLITE_OK;
}

void store_wal_hook(store_conn *c, void (*cb)(void *arg, int wal_pages), void *arg)
{
    free(c->wal_hook);
    c->wal_hook = xmalloc(sizeof(wal_hook_arg));
    ((wal_hook_arg *)c->wal_hook)->cb = cb;
    ((wal_hook_arg *)c->wal_hook)->arg = arg;
    /* replaces the automatic checkpoint, which SQLite implements with this same hook */
    sqlite3_wal_hook(c->db, on_wal_commit, c->wal_hook);
}

int store_checkpoint_passive(store_conn *c)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    return rc == SQLITE_OK || rc == SQLITE_BUSY ? 0 : STORE_EIO;
}
