/* logfmt logging on stderr: ts=… level=… rid=… msg="…" key=value… Never pass secrets. */
#ifndef CK_LOG_H
#define CK_LOG_H

enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

extern int log_level;

/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int log_level_parse(const char *s);
/* rid may be NULL. fmt produces the rest of the line after msg (logfmt pairs). */
void log_write(int level, const char *rid, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Escapes s for use inside a quoted logfmt value (quotes, backslashes, control characters),
 * cut to fit out. Returns out. Use for any text that did not come from our own literals. */
const char *log_quote(const char *s, char *out, unsigned long outlen);
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
