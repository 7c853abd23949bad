/* Streaming, bounded multipart/form-data parser (RFC 7578 on RFC 2046) for upload bodies
 * (POST /chatkit/upload with a `file` field). Feed it the request body in whatever pieces the
 * network delivers; it calls back at each part's start (with its parsed headers), with the
 * part's body bytes as they arrive, and at its end. A part's body is never buffered whole:
 * at most the delimiter's length ("\r\n--" + boundary, <= 74 bytes) is held back, and those
 * bytes are always a prefix of the delimiter, so the parser keeps no copy of them.
 * Not thread-safe; one parser per body.
 *
 * Wire format accepted:
 *   - an optional preamble, then "--boundary" at the start of the body or after a CRLF;
 *   - each delimiter line "\r\n--boundary" may carry transport padding (SP/HT) and must end in
 *     CRLF: strict CRLF, as browsers send; a bare LF (or anything else) after the boundary is
 *     an error (RFC 2046: the boundary need only start the line, so "--boundaryX" is not
 *     body data, it is a malformed delimiter);
 *   - part headers: lines ending in CRLF (a bare CR or LF inside them, or a control byte other
 *     than HT, is an error), "Name: value" (a line without a colon is an error; a line starting
 *     with SP/HT continues the previous one), ended by an empty line. Content-Disposition is
 *     required, must be "form-data" with a name parameter; Content-Type is optional; other
 *     headers are ignored; a repeated Content-Disposition or Content-Type, or a repeated
 *     name/filename/filename* parameter, is an error;
 *   - parameter values are tokens or quoted strings; in a quoted string only \" and \\ are
 *     escapes (a backslash before anything else is kept: Windows paths), and HTML's %22 / %0D /
 *     %0A escaping of names is NOT undone (ambiguous with a literal "%22");
 *   - filename*=charset'lang'pct-encoded (RFC 5987/8187; UTF-8 or ISO-8859-1, converted to
 *     UTF-8) is preferred over filename; an unknown charset is ignored, a malformed value
 *     (bad escape, %00, invalid UTF-8) is an error;
 *   - the close delimiter "\r\n--boundary--", then an epilogue (ignored, bounded).
 * A body with no part (just the close delimiter, as a browser sends for an empty form) is valid.
 * Bytes of names and filenames are passed as they are (a quoted filename is not checked as
 * UTF-8 and may carry a client's directory path): the caller sanitizes before using one.
 *
 * Bounds (mp_limits, 0 = the default):
 *   - header bytes per part, transport padding included (MP_DEFAULT_HEADER) → -EMSGSIZE;
 *   - number of parts (MP_DEFAULT_PARTS) → -EMSGSIZE;
 *   - preamble + epilogue bytes together (MP_DEFAULT_OUTSIDE) → -EMSGSIZE.
 * A part's body size is not bounded here: the data callback counts and aborts.
 * Malformed input → -EBADMSG. Errors are sticky: once mp_feed failed, it and mp_finish return
 * the same error. */
#ifndef CK_MULTIPART_H
#define CK_MULTIPART_H
#include <stddef.h>

#define MP_BOUNDARY_MAX    70         /* RFC 2046 */
#define MP_DEFAULT_HEADER  (8u << 10) /* header bytes per part */
#define MP_DEFAULT_PARTS   16u
#define MP_DEFAULT_OUTSIDE (4u << 10) /* preamble + epilogue bytes */

typedef struct mp_limits {
    size_t max_header_bytes; /* per part; 0 = MP_DEFAULT_HEADER */
    size_t max_parts;        /* 0 = MP_DEFAULT_PARTS */
    size_t max_outside;      /* preamble + epilogue; 0 = MP_DEFAULT_OUTSIDE */
} mp_limits;

/* One part's headers, valid only during on_part_begin (owned by the parser). */
typedef struct mp_part {
    const char *name;         /* Content-Disposition name (may be ""), never NULL */
    const char *filename;     /* filename* decoded to UTF-8 or filename; NULL when neither; ""
                               * when a file input had no file selected */
    const char *content_type; /* the Content-Type value trimmed, NULL when absent or empty */
    size_t index;             /* 0-based part number */
} mp_part;

/* Any callback may be NULL. Return 0 to go on, or a negative error to stop: mp_feed then
 * returns that value (sticky). Callbacks must not call mp_feed/mp_finish/mp_free on the same
 * parser. on_part_data: n > 0, p points into the fed chunk or into the parser, valid only during
 * the call; the pieces of a part depend on how the body was cut, their concatenation does not.
 * on_part_end is called when the part's closing delimiter was seen, before the next part's
 * begin; a part cut off by an error (or a truncated body) gets no on_part_end. */
typedef struct mp_callbacks {
    int (*on_part_begin)(void *ud, const mp_part *part);
    int (*on_part_data)(void *ud, const char *p, size_t n);
    int (*on_part_end)(void *ud);
} mp_callbacks;

typedef struct mp_parser mp_parser;

/* content_type: the request's Content-Type value ("multipart/form-data; boundary=..."; the
 * boundary a token or quoted string of 1..70 RFC 2046 bchars, not ending in a space). lim may
 * be NULL (all defaults); cb is copied. Returns the parser (free with mp_free), or NULL with
 * *err (if err is not NULL) a static message when the type or boundary is missing or invalid.
 * Aborts on out-of-memory (two buffers of max_header_bytes). */
mp_parser *mp_new(const char *content_type, const mp_limits *lim, const mp_callbacks *cb, void *ud,
                  const char **err);
/* Parses len more bytes of the body. Returns 0, -EBADMSG, -EMSGSIZE or a callback's error. */
int mp_feed(mp_parser *p, const char *data, size_t len);
/* End of body: 0 when the close delimiter was seen, else -EBADMSG (truncated), or the sticky
 * error. */
int mp_finish(mp_parser *p);
/* A short static message for the last error ("" when none). */
const char *mp_error(const mp_parser *p);
/* Number of parts begun so far. */
size_t mp_parts(const mp_parser *p);
void mp_free(mp_parser *p);

#endif
