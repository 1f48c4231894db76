/* JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping ahead"):
 *   pi = W_enc (x - b) + b_enc,  theta = exp(logthres)
 *   f = pi * H(pi - theta),  x_hat = W_dec f + b
 *   L = mean ||x - x_hat||^2 + lmbda_t mean sum_j H(pi_j - theta_j)      (L0)
 * Straight-through estimator with a rectangle kernel K(u) = 1[|u| < 1/2] of
 * width eps = --bandwidth, as the paper:
 *   d f / d theta := -(theta / eps) K((pi - theta) / eps),  d f / d pi = H(pi - theta)
 *   d H / d theta := -(1 / eps) K((pi - theta) / eps),      d H / d pi = 0
 * and d theta / d logthres = theta. The step is applied to the
 * pre-activation pi (the reference applies it to the post-jump value).
 * Training: dL/dlogthres = theta sum_b (-(theta / eps) dL/df - lmbda_t / (B eps))
 * K((pi - theta) / eps); the sparse step's entries are the active latents
 * plus the inactive ones inside the window (threshold gradient only). */
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

/* ---------------------------------------------------------------- training -- */

static void jumprelu_step_begin(sae_arch_state *a) {
    for (int j = 0; j < a->s->n; j++)
        a->ex[j] = expf(a->s->logthres[j]);
}

static int jumprelu_sparse_ok(const sf_sae_train_opts *o) {
    (void)o;
    return 1;
}

/* entries: the active latents and those inside the STE window */
static int32_t jumprelu_row_entries(const sae_arch_state *a, int b, const float *z, int32_t *idx,
                                    float *val) {
    const int n = a->s->n;
    return sae_row_entries(n, NULL, z, a->P + (size_t)b * n, a->s->b_enc, a->ex,
                           0.5f * (float)a->o->bandwidth, idx, val);
}

/* backward left G = dL/dP, H = dL/dlogthres per (row, latent) */
static void jumprelu_dense_param_grads(sae_arch_state *a, const sae_train_io *io) {
    const sf_sae *s = a->s;
    const int n = s->n;
    float *gbe = io->gr[sae_param_of(s, s->b_enc)], *glt = io->gr[sae_param_of(s, s->logthres)];
    for (int j = 0; j < n; j++)
        gbe[j] = (float)a->cs[j];
    sae_colsum(a->H, a->B, n, a->cs2, a->par);
    for (int j = 0; j < n; j++)
        glt[j] = (float)a->cs2[j];
}

/* per entry: g = dL/dpi (active only), h = dL/dlogthres (in the window) */
static void jumprelu_entry_grads(sae_arch_state *a, int r) {
    const sf_sae *s = a->s;
    sae_sparse_buf *sp = a->sp;
    const int n = s->n;
    const float eps = (float)a->o->bandwidth, half = 0.5f * eps;
    const float l0c = (float)(a->lm / a->B) / eps;
    for (int32_t u = sp->rp[r]; u < sp->rp[r + 1]; u++) {
        const int j = sp->idx[u];
        const float gz = sae_entry_gz(a, r, u);
        const float t = a->ex[j], v = a->P[(size_t)r * n + j] + s->b_enc[j];
        sp->h[u] = fabsf(v - t) < half ? t * (-(t / eps) * gz - l0c) : 0.0f;
        sp->g[u] = sp->val[u] > 0 ? gz : 0.0f;
    }
}

static double jumprelu_latent_grads(sae_arch_state *a, const sae_train_io *io, int j, int32_t e0,
                                    int32_t e1, float sg, float sga, float *gd) {
    (void)gd;
    const sf_sae *s = a->s;
    float *gbe = io->gr[sae_param_of(s, s->b_enc)], *glt = io->gr[sae_param_of(s, s->logthres)];
    float gth = 0;
    for (int32_t u = e0; u < e1; u++)
        gth += a->sp->h[a->sp->lent[u]];
    glt[j] = gth;
    gbe[j] = sg + sga;
    double ss = (double)gbe[j] * gbe[j];
    ss += (double)glt[j] * glt[j];
    return ss;
}

const sae_arch_ops sae_jumprelu_ops = {
    .alloc = jumprelu_alloc,
    .init = jumprelu_init,
    .encode_row = jumprelu_encode_row,
    .lists = 1,
    .step_begin = jumprelu_step_begin,
    .forward_rows = sae_jumprelu_forward,
    .backward_rows = sae_jumprelu_backward,
    .sparse_ok = jumprelu_sparse_ok,
    .row_entries = jumprelu_row_entries,
    .dense_param_grads = jumprelu_dense_param_grads,
    .entry_grads = jumprelu_entry_grads,
    .latent_grads = jumprelu_latent_grads,
};
