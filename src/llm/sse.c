#include "llm/sse.h"

#include <errno.h>
#include <string.h>

enum { D_NONE, D_BORROWED, D_OWNED };

/* Buffers grown past this by one big event are released afterwards, so a long stream that
 * once carried a large event does not keep max_event_bytes allocated until it ends. */
#define SSEP_KEEP (64u * 1024)

static const unsigned char utf8_bom[3] = {0xEF, 0xBB, 0xBF};

void ssep_init(ssep *p, size_t max_event_bytes, ssep_event_fn cb, void *ud)
{
    memset(p, 0, sizeof *p);
    if (!max_event_bytes)
        max_event_bytes = SSEP_DEFAULT_EVENT;
    size_t line_max = max_event_bytes + SSEP_LINE_SLACK;
    if (line_max < max_event_bytes)
        line_max = (size_t)-1; /* overflow: a huge cap is as good as none, but buf's 0 is none */
    p->cb = cb;
    p->ud = ud;
    p->max_data = max_event_bytes;
    p->line = (buf)BUF_INIT(line_max);
    p->data = (buf)BUF_INIT(max_event_bytes);
    p->retry_ms = -1;
}

static void trim(buf *b)
{
    if (b->cap > SSEP_KEEP)
        buf_free(b);
    else
        buf_reset(b);
}

/* Copies borrowed data into p->data: before a second data line is joined to it, or before
 * the chunk it points into goes back to the caller. */
static void own_data(ssep *p)
{
    buf_reset(&p->data);
    /* cannot fail: dref_len <= max_data was checked when it was borrowed */
    (void)buf_append(&p->data, p->dref, p->dref_len);
    p->dstate = D_OWNED;
}

static int dispatch(ssep *p)
{
    int rc = 0;
    if (p->dstate != D_NONE) {
        const char *d = p->dstate == D_BORROWED ? p->dref : p->data.data;
        size_t dl = p->dstate == D_BORROWED ? p->dref_len : p->data.len;
        if (!dl)
            d = ""; /* a lone "data:" line: never hand out NULL or a pointer past a chunk */
        const char *ev = p->event_len ? p->event : "message";
        size_t el = p->event_len ? p->event_len : 7;
        rc = p->cb(p->ud, ev, el, d, dl, p->id);
        if (rc > 0)
            rc = 0;
        p->dstate = D_NONE;
        trim(&p->data);
    }
    /* spec: the event type buffer is reset even when nothing was dispatched */
    p->event_len = 0;
    p->event[0] = 0;
    return rc;
}

static int add_data(ssep *p, const char *v, size_t n, int in_chunk)
{
    if (p->dstate == D_NONE) {
        if (n > p->max_data)
            return -EMSGSIZE;
        if (in_chunk) {
            /* the common case (one data line per event, whole in the chunk): no copy */
            p->dref = v;
            p->dref_len = n;
            p->dstate = D_BORROWED;
            return 0;
        }
        buf_reset(&p->data);
        if (buf_append(&p->data, v, n))
            return -EMSGSIZE;
        p->dstate = D_OWNED;
        return 0;
    }
    if (p->dstate == D_BORROWED)
        own_data(p);
    /* reserve first so that the "\n" and the value pass the cap together or not at all */
    if (buf_reserve(&p->data, n + 1))
        return -EMSGSIZE;
    (void)buf_append(&p->data, "\n", 1);
    (void)buf_append(&p->data, v, n);
    return 0;
}

/* One line without its terminator. in_chunk: s points into the caller's chunk (so data may
 * be borrowed), not into p->line. */
