/* Dataset specs (prefix, brace expansion, globbing, sorting) and dispatch to
 * the sources; see include/saeflow/dataset.h. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/ds_internal.h"
#include "saeflow/buf.h"
#include "saeflow/common.h"

#define MAX_EXPANSIONS 1000000

/* ---- brace expansion ---- */

typedef SF_VEC(char *) strvec;

static int sv_push(strvec *s, char *str) {
    if (s->n >= MAX_EXPANSIONS) {
        free(str);
        return sf_error("brace expansion makes more than %d patterns", MAX_EXPANSIONS);
    }
    sf_vec_push(s, str);
    return 0;
}

static void sv_free(strvec *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

static char *concat3(const char *a, size_t na, const char *b, size_t nb, const char *c) {
    size_t nc = strlen(c);
    char *out = sf_malloc(na + nb + nc + 1);
    memcpy(out, a, na);
    memcpy(out + na, b, nb);
    memcpy(out + na + nb, c, nc + 1);
    return out;
}

/* Parses "A..B" with decimal integers; width = zero-padded width or 0. */
static int parse_range(const char *s, size_t n, long long *a, long long *b, int *width) {
    const char *dots = NULL;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '.' && s[i + 1] == '.') {
            dots = s + i;
            break;
        }
    if (!dots) return 0;
    char x[32], y[32];
    size_t nx = (size_t)(dots - s), ny = n - nx - 2;
    if (nx == 0 || ny == 0 || nx >= sizeof x || ny >= sizeof y) return 0;
    memcpy(x, s, nx);
    x[nx] = 0;
    memcpy(y, dots + 2, ny);
    y[ny] = 0;
    char *e1, *e2;
    errno = 0;
    *a = strtoll(x, &e1, 10);
    *b = strtoll(y, &e2, 10);
    if (errno || *e1 || *e2 || !isdigit((unsigned char)x[nx - 1]) ||
        !isdigit((unsigned char)y[ny - 1]))
        return 0;
    int pad = (x[0] == '0' && nx > 1) || (y[0] == '0' && ny > 1);
    *width = pad ? (int)(nx > ny ? nx : ny) : 0;
    return 1;
}

