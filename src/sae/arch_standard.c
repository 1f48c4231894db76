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
        double pen = 0, c = 0; /* c counts in double: gcc 12 does not vectorise a
                                * loop reducing an int and a double together */
#pragma omp simd reduction(+ : pen, c)
        for (int j = 0; j < n; j++) {
            float v = p[j] + be[j];
            float zj = v > 0 ? v : 0.0f;
            z[j] = zj;
            pen += (double)zj * wn[j];
            c += v > 0 ? 1.0 : 0.0;
        }
        r->pen[i] = pen;
        r->cnt[i] = (int32_t)c;
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
