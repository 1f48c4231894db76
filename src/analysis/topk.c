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
    size_t ns = (size_t)n * SF_TOPK_HIST_BINS * SF_TOPK_SAMPLES;
    t->samples = sf_malloc(ns * sizeof(sf_topk_sample));
    for (size_t i = 0; i < ns; i++)
        t->samples[i] = (sf_topk_sample){0, -1, 0.0f, -1};
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
    free(t->samples);
    free(t->heap_pos);
    free(t->heap_slot);
    free(t->heat);
    free(t->pend_row);
    free(t->pend_len);
    free(t->pend_pos);
    free(t->pend_val);
    free(t->ex_count);
    memset(t, 0, sizeof *t);
}

int sf_topk_set_tokens(sf_topk *t, int T, int grid_h, int grid_w, int grid_first) {
    if (t->rows || t->T) return sf_error("topk: token mode must be set once, before any row");
    if (T <= 0 || T > 1 << 16 || grid_h < 0 || grid_w < 0 || grid_first < 0 ||
        (int64_t)grid_h * grid_w + grid_first > T || (!grid_h != !grid_w))
        return sf_error("topk: bad token layout T=%d grid %dx%d from %d", T, grid_h, grid_w,
                        grid_first);
    size_t nN = (size_t)t->n * (size_t)t->N, heat_bytes;
    if (sf_mul_size(nN, (size_t)T, &heat_bytes) || heat_bytes > ((size_t)1 << 36))
        return sf_error("topk: heat maps of %lld x %d x %d tokens are too large", (long long)t->n,
                        t->N, T);
    t->T = T, t->grid_h = grid_h, t->grid_w = grid_w, t->grid_first = grid_first;
    t->heap_pos = sf_malloc(nN * sizeof(int32_t));
    t->heap_slot = sf_malloc(nN * sizeof(int32_t));
    t->heat = sf_calloc(heat_bytes, 1);
    t->pend_row = sf_malloc((size_t)t->n * sizeof(int64_t));
    t->pend_len = sf_calloc((size_t)t->n, sizeof(int32_t));
    t->pend_pos = sf_malloc((size_t)t->n * (size_t)T * sizeof(int32_t));
    t->pend_val = sf_malloc((size_t)t->n * (size_t)T * sizeof(float));
    t->ex_count = sf_calloc((size_t)t->n, sizeof(int64_t));
    for (int64_t j = 0; j < t->n; j++)
        t->pend_row[j] = -1;
    t->last_row = -1;
    return 0;
}

/* a beats b: higher value, or equal value and lower row. */
static inline int beats(float va, int64_t ra, float vb, int64_t rb) {
    return va > vb || (va == vb && ra < rb);
}

/* The heap of one feature is a min-heap on "beats": the root is the worst
 * kept row, the one a new candidate has to beat. In token mode each entry
 * also carries its token position (hp) and the heat-map slot (hs) that holds
 * its per-token values; an evicted entry hands its slot to the newcomer.
 * Returns the slot of the new entry (its index without slots), -1 when the
 * candidate did not make it. */
