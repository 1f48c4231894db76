/* The sparse kernels the SAE model (encode/decode) and the trainers share:
 * row chunking and the encoder GEMM, the heap TopK over a row or a list,
 * decode of one row, streaming row stores, and the per-latent gradient-row
 * finish. Declared in sae_internal.h. */
#include <cblas.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae_internal.h"

int sae_chunk_rows(int64_t B, int n) {
    /* The chunks are a function of (B, n) only, never of the thread count: a
     * BLAS may round a row's outputs differently with the call's row count
     * and the row's place in it (OpenBLAS's Haswell/Zen sgemm computes rows
     * in groups of 12 and the last M mod 12 with other kernels, and summing
     * in another order), so only the same calls on the same rows give the
     * same bits whatever the thread count. Every sgemm call packs all of
     * W_enc (n x d) once, which at n x d = 12288 x 3072 costs as much as ~40
     * rows of compute: chunks of up to 256 rows keep that small, and at least
     * two chunks from 32 rows on keep two threads busy at small batches.
     * Equal sizes (the last may be shorter), capped at 64 MiB of
     * pre-activations, at least 16 rows. */
    const int64_t max_rows = 256;
    int64_t nch = (B + max_rows - 1) / max_rows;
    if (nch < 2 && B >= 32) nch = 2;
    int64_t c = nch > 0 ? (B + nch - 1) / nch : 1;
    int64_t cap = ((int64_t)16 << 20) / (n > 0 ? n : 1);
    const char *env = getenv("SAEFLOW_CHUNK"); /* rows per chunk, for experiments */
    if (env && atoi(env) > 0) c = atoi(env);
    if (c > cap) c = cap;
    if (c < 16) c = 16;
    if (c > B) c = B > 0 ? B : 1;
    return (int)c;
}

void sae_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void sae_encoder_gemm(const sf_sae *s, const float *xc, int m, float *pre) {
    /* pre (m, n) = xc (m, d) . W_enc^T, W_enc (n, d) row-major */
    sae_sgemm(0, 1, m, s->n, s->d, 1.0f, xc, s->d, s->W_enc, s->d, 0.0f, pre, s->n);
}

/* Min-heap on val (root = smallest kept value). */
static inline void heap_sift_down(int32_t *idx, float *val, int c, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < c && (val[l] < val[m] || (val[l] == val[m] && idx[l] > idx[m]))) m = l;
        if (r < c && (val[r] < val[m] || (val[r] == val[m] && idx[r] > idx[m]))) m = r;
        if (m == i) return;
        float tv = val[i];
        val[i] = val[m];
        val[m] = tv;
        int32_t ti = idx[i];
        idx[i] = idx[m];
        idx[m] = ti;
        i = m;
    }
}

static inline void heap_push(int32_t *idx, float *val, int c, int32_t j, float v) {
    int i = c;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!(val[p] > v || (val[p] == v && idx[p] < j))) break;
        val[i] = val[p];
        idx[i] = idx[p];
        i = p;
    }
    val[i] = v;
    idx[i] = j;
}

/* k-th largest of a[0..m) (1-based k <= m); reorders a. Quickselect. */
float sae_kth_largest(float *a, int64_t m, int64_t k) {
    int64_t lo = 0, hi = m - 1, want = k - 1; /* position in descending order */
    while (lo < hi) {
        float piv = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > piv)
                i++;
            while (a[j] < piv)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

static inline void topk_offer(int32_t *idx, float *val, int *c, int k, float *thr, int32_t j,
                              float v) {
    if (*c < k) {
        heap_push(idx, val, (*c)++, j, v);
    } else {
        val[0] = v;
        idx[0] = j;
        heap_sift_down(idx, val, *c, 0);
    }
    if (*c == k) *thr = val[0];
}

int sae_topk_relu(const float *pre, const float *b, int n, int k, const uint8_t *mask, int32_t *idx,
                  float *val) {
    int c = 0;
    float thr = 0.0f; /* ReLU: only v > 0 can enter; once full, v > heap minimum */
    int j0 = 0;
#ifdef __AVX512F__
    /* Starting threshold: lane-wise maxima over groups of 256 are n/16 distinct
     * elements, so the k-th largest of them is <= the k-th largest overall and
     * can only exclude non-winners. It cuts heap insertions from ~k ln(n/k)
     * to about k. Not for masked (AuxK) selection. */
    if (!mask && n >= 512 && n <= 65536 && n / 16 >= 2 * k) {
        float lm[4096];
        const int groups = n / 256;
        for (int g = 0; g < groups; g++) {
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int u = 0; u < 256; u += 16) {
                const int j = g * 256 + u;
                mx = _mm512_max_ps(mx,
                                   _mm512_add_ps(_mm512_loadu_ps(pre + j), _mm512_loadu_ps(b + j)));
            }
            _mm512_storeu_ps(lm + g * 16, mx);
        }
        float t0 = sae_kth_largest(lm, groups * 16, k);
        if (t0 > 0) thr = nextafterf(t0, -INFINITY); /* v > thr  <=>  v >= t0 */
    }
    /* 16 at a time: one compare against the running threshold; past the first
     * few blocks almost no lane passes, so the cost is one load+add+cmp per 16. */
    for (; j0 + 16 <= n; j0 += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(pre + j0), _mm512_loadu_ps(b + j0));
        __mmask16 hit = _mm512_cmp_ps_mask(v, _mm512_set1_ps(thr), _CMP_GT_OQ);
        while (hit) {
            int u = __builtin_ctz(hit);
            hit &= hit - 1;
            int j = j0 + u;
            float vj = pre[j] + b[j];
            if (!(vj > thr) || (mask && !mask[j])) continue; /* thr may have risen */
            topk_offer(idx, val, &c, k, &thr, j, vj);
        }
    }
