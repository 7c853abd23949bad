/* Attachment bytes: uploads (two-phase PUT/POST <api>/upload/<id>, direct POST
 * <api>/upload?agent_id=), downloads (GET <api>/attachments/<id>, the owner's credentials or a
 * signed URL), signed preview URLs, and the sweep of attachments never attached to a message.
 *
 * An upload streams the body to <data_dir>/files/tmp/<random>.part as it arrives: the HTTP
 * body is paused while a piece is written (uv_fs_write on the thread pool), so memory per
 * upload is one network read. The bytes are counted against the limit (the declared size of
 * a two-phase upload, CHATKIT_UPLOAD_MAX_BYTES for a direct one) and sniffed as they pass.
 * At the end the content is checked against the declared type, the file fsynced, renamed to
 * <data_dir>/files/<id> and the directory fsynced; only then is the store told, so a stored
 * "uploaded" row always has its bytes. Any failure removes the temporary file and leaves a
 * two-phase attachment uploadable again: its claim is released as soon as the upload fails
 * (the client went away, a check or a write failed), and the claims and temporary files of a
 * server process that died are recovered when the next one starts (ck_uploads_recover). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chatkit/chatkit.h"
#include "files/files.h"
#include "files/multipart.h"
#include "files/sniff.h"
#include "util/id.h"
#include "util/log.h"
#include "util/timeutil.h"

#define CHUNK (64 * 1024)
/* multipart framing allowed on top of the file itself (headers, other small fields) */
#define MP_OVERHEAD (16 * 1024)
/* a claim older than this is taken over: start-up recovery releases the claims of a server
 * that died, so this only matters for a claim whose release failed (a store error) */
#define STALE_CLAIM_US (15LL * 60 * 1000000)
#define SEND_HIGH_WATER (256 * 1024)
#define SWEEP_BATCH 500

typedef struct upl {
    ck_app *app;
    http_req *req;
    ck_auth *auth;
    int direct, multipart;
    char id[STORE_ID_MAX];
    char agent_id[STORE_ID_MAX];
    store_attachment att; /* two-phase: the claimed row */
    int claimed;
    uint64_t max;         /* bytes of file allowed */
    int64_t exact;        /* two-phase: the declared size; -1 direct */
    /* body */
    mp_parser *mp;
    int parts_seen_file, in_file, file_ended;
    char name[SNIFF_NAME_MAX + 1];
    char mime[128];
    sniff_state sniff;
    uint64_t size;
    buf wbuf;
    /* disk */
    uv_fs_t fs;
    uv_work_t work;
    int fd;
    char tmp[PATH_MAX];
    char final[PATH_MAX];
    int busy;       /* a uv_fs/uv_work request in flight */
    int body_ended; /* on_end ran */
    int answered;
    int in_cb;      /* inside a body callback: freeing waits for its end */
    int work_rc;
    int status;     /* failure, once set */
    const char *code;
    char msg[200];
    json_t *reply;
} upl;

static void upl_maybe_free(upl *u);
static void upl_commit(upl *u);
static void release_claim(upl *u);

/* ------------------------------------------------------------------ helpers */

static void upl_answer_error(upl *u)
{
    if (u->answered)
        return;
    u->answered = 1;
    LOGD(u->req->rid, "upload refused", "status=%d code=%s", u->status, u->code);
    if (u->status >= 500)
        u->app->n_errors++;
    http_respond_error(u->req, u->status, u->code, u->msg);
}

static void fail(upl *u, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(upl *u, int status, const char *code, const char *fmt, ...)
{
    if (u->status)
        return;
    u->status = status;
    u->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->msg, sizeof u->msg, fmt, ap);
    va_end(ap);
    upl_answer_error(u);
    release_claim(u);
    upl_maybe_free(u);
}

typedef struct unclaim {
    store_scope scope;
    char id[STORE_ID_MAX];
} unclaim;

static int work_unclaim(store_conn *db, void *arg)
{
    unclaim *x = arg;
    int rc = store_attachment_finish(db, &x->scope, x->id, STORE_UPLOAD_NONE, NULL);
    return rc == STORE_ENOTFOUND ? 0 : rc;
}

static void unclaim_done(int rc, void *arg)
{
    if (rc)
        LOGW(NULL, "could not release a failed upload", "rc=%d", rc);
    free(arg);
}

/* A failed two-phase upload gives its attachment back at once, even while a write of its
 * temporary file is still in flight (that file is removed when the write ends): a retry must
 * not meet upload_in_progress. The release is a write job, so a retry's claim, submitted
 * later, runs after it. When the store refuses it (shutting down, a store error) the claim
 * stays until the next start (ck_uploads_recover) or until it is stale. */
static void release_claim(upl *u)
{
    if (!u->claimed)
        return;
    u->claimed = 0;
    unclaim *x = xcalloc(1, sizeof *x);
    x->scope = u->auth->scope;
    memcpy(x->id, u->id, sizeof x->id);
    if (store_write(u->app->st, work_unclaim, unclaim_done, x)) {
        LOGW(NULL, "could not release a failed upload", "id=\"%s\"", LOGQ(x->id));
        free(x);
    }
}

