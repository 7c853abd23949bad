/* Streaming multipart/form-data parser; see multipart.h for the format and the bounds.
 *
 * The delimiter is D = "\r\n--" + boundary. In the preamble and in a part's body the parser
 * only tracks how many bytes of D the input has matched so far (m): since '\r' occurs in D only
 * at its start, a mismatch releases all m held bytes as data (they are D[0..m), so no copy is
 * kept) and the mismatching byte is looked at again from m = 0. The body's first delimiter may
 * have no CRLF before it: the parser starts with m = 2, two phantom bytes that are not counted
 * as preamble if released. */
#include "files/multipart.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    S_PREAMBLE, /* before the first delimiter */
    S_AFTER,    /* just after "--boundary": "--", padding or CRLF */
    S_DASH,     /* after "--boundary-" */
    S_PAD,      /* transport padding */
    S_CR,       /* after the CR of the delimiter line */
    S_HEADERS,  /* a part's header lines */
    S_DATA,     /* a part's body */
    S_EPILOGUE, /* after the close delimiter */
};

struct mp_parser {
    mp_callbacks cb;
    void *ud;
    size_t max_header, max_parts, max_outside;
    int state;
    int err; /* sticky, 0 = fine */
    const char *msg;
    char delim[4 + MP_BOUNDARY_MAX];
    size_t dlen;
    size_t m;         /* bytes of delim matched, held back */
    unsigned phantom; /* the first 2 held bytes are the phantom CRLF before the first delimiter */
    size_t outside;   /* preamble + epilogue bytes */
    size_t parts;
    size_t hpad;   /* transport padding of the current delimiter line */
    char *hdr;     /* the current part's header block, max_header + 1 bytes */
    size_t hlen;   /* bytes in hdr */
    size_t lstart; /* start of the current header line in hdr */
    char *str;     /* decoded name and filename, max_header + 8 bytes */
    size_t slen;
};

static int fail(mp_parser *p, int rc, const char *msg)
{
    p->err = rc;
    p->msg = msg;
    return rc;
}

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

static int tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* RFC 2046 bchars (space allowed, not last: checked by the caller) */
static int bchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("'()+_,-./:=? ", c) != NULL;
}

static int ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && !strncasecmp(s, lit, n);
}

/* ---- Content-Type of the request ---- */

static const char *parse_boundary(const char *ct, char *out, size_t *outlen)
{
    size_t i = 0, n = 0;
    int seen = 0;
    if (!ct)
        return "missing Content-Type";
    while (ows(ct[i]))
        i++;
    size_t ts = i;
    while (ct[i] && ct[i] != ';' && !ows(ct[i]))
        i++;
    if (!ieq(ct + ts, i - ts, "multipart/form-data"))
        return "Content-Type is not multipart/form-data";
    for (;;) {
        while (ows(ct[i]))
            i++;
        if (!ct[i])
            break;
        if (ct[i] != ';')
            return "malformed Content-Type";
        i++;
        while (ows(ct[i]))
            i++;
        if (!ct[i])
            break;
        size_t ks = i;
        while (tchar((unsigned char)ct[i]))
            i++;
        size_t kl = i - ks;
        while (ows(ct[i]))
            i++;
        if (!kl || ct[i] != '=')
            return "malformed Content-Type parameter";
        i++;
        while (ows(ct[i]))
            i++;
        int is_b = ieq(ct + ks, kl, "boundary");
        if (is_b && seen)
            return "duplicate boundary";
        seen |= is_b;
        size_t vl = 0;
        if (ct[i] == '"') {
            for (i++; ct[i] && ct[i] != '"'; i++) {
                if (ct[i] == '\\' && ct[i + 1])
                    i++; /* quoted-pair */
                if (is_b && vl++ < MP_BOUNDARY_MAX)
                    out[vl - 1] = ct[i];
            }
            if (ct[i] != '"')
                return "unterminated quoted string in Content-Type";
            i++;
        } else {
            for (; ct[i] && ct[i] != ';' && !ows(ct[i]); i++)
                if (is_b && vl++ < MP_BOUNDARY_MAX)
                    out[vl - 1] = ct[i];
        }
        if (is_b)
            n = vl;
    }
    if (!seen)
        return "missing boundary";
    if (!n)
        return "empty boundary";
    if (n > MP_BOUNDARY_MAX)
        return "boundary longer than 70 characters";
    for (size_t k = 0; k < n; k++)
        if (!bchar((unsigned char)out[k]))
            return "invalid character in boundary";
    if (out[n - 1] == ' ')
        return "boundary ends in a space";
    *outlen = n;
    return NULL;
}

