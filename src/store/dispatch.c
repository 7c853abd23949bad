/* The async store: jobs run on dedicated threads, each with its own connection, and complete
 * on the event loop.
 *
 * - Writes: one writer thread takes every queued write job (up to WRITE_BATCH) and runs them
 *   in submission order inside one BEGIN IMMEDIATE … COMMIT, each job in its own savepoint so a
 *   failing job is undone alone. Completions are posted only after COMMIT: a job's done runs
 *   once its data is durable and visible to readers. If COMMIT fails, every job of the batch
 *   completes with STORE_EIO (STORE_EFULL when the disk is full). One commit per batch is what
 *   makes small writes cheap.
 * - Lost database: before each batch the writer checks that the database path still names the
 *   file it opened (store_check); once it does not, no write runs again (STORE_ELOST).
 * - Reads: a shared queue consumed by the reader threads, each job inside a read transaction
 *   (one snapshot for all its statements). With no reader (n_readers 0, or ":memory:", where
 *   each connection is a separate database) reads go to the writer queue and keep its order.
 * - Completions: one FIFO handed to the loop through a uv_async_t; done callbacks run on the
 *   loop thread in completion order.
 *
 * Job nodes are recycled through a free list owned by the loop thread (jobs are submitted and
 * retired there), so the hot path allocates nothing once warm. pending counts a job from
 * submission until its done callback has started, and is only touched on the loop thread.
 * The async handle is referenced only while jobs are pending, so an otherwise idle loop can
 * exit (tests run the loop until every job has completed). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/store.h"
#include "util/log.h"

#define WRITE_BATCH   256
#define FREE_LIST_MAX 1024 /* nodes kept for reuse; beyond that a burst's nodes are freed */

typedef struct job {
    struct job *next;
    store_work_fn work;
    store_done_fn done;
    void *arg;
    int rc;
    int checkpoint; /* internal: a reader checkpoints the WAL; no transaction, no completion */
} job;

#define CHECKPOINT_PAGES 1000 /* SQLite's own autocheckpoint threshold */

typedef struct jobq {
    job *head, *tail;
} jobq;

struct store {
    uv_loop_t *loop;
    uv_async_t async;
    /* group commit: writes submitted during one loop iteration reach the writer together, so
     * they share one transaction (its fixed cost dominates small writes) */
    uv_prepare_t prep;
    uv_check_t check;
    jobq staged;      /* loop thread only */
    jobq rstaged;     /* reads, likewise: one wake-up for all reads of an iteration */
    unsigned n_rstaged;
    int open_handles; /* closed in store_free; the last close frees the store */

    pthread_mutex_t mu; /* wq, rq, stopping */
    pthread_cond_t wcond;
    pthread_cond_t rcond;
    jobq wq;
    jobq rq;
    int stopping;

    pthread_mutex_t dmu; /* dq: completions waiting for the loop */
    jobq dq;

    store_conn *writer;
    store_conn **readers;
    unsigned n_readers;
    pthread_t wthread;
    pthread_t *rthreads;
    unsigned n_rthreads; /* started reader threads */
    int wstarted;
    int ckpt_queued; /* under mu */
    int lost;         /* atomic: the database file was deleted or replaced (store_check) */
    int rescue_tried; /* writer thread only: the lost database was copied (or that failed) */

    /* loop thread only */
    job *free_list;
    unsigned n_free;
    unsigned pending;
    int closing;
};

typedef struct reader_arg {
    store *s;
    store_conn *conn;
} reader_arg;

static void q_push(jobq *q, job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static job *q_pop(jobq *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        j->next = NULL;
    }
    return j;
}

/* Hands a finished chain (first..last, linked) to the loop. Wakes the loop only when the queue
 * was empty: otherwise a wake-up is already on its way and the callback drains everything. */