static void fs_free_cb(uv_fs_t *r)
{
    uv_fs_req_cleanup(r);
    free(r);
}

/* A file that cannot be removed is logged; the daily sweep (or the next start) retries the
 * bytes of attachments whose row is gone. */
static void on_unlinked(uv_fs_t *r)
{
    if (r->result < 0 && r->result != UV_ENOENT)
        LOGW(NULL, "file not removed", "path=\"%s\" err=%s", LOGQ(r->path),
             uv_strerror((int)r->result));
    fs_free_cb(r);
}

static void unlink_async(uv_loop_t *loop, const char *path)
{
    uv_fs_t *r = xmalloc(sizeof *r);
    if (uv_fs_unlink(loop, r, path, on_unlinked))
        free(r);
}

void ck_remove_bytes(ck_app *app, const char *id)
{
    char path[PATH_MAX];
    if (!files_path(app->cfg->data_dir, id, path, sizeof path))
        unlink_async(app->loop, path);
}

/* Frees the upload once it has failed or finished and nothing is in flight. */
static void upl_maybe_free(upl *u)
{
    if (u->busy || u->in_cb || (!u->status && !u->answered))
        return;
    if (u->fd >= 0) {
        uv_fs_t r;
        uv_fs_close(u->app->loop, &r, u->fd, NULL); /* close(2) of a written file: no disk wait */
        uv_fs_req_cleanup(&r);
        u->fd = -1;
    }
    if (u->status && u->tmp[0])
        unlink_async(u->app->loop, u->tmp);
    if (u->mp)
        mp_free(u->mp);
    buf_free(&u->wbuf);
    store_attachment_clear(&u->att);
    json_decref(u->reply);
    ck_auth_release(u->auth);
    http_req_unref(u->req);
    free(u);
}

/* ------------------------------------------------------------------ body → disk */

static int file_bytes(upl *u, const char *p, size_t n)
{
    if (u->size + n > u->max || (u->exact >= 0 && u->size + n > (uint64_t)u->exact)) {
        if (u->exact >= 0)
            fail(u, 413, "file_too_large", "the upload is larger than the attachment's declared "
                                           "size (%lld bytes)", (long long)u->exact);
        else
            fail(u, 413, "file_too_large",
                 "the file is larger than CHATKIT_UPLOAD_MAX_BYTES allows (%llu bytes)",
                 (unsigned long long)u->max);
        return -1;
    }
    u->size += n;
    sniff_feed(&u->sniff, p, n);
    buf_append(&u->wbuf, p, n);
    return 0;
}

static int mp_begin(void *ud, const mp_part *part)
{
    upl *u = ud;
    u->in_file = 0;
    if (strcmp(part->name, "file"))
        return 0; /* other fields are ignored (bounded by the parser) */
    if (u->parts_seen_file++) {
        fail(u, 400, "invalid_upload", "only one \"file\" part may be sent");
        return -EBADMSG;
    }
    if (!part->filename || !part->filename[0]) {
        fail(u, 422, "file_required", "the \"file\" part carries no file");
        return -EBADMSG;
    }
    if (sniff_clean_name(part->filename, u->name, sizeof u->name)) {
        fail(u, 400, "invalid_file_name",
             "the file name must be 1 to 255 bytes of UTF-8 without control characters");
        return -EBADMSG;
    }
    if (u->direct) {
        if (ck_mime_normalize(part->content_type ? part->content_type : "application/octet-stream",
                              u->mime)) {
            fail(u, 400, "invalid_upload", "the file part's Content-Type is not a media type");
            return -EBADMSG;
        }
        if (!ck_mime_allowed(u->app->cfg, u->mime) ||
            (!strncmp(u->mime, "image/", 6) && !sniff_inline_safe(u->mime))) {
            fail(u, 415, "unsupported_media_type",
                 "this file type is not allowed (CHATKIT_ALLOWED_MIME_TYPES)");
            return -EBADMSG;
        }
    }
    u->in_file = 1;
    return 0;
}

static int mp_data(void *ud, const char *p, size_t n)
{
    upl *u = ud;
    if (!u->in_file)
        return 0;
    return file_bytes(u, p, n) ? -EMSGSIZE : 0;
}

static int mp_end(void *ud)
{
    upl *u = ud;
    if (u->in_file)
        u->file_ended = 1;
    u->in_file = 0;
    return 0;
}

static void body_finished(upl *u);
static int flush(upl *u);