/* Expands the first top-level {...} of `pat` and recurses on the results. */
static int brace_expand(const char *pat, strvec *out, int depth) {
    if (depth > 16) return sf_error("brace expansion nested too deeply in '%s'", pat);
    const char *open = NULL, *close = NULL;
    int d = 0;
    for (const char *p = pat; *p; p++) {
        if (*p == '{') {
            if (d++ == 0) open = p;
        } else if (*p == '}' && d > 0) {
            if (--d == 0) {
                close = p;
                break;
            }
        }
    }
    if (!open || !close) return sv_push(out, sf_strdup(pat));
    const char *in = open + 1;
    size_t n = (size_t)(close - in);
    size_t pre = (size_t)(open - pat);
    long long a, b;
    int width;
    if (parse_range(in, n, &a, &b, &width)) {
        long long step = a <= b ? 1 : -1;
        if ((a <= b ? b - a : a - b) >= MAX_EXPANSIONS)
            return sf_error("brace range {%.*s} too large", (int)n, in);
        for (long long v = a;; v += step) {
            char num[40];
            snprintf(num, sizeof num, "%0*lld", width, v);
            char *s = concat3(pat, pre, num, strlen(num), close + 1);
            int rc = brace_expand(s, out, depth + 1);
            free(s);
            if (rc) return rc;
            if (v == b) break;
        }
        return 0;
    }
    /* Alternatives at the top level of the braces. */
    int has_comma = 0;
    d = 0;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == '{') d++;
        if (in[i] == '}') d--;
        if (in[i] == ',' && d == 0) has_comma = 1;
    }
    if (!has_comma) {
        /* Literal braces: keep them, expand what follows. */
        strvec tail = {0};
        if (brace_expand(close + 1, &tail, depth + 1)) {
            sv_free(&tail);
            return -1;
        }
        int rc = 0;
        for (size_t i = 0; i < tail.n && !rc; i++)
            rc = sv_push(out, concat3(pat, (size_t)(close + 1 - pat), "", 0, tail.v[i]));
        sv_free(&tail);
        return rc;
    }
    size_t start = 0;
    d = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && in[i] == '{') d++;
        if (i < n && in[i] == '}') d--;
        if (i == n || (in[i] == ',' && d == 0)) {
            char *alt = concat3(in + start, i - start, "", 0, close + 1);
            char *s = concat3(pat, pre, alt, strlen(alt), "");
            free(alt);
            int rc = brace_expand(s, out, depth + 1);
            free(s);
            if (rc) return rc;
            start = i + 1;
        }
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int has_glob_chars(const char *s) {
    return strpbrk(s, "*?[") != NULL;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* Expands a file pattern into a sorted, de-duplicated list of files. */
static int expand_files(const char *pattern, const char *dir_glob, sf_dataset *ds) {
    strvec pats = {0}, files = {0};
    int rc = 0;
    if (sf_is_dir(pattern)) {
        char *p = sf_path_join(pattern, dir_glob);
        rc = sv_push(&pats, p);
    } else {
        rc = brace_expand(pattern, &pats, 0);
    }
    for (size_t i = 0; i < pats.n && !rc; i++) {
        const char *p = pats.v[i];
        if (has_glob_chars(p)) {
            glob_t g;
            int gr = glob(p, 0, NULL, &g);
            if (gr == GLOB_NOMATCH) {
                rc = sf_error("no files match '%s'", p);
            } else if (gr != 0) {
                rc = sf_error("cannot expand '%s'", p);
            } else {
                for (size_t k = 0; k < g.gl_pathc && !rc; k++)
                    if (!sf_is_dir(g.gl_pathv[k])) rc = sv_push(&files, sf_strdup(g.gl_pathv[k]));
            }
            if (gr != GLOB_NOMATCH) globfree(&g);
        } else {
            struct stat st;
            if (stat(p, &st) != 0)
                rc = sf_error("%s: %s", p, strerror(errno));
            else
                rc = sv_push(&files, sf_strdup(p));
        }
    }
    sv_free(&pats);
    if (!rc && files.n == 0) rc = sf_error("'%s' matches no files", pattern);
    if (rc) {
        sv_free(&files);
        return -1;
    }
    qsort(files.v, files.n, sizeof *files.v, cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < files.n; i++) {
        if (k && !strcmp(files.v[k - 1], files.v[i]))
            free(files.v[i]);
        else
            files.v[k++] = files.v[i];
    }
    if (k > (size_t)1 << 30) {
        for (size_t i = 0; i < k; i++)
            free(files.v[i]);
        free(files.v);
        return sf_error("too many files");
    }
    ds->files = files.v;
    ds->n_files = (int)k;
    return 0;
}

/* ---- shared helpers ---- */

size_t ds_rstrip(char *s, size_t n) {
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    s[n] = 0;
    return n;
}

char *ds_json_caption(const char *json, size_t len) {
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!j) return NULL;
    static const char *keys[] = {"caption", "txt", "text"};
    char *out = NULL;
    for (int i = 0; i < 3 && !out; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[i]);
        if (cJSON_IsString(v)) out = sf_strdup(v->valuestring);
    }
    cJSON_Delete(j);
    return out;
}

const char *sf_image_ext_from_magic(const uint8_t *p, size_t n) {
    if (!p) return NULL;
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return "jpg";
    if (n >= 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8)) return "png";
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) return "webp";
    return "bin";
}

/* ---- public API ---- */

static sf_dataset *finish_open(sf_dataset *ds, int (*init)(sf_dataset *)) {
    if (init(ds)) {
        for (int i = 0; i < ds->n_files; i++)
            free(ds->files[i]);
        free(ds->files);
        free(ds);
        return NULL;
    }
    return ds;
}