mp_parser *mp_new(const char *content_type, const mp_limits *lim, const mp_callbacks *cb, void *ud,
                  const char **err)
{
    char b[MP_BOUNDARY_MAX];
    size_t bl = 0;
    const char *e = parse_boundary(content_type, b, &bl);
    if (e) {
        if (err)
            *err = e;
        return NULL;
    }
    mp_parser *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    if (cb)
        p->cb = *cb;
    p->ud = ud;
    p->max_header = lim && lim->max_header_bytes ? lim->max_header_bytes : MP_DEFAULT_HEADER;
    p->max_parts = lim && lim->max_parts ? lim->max_parts : MP_DEFAULT_PARTS;
    p->max_outside = lim && lim->max_outside ? lim->max_outside : MP_DEFAULT_OUTSIDE;
    p->hdr = malloc(p->max_header + 1);
    p->str = malloc(p->max_header + 8);
    if (!p->hdr || !p->str)
        abort();
    memcpy(p->delim, "\r\n--", 4);
    memcpy(p->delim + 4, b, bl);
    p->dlen = 4 + bl;
    p->state = S_PREAMBLE;
    p->m = 2;
    p->phantom = 2;
    p->msg = "";
    if (err)
        *err = NULL;
    return p;
}

void mp_free(mp_parser *p)
{
    if (!p)
        return;
    free(p->hdr);
    free(p->str);
    free(p);
}

const char *mp_error(const mp_parser *p)
{
    return p->msg;
}

size_t mp_parts(const mp_parser *p)
{
    return p->parts;
}

/* ---- the delimiter search (preamble and part bodies) ---- */

/* n bytes known not to be a delimiter: body data, or preamble to count. held: they are the
 * start of delim (released held bytes). */
static int emit(mp_parser *p, const char *s, size_t n, int held)
{
    if (p->state == S_DATA) {
        if (!p->cb.on_part_data)
            return 0;
        int rc = p->cb.on_part_data(p->ud, s, n);
        return rc < 0 ? fail(p, rc, "callback aborted") : 0;
    }
    if (held && p->phantom) {
        n -= p->phantom; /* released together: a held match never starts at the phantom LF */
        p->phantom = 0;
    }
    if (n > p->max_outside - p->outside)
        return fail(p, -EMSGSIZE, "preamble too large");
    p->outside += n;
    return 0;
}

/* Emits the pending bytes at positions [a, b) relative to the chunk s; negative positions are
 * the m0 bytes held from before the chunk (delim[0..m0)). */
static int flush(mp_parser *p, const char *s, size_t m0, ptrdiff_t a, ptrdiff_t b)
{
    int rc;
    if (a >= b)
        return 0;
    if (a < 0) {
        ptrdiff_t e = b < 0 ? b : 0;
        if ((rc = emit(p, p->delim + (a + (ptrdiff_t)m0), (size_t)(e - a), 1)) < 0)
            return rc;
        a = e;
    }
    if (a < b && (rc = emit(p, s + a, (size_t)(b - a), 0)) < 0)
        return rc;
    return 0;
}

/* Searches s[0..n) for the rest of the delimiter. Returns 1 when found (*used = bytes up to
 * its end), 0 when the chunk ran out (*used = n), or an error. */
