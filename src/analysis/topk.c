/* Online top-k of activating rows per feature, with streaming statistics.
 * See include/saeflow/analysis.h for the order, histogram and determinism
 * rules this file implements. */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow/analysis.h"

#define HIST_BITS 5 /* SF_TOPK_HIST_BINS == 1 << HIST_BITS */
_Static_assert(SF_TOPK_HIST_BINS == (1 << HIST_BITS), "hist bins must be 2^HIST_BITS");

int sf_topk_init(sf_topk *t, int64_t n, int N) {
    memset(t, 0, sizeof *t);
    if (n <= 0 || N <= 0 || N > 1 << 20)
        return sf_error("topk: bad sizes n=%lld N=%d", (long long)n, N);
    size_t nn;
    if (sf_mul_size((size_t)n, (size_t)N, &nn) || nn > ((size_t)1 << 40))
        return sf_error("topk: n x N = %lld x %d is too large", (long long)n, N);
    t->n = n;
    t->N = N;
    t->heap_val = sf_malloc(nn * sizeof(float));
    t->heap_row = sf_malloc(nn * sizeof(int64_t));
    t->heap_len = sf_calloc((size_t)n, sizeof(int32_t));
    t->count = sf_calloc((size_t)n, sizeof(int64_t));
    t->sum = sf_calloc((size_t)n, sizeof(double));
    t->max = sf_calloc((size_t)n, sizeof(float));
    t->hist = sf_calloc((size_t)n * SF_TOPK_HIST_BINS, sizeof(int64_t));
    t->hist_exp = sf_malloc((size_t)n * sizeof(int32_t));
    t->stamp = sf_malloc((size_t)n * sizeof(int64_t));
    for (int64_t j = 0; j < n; j++) {
        t->hist_exp[j] = INT32_MIN;
        t->stamp[j] = -1;
    }
    return 0;
}

void sf_topk_free(sf_topk *t) {
    free(t->heap_val);
    free(t->heap_row);
    free(t->heap_len);
    free(t->count);
    free(t->sum);
    free(t->max);
    free(t->hist);
    free(t->hist_exp);
    free(t->stamp);
    memset(t, 0, sizeof *t);
}

/* a beats b: higher value, or equal value and lower row. */
static inline int beats(float va, int64_t ra, float vb, int64_t rb) {
    return va > vb || (va == vb && ra < rb);
}

/* The heap of one feature is a min-heap on "beats": the root is the worst
 * kept row, the one a new candidate has to beat. */
static void heap_offer(float *hv, int64_t *hr, int32_t *len, int N, float v, int64_t r) {
    int i;
    if (*len < N) {
        i = (*len)++;
        while (i > 0) { /* sift up: parent must be worse than the child */
            int p = (i - 1) / 2;
            if (!beats(hv[p], hr[p], v, r)) break;
            hv[i] = hv[p];
            hr[i] = hr[p];
            i = p;
        }
        hv[i] = v;
        hr[i] = r;
        return;
    }
    if (!beats(v, r, hv[0], hr[0])) return;
    i = 0;
    for (;;) { /* sift down from the root */
        int c = 2 * i + 1;
        if (c >= N) break;
        if (c + 1 < N && beats(hv[c], hr[c], hv[c + 1], hr[c + 1])) c++; /* the worse child */
        if (!beats(v, r, hv[c], hr[c])) break;
        hv[i] = hv[c];
        hr[i] = hr[c];
        i = c;
    }
    hv[i] = v;
    hr[i] = r;
}

/* Doubles the histogram range `times` times: bins 2i and 2i+1 merge into i.
 * floor(floor(x) / 2) == floor(x / 2), so this equals binning at the wider
 * range directly. */
static void hist_widen(int64_t *h, int times) {
    if (times > HIST_BITS) times = HIST_BITS + 1; /* everything ends up in bin 0 */
    for (int s = 0; s < times; s++) {
        for (int i = 0; i < SF_TOPK_HIST_BINS / 2; i++)
            h[i] = h[2 * i] + h[2 * i + 1];
        for (int i = SF_TOPK_HIST_BINS / 2; i < SF_TOPK_HIST_BINS; i++)
            h[i] = 0;
    }
}

