/* loadgen: HTTP/1.1 keep-alive load generator for chatkitd benchmarks.
 *
 * Plain C + POSIX/Linux (epoll, sockets, clock_gettime), no other libraries. Each worker thread
 * drives its share of the connections from one edge-triggered epoll loop. Responses are parsed
 * incrementally (status line, headers, Content-Length, chunked or read-until-close bodies), so a
 * response may arrive split at any byte. SSE bodies are scanned line by line to count `data:`
 * events, to time the first one and to spot `"type":"error"` events. With --relay-latency the
 * first text delta whose text starts with `t=<CLOCK_MONOTONIC ns>;` (bench/mock_upstream stamps
 * its first content delta so) is timed against the moment it arrived: the relay's added latency.
 *
 * Targets loopback addresses only, and every run is bounded by --duration (and --requests), or by
 * --hold in --open-idle mode. Run `loadgen --help` for the options.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define MAX_LINE (64 * 1024)       /* longest status/header/chunk-size line accepted */
#define MAX_SSE_LINE (1024 * 1024) /* SSE lines longer than this are scanned truncated */
#define RAND_HEX 16                /* {{RAND}} becomes this many hex digits */
#define SCAN_NS (20 * NS_PER_MS)   /* how often timeouts and reconnects are checked */

/* ---------------------------------------------------------------- options */

enum seg_type { SEG_LIT, SEG_RAND, SEG_THREAD };
struct seg {
    enum seg_type type;
    const char *p;
    size_t n;
};

static struct {
    const char *url;
    char host[256];
    int port;
    char path[8192];
    struct sockaddr_in addr;
    const char *method;
    const char **headers;
    int nheaders;
    char *body;
    size_t body_len;
    bool have_body;
    int concurrency;
    double duration, warmup, hold, timeout, ramp_timeout;
    long long requests; /* 0: no limit */
    int threads;
    bool sse, json, quiet, relay_latency;
    int open_idle; /* 0: normal mode */
    char **thread_ids;
    size_t nthread_ids;
    /* derived */
    char *head; /* request line and headers, without Content-Length and the final CRLF */
    size_t head_len;
    struct seg *segs;
    size_t nsegs;
} g = {
    .concurrency = 1,
    .duration = 10,
    .timeout = 60,
    .ramp_timeout = 30,
    .threads = 1,
};

/* ---------------------------------------------------------------- run state */

static int64_t t_start, t_measure, t_end; /* monotonic ns */
static atomic_int g_stop;
static atomic_llong g_started;    /* measured requests started (for --requests) */
static atomic_ullong g_thread_rr; /* round robin over --threads-file ids */
/* --open-idle progress, read by the main thread while workers run */
static atomic_int g_open, g_ready, g_closed, g_errors;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t a, size_t b)
{
    void *p = calloc(a ? a : 1, b ? b : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* ---------------------------------------------------------------- histogram
 * Log-linear: exact below 256 ns, then 256 sub-buckets per power of two (< 0.4 % error). */

#define H_SUB 256
#define H_BUCKETS (H_SUB + (64 - 8) * H_SUB)

typedef struct {
    uint64_t *counts;
    uint64_t total, max, sum;
} hist_t;

static size_t hist_index(uint64_t v)
{
    if (v < H_SUB)
        return (size_t)v;
    int e = 63 - __builtin_clzll(v); /* >= 8 */
    uint64_t m = v >> (e - 8);       /* 256..511 */
    return H_SUB + (size_t)(e - 8) * H_SUB + (size_t)(m - H_SUB);
}

static uint64_t hist_value(size_t idx)
{
    if (idx < H_SUB)
        return idx;
    int e = 8 + (int)((idx - H_SUB) / H_SUB);
    uint64_t m = H_SUB + (idx - H_SUB) % H_SUB;
    uint64_t width = 1ULL << (e - 8);
    return (m << (e - 8)) + (width - 1) / 2;
}

static void hist_init(hist_t *h)
{
    memset(h, 0, sizeof *h);
    h->counts = xcalloc(H_BUCKETS, sizeof *h->counts);
}

static void hist_add(hist_t *h, int64_t v)
{
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    h->counts[hist_index(u)]++;
    h->total++;
    h->sum += u;
    if (u > h->max)
        h->max = u;
}

static void hist_merge(hist_t *dst, const hist_t *src)
{
    for (size_t i = 0; i < H_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* percentile p (0..100) in ms */
static double hist_pct_ms(const hist_t *h, double p)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t cum = 0;
    for (size_t i = 0; i < H_BUCKETS; i++) {
        cum += h->counts[i];
        if (cum >= rank) {
            uint64_t v = hist_value(i);
            if (v > h->max)
                v = h->max;
            return (double)v / NS_PER_MS;
        }
    }
    return (double)h->max / NS_PER_MS;
}

/* ---------------------------------------------------------------- connections */

enum err_kind { ERR_STATUS, ERR_CONNECT, ERR_CONN, ERR_TIMEOUT, ERR_PROTO, ERR_SSE_ERROR, ERR_SSE_EMPTY, ERR__N };
static const char *const err_names[ERR__N] = {
    "status", "connect", "connection", "timeout", "protocol", "sse_error", "sse_no_events",
};

enum conn_state { CS_CLOSED, CS_CONNECTING, CS_OPEN, CS_DONE };
enum resp_state { RS_STATUS, RS_HEADERS, RS_BODY_CL, RS_CHUNK_SIZE, RS_CHUNK_DATA, RS_CHUNK_CRLF, RS_TRAILERS, RS_BODY_EOF };

typedef struct worker worker_t;

typedef struct conn {
    worker_t *w;
    int fd;
    enum conn_state state;
    int64_t retry_at;      /* CS_CLOSED: when to reconnect */
    int64_t connect_start; /* CS_CONNECTING */
    unsigned nreq;         /* responses completed on this connection */
    bool ready;            /* --open-idle: got 200 headers, counted in g_ready */

    /* request */
    char *out;
    size_t out_len, out_cap, out_off;
    bool in_flight, measured;
    int64_t req_start;

    /* response */
    enum resp_state rs;
    int status;
    bool chunked, has_cl, conn_close, is_sse, scan;
    uint64_t remaining, resp_bytes;
    char *lbuf; /* partial protocol line */
    size_t llen, lcap;
    char *sbuf; /* partial SSE line */
    size_t slen, scap;
    bool strunc;
    unsigned events;
    bool sse_error;
    int64_t ttfe;
    bool relay_seen;  /* --relay-latency: the stamped delta of this response was seen */
    int64_t relay_ns; /* its arrival minus its stamp */
    char snip[200]; /* start of an error body / the SSE error line */
    size_t sniplen;
} conn_t;

struct worker {
    int id;
    int epfd;
    pthread_t th;
    conn_t *conns;
    int nconns;
    uint64_t rng;
    char *bodybuf;
    size_t bodycap;
    bool finished;
    int64_t exit_time, last_completion;
    /* stats */
    hist_t lat, ttfe, relay;
    uint64_t completed, events, sse_responses, bytes_in, reconnects, retries;
    uint64_t relay_missing; /* --relay-latency: 200 SSE responses without a stamped delta */
    uint64_t err[ERR__N];
    uint64_t status_counts[600];
    char first_error[300];
};

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void note_error(worker_t *w, enum err_kind kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note_error(worker_t *w, enum err_kind kind, const char *fmt, ...)
{
    w->err[kind]++;
    if (g.open_idle)
        atomic_fetch_add(&g_errors, 1);
    if (w->first_error[0])
        return;
    int n = snprintf(w->first_error, sizeof w->first_error, "%s: ", err_names[kind]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first_error + n, sizeof w->first_error - (size_t)n, fmt, ap);
    va_end(ap);
}

static void buf_append(char **buf, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n)
            nc *= 2;
        *buf = xrealloc(*buf, nc);
        *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
}

static bool ci_prefix(const char *s, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && strncasecmp(s, prefix, k) == 0;
}

static bool ci_contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return true;
    return false;
}

static void conn_close_fd(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also drops it from the epoll set */
        c->fd = -1;
    }
    if (c->state == CS_OPEN && g.open_idle)
        atomic_fetch_sub(&g_open, 1);
    if (c->ready) {
        atomic_fetch_sub(&g_ready, 1);
        c->ready = false;
    }
    c->in_flight = false;
    c->state = CS_CLOSED;
}

static void conn_open(conn_t *c, int64_t now);
static void start_request(conn_t *c, int64_t now);

/* closes and, outside --open-idle, schedules a reconnect after delay_ns */
static void conn_recycle(conn_t *c, int64_t now, int64_t delay_ns)
{
    conn_close_fd(c);
    if (g.open_idle) {
        c->state = CS_DONE;
        atomic_fetch_add(&g_closed, 1);
        return;
    }
    c->state = CS_CLOSED;
    c->retry_at = now + delay_ns;
    c->w->reconnects++;
    if (delay_ns == 0)
        conn_open(c, now);
}

/* a failure: counted when the request (or, with none in flight, the moment) is in the window */
static void conn_fail(conn_t *c, int64_t now, enum err_kind kind, const char *what)
{
    worker_t *w = c->w;
    bool count;
    if (g.open_idle)
        count = true;
    else if (c->in_flight)
        count = c->measured && now <= t_end;
    else
        count = now >= t_measure && now <= t_end;
    if (count)
        note_error(w, kind, "%s", what);
    /* never reconnect from inside the failure path (no recursion against a resetting server):
     * the next scan reopens it */
    conn_recycle(c, now, kind == ERR_CONNECT ? 100 * NS_PER_MS : 1);
}

static void conn_fail_errno(conn_t *c, int64_t now, enum err_kind kind, const char *op, int err)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s", op, strerror(err));
    conn_fail(c, now, kind, msg);
}

