/* Standard SAE: ReLU codes, L1 penalty weighted by decoder column norms
 * (Anthropic, "Circuits Updates, April 2024"):
 *   f = ReLU(W_enc (x - b) + b_enc),  x_hat = W_dec f + b
 *   L = mean_b ||x - x_hat||^2 + lmbda_t mean_b sum_j f_j ||W_dec[:, j]||
 * The reference multiplies f by ||W_dec|| twice before its L1; this is the
 * intended single factor (docs/architectures.md). Ghost grads live in
 * arch_common.c (ghost_term). */
#include "sae/arch_internal.h"

void sae_standard_forward(sae_arch_rows *r) {
    const int n = r->n;
    const float *be = r->s->b_enc;
    for (int i = 0; i < r->m; i++) {
        const float *p = r->P + (size_t)i * n;
        float *z = r->Z + (size_t)i * n;
        double pen = 0;
        int c = 0;
#pragma omp simd reduction(+ : pen, c)
        for (int j = 0; j < n; j++) {
            float v = p[j] + be[j];
            z[j] = v > 0 ? v : 0;
            pen += (double)z[j] * r->wn[j];
            c += v > 0;
        }
        r->pen[i] = pen;
        r->cnt[i] = c;
    }
}

void sae_standard_backward(sae_arch_rows *r) {
    /* dL/dP = 1[f > 0] (dL/df + lmbda_t / B ||w_j||) */
    const int n = r->n;
    const float c = (float)(r->lmbda * r->inv_B);
    for (int i = 0; i < r->m; i++) {
        const float *z = r->Z + (size_t)i * n;
        float *g = r->G + (size_t)i * n;
        for (int j = 0; j < n; j++)
            g[j] = z[j] > 0 ? g[j] + c * r->wn[j] : 0.0f;
    }
}
