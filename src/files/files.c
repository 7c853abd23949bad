#include "files/files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

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
