/* safetensors reader and writer. See include/saeflow/safetensors.h.
 *
 * The reader trusts nothing in the file: every offset and shape is checked
 * against the mapping before any pointer into it is handed out, so a corrupt
 * or hostile file yields an error message, never a read outside the file.
 * The rules follow the reference implementation (huggingface/safetensors):
 * tensors must tile the data buffer exactly, in offset order, with no gaps. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "saeflow/buf.h"
#include "saeflow/safetensors.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors is little-endian");

/* A header larger than this is treated as corrupt (the reference caps it at 100 MB). */
#define SF_ST_MAX_HEADER (100u << 20)

/* ---- reader ---- */

int64_t sf_tensor_numel(const sf_tensor_info *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static int cmp_by_offset(const void *a, const void *b) {
    const sf_tensor_info *x = a, *y = b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* A JSON number that is a whole number in [0, 2^53]. */
static int json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_entry(sf_st *f, const cJSON *e, sf_tensor_info *t) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) return sf_error("%s: tensor '%s': entry is not an object", f->path, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return sf_error("%s: tensor '%s': missing or non-string 'dtype'", f->path, nm);
    if (sf_dtype_parse(dt->valuestring, &t->dtype))
        return sf_error("%s: tensor '%s': unknown dtype '%s'", f->path, nm, dt->valuestring);
    if (!cJSON_IsArray(sh))
        return sf_error("%s: tensor '%s': missing or non-array 'shape'", f->path, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > SF_MAX_DIMS)
        return sf_error("%s: tensor '%s': %d dimensions (at most %d supported)", f->path, nm, nd,
                        SF_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < nd; i++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(sh, i), &v))
            return sf_error("%s: tensor '%s': shape[%d] is not a non-negative integer", f->path, nm,
                            i);
        t->shape[i] = (int64_t)v;
        if (v && numel > UINT64_MAX / v)
            overflow = 1;
        else
            numel *= v;
    }
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return sf_error("%s: tensor '%s': 'data_offsets' must be [begin, end]", f->path, nm);
    uint64_t b, en;
    if (json_u64(cJSON_GetArrayItem(off, 0), &b) || json_u64(cJSON_GetArrayItem(off, 1), &en))
        return sf_error("%s: tensor '%s': data_offsets are not non-negative integers", f->path, nm);
    if (en < b)
        return sf_error("%s: tensor '%s': data_offsets end %llu < begin %llu", f->path, nm,
                        (unsigned long long)en, (unsigned long long)b);
    if (en > f->buf_len)
        return sf_error("%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the file "
                        "(data buffer is %llu bytes)",
                        f->path, nm, (unsigned long long)b, (unsigned long long)en,
                        (unsigned long long)f->buf_len);
    size_t esz = sf_dtype_size(t->dtype);
    if (overflow || numel > UINT64_MAX / esz || numel * esz != en - b) {
        char shp[SF_SHAPE_STR];
        sf_shape_str(shp, sizeof shp, nd, t->shape);
        return sf_error("%s: tensor '%s': shape %s of %s needs %s bytes, data_offsets give %llu",
                        f->path, nm, shp, sf_dtype_name(t->dtype),
                        overflow || numel > UINT64_MAX / esz ? "more than 2^64"
                                                             : "a different number of",
                        (unsigned long long)(en - b));
    }
    t->nbytes = en - b;
    t->data = f->buf + b;
    t->name = sf_strdup(nm);
    return 0;
}