/* the server closed a reused keep-alive connection before answering: retry once, silently */
static bool try_silent_retry(conn_t *c, int64_t now)
{
    if (!c->in_flight || c->resp_bytes > 0 || c->nreq == 0 || g.open_idle)
        return false;
    if (c->measured && g.requests > 0)
        atomic_fetch_sub(&g_started, 1);
    c->w->retries++;
    conn_recycle(c, now, 0);
    return true;
}

static void conn_open(conn_t *c, int64_t now)
{
    c->nreq = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        int e = errno;
        c->state = CS_CLOSED;
        conn_fail_errno(c, now, ERR_CONNECT, "socket", e);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = CS_CONNECTING;
    c->connect_start = now;
    int r = connect(c->fd, (const struct sockaddr *)&g.addr, sizeof g.addr);
    if (r < 0 && errno != EINPROGRESS) {
        conn_fail_errno(c, now, ERR_CONNECT, "connect", errno);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    if (r == 0) {
        c->state = CS_OPEN;
        if (g.open_idle)
            atomic_fetch_add(&g_open, 1);
        start_request(c, now);
    }
}

/* builds the request into c->out, filling {{RAND}} and {{THREAD}} */
static void build_request(conn_t *c)
{
    worker_t *w = c->w;
    size_t blen = 0;
    for (size_t i = 0; i < g.nsegs; i++) {
        const struct seg *s = &g.segs[i];
        char hex[RAND_HEX + 1];
        const char *p = s->p;
        size_t n = s->n;
        if (s->type == SEG_RAND) {
            uint64_t r = rng_next(&w->rng);
            snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r);
            p = hex;
            n = RAND_HEX;
        } else if (s->type == SEG_THREAD) {
            unsigned long long k = atomic_fetch_add(&g_thread_rr, 1);
            p = g.thread_ids[k % g.nthread_ids];
            n = strlen(p);
        }
        size_t cap = w->bodycap;
        buf_append(&w->bodybuf, &blen, &cap, p, n);
        w->bodycap = cap;
    }
    c->out_len = 0;
    buf_append(&c->out, &c->out_len, &c->out_cap, g.head, g.head_len);
    if (g.have_body) {
        char cl[64];
        int n = snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", blen);
        buf_append(&c->out, &c->out_len, &c->out_cap, cl, (size_t)n);
    }
    buf_append(&c->out, &c->out_len, &c->out_cap, "\r\n", 2);
    if (blen)
        buf_append(&c->out, &c->out_len, &c->out_cap, w->bodybuf, blen);
    c->out_off = 0;
}

static void reset_response(conn_t *c)
{
    c->rs = RS_STATUS;
    c->status = 0;
    c->chunked = c->has_cl = c->conn_close = c->is_sse = c->scan = false;
    c->remaining = 0;
    c->resp_bytes = 0;
    c->llen = 0;
    c->slen = 0;
    c->strunc = false;
    c->events = 0;
    c->sse_error = false;
    c->ttfe = -1;
    c->relay_seen = false;
    c->relay_ns = 0;
    c->sniplen = 0;
}

static void flush_out(conn_t *c, int64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (r > 0) {
            c->out_off += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* EPOLLOUT (edge) resumes */
        int e = r < 0 ? errno : EPIPE;
        if ((e == EPIPE || e == ECONNRESET) && try_silent_retry(c, now))
            return;
        conn_fail_errno(c, now, ERR_CONN, "send", e);
        return;
    }
}

static void start_request(conn_t *c, int64_t now)
{
    if (g.open_idle) {
        if (c->nreq > 0 || c->in_flight)
            return; /* one request per connection */
        c->measured = true;
    } else {
        if (now >= t_end || atomic_load(&g_stop))
            return;
        c->measured = now >= t_measure;
        if (c->measured && g.requests > 0) {
            if (atomic_fetch_add(&g_started, 1) >= g.requests) {
                atomic_fetch_sub(&g_started, 1);
                return; /* limit reached: the connection stays idle */
            }
        }
    }
    build_request(c);
    reset_response(c);
    c->in_flight = true;
    c->req_start = now;
    flush_out(c, now);
}

