/* Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary learning with
 * gated sparse autoencoders"). One encoder matrix W, two paths:
 *   pi_gate = W (x - b_dec) + gate_bias
 *   pi_mag  = exp(r_mag) * W (x - b_dec) + mag_bias
 *   f = 1[pi_gate > 0] * ReLU(pi_mag),  x_hat = W_dec f + b_dec
 *   L = mean ||x - x_hat||^2 + lmbda_t mean sum_j ReLU(pi_gate)_j ||W_dec[:, j]||
 *       + mean ||x - (W_dec' ReLU(pi_gate) + b_dec')||^2
 * where W_dec', b_dec' are a frozen copy (no gradient into the decoder from
 * the auxiliary term; the gate path gets the gradient the Heaviside cannot
 * give it). */
#include <math.h>
#include <stdlib.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"

static int gated_alloc(sf_sae *s) {
    sae_alloc_core(s);
    s->r_mag = sae_zalloc((size_t)s->n);
    s->b_mag = sae_zalloc((size_t)s->n);
    sae_add_param(s, "decoder_bias", s->b_dec, 1, s->d, 1, 0, 0);
    sae_add_param(s, "encoder.weight", s->W_enc, 2, s->n, s->d, 0, 1);
    sae_add_param(s, "r_mag", s->r_mag, 1, s->n, 1, 0, 1);
    sae_add_param(s, "gate_bias", s->b_enc, 1, s->n, 1, 0, 1);
    sae_add_param(s, "mag_bias", s->b_mag, 1, s->n, 1, 0, 1);
    sae_add_param(s, "decoder.weight", s->W_decT, 2, s->d, s->n, 1, 1);
    return 0;
}

/* f = 1[pre + gate_bias > 0] ReLU(exp(r_mag) pre + mag_bias) */
static int gated_encode_row(const sf_sae *s, const float *pre, int cap, int32_t *ix, float *vl) {
    int c = 0;
    for (int j = 0; j < s->n && c < cap; j++) {
        if (!(pre[j] + s->b_enc[j] > 0)) continue;
        float m = expf(s->r_mag[j]) * pre[j] + s->b_mag[j];
        if (m > 0) {
            ix[c] = j;
            vl[c++] = m;
        }
    }
    return c;
}

void sae_gated_forward(sae_arch_rows *r) {
    const sf_sae *s = r->s;
    const int n = r->n;
    const float *restrict er = r->ex;
    const float *restrict be = s->b_enc, *restrict bm = s->b_mag, *restrict wn = r->wn;
    for (int i = 0; i < r->m; i++) {
        const float *restrict p = r->P + (size_t)i * n;
        float *restrict z = r->Z + (size_t)i * n, *restrict a = r->A + (size_t)i * n;
        double pen = 0;
        int32_t c = 0;
        for (int j0 = 0; j0 < n; j0 += SAE_SUM_BLOCK) {
            const int j1 = j0 + SAE_SUM_BLOCK < n ? j0 + SAE_SUM_BLOCK : n;
            float bp = 0, bc = 0;
#pragma omp simd reduction(+ : bp, bc)
            for (int j = j0; j < j1; j++) {
                float pg = p[j] + be[j], pm = er[j] * p[j] + bm[j];
                float aj = pg > 0 ? pg : 0.0f;
                a[j] = aj;
                z[j] = (pg > 0 && pm > 0) ? pm : 0.0f;
                bp += aj * wn[j];
                bc += pg > 0 ? 1.0f : 0.0f;
            }
            pen += bp;
            c += (int32_t)bc;
        }
        r->pen[i] = pen;
        r->cnt[i] = c;
    }
}

/* In: G = dL/df (reconstruction), GA = dL/dReLU(pi_gate) (aux). Out:
 * G = dL/dP, H = dL/dpi_mag, A = dL/dpi_gate, E = dL/dpi_mag * P. */
void sae_gated_backward(sae_arch_rows *r) {
    const sf_sae *s = r->s;
    const int n = r->n;
    const float c = (float)(r->lmbda * r->inv_B);
    const float *restrict er = r->ex;
    const float *restrict be = s->b_enc, *restrict bm = s->b_mag, *restrict wn = r->wn;
    for (int i = 0; i < r->m; i++) {
        const size_t o = (size_t)i * n;
        const float *restrict p = r->P + o, *restrict ga = r->GA + o;
        float *restrict g = r->G + o, *restrict h = r->H + o, *restrict a = r->A + o,
                        *restrict e = r->E + o;
#pragma omp simd
        for (int j = 0; j < n; j++) {
            float pg = p[j] + be[j], pm = er[j] * p[j] + bm[j];
            float gm = (pg > 0 && pm > 0) ? g[j] : 0.0f;
            float gg = pg > 0 ? ga[j] + c * wn[j] : 0.0f;
            h[j] = gm;
            e[j] = gm * p[j];
            a[j] = gg;
            g[j] = gg + er[j] * gm;
        }
    }
}

const sae_arch_ops sae_gated_ops = {
    .alloc = gated_alloc,
    .encode_row = gated_encode_row,
};
