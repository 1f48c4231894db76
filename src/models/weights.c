/* The model-neutral weight loader (see models/internal.h). */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/internal.h"

typedef struct {
    void *p;
    int aligned; /* sf_malloc_aligned (weights) or sf_malloc (F32 small tensors) */
} wl_buf;

struct sf_wl {
    sf_st_set set;
    sf_dtype dtype;
    char *path;
    char *prefix;
    wl_buf *owned;
    int n_owned, cap_owned;
};

/* ---- bookkeeping ---------------------------------------------------------- */

static void keep(sf_wl *L, void *p, int aligned) {
    if (!p) return;
    if (L->n_owned == L->cap_owned) {
        L->cap_owned = L->cap_owned ? 2 * L->cap_owned : 64;
        L->owned = sf_realloc(L->owned, (size_t)L->cap_owned * sizeof *L->owned);
    }
    L->owned[L->n_owned++] = (wl_buf){p, aligned};
}

/* Drops the page-cache pages of a range of the mapping we converted from, so
 * a BF16 model made from an F32 file does not keep the F32 pages resident. */
static void drop_pages(const void *p, uint64_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)ps - 1) & ~(uintptr_t)(ps - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(ps - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* ---- open / close --------------------------------------------------------- */

static int open_dir(sf_st_set *s, const char *dir) {
    /* transformers' name first, then diffusers'; each single file or sharded */
    static const char *bases[] = {"model", "diffusion_pytorch_model"};
    for (int i = 0; i < 2; i++) {
        char name[128];
        for (int idx = 0; idx < 2; idx++) {
            snprintf(name, sizeof name, "%s.safetensors%s", bases[i], idx ? ".index.json" : "");
            char *p = sf_path_join(dir, name);
            int ex = sf_is_file(p);
            free(p);
            if (ex) return sf_st_set_open_dir(s, dir, bases[i]);
        }
    }
    /* Nothing there: let the set say why (it recognises pickle-only folders). */
    if (sf_st_set_open_dir(s, dir, "model") == 0) return 0;
    return sf_error_prefix("%s: no model.safetensors or diffusion_pytorch_model.safetensors "
                           "(or .index.json)",
                           dir);
}

sf_wl *sf_wl_open(const char *path, sf_dtype dtype) {
    if (dtype != SF_DT_F32 && dtype != SF_DT_BF16 && dtype != SF_DT_F16 &&
        dtype != SF_WL_AS_STORED) {
        sf_error("%s: weight dtype %s not supported (F32, BF16, F16 or as stored)", path,
                 sf_dtype_name(dtype));
        return NULL;
    }
    sf_wl *L = sf_calloc(1, sizeof *L);
    L->dtype = dtype;
    L->path = sf_strdup(path);
    int rc;
    if (sf_is_dir(path)) {
        rc = open_dir(&L->set, path);
    } else if (ends_with(path, ".json")) {
        rc = sf_st_set_open_index(&L->set, path);
    } else {
        L->set.files = sf_calloc(1, sizeof(sf_st));
        rc = sf_st_open(&L->set.files[0], path);
        if (rc == 0) L->set.n_files = 1;
    }
    if (rc) {
        sf_wl_close(L);
        return NULL;
    }
    return L;
}

void sf_wl_close(sf_wl *L) {
    if (!L) return;
    for (int i = 0; i < L->n_owned; i++) {
        if (L->owned[i].aligned)
            sf_free_aligned(L->owned[i].p);
        else
            free(L->owned[i].p);
    }
    free(L->owned);
    if (L->set.files) sf_st_set_close(&L->set);
    free(L->set.files);
    free(L->path);
    free(L->prefix);
    free(L);
}

const char *sf_wl_path(const sf_wl *L) {
    return L->path;
}
sf_dtype sf_wl_dtype(const sf_wl *L) {
    return L->dtype;
}
const sf_st_set *sf_wl_set(const sf_wl *L) {
    return &L->set;
}

void sf_wl_set_prefix(sf_wl *L, const char *prefix) {
    free(L->prefix);
    L->prefix = prefix && *prefix ? sf_strdup(prefix) : NULL;
}

/* ---- lookup --------------------------------------------------------------- */

/* Finds `name` as prefix+name, then as name; *full gets the name found (or,
 * when missing, the name that was looked up first, for the message). */
static const sf_tensor_info *lookup(const sf_wl *L, const char *name, char *full, size_t nfull,
                                    const sf_st **file) {
    const sf_tensor_info *t = NULL;
    if (L->prefix) {
        snprintf(full, nfull, "%s%s", L->prefix, name);
        if ((t = sf_st_set_find(&L->set, full, file))) return t;
    }
    t = sf_st_set_find(&L->set, name, file);
    if (t || !L->prefix) snprintf(full, nfull, "%s", name);
    return t;
}

static const sf_tensor_info *find(const sf_wl *L, const char *name, char *full, size_t nfull,
                                  const sf_st **file) {
    const sf_tensor_info *t = lookup(L, name, full, nfull, file);
    if (!t) sf_error("%s: tensor '%s' not found in the checkpoint", L->path, full);
    return t;
}

#define FMT_NAME(buf, fmt)                                                                         \
    char buf[512];                                                                                 \
    do {                                                                                           \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        vsnprintf(buf, sizeof buf, fmt, ap);                                                       \
        va_end(ap);                                                                                \
    } while (0)

int sf_wl_has(sf_wl *L, const char *fmt, ...) {
    FMT_NAME(name, fmt);
    char full[768];
    const sf_st *f;
    return lookup(L, name, full, sizeof full, &f) != NULL;
}

const sf_tensor_info *sf_wl_info(sf_wl *L, const char *fmt, ...) {
    FMT_NAME(name, fmt);
    char full[768];
    const sf_st *f;
    return find(L, name, full, sizeof full, &f);
}

/* ---- conversion ----------------------------------------------------------- */

/* The in-memory dtype of a big matrix stored as `stored`. */
static sf_dtype target_dtype(const sf_wl *L, sf_dtype stored) {
    if (L->dtype != SF_WL_AS_STORED) return L->dtype;
    switch (stored) {
    case SF_DT_F32:
    case SF_DT_BF16:
    case SF_DT_F16:
        return stored;
    case SF_DT_F8_E4M3:
    case SF_DT_F8_E5M2:
        return SF_DT_BF16; /* exact */
    default:
        return SF_DT_F32;
    }
}

static int check_float(const sf_st *f, const char *name, const sf_tensor_info *t) {
    if (sf_dtype_is_float(t->dtype)) return 0;
    return sf_error("%s: tensor '%s' has dtype %s, expected a float type (F32, BF16, F16, F64, "
                    "F8_E4M3, F8_E5M2)",
                    f->path, name, sf_dtype_name(t->dtype));
}

static int check_shape(const sf_st *f, const char *name, const sf_tensor_info *t, int ndim,
                       const int64_t *shape) {
    if (ndim < 0) return 0;
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = !shape || shape[i] < 0 || t->shape[i] == shape[i];
    if (ok) return 0;
    char got[SF_SHAPE_STR], want[SF_SHAPE_STR];
    sf_shape_str(got, sizeof got, t->ndim, t->shape);
    sf_shape_str(want, sizeof want, ndim, shape ? shape : t->shape);
    return sf_error("%s: tensor '%s' has shape %s, expected %s (the config and the weights "
                    "disagree)",
                    f->path, name, got, want);
}

int sf_wl_check(sf_wl *L, int ndim, const int64_t *shape, const char *fmt, ...) {
    FMT_NAME(name, fmt);
    char full[768];
    const sf_st *f;
    const sf_tensor_info *t = find(L, name, full, sizeof full, &f);
    return t ? check_shape(f, full, t, ndim, shape) : -1;
}

/* ---- small tensors -------------------------------------------------------- */

const float *sf_wl_f32(sf_wl *L, int ndim, const int64_t *shape, const char *fmt, ...) {
    FMT_NAME(name, fmt);
    char full[768];
    const sf_st *f;
    const sf_tensor_info *t = find(L, name, full, sizeof full, &f);
    if (!t || check_float(f, full, t) || check_shape(f, full, t, ndim, shape)) return NULL;
    if (t->dtype == SF_DT_F32 && ((uintptr_t)t->data & 3) == 0) return (const float *)t->data;
    size_t n = (size_t)sf_tensor_numel(t);
    float *buf = sf_malloc((n ? n : 1) * sizeof(float));
    if (sf_convert(SF_DT_F32, buf, t->dtype, t->data, n)) {
        free(buf);
        return sf_error_prefix("%s: tensor '%s'", f->path, full), NULL;
    }
    keep(L, buf, 0);
    return buf;
}

/* ---- big matrices --------------------------------------------------------- */

int sf_wl_weight(sf_wl *L, sf_weight *w, int ndim, const int64_t *shape, const char *fmt, ...) {
    FMT_NAME(name, fmt);
    memset(w, 0, sizeof *w);
    char full[768];
    const sf_st *f;
    const sf_tensor_info *t = find(L, name, full, sizeof full, &f);
    if (!t || check_float(f, full, t) || check_shape(f, full, t, ndim, shape)) return -1;
    if (t->ndim < 1) return sf_error("%s: tensor '%s' is a scalar, not a matrix", f->path, full);
    int64_t s2[2] = {t->shape[0], 1};
    for (int i = 1; i < t->ndim; i++)
        s2[1] *= t->shape[i];
    sf_dtype want = target_dtype(L, t->dtype);
    if (sf_weight_make(w, want, t->dtype, t->data, 2, s2))
        return sf_error_prefix("%s: tensor '%s'", f->path, full);
    if (w->owned) {
        /* converted (or realigned): the loader owns the copy, the mapping's
         * pages of the source are no longer needed */
        keep(L, w->owned, 1);
        w->owned = NULL;
        drop_pages(t->data, t->nbytes);
    }
    return 0;
}

/* Resolves the parts: tensors, files, row ranges; total rows. */
typedef struct {
    const sf_tensor_info *t;
    const sf_st *f;
    char full[768];
    int64_t r0, nr, rowlen;
} wl_resolved;

static wl_resolved *resolve_parts(sf_wl *L, int nparts, const sf_wl_part *parts, int want_ndim,
                                  int64_t cols, int64_t *total) {
    if (nparts < 1) {
        sf_error("%s: fused tensor with no parts", L->path);
        return NULL;
    }
    wl_resolved *r = sf_calloc((size_t)nparts, sizeof *r);
    *total = 0;
    for (int i = 0; i < nparts; i++) {
        wl_resolved *p = &r[i];
        p->t = find(L, parts[i].name, p->full, sizeof p->full, &p->f);
        if (!p->t || check_float(p->f, p->full, p->t)) goto fail;
        const sf_tensor_info *t = p->t;
        if (t->ndim != want_ndim || (want_ndim == 2 && t->shape[1] != cols)) {
            int64_t want[2] = {-1, cols};
            check_shape(p->f, p->full, t, want_ndim, want);
            goto fail;
        }
        p->rowlen = want_ndim == 2 ? cols : 1;
        p->r0 = parts[i].row0;
        p->nr = parts[i].rows < 0 ? t->shape[0] - p->r0 : parts[i].rows;
        if (p->r0 < 0 || p->nr < 0 || p->r0 > t->shape[0] || p->nr > t->shape[0] - p->r0) {
            sf_error("%s: tensor '%s': rows [%lld, %lld) outside its %lld rows", p->f->path,
                     p->full, (long long)p->r0, (long long)(p->r0 + p->nr), (long long)t->shape[0]);
            goto fail;
        }
        *total += p->nr;
    }
    return r;
fail:
    free(r);
    return NULL;
}

int sf_wl_fused(sf_wl *L, sf_weight *w, int64_t cols, int nparts, const sf_wl_part *parts) {
    memset(w, 0, sizeof *w);
    int64_t rows;
    wl_resolved *r = resolve_parts(L, nparts, parts, 2, cols, &rows);
    if (!r) return -1;
    sf_dtype want = target_dtype(L, r[0].t->dtype);
    for (int i = 1; i < nparts; i++)
        if (target_dtype(L, r[i].t->dtype) != want) want = SF_DT_F32;
    size_t esz = sf_dtype_size(want), sesz;
    char *buf = sf_malloc_aligned((size_t)(rows * cols) * esz + 64);
    char *dst = buf;
    int rc = 0;
    for (int i = 0; i < nparts && !rc; i++) {
        const wl_resolved *p = &r[i];
        sesz = sf_dtype_size(p->t->dtype);
        const char *src = (const char *)p->t->data + (size_t)(p->r0 * cols) * sesz;
        size_t n = (size_t)(p->nr * cols);
        if (sf_convert(want, dst, p->t->dtype, src, n))
            rc = sf_error_prefix("%s: tensor '%s'", p->f->path, p->full);
        else
            drop_pages(src, n * sesz);
        dst += n * esz;
    }
    free(r);
    if (rc) {
        sf_free_aligned(buf);
        return -1;
    }
    keep(L, buf, 1);
    *w = (sf_weight){want, 2, {rows, cols}, buf, NULL};
    return 0;
}

const float *sf_wl_fused_f32(sf_wl *L, int nparts, const sf_wl_part *parts) {
    int64_t n;
    wl_resolved *r = resolve_parts(L, nparts, parts, 1, 1, &n);
    if (!r) return NULL;
    float *buf = sf_malloc((size_t)(n ? n : 1) * sizeof(float)), *dst = buf;
    int rc = 0;
    for (int i = 0; i < nparts && !rc; i++) {
        const wl_resolved *p = &r[i];
        const char *src = (const char *)p->t->data + (size_t)p->r0 * sf_dtype_size(p->t->dtype);
        if (sf_convert(SF_DT_F32, dst, p->t->dtype, src, (size_t)p->nr))
            rc = sf_error_prefix("%s: tensor '%s'", p->f->path, p->full);
        dst += p->nr;
    }
    free(r);
    if (rc) {
        free(buf);
        return NULL;
    }
    keep(L, buf, 0);
    return buf;
}

int sf_models_parse_layer(const char *s, int *layer) {
    const char *num = !strncmp(s, "layer:", 6) ? s + 6 : !strncmp(s, "hidden:", 7) ? s + 7 : NULL;
    if (!num) return 0;
    char *end;
    long v = strtol(num, &end, 10);
    if (end == num || *end || v <= -100000 || v >= 100000) return 0;
    *layer = (int)v;
    return 1;
}
