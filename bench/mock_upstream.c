/* mock_upstream: a fast mock of an OpenAI-compatible Chat Completions streaming endpoint, for
 * measuring what chatkitd's relay costs (bench/run.sh, "relay" scenarios).
 *
 * Plain C + Linux (epoll, sockets, clock_gettime), one thread, no other libraries. It listens on
 * 127.0.0.1 (port 0 = any free port; the port is printed on stdout) and answers every
 * `POST .../chat/completions` (headers and Content-Length body read in full, the body is not
 * parsed) with `200 text/event-stream`, HTTP/1.1 keep-alive, chunked transfer encoding:
 *
 *   data: {... "delta":{"role":"assistant","content":""} ...}     at once
 *   data: {... "delta":{"content":"t=<CLOCK_MONOTONIC ns>;"} ...}  after --first-ms
 *   data: {... "delta":{"content":" tok1"} ...}                    --gap-ms apart (K-1 of them)
 *   data: {... "delta":{},"finish_reason":"stop"} ...}             --hold-ms after the last delta
 *   data: {..."choices":[],"usage":{...}}
 *   data: [DONE]
 *
 * The first content delta carries the moment it was written (CLOCK_MONOTONIC is system-wide, so
 * `loadgen --relay-latency` on the same machine can subtract it from the moment the relayed
 * event arrived). Everything due at the same moment goes out in one send(). Timers are a binary
 * heap consulted through epoll_wait's timeout. Anything else gets a 404 JSON answer.
 *
 * SIGUSR1 prints its counters on stderr; SIGINT/SIGTERM prints them and exits 0. Loopback only.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL
#define MAX_HEAD (64 * 1024)         /* request line + headers */
#define MAX_BODY (16 * 1024 * 1024)  /* request body */
#define MAX_OUT (64 * 1024 * 1024)   /* unsent answer bytes before the connection is dropped */

static struct {
    int port;
    int deltas;
    int64_t first_ns, gap_ns, hold_ns;
    bool quiet;
} g = {.deltas = 8};

static volatile sig_atomic_t g_stop, g_report;

static struct {
    uint64_t accepted, requests, streams_started, streams_done, not_found, bad_requests, dropped;
    uint64_t active, peak_active;
} st;

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
    fputs("mock_upstream: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* ---------------------------------------------------------------- buffers */

typedef struct {
    char *p;
    size_t len, cap, off; /* off: bytes already consumed from the front */
} buf_t;

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->off && b->off == b->len) {
        b->off = b->len = 0;
    }
    if (b->len + more <= b->cap)
        return;
    if (b->off) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return;
    }
    size_t nc = b->cap ? b->cap : 1024;
    while (nc < b->len + more)
        nc *= 2;
    b->p = xrealloc(b->p, nc);
    b->cap = nc;
}

static void buf_add(buf_t *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(buf_t *b, const char *fmt, ...)
{
    for (;;) {
        size_t room = b->cap - b->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            die("vsnprintf failed");
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        buf_reserve(b, (size_t)n + 1);
    }
}

static size_t buf_avail(const buf_t *b) { return b->len - b->off; }

static void buf_free(buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- connections and timers */

enum conn_state { ST_HEAD, ST_BODY, ST_STREAM, ST_CLOSING };

typedef struct conn {
    int fd;
    enum conn_state state;
    bool want_close; /* close once the current answer is out */
    buf_t in, out;
    size_t body_left;
    bool stream;       /* the current request gets a stream */
    int step;          /* stream: 0 = head + role chunk next, 1..K = content delta k next, K+1 = end */
    int64_t t0;        /* stream start */
    uint32_t timer_gen; /* heap entries with another generation are stale */
    struct conn *next_free;
} conn_t;

typedef struct {
    int64_t at;
    conn_t *c;
    uint32_t gen;
} timer_t_;

static struct {
    timer_t_ *v;
    size_t n, cap;
} heap;

static conn_t *free_conns; /* conn structs are reused, never freed: heap entries may point at them */

static void heap_push(int64_t at, conn_t *c)
{
    if (heap.n == heap.cap) {
        heap.cap = heap.cap ? heap.cap * 2 : 1024;
        heap.v = xrealloc(heap.v, heap.cap * sizeof *heap.v);
    }
    size_t i = heap.n++;
    timer_t_ t = {at, c, c->timer_gen};
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap.v[parent].at <= at)
            break;
        heap.v[i] = heap.v[parent];
        i = parent;
    }
    heap.v[i] = t;
}

