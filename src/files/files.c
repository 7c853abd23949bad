#include "files/files.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "util/base64.h"
#include "util/hmac.h"
#include "util/id.h"
#include "util/log.h"

int files_path(const char *data_dir, const char *id, char *out, size_t n)
{
    if (!*id)
        return -EINVAL;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return -EINVAL;
    int w = snprintf(out, n, "%s/files/%s", data_dir, id);
    return w < 0 || (size_t)w >= n ? -EINVAL : 0;
}

char *files_read(const char *path, size_t max, size_t *len, int *more)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = xmalloc(max + 1);
    *len = fread(b, 1, max, f);
    *more = fgetc(f) != EOF;
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(b);
        return NULL;
    }
    b[*len] = 0;
    return b;
}

static void sig_of(const void *key, size_t klen, const char *id, long long exp, char out[44])
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s.%lld", id, exp);
    unsigned char mac[HMAC_SHA256_LEN];
    hmac_sha256(key, klen, msg, n > 0 && (size_t)n < sizeof msg ? (size_t)n : 0, mac);
    base64_encode(mac, sizeof mac, out, 1);
}

void files_sign(const void *key, size_t klen, const char *id, long long exp, char *out)
{
    char sig[44];
    sig_of(key, klen, id, exp, sig);
    snprintf(out, FILES_SIG_QUERY_MAX, "exp=%lld&sig=%s", exp, sig);
}

int files_verify(const void *key, size_t klen, const char *id, const char *query, long long now)
{
    char exp_s[24], sig[48], want[44];
    if (!query || http_query_get(query, "sig", sig, sizeof sig) < 0)
        return -1;
    if (http_query_get(query, "exp", exp_s, sizeof exp_s) <= 0 || strlen(sig) != 43)
        return -2;
    char *end;
    errno = 0;
    long long exp = strtoll(exp_s, &end, 10);
    if (errno || *end || exp_s[0] < '0' || exp_s[0] > '9')
        return -2;
    sig_of(key, klen, id, exp, want);
    if (!ct_equal(sig, want, 43) || exp <= now)
        return -2;
    return 0;
}

int files_prepare(const char *data_dir, const char *configured, unsigned char key[32], char *err,
                  size_t errlen)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/files", data_dir);
    if (mkdir(p, 0700) && errno != EEXIST)
        goto fail;
    snprintf(p, sizeof p, "%s/files/tmp", data_dir);
    if (mkdir(p, 0700) && errno != EEXIST)
        goto fail;
    if (configured && *configured) {
        sha256(configured, strlen(configured), key);
        return 0;
    }
    snprintf(p, sizeof p, "%s/secret.key", data_dir);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, key, 32);
        close(fd);
        if (n == 32)
            return 0;
        snprintf(err, errlen, "%s is damaged: remove it (signed links then change)", p);
        return -1;
    }
    if (errno != ENOENT)
        goto fail;
    id_random(key, 32);
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, key, 32) != 32 || fsync(fd)) {
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    close(fd);
    return 0;
fail:
    snprintf(err, errlen, "cannot prepare %s: %s", p, strerror(errno));
    return -1;
}