/* One firing value v > 0 of feature j in row r. */
static inline void feature_add(sf_topk *t, int64_t j, float v, int64_t r) {
    heap_offer(t->heap_val + j * t->N, t->heap_row + j * t->N, &t->heap_len[j], t->N, v, r);
    t->count[j]++;
    t->sum[j] += v;
    if (v > t->max[j]) t->max[j] = v;
    int e;
    frexpf(v, &e); /* v = m 2^e, m in [0.5, 1): v < 2^e */
    int64_t *h = t->hist + j * SF_TOPK_HIST_BINS;
    if (t->hist_exp[j] == INT32_MIN) {
        t->hist_exp[j] = e;
    } else if (e > t->hist_exp[j]) {
        hist_widen(h, e - t->hist_exp[j]);
        t->hist_exp[j] = e;
    }
    /* exact power-of-two scaling: v * 2^(BITS - exp) in [0, BINS) */
    int bin = (int)ldexpf(v, HIST_BITS - t->hist_exp[j]);
    if (bin >= SF_TOPK_HIST_BINS) bin = SF_TOPK_HIST_BINS - 1; /* unreachable; belt and braces */
    h[bin]++;
}

int sf_topk_add_sparse(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                       const int32_t *cnt, int64_t row0, const int64_t *rows) {
    if (B < 0 || k < 0) return sf_error("topk: bad batch B=%lld k=%d", (long long)B, k);
    /* Validate everything first, so a bad batch adds nothing. */
    for (int64_t b = 0; b < B; b++) {
        int c = cnt ? cnt[b] : k;
        if (c < 0 || c > k)
            return sf_error("topk: row %lld: count %d outside [0, %d]", (long long)b, c, k);
        int64_t stamp = t->stamp_ctr++;
        for (int i = 0; i < c; i++) {
            int32_t j = idx[b * k + i];
            float v = val[b * k + i];
            if (j < 0 || j >= t->n)
                return sf_error("topk: row %lld: feature index %d outside [0, %lld)", (long long)b,
                                j, (long long)t->n);
            if (!isfinite(v))
                return sf_error("topk: row %lld: feature %d: non-finite value", (long long)b, j);
            if (t->stamp[j] == stamp)
                return sf_error("topk: row %lld: feature %d listed twice", (long long)b, j);
            t->stamp[j] = stamp;
        }
    }
    /* Each thread owns a contiguous range of features and scans the whole
     * batch in row order: no feature is shared, no order depends on T. */
#pragma omp parallel if (B * (int64_t)k > 4096)
    {
        int T = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t f0 = t->n * tid / T, f1 = t->n * (tid + 1) / T;
        for (int64_t b = 0; b < B; b++) {
            int c = cnt ? cnt[b] : k;
            int64_t r = rows ? rows[b] : row0 + b;
            for (int i = 0; i < c; i++) {
                int64_t j = idx[b * k + i];
                float v = val[b * k + i];
                if (j < f0 || j >= f1 || !(v > 0)) continue;
                feature_add(t, j, v, r);
            }
        }
    }
    t->rows += B;
    return 0;
}

int sf_topk_add_dense(sf_topk *t, const float *z, int64_t B, int64_t row0, const int64_t *rows) {
    if (B < 0) return sf_error("topk: bad batch B=%lld", (long long)B);
    const int64_t n = t->n;
    for (int64_t i = 0; i < B * n; i++)
        if (!isfinite(z[i]))
            return sf_error("topk: row %lld: feature %lld: non-finite value", (long long)(i / n),
                            (long long)(i % n));
#pragma omp parallel if (B * n > 65536)
    {
        int T = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t f0 = n * tid / T, f1 = n * (tid + 1) / T;
        for (int64_t b = 0; b < B; b++) {
            int64_t r = rows ? rows[b] : row0 + b;
            const float *zb = z + b * n; // (n)
            for (int64_t j = f0; j < f1; j++)
                if (zb[j] > 0) feature_add(t, j, zb[j], r);
        }
    }
    t->rows += B;
    return 0;
}

typedef struct {
    float v;
    int64_t r;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (beats(x->v, x->r, y->v, y->r)) return -1;
    if (beats(y->v, y->r, x->v, x->r)) return 1;
    return 0;
}