static void on_written(uv_fs_t *r)
{
    upl *u = r->data;
    ssize_t res = r->result;
    uv_fs_req_cleanup(r);
    u->busy = 0;
    if (res < 0) {
        LOGE(u->req->rid, "upload write failed", "err=%s", uv_strerror((int)res));
        fail(u, res == UV_ENOSPC ? 507 : 500, "storage_error",
             "the file could not be stored; nothing was kept");
        return;
    }
    if ((size_t)res < u->wbuf.len) { /* short write: the rest */
        buf_consume(&u->wbuf, (size_t)res);
        flush(u);
        return;
    }
    buf_reset(&u->wbuf);
    if (u->status) {
        upl_maybe_free(u);
        return;
    }
    if (u->body_ended)
        body_finished(u);
    else
        http_body_resume(u->req);
}

/* Writes what the last piece produced; returns 1 (pause the body) when a write started. */
static int flush(upl *u)
{
    if (!u->wbuf.len)
        return 0;
    uv_buf_t b = uv_buf_init(u->wbuf.data, (unsigned)u->wbuf.len);
    u->busy = 1;
    u->fs.data = u;
    if (uv_fs_write(u->app->loop, &u->fs, u->fd, &b, 1, -1, on_written)) {
        u->busy = 0;
        fail(u, 500, "storage_error", "the file could not be stored; nothing was kept");
        return 1;
    }
    return 1;
}

static int on_body(http_req *req, const char *data, size_t len, void *ud)
{
    upl *u = ud;
    if (u->status)
        return 1;
    u->in_cb = 1;
    if (u->multipart) {
        int rc = mp_feed(u->mp, data, len);
        if (rc && !u->status) {
            if (rc == -EMSGSIZE)
                fail(u, 413, "invalid_upload", "multipart framing too large: %s", mp_error(u->mp));
            else
                fail(u, 400, "invalid_upload", "malformed multipart body: %s", mp_error(u->mp));
        }
    } else {
        file_bytes(u, data, len);
    }
    int pause = u->status ? 1 : flush(u);
    u->in_cb = 0;
    if (u->status)
        upl_maybe_free(u);
    return pause;
}

static void on_body_end(http_req *req, int status, void *ud)
{
    upl *u = ud;
    u->body_ended = 1;
    if (u->status) {
        upl_maybe_free(u);
        return;
    }
    if (status == -ECONNRESET)
        LOGI(u->req->rid, "upload interrupted", "id=\"%s\" bytes=%llu", LOGQ(u->id),
             (unsigned long long)u->size);
    if (status == -EMSGSIZE)
        return fail(u, 413, "file_too_large", "the upload is too large");
    if (status < 0)
        return fail(u, 400, "upload_interrupted",
                    "the upload was interrupted; nothing was kept: upload the file again");
    if (u->multipart) {
        if (mp_finish(u->mp))
            return fail(u, 400, "invalid_upload", "malformed multipart body: %s", mp_error(u->mp));
        if (!u->parts_seen_file || !u->file_ended)
            return fail(u, 422, "file_required", "send the file as a multipart \"file\" part");
    }
    if (!u->busy)
        body_finished(u);
}

/* The whole body is on disk (not yet fsynced): check it, then commit. From here on nothing
 * watches the client: one that goes away now (say, right after its last byte) does not stop
 * the upload, whose bytes are whole and checked; it ends stored, and a retry is told 409
 * already_uploaded. */
static void body_finished(upl *u)
{
    if (u->exact >= 0 && u->size != (uint64_t)u->exact)
        return fail(u, 400, "size_mismatch",
                    "the upload has %llu bytes but the attachment was declared with %lld",
                    (unsigned long long)u->size, (long long)u->exact);
    char why[96];
    if (sniff_check(&u->sniff, u->mime, why, sizeof why))
        return fail(u, 415, "content_mismatch", "the file's content does not match its type %s: %s",
                    u->mime, why);
    upl_commit(u);
}

/* ------------------------------------------------------------------ commit */