static int heap_offer(float *hv, int64_t *hr, int32_t *hp, int32_t *hs, int32_t *len, int N,
                      float v, int64_t r, int32_t pos) {
    int i, slot;
    if (*len < N) {
        i = (*len)++;
        slot = i;
        while (i > 0) { /* sift up: parent must be worse than the child */
            int p = (i - 1) / 2;
            if (!beats(hv[p], hr[p], v, r)) break;
            hv[i] = hv[p];
            hr[i] = hr[p];
            if (hp) hp[i] = hp[p], hs[i] = hs[p];
            i = p;
        }
    } else {
        if (!beats(v, r, hv[0], hr[0])) return -1;
        slot = hs ? hs[0] : 0;
        i = 0;
        for (;;) { /* sift down from the root */
            int c = 2 * i + 1;
            if (c >= N) break;
            if (c + 1 < N && beats(hv[c], hr[c], hv[c + 1], hr[c + 1])) c++; /* the worse child */
            if (!beats(v, r, hv[c], hr[c])) break;
            hv[i] = hv[c];
            hr[i] = hr[c];
            if (hp) hp[i] = hp[c], hs[i] = hs[c];
            i = c;
        }
    }
    hv[i] = v;
    hr[i] = r;
    if (hp) hp[i] = pos, hs[i] = slot;
    return slot;
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
/* ---- samples across the activation range ----------------------------------
 * Per feature and histogram bin, the SF_TOPK_SAMPLES firing rows (tokens)
 * with the smallest priority hash(row, pos): a uniform-like sample of the bin
 * that depends only on the set of rows, not their order (a min over a set),
 * and that merges exactly when bins merge on widening (the S smallest of a
 * union are among the S smallest of each part). */
uint64_t sf_topk_sample_pri(int64_t r, int32_t p) {
    uint64_t x = (uint64_t)r * 0x9E3779B97F4A7C15ull ^ ((uint64_t)(uint32_t)p << 32 | 0x5bd1e995u);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 32);
}
/* a before b: lower priority, then lower row, then lower position */
static inline int sample_before(const sf_topk_sample *a, const sf_topk_sample *b) {
    return a->pri < b->pri ||
           (a->pri == b->pri && (a->row < b->row || (a->row == b->row && a->pos < b->pos)));
}
/* Inserts into a bin's sorted list of up to S (row -1: empty). */
static void sample_insert(sf_topk_sample *bin, sf_topk_sample c) {
    const int S = SF_TOPK_SAMPLES;
    if (bin[S - 1].row >= 0 && !sample_before(&c, &bin[S - 1])) return;
    int i = S - 1;
    while (i > 0 && (bin[i - 1].row < 0 || sample_before(&c, &bin[i - 1]))) {
        bin[i] = bin[i - 1];
        i--;
    }
    bin[i] = c;
}
/* Widening the histogram merges bins 2i and 2i+1 into i (see hist_widen). */
static void samples_widen(sf_topk_sample *s, int times) {
    const int S = SF_TOPK_SAMPLES, B = SF_TOPK_HIST_BINS;
    if (times > HIST_BITS) times = HIST_BITS + 1;
    for (int k = 0; k < times; k++) {
        for (int i = 0; i < B / 2; i++) {
            sf_topk_sample tmp[2 * SF_TOPK_SAMPLES];
            memcpy(tmp, s + 2 * i * S, sizeof tmp);
            for (int q = 0; q < S; q++)
                s[i * S + q].row = -1;
            for (int q = 0; q < 2 * S; q++)
                if (tmp[q].row >= 0) sample_insert(s + i * S, tmp[q]);
        }
        for (int i = B / 2 * S; i < B * S; i++)
            s[i].row = -1;
    }
}

static inline void feature_add(sf_topk *t, int64_t j, float v, int64_t r, int32_t p) {
    if (!t->T)
        heap_offer(t->heap_val + j * t->N, t->heap_row + j * t->N, NULL, NULL, &t->heap_len[j],
                   t->N, v, r, 0);
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
        samples_widen(t->samples + j * SF_TOPK_HIST_BINS * SF_TOPK_SAMPLES, e - t->hist_exp[j]);
        t->hist_exp[j] = e;
    }
    /* exact power-of-two scaling: v * 2^(BITS - exp) in [0, BINS) */
    int bin = (int)ldexpf(v, HIST_BITS - t->hist_exp[j]);
    if (bin >= SF_TOPK_HIST_BINS) bin = SF_TOPK_HIST_BINS - 1; /* unreachable; belt and braces */
    h[bin]++;
    sf_topk_sample c = {sf_topk_sample_pri(r, p), r, v, p};
    sample_insert(t->samples + (j * SF_TOPK_HIST_BINS + bin) * SF_TOPK_SAMPLES, c);
}

/* Token mode: the example feature j collected is complete; offer it (its
 * best token) to the heap and, when kept, store its heat map. */
static void token_flush(sf_topk *t, int64_t j) {
    int len = t->pend_len[j];
    if (!len) return;
    const int T = t->T;
    const int32_t *pp = t->pend_pos + j * T; // (len)
    const float *pv = t->pend_val + j * T;   // (len)
    int best = 0;
    for (int i = 1; i < len; i++)
        if (pv[i] > pv[best] || (pv[i] == pv[best] && pp[i] < pp[best])) best = i;
    const float v = pv[best];
    const int64_t N = t->N;
    int slot = heap_offer(t->heap_val + j * N, t->heap_row + j * N, t->heap_pos + j * N,
                          t->heap_slot + j * N, &t->heap_len[j], t->N, v, t->pend_row[j], pp[best]);
    if (slot >= 0) {
        uint8_t *h = t->heat + ((size_t)j * (size_t)N + (size_t)slot) * (size_t)T; // (T)
        memset(h, 0, (size_t)T);
        for (int i = 0; i < len; i++) {
            long q = lrintf(255.0f * (pv[i] / v)); /* pv[i] <= v */
            q = q < 0 ? 0 : q > 255 ? 255 : q;
            if (q > h[pp[i]]) h[pp[i]] = (uint8_t)q;
        }
    }
    t->ex_count[j]++;
    t->pend_len[j] = 0;
    t->pend_row[j] = -1;
}