static int parse_header(sf_st *f, const char *hdr, size_t hlen) {
    cJSON *root = cJSON_ParseWithLength(hdr, hlen);
    if (!root) return sf_error("%s: header is not valid JSON", f->path);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = sf_error("%s: header is not a JSON object", f->path);
        goto done;
    }
    int n = 0;
    for (cJSON *e = root->child; e; e = e->next)
        n++;
    f->tensors = sf_calloc((size_t)n, sizeof *f->tensors);
    for (cJSON *e = root->child; e; e = e->next) {
        if (!e->string) {
            rc = sf_error("%s: header entry without a name", f->path);
            goto done;
        }
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                rc = sf_error("%s: __metadata__ is not an object", f->path);
                goto done;
            }
            for (cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    rc =
                        sf_error("%s: __metadata__ value '%s' is not a string", f->path, m->string);
                    goto done;
                }
                f->meta_keys = sf_realloc(f->meta_keys, (size_t)(f->n_meta + 1) * sizeof(char *));
                f->meta_vals = sf_realloc(f->meta_vals, (size_t)(f->n_meta + 1) * sizeof(char *));
                f->meta_keys[f->n_meta] = sf_strdup(m->string);
                f->meta_vals[f->n_meta] = sf_strdup(m->valuestring);
                f->n_meta++;
            }
            continue;
        }
        for (int i = 0; i < f->n_tensors; i++)
            if (!strcmp(f->tensors[i].name, e->string)) {
                rc = sf_error("%s: tensor '%s' appears twice in the header", f->path, e->string);
                goto done;
            }
        if ((rc = parse_entry(f, e, &f->tensors[f->n_tensors]))) goto done;
        f->n_tensors++;
    }
    /* The ranges must tile [0, buf_len) exactly. Check on a sorted copy so the
     * public array keeps file-header order. */
    if (f->n_tensors) {
        sf_tensor_info *s = sf_malloc((size_t)f->n_tensors * sizeof *s);
        memcpy(s, f->tensors, (size_t)f->n_tensors * sizeof *s);
        qsort(s, (size_t)f->n_tensors, sizeof *s, cmp_by_offset);
        uint64_t pos = 0;
        for (int i = 0; i < f->n_tensors && !rc; i++) {
            uint64_t b = (uint64_t)((const uint8_t *)s[i].data - f->buf);
            if (b < pos)
                rc = sf_error(
                    "%s: tensor '%s' overlaps the previous tensor (begins at %llu, previous ends "
                    "at %llu)",
                    f->path, s[i].name, (unsigned long long)b, (unsigned long long)pos);
            else if (b > pos)
                rc = sf_error(
                    "%s: tensor '%s': gap in the data buffer (begins at %llu, expected %llu)",
                    f->path, s[i].name, (unsigned long long)b, (unsigned long long)pos);
            pos = b + s[i].nbytes;
        }
        free(s);
        if (!rc && pos != f->buf_len)
            rc = sf_error("%s: data buffer is %llu bytes but tensors cover %llu", f->path,
                          (unsigned long long)f->buf_len, (unsigned long long)pos);
    } else if (f->buf_len) {
        rc = sf_error("%s: no tensors but %llu bytes of data", f->path,
                      (unsigned long long)f->buf_len);
    }
done:
    cJSON_Delete(root);
    return rc;
}