static void commit_work(uv_work_t *w)
{
    upl *u = w->data;
    u->work_rc = fsync(u->fd) ? -errno : 0;
    if (close(u->fd) && !u->work_rc) /* the descriptor is gone either way */
        u->work_rc = -errno;
    u->fd = -1;
    if (u->work_rc)
        return;
    if (rename(u->tmp, u->final)) {
        u->work_rc = -errno;
        return;
    }
    u->tmp[0] = 0;
    /* the rename itself must survive a crash: fsync the directory */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", u->final);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

static int work_record(store_conn *db, void *arg)
{
    upl *u = arg;
    if (!u->direct) {
        json_t *a = json_loads(u->att.json, 0, NULL);
        if (!json_is_object(a)) {
            json_decref(a);
            a = ck_attachment_json(u->app, u->req, u->id, u->name, u->mime);
        }
        json_object_del(a, "upload_descriptor"); /* done with: reference §9 */
        char *s = json_dumps(a, JSON_COMPACT);
        int rc = store_attachment_finish(db, &u->auth->scope, u->id, STORE_UPLOAD_DONE, s);
        free(s);
        u->reply = a;
        return rc;
    }
    json_t *a = ck_attachment_json(u->app, u->req, u->id, u->name, u->mime);
    store_attachment row = {0};
    memcpy(row.id, u->id, sizeof row.id);
    memcpy(row.agent_id, u->agent_id, sizeof row.agent_id);
    row.name = u->name;
    row.mime_type = u->mime;
    row.size = (int64_t)u->size;
    row.json = json_dumps(a, JSON_COMPACT);
    row.metadata_json = "{}";
    row.uploaded = STORE_UPLOAD_DONE;
    row.created_us = ts_now_us();
    int rc = store_attachment_save(db, &u->auth->scope, &row);
    free(row.json);
    u->reply = a;
    return rc;
}

static void record_done(int rc, void *arg)
{
    upl *u = arg;
    u->busy = 0;
    if (rc) {
        /* the bytes have no row: remove them; a two-phase attachment deleted meanwhile ends here */
        unlink_async(u->app->loop, u->final);
        if (rc == STORE_ENOTFOUND)
            return fail(u, 404, "not_found", "attachment not found");
        LOGE(u->req->rid, "upload not recorded", "rc=%d", rc);
        const char *code, *msg;
        int status = ck_store_status(rc, "the upload could not be recorded; nothing was kept", &code, &msg);
        return fail(u, status, code, "%s", msg);
    }
    u->claimed = 0;
    LOGI(u->req->rid, "attachment stored", "id=\"%s\" bytes=%llu type=\"%s\"", LOGQ(u->id),
         (unsigned long long)u->size, LOGQ(u->mime));
    buf b = BUF_INIT(0);
    ck_dump(&b, u->reply);
    ck_sign_previews(u->app, &b);
    size_t len;
    char *body = buf_steal(&b, &len);
    u->answered = 1;
    http_respond_owned(u->req, u->direct ? 201 : 200, "application/json", body, len, NULL);
    upl_maybe_free(u);
}

static void commit_done(uv_work_t *w, int status)
{
    upl *u = w->data;
    u->busy = 0;
    if (status || u->work_rc) {
        LOGE(u->req->rid, "upload commit failed", "err=%s",
             strerror(-(u->work_rc ? u->work_rc : status)));
        return fail(u, u->work_rc == -ENOSPC ? 507 : 500, "storage_error",
                    "the file could not be stored; nothing was kept");
    }
    u->busy = 1;
    if (store_write(u->app->st, work_record, record_done, u)) {
        u->busy = 0;
        unlink_async(u->app->loop, u->final);
        fail(u, 503, "unavailable", "the server is shutting down");
    }
}

static void upl_commit(upl *u)
{
    if (files_path(u->app->cfg->data_dir, u->id, u->final, sizeof u->final))
        return fail(u, 500, "storage_error", "bad attachment id");
    u->busy = 1;
    u->work.data = u;
    if (uv_queue_work(u->app->loop, &u->work, commit_work, commit_done)) {
        u->busy = 0;
        fail(u, 500, "storage_error", "the file could not be stored");
    }
}

/* ------------------------------------------------------------------ start */

static void on_opened(uv_fs_t *r)
{
    upl *u = r->data;
    ssize_t fd = r->result;
    uv_fs_req_cleanup(r);
    u->busy = 0;
    if (fd < 0) {
        u->tmp[0] = 0;
        LOGE(u->req->rid, "cannot create upload file", "err=%s", uv_strerror((int)fd));
        return fail(u, 500, "storage_error", "the file could not be stored");
    }
    u->fd = (int)fd;
    if (u->status)
        return upl_maybe_free(u);
    if (http_body_read(u->req, on_body, on_body_end, u))
        fail(u, 400, "invalid_upload", "the request has no body to read");
}

static void upl_open(upl *u)
{
    char rnd[ID_MAX];
    id_new("up", rnd);
    snprintf(u->tmp, sizeof u->tmp, "%s/files/tmp/%s.part", u->app->cfg->data_dir, rnd);
    sniff_init(&u->sniff);
    u->busy = 1;
    u->fs.data = u;
    if (uv_fs_open(u->app->loop, &u->fs, u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600,
                   on_opened)) {
        u->busy = 0;
        u->tmp[0] = 0;
        fail(u, 500, "storage_error", "the file could not be stored");
    }
}

static int is_multipart(const char *ct)
{
    return ct && !strncasecmp(ct, "multipart/form-data", 19);
}

static int start_multipart(upl *u)
{
    static const mp_callbacks cb = {mp_begin, mp_data, mp_end};
    const char *err = NULL;
    u->mp = mp_new(u->req->content_type, NULL, &cb, u, &err);
    if (!u->mp) {
        fail(u, 400, "invalid_upload", "bad multipart/form-data content type: %s",
             err ? err : "?");
        return -1;
    }
    u->multipart = 1;
    return 0;
}

/* two-phase: the claim of the attachment (store) */
static int work_claim(store_conn *db, void *arg)
{
    upl *u = arg;
    int64_t now = ts_now_us();
    return store_attachment_claim(db, &u->auth->scope, u->id, now, now - STALE_CLAIM_US, &u->att);
}

static void claim_done(int rc, void *arg)
{
    upl *u = arg;
    u->busy = 0;
    if (rc == STORE_ENOTFOUND)
        return fail(u, 404, "not_found", "attachment not found");
    if (rc == STORE_ECONFLICT) {
        if (u->att.uploaded == STORE_UPLOAD_DONE)
            return fail(u, 409, "already_uploaded", "this attachment's file was already uploaded");
        return fail(u, 409, "upload_in_progress", "this attachment's file is being uploaded");
    }
    if (rc) {
        const char *code, *msg;
        int status = ck_store_status(rc, "storage failed; nothing was changed", &code, &msg);
        return fail(u, status, code, "%s", msg);
    }
    u->claimed = 1;
    u->exact = u->att.size;
    u->max = (uint64_t)u->att.size;
    snprintf(u->mime, sizeof u->mime, "%s", u->att.mime_type);
    snprintf(u->name, sizeof u->name, "%s", u->att.name);
    memcpy(u->agent_id, u->att.agent_id, sizeof u->agent_id);
    int64_t cl = u->req->content_length;
    if (!u->multipart && cl >= 0 && cl != u->exact)
        return fail(u, cl > u->exact ? 413 : 400, cl > u->exact ? "file_too_large" : "size_mismatch",
                    "the upload has %lld bytes but the attachment was declared with %lld",
                    (long long)cl, (long long)u->exact);
    if (u->multipart && cl >= 0 && (cl < u->exact || cl > u->exact + MP_OVERHEAD))
        return fail(u, cl < u->exact ? 400 : 413, cl < u->exact ? "size_mismatch" : "file_too_large",
                    "the upload's size does not match the attachment's declared size (%lld bytes)",
                    (long long)u->exact);
    upl_open(u);
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (!n || n >= STORE_ID_MAX)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

void ck_upload_route(ck_app *app, http_req *req, ck_auth *auth)
{
    const char *rest = req->path + strlen(app->cfg->api_url) + strlen("/upload");
    upl *u = xcalloc(1, sizeof *u);
    u->app = app;
    u->req = req;
    u->auth = auth; /* the reference is ours now */
    u->fd = -1;
    u->exact = -1;
    u->wbuf = (buf)BUF_INIT(0);
    http_req_ref(req);
    if (!*rest) { /* direct */
        if (req->method != HTTP_M_POST)
            return fail(u, 405, "method_not_allowed", "use POST with a multipart \"file\" part");
        const ck_agent *agent = ck_request_agent(auth, req);
        if (!agent)
            return fail(u, 422, "agent_required",
                        "an agent is required: pass ?agent_id= naming an agent of your account");
        memcpy(u->agent_id, agent->id, sizeof u->agent_id);
        if (!is_multipart(req->content_type))
            return fail(u, 415, "unsupported_media_type",
                        "send the file as multipart/form-data with a \"file\" part");
        u->direct = 1;
        u->max = app->cfg->upload_max_bytes;
        id_new("atc", u->id);
        if (start_multipart(u))
            return;
        return upl_open(u);
    }
    /* two-phase */
    if (req->method != HTTP_M_PUT && req->method != HTTP_M_POST)
        return fail(u, 405, "method_not_allowed", "use PUT (raw bytes) or POST (multipart)");
    if (rest[0] != '/' || !valid_id(rest + 1))
        return fail(u, 404, "not_found", "attachment not found");
    snprintf(u->id, sizeof u->id, "%s", rest + 1);
    if (req->method == HTTP_M_POST) {
        if (!is_multipart(req->content_type))
            return fail(u, 415, "unsupported_media_type",
                        "POST sends the file as multipart/form-data; PUT sends raw bytes");
        if (start_multipart(u))
            return;
    }
    u->busy = 1;
    if (store_write(app->st, work_claim, claim_done, u)) {
        u->busy = 0;
        fail(u, 503, "unavailable", "the server is shutting down");
    }
}

/* ------------------------------------------------------------------ download */

typedef struct dl {
    int waiting; /* for the socket to drain */
    ck_app *app;
    http_req *req;
    ck_auth *auth;
    char id[STORE_ID_MAX];
    store_attachment att;
    uv_fs_t fs;
    int fd;
    uint64_t left;
    char *chunk;
} dl;

static void dl_free(dl *d)
{
    http_req_on_close(d->req, NULL, NULL);
    http_sse_on_drain(d->req, NULL, NULL);
    if (d->fd >= 0) {
        uv_fs_t r;
        uv_fs_close(d->app->loop, &r, d->fd, NULL);
        uv_fs_req_cleanup(&r);
    }
    free(d->chunk);
    store_attachment_clear(&d->att);
    ck_auth_release(d->auth);
    http_req_unref(d->req);
    free(d);
}

/* Completes the streamed response (short of its length: the server closes the connection). */
static void dl_end(dl *d)
{
    http_stream_end(d->req);
    dl_free(d);
}

static void dl_error(dl *d, int status, const char *code, const char *msg)
{
    http_respond_error(d->req, status, code, msg);
    dl_free(d);
}

static void dl_next(dl *d);

static void on_dl_drain(http_req *req, void *ud)
{
    dl *d = ud;
    d->waiting = 0;
    dl_next(d);
}

/* The client left while we waited for the socket: nothing else will wake us. (A read in
 * flight finds the request dead in dl_next.) */
static void on_dl_close(http_req *req, void *ud)
{
    dl *d = ud;
    if (d->waiting)
        dl_end(d);
}

static void on_dl_read(uv_fs_t *r)
{
    dl *d = r->data;
    ssize_t n = r->result;
    uv_fs_req_cleanup(r);
    if (n <= 0) {
        LOGE(d->req->rid, "attachment read failed", "id=\"%s\" err=%s", LOGQ(d->id),
             n ? uv_strerror((int)n) : "short file");
        return dl_end(d);
    }
    if ((uint64_t)n > d->left)
        n = (ssize_t)d->left;
    d->left -= (uint64_t)n;
    if (http_stream_write(d->req, d->chunk, (size_t)n))
        return dl_end(d);
    dl_next(d);
}

static void dl_next(dl *d)
{
    if (!http_req_alive(d->req) || !d->left)
        return dl_end(d);
    if (http_sse_queued(d->req) > SEND_HIGH_WATER) {
        d->waiting = 1;
        http_sse_on_drain(d->req, on_dl_drain, d);
        return;
    }
    uv_buf_t b = uv_buf_init(d->chunk, (unsigned)(d->left < CHUNK ? d->left : CHUNK));
    d->fs.data = d;
    if (uv_fs_read(d->app->loop, &d->fs, d->fd, &b, 1, -1, on_dl_read))
        dl_end(d);
}

static void on_dl_open(uv_fs_t *r)
{
    dl *d = r->data;
    ssize_t fd = r->result;
    uv_fs_req_cleanup(r);
    if (fd < 0) {
        LOGE(d->req->rid, fd == UV_ENOENT ? "attachment bytes missing" : "attachment bytes not opened",
             "id=\"%s\" err=%s", LOGQ(d->id), uv_strerror((int)fd));
        if (fd == UV_ENOENT)
            return dl_error(d, 404, "not_found", "attachment not found");
        if (fd == UV_EMFILE || fd == UV_ENFILE)
            return dl_error(d, 503, "unavailable", "the server is out of file descriptors; try again");
        return dl_error(d, 500, "storage_error", "the file cannot be read");
    }
    d->fd = (int)fd;
    struct stat sb;
    if (fstat(d->fd, &sb)) /* fstat of an open file: metadata in memory */
        return dl_error(d, 500, "storage_error", "the file cannot be read");
    d->left = (uint64_t)sb.st_size;
    int inl = sniff_inline_safe(d->att.mime_type);
    char disp[SNIFF_DISPOSITION_MAX], headers[SNIFF_DISPOSITION_MAX + 300];
    if (sniff_disposition(inl ? "inline" : "attachment", d->att.name, disp, sizeof disp))
        sniff_disposition(inl ? "inline" : "attachment", NULL, disp, sizeof disp);
    snprintf(headers, sizeof headers,
             "Content-Disposition: %s\r\n"
             "X-Content-Type-Options: nosniff\r\n"
             "Content-Security-Policy: default-src 'none'; sandbox\r\n"
             "Cache-Control: private, max-age=300\r\n",
             disp);
    const char *ct = inl ? d->att.mime_type : !strncmp(d->att.mime_type, "text/", 5)
                                                  ? "text/plain; charset=utf-8"
                                                  : d->att.mime_type;
    if (http_stream_start(d->req, 200, ct, d->left, headers))
        return dl_end(d);
    if (d->req->method == HTTP_M_HEAD)
        d->left = 0;
    http_req_on_close(d->req, on_dl_close, d);
    d->chunk = xmalloc(CHUNK);
    dl_next(d);
}

static int work_dl(store_conn *db, void *arg)
{
    dl *d = arg;
    return d->auth ? store_attachment_load(db, &d->auth->scope, d->id, &d->att)
                   : store_attachment_get(db, d->id, &d->att);
}

static void dl_loaded(int rc, void *arg)
{
    dl *d = arg;
    if (rc == STORE_ENOTFOUND || (!rc && d->att.uploaded != STORE_UPLOAD_DONE))
        return dl_error(d, 404, "not_found", "attachment not found");
    if (rc) {
        const char *code, *msg;
        int status = ck_store_status(rc, "storage failed", &code, &msg);
        return dl_error(d, status, code, msg);
    }
    char path[PATH_MAX];
    if (files_path(d->app->cfg->data_dir, d->id, path, sizeof path))
        return dl_error(d, 404, "not_found", "attachment not found");
    d->fs.data = d;
    if (uv_fs_open(d->app->loop, &d->fs, path, O_RDONLY | O_CLOEXEC, 0, on_dl_open))
        dl_error(d, 500, "storage_error", "the file cannot be read");
}

void ck_attachment_get(ck_app *app, http_req *req, ck_auth *auth)
{
    dl *d = xcalloc(1, sizeof *d);
    d->app = app;
    d->req = req;
    d->auth = auth;
    d->fd = -1;
    http_req_ref(req);
    if (req->method != HTTP_M_GET && req->method != HTTP_M_HEAD)
        return dl_error(d, 405, "method_not_allowed", "use GET");
    const char *id = req->path + strlen(app->cfg->api_url) + strlen("/attachments/");
    if (!valid_id(id))
        return dl_error(d, 404, "not_found", "attachment not found");
    snprintf(d->id, sizeof d->id, "%s", id);
    if (store_read(app->st, work_dl, dl_loaded, d))
        dl_error(d, 503, "unavailable", "the server is shutting down");
}

/* ------------------------------------------------------------------ preview URLs */

void ck_sign_previews(ck_app *app, buf *b)
{
    static const char key[] = "\"preview_url\":\"";
    if (!b->len || !memmem(b->data, b->len, key, sizeof key - 1))
        return;
    char path[160];
    snprintf(path, sizeof path, "%s/attachments/", app->cfg->api_url);
    size_t pl = strlen(path);
    long long now = (long long)(ts_now_us() / 1000000);
    long long ttl = app->cfg->preview_ttl_s ? app->cfg->preview_ttl_s : 1;
    /* expiry rounded up to a step, so a page shown twice keeps its URLs (and the browser's
     * cache) for a while; every URL is valid for at least the TTL */
    long long step = ttl / 6 > 600 ? 600 : ttl / 6 ? ttl / 6 : 1;
    long long exp = ((now + ttl) / step + 1) * step;
    buf out = BUF_INIT(0);
    const char *p = b->data, *end = b->data + b->len;
    for (;;) {
        const char *k = memmem(p, (size_t)(end - p), key, sizeof key - 1);
        if (!k)
            break;
        const char *v = k + sizeof key - 1;
        const char *q = memchr(v, '"', (size_t)(end - v));
        if (!q)
            break;
        buf_append(&out, p, (size_t)(q - p));
        p = q;
        /* ours: …<api>/attachments/<id> without a query */
        const char *at = NULL;
        for (const char *s = v; s + pl <= q; s++)
            if (!memcmp(s, path, pl))
                at = s + pl;
        if (!at || memchr(v, '?', (size_t)(q - v)) || q - at <= 0 || q - at >= STORE_ID_MAX)
            continue;
        char id[STORE_ID_MAX];
        memcpy(id, at, (size_t)(q - at));
        id[q - at] = 0;
        if (!valid_id(id))
            continue;
        char qs[FILES_SIG_QUERY_MAX];
        files_sign(app->key, sizeof app->key, id, exp, qs);
        buf_putc(&out, '?');
        buf_puts(&out, qs);
    }
    buf_append(&out, p, (size_t)(end - p));
    buf_free(b);
    *b = out;
}

/* ------------------------------------------------------------------ sweep */

typedef struct sweep {
    ck_app *app;
    int64_t before_us;
    int64_t tmp_before_s;
    int orphans;    /* also look for attachment files without a row (once a day) */
    size_t n_orphans;
    char (*ids)[STORE_ID_MAX];
    size_t n;
} sweep;

/* Removes the regular files of dir last modified before before_s that drop(name, ud) lets go;
 * returns how many. Blocking directory work: on a store thread, or before the server listens. */
static size_t sweep_dir(const char *dir, int64_t before_s, int (*drop)(const char *name, void *ud),
                        void *ud)
{
    size_t removed = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat sb;
        if (e->d_name[0] != '.' && !fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) &&
            S_ISREG(sb.st_mode) && sb.st_mtime < before_s && drop(e->d_name, ud) &&
            !unlinkat(dirfd(d), e->d_name, 0))
            removed++;
    }
    closedir(d);
    return removed;
}