static void token_add(sf_topk *t, int64_t j, float v, int64_t r, int32_t p) {
    if (t->pend_row[j] != r) {
        token_flush(t, j);
        t->pend_row[j] = r;
    }
    int32_t *len = &t->pend_len[j];
    if (*len >= t->T) return; /* only with a position repeated within one example */
    t->pend_pos[j * t->T + *len] = p;
    t->pend_val[j * t->T + *len] = v;
    (*len)++;
}

/* Checks a batch of sparse codes (so a bad batch adds nothing). */
static int check_sparse(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                        const int32_t *cnt) {
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
    return 0;
}

int sf_topk_add_sparse(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                       const int32_t *cnt, int64_t row0, const int64_t *rows) {
    if (B < 0 || k < 0) return sf_error("topk: bad batch B=%lld k=%d", (long long)B, k);
    if (t->T) return sf_error("topk: token mode: add rows with sf_topk_add_tokens");
    if (check_sparse(t, B, k, idx, val, cnt)) return -1;
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
                feature_add(t, j, v, r, -1);
            }
        }
    }
    t->rows += B;
    return 0;
}

int sf_topk_add_tokens(sf_topk *t, int64_t B, int k, const int32_t *idx, const float *val,
                       const int32_t *cnt, const int64_t *rows, const int32_t *pos) {
    if (B < 0 || k < 0) return sf_error("topk: bad batch B=%lld k=%d", (long long)B, k);
    if (!t->T) return sf_error("topk: sf_topk_add_tokens needs token mode (sf_topk_set_tokens)");
    if (B && (!rows || !pos)) return sf_error("topk: token rows need dataset rows and positions");
    int64_t last = t->last_row;
    for (int64_t b = 0; b < B; b++) {
        if (pos[b] < 0 || pos[b] >= t->T)
            return sf_error("topk: row %lld: token position %d outside [0, %d)", (long long)b,
                            pos[b], t->T);
        if (rows[b] < 0 || rows[b] < last)
            return sf_error("topk: row %lld: dataset row %lld after row %lld (an example's tokens "
                            "must come together, in row order)",
                            (long long)b, (long long)rows[b], (long long)last);
        last = rows[b];
    }
    if (check_sparse(t, B, k, idx, val, cnt)) return -1;
    for (int64_t b = 0; b < B; b++)
        if (rows[b] != t->last_row) t->examples++, t->last_row = rows[b];
            /* as in sf_topk_add_sparse: a thread's features see the rows in order */
#pragma omp parallel if (B * (int64_t)k > 4096)
    {
        int T = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t f0 = t->n * tid / T, f1 = t->n * (tid + 1) / T;
        for (int64_t b = 0; b < B; b++) {
            int c = cnt ? cnt[b] : k;
            for (int i = 0; i < c; i++) {
                int64_t j = idx[b * k + i];
                float v = val[b * k + i];
                if (j < f0 || j >= f1 || !(v > 0)) continue;
                feature_add(t, j, v, rows[b], pos[b]);
                token_add(t, j, v, rows[b], pos[b]);
            }
        }
    }
    t->rows += B;
    return 0;
}

int sf_topk_add_dense(sf_topk *t, const float *z, int64_t B, int64_t row0, const int64_t *rows) {
    if (B < 0) return sf_error("topk: bad batch B=%lld", (long long)B);
    if (t->T) return sf_error("topk: token mode: add rows with sf_topk_add_tokens");
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
                if (zb[j] > 0) feature_add(t, j, zb[j], r, -1);
        }
    }
    t->rows += B;
    return 0;
}

typedef struct {
    float v;
    int64_t r;
    int32_t pos, slot;
} cand;

static int cand_cmp(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (beats(x->v, x->r, y->v, y->r)) return -1;
    if (beats(y->v, y->r, x->v, x->r)) return 1;
    return 0;
}

