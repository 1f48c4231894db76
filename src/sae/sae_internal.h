/* Kernels shared by the SAE model (encode/decode) and the trainer. */
#ifndef SAEFLOW_SAE_INTERNAL_H
#define SAEFLOW_SAE_INTERNAL_H

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "saeflow/safetensors.h"
#include "saeflow/sae.h"

/* Registers parameter `name` (checkpoint name) of shape (s0) or (s0, s1)
 * in s->params; transposed: stored as the reference's transpose; per_latent:
 * row j (or entry j) belongs to latent j. */
void sae_add_param(sf_sae *s, const char *name, float *data, int ndim, int64_t s0, int64_t s1,
                   int transposed, int per_latent);

/* Rows per encoder-GEMM chunk: large enough that packing W_enc is amortised
 * (the pack costs ~n*d, the chunk ~rows*n*d FMAs), small enough that several
 * chunks keep both threads busy at small batches. */
int sae_chunk_rows(int64_t B, int n);

/* The one F32 GEMM of the SAE code (row-major, single-threaded: callers run
 * one per OpenMP thread): C (M, N) = alpha op(A) op(B) + beta C, op = ^T
 * where trans_*. OpenBLAS's cblas_sgemm rather than sf_sgemm: on the SAE
 * shapes oneDNN 2.6.3's sgemm measured 0.6-0.9x OpenBLAS here (decoder NN
 * and gradient TN 0.63-0.70x, encoder NT 0.93x at d 1024, 1.11x at d 3072;
 * docs/sae.md). A second backend is a change here only. */
void sae_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

/* pre (m, n) = xc (m, d) @ W_enc^T, single-threaded sgemm (the caller runs one
 * per OpenMP thread). */
void sae_encoder_gemm(const sf_sae *s, const float *xc, int m, float *pre);

/* The up-to-k largest v_j = pre[j] + b[j] with v_j > 0, as (idx, val), in no
 * particular order; returns how many (fewer than k when fewer are positive).
 * Ties keep the lower index. With `mask` non-NULL only latents with mask[j]
 * are candidates (AuxK: dead latents). */
int sae_topk_relu(const float *pre, const float *b, int n, int k, const uint8_t *mask, int32_t *idx,
                  float *val);

/* sae_topk_relu over a list: the (ids[u], v[u]) pairs, ids ascending, offered
 * in order. Same rule, so the same set (in heap order) as sae_topk_relu on a
 * dense row holding v at ids and nothing positive elsewhere. */
int sae_topk_relu_list(const int32_t *ids, const float *v, int m, int k, int32_t *idx, float *val);

/* k-th largest (1-based, k <= m) of a[0..m); reorders a. Quickselect. */
float sae_kth_largest(float *a, int64_t m, int64_t k);

/* Sorts (idx, val) pairs by idx ascending (k is small: insertion sort). */
void sae_sort_pairs(int32_t *idx, float *val, int c);

/* out (d) = bias + sum_s val[s] * W_decT[idx[s]]  (bias may be NULL -> 0). */
void sae_decode_row(const float *W_decT, const float *bias, int d, const int32_t *idx,
                    const float *val, int c, float *out);

/* TopK-style selection per row (TopK, and Matryoshka without BatchTopK):
 * the encoders the int16 pre-filter serves. */
static inline int sae_row_topk(const sf_sae *s) {
    return s->arch == SF_SAE_TOPK || (s->arch == SF_SAE_MATRYOSHKA && !s->batch_select);
}

/* Whether `flops` of work is worth an OpenMP parallel region (else run serial). */
static inline int sae_parallel_worth(size_t flops) {
    return flops >= ((size_t)1 << 26);
}

/* sum_q a[q] b[q] in float, in a fixed order: 64 lanes (four vectors, so
 * the adds of one do not wait on the last), folded pairwise, then the tail. */
static inline float sae_dot(const float *restrict a, const float *restrict b, int d) {
    float acc[64] = {0};
    int q = 0;
    for (; q + 64 <= d; q += 64)
#pragma omp simd
        for (int u = 0; u < 64; u++)
            acc[u] += a[q + u] * b[q + u];
    for (int w = 32; w >= 1; w /= 2)
#pragma omp simd
        for (int u = 0; u < w; u++)
            acc[u] += acc[u + w];
    float s = acc[0];
    for (; q < d; q++)
        s += a[q] * b[q];
    return s;
}

/* A row's reconstruction stats in double: st[0] = ||x_hat - x||^2, st[1] =
 * ||x||^2, st[2] = x . x_hat, st[3] = ||x_hat||^2. omp simd: vector partial
 * sums in an order fixed at compile time (a strict serial double sum would
 * not vectorise). Both trainers use it. */