static int is_part_file(const char *name, void *ud)
{
    size_t n = strlen(name);
    return n >= 6 && !strcmp(name + n - 5, ".part");
}

/* The temporary files of uploads: the sweep removes those older than a live upload ever gets,
 * start-up recovery all of them. */
static size_t sweep_tmp(const char *data_dir, int64_t before_s)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/files/tmp", data_dir);
    return sweep_dir(dir, before_s, is_part_file, NULL);
}

static int has_no_row(const char *name, void *db)
{
    store_attachment a;
    if (strlen(name) >= STORE_ID_MAX)
        return 0;
    int rc = store_attachment_get(db, name, &a);
    if (!rc)
        store_attachment_clear(&a);
    return rc == STORE_ENOTFOUND;
}

/* Attachment files (files/<id>) without a row: the bytes of a direct upload whose process died
 * between storing and recording them, or of an attachment whose removal failed (a read-only or
 * failing disk). One point lookup per old file, on the store thread. */
static size_t sweep_orphans(store_conn *db, const char *data_dir, int64_t before_s)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/files", data_dir);
    return sweep_dir(dir, before_s, has_no_row, db);
}

static int work_sweep(store_conn *db, void *arg)
{
    sweep *s = arg;
    sweep_tmp(s->app->cfg->data_dir, s->tmp_before_s);
    if (s->orphans)
        s->n_orphans = sweep_orphans(db, s->app->cfg->data_dir, s->tmp_before_s);
    return store_attachments_sweep(db, s->before_us, SWEEP_BATCH, &s->ids, &s->n);
}

