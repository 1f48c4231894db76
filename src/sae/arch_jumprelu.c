/* JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping ahead"):
 *   pi = W_enc (x - b) + b_enc,  theta = exp(logthres)
 *   f = pi * H(pi - theta),  x_hat = W_dec f + b
 *   L = mean ||x - x_hat||^2 + lmbda_t mean sum_j H(pi_j - theta_j)      (L0)
 * Straight-through estimator with a rectangle kernel K(u) = 1[|u| < 1/2] of
 * width eps = --bandwidth, as the paper:
 *   d f / d theta := -(theta / eps) K((pi - theta) / eps),  d f / d pi = H(pi - theta)
 *   d H / d theta := -(1 / eps) K((pi - theta) / eps),      d H / d pi = 0
 * and d theta / d logthres = theta. The step is applied to the
 * pre-activation pi (the reference applies it to the post-jump value). */
#include <math.h>
#include <stdlib.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"

static int jumprelu_alloc(sf_sae *s) {
    sae_alloc_core(s);
    s->logthres = sae_zalloc((size_t)s->n);
    sae_add_param(s, "bias", s->b_dec, 1, s->d, 1, 0, 0);
    sae_add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
    sae_add_param(s, "encoder.bias", s->b_enc, 1, s->n, 1, 0, 1);
    sae_add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
    sae_add_param(s, "logthres", s->logthres, 1, s->n, 1, 0, 1);
    return 0;
}

static void jumprelu_init(sf_sae *s, uint64_t seed) {
    (void)seed;
    for (int j = 0; j < s->n; j++)
        s->logthres[j] = logf(0.001f); /* the default initial threshold */
}

/* f = v 1[v > theta], v = pre + b_enc */
static int jumprelu_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl) {
    int c = 0;
    for (int j = 0; j < s->n && c < cap; j++) {
        float v = pre[j] + s->b_enc[j];
        if (v > expf(s->logthres[j]) && v > 0) {
            ix[c] = j;
            vl[c++] = v;
        }
    }
    return c;
}

void sae_jumprelu_forward(sae_arch_rows *r) {
    const sf_sae *s = r->s;
    const int n = r->n;
    const float half = 0.5f * (float)r->o->bandwidth;
    const float *restrict th = r->ex;
    const float *restrict be = s->b_enc;
    for (int i = 0; i < r->m; i++) {
        const float *restrict p = r->P + (size_t)i * n;
        float *restrict z = r->Z + (size_t)i * n;
        int32_t l0 = 0, c = 0;
        for (int j0 = 0; j0 < n; j0 += SAE_SUM_BLOCK) {
            const int j1 = j0 + SAE_SUM_BLOCK < n ? j0 + SAE_SUM_BLOCK : n;
            float bl = 0, bc = 0;
#pragma omp simd reduction(+ : bl, bc)
            for (int j = j0; j < j1; j++) {
                float v = p[j] + be[j];
                z[j] = v > th[j] ? v : 0.0f;
                bl += v > th[j] ? 1.0f : 0.0f;
                bc += (v > th[j] || fabsf(v - th[j]) < half) ? 1.0f : 0.0f; /* sparse entries */
            }
            l0 += (int32_t)bl;
            c += (int32_t)bc;
        }
        r->pen[i] = l0;
        r->cnt[i] = c;
    }
}

/* In: G = dL/df. Out: G = dL/dpi (= dL/dP), H = dL/dlogthres per entry. */
void sae_jumprelu_backward(sae_arch_rows *r) {
    const sf_sae *s = r->s;
    const int n = r->n;
    const float eps = (float)r->o->bandwidth, half = 0.5f * eps;
    const float c0 = (float)(r->lmbda * r->inv_B) / eps;
    const float *restrict th = r->ex;
    const float *restrict be = s->b_enc;
    for (int i = 0; i < r->m; i++) {
        const size_t o = (size_t)i * n;
        const float *restrict p = r->P + o;
        float *restrict g = r->G + o, *restrict h = r->H + o;
#pragma omp simd
        for (int j = 0; j < n; j++) {
            float v = p[j] + be[j], t = th[j];
            h[j] = fabsf(v - t) < half ? t * (-(t / eps) * g[j] - c0) : 0.0f;
            g[j] = v > t ? g[j] : 0.0f;
        }
    }
}

const sae_arch_ops sae_jumprelu_ops = {
    .alloc = jumprelu_alloc,
    .init = jumprelu_init,
    .encode_row = jumprelu_encode_row,
};