static timer_t_ heap_pop(void)
{
    timer_t_ top = heap.v[0];
    timer_t_ last = heap.v[--heap.n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t mv = last.at;
        if (l < heap.n && heap.v[l].at < mv) {
            m = l;
            mv = heap.v[l].at;
        }
        if (r < heap.n && heap.v[r].at < mv)
            m = r;
        if (m == i)
            break;
        heap.v[i] = heap.v[m];
        i = m;
    }
    if (heap.n)
        heap.v[i] = last;
    return top;
}

static int epfd;

static void conn_close(conn_t *c)
{
    if (c->state == ST_STREAM) {
        st.active--;
        st.dropped++;
    }
    close(c->fd);
    c->fd = -1;
    c->timer_gen++;
    c->in.len = c->in.off = 0;
    c->out.len = c->out.off = 0;
    /* keep small buffers for the next connection, release big ones */
    if (c->in.cap > 64 * 1024)
        buf_free(&c->in);
    if (c->out.cap > 64 * 1024)
        buf_free(&c->out);
    c->next_free = free_conns;
    free_conns = c;
}

/* sends what is queued; false when the connection was closed */
static bool flush_out(conn_t *c)
{
    while (buf_avail(&c->out)) {
        ssize_t r = send(c->fd, c->out.p + c->out.off, buf_avail(&c->out), MSG_NOSIGNAL);
        if (r > 0) {
            c->out.off += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (buf_avail(&c->out) > MAX_OUT) {
                conn_close(c);
                return false;
            }
            return true; /* EPOLLOUT (edge) resumes */
        }
        conn_close(c);
        return false;
    }
    c->out.len = c->out.off = 0;
    if (c->state == ST_CLOSING) {
        conn_close(c);
        return false;
    }
    return true;
}

/* ---------------------------------------------------------------- the answer */

#define CHUNK_HEAD "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":"
#define CHUNK_TAIL "\"finish_reason\":null}],\"usage\":null}\n\n"

static buf_t scratch; /* one HTTP chunk's payload */

/* when step `s` of a stream started at t0 is due */
static int64_t step_due(const conn_t *c, int s)
{
    if (s == 0)
        return c->t0;
    int64_t first = c->t0 + g.first_ns;
    if (s <= g.deltas)
        return first + (int64_t)(s - 1) * g.gap_ns;
    int64_t last = g.deltas > 0 ? first + (int64_t)(g.deltas - 1) * g.gap_ns : first;
    return last + g.hold_ns;
}

