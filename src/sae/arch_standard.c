/* Standard SAE: ReLU codes, L1 penalty weighted by decoder column norms
 * (Anthropic, "Circuits Updates, April 2024"):
 *   f = ReLU(W_enc (x - b) + b_enc),  x_hat = W_dec f + b
 *   L = mean_b ||x - x_hat||^2 + lmbda_t mean_b sum_j f_j ||W_dec[:, j]||
 * The reference multiplies f by ||W_dec|| twice before its L1; this is the
 * intended single factor (docs/architectures.md).
 * Sparse step: dL/dpre_j = dL/dz_j + lmbda_t / B ||w_j|| at the active
 * entries; the decoder gets d/dw_j lmbda_t / B sum_b f_bj ||w_j||.
 * Ghost grads (standard_ghost) for dead latents, dense step only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/dist.h"

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

/* ---------------------------------------------------------------- training -- */

/* ghost grads are dense: with them the step stays dense */
static int standard_sparse_ok(const sf_sae_train_opts *o) {
    return !o->ghost_grads;
}

/* the L1 weights (the codes) before the backward overwrites them */
static void standard_dense_l1(sae_arch_state *a) {
    sae_colsum(a->Z, a->B, a->s->n, a->cs3, a->par);
}

static void standard_entry_grads(sae_arch_state *a, int r) {
    sae_sparse_buf *sp = a->sp;
    const float l1c = (float)(a->lm / a->B);
    for (int32_t u = sp->rp[r]; u < sp->rp[r + 1]; u++) /* dL/dpre incl. the L1 x norm term */
        sp->g[u] = sae_entry_gz(a, r, u) + l1c * a->wn[sp->idx[u]];
}

static double standard_latent_grads(sae_arch_state *a, const sae_train_io *io, int j, int32_t e0,
                                    int32_t e1, float sg, float sga, float *gd) {
    const sf_sae *s = a->s;
    const int d = s->d;
    float *gbe = io->gr[sae_param_of(s, s->b_enc)];
    gbe[j] = sg + sga;
    if (a->wn[j] > 0) { /* d/dw_j of lmbda/B sum_b f_bj ||w_j|| */
        float fs = 0;
        for (int32_t u = e0; u < e1; u++)
            fs += a->sp->lval[u];
        const float c = (float)(a->lm / a->B) * fs / a->wn[j];
        const float *w = s->W_decT + (size_t)j * d;
        for (int q = 0; q < d; q++)
            gd[q] += c * w[q];
    }
    return (double)gbe[j] * gbe[j];
}

/* Ghost grads (standard; Anthropic, January 2024): dead latents' exp(pre)
 * reconstruct e = x - x_hat, rescaled per row to half of ||e|| (scale
 * detached); the MSE is rescaled to the main MSE (factor detached). Ra holds
 * x_hat - x on entry. Fills Za (B, n), Ra = dL/dg_hat (B, d) and H = dL/dP;
 * returns the ghost loss. */
static double standard_ghost(sae_arch_state *a, const uint8_t *dead) {
    sf_sae *s = a->s;
    const int B = a->B, chunk = a->chunk, par = a->par;
    const int n = s->n, d = s->d;
    /* per-row sums, added in row order below: an OpenMP reduction over a
     * dynamic schedule would depend on which thread took which chunk */
    double *rs = sf_malloc((size_t)B * 2 * sizeof(double)), raw = 0, mse = 0;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (int r = r0; r < r0 + m; r++) {
            float *za = a->Za + (size_t)r * n;
            const float *pr = a->P + (size_t)r * n;
            for (int j = 0; j < n; j++) {
                float v = pr[j] + s->b_enc[j];
                za[j] = dead[j] ? expf(v < 20.0f ? v : 20.0f) : 0.0f; /* overflow guard */
            }
        }
        sae_gemm_nn(m, d, n, a->Za + (size_t)r0 * n, n, s->W_decT, d, 0.0f, a->Ta + (size_t)r0 * d,
                    d);
        for (int r = r0; r < r0 + m; r++) {
            float *h = a->Ta + (size_t)r * d, *rr = a->Ra + (size_t)r * d;
            double hh = 0, ee = 0;
            for (int q = 0; q < d; q++) {
                hh += (double)h[q] * h[q];
                ee += (double)rr[q] * rr[q];
            }
            float sb = hh > 0 ? (float)(sqrt(ee) / (2.0 * sqrt(hh))) : 0.0f;
            float *za = a->Za + (size_t)r * n;
            for (int j = 0; j < n; j++)
                za[j] *= sb;
            double acc = 0;
            for (int q = 0; q < d; q++) {
                rr[q] += sb * h[q]; /* g_hat - e */
                acc += (double)rr[q] * rr[q];
            }
            rs[2 * r] = acc;
            rs[2 * r + 1] = ee;
        }
    }
    for (int b = 0; b < B; b++) {
        raw += rs[2 * b];
        mse += rs[2 * b + 1];
    }
    free(rs);
    /* under MPI the detached factor c = mse / raw is the global batch's
     * (docs/mpi.md); each rank's loss stays its rows' mean */
    double mse_l = mse;
    if (sf_dist_size() > 1) {
        double red[2] = {raw, mse};
        if (sf_dist_allreduce_sum_f64(red, 2)) sf_dist_abort(1, sf_errmsg());
        raw = red[0], mse = red[1];
    }
    if (!(raw > 0) || !isfinite(raw)) {
        memset(a->Za, 0, (size_t)B * n * sizeof(float));
        memset(a->H, 0, (size_t)B * n * sizeof(float));
        memset(a->Ra, 0, (size_t)B * d * sizeof(float));
        return 0;
    }
    /* L = c * raw / B with c = mse / raw detached: value mse / B, gradient c * 2/B r */
    const float sc = (float)((mse / raw) * 2.0 / B);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int r0 = 0; r0 < B; r0 += chunk) {
        int m = B - r0 < chunk ? B - r0 : chunk;
        for (size_t i = (size_t)r0 * d; i < (size_t)(r0 + m) * d; i++)
            a->Ra[i] *= sc;
        sae_gemm_nt(m, n, d, a->Ra + (size_t)r0 * d, d, s->W_decT, d, 0.0f, a->H + (size_t)r0 * n,
                    n);
        for (size_t i = (size_t)r0 * n; i < (size_t)(r0 + m) * n; i++) {
            /* d/dP of s_b exp(P + b): Za (the clamp region has zero slope) */
            size_t j = i % (size_t)n;
            float v = a->P[i] + s->b_enc[j];
            a->H[i] = (a->Za[i] > 0 && v < 20.0f) ? a->Za[i] * a->H[i] : 0.0f;
        }
    }
    return mse_l / B;
}

const sae_arch_ops sae_standard_ops = {
    .alloc = standard_alloc,
    .init = standard_init,
    .encode_row = standard_encode_row,
    .l1_norm = 1,
    .lists = 1,
    .forward_rows = sae_standard_forward,
    .backward_rows = sae_standard_backward,
    .sparse_ok = standard_sparse_ok,
    .dense_l1 = standard_dense_l1,
    .dense_dead = standard_ghost,
    .entry_grads = standard_entry_grads,
    .latent_grads = standard_latent_grads,
};
