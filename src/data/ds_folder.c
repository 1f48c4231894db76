/* Image folder source (folder:DIR). Images: the regular files directly in
 * DIR whose extension is jpg, jpeg, png or webp (any case; names starting
 * with '.' are skipped), sorted byte-wise by name. Captions, first found:
 *   DIR/captions.tsv    "filename<TAB>caption" per line; a first line whose
 *                       filename field is file/filename/image/path is a header
 *   DIR/captions.jsonl  one object per line: file name in "file", "filename",
 *                       "image" or "path"; caption in "caption", "text" or "txt"
 *   DIR/<stem>.txt      side-car per image (stem = name without its last
 *                       extension), trailing whitespace stripped
 * Blank lines are ignored; for a file listed twice the first entry wins;
 * entries naming no image are ignored. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/ds_internal.h"
#include "saeflow/common.h"

typedef struct {
    char *name, *caption;
    size_t order;
} cap_entry;

typedef struct {
    char **names;
    int64_t n;
    cap_entry *caps;
    size_t n_caps;
    const char *cap_source; /* "captions.tsv", "captions.jsonl", "side-car .txt" */
    int64_t pos;
    char *img;
    size_t img_len;
    char *cap;
} folder_src;

static int is_image_name(const char *n) {
    const char *d = strrchr(n, '.');
    if (!d || n[0] == '.') return 0;
    d++;
    return !strcasecmp(d, "jpg") || !strcasecmp(d, "jpeg") || !strcasecmp(d, "png") ||
           !strcasecmp(d, "webp");
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_cap(const void *a, const void *b) {
    const cap_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}

static void add_cap(folder_src *s, size_t *cap, const char *name, size_t nl, const char *text,
                    size_t tl) {
    if (s->n_caps == *cap) s->caps = sf_realloc(s->caps, (*cap = *cap * 2 + 64) * sizeof *s->caps);
    cap_entry *e = &s->caps[s->n_caps];
    e->name = sf_malloc(nl + 1);
    memcpy(e->name, name, nl);
    e->name[nl] = 0;
    e->caption = sf_malloc(tl + 1);
    memcpy(e->caption, text, tl);
    e->caption[tl] = 0;
    e->order = s->n_caps++;
}

static int load_tsv(folder_src *s, const char *path) {
    size_t len;
    char *buf = sf_read_file(path, &len);
    if (!buf) return -1;
    size_t cap = 0, line_no = 0;
    char *p = buf, *end = buf + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line_no++;
        size_t n = (size_t)(le - p);
        if (n && p[n - 1] == '\r') n--;
        if (n) {
            char *tab = memchr(p, '\t', n);
            if (!tab) {
                free(buf);
                return sf_error("%s:%zu: expected filename<TAB>caption", path, line_no);
            }
            size_t fl = (size_t)(tab - p);
            int header =
                line_no == 1 &&
                ((fl == 4 && !memcmp(p, "file", 4)) || (fl == 8 && !memcmp(p, "filename", 8)) ||
                 (fl == 5 && !memcmp(p, "image", 5)) || (fl == 4 && !memcmp(p, "path", 4)));
            if (!header) add_cap(s, &cap, p, fl, tab + 1, n - fl - 1);
        }
        p = nl ? nl + 1 : end;
    }
    free(buf);
    return 0;
}

static const char *json_str(cJSON *o, const char *const *keys, int n) {
    for (int i = 0; i < n; i++) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
        if (cJSON_IsString(v)) return v->valuestring;
    }
    return NULL;
}

static int load_jsonl(folder_src *s, const char *path) {
    static const char *const FILE_KEYS[] = {"file", "filename", "image", "path"};
    static const char *const CAP_KEYS[] = {"caption", "text", "txt"};
    size_t len;
    char *buf = sf_read_file(path, &len);
    if (!buf) return -1;
    size_t cap = 0, line_no = 0;
    char *p = buf, *end = buf + len;
    int rc = 0;
    while (p < end && !rc) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        line_no++;
        size_t n = (size_t)(le - p);
        int blank = 1;
        for (size_t i = 0; i < n; i++)
            if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r') blank = 0;
        if (!blank) {
            cJSON *o = cJSON_ParseWithLength(p, n);
            const char *f = o ? json_str(o, FILE_KEYS, 4) : NULL;
            const char *c = o ? json_str(o, CAP_KEYS, 3) : NULL;
            if (!o)
                rc = sf_error("%s:%zu: not valid JSON", path, line_no);
            else if (!f)
                rc = sf_error("%s:%zu: no \"file\" (or filename/image/path) string", path, line_no);
            else if (c)
                add_cap(s, &cap, f, strlen(f), c, strlen(c));
            cJSON_Delete(o);
        }
        p = nl ? nl + 1 : end;
    }
    free(buf);
    return rc;
}

