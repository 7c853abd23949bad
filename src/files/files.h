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


/* Creates <data_dir>/files and files/tmp (0700) and fills key: SHA-256 of configured when it is
 * not empty, else the 32 random bytes kept in <data_dir>/secret.key (created, mode 0600, on
 * first use). Blocking: start-up only. Returns 0 or -1 with err set. */
int files_prepare(const char *data_dir, const char *configured, unsigned char key[32], char *err,
                  size_t errlen);

/* Signed preview URLs. The query "exp=<unix seconds>&sig=<43 base64url chars>" where sig is
 * HMAC-SHA256(key, id + "." + exp) lets GET <api>/attachments/<id> serve the bytes to an <img>
 * tag without credentials until exp. out needs FILES_SIG_QUERY_MAX bytes. */
#define FILES_SIG_QUERY_MAX 80
void files_sign(const void *key, size_t klen, const char *id, long long exp, char *out);
/* 0 when query carries a valid, unexpired signature for id at now (unix seconds), -1 when it
 * carries none, -2 when it is wrong or expired. Constant-time comparison. */
int files_verify(const void *key, size_t klen, const char *id, const char *query, long long now);

#endif