/* ---------------------------------------------------------------- response parsing */

/* --relay-latency: an event line whose text delta starts with "t=<ns>;" (the mock upstream's
 * stamp, taken when it wrote its first content delta). ChatKit's text_delta has "delta":"t=…";
 * "content":"t=…" matches the mock's own chunks, so loadgen pointed straight at the mock measures
 * the baseline (loopback and wake-ups, no relay). */
static void relay_scan(conn_t *c, const char *line, size_t len, int64_t now)
{
    static const char *const keys[] = {"\"delta\":\"t=", "\"delta\": \"t=", "\"content\":\"t=", "\"content\": \"t="};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        size_t kl = strlen(keys[k]);
        const char *p = memmem(line, len, keys[k], kl);
        if (!p)
            continue;
        const char *d = p + kl, *end = line + len;
        int64_t stamp = 0;
        int nd = 0;
        while (d < end && *d >= '0' && *d <= '9' && nd < 19) {
            stamp = stamp * 10 + (*d - '0');
            d++, nd++;
        }
        if (nd == 0 || d >= end || *d != ';')
            continue;
        c->relay_seen = true;
        c->relay_ns = now - stamp;
        if (g.open_idle) { /* the stream stays open: record now; it counts as ready (relaying) */
            hist_add(&c->w->relay, c->relay_ns);
            if (!c->ready) {
                c->ready = true;
                atomic_fetch_add(&g_ready, 1);
            }
        }
        return;
    }
}

static void sse_line(conn_t *c, const char *line, size_t len, int64_t now)
{
    if (!line)
        return;
    if (len && line[len - 1] == '\r')
        len--;
    if (len < 5 || memcmp(line, "data:", 5) != 0)
        return;
    if (c->events++ == 0)
        c->ttfe = now - c->req_start;
    if (g.relay_latency && !c->relay_seen)
        relay_scan(c, line + 5, len - 5, now);
    if (!c->sse_error && (memmem(line, len, "\"type\":\"error\"", 14) || memmem(line, len, "\"type\": \"error\"", 15))) {
        c->sse_error = true;
        c->sniplen = len < sizeof c->snip - 1 ? len : sizeof c->snip - 1;
        memcpy(c->snip, line, c->sniplen);
    }
}

static void body_bytes(conn_t *c, const char *p, size_t n, int64_t now)
{
    c->resp_bytes += n;
    if (c->status != 200 && c->sniplen < sizeof c->snip - 1) {
        size_t k = sizeof c->snip - 1 - c->sniplen;
        if (k > n)
            k = n;
        memcpy(c->snip + c->sniplen, p, k);
        c->sniplen += k;
    }
    if (!c->scan)
        return;
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t seg = nl ? (size_t)(nl - p) : n;
        if (nl && c->slen == 0 && !c->strunc) {
            sse_line(c, p, seg, now); /* whole line in this read: no copy */
        } else {
            size_t room = MAX_SSE_LINE - c->slen;
            size_t k = seg < room ? seg : room;
            if (k < seg)
                c->strunc = true;
            buf_append(&c->sbuf, &c->slen, &c->scap, p, k);
            if (nl) {
                sse_line(c, c->sbuf, c->slen, now);
                c->slen = 0;
                c->strunc = false;
            }
        }
        if (!nl)
            break;
        p += seg + 1;
        n -= seg + 1;
    }
}

/* the body ended: an SSE line without its final newline still counts */
static void body_end(conn_t *c, int64_t now)
{
    if (c->scan && (c->slen || c->strunc)) {
        sse_line(c, c->sbuf, c->slen, now);
        c->slen = 0;
        c->strunc = false;
    }
}

/* Gets the next complete line (without CR LF) from p[*off..n), joining a partial line kept from
 * earlier reads. 1: got a line; 0: all consumed, no line yet; -1: line too long. */
static int take_line(conn_t *c, const char *p, size_t n, size_t *off, const char **line, size_t *len)
{
    const char *s = p + *off;
    size_t avail = n - *off;
    const char *nl = memchr(s, '\n', avail);
    size_t k = nl ? (size_t)(nl - s) : avail;
    if (c->llen + k > MAX_LINE)
        return -1;
    if (!nl) {
        buf_append(&c->lbuf, &c->llen, &c->lcap, s, k);
        *off = n;
        return 0;
    }
    if (c->llen) {
        buf_append(&c->lbuf, &c->llen, &c->lcap, s, k);
        *line = c->lbuf;
        *len = c->llen;
        c->llen = 0; /* the bytes stay valid until the next append */
    } else {
        *line = s;
        *len = k;
    }
    *off += k + 1;
    if (*len && (*line)[*len - 1] == '\r')
        (*len)--;
    return 1;
}

static int parse_decimal(const char *s, size_t n, uint64_t *out)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n > 18)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

static void headers_done_hook(conn_t *c)
{
    if (g.open_idle && c->status == 200 && !c->ready && !g.relay_latency) {
        c->ready = true;
        atomic_fetch_add(&g_ready, 1);
    }
}

/* 0: continue; 1: response complete; -1: protocol error */
static int handle_line(conn_t *c, const char *line, size_t len)
{
    switch (c->rs) {
    case RS_STATUS:
        if (len == 0)
            return 0; /* tolerate a stray empty line */
        if (len < 12 || memcmp(line, "HTTP/1.", 7) != 0 || line[8] != ' ' || !isdigit((unsigned char)line[9]) ||
            !isdigit((unsigned char)line[10]) || !isdigit((unsigned char)line[11]))
            return -1;
        c->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
        if (line[7] == '0')
            c->conn_close = true; /* HTTP/1.0: no keep-alive unless we parse it; keep it simple */
        c->rs = RS_HEADERS;
        return 0;
    case RS_HEADERS: {
        if (len == 0) {
            if (c->status >= 100 && c->status < 200 && c->status != 101) {
                c->rs = RS_STATUS; /* interim response: the real one follows */
                c->chunked = c->has_cl = c->is_sse = false;
                return 0;
            }
            c->scan = g.sse || c->is_sse;
            headers_done_hook(c);
            if (strcmp(g.method, "HEAD") == 0 || c->status == 204 || c->status == 304)
                return 1;
            if (c->chunked) {
                c->rs = RS_CHUNK_SIZE;
            } else if (c->has_cl) {
                if (c->remaining == 0)
                    return 1;
                c->rs = RS_BODY_CL;
            } else {
                c->rs = RS_BODY_EOF;
                c->conn_close = true;
            }
            return 0;
        }
        const char *colon = memchr(line, ':', len);
        if (!colon)
            return -1;
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        size_t vlen = len - nlen - 1;
        if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
            if (parse_decimal(v, vlen, &c->remaining) < 0)
                return -1;
            c->has_cl = true;
        } else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
            if (ci_contains(v, vlen, "chunked"))
                c->chunked = true;
        } else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
            if (ci_contains(v, vlen, "close"))
                c->conn_close = true;
            else if (ci_contains(v, vlen, "keep-alive"))
                c->conn_close = false;
        } else if (nlen == 12 && strncasecmp(line, "content-type", 12) == 0) {
            if (ci_contains(v, vlen, "text/event-stream"))
                c->is_sse = true;
        }
        return 0;
    }
    case RS_CHUNK_SIZE: {
        uint64_t size = 0;
        size_t i = 0;
        for (; i < len; i++) {
            int d;
            char ch = line[i];
            if (ch >= '0' && ch <= '9')
                d = ch - '0';
            else if (ch >= 'a' && ch <= 'f')
                d = ch - 'a' + 10;
            else if (ch >= 'A' && ch <= 'F')
                d = ch - 'A' + 10;
            else
                break;
            if (size >> 56)
                return -1; /* absurdly large */
            size = size * 16 + (uint64_t)d;
        }
        if (i == 0)
            return -1;
        for (; i < len; i++) /* only extensions (;...) or whitespace may follow */
            if (line[i] == ';')
                break;
            else if (line[i] != ' ' && line[i] != '\t')
                return -1;
        if (size == 0) {
            c->rs = RS_TRAILERS;
        } else {
            c->rs = RS_CHUNK_DATA;
            c->remaining = size;
        }
        return 0;
    }
    case RS_CHUNK_CRLF:
        if (len != 0)
            return -1; /* chunk data longer than its size */
        c->rs = RS_CHUNK_SIZE;
        return 0;
    case RS_TRAILERS:
        return len == 0 ? 1 : 0;
    default:
        return -1;
    }
}