int sf_st_open(sf_st *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = sf_strdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        sf_error("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sf_error("%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        sf_error("%s: truncated: %zu bytes, a safetensors file needs at least 8", path, size);
        close(fd);
        goto fail;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        sf_error("%s: mmap failed: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    f->map_len = size;
    uint64_t hlen;
    memcpy(&hlen, map, 8);
    if (hlen > size - 8) {
        sf_error("%s: header length %llu is longer than the file (%zu bytes): truncated or not "
                 "safetensors",
                 path, (unsigned long long)hlen, size);
        goto fail;
    }
    if (hlen > SF_ST_MAX_HEADER) {
        sf_error("%s: header length %llu exceeds the %u-byte limit", path, (unsigned long long)hlen,
                 SF_ST_MAX_HEADER);
        goto fail;
    }
    const char *hdr = (const char *)map + 8;
    if (hlen < 2 || hdr[0] != '{') {
        sf_error("%s: header does not start with '{': not a safetensors file", path);
        goto fail;
    }
    f->buf = (const uint8_t *)map + 8 + hlen;
    f->buf_len = size - 8 - hlen;
    if (parse_header(f, hdr, (size_t)hlen)) goto fail;
    /* Sequential access is the common case (training streams rows). */
    madvise(map, size, MADV_WILLNEED);
    return 0;
fail:
    sf_st_close(f);
    return -1;
}

void sf_st_close(sf_st *f) {
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const sf_tensor_info *sf_st_find(const sf_st *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *sf_st_meta(const sf_st *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

static const sf_tensor_info *find_checked(const sf_st *f, const char *name, int ndim,
                                          const int64_t *shape) {
    const sf_tensor_info *t = sf_st_find(f, name);
    if (!t) {
        sf_error("%s: no tensor named '%s'", f->path, name);
        return NULL;
    }
    if (!sf_dtype_is_float(t->dtype)) {
        sf_error("%s: tensor '%s' has dtype %s, expected a float type (F32, BF16, F16, F64, "
                 "F8_E4M3, F8_E5M2)",
                 f->path, name, sf_dtype_name(t->dtype));
        return NULL;
    }
    if (ndim >= 0) {
        int ok = t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++)
            if (shape && shape[i] >= 0 && shape[i] != t->shape[i]) ok = 0;
        if (!ok) {
            char want[SF_SHAPE_STR], got[SF_SHAPE_STR];
            sf_shape_str(want, sizeof want, ndim, shape ? shape : t->shape);
            sf_shape_str(got, sizeof got, t->ndim, t->shape);
            sf_error("%s: tensor '%s' has shape %s, expected %s", f->path, name, got, want);
            return NULL;
        }
    }
    return t;
}

const float *sf_st_get_f32(const sf_st *f, const char *name, int ndim, const int64_t *shape,
                           float **owned) {
    *owned = NULL;
    const sf_tensor_info *t = find_checked(f, name, ndim, shape);
    if (!t) return NULL;
    /* Zero-copy only when the mapping is suitably aligned (writers pad the
     * header to 8 bytes, but the format does not require it). */
    if (t->dtype == SF_DT_F32 && ((uintptr_t)t->data & 3) == 0) return (const float *)t->data;
    size_t n = (size_t)sf_tensor_numel(t);
    float *buf = sf_malloc(n * sizeof(float));
    sf_convert_to_f32(t->dtype, t->data, n, buf);
    *owned = buf;
    return buf;
}

int sf_st_read_f32(const sf_st *f, const char *name, int ndim, const int64_t *shape, float *dst) {
    const sf_tensor_info *t = find_checked(f, name, ndim, shape);
    if (!t) return -1;
    return sf_convert_to_f32(t->dtype, t->data, (size_t)sf_tensor_numel(t), dst);
}

int sf_tensor_rows_f32(const sf_tensor_info *t, int64_t row0, int64_t nrows, float *dst) {
    if (t->ndim < 1) return sf_error("tensor '%s' is a scalar, it has no rows", t->name);
    int64_t rowlen = 1;
    for (int i = 1; i < t->ndim; i++)
        rowlen *= t->shape[i];
    if (row0 < 0 || nrows < 0 || row0 > t->shape[0] || nrows > t->shape[0] - row0)
        return sf_error("tensor '%s': rows [%lld, %lld) outside [0, %lld)", t->name,
                        (long long)row0, (long long)(row0 + nrows), (long long)t->shape[0]);
    size_t esz = sf_dtype_size(t->dtype);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * (size_t)rowlen * esz;
    return sf_convert_to_f32(t->dtype, src, (size_t)(nrows * rowlen), dst);
}

/* ---- sharded sets ---- */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sf_st_set_open_dir(sf_st_set *s, const char *dir, const char *base) {
    memset(s, 0, sizeof *s);
    char name[512];
    snprintf(name, sizeof name, "%s.safetensors", base);
    char *single = sf_path_join(dir, name);
    if (sf_is_file(single)) {
        s->files = sf_calloc(1, sizeof(sf_st));
        int rc = sf_st_open(&s->files[0], single);
        free(single);
        if (rc) {
            free(s->files);
            s->files = NULL;
            return -1;
        }
        s->n_files = 1;
        return 0;
    }
    free(single);
    snprintf(name, sizeof name, "%s.safetensors.index.json", base);
    char *index = sf_path_join(dir, name);
    if (!sf_is_file(index)) {
        free(index);
        const char *bins[] = {"pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin"};
        for (int i = 0; i < 3; i++) {
            char *p = sf_path_join(dir, bins[i]);
            int ex = sf_is_file(p);
            free(p);
            if (ex)
                return sf_error(
                    "%s: has only PyTorch pickle weights (%s); saeflow reads safetensors. Convert "
                    "with: python -c \"from transformers import AutoModel; "
                    "AutoModel.from_pretrained('%s').save_pretrained('%s', "
                    "safe_serialization=True)\"",
                    dir, bins[i], dir, dir);
        }
        return sf_error("%s: no %s.safetensors or %s.safetensors.index.json found", dir, base,
                        base);
    }
    int rc = sf_st_set_open_index(s, index);
    free(index);
    return rc;
}

int sf_st_set_open_index(sf_st_set *s, const char *index) {
    memset(s, 0, sizeof *s);
    size_t len;
    char *txt = sf_read_file(index, &len);
    if (!txt) return -1;
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        sf_error("%s: not valid JSON with a \"weight_map\" object", index);
        cJSON_Delete(root);
        return -1;
    }
    /* shards live next to the index */
    const char *slash = strrchr(index, '/');
    char *dir = slash ? sf_strdup(index) : sf_strdup(".");
    if (slash) dir[slash - index] = 0;
    if (!*dir) strcpy(dir, "/");
    int n = 0;
    char **names = NULL;
    for (cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
            sf_error("%s: weight_map entry '%s' is not a file name in the same folder", index,
                     e->string);
            goto fail;
        }
        int seen = 0;
        for (int i = 0; i < n && !seen; i++)
            seen = !strcmp(names[i], e->valuestring);
        if (seen) continue;
        names = sf_realloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = sf_strdup(e->valuestring);
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    s->files = sf_calloc((size_t)(n ? n : 1), sizeof(sf_st));
    for (int i = 0; i < n; i++) {
        char *p = sf_path_join(dir, names[i]);
        int rc = sf_st_open(&s->files[i], p);
        free(p);
        if (rc) {
            /* name a tensor the missing or broken shard should hold */
            const char *held = "?";
            for (cJSON *e = wm->child; e; e = e->next)
                if (!strcmp(e->valuestring, names[i])) {
                    held = e->string;
                    break;
                }
            sf_error_prefix("%s: shard %s (holds tensor '%s')", index, names[i], held);
            goto fail;
        }
        s->n_files = i + 1;
    }
    /* Every tensor the index names must be in the shard it names. */
    for (cJSON *e = wm->child; e; e = e->next) {
        const sf_st *fl = NULL;
        if (!sf_st_set_find(s, e->string, &fl) ||
            strcmp(strrchr(fl->path, '/') + 1, e->valuestring)) {
            sf_error("%s: tensor '%s' is not in shard %s", index, e->string, e->valuestring);
            goto fail;
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(dir);
    cJSON_Delete(root);
    return 0;
fail:
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(dir);
    cJSON_Delete(root);
    sf_st_set_close(s);
    return -1;
}

void sf_st_set_close(sf_st_set *s) {
    for (int i = 0; i < s->n_files; i++)
        sf_st_close(&s->files[i]);
    free(s->files);
    memset(s, 0, sizeof *s);
}

const sf_tensor_info *sf_st_set_find(const sf_st_set *s, const char *name, const sf_st **file) {
    for (int i = 0; i < s->n_files; i++) {
        const sf_tensor_info *t = sf_st_find(&s->files[i], name);
        if (t) {
            if (file) *file = &s->files[i];
            return t;
        }
    }
    return NULL;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    sf_dtype dt;
    int ndim;
    int64_t shape[SF_MAX_DIMS];
    uint64_t nbytes;
    const void *data;
    void *owned; /* converted copy (sf_stw_add_f32), freed with the writer */
    /* sf_stw_add_pieces: the bytes are these buffers in order (data unused) */
    int n_pieces;
    const void **pieces;
    uint64_t *piece_bytes;
} wtensor;

struct sf_st_writer {
    wtensor *t;
    int n, cap;
    char **mk, **mv;
    int nm;
};

sf_st_writer *sf_stw_new(void) {
    return sf_calloc(1, sizeof(sf_st_writer));
}

int sf_stw_add_f32(sf_st_writer *w, const char *name, sf_dtype dt, int ndim, const int64_t *shape,
                   const float *data) {
    if (dt == SF_DT_F32) return sf_stw_add(w, name, dt, ndim, shape, data);
    if (dt != SF_DT_BF16 && dt != SF_DT_F16)
        return sf_error("tensor '%s': cannot store F32 data as %s (F32, BF16 or F16)", name,
                        sf_dtype_name(dt));
    size_t numel = 1;
    for (int i = 0; i < ndim && i < SF_MAX_DIMS; i++)
        numel *= shape[i] > 0 ? (size_t)shape[i] : 0;
    uint16_t *h = sf_malloc((numel ? numel : 1) * sizeof(uint16_t));
    sf_convert(dt, h, SF_DT_F32, data, numel);
    if (sf_stw_add(w, name, dt, ndim, shape, h)) {
        free(h);
        return -1;
    }
    w->t[w->n - 1].owned = h;
    return 0;
}

int sf_stw_add(sf_st_writer *w, const char *name, sf_dtype dt, int ndim, const int64_t *shape,
               const void *data) {
    if (ndim < 0 || ndim > SF_MAX_DIMS)
        return sf_error("tensor '%s': %d dimensions not supported", name, ndim);
    if (!strcmp(name, "__metadata__"))
        return sf_error("'__metadata__' is reserved, not a tensor name");
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->t[i].name, name)) return sf_error("tensor '%s' added twice", name);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sf_error("tensor '%s': negative dimension", name);
        numel *= (uint64_t)shape[i];
    }
    if (w->n == w->cap)
        w->t = sf_realloc(w->t, (size_t)(w->cap = w->cap ? 2 * w->cap : 8) * sizeof *w->t);
    wtensor *t = &w->t[w->n++];
    t->name = sf_strdup(name);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->nbytes = numel * sf_dtype_size(dt);
    t->data = data;
    t->owned = NULL;
    t->n_pieces = 0;
    t->pieces = NULL;
    t->piece_bytes = NULL;
    return 0;
}

int sf_stw_add_pieces(sf_st_writer *w, const char *name, sf_dtype dt, int ndim,
                      const int64_t *shape, int n_pieces, const void *const *data,
                      const uint64_t *nbytes) {
    if (sf_stw_add(w, name, dt, ndim, shape, NULL)) return -1;
    wtensor *t = &w->t[w->n - 1];
    uint64_t sum = 0;
    for (int i = 0; i < n_pieces; i++)
        sum += nbytes[i];
    if (n_pieces < 0 || sum != t->nbytes) {
        sf_error("tensor '%s': pieces hold %llu bytes, the shape needs %llu", name,
                 (unsigned long long)sum, (unsigned long long)t->nbytes);
        free(t->name);
        w->n--;
        return -1;
    }
    t->n_pieces = n_pieces;
    t->pieces = sf_malloc((size_t)(n_pieces ? n_pieces : 1) * sizeof(void *));
    t->piece_bytes = sf_malloc((size_t)(n_pieces ? n_pieces : 1) * sizeof(uint64_t));
    for (int i = 0; i < n_pieces; i++) {
        t->pieces[i] = data[i];
        t->piece_bytes[i] = nbytes[i];
    }
    return 0;
}

void sf_stw_meta(sf_st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nm; i++)
        if (!strcmp(w->mk[i], key)) {
            free(w->mv[i]);
            w->mv[i] = sf_strdup(value);
            return;
        }
    w->mk = sf_realloc(w->mk, (size_t)(w->nm + 1) * sizeof(char *));
    w->mv = sf_realloc(w->mv, (size_t)(w->nm + 1) * sizeof(char *));
    w->mk[w->nm] = sf_strdup(key);
    w->mv[w->nm] = sf_strdup(value);
    w->nm++;
}

static void sb_json_string(sf_sbuf *b, const char *s) {
    sf_sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sf_sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sf_sb_put(b, esc, 6);
        } else {
            sf_sb_put(b, (const char *)p, 1);
        }
    }
    sf_sb_put(b, "\"", 1);
}

