/* Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary learning with
 * gated sparse autoencoders"). One encoder matrix W, two paths:
 *   pi_gate = W (x - b_dec) + gate_bias
 *   pi_mag  = exp(r_mag) * W (x - b_dec) + mag_bias
 *   f = 1[pi_gate > 0] * ReLU(pi_mag),  x_hat = W_dec f + b_dec
 *   L = mean ||x - x_hat||^2 + lmbda_t mean sum_j ReLU(pi_gate)_j ||W_dec[:, j]||
 *       + mean ||x - (W_dec' ReLU(pi_gate) + b_dec')||^2
 * where W_dec', b_dec' are a frozen copy (no gradient into the decoder from
 * the auxiliary term; the gate path gets the gradient the Heaviside cannot
 * give it).
 * Training: the auxiliary reconstruction runs per row chunk (dense step,
 * two GEMMs) or per row from the open gates (sparse step); the gate path
 * gets dL/dpi_gate = 1[pi_gate > 0] (dL/dReLU(pi_gate) + lmbda_t / B ||w||),
 * the magnitude path dL/dpi_mag = 1[f > 0] dL/df, and
 * dL/dr_mag = exp(r_mag) sum_b dL/dpi_mag P. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

/* ---------------------------------------------------------------- training -- */

static void gated_step_begin(sae_arch_state *a) {
    for (int j = 0; j < a->s->n; j++)
        a->ex[j] = expf(a->s->r_mag[j]);
}

static int gated_sparse_ok(const sf_sae_train_opts *o) {
    (void)o;
    return 1;
}

/* entries: the open gates (they carry the aux and L1 gradient) */
static int32_t gated_row_entries(const sae_arch_state *a, int b, const float *z, int32_t *idx,
                                 float *val) {
    const int n = a->s->n;
    return sae_row_entries(n, a->A + (size_t)b * n, z, NULL, NULL, NULL, 0, idx, val);
}

/* Dense step, rows [r0, r0 + m): x_hat_aux = ReLU(gate) W_dec + b_dec through
 * the frozen decoder; Ta = 2/B (x_hat_aux - x), GA = dL/dReLU(gate). */
static void gated_dense_aux(sae_arch_state *a, const float *x, int r0, int m) {
    const sf_sae *s = a->s;
    const int d = s->d, n = s->n;
    const size_t zo = (size_t)r0 * n, xo = (size_t)r0 * d;
    float *ta = a->Ta + xo;
    for (int r = 0; r < m; r++)
        memcpy(ta + (size_t)r * d, s->b_dec, (size_t)d * sizeof(float));
    sae_gemm_nn(m, d, n, a->A + zo, n, s->W_decT, d, 1.0f, ta, d);
    for (int r = r0; r < r0 + m; r++) {
        float *t = a->Ta + (size_t)r * d;
        const float *xr = x + (size_t)r * d;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int q = 0; q < d; q++) {
            double df = (double)t[q] - xr[q];
            acc += df * df;
            t[q] = 2.0f * a->invB * (t[q] - xr[q]);
        }
        a->rowst[(size_t)r * RS_N + RS_AUX] += acc; /* gated: recon + aux recon */
    }
    sae_gemm_nt(m, n, d, ta, d, s->W_decT, d, 0.0f, a->GA + zo, n);
}

/* the L1 weights ReLU(gate) before the backward overwrites them */
static void gated_dense_l1(sae_arch_state *a) {
    sae_colsum(a->A, a->B, a->s->n, a->cs3, a->par);
}

/* backward left G = dL/dP, H = dL/dmag, A = dL/dgate, E = dL/dmag * P */
static void gated_dense_param_grads(sae_arch_state *a, const sae_train_io *io) {
    const sf_sae *s = a->s;
    const int n = s->n, B = a->B, par = a->par;
    float *gbe = io->gr[sae_param_of(s, s->b_enc)], *gbm = io->gr[sae_param_of(s, s->b_mag)],
          *grm = io->gr[sae_param_of(s, s->r_mag)];
    sae_colsum(a->A, B, n, a->cs, par);
    for (int j = 0; j < n; j++)
        gbe[j] = (float)a->cs[j];
    sae_colsum(a->H, B, n, a->cs2, par);
    for (int j = 0; j < n; j++)
        gbm[j] = (float)a->cs2[j];
    sae_colsum(a->E, B, n, a->cs2, par);
    for (int j = 0; j < n; j++)
        grm[j] = (float)(expf(s->r_mag[j]) * a->cs2[j]);
}