/* Feeds received bytes. Returns 1 when the response completed (*used: bytes consumed),
 * 0 when more bytes are needed (all consumed), -1 on a protocol error. */
static int parse_response(conn_t *c, const char *p, size_t n, size_t *used, int64_t now)
{
    size_t off = 0;
    while (off < n) {
        switch (c->rs) {
        case RS_BODY_CL:
        case RS_CHUNK_DATA: {
            size_t k = n - off;
            if (k > c->remaining)
                k = (size_t)c->remaining;
            body_bytes(c, p + off, k, now);
            off += k;
            c->remaining -= k;
            if (c->remaining == 0) {
                if (c->rs == RS_BODY_CL) {
                    body_end(c, now);
                    *used = off;
                    return 1;
                }
                c->rs = RS_CHUNK_CRLF;
            }
            break;
        }
        case RS_BODY_EOF:
            body_bytes(c, p + off, n - off, now);
            off = n;
            break;
        default: {
            const char *line;
            size_t len;
            int r = take_line(c, p, n, &off, &line, &len);
            if (r < 0)
                return -1;
            if (r == 0)
                break;
            r = handle_line(c, line, len);
            if (r < 0)
                return -1;
            if (r == 1) {
                body_end(c, now);
                *used = off;
                return 1;
            }
            break;
        }
        }
    }
    *used = off;
    return 0;
}

static void record_completion(conn_t *c, int64_t now)
{
    worker_t *w = c->w;
    c->in_flight = false;
    c->nreq++;
    bool count = g.open_idle || (c->measured && now <= t_end);
    if (!count)
        return;
    w->completed++;
    w->last_completion = now;
    hist_add(&w->lat, now - c->req_start);
    w->status_counts[c->status < 600 ? c->status : 599]++;
    if (c->status != 200) {
        char snip[sizeof c->snip];
        size_t k = 0;
        for (size_t i = 0; i < c->sniplen; i++)
            snip[k++] = (c->snip[i] == '\r' || c->snip[i] == '\n') ? ' ' : c->snip[i];
        snip[k] = 0;
        note_error(w, ERR_STATUS, "HTTP %d %s", c->status, snip);
    } else if (g.sse && c->sse_error) {
        c->snip[c->sniplen] = 0;
        note_error(w, ERR_SSE_ERROR, "%s", c->snip);
    } else if (g.sse && c->events == 0) {
        note_error(w, ERR_SSE_EMPTY, "HTTP 200 with no data: events (%llu body bytes)", (unsigned long long)c->resp_bytes);
    }
    if (g.sse) {
        w->events += c->events;
        w->sse_responses++;
        if (c->ttfe >= 0)
            hist_add(&w->ttfe, c->ttfe);
        if (g.relay_latency && c->status == 200) {
            if (!c->relay_seen)
                w->relay_missing++;
            else if (!g.open_idle) /* --open-idle recorded it on arrival */
                hist_add(&w->relay, c->relay_ns);
        }
    }
}

/* a response completed; leftover bytes after it are a protocol error */
static void on_response(conn_t *c, int64_t now, size_t leftover)
{
    record_completion(c, now);
    if (g.open_idle) {
        conn_recycle(c, now, 0); /* the stream ended early: closed, not reopened */
        return;
    }
    if (leftover) {
        conn_fail(c, now, ERR_PROTO, "unexpected bytes after a complete response");
        return;
    }
    if (c->conn_close || c->out_off < c->out_len) {
        conn_recycle(c, now, 0);
        return;
    }
    start_request(c, now);
}