static int scan(mp_parser *p, const char *s, size_t n, size_t *used)
{
    size_t m0 = p->m, m = p->m, i = 0;
    ptrdiff_t from = -(ptrdiff_t)m0; /* pending data is [from, i - m) */
    int rc;
    while (i < n) {
        if (!m) {
            const char *cr = memchr(s + i, '\r', n - i);
            if (!cr) {
                i = n;
                break;
            }
            i = (size_t)(cr - s) + 1;
            m = 1;
            continue;
        }
        if (s[i] != p->delim[m]) {
            m = 0; /* held bytes become data; look at s[i] again */
            continue;
        }
        i++;
        if (++m == p->dlen) {
            if ((rc = flush(p, s, m0, from, (ptrdiff_t)i - (ptrdiff_t)m)) < 0)
                return rc;
            p->m = 0;
            *used = i;
            return 1;
        }
    }
    if ((rc = flush(p, s, m0, from, (ptrdiff_t)n - (ptrdiff_t)m)) < 0)
        return rc;
    p->m = m;
    *used = n;
    return 0;
}

/* ---- part headers ---- */

static char *str_put(mp_parser *p, const char *s, size_t n)
{
    char *o = p->str + p->slen;
    memmove(o, s, n);
    o[n] = 0;
    p->slen += n + 1;
    return o;
}

static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes an RFC 8187 ext-value in place. Returns 1 (decoded, UTF-8), 0 (unknown charset:
 * ignore it) or -1 (malformed). */
