/* Dense layers: linear (x @ W^T + b) on sf_sgemm (F32 weights), on
 * sf_gemm_half (BF16/F16 weights, gemm_half.c) or as dot products (BF16/F16,
 * at most 4 rows), and the patch-embedding convolution as im2col + GEMM. */
#include <omp.h>
#include <string.h>

#include "saeflow/kernels.h"
#include "kernels/internal.h"

/* Bytes of F32 scratch per thread for widened BF16/F16 weights, on CPUs
 * without AVX2 (elsewhere gemm_half.c widens inside its own packing). Each
 * thread widens as much of its slice of W as fits and multiplies it in one
 * sgemm: a GEMM with a short N (a small panel) packs all of x again for few
 * output columns and runs far below peak (measured: 64-row panels made a
 * BF16 ViT-L/14 forward 1.5x slower than F32). 16 MB covers a whole
 * per-thread slice of every ViT-L/14 matrix at 2 threads; larger models use
 * panels of at least 256 rows. */
#define SF_PANEL_BYTES (16u << 20)

/* At most this many rows of x with BF16/F16 weights, a linear is a few dot
 * products per weight row, and reading the weights is all of its cost: the
 * panel route (widen to F32 scratch, then sgemm) moves 2 + 4 + 4 bytes per
 * weight through memory, the direct route 2. FLUX's AdaLN modulations are
 * such products (one temb row per image against 6 D x D weights, 29% of a
 * FLUX block's weights): measured in bench_flux (perf, Intel Xeon, 2
 * threads, batch 1), the panel route spent 23% of a BF16 forward's CPU time
 * widening, stalled on memory. sf_gemm_half (gemm_half.c) packs each weight
 * for M rows of use, and for M <= 4 that packing would be all of the work.
 * Each output is one thread's fixed-order sum, so the result does not depend
 * on the thread count. */
#define SF_GEMV_MAX_M 4

// y[0:M, n0:n1] (+)= x (M, K) @ W[n0:n1]^T + bias, W BF16/F16, M small:
// each weight row widened once (row, K floats, stays in L1/L2), M dot products
static void gemv_block(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias,
                       float *y, int64_t ldy, int accumulate, int64_t n0, int64_t n1, float *row) {
    enum { L = 64 }; /* partial sums: 4 AVX-512 or 8 AVX2 FMA chains in flight */
    const size_t esz = sf_dtype_size(W->dtype);
    for (int64_t n = n0; n < n1; n++) {
        sf_convert_to_f32(W->dtype, (const char *)W->data + (size_t)(n * K) * esz, (size_t)K, row);
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            float part[L] = {0};
            int64_t k = 0;
            for (; k + L <= K; k += L)
#pragma omp simd
                for (int j = 0; j < L; j++)
                    part[j] += xm[k + j] * row[k + j];
            for (int j = 0; k < K; k++, j++)
                part[j] += xm[k] * row[k];
            float acc = 0;
            for (int j = 0; j < L; j++)
                acc += part[j];
            float *o = y + m * ldy + n, base = bias ? bias[n] : 0.0f;
            *o = (accumulate ? *o + base : base) + acc;
        }
    }
}

/* Threading model: the GEMM (sf_sgemm) always runs single-threaded and OpenMP
 * owns all parallelism. Each thread multiplies x by its own slice of W's rows
 * (output features), so only one pool of threads exists; with OpenBLAS's own
 * pool next to OpenMP's, the two spin-wait against each other on a small machine
 * (measured: ~15% of a ViT-L/14 forward went to sched_yield and spinning).
 * Per-thread slices also make BF16 widening parallel and cache-local. */

// y[m0:m1, n0:n1] (+)= x[m0:m1] @ W[n0:n1]^T + bias[n0:n1]
static void linear_block(const float *x, int64_t m0, int64_t m1, int64_t K, const sf_weight *W,
                         const float *bias, float *y, int64_t ldy, int accumulate, int64_t n0,
                         int64_t n1, float *panel, int64_t nb) {
    const int64_t M = m1 - m0, N = n1 - n0;
    if (M <= 0 || N <= 0) return;
    x += m0 * K;
    y += m0 * ldy;
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        /* Put the bias into y first and let the GEMM accumulate onto it
         * (beta = 1): one pass over y instead of a second one afterwards. */
        for (int64_t m = 0; m < M; m++) {
            float *row = y + m * ldy + n0;
            if (accumulate)
                for (int64_t n = 0; n < N; n++)
                    row[n] += bias[n0 + n];
            else
                memcpy(row, bias + n0, (size_t)N * sizeof(float));
        }
        beta = 1.0f;
    }
    /* K == 0 needs no case here: sf_sgemm then makes C = beta C (zeros, or
     * the bias / residual already in y). */
    if (W->dtype == SF_DT_F32) {
        sf_sgemm(0, 1, M, N, K, 1.0f, x, K, (const float *)W->data + n0 * K, K, beta, y + n0, ldy);
        return;
    }
    /* Without AVX2 (no sf_gemm_half): widen a panel of W's rows to F32,
     * multiply, move on.
     * Widening costs N*K conversions against M*N*K multiply-adds: noise for M
     * in the hundreds (a batch of tokens). */
    const size_t esz = sf_dtype_size(W->dtype);
    for (int64_t p0 = n0; p0 < n1; p0 += nb) {
        int64_t cur = n1 - p0 < nb ? n1 - p0 : nb;
        sf_convert_to_f32(W->dtype, (const char *)W->data + (size_t)(p0 * K) * esz,
                          (size_t)(cur * K), panel);
        sf_sgemm(0, 1, M, cur, K, 1.0f, x, K, panel, K, beta, y + p0, ldy);
    }
}