static void on_readable(conn_t *c, char *buf, size_t bufsz)
{
    worker_t *w = c->w;
    for (;;) {
        ssize_t r = recv(c->fd, buf, bufsz, 0);
        int64_t now = mono_ns();
        if (r > 0) {
            w->bytes_in += (uint64_t)r;
            if (!c->in_flight) {
                conn_fail(c, now, ERR_PROTO, "bytes received with no request in flight");
                return;
            }
            size_t used = 0;
            int pr = parse_response(c, buf, (size_t)r, &used, now);
            if (pr < 0) {
                conn_fail(c, now, ERR_PROTO, "malformed HTTP response");
                return;
            }
            if (pr == 1) {
                on_response(c, now, (size_t)r - used);
                if (c->state != CS_OPEN || c->fd < 0)
                    return; /* closed (maybe reopened: its own events will come) */
            }
            continue;
        }
        if (r == 0) {
            if (c->in_flight && c->rs == RS_BODY_EOF) {
                body_end(c, now);
                record_completion(c, now);
                conn_recycle(c, now, 0);
            } else if (!c->in_flight) {
                conn_recycle(c, now, 0); /* idle keep-alive connection closed by the server */
            } else if (!try_silent_retry(c, now)) {
                conn_fail(c, now, ERR_CONN, "connection closed by the server mid-response");
            }
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        int e = errno;
        if (e == ECONNRESET && try_silent_retry(c, now))
            return;
        conn_fail_errno(c, now, ERR_CONN, "recv", e);
        return;
    }
}

static void on_event(conn_t *c, uint32_t events, char *buf, size_t bufsz)
{
    int64_t now = mono_ns();
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t elen = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            err = errno;
        if (err) {
            conn_fail_errno(c, now, ERR_CONNECT, "connect", err);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        c->state = CS_OPEN;
        if (g.open_idle)
            atomic_fetch_add(&g_open, 1);
        start_request(c, now);
        if (c->state != CS_OPEN)
            return;
    }
    if (c->state != CS_OPEN)
        return;
    if ((events & EPOLLOUT) && c->in_flight && c->out_off < c->out_len) {
        flush_out(c, now);
        if (c->state != CS_OPEN)
            return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(c, buf, bufsz);
}

/* timeouts, reconnects, and whether a --requests run is over for this worker */
static void scan_conns(worker_t *w, int64_t now)
{
    int busy = 0;
    int64_t tmo = (int64_t)(g.timeout * NS_PER_S);
    for (int i = 0; i < w->nconns; i++) {
        conn_t *c = &w->conns[i];
        switch (c->state) {
        case CS_CLOSED:
            if (!g.open_idle && now >= c->retry_at && now < t_end) {
                conn_open(c, now);
                busy++;
            }
            break;
        case CS_CONNECTING:
            if (now - c->connect_start > tmo) {
                conn_fail(c, now, ERR_CONNECT, "connect timed out");
            }
            busy++;
            break;
        case CS_OPEN:
            if (c->in_flight) {
                if (!g.open_idle && now - c->req_start > tmo)
                    conn_fail(c, now, ERR_TIMEOUT, "no complete response within --timeout");
                busy++;
            } else if (!g.open_idle && now < t_end) {
                start_request(c, now); /* e.g. the warmup ended while it waited */
                if (c->in_flight)
                    busy++;
            }
            break;
        case CS_DONE:
            break;
        }
    }
    if (!g.open_idle && g.requests > 0 && busy == 0 && atomic_load(&g_started) >= g.requests)
        w->finished = true;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    enum { MAXEV = 256 };
    struct epoll_event evs[MAXEV];
    static __thread char rbuf[64 * 1024];
    int64_t now = mono_ns();
    for (int i = 0; i < w->nconns && !atomic_load(&g_stop); i++)
        conn_open(&w->conns[i], now);
    int64_t next_scan = now + SCAN_NS;
    for (;;) {
        now = mono_ns();
        if (atomic_load(&g_stop))
            break;
        if (!g.open_idle && now >= t_end)
            break;
        if (now >= next_scan) {
            scan_conns(w, now);
            next_scan = now + SCAN_NS;
            if (w->finished)
                break;
        }
        int wait_ms = 10;
        if (!g.open_idle && t_end - now < wait_ms * NS_PER_MS)
            wait_ms = (int)((t_end - now) / NS_PER_MS) + 1;
        int n = epoll_wait(w->epfd, evs, MAXEV, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, rbuf, sizeof rbuf);
    }
    now = mono_ns();
    if (w->finished)
        w->exit_time = w->last_completion > t_measure ? w->last_completion : t_measure;
    else
        w->exit_time = now < t_end || g.open_idle ? now : t_end;
    for (int i = 0; i < w->nconns; i++) {
        conn_t *c = &w->conns[i];
        if (c->fd >= 0) {
            if (c->state == CS_OPEN && g.open_idle)
                atomic_fetch_sub(&g_open, 1);
            if (c->ready)
                atomic_fetch_sub(&g_ready, 1);
            c->ready = false;
            close(c->fd);
            c->fd = -1;
        }
        c->state = CS_DONE;
    }
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static void usage(FILE *f)
{
    fputs(
        "usage: loadgen --url http://127.0.0.1:PORT/PATH [options]\n"
        "\n"
        "  --url URL            target; the host must be a loopback address (127.x.x.x, localhost)\n"
        "  --method M           request method (default POST with a body, GET without)\n"
        "  -H, --header 'K: V'  extra request header (repeatable)\n"
        "  --body JSON          request body; {{RAND}} becomes 16 fresh random hex digits per request,\n"
        "                       {{THREAD}} the next id of --threads-file (round robin)\n"
        "  --body-file F        request body read from a file (same placeholders)\n"
        "  --threads-file F     ids for {{THREAD}}, one per line\n"
        "  -c, --concurrency N  keep-alive connections (default 1)\n"
        "  -d, --duration S     measured seconds (default 10, at most 3600)\n"
        "  -n, --requests N     stop after N measured requests (default: no count limit)\n"
        "  --warmup S           seconds of load before measuring (default 0, at most 600)\n"
        "  -t, --threads K      worker threads, connections split between them (default 1)\n"
        "  --sse                responses are SSE streams: count data: events, time to first event;\n"
        "                       an error is a non-200, a \"type\":\"error\" event or no event at all\n"
        "  --relay-latency      with --sse: time the first text delta whose text starts with\n"
        "                       \"t=<CLOCK_MONOTONIC ns>;\" (bench/mock_upstream's stamp) from that stamp\n"
        "                       to its arrival here: the relay's added latency (p50/p90/p99/max);\n"
        "                       with --open-idle a stream counts as ready once that delta arrived\n"
        "  --timeout S          per request and per connect (default 60)\n"
        "  --json               print one JSON object instead of the human-readable report\n"
        "  --open-idle N        instead of load: open N connections, send the request once on each,\n"
        "                       read and discard what comes; print how many are open each second\n"
        "  --hold S             with --open-idle: hold the streams S seconds after all are open\n"
        "                       (or after --ramp-timeout, default 30), then close them and exit\n"
        "  -q, --quiet          no progress lines on stderr\n"
        "\n"
        "Exit status: 0 when at least one request succeeded (--open-idle: all N streams opened),\n"
        "1 otherwise, 2 on a usage or setup error.\n",
        f);
}

static double parse_seconds(const char *opt, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        die("%s: expected seconds in [%g, %g], got '%s'", opt, min, max, s);
    return v;
}

static long long parse_count(const char *opt, const char *s, long long min, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        die("%s: expected an integer in [%lld, %lld], got '%s'", opt, min, max, s);
    return v;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    char tmp[65536];
    size_t r;
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&buf, &n, &cap, tmp, r);
    if (ferror(f))
        die("%s: read error", path);
    fclose(f);
    buf_append(&buf, &n, &cap, "", 1);
    *len = n - 1;
    return buf;
}

static void parse_url(const char *url)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0)
        die("--url: only http:// URLs are supported");
    p += 7;
    const char *slash = strchr(p, '/');
    const char *qmark = strchr(p, '?');
    const char *hend = slash ? slash : (qmark ? qmark : p + strlen(p));
    if (qmark && qmark < hend)
        hend = qmark;
    size_t hlen = (size_t)(hend - p);
    char hostport[sizeof g.host];
    if (hlen == 0 || hlen >= sizeof hostport)
        die("--url: bad host");
    memcpy(hostport, p, hlen);
    hostport[hlen] = 0;
    char *colon = strrchr(hostport, ':');
    g.port = 80;
    if (colon) {
        *colon = 0;
        g.port = (int)parse_count("--url port", colon + 1, 1, 65535);
    }
    snprintf(g.host, sizeof g.host, "%s", hostport);
    if (*hend == '/')
        snprintf(g.path, sizeof g.path, "%s", hend);
    else
        snprintf(g.path, sizeof g.path, "/%s", hend);
    if (strlen(hend) + 2 > sizeof g.path)
        die("--url: path too long");

    memset(&g.addr, 0, sizeof g.addr);
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)g.port);
    const char *ip = strcmp(g.host, "localhost") == 0 ? "127.0.0.1" : g.host;
    if (inet_pton(AF_INET, ip, &g.addr.sin_addr) != 1)
        die("--url: the host must be an IPv4 loopback address or localhost, got '%s'", g.host);
    if ((ntohl(g.addr.sin_addr.s_addr) >> 24) != 127)
        die("--url: only loopback addresses (127.0.0.0/8) may be targeted, got '%s'", g.host);
}