sf_dataset *sf_dataset_open(const char *spec, unsigned flags) {
    if (!spec || !*spec) {
        sf_error("empty dataset spec");
        return NULL;
    }
    sf_dataset *ds = sf_calloc(1, sizeof *ds);
    ds->flags = flags;
    const char *colon = strchr(spec, ':');
    const char *rest = spec;
    int kind = 0; /* 1 parquet, 2 tar, 3 folder */
    if (colon) {
        size_t n = (size_t)(colon - spec);
        if ((n == 4 && !strncmp(spec, "cc3m", 4)) || (n == 7 && !strncmp(spec, "parquet", 7)))
            kind = 1;
        if ((n == 3 && !strncmp(spec, "wds", 3)) || (n == 3 && !strncmp(spec, "tar", 3))) kind = 2;
        if (n == 6 && !strncmp(spec, "folder", 6)) kind = 3;
        if (kind) rest = colon + 1;
    }
    if (!kind) {
        if (sf_is_dir(spec))
            kind = 3;
        else if (ends_with(spec, ".parquet"))
            kind = 1;
        else if (ends_with(spec, ".tar") || ends_with(spec, ".tar.gz") || ends_with(spec, ".tgz"))
            kind = 2;
        else {
            sf_error("dataset spec '%s': expected cc3m:PATTERN, wds:PATTERN or folder:DIR", spec);
            free(ds);
            return NULL;
        }
    }
    if (kind == 3) {
        if (!sf_is_dir(rest)) {
            sf_error("dataset spec '%s': '%s' is not a directory", spec, rest);
            free(ds);
            return NULL;
        }
        ds->files = sf_malloc(sizeof *ds->files);
        ds->files[0] = sf_strdup(rest);
        ds->n_files = 1;
        ds->kind = "folder";
        return finish_open(ds, ds_folder_init);
    }
    if (expand_files(rest, kind == 1 ? "*.parquet" : "*.tar", ds)) {
        sf_error_prefix("dataset spec '%s'", spec);
        free(ds);
        return NULL;
    }
    ds->kind = kind == 1 ? "cc3m" : "wds";
    return finish_open(ds, kind == 1 ? ds_parquet_init : ds_tar_init);
}

sf_dataset *sf_dataset_open_mem(const char *kind, const void *buf, size_t len, unsigned flags) {
    sf_dataset *ds = sf_calloc(1, sizeof *ds);
    ds->flags = flags;
    ds->mem = buf;
    ds->mem_len = len;
    ds->files = sf_malloc(sizeof *ds->files);
    ds->n_files = 1;
    if (!strcmp(kind, "parquet")) {
        ds->files[0] = sf_strdup("(memory).parquet");
        ds->kind = "cc3m";
        return finish_open(ds, ds_parquet_init);
    }
    if (!strcmp(kind, "tar")) {
        ds->files[0] = sf_strdup("(memory).tar");
        ds->kind = "wds";
        return finish_open(ds, ds_tar_init);
    }
    sf_error("sf_dataset_open_mem: unknown kind '%s'", kind);
    free(ds->files[0]);
    free(ds->files);
    free(ds);
    return NULL;
}

void sf_dataset_close(sf_dataset *ds) {
    if (!ds) return;
    ds->ops->close(ds);
    for (int i = 0; i < ds->n_files; i++)
        free(ds->files[i]);
    free(ds->files);
    free(ds);
}

const char *sf_dataset_kind(const sf_dataset *ds) {
    return ds->kind;
}
int sf_dataset_num_files(const sf_dataset *ds) {
    return ds->n_files;
}
const char *sf_dataset_file(const sf_dataset *ds, int i) {
    return i >= 0 && i < ds->n_files ? ds->files[i] : NULL;
}
int64_t sf_dataset_count(sf_dataset *ds) {
    return ds->ops->count(ds);
}
int sf_dataset_next(sf_dataset *ds, sf_sample *out) {
    memset(out, 0, sizeof *out);
    return ds->ops->next(ds, out);
}
int sf_dataset_seek(sf_dataset *ds, int64_t row) {
    if (row < 0) return sf_error("row %lld: negative", (long long)row);
    return ds->ops->seek(ds, row);
}
int sf_dataset_get(sf_dataset *ds, int64_t row, sf_sample *out) {
    if (sf_dataset_seek(ds, row)) return -1;
    ds->random_access = 1;
    int rc = sf_dataset_next(ds, out);
    ds->random_access = 0;
    if (rc == 0) return sf_error("row %lld: past the end of the dataset", (long long)row);
    return rc < 0 ? -1 : 0;
}
int sf_dataset_describe(sf_dataset *ds, FILE *out) {
    return ds->ops->describe(ds, out);
}
