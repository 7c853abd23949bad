#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int log_level = LOG_INFO;

int log_level_parse(const char *s)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static const char hex[] = "0123456789abcdef";

void log_write(int level, const char *rid, const char *msg, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char raw[LOG_LINE_MAX], line[LOG_LINE_MAX];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(
        raw, sizeof raw, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s%s%s msg=\"%s\"",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (long)(tv.tv_usec / 1000), names[level & 3], rid ? " rid=" : "", rid ? rid : "", msg);
    if (n < 0)
        return;
    if ((size_t)n < sizeof raw - 2 && fmt && *fmt) {
        raw[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(raw + n, sizeof raw - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
        else
            n--; /* nothing to add: drop the separator */
    }
    if ((size_t)n > sizeof raw - 1)
        n = (int)sizeof raw - 1;
    /* defense in depth: a value that reached here unquoted still cannot end the line or send
     * a terminal escape */
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c >= 0x20 && c != 0x7f) {
            if (o + 1 > sizeof line - 1)
                break;
            line[o++] = (char)c;
        } else {
            if (o + 4 > sizeof line - 1)
                break;
            line[o++] = '\\';
            line[o++] = 'x';
            line[o++] = hex[c >> 4];
            line[o++] = hex[c & 15];
        }
    }
    line[o++] = '\n';
    fwrite(line, 1, o, stderr);
}

/* Length of the UTF-8 character at s that a log may show as is, else 0: not C1, a line or
 * paragraph separator, a bidirectional control, a surrogate, an overlong form or past
 * U+10FFFF. s is NUL-terminated. */
static unsigned long utf8_char(const unsigned char *s)
{
    unsigned long n;
    unsigned cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (unsigned long i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < 0xa0 || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x2028 && cp <= 0x202e) ||
        (cp >= 0x2066 && cp <= 0x2069))
        return 0;
    return n;
}

const char *log_quote(const char *s, char *out, unsigned long outlen)
{
    unsigned long o = 0, keep = 0; /* keep: output length that leaves room for "..." */
    if (!outlen)
        return out;
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        char piece[4];
        unsigned long in = utf8_char(p), len = in;
        if (*p == '"' || *p == '\\') {
            piece[0] = '\\';
            piece[1] = (char)*p;
            len = 2;
        } else if (!in || *p < 0x20 || *p == 0x7f) {
            piece[0] = '\\';
            piece[1] = 'x';
            piece[2] = hex[*p >> 4];
            piece[3] = hex[*p & 15];
            in = 1;
            len = 4;
        } else {
            memcpy(piece, p, len);
        }
        if (o + len > outlen - 1) { /* does not fit: cut, and say so */
            o = keep;
            if (o + 3 < outlen) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        memcpy(out + o, piece, len);
        o += len;
        p += in;
        if (o + 3 < outlen)
            keep = o;
    }
    out[o] = 0;
    return out;
}

_Noreturn void log_oom(void)
{
    static const char m[] = "level=error msg=\"out of memory\"\n";
    fwrite(m, 1, sizeof m - 1, stderr);
    abort();
}

void *xmalloc(unsigned long n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        log_oom();
    return p;
}

void *xcalloc(unsigned long n, unsigned long sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        log_oom();
    return p;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        log_oom();
    return p;
}

char *xstrndup(const char *s, unsigned long n)
{
    char *p = strndup(s, n);
    if (!p)
        log_oom();
    return p;
}