int sf_stw_write(sf_st_writer *w, const char *path) {
    sf_sbuf h = {0};
    char num[64];
    sf_sb_puts(&h, "{");
    if (w->nm) {
        sf_sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) sf_sb_puts(&h, ",");
            sb_json_string(&h, w->mk[i]);
            sf_sb_puts(&h, ":");
            sb_json_string(&h, w->mv[i]);
        }
        sf_sb_puts(&h, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wtensor *t = &w->t[i];
        if (i || w->nm) sf_sb_puts(&h, ",");
        sb_json_string(&h, t->name);
        sf_sb_puts(&h, ":{\"dtype\":\"");
        sf_sb_puts(&h, sf_dtype_name(t->dt));
        sf_sb_puts(&h, "\",\"shape\":");
        char shp[SF_SHAPE_STR];
        sf_sb_puts(&h, sf_shape_str(shp, sizeof shp, t->ndim, t->shape)); /* a JSON array */
        snprintf(num, sizeof num, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t->nbytes));
        sf_sb_puts(&h, num);
        off += t->nbytes;
    }
    sf_sb_puts(&h, "}");
    /* Pad with spaces so the data buffer starts 8-byte aligned, as the
     * reference writer does; F32 tensors can then be used in place. */
    while ((h.len + 8) % 8)
        sf_sb_puts(&h, " ");
    sf_atomic_file f;
    if (sf_atomic_open(&f, path)) {
        free(h.s);
        return -1;
    }
    uint64_t hl = h.len;
    int ok = fwrite(&hl, 8, 1, f.fp) == 1 && fwrite(h.s, 1, h.len, f.fp) == h.len;
    for (int i = 0; ok && i < w->n; i++) {
        const wtensor *t = &w->t[i];
        if (t->pieces) {
            for (int j = 0; ok && j < t->n_pieces; j++)
                if (t->piece_bytes[j])
                    ok = fwrite(t->pieces[j], 1, t->piece_bytes[j], f.fp) == t->piece_bytes[j];
        } else if (t->nbytes) {
            ok = fwrite(t->data, 1, t->nbytes, f.fp) == t->nbytes;
        }
    }
    free(h.s);
    if (!ok) {
        sf_atomic_abort(&f);
        return sf_error("%s: write failed: %s", path, strerror(errno));
    }
    return sf_atomic_commit(&f);
}

void sf_stw_free(sf_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].owned);
        free(w->t[i].pieces);
        free(w->t[i].piece_bytes);
    }
    free(w->t);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->mk);
    free(w->mv);
    free(w);
}