void sf_topk_sorted_tokens(sf_topk *t, float *values, int64_t *rows, int32_t *pos, uint8_t *heat) {
    const int N = t->N, T = t->T;
    if (T) /* the examples still being collected are complete now */
        for (int64_t j = 0; j < t->n; j++)
            token_flush(t, j);
#pragma omp parallel
    {
        cand *c = sf_malloc((size_t)N * sizeof(cand));
#pragma omp for schedule(static)
        for (int64_t j = 0; j < t->n; j++) {
            int len = t->heap_len[j];
            for (int i = 0; i < len; i++) {
                c[i].v = t->heap_val[j * N + i];
                c[i].r = t->heap_row[j * N + i];
                c[i].pos = T ? t->heap_pos[j * N + i] : -1;
                c[i].slot = T ? t->heap_slot[j * N + i] : 0;
            }
            qsort(c, (size_t)len, sizeof(cand), cand_cmp);
            for (int i = 0; i < N; i++) {
                values[j * N + i] = i < len ? c[i].v : 0.0f;
                rows[j * N + i] = i < len ? c[i].r : -1;
                if (pos) pos[j * N + i] = i < len ? c[i].pos : -1;
                if (heat && T) {
                    uint8_t *dst = heat + ((size_t)j * N + (size_t)i) * (size_t)T;
                    if (i < len)
                        memcpy(dst, t->heat + ((size_t)j * N + (size_t)c[i].slot) * (size_t)T,
                               (size_t)T);
                    else
                        memset(dst, 0, (size_t)T);
                }
            }
        }
        free(c);
    }
}

void sf_topk_sorted(sf_topk *t, float *values, int64_t *rows) {
    sf_topk_sorted_tokens(t, values, rows, NULL, NULL);
}