static void sweep_done(int rc, void *arg)
{
    sweep *s = arg;
    ck_app *app = s->app;
    app->sweeping = 0;
    for (size_t i = 0; !rc && i < s->n; i++)
        ck_remove_bytes(app, s->ids[i]);
    if (!rc && s->n)
        LOGI(NULL, "unattached attachments removed", "count=%zu", s->n);
    if (s->n_orphans)
        LOGI(NULL, "attachment files without a row removed", "count=%zu", s->n_orphans);
    free(s->ids);
    free(s);
}

static void on_sweep(uv_timer_t *t)
{
    ck_app *app = t->data;
    rl_prune(&app->rl, uv_now(app->loop));
    if (app->sweeping || app->shutting_down)
        return;
    int64_t now = ts_now_us();
    sweep *s = xcalloc(1, sizeof *s);
    s->app = app;
    s->before_us = now - (int64_t)app->cfg->unattached_ttl_s * 1000000;
    /* a day, or the TTL when that is longer: an upload never runs that long */
    int64_t tmp_age = app->cfg->unattached_ttl_s > 86400 ? app->cfg->unattached_ttl_s : 86400;
    s->tmp_before_s = now / 1000000 - tmp_age;
    /* files without a row: once a day (a directory scan and a lookup per old file) */
    if (!app->orphans_at_s || now / 1000000 - app->orphans_at_s >= 86400) {
        s->orphans = 1;
        app->orphans_at_s = now / 1000000;
    }
    app->sweeping = 1;
    if (store_write(app->st, work_sweep, sweep_done, s)) {
        app->sweeping = 0;
        free(s);
    }
}