/* Sparse step, row r: the aux reconstruction from the open gates -> Ta =
 * 2/B (x_hat_aux - x); returns ||x_hat_aux - x||^2. */
static double gated_row_aux(sae_arch_state *a, const float *xr, int r) {
    const sf_sae *s = a->s;
    const sae_sparse_buf *sp = a->sp;
    const int d = s->d, n = s->n;
    float *ta = a->Ta + (size_t)r * d;
    memcpy(ta, s->b_dec, (size_t)d * sizeof(float));
    for (int32_t u = sp->rp[r]; u < sp->rp[r + 1]; u++) {
        const float av = a->A[(size_t)r * n + sp->idx[u]];
        const float *w = s->W_decT + (size_t)sp->idx[u] * d;
#pragma omp simd
        for (int q = 0; q < d; q++)
            ta[q] += av * w[q];
    }
    double acc = 0;
    for (int q = 0; q < d; q++) {
        double df = (double)ta[q] - xr[q];
        acc += df * df;
        ta[q] = 2.0f * a->invB * (ta[q] - xr[q]);
    }
    return acc;
}

/* per entry: h = dL/dpi_gate, h2 = dL/dpi_mag, g = dL/dP (both paths) */
static void gated_entry_grads(sae_arch_state *a, int r) {
    const sf_sae *s = a->s;
    sae_sparse_buf *sp = a->sp;
    const int d = s->d, n = s->n;
    const float l1c = (float)(a->lm / a->B);
    for (int32_t u = sp->rp[r]; u < sp->rp[r + 1]; u++) {
        const int j = sp->idx[u];
        const float gz = sae_entry_gz(a, r, u);
        const float er = expf(s->r_mag[j]), pre = a->P[(size_t)r * n + j];
        const float ga = sae_dot(s->W_decT + (size_t)j * d, a->Ta + (size_t)r * d, d);
        const float gm = er * pre + s->b_mag[j] > 0 ? gz : 0.0f;
        const float gg = ga + l1c * a->wn[j];
        sp->h[u] = gg;
        sp->h2[u] = gm;
        sp->g[u] = gg + er * gm;
    }
}

static double gated_latent_grads(sae_arch_state *a, const sae_train_io *io, int j, int32_t e0,
                                 int32_t e1, float sg, float sga, float *gd) {
    (void)sg;
    (void)sga;
    const sf_sae *s = a->s;
    const sae_sparse_buf *sp = a->sp;
    const int d = s->d, n = s->n;
    float *gbe = io->gr[sae_param_of(s, s->b_enc)], *gbm = io->gr[sae_param_of(s, s->b_mag)],
          *grm = io->gr[sae_param_of(s, s->r_mag)];
    float gate_g = 0, mag_g = 0, rmag_g = 0, fs = 0;
    for (int32_t u = e0; u < e1; u++) {
        const int32_t e = sp->lent[u];
        const size_t pj = (size_t)sp->lrow[u] * n + j;
        gate_g += sp->h[e];
        mag_g += sp->h2[e];
        rmag_g += sp->h2[e] * a->P[pj];
        fs += a->A[pj]; /* the L1 weight f = ReLU(gate) */
    }
    gbm[j] = mag_g;
    grm[j] = expf(s->r_mag[j]) * rmag_g;
    gbe[j] = gate_g;    /* the gate path carries the encoder bias */
    if (a->wn[j] > 0) { /* d/dw_j of lmbda/B sum_b ReLU(gate)_bj ||w_j|| */
        const float c = (float)(a->lm / a->B) * fs / a->wn[j];
        const float *w = s->W_decT + (size_t)j * d;
        for (int q = 0; q < d; q++)
            gd[q] += c * w[q];
    }
    double ss = (double)gbe[j] * gbe[j];
    ss += (double)mag_g * mag_g + (double)grm[j] * grm[j];
    return ss;
}

const sae_arch_ops sae_gated_ops = {
    .alloc = gated_alloc,
    .encode_row = gated_encode_row,
    .l1_norm = 1,
    .dense_extra = 1,
    .aux_in_rec = 1,
    .step_begin = gated_step_begin,
    .forward_rows = sae_gated_forward,
    .backward_rows = sae_gated_backward,
    .sparse_ok = gated_sparse_ok,
    .row_entries = gated_row_entries,
    .dense_aux = gated_dense_aux,
    .dense_l1 = gated_dense_l1,
    .dense_param_grads = gated_dense_param_grads,
    .row_aux = gated_row_aux,
    .entry_grads = gated_entry_grads,
    .latent_grads = gated_latent_grads,
};