void sf_linear(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias,
               float *y, int64_t ldy, int accumulate) {
    // x (M, K), W (N, K) -> y (M, N) row stride ldy
    const int64_t N = W->shape[0];
    if (M <= 0 || N <= 0) return;
    sf_blas_single_threaded();
    int nt = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (W->dtype != SF_DT_F32 && M > SF_GEMV_MAX_M && sf_gemm_half_isa()) {
        /* BF16/F16 widened inside the GEMM's own packing: gemm_half.c */
        if ((double)M * (double)N * (double)K < 1e6) nt = 1;
        sf_gemm_half(x, M, K, W, bias, y, ldy, accumulate, nt);
        return;
    }
    /* Split the output features when every thread gets a wide slice (the
     * usual case: N >= 768); otherwise split rows; tiny products run on one
     * thread (a parallel region costs more than they do). */
    int split_n = N >= 128 * (int64_t)nt, split_m = !split_n && M >= 32 * (int64_t)nt;
    if ((double)M * (double)N * (double)K < 1e6 || (!split_n && !split_m)) nt = 1;
    int64_t nb = 0;
    if (W->dtype != SF_DT_F32) {
        nb = (int64_t)(SF_PANEL_BYTES / sizeof(float)) / (K > 0 ? K : 1);
        nb = nb < 256 ? 256 : nb / 16 * 16;
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num(), n = omp_get_num_threads();
        int64_t m0 = 0, m1 = M, n0 = 0, n1 = N;
        if (n > 1 && split_n) { /* slices rounded to 16 columns: whole vector tiles */
            int64_t per = ((N + 15) / 16 + n - 1) / n * 16;
            n0 = t * per < N ? t * per : N;
            n1 = n0 + per < N ? n0 + per : N;
        } else if (n > 1) {
            m0 = M * t / n, m1 = M * (t + 1) / n;
        }
        if (W->dtype != SF_DT_F32 && M <= SF_GEMV_MAX_M) {
            gemv_block(x + m0 * K, m1 - m0, K, W, bias, y + m0 * ldy, ldy, accumulate, n0, n1,
                       sf_thread_scratch(SF_SCRATCH_PANEL, (size_t)(K > 0 ? K : 1)));
        } else {
            float *panel = NULL;
            if (W->dtype != SF_DT_F32) {
                int64_t rows = nb < n1 - n0 ? nb : n1 - n0;
                panel = sf_thread_scratch(SF_SCRATCH_PANEL,
                                          (size_t)((rows > 0 ? rows : 1) * (K > 0 ? K : 1)));
            }
            linear_block(x, m0, m1, K, W, bias, y, ldy, accumulate, n0, n1, panel, nb);
        }
    }
}

void sf_patch_embed(const float *px, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p,
                    const sf_weight *w, const float *bias, float *out) {
    // px (B, C, H, W) -> cols (B*G, C*p*p) -> out (B*G, D), G = (H/p)*(W/p)
    int64_t gh = H / p, gw = W / p, G = gh * gw, Kc = C * p * p, D = w->shape[0];
    float *cols = sf_malloc_aligned((size_t)(B * G * Kc) * sizeof(float) + 64);
    /* Column order c*p*p + ky*p + kx matches a Conv2d weight (D, C, p, p)
     * flattened to (D, C*p*p), so the convolution is exactly cols @ W^T. */
#pragma omp parallel for collapse(2) schedule(static) if (B * G * Kc > 65536)
    for (int64_t b = 0; b < B; b++)
        for (int64_t gy = 0; gy < gh; gy++)
            for (int64_t gx = 0; gx < gw; gx++) {
                float *col = cols + ((b * G) + gy * gw + gx) * Kc;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t ky = 0; ky < p; ky++) {
                        const float *src = px + ((b * C + c) * H + gy * p + ky) * W + gx * p;
                        memcpy(col + (c * p + ky) * p, src, (size_t)p * sizeof(float));
                    }
            }
    sf_linear(cols, B * G, Kc, w, bias, out, D, 0);
    sf_free_aligned(cols);
}