static void post(store *s, job *first, job *last)
{
    pthread_mutex_lock(&s->dmu);
    int was_empty = s->dq.head == NULL;
    last->next = NULL;
    if (s->dq.tail)
        s->dq.tail->next = first;
    else
        s->dq.head = first;
    s->dq.tail = last;
    pthread_mutex_unlock(&s->dmu);
    if (was_empty)
        uv_async_send(&s->async);
}

/* ---- the database file's identity ---- */

/* 1 once the database path no longer names the file the writer has open; the first thread to
 * notice logs it. The check is one stat() of the path per write batch (and per /readyz):
 * measured 2-8 µs in the CI sandbox, where the smallest commit costs 65 µs; under 1 µs on a
 * plain Linux host. */
static int note_lost(store *s)
{
    if (__atomic_load_n(&s->lost, __ATOMIC_ACQUIRE))
        return 1;
    if (!store_conn_moved(s->writer))
        return 0;
    if (!__atomic_exchange_n(&s->lost, 1, __ATOMIC_ACQ_REL)) {
        char q[512];
        LOGE(NULL, "STORAGE LOST: the database file was deleted or replaced while serving",
             "path=\"%s\" effect=\"every write now fails with 503 storage_lost; reads still "
             "work\" action=\"stop the server, put the database back at path (the rescued copy "
             "logged next, or a backup), then start it again\"",
             log_quote(store_conn_path(s->writer), q, sizeof q));
    }
    return 1;
}

static int rescue_due(store *s)
{
    return __atomic_load_n(&s->lost, __ATOMIC_ACQUIRE) && !s->rescue_tried;
}

/* Once lost, the writer copies what its connection still sees (the unlinked file and its WAL)
 * next to the path: without it, closing the connection at exit would discard that data. */
static void rescue(store *s)
{
    s->rescue_tried = 1;
    const char *path = store_conn_path(s->writer);
    char to[4096], q[512], q2[512], q3[256];
    snprintf(to, sizeof to, "%s.rescued-%lld", path, (long long)time(NULL));
    if (store_conn_copy(s->writer, to) == 0)
        LOGE(NULL, "STORAGE LOST: the data this server held was copied", "path=\"%s\" copy=\"%s\" "
             "action=\"stop the server, check the copy, move it to path, start the server\"",
             log_quote(path, q, sizeof q), log_quote(to, q2, sizeof q2));
    else {
        unlink(to); /* a partial copy */
        LOGE(NULL, "STORAGE LOST: the data this server held could not be copied",
             "path=\"%s\" copy=\"%s\" err=\"%s\" action=\"do not stop the server yet: it "
             "still has the deleted file open (ls -l /proc/%ld/fd); copy it out first\"",
             log_quote(path, q, sizeof q), log_quote(to, q2, sizeof q2),
             log_quote(store_errmsg(s->writer), q3, sizeof q3), (long)getpid());
    }
}

/* Writer thread: 1 when writes must stop, after the one rescue attempt. */
static int writer_lost(store *s)
{
    if (!note_lost(s))
        return 0;
    if (!s->rescue_tried)
        rescue(s);
    return 1;
}

int store_check(store *s)
{
    if (!s || !note_lost(s))
        return 0;
    pthread_mutex_lock(&s->mu); /* the writer copies the data now, not at the next write */
    pthread_cond_signal(&s->wcond);
    pthread_mutex_unlock(&s->mu);
    return STORE_ELOST;
}

/* ---- writer ---- */

/* What a failed BEGIN/SAVEPOINT/COMMIT means for the jobs it takes down. */
static int io_rc(int rc)
{
    return rc == STORE_EFULL ? STORE_EFULL : STORE_EIO;
}

static void fail_jobs(job *from, job *to, int rc)
{
    for (job *j = from;; j = j->next) {
        j->rc = rc;
        if (j == to)
            break;
    }
}