void sf_topk_sorted(const sf_topk *t, float *values, int64_t *rows) {
    const int N = t->N;
#pragma omp parallel
    {
        cand *c = sf_malloc((size_t)N * sizeof(cand));
#pragma omp for schedule(static)
        for (int64_t j = 0; j < t->n; j++) {
            int len = t->heap_len[j];
            for (int i = 0; i < len; i++) {
                c[i].v = t->heap_val[j * N + i];
                c[i].r = t->heap_row[j * N + i];
            }
            qsort(c, (size_t)len, sizeof(cand), cand_cmp);
            for (int i = 0; i < N; i++) {
                values[j * N + i] = i < len ? c[i].v : 0.0f;
                rows[j * N + i] = i < len ? c[i].r : -1;
            }
        }
        free(c);
    }
}

int sf_topk_write(const sf_topk *t, const char *path, const char *const *meta) {
    const int64_t n = t->n;
    const int N = t->N;
    float *values = sf_malloc((size_t)(n * N) * sizeof(float));
    int64_t *rows = sf_malloc((size_t)(n * N) * sizeof(int64_t));
    float *density = sf_malloc((size_t)n * sizeof(float));
    float *mean = sf_malloc((size_t)n * sizeof(float));
    float *hist_max = sf_malloc((size_t)n * sizeof(float));
    sf_topk_sorted(t, values, rows);
    for (int64_t j = 0; j < n; j++) {
        density[j] = t->rows ? (float)((double)t->count[j] / (double)t->rows) : 0.0f;
        mean[j] = t->count[j] ? (float)(t->sum[j] / (double)t->count[j]) : 0.0f;
        hist_max[j] = t->hist_exp[j] == INT32_MIN ? 0.0f : ldexpf(1.0f, t->hist_exp[j]);
    }
    sf_st_writer *w = sf_stw_new();
    int64_t s2[2] = {n, N}, s1[1] = {n}, sh[2] = {n, SF_TOPK_HIST_BINS};
    sf_stw_add(w, "topk_values", SF_DT_F32, 2, s2, values);
    sf_stw_add(w, "topk_rows", SF_DT_I64, 2, s2, rows);
    sf_stw_add(w, "density", SF_DT_F32, 1, s1, density);
    sf_stw_add(w, "count", SF_DT_I64, 1, s1, t->count);
    sf_stw_add(w, "mean", SF_DT_F32, 1, s1, mean);
    sf_stw_add(w, "max", SF_DT_F32, 1, s1, t->max);
    sf_stw_add(w, "hist", SF_DT_I64, 2, sh, t->hist);
    sf_stw_add(w, "hist_max", SF_DT_F32, 1, s1, hist_max);
    char buf[64];
    sf_stw_meta(w, "format", "saeflow-topk");
    snprintf(buf, sizeof buf, "%lld", (long long)t->rows);
    sf_stw_meta(w, "rows", buf);
    snprintf(buf, sizeof buf, "%d", N);
    sf_stw_meta(w, "N", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)n);
    sf_stw_meta(w, "n", buf);
    snprintf(buf, sizeof buf, "%d", SF_TOPK_HIST_BINS);
    sf_stw_meta(w, "hist_bins", buf);
    sf_stw_meta(w, "tie_break", "equal values: lower row id first");
    for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2)
        sf_stw_meta(w, meta[i], meta[i + 1]);
    int rc = sf_stw_write(w, path);
    sf_stw_free(w);
    free(values);
    free(rows);
    free(density);
    free(mean);
    free(hist_max);
    return rc;
}

/* ---- reading ------------------------------------------------------------- */