static void add_step(conn_t *c, int s)
{
    if (s == 0) {
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                   "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        buf_add(&c->out, head, sizeof head - 1);
        buf_printf(&scratch, CHUNK_HEAD "{\"role\":\"assistant\",\"content\":\"\"}," CHUNK_TAIL);
    } else if (s == 1) {
        /* the stamp: taken as late as possible, the send() follows at once */
        buf_printf(&scratch, CHUNK_HEAD "{\"content\":\"t=%" PRId64 ";\"}," CHUNK_TAIL, mono_ns());
    } else if (s <= g.deltas) {
        buf_printf(&scratch, CHUNK_HEAD "{\"content\":\" tok%d\"}," CHUNK_TAIL, s - 1);
    } else {
        buf_printf(&scratch, CHUNK_HEAD "{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
        buf_printf(&scratch,
                   "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                   "\"model\":\"mock\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":%d,"
                   "\"total_tokens\":%d}}\n\n",
                   g.deltas, 11 + g.deltas);
        buf_printf(&scratch, "data: [DONE]\n\n");
    }
}

static void process_input(conn_t *c);

/* writes every step that is due, schedules the next; false when the connection was closed */
static bool stream_advance(conn_t *c, int64_t now)
{
    scratch.len = scratch.off = 0;
    while (c->step <= g.deltas + 1 && step_due(c, c->step) <= now) {
        add_step(c, c->step); /* step 0 puts the status line and headers straight into c->out */
        c->step++;
    }
    if (scratch.len) {
        buf_printf(&c->out, "%zx\r\n", scratch.len);
        buf_add(&c->out, scratch.p, scratch.len);
        buf_add(&c->out, "\r\n", 2);
    }
    bool done = c->step > g.deltas + 1;
    if (done) {
        buf_add(&c->out, "0\r\n\r\n", 5);
        st.active--;
        st.streams_done++;
        c->state = c->want_close ? ST_CLOSING : ST_HEAD;
    }
    if (!flush_out(c))
        return false;
    if (!done) {
        c->timer_gen++;
        heap_push(step_due(c, c->step), c);
        return true;
    }
    if (c->state == ST_HEAD && buf_avail(&c->in))
        process_input(c); /* a request that came early (pipelined) */
    return c->fd >= 0;
}

static void answer_simple(conn_t *c, int status, const char *reason, const char *body)
{
    buf_printf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s", status,
               reason, strlen(body), c->want_close ? "Connection: close\r\n" : "", body);
    c->state = c->want_close ? ST_CLOSING : ST_HEAD;
}

static bool header_is(const char *line, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (len <= k || line[k] != ':' || strncasecmp(line, name, k) != 0)
        return false;
    const char *v = line + k + 1;
    size_t n = len - k - 1;
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *val = v;
    *vlen = n;
    return true;
}

static bool val_has(const char *v, size_t n, const char *token)
{
    size_t k = strlen(token);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(v + i, token, k) == 0)
            return true;
    return false;
}