/* Runs a linked chain of jobs in one transaction. */
static void run_batch(store *s, job *first)
{
    store_conn *c = s->writer;
    job *txn_first = first; /* first job of the open transaction */
    int in_txn = 0;

    for (job *j = first; j; j = j->next) {
        int rc;
        if (!in_txn) {
            if ((rc = store_begin(c)) < 0) {
                {
                    char q[256];
                    LOGE(NULL, "store begin failed", "err=\"%s\"",
                         log_quote(store_errmsg(c), q, sizeof q));
                }
                j->rc = io_rc(rc);
                txn_first = j->next;
                continue;
            }
            in_txn = 1;
            txn_first = j;
        }
        if ((rc = store_savepoint(c)) < 0) {
            j->rc = io_rc(rc);
        } else {
            j->rc = j->work(c, j->arg);
            if (j->rc < 0)
                store_savepoint_rollback(c);
            else
                store_savepoint_release(c);
        }
        if (!store_in_txn(c)) {
            /* SQLite rolled the whole transaction back on its own (I/O error, disk full…):
             * every job in it so far is lost. Later jobs start a fresh transaction. */
            {
                char q[256];
                LOGE(NULL, "store transaction aborted", "err=\"%s\"",
                     log_quote(store_errmsg(c), q, sizeof q));
            }
            fail_jobs(txn_first, j, io_rc(j->rc));
            in_txn = 0;
        }
    }
    int crc = in_txn ? store_commit(c) : 0;
    if (crc < 0) {
        {
            char q[256];
            LOGE(NULL, "store commit failed", "err=\"%s\"",
                 log_quote(store_errmsg(c), q, sizeof q));
        }
        if (store_in_txn(c))
            store_rollback(c);
        for (job *j = txn_first; j; j = j->next)
            j->rc = io_rc(crc);
    }
}

static void *writer_main(void *p)
{
    store *s = p;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->wq.head && !s->stopping && !rescue_due(s))
            pthread_cond_wait(&s->wcond, &s->mu);
        job *first = s->wq.head, *last = first;
        if (!first) { /* stopping and drained, or a lost database to copy */
            int stop = s->stopping;
            pthread_mutex_unlock(&s->mu);
            writer_lost(s); /* at exit too: closing the connection discards a deleted file */
            if (stop)
                break;
            continue;
        }
        /* detach up to WRITE_BATCH jobs as one chain */
        unsigned n = 1;
        while (last->next && n < WRITE_BATCH) {
            last = last->next;
            n++;
        }
        s->wq.head = last->next;
        if (!s->wq.head)
            s->wq.tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&s->mu);

        if (writer_lost(s))
            fail_jobs(first, last, STORE_ELOST);
        else
            run_batch(s, first);
        post(s, first, last);
    }
    return NULL;
}

/* Called on the writer thread after each commit: past the threshold, a reader checkpoints. */
static void on_wal(void *arg, int pages)
{
    store *s = arg;
    if (pages < CHECKPOINT_PAGES)
        return;
    pthread_mutex_lock(&s->mu);
    if (!s->ckpt_queued && !s->stopping) {
        job *j = xcalloc(1, sizeof *j);
        j->checkpoint = 1;
        q_push(&s->rq, j);
        s->ckpt_queued = 1;
        pthread_cond_signal(&s->rcond);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- readers ---- */

static void *reader_main(void *p)
{
    reader_arg *ra = p;
    store *s = ra->s;
    store_conn *c = ra->conn;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->rq.head && !s->stopping)
            pthread_cond_wait(&s->rcond, &s->mu);
        job *j = q_pop(&s->rq);
        if (j && j->checkpoint)
            s->ckpt_queued = 0;
        pthread_mutex_unlock(&s->mu);
        if (!j)
            break;
        if (j->checkpoint) {
            if (store_checkpoint_passive(c) < 0)
                LOGW(NULL, "wal checkpoint failed", "%s", "");
            free(j);
            continue;
        }
        if (store_begin_read(c) < 0) {
            j->rc = STORE_EIO;
        } else {
            j->rc = j->work(c, j->arg);
            if (store_in_txn(c))
                store_commit(c); /* ends the snapshot; nothing was written */
        }
        post(s, j, j);
    }
    free(ra);
    return NULL;
}

