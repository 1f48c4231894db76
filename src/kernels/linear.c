/* Dense layers on OpenBLAS: linear (x @ W^T + b) and the patch-embedding
 * convolution as im2col + GEMM. */
#include <cblas.h>
#include <string.h>

#include "saeflow/kernels.h"

/* Bytes of F32 scratch per BF16 panel: large enough that each sgemm call
 * still has a long N (>= 256 for K <= 4096), small enough to stay in L2/L3. */
#define SF_PANEL_BYTES (4u << 20)

void sf_linear(const float *x, int64_t M, int64_t K, const sf_weight *W, const float *bias, float *y,
               int64_t ldy, int accumulate) {
    // x (M, K), W (N, K) -> y (M, N) row stride ldy
    int64_t N = W->shape[0];
    if (M <= 0 || N <= 0) return;
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        /* Put the bias into y first and let the GEMM accumulate onto it
         * (beta = 1): one pass over y instead of a second one afterwards. */
#pragma omp parallel for schedule(static) if (M * N > 65536)
        for (int64_t m = 0; m < M; m++) {
            float *row = y + m * ldy;
            if (accumulate)
                for (int64_t n = 0; n < N; n++) row[n] += bias[n];
            else
                memcpy(row, bias, (size_t)N * sizeof(float));
        }
        beta = 1.0f;
    }
    if (K == 0) {
        if (!bias && !accumulate)
            for (int64_t m = 0; m < M; m++) memset(y + m * ldy, 0, (size_t)N * sizeof(float));
        return;
    }
    if (W->dtype == SF_DT_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x, (int)K,
                    (const float *)W->data, (int)K, beta, y, (int)ldy);
        return;
    }
    /* BF16: widen a panel of output features (rows of W) to F32, multiply,
     * move on. The widening costs N*K element copies per call against M*N*K
     * multiply-adds, so it is noise for M in the hundreds (a batch of tokens). */
    int64_t nb = (int64_t)(SF_PANEL_BYTES / sizeof(float)) / K;
    if (nb < 16) nb = 16;
    nb = nb / 16 * 16;
    if (nb > N) nb = N;
    float *panel = sf_malloc_aligned((size_t)(nb * K) * sizeof(float));
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        int64_t cur = N - n0 < nb ? N - n0 : nb;
        sf_weight_rows_f32(W, n0, cur, panel);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)cur, (int)K, 1.0f, x, (int)K,
                    panel, (int)K, beta, y + n0, (int)ldy);
    }
    sf_free_aligned(panel);
}

void sf_patch_embed(const float *px, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p,
                    const sf_weight *w, const float *bias, float *out) {
    // px (B, C, H, W) -> cols (B*G, C*p*p) -> out (B*G, D), G = (H/p)*(W/p)
    int64_t gh = H / p, gw = W / p, G = gh * gw, Kc = C * p * p, D = w->shape[0];
    float *cols = sf_malloc_aligned((size_t)(B * G * Kc) * sizeof(float) + 64);
    /* Column order c*p*p + ky*p + kx matches a Conv2d weight (D, C, p, p)
     * flattened to (D, C*p*p), so the convolution is exactly cols @ W^T. */
#pragma omp parallel for collapse(2) schedule(static)
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