#endif
    for (int j = j0; j < n; j++) {
        float v = pre[j] + b[j];
        if (!(v > thr) || (mask && !mask[j])) continue;
        topk_offer(idx, val, &c, k, &thr, j, v);
    }
    return c;
}

int sae_topk_relu_list(const int32_t *ids, const float *v, int m, int k, int32_t *idx, float *val) {
    int c = 0;
    float thr = 0.0f;
    for (int u = 0; u < m; u++)
        if (v[u] > thr) topk_offer(idx, val, &c, k, &thr, ids[u], v[u]);
    return c;
}

void sae_sort_pairs(int32_t *idx, float *val, int c) {
    for (int i = 1; i < c; i++) {
        int32_t ji = idx[i];
        float vi = val[i];
        int p = i - 1;
        while (p >= 0 && idx[p] > ji) {
            idx[p + 1] = idx[p];
            val[p + 1] = val[p];
            p--;
        }
        idx[p + 1] = ji;
        val[p + 1] = vi;
    }
}

void sae_decode_row(const float *W_decT, const float *bias, int d, const int32_t *idx,
                    const float *val, int c, float *out) {
    if (bias)
        memcpy(out, bias, (size_t)d * sizeof(float));
    else
        memset(out, 0, (size_t)d * sizeof(float));
    int s = 0;
    for (; s + 1 < c; s += 2) { /* two rows per sweep over out */
        const float *w0 = W_decT + (size_t)idx[s] * d, *w1 = W_decT + (size_t)idx[s + 1] * d;
        const float v0 = val[s], v1 = val[s + 1];
#pragma omp simd
        for (int q = 0; q < d; q++)
            out[q] += v0 * w0[q] + v1 * w1[q];
    }
    for (; s < c; s++) {
        const float *w = W_decT + (size_t)idx[s] * d;
        const float v = val[s];
#pragma omp simd
        for (int q = 0; q < d; q++)
            out[q] += v * w[q];
    }
}

void sae_store_row(float *dst, const float *src, int d, int stream) {
#ifdef __AVX512F__
    if (stream && d % 16 == 0 && (uintptr_t)dst % 64 == 0) {
        for (int q = 0; q < d; q += 16)
            _mm512_stream_ps(dst + q, _mm512_loadu_ps(src + q));
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, (size_t)d * sizeof(float));
}

void sae_drop_along(float *g, const float *w, int d) {
    float ww = sae_dot(w, w, d);
    if (!(ww > 0)) return;
    float a = sae_dot(g, w, d) / ww;
#pragma omp simd
    for (int q = 0; q < d; q++)
        g[q] -= a * w[q];
}

double sae_latent_rows_done(float *ge, float *gd, const float *w_dec, int normalise, int d,
                            float *out_e, float *out_d, int stream, double ss0) {
    if (normalise) sae_drop_along(gd, w_dec, d);
    double ss = ss0;
#pragma omp simd reduction(+ : ss)
    for (int q = 0; q < d; q++)
        ss += (double)ge[q] * ge[q] + (double)gd[q] * gd[q];
    sae_store_row(out_e, ge, d, stream);
    sae_store_row(out_d, gd, d, stream);
    return ss;
}

float sae_latent_grad_rows(float *restrict ge, float *restrict gd, int d, const float *xc,
                           const float *R, const int32_t *row, const float *z, const float *g,
                           int32_t m) {
    float sg = 0;
    int32_t e = 0;
    for (; e + 1 < m; e += 2) {
        const float *xr0 = xc + (size_t)row[e] * d, *gr0 = R + (size_t)row[e] * d;
        const float *xr1 = xc + (size_t)row[e + 1] * d, *gr1 = R + (size_t)row[e + 1] * d;
        const float g0 = g[e], z0 = z[e], g1 = g[e + 1], z1 = z[e + 1];
#pragma omp simd
        for (int q = 0; q < d; q++) {
            ge[q] += g0 * xr0[q] + g1 * xr1[q];
            gd[q] += z0 * gr0[q] + z1 * gr1[q];
        }
        sg += g0;
        sg += g1;
    }
    for (; e < m; e++) {
        const float *xr = xc + (size_t)row[e] * d, *gr = R + (size_t)row[e] * d;
        const float ge1 = g[e], z1 = z[e];
#pragma omp simd
        for (int q = 0; q < d; q++) {
            ge[q] += ge1 * xr[q];
            gd[q] += z1 * gr[q];
        }
        sg += ge1;
    }
    return sg;
}

void sae_store_fence(void) {
#ifdef __AVX512F__
    _mm_sfence();
#endif
}

int sae_all_finite(const float *x, size_t m) {
    /* x*0 is 0 for finite x and NaN for Inf/NaN; the OR-reduction vectorises. */
    int bad = 0;
    for (size_t i = 0; i < m; i++)
        bad |= (x[i] * 0.0f != 0.0f);
    return !bad;
}

int64_t sae_center_rows(const sf_sae *s, const float *x, int64_t m, float *xc) {
    const int d = s->d;
    int64_t bad = -1;
    for (int64_t r = 0; r < m; r++) {
        const float *xr = x + (size_t)r * d;
        float *xcr = xc + (size_t)r * d;
        if (bad < 0 && !sae_all_finite(xr, (size_t)d)) bad = r;
#pragma omp simd
        for (int q = 0; q < d; q++)
            xcr[q] = xr[q] - s->b_dec[q];
    }
    return bad;
}