static int on_line(ssep *p, const char *s, size_t n, int in_chunk)
{
    if (!n)
        return dispatch(p);
    if (s[0] == ':')
        return 0; /* comment / heartbeat */
    const char *colon = memchr(s, ':', n);
    size_t flen = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    size_t vlen = colon ? n - flen - 1 : 0;
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    switch (flen) {
    case 4:
        if (!memcmp(s, "data", 4))
            return add_data(p, v, vlen, in_chunk);
        break;
    case 5:
        if (!memcmp(s, "event", 5)) {
            if (vlen > SSEP_NAME_MAX)
                return -EMSGSIZE;
            memcpy(p->event, v, vlen);
            p->event[vlen] = 0;
            p->event_len = vlen;
        }
        if (!memcmp(s, "retry", 5) && vlen && vlen <= 9) {
            /* spec: only ASCII digits set the reconnection time; reconnecting is the caller's */
            long ms = 0;
            size_t i = 0;
            while (i < vlen && v[i] >= '0' && v[i] <= '9')
                ms = ms * 10 + (v[i++] - '0');
            if (i == vlen)
                p->retry_ms = ms;
        }
        break;
    case 2:
        if (!memcmp(s, "id", 2)) {
            if (memchr(v, 0, vlen))
                return 0; /* spec: an id with NUL is ignored (it could not be a C string) */
            if (vlen > SSEP_NAME_MAX)
                return -EMSGSIZE;
            memcpy(p->id, v, vlen);
            p->id[vlen] = 0;
        }
        break;
    }
    return 0;
}

static size_t scan(const char *d, size_t from, size_t n, char c)
{
    const char *q = memchr(d + from, c, n - from);
    return q ? (size_t)(q - d) : n;
}

int ssep_feed(ssep *p, const char *d, size_t n)
{
    int rc = 0;
    if (p->err)
        return p->err;
    if (!n)
        return 0;
    if (p->bom < 3) {
        /* the BOM may itself arrive split across feeds */
        while (n && p->bom < 3 && (unsigned char)*d == utf8_bom[p->bom]) {
            d++;
            n--;
            p->bom++;
        }
        if (!n)
            return 0;
        /* mismatch: what matched was the start of the first line (the cap is >= 64) */
        if (p->bom < 3 && p->bom)
            (void)buf_append(&p->line, utf8_bom, p->bom);
        p->bom = 3;
    }
    if (p->pending_cr) {
        p->pending_cr = 0;
        if (*d == '\n') {
            d++;
            n--;
        }
    }
    /* next CR and next LF at or after i (n = none): one memchr per line end, not per byte */
    size_t i = 0, ncr = scan(d, 0, n, '\r'), nlf = scan(d, 0, n, '\n');
    size_t line_max = p->line.max;
    while (i < n) {
        if (ncr < i)
            ncr = scan(d, i, n, '\r');
        if (nlf < i)
            nlf = scan(d, i, n, '\n');
        size_t eol = ncr < nlf ? ncr : nlf;
        if (eol == n) {
            /* an unfinished line waits for the next feed; the cap stops a line that never ends */
            if (buf_append(&p->line, d + i, n - i)) {
                rc = -EMSGSIZE;
                goto fail;
            }
            break;
        }
        size_t next = eol + 1;
        if (d[eol] == '\r') {
            if (next == n)
                p->pending_cr = 1; /* maybe the CR of a CRLF whose LF is in the next feed */
            else if (d[next] == '\n')
                next++;
        }
        if (p->line.len) {
            if (buf_append(&p->line, d + i, eol - i))
                rc = -EMSGSIZE;
            else
                rc = on_line(p, p->line.data, p->line.len, 0);
            trim(&p->line);
        } else if (eol - i > line_max) {
            rc = -EMSGSIZE;
        } else {
            rc = on_line(p, d + i, eol - i, 1);
        }
        if (rc)
            goto fail;
        i = next;
    }
    if (p->dstate == D_BORROWED)
        own_data(p); /* the chunk is the caller's again after we return */
    return 0;
fail:
    p->dstate = D_NONE; /* never keep a pointer into the caller's chunk */
    p->err = rc;
    return rc;
}

int ssep_finish(ssep *p)
{
    int rc = p->err;
    /* spec: at end of file, pending data (an event without its blank line) is discarded */
    buf_free(&p->line);
    buf_free(&p->data);
    p->dstate = D_NONE;
    p->dref = NULL;
    p->dref_len = 0;
    p->err = 0;
    p->bom = 0;
    p->pending_cr = 0;
    p->event_len = 0;
    p->event[0] = 0;
    return rc;
}

const char *ssep_last_id(const ssep *p)
{
    return p->id;
}

long ssep_retry(const ssep *p)
{
    return p->retry_ms;
}

void ssep_free(ssep *p)
{
    buf_free(&p->line);
    buf_free(&p->data);
    p->dstate = D_NONE;
}