static const sf_tensor_info *need(const sf_st *st, const char *name, sf_dtype dt, int ndim,
                                  int64_t d0, int64_t d1) {
    const sf_tensor_info *ti = sf_st_find(st, name);
    if (!ti) {
        sf_error("%s: tensor '%s' missing (not a saeflow top-k file?)", st->path, name);
        return NULL;
    }
    if (ti->dtype != dt || ti->ndim != ndim || (d0 >= 0 && ti->shape[0] != d0) ||
        (ndim > 1 && d1 >= 0 && ti->shape[1] != d1)) {
        /* "-1" in the expected shape means any size */
        char want[64], got[64];
        if (ndim == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        if (ti->ndim == 1)
            snprintf(got, sizeof got, "[%lld]", (long long)ti->shape[0]);
        else if (ti->ndim == 2)
            snprintf(got, sizeof got, "[%lld, %lld]", (long long)ti->shape[0],
                     (long long)ti->shape[1]);
        else
            snprintf(got, sizeof got, "rank %d", ti->ndim);
        sf_error("%s: tensor '%s': expected %s %s, got %s %s", st->path, name, sf_dtype_name(dt),
                 want, sf_dtype_name(ti->dtype), got);
        return NULL;
    }
    return ti;
}

int sf_topk_open(sf_topk_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (sf_st_open(&f->st, path)) return -1;
    const sf_st *st = &f->st;
    const sf_tensor_info *tv = need(st, "topk_values", SF_DT_F32, 2, -1, -1);
    if (!tv) goto fail;
    f->n = tv->shape[0];
    if (tv->shape[1] <= 0 || tv->shape[1] > 1 << 20 || f->n <= 0) {
        sf_error("%s: tensor 'topk_values': bad shape", path);
        goto fail;
    }
    f->N = (int)tv->shape[1];
    const sf_tensor_info *tr = need(st, "topk_rows", SF_DT_I64, 2, f->n, f->N);
    const sf_tensor_info *th = tr ? need(st, "hist", SF_DT_I64, 2, f->n, -1) : NULL;
    const sf_tensor_info *tc = th ? need(st, "count", SF_DT_I64, 1, f->n, 0) : NULL;
    if (!tc) goto fail;
    if (th->shape[1] <= 0 || th->shape[1] > 4096) {
        sf_error("%s: tensor 'hist': bad bin count", path);
        goto fail;
    }
    f->bins = (int)th->shape[1];
    int64_t s1[1] = {f->n}, s2[2] = {f->n, f->N};
    float *own = NULL;
    /* our writer stores F32, so these are zero-copy; a converted file would
     * leak nothing either since `owned` would be returned, but we refuse it */
    f->values = sf_st_get_f32(st, "topk_values", 2, s2, &own);
    if (!f->values || own) goto conv;
    if (!(f->density = sf_st_get_f32(st, "density", 1, s1, &own)) || own) goto conv;
    if (!(f->mean = sf_st_get_f32(st, "mean", 1, s1, &own)) || own) goto conv;
    if (!(f->max = sf_st_get_f32(st, "max", 1, s1, &own)) || own) goto conv;
    if (!(f->hist_max = sf_st_get_f32(st, "hist_max", 1, s1, &own)) || own) goto conv;
    /* I64 data may sit at any offset of the mapping: copy to aligned memory */
    int64_t *rows = sf_malloc((size_t)tr->nbytes + (size_t)tc->nbytes + 8);
    memcpy(rows, tr->data, tr->nbytes);
    memcpy(rows + f->n * f->N, tc->data, tc->nbytes);
    int64_t *hist = sf_malloc((size_t)th->nbytes + 8);
    memcpy(hist, th->data, th->nbytes);
    f->owned[0] = rows;
    f->owned[1] = hist;
    f->row_ids = rows;
    f->count = rows + f->n * f->N;
    f->hist = hist;
    const char *r = sf_st_meta(st, "rows");
    f->rows = r ? strtoll(r, NULL, 10) : 0;
    for (int64_t i = 0; i < f->n * f->N; i++)
        if (f->row_ids[i] < -1) {
            sf_error("%s: tensor 'topk_rows': negative row id %lld", path,
                     (long long)f->row_ids[i]);
            goto fail;
        }
    return 0;
conv:
    if (own) {
        free(own);
        sf_error("%s: top-k tensors must be F32", path);
    }
fail:
    sf_topk_close(f);
    return -1;
}

void sf_topk_close(sf_topk_file *f) {
    free(f->owned[0]);
    free(f->owned[1]);
    if (f->st.path || f->st.map) sf_st_close(&f->st);
    memset(f, 0, sizeof *f);
}