int sf_topk_write(sf_topk *t, const char *path, const char *const *meta) {
    const int64_t n = t->n;
    const int N = t->N, T = t->T;
    float *values = sf_malloc((size_t)(n * N) * sizeof(float));
    int64_t *rows = sf_malloc((size_t)(n * N) * sizeof(int64_t));
    int32_t *pos = T ? sf_malloc((size_t)(n * N) * sizeof(int32_t)) : NULL;
    uint8_t *heat = T ? sf_malloc((size_t)(n * N) * (size_t)T) : NULL;
    float *density = sf_malloc((size_t)n * sizeof(float));
    float *mean = sf_malloc((size_t)n * sizeof(float));
    float *hist_max = sf_malloc((size_t)n * sizeof(float));
    sf_topk_sorted_tokens(t, values, rows, pos, heat);
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
    /* samples: (n, bins * S), bin-major, each bin's in priority order */
    const size_t ns = (size_t)n * SF_TOPK_HIST_BINS * SF_TOPK_SAMPLES;
    int64_t *srow = sf_malloc(ns * sizeof(int64_t));
    float *sval = sf_malloc(ns * sizeof(float));
    int32_t *spos = sf_malloc(ns * sizeof(int32_t));
    for (size_t i = 0; i < ns; i++) {
        srow[i] = t->samples[i].row;
        sval[i] = t->samples[i].row >= 0 ? t->samples[i].val : 0.0f;
        spos[i] = t->samples[i].row >= 0 ? t->samples[i].pos : -1;
    }
    int64_t ss[2] = {n, SF_TOPK_HIST_BINS * SF_TOPK_SAMPLES};
    sf_stw_add(w, "sample_rows", SF_DT_I64, 2, ss, srow);
    sf_stw_add(w, "sample_values", SF_DT_F32, 2, ss, sval);
    if (T) sf_stw_add(w, "sample_pos", SF_DT_I32, 2, ss, spos);
    int64_t s3[3] = {n, N, T};
    char buf[64];
    if (T) {
        sf_stw_add(w, "topk_pos", SF_DT_I32, 2, s2, pos);
        sf_stw_add(w, "topk_heat", SF_DT_U8, 3, s3, heat);
        sf_stw_add(w, "ex_count", SF_DT_I64, 1, s1, t->ex_count);
        snprintf(buf, sizeof buf, "%d", T);
        sf_stw_meta(w, "tokens", buf);
        snprintf(buf, sizeof buf, "%d,%d", t->grid_h, t->grid_w);
        sf_stw_meta(w, "grid", buf);
        snprintf(buf, sizeof buf, "%d", t->grid_first);
        sf_stw_meta(w, "grid_first", buf);
        snprintf(buf, sizeof buf, "%lld", (long long)t->examples);
        sf_stw_meta(w, "examples", buf);
    }
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
    free(pos);
    free(heat);
    free(srow);
    free(sval);
    free(spos);
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

/* Token mode tensors and layout (see sf_topk_set_tokens). */
static int open_tokens(sf_topk_file *f) {
    const sf_st *st = &f->st;
    const char *ts = sf_st_meta(st, "tokens"), *gs = sf_st_meta(st, "grid"),
               *fs = sf_st_meta(st, "grid_first"), *es = sf_st_meta(st, "examples");
    long T = ts ? strtol(ts, NULL, 10) : 0;
    if (T <= 0 || T > 1 << 16) return sf_error("%s: token mode: bad 'tokens' metadata", st->path);
    f->T = (int)T;
    int gh = 0, gw = 0;
    if (gs && sscanf(gs, "%d,%d", &gh, &gw) != 2) gh = gw = -1;
    int gf = fs ? atoi(fs) : 0;
    if (gh < 0 || gw < 0 || gf < 0 || (int64_t)gh * gw + gf > T || (!gh != !gw))
        return sf_error("%s: token mode: bad grid metadata '%s' from %d for %ld tokens", st->path,
                        gs ? gs : "", gf, T);
    f->grid_h = gh, f->grid_w = gw, f->grid_first = gf;
    f->examples = es ? strtoll(es, NULL, 10) : 0;
    const sf_tensor_info *tp = need(st, "topk_pos", SF_DT_I32, 2, f->n, f->N);
    const sf_tensor_info *te = tp ? need(st, "ex_count", SF_DT_I64, 1, f->n, 0) : NULL;
    const sf_tensor_info *th = te ? sf_st_find(st, "topk_heat") : NULL;
    if (!te) return -1;
    if (!th || th->dtype != SF_DT_U8 || th->ndim != 3 || th->shape[0] != f->n ||
        th->shape[1] != f->N || th->shape[2] != T)
        return sf_error("%s: tensor 'topk_heat': expected U8 [%lld, %d, %ld]", st->path,
                        (long long)f->n, f->N, T);
    int32_t *pos = sf_malloc((size_t)tp->nbytes + 8);
    memcpy(pos, tp->data, tp->nbytes);
    int64_t *exc = sf_malloc((size_t)te->nbytes + 8);
    memcpy(exc, te->data, te->nbytes);
    f->owned[2] = pos;
    f->owned[3] = exc;
    f->pos = pos;
    f->ex_count = exc;
    f->heat = th->data;
    for (int64_t i = 0; i < f->n * f->N; i++)
        if (pos[i] < -1 || pos[i] >= T || (pos[i] < 0) != (f->row_ids[i] < 0))
            return sf_error("%s: tensor 'topk_pos': entry %lld (%d) is out of range", st->path,
                            (long long)i, pos[i]);
    return 0;
}

/* The samples across the activation range, when the file has them. */
static int open_samples(sf_topk_file *f) {
    const sf_st *st = &f->st;
    const sf_tensor_info *tr = sf_st_find(st, "sample_rows");
    if (tr->ndim != 2 || tr->shape[1] % f->bins || tr->shape[1] / f->bins < 1 ||
        tr->shape[1] / f->bins > 64)
        return sf_error("%s: tensor 'sample_rows': bad shape", st->path);
    const int64_t w = tr->shape[1];
    if (!need(st, "sample_rows", SF_DT_I64, 2, f->n, w)) return -1;
    int64_t s2[2] = {f->n, w};
    float *own = NULL;
    f->sample_values = sf_st_get_f32(st, "sample_values", 2, s2, &own);
    if (own) {
        free(own);
        f->sample_values = NULL;
    }
    if (!f->sample_values)
        return sf_error("%s: tensor 'sample_values' must be F32 [%lld, %lld]", st->path,
                        (long long)f->n, (long long)w);
    int64_t *rows = sf_malloc((size_t)tr->nbytes + 8);
    memcpy(rows, tr->data, tr->nbytes);
    f->owned[4] = rows;
    f->sample_rows = rows;
    f->S = (int)(w / f->bins);
    for (int64_t i = 0; i < f->n * w; i++)
        if (rows[i] < -1) return sf_error("%s: tensor 'sample_rows': negative row", st->path);
    if (f->T) {
        const sf_tensor_info *tp = need(st, "sample_pos", SF_DT_I32, 2, f->n, w);
        if (!tp) return -1;
        int32_t *pos = sf_malloc((size_t)tp->nbytes + 8);
        memcpy(pos, tp->data, tp->nbytes);
        f->owned[5] = pos;
        f->sample_pos = pos;
        for (int64_t i = 0; i < f->n * w; i++)
            if (pos[i] < -1 || pos[i] >= f->T)
                return sf_error("%s: tensor 'sample_pos': position out of range", st->path);
    }
    return 0;
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
    if (sf_st_find(st, "topk_pos") && open_tokens(f)) goto fail;
    if (sf_st_find(st, "sample_rows") && open_samples(f)) goto fail;
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
    for (int i = 0; i < 6; i++)
        free(f->owned[i]);
    if (f->st.path || f->st.map) sf_st_close(&f->st);
    memset(f, 0, sizeof *f);
}
