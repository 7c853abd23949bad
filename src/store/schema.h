/* Versioned schema migrations, applied in order by store_migrate (one transaction each) and
 * recorded in schema_migrations(version, applied_at). Never edit a released step: append a new
 * one. Included only by sqlite.c.
 *
 * Why the shapes:
 * - threads and items carry `seq INTEGER PRIMARY KEY` (the rowid, which VACUUM keeps when it
 *   is declared): pages order by (created_us, seq) so equal timestamps still page
 *   deterministically in insertion order, and the (x, created_us) indexes end in it for free.
 * - items are keyed by UNIQUE(thread_id, id): ids only need to be unique inside a thread, so a
 *   client-chosen id in one user's thread can never collide with (or reveal) another user's.
 * - items and feedback cascade from threads, so deleting a thread is one statement.
 * - threads/items/attachments/feedback carry account_id and user_id so every query filters by
 *   the scope without a join. Threads have no foreign keys to tenants: scoping is by value.
 * - attachments.thread_id has no foreign key: deleting a thread detaches its attachments
 *   (thread_id NULL, created_us 0) and the sweep of unattached ones removes rows and bytes.
 * - runs (token usage) have no foreign keys either: the account's usage survives deleting the
 *   thread; lists are newest first, by (started_us, seq). */
#ifndef CK_STORE_SCHEMA_H
#define CK_STORE_SCHEMA_H

static const char *const store_schema_steps[] = {
    /* version 1 */
    "CREATE TABLE accounts("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  created_us INTEGER NOT NULL);"
    "CREATE INDEX accounts_name ON accounts(name, created_us);"

    "CREATE TABLE users("
    "  id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL REFERENCES accounts(id),"
    "  name TEXT NOT NULL,"
    "  external_id TEXT,"
    "  created_us INTEGER NOT NULL,"
    "  UNIQUE(account_id, external_id));"
    "CREATE INDEX users_name ON users(account_id, name, created_us);"

    "CREATE TABLE agents("
    "  id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL REFERENCES accounts(id),"
    "  name TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  instructions TEXT,"
    "  config_json TEXT NOT NULL DEFAULT '{}',"
    "  created_us INTEGER NOT NULL);"
    "CREATE INDEX agents_account ON agents(account_id, created_us);"

    "CREATE TABLE tokens("
    "  hash TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL REFERENCES users(id),"
    "  created_us INTEGER NOT NULL,"
    "  expires_us INTEGER NOT NULL DEFAULT 0,"
    "  revoked_us INTEGER);"
    "CREATE INDEX tokens_user ON tokens(user_id);"

    "CREATE TABLE threads("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  account_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  agent_id TEXT NOT NULL,"
    "  title TEXT,"
    "  status_json TEXT NOT NULL,"
    "  allowed_image_domains TEXT,"
    "  metadata_json TEXT NOT NULL,"
    "  created_us INTEGER NOT NULL);"
    "CREATE INDEX threads_owner ON threads(account_id, user_id, created_us);"
    "CREATE INDEX threads_owner_agent ON threads(account_id, user_id, agent_id, created_us);"

    "CREATE TABLE items("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL,"
    "  thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,"
    "  account_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  created_us INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  hidden INTEGER NOT NULL DEFAULT 0,"
    "  json TEXT NOT NULL,"
    "  UNIQUE(thread_id, id));"
    "CREATE INDEX items_thread_created ON items(thread_id, created_us);"

    "CREATE TABLE attachments("
    "  id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  thread_id TEXT,"
    "  name TEXT NOT NULL,"
    "  mime_type TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  json TEXT NOT NULL,"
    "  metadata_json TEXT NOT NULL DEFAULT '{}',"
    "  uploaded INTEGER NOT NULL DEFAULT 0,"
    "  created_us INTEGER NOT NULL);"
    "CREATE INDEX attachments_thread ON attachments(thread_id);"

    "CREATE TABLE feedback("
    "  id INTEGER PRIMARY KEY,"
    "  account_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,"
    "  item_id TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  created_us INTEGER NOT NULL);"
    "CREATE INDEX feedback_thread ON feedback(thread_id);"
    "CREATE INDEX feedback_item ON feedback(item_id, kind);",

    /* version 2: token usage, one row per agent run. Scoped by value like threads, with no
     * foreign key to threads: usage outlives a deleted thread. */
    "CREATE TABLE runs("
    "  seq INTEGER PRIMARY KEY,"
    "  id TEXT NOT NULL UNIQUE,"
    "  account_id TEXT NOT NULL,"
    "  user_id TEXT NOT NULL,"
    "  thread_id TEXT NOT NULL,"
    "  agent_id TEXT NOT NULL,"
    "  model TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  input_tokens INTEGER NOT NULL DEFAULT 0,"
    "  output_tokens INTEGER NOT NULL DEFAULT 0,"
    "  model_calls INTEGER NOT NULL DEFAULT 0,"
    "  tool_calls INTEGER NOT NULL DEFAULT 0,"
    "  started_us INTEGER NOT NULL,"
    "  ended_us INTEGER NOT NULL);"
    "CREATE INDEX runs_account ON runs(account_id, started_us);"
    "CREATE INDEX runs_thread ON runs(thread_id, started_us);",

    /* version 3: authentication and uploads.
     * - accounts.external_id: the host application's id for the account (JWT "account").
     * - tokens.kind: "api" (bearer tokens), "session" (cookie), "login" (one-time login links).
     * - attachments.agent_id: the agent the attachment was created for; claimed_us: when an
     *   upload of its bytes started (uploaded = 2 while it runs, 1 once stored). The partial
     *   index serves the sweep of attachments never attached to a message. */
    "ALTER TABLE accounts ADD COLUMN external_id TEXT;"
    "CREATE UNIQUE INDEX accounts_external ON accounts(external_id) WHERE external_id IS NOT NULL;"
    "ALTER TABLE tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'api';"
    "ALTER TABLE attachments ADD COLUMN agent_id TEXT;"
    "ALTER TABLE attachments ADD COLUMN claimed_us INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX attachments_unattached ON attachments(created_us) WHERE thread_id IS NULL;",
};

#define STORE_SCHEMA_VERSION ((int)(sizeof store_schema_steps / sizeof *store_schema_steps))

#endif