void ck_sweep_start(ck_app *app)
{
    uv_timer_init(app->loop, &app->sweep);
    app->sweep.data = app;
    unsigned ms = app->cfg->cleanup_interval_ms;
    if (ms)
        uv_timer_start(&app->sweep, on_sweep, ms, ms);
}

/* ------------------------------------------------------------------ start-up recovery */

/* Start-up recovery assumes that one server process owns the data directory and its SQLite
 * database (docs/security.md): when `serve` starts, no upload can be running, so every claim in
 * the database (uploaded 2) and every temporary file in files/tmp belongs to a process that is
 * gone (killed, crashed, or stopped before it could release them). All of them are released
 * and removed before the first request; a retry of such an upload then succeeds at once.
 *
 * Chosen over a per-process instance id stored with each claim, which needs a schema change
 * and, with one process per database, tells nothing more: every claim found at start-up is
 * dead. TODO(shared database): with several processes on one database (PostgreSQL), a start
 * must release only the claims of processes that are gone: store a random instance id with
 * each claim and give each instance a lease it renews (or renew claimed_us while an upload
 * runs, with a short stale time), reset only the claims whose instance's lease expired, and
 * keep temporary files per instance (files/tmp/<instance>/) so one never removes another's.
 * Until then, between processes, only the stale take-over (STALE_CLAIM_US) recovers a claim. */