static bool has_header(const char *name)
{
    for (int i = 0; i < g.nheaders; i++)
        if (ci_prefix(g.headers[i], strlen(g.headers[i]), name) && g.headers[i][strlen(name)] == ':')
            return true;
    return false;
}

static void build_templates(void)
{
    /* request head */
    char *h = NULL;
    size_t n = 0, cap = 0;
    char line[9000];
    int k = snprintf(line, sizeof line, "%s %s HTTP/1.1\r\n", g.method, g.path);
    buf_append(&h, &n, &cap, line, (size_t)k);
    if (!has_header("host")) {
        k = snprintf(line, sizeof line, "Host: %s:%d\r\n", g.host, g.port);
        buf_append(&h, &n, &cap, line, (size_t)k);
    }
    for (int i = 0; i < g.nheaders; i++) {
        const char *hd = g.headers[i];
        if (!strchr(hd, ':') || strpbrk(hd, "\r\n"))
            die("--header: expected 'Name: value', got '%s'", hd);
        if (ci_prefix(hd, strlen(hd), "content-length:"))
            die("--header: Content-Length is computed per request");
        buf_append(&h, &n, &cap, hd, strlen(hd));
        buf_append(&h, &n, &cap, "\r\n", 2);
    }
    if (g.have_body && !has_header("content-type")) {
        const char *ct = "Content-Type: application/json\r\n";
        buf_append(&h, &n, &cap, ct, strlen(ct));
    }
    if (g.sse && !has_header("accept")) {
        const char *ac = "Accept: text/event-stream\r\n";
        buf_append(&h, &n, &cap, ac, strlen(ac));
    }
    if (!has_header("connection")) {
        const char *ka = "Connection: keep-alive\r\n";
        buf_append(&h, &n, &cap, ka, strlen(ka));
    }
    g.head = h;
    g.head_len = n;

    /* body segments */
    size_t segcap = 8;
    g.segs = xcalloc(segcap, sizeof *g.segs);
    const char *p = g.have_body ? g.body : "";
    const char *end = p + (g.have_body ? g.body_len : 0);
    bool uses_thread = false;
    while (p < end) {
        const char *r = memmem(p, (size_t)(end - p), "{{RAND}}", 8);
        const char *t = memmem(p, (size_t)(end - p), "{{THREAD}}", 10);
        const char *m = r && (!t || r < t) ? r : t;
        if (g.nsegs + 2 > segcap) {
            segcap *= 2;
            g.segs = xrealloc(g.segs, segcap * sizeof *g.segs);
        }
        if (!m) {
            g.segs[g.nsegs++] = (struct seg){SEG_LIT, p, (size_t)(end - p)};
            break;
        }
        if (m > p)
            g.segs[g.nsegs++] = (struct seg){SEG_LIT, p, (size_t)(m - p)};
        if (m == r) {
            g.segs[g.nsegs++] = (struct seg){SEG_RAND, NULL, 0};
            p = m + 8;
        } else {
            g.segs[g.nsegs++] = (struct seg){SEG_THREAD, NULL, 0};
            uses_thread = true;
            p = m + 10;
        }
    }
    if (uses_thread && g.nthread_ids == 0)
        die("the body uses {{THREAD}}: give --threads-file with at least one id");
}