static inline void sae_row_stats(const float *restrict xh, const float *restrict x, int d,
                                 double st[4]) {
    double sq = 0, x2 = 0, xxh = 0, xh2 = 0;
#pragma omp simd reduction(+ : sq, x2, xxh, xh2)
    for (int q = 0; q < d; q++) {
        double h = xh[q], v = x[q], df = h - v;
        sq += df * df;
        x2 += v * v;
        xxh += v * h;
        xh2 += h * h;
    }
    st[0] = sq;
    st[1] = x2;
    st[2] = xxh;
    st[3] = xh2;
}

/* out[r] = sae_dot(w[r], b, d) for r < 4, bit for bit, with the four rows
 * read together: four independent streams from L3 (the pre-filter's
 * candidate rows) instead of one at a time. */
static inline void sae_dot4(const float *const w[4], const float *restrict b, int d, float out[4]) {
#ifdef __AVX512F__
    if (d >= 64) {
        __m512 acc[4][4];
        for (int r = 0; r < 4; r++)
            for (int v = 0; v < 4; v++)
                acc[r][v] = _mm512_setzero_ps();
        int q = 0;
        for (; q + 64 <= d; q += 64)
            for (int v = 0; v < 4; v++) {
                __m512 x = _mm512_loadu_ps(b + q + 16 * v);
                for (int r = 0; r < 4; r++) /* mul then add: sae_dot is not contracted */
                    acc[r][v] = _mm512_add_ps(acc[r][v],
                                              _mm512_mul_ps(_mm512_loadu_ps(w[r] + q + 16 * v), x));
            }
        for (int r = 0; r < 4; r++) {
            /* sae_dot's fold: w = 32 (acc[u] += acc[u + 32]), w = 16, then 8..1 */
            __m512 a0 = _mm512_add_ps(acc[r][0], acc[r][2]),
                   a1 = _mm512_add_ps(acc[r][1], acc[r][3]);
            a0 = _mm512_add_ps(a0, a1);
            float l[16];
            _mm512_storeu_ps(l, a0);
            for (int wd = 8; wd >= 1; wd /= 2)
                for (int u = 0; u < wd; u++)
                    l[u] += l[u + wd];
            float s = l[0];
            for (int t = q; t < d; t++)
                s += w[r][t] * b[t];
            out[r] = s;
        }
        return;
    }
#endif
    for (int r = 0; r < 4; r++)
        out[r] = sae_dot(w[r], b, d);
}

/* dst[0..d) = src[0..d). stream: the row is not read again before it has
 * left the caches, so write it with streaming stores (when dst is 64-byte
 * aligned and d % 16 == 0) rather than first reading the old line in; then
 * call sae_store_fence() on the same thread before others read it. */
void sae_store_row(float *dst, const float *src, int d, int stream);
void sae_store_fence(void);

/* g -= (g.w / w.w) w: the decoder gradient's component along its own row
 * dropped (--normalise keeps decoder rows at unit norm). */
void sae_drop_along(float *g, const float *w, int d);

/* One latent's gradient rows from its m entries (rows row[u], codes z[u],
 * dL/dpre g[u]): ge (d) += sum_u g[u] xc[row[u]], gd (d) += sum_u z[u]
 * R[row[u]], R = dL/dx_hat (or the AuxK residual gradient). Two entries per
 * sweep: half the accumulator traffic and two row streams in flight (the
 * rows come from L3). Returns sum_u g[u] (float, in order). The TopK and
 * the sparse architecture steps both use it. */
float sae_latent_grad_rows(float *restrict ge, float *restrict gd, int d, const float *xc,
                           const float *R, const int32_t *row, const float *z, const float *g,
                           int32_t m);

/* A latent's encoder and decoder gradient rows ge, gd (d) are complete:
 * with normalise, drop gd's component along w_dec; write both out (see
 * sae_store_row); return ss0 + ||ge||^2 + ||gd||^2 in double. */
double sae_latent_rows_done(float *ge, float *gd, const float *w_dec, int normalise, int d,
                            float *out_e, float *out_d, int stream, double ss0);

/* The dtype checkpoints are written in (s->save_half). */
static inline sf_dtype sae_save_dtype(const sf_sae *s) {
    return s->save_half == 1 ? SF_DT_BF16 : s->save_half == 2 ? SF_DT_F16 : SF_DT_F32;
}

/* Rows per encode + decode chunk when whole codes are held: a thresholded
 * architecture's code buffer has room for all n latents per row, so the
 * chunk shrinks to keep it near 32 MB. */
static inline int64_t sae_code_chunk_rows(const sf_sae *s) {
    int64_t c = ((int64_t)1 << 22) / (s->k > 0 ? s->k : 1);
    return c < 16 ? 16 : c > 4096 ? 4096 : c;
}

/* 1 if all m values are finite. */
int sae_all_finite(const float *x, size_t m);

/* xc (m, d) = x (m, d) - b_dec: the encoder's input for m rows. Returns the
 * index (in 0..m) of the first row holding a non-finite value, or -1. */
int64_t sae_center_rows(const sf_sae *s, const float *x, int64_t m, float *xc);

#endif
