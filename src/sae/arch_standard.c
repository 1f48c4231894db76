/* Standard SAE: ReLU codes, L1 penalty weighted by decoder column norms
 * (Anthropic, "Circuits Updates, April 2024"):
 *   f = ReLU(W_enc (x - b) + b_enc),  x_hat = W_dec f + b
 *   L = mean_b ||x - x_hat||^2 + lmbda_t mean_b sum_j f_j ||W_dec[:, j]||
 * The reference multiplies f by ||W_dec|| twice before its L1; this is the
 * intended single factor (docs/architectures.md). Ghost grads live in
 * arch_common.c (ghost_term). */
#include <math.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"

static int standard_alloc(sf_sae *s) {
    sae_alloc_core(s);
    sae_add_linear_params(s);
    return 0;
}

/* reference StandardSAE: decoder ~ N(0, 1) with unit columns, encoder as nn.Linear */
static void standard_init(sf_sae *s, uint64_t seed) {
    const int n = s->n, d = s->d;
    sf_rng r;
    sf_rng_seed(&r, seed ^ 0x5354414e44415244ull);
    for (size_t i = 0; i < (size_t)n * d; i++)
        s->W_decT[i] = sf_rng_normal(&r);
    for (int j = 0; j < n; j++) {
        float *w = s->W_decT + (size_t)j * d;
        double ss = 0;
        for (int q = 0; q < d; q++)
            ss += (double)w[q] * w[q];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int q = 0; q < d; q++)
            w[q] *= inv;
    }
}

/* f = ReLU(pre + b_enc) */
static int standard_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl) {
    int c = 0;
    for (int j = 0; j < s->n && c < cap; j++) {
        float v = pre[j] + s->b_enc[j];
        if (v > 0) {
            ix[c] = j;
            vl[c++] = v;
        }
    }
    return c;
}

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

const sae_arch_ops sae_standard_ops = {
    .alloc = standard_alloc,
    .init = standard_init,
    .encode_row = standard_encode_row,
};