static void load_thread_ids(const char *path)
{
    size_t len;
    char *text = read_file(path, &len);
    size_t cap = 16;
    g.thread_ids = xcalloc(cap, sizeof *g.thread_ids);
    char *save = NULL;
    for (char *tok = strtok_r(text, "\r\n", &save); tok; tok = strtok_r(NULL, "\r\n", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        size_t l = strlen(tok);
        while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
            tok[--l] = 0;
        if (!l)
            continue;
        if (g.nthread_ids == cap) {
            cap *= 2;
            g.thread_ids = xrealloc(g.thread_ids, cap * sizeof *g.thread_ids);
        }
        g.thread_ids[g.nthread_ids++] = tok;
    }
    if (g.nthread_ids == 0)
        die("%s: no ids", path);
}

static void raise_nofile(long long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit: %s", strerror(errno));
    if ((long long)rl.rlim_cur >= need)
        return;
    rlim_t want = (rlim_t)need;
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
        die("need %lld file descriptors but the hard limit is %llu", need, (unsigned long long)rl.rlim_max);
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit(RLIMIT_NOFILE, %lld): %s", need, strerror(errno));
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_stop, 1);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    enum {
        O_URL = 1000, O_METHOD, O_BODY, O_BODY_FILE, O_WARMUP, O_SSE, O_JSON, O_OPEN_IDLE, O_HOLD,
        O_TIMEOUT, O_THREADS_FILE, O_RAMP, O_RELAY, O_HELP
    };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, O_URL},
        {"method", required_argument, NULL, O_METHOD},
        {"header", required_argument, NULL, 'H'},
        {"body", required_argument, NULL, O_BODY},
        {"body-file", required_argument, NULL, O_BODY_FILE},
        {"threads-file", required_argument, NULL, O_THREADS_FILE},
        {"concurrency", required_argument, NULL, 'c'},
        {"duration", required_argument, NULL, 'd'},
        {"requests", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"threads", required_argument, NULL, 't'},
        {"sse", no_argument, NULL, O_SSE},
        {"relay-latency", no_argument, NULL, O_RELAY},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"json", no_argument, NULL, O_JSON},
        {"open-idle", required_argument, NULL, O_OPEN_IDLE},
        {"hold", required_argument, NULL, O_HOLD},
        {"ramp-timeout", required_argument, NULL, O_RAMP},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    g.headers = xcalloc((size_t)argc, sizeof *g.headers);
    const char *threads_file = NULL;
    bool hold_given = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "H:c:d:n:t:q", longopts, NULL)) != -1) {
        switch (opt) {
        case O_URL: g.url = optarg; break;
        case O_METHOD: g.method = optarg; break;
        case 'H': g.headers[g.nheaders++] = optarg; break;
        case O_BODY:
            g.body = optarg;
            g.body_len = strlen(optarg);
            g.have_body = true;
            break;
        case O_BODY_FILE:
            g.body = read_file(optarg, &g.body_len);
            g.have_body = true;
            break;
        case O_THREADS_FILE: threads_file = optarg; break;
        case 'c': g.concurrency = (int)parse_count("--concurrency", optarg, 1, 100000); break;
        case 'd': g.duration = parse_seconds("--duration", optarg, 0.001, 3600); break;
        case 'n': g.requests = parse_count("--requests", optarg, 1, 1000000000LL); break;
        case O_WARMUP: g.warmup = parse_seconds("--warmup", optarg, 0, 600); break;
        case 't': g.threads = (int)parse_count("--threads", optarg, 1, 256); break;
        case O_SSE: g.sse = true; break;
        case O_RELAY: g.relay_latency = true; break;
        case O_TIMEOUT: g.timeout = parse_seconds("--timeout", optarg, 0.001, 3600); break;
        case O_JSON: g.json = true; break;
        case O_OPEN_IDLE: g.open_idle = (int)parse_count("--open-idle", optarg, 1, 100000); break;
        case O_HOLD:
            g.hold = parse_seconds("--hold", optarg, 0, 3600);
            hold_given = true;
            break;
        case O_RAMP: g.ramp_timeout = parse_seconds("--ramp-timeout", optarg, 0, 600); break;
        case 'q': g.quiet = true; break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);
    if (!g.url)
        die("--url is required (see --help)");
    if (g.open_idle && !hold_given)
        die("--open-idle needs --hold SECONDS");
    if (!g.open_idle && hold_given)
        die("--hold goes with --open-idle");
    if (g.relay_latency && !g.sse)
        die("--relay-latency goes with --sse");
    parse_url(g.url);
    if (!g.method)
        g.method = g.have_body ? "POST" : "GET";
    for (const char *m = g.method; *m; m++)
        if (!isupper((unsigned char)*m))
            die("--method: expected an upper-case token, got '%s'", g.method);
    if (threads_file)
        load_thread_ids(threads_file);
    build_templates();

    int nconns = g.open_idle ? g.open_idle : g.concurrency;
    if (g.threads > nconns)
        g.threads = nconns;
    raise_nofile((long long)nconns + g.threads + 64);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint64_t)mono_ns() ^ ((uint64_t)getpid() << 32);

    t_start = mono_ns();
    t_measure = t_start + (int64_t)(g.warmup * NS_PER_S);
    t_end = t_measure + (int64_t)(g.duration * NS_PER_S);

    worker_t *workers = xcalloc((size_t)g.threads, sizeof *workers);
    conn_t *conns = xcalloc((size_t)nconns, sizeof *conns);
    for (int t = 0; t < g.threads; t++) {
        worker_t *w = &workers[t];
        w->id = t;
        int lo = (int)((long long)nconns * t / g.threads), hi = (int)((long long)nconns * (t + 1) / g.threads);
        w->conns = conns + lo;
        w->nconns = hi - lo;
        w->rng = (seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(t + 1))) | 1;
        hist_init(&w->lat);
        hist_init(&w->ttfe);
        hist_init(&w->relay);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
            die("epoll_create1: %s", strerror(errno));
        for (int i = 0; i < w->nconns; i++) {
            w->conns[i].w = w;
            w->conns[i].fd = -1;
            w->conns[i].state = CS_CLOSED;
        }
    }
    for (int t = 0; t < g.threads; t++)
        if (pthread_create(&workers[t].th, NULL, worker_main, &workers[t]) != 0)
            die("pthread_create failed");

    /* --open-idle: watch the ramp, then hold */
    int ready_at_hold = 0, open_at_hold = 0, min_open = 0, open_at_end = 0;
    double ramp_s = 0;
    if (g.open_idle) {
        int64_t hold_end = -1, next_print = t_start + NS_PER_S;
        int64_t ramp_deadline = t_start + (int64_t)(g.ramp_timeout * NS_PER_S);
        while (!atomic_load(&g_stop)) {
            struct timespec ts = {0, 20 * NS_PER_MS};
            nanosleep(&ts, NULL);
            int64_t now = mono_ns();
            int open = atomic_load(&g_open), ready = atomic_load(&g_ready);
            if (hold_end < 0 && (ready >= g.open_idle || now >= ramp_deadline)) {
                hold_end = now + (int64_t)(g.hold * NS_PER_S);
                ready_at_hold = ready;
                open_at_hold = open;
                min_open = open;
                ramp_s = (double)(now - t_start) / NS_PER_S;
                if (!g.quiet)
                    fprintf(stderr, "open-idle: %s: %d/%d streams open (%d %s) after %.2f s, holding %.1f s\n",
                            ready >= g.open_idle ? "ready" : "ramp timeout", open, g.open_idle, ready,
                            g.relay_latency ? "relaying" : "with 200 headers", ramp_s, g.hold);
            }
            if (hold_end >= 0 && open < min_open)
                min_open = open;
            if (now >= next_print) {
                if (!g.quiet)
                    fprintf(stderr, "open-idle: t=%.1fs open=%d ready=%d closed=%d errors=%d\n",
                            (double)(now - t_start) / NS_PER_S, open, ready, atomic_load(&g_closed), atomic_load(&g_errors));
                next_print += NS_PER_S;
            }
            if (hold_end >= 0 && now >= hold_end)
                break;
        }
        open_at_end = atomic_load(&g_open);
        atomic_store(&g_stop, 1);
    }
    for (int t = 0; t < g.threads; t++)
        pthread_join(workers[t].th, NULL);

    /* aggregate */
    hist_t lat, ttfe, relay;
    hist_init(&lat);
    hist_init(&ttfe);
    hist_init(&relay);
    uint64_t relay_missing = 0;
    uint64_t completed = 0, events = 0, sse_resp = 0, bytes_in = 0, reconnects = 0, retries = 0, errors = 0;
    uint64_t err[ERR__N] = {0}, status_counts[600] = {0};
    int64_t exit_time = t_measure;
    const char *first_error = "";
    for (int t = 0; t < g.threads; t++) {
        worker_t *w = &workers[t];
        hist_merge(&lat, &w->lat);
        hist_merge(&ttfe, &w->ttfe);
        hist_merge(&relay, &w->relay);
        relay_missing += w->relay_missing;
        completed += w->completed;
        events += w->events;
        sse_resp += w->sse_responses;
        bytes_in += w->bytes_in;
        reconnects += w->reconnects;
        retries += w->retries;
        for (int k = 0; k < ERR__N; k++) {
            err[k] += w->err[k];
            errors += w->err[k];
        }
        for (int s = 0; s < 600; s++)
            status_counts[s] += w->status_counts[s];
        if (w->exit_time > exit_time)
            exit_time = w->exit_time;
        if (!first_error[0] && w->first_error[0])
            first_error = w->first_error;
    }
    double duration = (double)(exit_time - t_measure) / NS_PER_S;
    if (g.open_idle)
        duration = (double)(exit_time - t_start) / NS_PER_S;
    if (duration <= 0)
        duration = 1e-9;
    double rps = (double)completed / duration;
    double epr = sse_resp ? (double)events / (double)sse_resp : 0;
    uint64_t ok = completed - (err[ERR_STATUS] + err[ERR_SSE_ERROR] + err[ERR_SSE_EMPTY]);

    FILE *o = stdout;
    if (g.json) {
        fprintf(o, "{\"mode\":\"%s\",\"url\":", g.open_idle ? "open-idle" : "load");
        json_str(o, g.url);
        fprintf(o, ",\"method\":\"%s\",\"sse\":%s,\"threads\":%d", g.method, g.sse ? "true" : "false", g.threads);
        if (g.open_idle) {
            fprintf(o, ",\"connections\":%d,\"hold_s\":%.3f,\"ramp_s\":%.3f,\"ready_at_hold\":%d,\"open_at_hold\":%d,"
                       "\"min_open_during_hold\":%d,\"open_at_end\":%d,\"closed_early\":%d",
                    g.open_idle, g.hold, ramp_s, ready_at_hold, open_at_hold, min_open, open_at_end, atomic_load(&g_closed));
        } else {
            fprintf(o, ",\"concurrency\":%d,\"warmup_s\":%.3f", g.concurrency, g.warmup);
        }
        fprintf(o, ",\"duration_s\":%.3f,\"requests\":%llu,\"ok\":%llu,\"errors\":%llu,\"errors_by_kind\":{", duration,
                (unsigned long long)completed, (unsigned long long)ok, (unsigned long long)errors);
        for (int k = 0; k < ERR__N; k++)
            fprintf(o, "%s\"%s\":%llu", k ? "," : "", err_names[k], (unsigned long long)err[k]);
        fprintf(o, "},\"status_counts\":{");
        bool first = true;
        for (int s = 0; s < 600; s++)
            if (status_counts[s]) {
                fprintf(o, "%s\"%d\":%llu", first ? "" : ",", s, (unsigned long long)status_counts[s]);
                first = false;
            }
        fprintf(o, "},\"rps\":%.2f,\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", rps,
                lat.total ? (double)lat.sum / (double)lat.total / NS_PER_MS : 0.0, hist_pct_ms(&lat, 50),
                hist_pct_ms(&lat, 90), hist_pct_ms(&lat, 99), (double)lat.max / NS_PER_MS);
        if (g.sse)
            fprintf(o, ",\"events_per_response\":%.3f,\"ttfe_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}", epr,
                    hist_pct_ms(&ttfe, 50), hist_pct_ms(&ttfe, 90), hist_pct_ms(&ttfe, 99), (double)ttfe.max / NS_PER_MS);
        if (g.relay_latency)
            fprintf(o,
                    ",\"relay_latency_ms\":{\"count\":%llu,\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"max\":%.4f},"
                    "\"relay_missing\":%llu",
                    (unsigned long long)relay.total,
                    relay.total ? (double)relay.sum / (double)relay.total / NS_PER_MS : 0.0, hist_pct_ms(&relay, 50),
                    hist_pct_ms(&relay, 90), hist_pct_ms(&relay, 99), (double)relay.max / NS_PER_MS,
                    (unsigned long long)relay_missing);
        fprintf(o, ",\"bytes_received\":%llu,\"reconnects\":%llu,\"retries\":%llu,\"first_error\":",
                (unsigned long long)bytes_in, (unsigned long long)reconnects, (unsigned long long)retries);
        json_str(o, first_error);
        fputs("}\n", o);
    } else {
        if (g.open_idle) {
            fprintf(o, "open-idle %s %s%s: %d connections, ramp %.2f s, hold %.1f s\n", g.method, g.url, g.sse ? " (sse)" : "",
                    g.open_idle, ramp_s, g.hold);
            fprintf(o, "  at hold start: %d open, %d %s; lowest open during hold: %d; open at end: %d\n",
                    open_at_hold, ready_at_hold, g.relay_latency ? "relaying" : "with 200 headers", min_open, open_at_end);
            fprintf(o, "  streams that ended early: %d\n", atomic_load(&g_closed));
        } else {
            fprintf(o, "%s %s%s: %d connections, %d thread%s, warmup %.1f s\n", g.method, g.url, g.sse ? " (sse)" : "",
                    g.concurrency, g.threads, g.threads == 1 ? "" : "s", g.warmup);
            fprintf(o, "  requests     %llu in %.2f s = %.1f req/s\n", (unsigned long long)completed, duration, rps);
            fprintf(o, "  latency ms   p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  (mean %.3f)\n", hist_pct_ms(&lat, 50),
                    hist_pct_ms(&lat, 90), hist_pct_ms(&lat, 99), (double)lat.max / NS_PER_MS,
                    lat.total ? (double)lat.sum / (double)lat.total / NS_PER_MS : 0.0);
            if (g.sse) {
                fprintf(o, "  events/resp  %.2f\n", epr);
                fprintf(o, "  ttfe ms      p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", hist_pct_ms(&ttfe, 50),
                        hist_pct_ms(&ttfe, 90), hist_pct_ms(&ttfe, 99), (double)ttfe.max / NS_PER_MS);
            }
        }
        if (g.relay_latency)
            fprintf(o, "  relay ms     p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  (mean %.3f; %llu stamps, %llu responses without)\n",
                    hist_pct_ms(&relay, 50), hist_pct_ms(&relay, 90), hist_pct_ms(&relay, 99), (double)relay.max / NS_PER_MS,
                    relay.total ? (double)relay.sum / (double)relay.total / NS_PER_MS : 0.0, (unsigned long long)relay.total,
                    (unsigned long long)relay_missing);
        fprintf(o, "  errors       %llu", (unsigned long long)errors);
        bool any = false;
        for (int k = 0; k < ERR__N; k++)
            if (err[k]) {
                fprintf(o, "%s%s %llu", any ? ", " : " (", err_names[k], (unsigned long long)err[k]);
                any = true;
            }
        fprintf(o, "%s\n", any ? ")" : "");
        if (first_error[0])
            fprintf(o, "  first error  %s\n", first_error);
        fprintf(o, "  status      ");
        for (int s = 0; s < 600; s++)
            if (status_counts[s])
                fprintf(o, " %d:%llu", s, (unsigned long long)status_counts[s]);
        fprintf(o, "\n  received     %llu bytes, %llu reconnects, %llu retries\n", (unsigned long long)bytes_in,
                (unsigned long long)reconnects, (unsigned long long)retries);
    }
    fflush(o);

    for (int t = 0; t < g.threads; t++) {
        free(workers[t].lat.counts);
        free(workers[t].ttfe.counts);
        free(workers[t].relay.counts);
        free(workers[t].bodybuf);
        close(workers[t].epfd);
    }
    for (int i = 0; i < nconns; i++) {
        free(conns[i].out);
        free(conns[i].lbuf);
        free(conns[i].sbuf);
    }
    free(conns);
    free(workers);
    free(lat.counts);
    free(ttfe.counts);
    free(relay.counts);
    free(g.segs);
    free(g.head);
    free(g.headers);
    if (g.open_idle)
        return ready_at_hold >= g.open_idle ? 0 : 1;
    return ok > 0 ? 0 : 1;
}