typedef struct recovery {
    ck_app *app;
    size_t parts, orphans;
    int64_t uploads;
} recovery;

static int work_recover(store_conn *db, void *arg)
{
    recovery *r = arg;
    /* no upload runs yet: any attachment file without a row is left over, whatever its age */
    r->orphans = sweep_orphans(db, r->app->cfg->data_dir, INT64_MAX);
    return store_attachments_reset_uploads(db, &r->uploads);
}

static void recover_done(int rc, void *arg)
{
    recovery *r = arg;
    if (rc)
        LOGE(NULL, "interrupted uploads not recovered", "rc=%d part_files=%zu", rc, r->parts);
    else
        LOGI(NULL, "interrupted uploads recovered", "uploads=%lld part_files=%zu orphan_files=%zu",
             (long long)r->uploads, r->parts, r->orphans);
    free(r);
}

void ck_uploads_recover(ck_app *app)
{
    recovery *r = xcalloc(1, sizeof *r);
    r->app = app;
    /* blocking, but before the server listens: no upload of ours has a file yet */
    r->parts = sweep_tmp(app->cfg->data_dir, INT64_MAX);
    /* a write job: every claim a request makes is submitted later, so it runs after this */
    if (store_write(app->st, work_recover, recover_done, r)) {
        LOGE(NULL, "interrupted uploads not recovered", "part_files=%zu", r->parts);
        free(r);
    }
}