static int ext_value(char *v)
{
    char *q1 = strchr(v, '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
    if (!q2)
        return -1;
    int latin1;
    if (ieq(v, (size_t)(q1 - v), "UTF-8"))
        latin1 = 0;
    else if (ieq(v, (size_t)(q1 - v), "ISO-8859-1"))
        latin1 = 1;
    else
        return 0;
    size_t o = 0;
    for (const char *s = q2 + 1; *s; s++) {
        unsigned c = (unsigned char)*s;
        if (c == '%') {
            int h = hexval(s[1]), l = h < 0 ? -1 : hexval(s[2]);
            if (l < 0)
                return -1;
            c = (unsigned)(h << 4 | l);
            s += 2;
            if (!c)
                return -1;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     strchr("!#$&+-.^_`|~", (int)c))) {
            return -1;
        }
        if (latin1 && c >= 0x80) {
            v[o++] = (char)(0xC0 | c >> 6);
            v[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            v[o++] = (char)c;
        }
    }
    v[o] = 0;
    return latin1 || utf8_valid((const unsigned char *)v, o) ? 1 : -1;
}

/* Content-Disposition: form-data; name="..."; filename="..."; filename*=UTF-8''... */
static int disposition(mp_parser *p, const char *v, mp_part *part)
{
    size_t i = 0;
    while (v[i] && v[i] != ';' && !ows(v[i]))
        i++;
    if (!ieq(v, i, "form-data"))
        return fail(p, -EBADMSG, "Content-Disposition is not form-data");
    char *name = NULL, *fname = NULL, *fstar = NULL;
    for (;;) {
        while (ows(v[i]))
            i++;
        if (!v[i])
            break;
        if (v[i] != ';')
            return fail(p, -EBADMSG, "malformed Content-Disposition");
        i++;
        while (ows(v[i]))
            i++;
        if (!v[i])
            break;
        size_t ks = i;
        while (tchar((unsigned char)v[i]))
            i++;
        size_t kl = i - ks;
        while (ows(v[i]))
            i++;
        if (!kl || v[i] != '=')
            return fail(p, -EBADMSG, "malformed Content-Disposition parameter");
        i++;
        while (ows(v[i]))
            i++;
        /* the value, unquoted, at the end of str (dropped below unless kept) */
        char *o = p->str + p->slen;
        size_t n = 0;
        if (v[i] == '"') {
            /* only \" and \\ are escapes: a browser sends a Windows path's backslashes bare */
            for (i++; v[i] && v[i] != '"'; i++) {
                if (v[i] == '\\' && (v[i + 1] == '"' || v[i + 1] == '\\'))
                    i++;
                o[n++] = v[i];
            }
            if (v[i] != '"')
                return fail(p, -EBADMSG, "unterminated quoted string in Content-Disposition");
            i++;
        } else {
            for (; v[i] && v[i] != ';' && !ows(v[i]) && v[i] != '"'; i++)
                o[n++] = v[i];
            if (!n)
                return fail(p, -EBADMSG, "empty Content-Disposition parameter");
        }
        char **slot = ieq(v + ks, kl, "name")        ? &name
                      : ieq(v + ks, kl, "filename")  ? &fname
                      : ieq(v + ks, kl, "filename*") ? &fstar
                                                     : NULL;
        if (!slot)
            continue;
        if (*slot)
            return fail(p, -EBADMSG, "duplicate Content-Disposition parameter");
        *slot = str_put(p, o, n);
    }
    if (!name)
        return fail(p, -EBADMSG, "Content-Disposition without a name");
    if (fstar) {
        int r = ext_value(fstar);
        if (r < 0)
            return fail(p, -EBADMSG, "malformed filename*");
        if (r > 0)
            fname = fstar;
    }
    part->name = name;
    part->filename = fname;
    return 0;
}

/* The header block hdr[0..hlen) is complete (each line checked and CRLF-ended, the last one
 * empty): unfold, split, read the two headers we use. */
static int parse_headers(mp_parser *p, mp_part *part)
{
    char *h = p->hdr;
    size_t n = p->hlen;
    int have_cd = 0;
    h[n] = 0;
    p->slen = 0;
    if (ows(h[0]))
        return fail(p, -EBADMSG, "header continuation without a header");
    /* obs-fold: a CRLF before SP/HT becomes two spaces */
    for (size_t i = 0; i + 2 < n; i++)
        if (h[i] == '\r' && ows(h[i + 2]))
            h[i] = h[i + 1] = ' ';
    for (size_t i = 0; i + 2 < n;) {
        char *l = h + i, *end = strchr(l, '\r');
        *end = 0;
        i = (size_t)(end - h) + 2;
        char *colon = strchr(l, ':');
        if (!colon)
            return fail(p, -EBADMSG, "header line without a colon");
        size_t nl = (size_t)(colon - l);
        if (!nl)
            return fail(p, -EBADMSG, "empty header name");
        for (size_t k = 0; k < nl; k++)
            if (!tchar((unsigned char)l[k]))
                return fail(p, -EBADMSG, "invalid header name");
        char *v = colon + 1;
        while (ows(*v))
            v++;
        char *ve = end;
        while (ve > v && ows(ve[-1]))
            ve--;
        *ve = 0;
        if (ieq(l, nl, "Content-Disposition")) {
            if (have_cd++)
                return fail(p, -EBADMSG, "duplicate Content-Disposition");
            int rc = disposition(p, v, part);
            if (rc < 0)
                return rc;
        } else if (ieq(l, nl, "Content-Type")) {
            if (part->content_type)
                return fail(p, -EBADMSG, "duplicate Content-Type");
            part->content_type = v; /* "" = absent, after the loop */
        }
    }
    if (!have_cd)
        return fail(p, -EBADMSG, "part without Content-Disposition");
    if (part->content_type && !*part->content_type)
        part->content_type = NULL;
    return 0;
}

/* Appends header bytes up to the next LF; checks each completed line. Returns 1 at the end of
 * the block (part begun), 0, or an error. */
static int headers(mp_parser *p, const char *s, size_t n, size_t *used)
{
    const char *nl = memchr(s, '\n', n);
    size_t k = nl ? (size_t)(nl - s) + 1 : n;
    if (k > p->max_header - p->hpad - p->hlen)
        return fail(p, -EMSGSIZE, "part headers too large");
    memcpy(p->hdr + p->hlen, s, k);
    p->hlen += k;
    *used = k;
    if (!nl)
        return 0;
    const unsigned char *l = (const unsigned char *)p->hdr + p->lstart;
    size_t ll = p->hlen - p->lstart;
    if (ll < 2 || l[ll - 2] != '\r')
        return fail(p, -EBADMSG, "bare LF in part headers");
    for (size_t j = 0; j + 2 < ll; j++)
        if ((l[j] < 0x20 && l[j] != '\t') || l[j] == 0x7F)
            return fail(p, -EBADMSG,
                        l[j] == '\r' ? "bare CR in part headers"
                                     : "control character in part headers");
    p->lstart = p->hlen;
    if (ll > 2)
        return 0;
    mp_part part = {NULL, NULL, NULL, p->parts - 1};
    int rc = parse_headers(p, &part);
    if (rc < 0)
        return rc;
    p->state = S_DATA;
    p->m = 0;
    if (p->cb.on_part_begin && (rc = p->cb.on_part_begin(p->ud, &part)) < 0)
        return fail(p, rc, "callback aborted");
    return 1;
}

/* ---- feeding ---- */

int mp_feed(mp_parser *p, const char *data, size_t len)
{
    size_t i = 0, used;
    int rc;
    if (p->err)
        return p->err;
    while (i < len) {
        char c;
        switch (p->state) {
        case S_PREAMBLE:
        case S_DATA:
            if ((rc = scan(p, data + i, len - i, &used)) < 0)
                return rc;
            i += used;
            if (!rc)
                break;
            if (p->state == S_DATA && p->cb.on_part_end && (rc = p->cb.on_part_end(p->ud)) < 0)
                return fail(p, rc, "callback aborted");
            p->phantom = 0;
            p->hpad = 0;
            p->state = S_AFTER;
            break;
        case S_AFTER:
            c = data[i++];
            if (c == '-')
                p->state = S_DASH;
            else if (c == '\r')
                p->state = S_CR;
            else if (ows(c))
                p->state = S_PAD, p->hpad = 1;
            else
                return fail(p, -EBADMSG,
                            c == '\n' ? "bare LF after boundary"
                                      : "boundary followed by other characters");
            break;
        case S_DASH:
            if (data[i++] != '-')
                return fail(p, -EBADMSG, "boundary followed by other characters");
            p->state = S_EPILOGUE;
            break;
        case S_PAD:
            c = data[i++];
            if (c == '\r') {
                p->state = S_CR;
            } else if (!ows(c)) {
                return fail(p, -EBADMSG,
                            c == '\n' ? "bare LF after boundary"
                                      : "boundary followed by other characters");
            } else if (++p->hpad >= p->max_header) {
                return fail(p, -EMSGSIZE, "part headers too large");
            }
            break;
        case S_CR:
            if (data[i++] != '\n')
                return fail(p, -EBADMSG, "bare CR after boundary");
            if (p->parts >= p->max_parts)
                return fail(p, -EMSGSIZE, "too many parts");
            p->parts++;
            p->hlen = p->lstart = 0;
            p->state = S_HEADERS;
            break;
        case S_HEADERS:
            if ((rc = headers(p, data + i, len - i, &used)) < 0)
                return rc;
            i += used;
            break;
        case S_EPILOGUE:
            if (len - i > p->max_outside - p->outside)
                return fail(p, -EMSGSIZE, "epilogue too large");
            p->outside += len - i;
            i = len;
            break;
        }
    }
    return 0;
}

int mp_finish(mp_parser *p)
{
    if (p->err)
        return p->err;
    if (p->state != S_EPILOGUE)
        return fail(p, -EBADMSG, "truncated body: no close delimiter");
    return 0;
}
