/* Standard SAE: ReLU codes, L1 penalty weighted by decoder column norms
 * (Anthropic, "Circuits Updates, April 2024"):
 *   f = ReLU(W_enc (x - b) + b_enc),  x_hat = W_dec f + b
 *   L = mean_b ||x - x_hat||^2 + lmbda_t mean_b sum_j f_j ||W_dec[:, j]||
 * The reference multiplies f by ||W_dec|| twice before its L1; this is the
 * intended single factor (docs/architectures.md). Ghost grads live in
 * arch_common.c (ghost_term). */
#include "sae/arch_internal.h"

/* Pointers are hoisted into restrict locals throughout: read through r->
 * inside a loop that stores floats, they would be reloaded every element
 * (the store might alias them) and the loop would not vectorise. */
void sae_standard_forward(sae_arch_rows *r) {
    const int n = r->n;
    const float *restrict be = r->s->b_enc, *restrict wn = r->wn;
    for (int i = 0; i < r->m; i++) {
        const float *restrict p = r->P + (size_t)i * n;
        float *restrict z = r->Z + (size_t)i * n;
        double pen = 0;
        int32_t c = 0;
        for (int j0 = 0; j0 < n; j0 += SAE_SUM_BLOCK) {
            const int j1 = j0 + SAE_SUM_BLOCK < n ? j0 + SAE_SUM_BLOCK : n;
            float bp = 0, bc = 0;
#pragma omp simd reduction(+ : bp, bc)
            for (int j = j0; j < j1; j++) {
                float v = p[j] + be[j];
                float zj = v > 0 ? v : 0.0f;
                z[j] = zj;
                bp += zj * wn[j];
                bc += v > 0 ? 1.0f : 0.0f;
            }
            pen += bp;
            c += (int32_t)bc;
        }
        r->pen[i] = pen;
        r->cnt[i] = c;
    }
}

void sae_standard_backward(sae_arch_rows *r) {
    /* dL/dP = 1[f > 0] (dL/df + lmbda_t / B ||w_j||) */
    const int n = r->n;
    const float c = (float)(r->lmbda * r->inv_B);
    const float *restrict wn = r->wn;
    for (int i = 0; i < r->m; i++) {
        const float *restrict z = r->Z + (size_t)i * n;
        float *restrict g = r->G + (size_t)i * n;
#pragma omp simd
        for (int j = 0; j < n; j++)
            g[j] = z[j] > 0 ? g[j] + c * wn[j] : 0.0f;
    }
}
