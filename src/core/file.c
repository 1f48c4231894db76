#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "saeflow/common.h"

double sf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int sf_atomic_open(sf_atomic_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path) + 64;
    f->path = sf_strdup(path);
    f->tmp = sf_malloc(n);
    snprintf(f->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    f->fp = fopen(f->tmp, "wb");
    if (!f->fp) {
        int e = errno;
        free(f->path);
        free(f->tmp);
        memset(f, 0, sizeof *f);
        return sf_error("%s: cannot create: %s", path, strerror(e));
    }
    return 0;
}

void sf_atomic_abort(sf_atomic_file *f) {
    if (f->fp) fclose(f->fp);
    if (f->tmp) unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    memset(f, 0, sizeof *f);
}

int sf_atomic_commit(sf_atomic_file *f) {
    int rc = 0;
    if (fflush(f->fp) != 0 || ferror(f->fp))
        rc = sf_error("%s: write failed: %s", f->path, strerror(errno));
    if (!rc && fsync(fileno(f->fp)) != 0)
        rc = sf_error("%s: fsync failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && !rc) rc = sf_error("%s: close failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (!rc && rename(f->tmp, f->path) != 0)
        rc = sf_error("%s: rename failed: %s", f->path, strerror(errno));
    if (rc) unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    memset(f, 0, sizeof *f);
    return rc;
}

char *sf_read_file(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        sf_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = sf_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = sf_realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        sf_error("%s: read failed", path);
        return NULL;
    }
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int sf_write_file_atomic(const char *path, const void *data, size_t len) {
    sf_atomic_file f;
    if (sf_atomic_open(&f, path)) return -1;
    if (len && fwrite(data, 1, len, f.fp) != len) {
        sf_atomic_abort(&f);
        return sf_error("%s: write failed", path);
    }
    return sf_atomic_commit(&f);
}

int sf_mkdirs(const char *path) {
    char *p = sf_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            sf_error("%s: cannot create directory: %s", p, strerror(e));
            free(p);
            return -1;
        }
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
        sf_error("%s: cannot create directory: %s", p, strerror(errno));
        free(p);
        return -1;
    }
    free(p);
    return 0;
}

char *sf_path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = sf_malloc(la + lb + 2);
    memcpy(s, a, la);
    size_t n = la;
    if (la && a[la - 1] != '/') s[n++] = '/';
    memcpy(s + n, b, lb + 1);
    return s;
}

int sf_path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}
int sf_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
int sf_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
