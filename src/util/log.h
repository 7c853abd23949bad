/* logfmt logging on stderr: ts=… level=… rid=… msg="…" key=value… Never pass secrets. */
#ifndef CK_LOG_H
#define CK_LOG_H

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_level;

/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* rid may be NULL. fmt produces the rest of the line after msg (logfmt pairs). A line is at
 * most LOG_LINE_MAX bytes, newline included; control characters in it are written as \xNN, so
 * no value can end a line or reach a terminal raw. */
#define LOG_LINE_MAX 2048
void log_write(int level, const char *rid, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Escapes s for use inside a quoted logfmt value: quotes and backslashes become \" \\; control
 * characters (C0, DEL, C1), line separators, bidirectional controls and bytes that are not
 * UTF-8 become \xNN. Cut at a character boundary to fit out, a cut value ending with "...".
 * s may be NULL (""). Returns out. */
const char *log_quote(const char *s, char *out, unsigned long outlen);
/* Every value a client, a model, an MCP server or an upstream chose goes into a log line this
 * way, inside quotes: LOGI(rid, "msg", "type=\"%s\"", LOGQ(type)). The buffer lives until the
 * end of the enclosing statement. */
#define LOG_QMAX 160
#define LOGQ(s) log_quote((s), (char[LOG_QMAX]){0}, LOG_QMAX)
/* Aborts the process: small allocations failing is not recoverable. */
_Noreturn void log_oom(void);

#define LOG(lvl, rid, msg, ...)                                                                    \
    do {                                                                                           \
        if ((lvl) <= log_level)                                                                    \
            log_write((lvl), (rid), (msg), __VA_ARGS__);                                           \
    } while (0)
#define LOGE(rid, msg, ...) LOG(LOG_ERROR, rid, msg, __VA_ARGS__)
#define LOGW(rid, msg, ...) LOG(LOG_WARN, rid, msg, __VA_ARGS__)
#define LOGI(rid, msg, ...) LOG(LOG_INFO, rid, msg, __VA_ARGS__)
#define LOGD(rid, msg, ...) LOG(LOG_DEBUG, rid, msg, __VA_ARGS__)

/* Allocation helpers that abort on failure (small, server-sized allocations only). */
void *xmalloc(unsigned long n);
void *xcalloc(unsigned long n, unsigned long sz);
char *xstrdup(const char *s);
char *xstrndup(const char *s, unsigned long n);

#endif
