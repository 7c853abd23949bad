/* Attachment bytes on disk. Each uploaded attachment's bytes live in one file,
 * <data_dir>/files/<attachment id>; the store row (scoped to its owner) says whose it is, so
 * callers look the attachment up in the store before touching its file. */
#ifndef CK_FILES_H
#define CK_FILES_H
#include <stddef.h>

/* The file of attachment id. Returns 0, or -EINVAL for an id that is not [A-Za-z0-9_-]+ (so
 * nothing from a request can name another path) or does not fit. */
int files_path(const char *data_dir, const char *id, char *out, size_t n);
/* Reads at most max bytes (blocking: store threads only). *more is set when the file is longer.
 * Returns malloc'd bytes (NUL-terminated) and *len, or NULL when the file cannot be read. */
char *files_read(const char *path, size_t max, size_t *len, int *more);

#endif
