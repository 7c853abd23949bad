/* Growable byte buffer with a hard cap. Owner: whoever embeds the buf; free with buf_free. */
#ifndef CK_BUF_H
#define CK_BUF_H
#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *data;    /* always NUL-terminated when data != NULL */
    size_t len;
    size_t cap;
    size_t max;    /* 0 = unlimited (only for server-built data, never for input) */
} buf;

#define BUF_INIT(maxbytes) {NULL, 0, 0, (maxbytes)}

/* All return 0, or -ENOBUFS when the cap would be exceeded (buffer unchanged). */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *p, size_t n);
int buf_puts(buf *b, const char *s);
int buf_putc(buf *b, char c);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal (quotes included), UTF-8 kept as is. */
int buf_json_str(buf *b, const char *s, size_t n);
void buf_consume(buf *b, size_t n); /* drop n bytes from the front */
void buf_reset(buf *b);             /* len = 0, keeps memory */
void buf_free(buf *b);              /* releases memory, keeps max */
/* Hands the data to the caller (malloc'd, NUL-terminated, never NULL). */
char *buf_steal(buf *b, size_t *len);

#endif
