/* Private to src/store: what the dispatcher needs from a connection beyond the public API.
 * Not for use outside the store module. */
#ifndef CK_STORE_INTERNAL_H
#define CK_STORE_INTERNAL_H
#include "store/store.h"

/* Nestable savepoint inside the current transaction; the writer wraps each job in one so a
 * failing job is undone alone. rollback = ROLLBACK TO + RELEASE (leaves the savepoint). */
int store_savepoint(store_conn *c);
int store_savepoint_release(store_conn *c);
int store_savepoint_rollback(store_conn *c);
/* Deferred (read) transaction: a read job sees one snapshot across its statements. */
int store_begin_read(store_conn *c);
/* 1 while a transaction is open. SQLite ends a transaction on its own after some errors
 * (IOERR, FULL, NOMEM…); the writer checks this after each job. */
int store_in_txn(store_conn *c);
/* 1 for "sqlite::memory:": each connection is its own database, so the dispatcher runs reads
 * on the writer connection. */
int store_url_is_memory(const char *url);

/* The database file's identity: 1 when the path the connection opened no longer names the file
 * it has open (deleted, moved, or replaced by another file); 0 otherwise and for ":memory:".
 * One stat(); touches no SQLite state, so any thread may call it. */
int store_conn_moved(const store_conn *c);
const char *store_conn_path(const store_conn *c); /* NULL for ":memory:" */
/* Copies the whole database as this connection sees it (WAL included) to a new file "to"
 * (VACUUM INTO): what a connection to a deleted file can still save. No transaction open. */
int store_conn_copy(store_conn *c, const char *to);

/* Checkpoints off the writer thread: the writer's automatic checkpoint is replaced by a hook
 * that reports the WAL size after each commit, and a reader connection copies pages back
 * (PASSIVE: never blocks the writer) — so the writer never waits on a checkpoint's fsync. */
void store_wal_hook(store_conn *c, void (*cb)(void *arg, int wal_pages), void *arg);
int store_checkpoint_passive(store_conn *c);

#endif