static const char *lookup_cap(folder_src *s, const char *name) {
    size_t lo = 0, hi = s->n_caps;
    while (lo < hi) { /* first entry with name >= `name` */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(s->caps[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n_caps && !strcmp(s->caps[lo].name, name) ? s->caps[lo].caption : NULL;
}

static int folder_next(sf_dataset *ds, sf_sample *out) {
    folder_src *s = ds->impl;
    if (s->pos >= s->n) return 0;
    const char *name = s->names[s->pos];
    free(s->img);
    s->img = NULL;
    free(s->cap);
    s->cap = NULL;
    if (ds->flags & SF_DS_IMAGES) {
        char *path = sf_path_join(ds->files[0], name);
        s->img = sf_read_file(path, &s->img_len);
        free(path);
        if (!s->img) return -1;
        out->image = (const uint8_t *)s->img;
        out->image_len = s->img_len;
        out->image_ext = sf_image_ext_from_magic(out->image, out->image_len);
    }
    if (ds->flags & SF_DS_CAPTIONS) {
        if (s->caps) {
            const char *c = lookup_cap(s, name);
            if (c) s->cap = sf_strdup(c);
        } else {
            const char *dot = strrchr(name, '.');
            size_t stem = (size_t)(dot - name);
            char *side = sf_malloc(stem + 5);
            memcpy(side, name, stem);
            memcpy(side + stem, ".txt", 5);
            char *path = sf_path_join(ds->files[0], side);
            free(side);
            struct stat st;
            if (stat(path, &st) == 0) {
                size_t n;
                s->cap = sf_read_file(path, &n);
                if (!s->cap) {
                    free(path);
                    return -1;
                }
                ds_rstrip(s->cap, n);
            }
            free(path);
        }
        if (s->cap) {
            out->caption = s->cap;
            out->caption_len = strlen(s->cap);
        }
    }
    out->row = s->pos++;
    out->id = name;
    return 1;
}

static int folder_seek(sf_dataset *ds, int64_t row) {
    folder_src *s = ds->impl;
    if (row > s->n)
        return sf_error("row %lld: dataset has %lld rows", (long long)row, (long long)s->n);
    s->pos = row;
    return 0;
}

static int64_t folder_count(sf_dataset *ds) {
    return ((folder_src *)ds->impl)->n;
}

static int folder_describe(sf_dataset *ds, FILE *out) {
    folder_src *s = ds->impl;
    fprintf(out, "source:     image folder %s\n", ds->files[0]);
    fprintf(out, "rows:       %lld images\n", (long long)s->n);
    fprintf(out, "captions:   %s", s->cap_source);
    if (s->caps) fprintf(out, " (%zu entries)", s->n_caps);
    fprintf(out, "\n");
    return 0;
}

static void folder_close(sf_dataset *ds) {
    folder_src *s = ds->impl;
    if (!s) return;
    for (int64_t i = 0; i < s->n; i++)
        free(s->names[i]);
    free(s->names);
    for (size_t i = 0; i < s->n_caps; i++) {
        free(s->caps[i].name);
        free(s->caps[i].caption);
    }
    free(s->caps);
    free(s->img);
    free(s->cap);
    free(s);
    ds->impl = NULL;
}

static const ds_ops FOLDER_OPS = {folder_count, folder_next, folder_seek, folder_describe,
                                  folder_close};

int ds_folder_init(sf_dataset *ds) {
    folder_src *s = sf_calloc(1, sizeof *s);
    ds->impl = s;
    ds->ops = &FOLDER_OPS;
    const char *dir = ds->files[0];
    DIR *d = opendir(dir);
    if (!d) {
        int e = errno;
        folder_close(ds);
        return sf_error("%s: cannot open directory: %s", dir, strerror(e));
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_image_name(de->d_name)) continue;
        char *path = sf_path_join(dir, de->d_name);
        struct stat st;
        int ok = stat(path, &st) == 0 && S_ISREG(st.st_mode);
        free(path);
        if (!ok) continue;
        if ((size_t)s->n == cap)
            s->names = sf_realloc(s->names, (cap = cap * 2 + 64) * sizeof *s->names);
        s->names[s->n++] = sf_strdup(de->d_name);
    }
    closedir(d);
    if (s->n == 0) {
        folder_close(ds);
        return sf_error("%s: no images (jpg, jpeg, png, webp) in the folder", dir);
    }
    qsort(s->names, (size_t)s->n, sizeof *s->names, cmp_name);
    char *tsv = sf_path_join(dir, "captions.tsv"), *jsonl = sf_path_join(dir, "captions.jsonl");
    struct stat st;
    int rc = 0;
    if (stat(tsv, &st) == 0) {
        s->cap_source = "captions.tsv";
        rc = load_tsv(s, tsv);
    } else if (stat(jsonl, &st) == 0) {
        s->cap_source = "captions.jsonl";
        rc = load_jsonl(s, jsonl);
    } else {
        s->cap_source = "side-car <stem>.txt files";
    }
    free(tsv);
    free(jsonl);
    if (rc) {
        folder_close(ds);
        return -1;
    }
    if (s->n_caps)
        qsort(s->caps, s->n_caps, sizeof *s->caps, cmp_cap);
    else if (strcmp(s->cap_source, "side-car <stem>.txt files")) {
        s->caps = sf_malloc(sizeof *s->caps); /* empty table: captions file present but empty */
    }
    return 0;
}