/* ---- loop side ---- */

static void deliver(store *s, job *j)
{
    while (j) {
        job *next = j->next;
        store_done_fn done = j->done;
        void *arg = j->arg;
        int rc = j->rc;
        if (s->n_free < FREE_LIST_MAX) {
            j->next = s->free_list;
            s->free_list = j;
            s->n_free++;
        } else {
            free(j);
        }
        s->pending--;
        if (done)
            done(rc, arg); /* may submit more jobs */
        j = next;
    }
    if (!s->pending && !s->closing)
        uv_unref((uv_handle_t *)&s->async);
}

static void on_async(uv_async_t *h)
{
    store *s = h->data;
    pthread_mutex_lock(&s->dmu);
    job *j = s->dq.head;
    s->dq.head = s->dq.tail = NULL;
    pthread_mutex_unlock(&s->dmu);
    deliver(s, j);
}

/* Hands the writes staged in this loop iteration to the writer in one go. */
static void q_splice(jobq *dst, jobq *src)
{
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

static void flush_staged(store *s)
{
    if (!s->staged.head && !s->rstaged.head)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->staged.head) {
        q_splice(&s->wq, &s->staged);
        pthread_cond_signal(&s->wcond);
    }
    if (s->rstaged.head) {
        q_splice(&s->rq, &s->rstaged);
        if (s->n_rstaged > 1)
            pthread_cond_broadcast(&s->rcond);
        else
            pthread_cond_signal(&s->rcond);
        s->n_rstaged = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

/* before the loop blocks (writes from timers) and after I/O callbacks (writes from requests
 * and completions) */
static void on_prepare(uv_prepare_t *h)
{
    flush_staged(h->data);
}
static void on_check(uv_check_t *h)
{
    flush_staged(h->data);
}

static int submit(store *s, int write, store_work_fn work, store_done_fn done, void *arg)
{
    if (!s || !work || s->closing)
        return STORE_EINVAL;
    job *j = s->free_list;
    if (j) {
        s->free_list = j->next;
        s->n_free--;
    } else {
        j = xmalloc(sizeof *j);
    }
    j->work = work;
    j->done = done;
    j->arg = arg;
    j->rc = 0;
    j->checkpoint = 0;
    if (s->pending++ == 0)
        uv_ref((uv_handle_t *)&s->async);

    if (write || !s->n_readers) {
        q_push(&s->staged, j);
    } else {
        q_push(&s->rstaged, j);
        s->n_rstaged++;
    }
    return 0;
}

int store_write(store *s, store_work_fn work, store_done_fn done, void *arg)
{
    return submit(s, 1, work, done, arg);
}

int store_read(store *s, store_work_fn work, store_done_fn done, void *arg)
{
    return submit(s, 0, work, done, arg);
}

unsigned store_pending(store *s)
{
    return s ? s->pending : 0;
}

/* Stops and joins whatever threads were started; they finish queued jobs first. */
static void stop_threads(store *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_broadcast(&s->wcond);
    pthread_cond_broadcast(&s->rcond);
    pthread_mutex_unlock(&s->mu);
    if (s->wstarted)
        pthread_join(s->wthread, NULL);
    for (unsigned i = 0; i < s->n_rthreads; i++)
        pthread_join(s->rthreads[i], NULL);
    s->wstarted = 0;
    s->n_rthreads = 0;
}

/* Everything but the async handle (and the struct that embeds it). */
static void release(store *s)
{
    store_conn_close(s->writer);
    for (unsigned i = 0; i < s->n_readers; i++)
        store_conn_close(s->readers[i]);
    free(s->readers);
    free(s->rthreads);
    while (s->free_list) {
        job *j = s->free_list;
        s->free_list = j->next;
        free(j);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->dmu);
    pthread_cond_destroy(&s->wcond);
    pthread_cond_destroy(&s->rcond);
}

/* Store threads must not take the process's signals (libuv handles them on the loop). */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

store *store_new(uv_loop_t *loop, const char *url, unsigned n_readers, char **err)
{
    char *scratch = NULL;
    if (!err)
        err = &scratch; /* the message is still built, then dropped */
    store *s = xcalloc(1, sizeof *s);
    *err = NULL;
    s->loop = loop;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->dmu, NULL);
    pthread_cond_init(&s->wcond, NULL);
    pthread_cond_init(&s->rcond, NULL);
    if (store_url_is_memory(url))
        n_readers = 0;

    /* the writer first: it migrates before any reader looks at the schema */
    s->writer = store_conn_open(url, 1, err);
    if (!s->writer)
        goto fail;
    s->readers = xcalloc(n_readers ? n_readers : 1, sizeof *s->readers);
    s->rthreads = xcalloc(n_readers ? n_readers : 1, sizeof *s->rthreads);
    for (; s->n_readers < n_readers; s->n_readers++) {
        s->readers[s->n_readers] = store_conn_open(url, 0, err);
        if (!s->readers[s->n_readers])
            goto fail;
    }

    if (s->n_readers)
        store_wal_hook(s->writer, on_wal, s);
    if (start_thread(&s->wthread, writer_main, s) != 0) {
        *err = xstrdup("store: cannot start the writer thread");
        goto fail;
    }
    s->wstarted = 1;
    for (unsigned i = 0; i < s->n_readers; i++) {
        reader_arg *ra = xmalloc(sizeof *ra);
        ra->s = s;
        ra->conn = s->readers[i];
        if (start_thread(&s->rthreads[i], reader_main, ra) != 0) {
            free(ra);
            *err = xstrdup("store: cannot start a reader thread");
            goto fail;
        }
        s->n_rthreads++;
    }

    /* last, so a failure above never needs a close callback; no job can complete before
     * store_new returns, so the threads never see an uninitialised handle */
    int rc = uv_async_init(loop, &s->async, on_async);
    if (rc != 0) {
        *err = xstrdup(uv_strerror(rc));
        goto fail;
    }
    s->async.data = s;
    uv_unref((uv_handle_t *)&s->async); /* referenced only while jobs are pending */
    uv_prepare_init(loop, &s->prep);
    uv_check_init(loop, &s->check);
    s->prep.data = s->check.data = s;
    uv_prepare_start(&s->prep, on_prepare);
    uv_check_start(&s->check, on_check);
    uv_unref((uv_handle_t *)&s->prep);
    uv_unref((uv_handle_t *)&s->check);
    s->open_handles = 3;
    return s;

fail:
    stop_threads(s);
    release(s);
    free(s);
    free(scratch);
    return NULL;
}

static void on_close(uv_handle_t *h)
{
    store *s = h->data;
    if (--s->open_handles == 0)
        free(s);
}

/* After this returns the caller must let the loop run once more (uv_run) so the async handle's
 * close completes; that callback frees the store's memory. Must not be called from inside a
 * done callback. */
void store_free(store *s)
{
    if (!s)
        return;
    s->closing = 1; /* new jobs, including ones submitted by done callbacks below, fail */
    flush_staged(s);
    stop_threads(s);
    /* every job has now run; complete the ones the loop has not seen yet, in order */
    pthread_mutex_lock(&s->dmu);
    job *j = s->dq.head;
    s->dq.head = s->dq.tail = NULL;
    pthread_mutex_unlock(&s->dmu);
    deliver(s, j);
    release(s);
    uv_close((uv_handle_t *)&s->async, on_close);
    uv_close((uv_handle_t *)&s->prep, on_close);
    uv_close((uv_handle_t *)&s->check, on_close);
}
