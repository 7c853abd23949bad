/* Content checks for uploaded files: does an upload's content match the type its client
 * declared (an image must be an image), what name is it stored under, and how is it served.
 *
 * Detection (sniff_type), from the first bytes, in this order:
 *   image/png         89 50 4E 47 0D 0A 1A 0A
 *   image/jpeg        FF D8 FF
 *   image/gif         "GIF87a" or "GIF89a"
 *   image/webp        "RIFF", 4 size bytes, "WEBP"
 *   image/bmp         "BM" and, at offset 14, a known DIB header size as a 32-bit little-endian
 *                     number (12, 16, 40, 52, 56, 64, 108 or 124): "BM" alone would call any
 *                     file starting "BMW..." an image;
 *   application/pdf   "%PDF-"
 *   application/zip   "PK\3\4" (a zip and its OOXML/ODF/EPUB/JAR kin) or "PK\5\6" (empty)
 *   application/gzip  1F 8B
 *   text/plain        every byte so far is valid UTF-8 (no overlongs, surrogates or code points
 *                     past U+10FFFF, no sequence cut off at the end) and none is NUL; a BOM is
 *                     fine (it is U+FEFF); an empty file is text
 *   application/octet-stream otherwise.
 * Not thread-safe; a sniff_state is a plain value (no allocation, nothing to free). */
#ifndef CK_SNIFF_H
#define CK_SNIFF_H
#include <stddef.h>
#include <stdint.h>

#define SNIFF_HEAD     512 /* bytes of the file's start the sniffer keeps */
#define SNIFF_NAME_MAX 255 /* bytes of a stored file name */
/* out bytes sniff_disposition needs for any name of up to SNIFF_NAME_MAX bytes, NUL included:
 * "attachment; filename=\"" + 255 + "\"; filename*=UTF-8''" + 3 * 255 + NUL */
#define SNIFF_DISPOSITION_MAX (10 + 12 + SNIFF_NAME_MAX + 1 + 19 + 3 * SNIFF_NAME_MAX + 1)

/* Fed every chunk of one file, in order. Callers may read total; the rest is private. */
typedef struct sniff_state {
    uint64_t total;  /* bytes fed so far */
    size_t head_len; /* head holds the first head_len bytes (<= SNIFF_HEAD) */
    unsigned char head[SNIFF_HEAD];
    unsigned char bad;    /* 0: UTF-8 text so far; else why not (first reason) */
    unsigned char need;   /* continuation bytes the last sequence still needs */
    unsigned char lo, hi; /* the range the next continuation byte must be in */
} sniff_state;

void sniff_init(sniff_state *s);
/* Adds len more bytes (data may be NULL when len is 0). A UTF-8 sequence may be split across
 * calls. O(len); the content is not kept past the first SNIFF_HEAD bytes. */
void sniff_feed(sniff_state *s, const void *data, size_t len);
/* After the last chunk: the detected type, a static string (see above). */
const char *sniff_type(const sniff_state *s);

/* Whether content may be stored under the declared type: a MIME type "type/subtype" without
 * parameters or spaces (matched without regard to case). Returns 0, or -1 with a short static
 * reason in why (truncated to whylen; why may be NULL) that never quotes the file or the
 * declared type. Rules:
 *   - image/png (image/x-png), image/jpeg (image/jpg, image/pjpeg), image/gif, image/webp,
 *     image/bmp (image/x-bmp, image/x-ms-bmp): that format's magic, and only that format's;
 *   - any other image type (svg, tiff, heic...): refused, "unsupported image type" (an SVG can
 *     carry script; only raster formats we recognise are accepted);
 *   - application/pdf: "%PDF-"; application/zip, application/x-zip-compressed, application/
 *     epub+zip, application/java-archive, application/vnd.openxmlformats-officedocument.*,
 *     application/vnd.oasis.opendocument.*: zip magic; application/gzip, application/x-gzip:
 *     gzip magic. So an empty file is refused for these and for images;
 *   - text/... (text/html too: the caller serves it as an attachment), application/json,
 *     application/xml, application/yaml, application/x-yaml, application/javascript: UTF-8
 *     text as defined above (whatever its first bytes look like);
 *   - anything else (application/octet-stream...): accepted unless the content is an image or a
 *     PDF ("content is an image/png file"): those must be declared as what they are.
 * A missing (NULL) or malformed declared type is refused. */
int sniff_check(const sniff_state *s, const char *declared, char *why, size_t whylen);

/* The Content-Disposition value for serving a stored file: disposition is "inline" or
 * "attachment"; with a non-empty name,
 *   attachment; filename="fallback"; filename*=UTF-8''pct-encoded
 * (RFC 6266, RFC 8187): the fallback replaces each non-ASCII character, control character,
 * '"', '\\' and '%' with '_'; the extended value percent-encodes every byte that is not an RFC
 * 8187 attr-char, and is left out when name is not valid UTF-8. Without a name (NULL or ""),
 * just the disposition. The value is printable ASCII (no CR/LF). Writes it and a NUL to out;
 * returns 0, or -1 (out set to "" when outlen > 0) for another disposition or when out is
 * too small. */
int sniff_disposition(const char *disposition, const char *name, char *out, size_t outlen);

/* The name to store for a client-supplied file name (a multipart filename, an attachment's
 * name): the part after the last '/' or '\\', without leading and trailing spaces and dots.
 * Returns 0, or -1 (out set to "" when outlen > 0) when in is NULL, is not valid UTF-8, holds a
 * control character (C0, DEL, C1) or a bidirectional embedding/override/isolate control
 * (U+202A-U+202E, U+2066-U+2069, which can disguise an extension) anywhere, when the result is
 * empty (so "", ".", "..", "a/") or longer than SNIFF_NAME_MAX bytes, or when it does not fit
 * in outlen (with its NUL). out may be in. */
int sniff_clean_name(const char *in, char *out, size_t outlen);

/* 1 when a file of this type (stored after sniff_check) is safe to show inline in a browser:
 * the raster image types above and their aliases, no parameters; never SVG, HTML, XML or PDF.
 * Else 0 (also for NULL). */
int sniff_inline_safe(const char *mime);

#endif