/* parses one request head at the front of c->in; 1: done, 0: need more, -1: bad */
static int parse_head(conn_t *c)
{
    const char *p = c->in.p + c->in.off;
    size_t n = buf_avail(&c->in);
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end)
        return n > MAX_HEAD ? -1 : 0;
    size_t head_len = (size_t)(end - p) + 4;
    const char *eol = memmem(p, head_len, "\r\n", 2);
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    if (!sp1)
        return -1;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (!sp2)
        return -1;
    bool post = (size_t)(sp1 - p) == 4 && memcmp(p, "POST", 4) == 0;
    const char *path = sp1 + 1;
    size_t plen = (size_t)(sp2 - path);
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    static const char suffix[] = "/chat/completions";
    bool chat = plen >= sizeof suffix - 1 && memcmp(path + plen - (sizeof suffix - 1), suffix, sizeof suffix - 1) == 0;
    bool http10 = (size_t)(eol - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;

    uint64_t cl = 0;
    bool chunked = false, expect = false;
    c->want_close = http10;
    const char *line = eol + 2;
    while (line < end) {
        const char *le = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        size_t len = (size_t)(le - line);
        const char *v;
        size_t vl;
        if (header_is(line, len, "content-length", &v, &vl)) {
            cl = 0;
            if (vl == 0 || vl > 12)
                return -1;
            for (size_t i = 0; i < vl; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                cl = cl * 10 + (uint64_t)(v[i] - '0');
            }
        } else if (header_is(line, len, "transfer-encoding", &v, &vl)) {
            chunked = val_has(v, vl, "chunked");
        } else if (header_is(line, len, "connection", &v, &vl)) {
            if (val_has(v, vl, "close"))
                c->want_close = true;
            else if (val_has(v, vl, "keep-alive"))
                c->want_close = false;
        } else if (header_is(line, len, "expect", &v, &vl)) {
            expect = val_has(v, vl, "100-continue");
        }
        line = le + 2;
    }
    c->in.off += head_len;
    st.requests++;
    if (chunked || cl > MAX_BODY) {
        st.bad_requests++;
        c->want_close = true;
        answer_simple(c, chunked ? 501 : 413, chunked ? "Not Implemented" : "Payload Too Large",
                      "{\"error\":{\"message\":\"mock_upstream: send a Content-Length body (at most 16 MiB)\"}}");
        return 1;
    }
    c->stream = post && chat;
    c->body_left = (size_t)cl;
    c->state = ST_BODY;
    if (expect && cl)
        buf_add(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 1;
}

/* consumes buffered input while the connection is between answers */
static void process_input(conn_t *c)
{
    for (;;) {
        if (c->state == ST_HEAD) {
            int r = parse_head(c);
            if (r < 0) {
                st.bad_requests++;
                c->want_close = true;
                answer_simple(c, 400, "Bad Request", "{\"error\":{\"message\":\"bad request\"}}");
                flush_out(c);
                return;
            }
            if (r == 0)
                return;
            if (c->state == ST_CLOSING) { /* refused at the head */
                flush_out(c);
                return;
            }
        }
        if (c->state == ST_BODY) {
            size_t k = buf_avail(&c->in) < c->body_left ? buf_avail(&c->in) : c->body_left;
            c->in.off += k;
            c->body_left -= k;
            if (c->body_left) {
                flush_out(c); /* maybe a 100 Continue */
                return;
            }
            if (c->stream) {
                c->state = ST_STREAM;
                c->step = 0;
                c->t0 = mono_ns();
                st.streams_started++;
                if (++st.active > st.peak_active)
                    st.peak_active = st.active;
                stream_advance(c, c->t0); /* handles pipelined requests after it itself */
                return;
            }
            st.not_found++;
            answer_simple(c, 404, "Not Found", "{\"error\":{\"message\":\"mock_upstream: only POST .../chat/completions\"}}");
            if (!flush_out(c))
                return;
            continue;
        }
        return; /* ST_STREAM or ST_CLOSING: later input waits */
    }
}

static void on_readable(conn_t *c)
{
    for (;;) {
        buf_reserve(&c->in, 16 * 1024);
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r > 0) {
            c->in.len += (size_t)r;
            if (buf_avail(&c->in) > MAX_HEAD + MAX_BODY) {
                conn_close(c);
                return;
            }
            continue;
        }
        if (r == 0) {
            conn_close(c); /* the client left (mid-stream: counted as dropped) */
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        conn_close(c);
        return;
    }
    if (c->state == ST_HEAD || c->state == ST_BODY)
        process_input(c);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                fprintf(stderr, "mock_upstream: accept: %s\n", strerror(errno));
            return;
        }
        st.accepted++;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = free_conns;
        if (c) {
            free_conns = c->next_free;
        } else {
            c = xrealloc(NULL, sizeof *c);
            memset(c, 0, sizeof *c);
        }
        c->fd = fd;
        c->state = ST_HEAD;
        c->want_close = false;
        c->next_free = NULL;
        c->timer_gen++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl: %s", strerror(errno));
    }
}

/* ---------------------------------------------------------------- main */

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_report = 1;
    else
        g_stop = 1;
}

static void report(void)
{
    if (g.quiet)
        return;
    fprintf(stderr,
            "mock_upstream: %" PRIu64 " connections, %" PRIu64 " requests, %" PRIu64 " streams (%" PRIu64
            " complete, %" PRIu64 " dropped by the client, %" PRIu64 " open, peak %" PRIu64 " open), %" PRIu64
            " not found, %" PRIu64 " bad\n",
            st.accepted, st.requests, st.streams_started, st.streams_done, st.dropped, st.active, st.peak_active,
            st.not_found, st.bad_requests);
}

static double parse_num(const char *opt, const char *s, double min, double max)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= min && v <= max))
        die("%s: expected a number in [%g, %g], got '%s'", opt, min, max, s);
    return v;
}

static void usage(FILE *f)
{
    fputs("usage: mock_upstream [--port N] [--deltas K] [--first-ms MS] [--gap-ms MS] [--hold-ms MS] [--quiet]\n"
          "\n"
          "  --port N       listen on 127.0.0.1:N (default 0: a free port); the port is printed on stdout\n"
          "  --deltas K     content deltas per answer (default 8); the first is \"t=<CLOCK_MONOTONIC ns>;\"\n"
          "  --first-ms MS  wait before the first content delta (time to first token, default 0)\n"
          "  --gap-ms MS    wait between content deltas (default 0)\n"
          "  --hold-ms MS   wait after the last content delta before finish_reason, usage and [DONE]\n"
          "                 (default 0; large values keep the streams open)\n"
          "  --quiet        no counters on stderr\n"
          "\n"
          "POST .../chat/completions streams an answer (HTTP/1.1 keep-alive, chunked); anything else is 404.\n"
          "SIGUSR1: prints its counters on stderr; SIGINT/SIGTERM: prints them and exits 0.\n",
          f);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},   {"deltas", required_argument, NULL, 'k'},
        {"first-ms", required_argument, NULL, 'f'}, {"gap-ms", required_argument, NULL, 'g'},
        {"hold-ms", required_argument, NULL, 'h'}, {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'H'},          {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "q", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p': g.port = (int)parse_num("--port", optarg, 0, 65535); break;
        case 'k': g.deltas = (int)parse_num("--deltas", optarg, 1, 100000); break;
        case 'f': g.first_ns = (int64_t)(parse_num("--first-ms", optarg, 0, 3600e3) * NS_PER_MS); break;
        case 'g': g.gap_ns = (int64_t)(parse_num("--gap-ms", optarg, 0, 3600e3) * NS_PER_MS); break;
        case 'h': g.hold_ns = (int64_t)(parse_num("--hold-ms", optarg, 0, 24 * 3600e3) * NS_PER_MS); break;
        case 'q': g.quiet = true; break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_signal; /* no SA_RESTART: epoll_wait returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind 127.0.0.1:%d: %s", g.port, strerror(errno));
    if (listen(lfd, 4096) < 0)
        die("listen: %s", strerror(errno));
    socklen_t alen = sizeof a;
    if (getsockname(lfd, (struct sockaddr *)&a, &alen) < 0)
        die("getsockname: %s", strerror(errno));
    printf("%d\n", ntohs(a.sin_port));
    fflush(stdout);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    static int listen_tag; /* data.ptr for the listening socket */
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &listen_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl: %s", strerror(errno));

    enum { MAXEV = 512 };
    static struct epoll_event evs[MAXEV];
    while (!g_stop) {
        if (g_report) {
            g_report = 0;
            report();
        }
        int timeout = -1;
        int64_t now = mono_ns();
        while (heap.n && (heap.v[0].c->fd < 0 || heap.v[0].gen != heap.v[0].c->timer_gen))
            heap_pop(); /* stale */
        if (heap.n) {
            int64_t wait = heap.v[0].at - now;
            timeout = wait <= 0 ? 0 : (int)((wait + NS_PER_MS - 1) / NS_PER_MS);
        }
        int n = epoll_wait(epfd, evs, MAXEV, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listen_tag) {
                on_accept(lfd);
                continue;
            }
            conn_t *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue; /* closed earlier in this batch (its struct may even be reused: harmless) */
            uint32_t e = evs[i].events;
            if ((e & EPOLLOUT) && buf_avail(&c->out) && !flush_out(c))
                continue;
            if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                on_readable(c);
        }
        now = mono_ns();
        while (heap.n && heap.v[0].at <= now) {
            timer_t_ t = heap_pop();
            if (t.c->fd < 0 || t.gen != t.c->timer_gen || t.c->state != ST_STREAM)
                continue;
            stream_advance(t.c, now);
        }
    }
    report();
    return 0;
}
