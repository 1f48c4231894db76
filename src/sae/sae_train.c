/* One training step: sparse forward/backward (per architecture), then the
 * shared part: gradient clipping, AdamW, decoder renormalisation.
 *
 * TopK step for a batch x (B, d), shapes llm.c-style:
 *  A  per row chunk (parallel):  xc = x - b                      (m, d)
 *                                pre = xc W_enc^T                (m, n)  sgemm
 *                                (idx, z) = TopK(ReLU(pre + b_enc))  (m, k)
 *                                x_hat = b + sum_s z_s W_decT[idx_s]     (d)
 *                                gx = 2/B (x_hat - x)            dL/dx_hat (d)
 *                                gz_s = <W_decT[idx_s], gx>      dL/dpre at the k slots
 *                                (AuxK: aux selection among dead latents, e_hat)
 *  B  column sums of gx (-> grad of b, mean residual for AuxK), AuxK scale
 *  C  bucket the (row, slot) entries by latent, rows ascending
 *  D  per latent j (parallel): gW_enc[j] = sum gz * xc[row]
 *                              gW_decT[j] = sum z * gx[row]
 *                              gb_enc[j]  = sum gz
 *     gb = sum_rows gx - sum_j gb_enc_main[j] W_enc[j]
 *  E  clip by the global norm, AdamW per latent row (+ renormalise W_decT[j])
 * Only the k (+ aux_k) selected latents of each row are touched after the GEMM.
 * Every reduction has a fixed order independent of the thread count.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sae/arch_internal.h"
#include "sae/prefilter.h"
#include "sae/sae_internal.h"
#include "saeflow/dist.h"
#include "saeflow/sae_train.h"

#define LBLK 64 /* latents per block in the per-latent pass (fixed: determinism) */
/* Streaming stores only pay off when the parameters are far larger than the
 * caches; below this many floats per matrix, normal stores keep them cached
 * for the next step. SAEFLOW_ADAM_STREAM_MIN overrides it (tests: 0 streams
 * every eligible span, and must give the same bits). */
#define ADAM_STREAM_MIN ((size_t)1 << 22)

/* per-row statistics for the metrics: ||x_hat - x||^2, ||x||^2, <x, x_hat>, ||x_hat||^2, sum z */
enum { ST_SQERR, ST_X2, ST_XXH, ST_XH2, ST_L1, ST_N };

struct sf_sae_trainer {
    sf_sae *s;
    sf_sae_train_opts o;
    int max_batch;
    int64_t steps;
    float *gr[SF_SAE_MAX_PARAMS]; /* gradients, same layout as params */
    float *m1[SF_SAE_MAX_PARAMS], *m2[SF_SAE_MAX_PARAMS];
    int dec_param;     /* index of the decoder in params (normalise) */
    size_t stream_min; /* Adam: streaming stores for matrices of at least this many floats */
    /* batch buffers */
    float *xc, *gx, *r;   /* (B, d) */
    int32_t *idx, *cnt;   /* (B, k), (B) */
    float *val, *gz;      /* (B, k) */
    int aux_cap;          /* aux_k buffers allocated */
    int32_t *aidx, *acnt; /* (B, aux_k), (B) */
    float *aval, *agz;    /* (B, aux_k) */
    double *rowst;        /* (B, ST_N) */
    double *colsum;       /* (d) column sums of gx */
    float **pre;          /* per thread (chunk, n) pre-activations (int32 with the pre-filter) */
    sae_pf *pf;           /* int16 pre-filter state (prefilter.c), NULL until used */
    int enc_param;        /* index of W_enc in params */
    int pf_last;          /* the last gradient went through the pre-filter */
    int pf_in_step;       /* inside sf_sae_trainer_step's gradient */
    int pf_fresh;         /* AdamW re-quantised W_enc into pf for step pf_stamp */
    int64_t pf_stamp;
    int n_pre, pre_rows;
    float *rowbuf; /* (T, 2 * dpad) per-thread gradient rows being summed */
    int rowbuf_T;
    /* bucketing by latent */
    int32_t *off, *aoff;     /* (n + 1) */
    int32_t *e_row, *ae_row; /* entries */
    float *e_z, *e_g, *ae_z, *ae_g;
    int32_t *cnt_t;           /* (T, n) per row-range counts */
    uint8_t *has_grad, *dead; /* (n) */
    uint8_t *fired;           /* (n) latent fired in this step's batch (all ranks) */
    int64_t *since;           /* (n) */
    double *lat_ss;           /* (n) */
    float *gb_part;           /* (n / LBLK + 1, d) */
    double grad_ss;
    sf_sae_timing tm;
    sae_arch_state *arch;    /* other architectures (arch_train.c) */
    float *xs;               /* (B, d) input times s->input_scale */
    const sf_sae_data *data; /* resampling pool source (sf_sae_trainer_set_data) */
};

void sf_sae_trainer_set_data(sf_sae_trainer *t, const sf_sae_data *D) {
    t->data = D;
}

void sf_sae_train_opts_default(sf_sae_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->lr = 5e-5;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->wd = 0.0;
    o->lr_warmup_steps = 256;
    o->clip = 1.0;
    o->normalise = 0;
    o->auxk_coef = 1.0 / 32;
    o->aux_k = 512;
    o->bodycount = 16384;
    o->lmbda = 0.01;
    o->lmbda_warmup_steps = 256;
    o->bandwidth = 0.001;
    o->threshold_decay = 0.99;
    o->resample_pool = 65536;
}

sf_sae_trainer *sf_sae_trainer_new(sf_sae *s, const sf_sae_train_opts *o, int max_batch) {
    if (max_batch <= 0) {
        sf_error("batch size must be positive, got %d", max_batch);
        return NULL;
    }
    sf_sae_trainer *t = sf_calloc(1, sizeof *t);
    t->s = s;
    t->o = *o;
    if (t->o.aux_k > s->n) t->o.aux_k = s->n;
    t->max_batch = max_batch;
    t->dec_param = -1;
    t->enc_param = -1;
    const char *sm = getenv("SAEFLOW_ADAM_STREAM_MIN");
    t->stream_min = sm && *sm ? (size_t)strtoull(sm, NULL, 10) : ADAM_STREAM_MIN;
    for (int i = 0; i < s->n_params; i++) {
        size_t bytes = s->params[i].numel * sizeof(float);
        t->gr[i] = sf_malloc_aligned(bytes);
        t->m1[i] = sf_malloc_aligned(bytes);
        t->m2[i] = sf_malloc_aligned(bytes);
        memset(t->gr[i], 0, bytes);
        memset(t->m1[i], 0, bytes);
        memset(t->m2[i], 0, bytes);
        if (s->params[i].data == s->W_decT) t->dec_param = i;
        if (s->params[i].data == s->W_enc) t->enc_param = i;
    }
    /* the TopK buffers below are (B, k); other architectures keep their own */
    const size_t B = (size_t)max_batch, d = (size_t)s->d, n = (size_t)s->n,
                 k = s->arch == SF_SAE_TOPK ? (size_t)s->k : 1;
    t->xc = sf_malloc_aligned(B * d * sizeof(float));
    t->gx = sf_malloc_aligned(B * d * sizeof(float));
    t->idx = sf_malloc(B * k * sizeof(int32_t));
    t->val = sf_malloc(B * k * sizeof(float));
    t->gz = sf_malloc(B * k * sizeof(float));
    t->cnt = sf_calloc(B, sizeof(int32_t));
    t->rowst = sf_calloc(B * ST_N, sizeof(double));
    t->colsum = sf_calloc(d, sizeof(double));
    t->off = sf_calloc(n + 1, sizeof(int32_t));
    t->aoff = sf_calloc(n + 1, sizeof(int32_t));
    t->e_row = sf_malloc(B * k * sizeof(int32_t));
    t->e_z = sf_malloc(B * k * sizeof(float));
    t->e_g = sf_malloc(B * k * sizeof(float));
    t->has_grad = sf_calloc(n, 1);
    t->dead = sf_calloc(n, 1);
    t->fired = sf_calloc(n, 1);
    t->since = sf_calloc(n, sizeof(int64_t));
    t->lat_ss = sf_calloc(n, sizeof(double));
    t->gb_part = sf_malloc_aligned((n / LBLK + 1) * d * sizeof(float));
    if (s->arch != SF_SAE_TOPK && !(t->arch = sae_arch_state_new(s, &t->o, max_batch))) {
        sf_sae_trainer_free(t);
        return NULL;
    }
    return t;
}

static void free_aux(sf_sae_trainer *t) {
    sf_free_aligned(t->r);
    free(t->aidx);
    free(t->acnt);
    free(t->aval);
    free(t->agz);
    free(t->ae_row);
    free(t->ae_z);
    free(t->ae_g);
    t->r = NULL;
    t->aidx = t->acnt = t->ae_row = NULL;
    t->aval = t->agz = t->ae_z = t->ae_g = NULL;
    t->aux_cap = 0;
}

void sf_sae_trainer_free(sf_sae_trainer *t) {
    if (!t) return;
    for (int i = 0; i < SF_SAE_MAX_PARAMS; i++) {
        sf_free_aligned(t->gr[i]);
        sf_free_aligned(t->m1[i]);
        sf_free_aligned(t->m2[i]);
    }
    sf_free_aligned(t->xc);
    sf_free_aligned(t->gx);
    free(t->idx);
    free(t->val);
    free(t->gz);
    free(t->cnt);
    free(t->rowst);
    free(t->colsum);
    free(t->off);
    free(t->aoff);
    free(t->e_row);
    free(t->e_z);
    free(t->e_g);
    free(t->cnt_t);
    free(t->has_grad);
    free(t->dead);
    free(t->fired);
    free(t->since);
    free(t->lat_ss);
    sf_free_aligned(t->gb_part);
    sf_free_aligned(t->rowbuf);
    for (int i = 0; i < t->n_pre; i++)
        sf_free_aligned(t->pre[i]);
    free(t->pre);
    sae_pf_free(t->pf);
    free_aux(t);
    sae_arch_state_free(t->arch);
    sf_free_aligned(t->xs);
    free(t);
}

const float *sf_sae_trainer_grad_of(const sf_sae_trainer *t, int param) {
    return (param >= 0 && param < t->s->n_params) ? t->gr[param] : NULL;
}
int64_t *sf_sae_trainer_since_fired(sf_sae_trainer *t) {
    return t->since;
}
void sf_sae_trainer_model_changed(sf_sae_trainer *t) {
    t->pf_fresh = 0;
}

int64_t sf_sae_trainer_steps(const sf_sae_trainer *t) {
    return t->steps;
}
const sf_sae_timing *sf_sae_trainer_timing(const sf_sae_trainer *t) {
    return &t->tm;
}

static void ensure_aux(sf_sae_trainer *t) {
    if (t->aux_cap == t->o.aux_k) return;
    free_aux(t);
    const size_t B = (size_t)t->max_batch, a = (size_t)t->o.aux_k, d = (size_t)t->s->d;
    t->aux_cap = t->o.aux_k;
    t->r = sf_malloc_aligned(B * d * sizeof(float));
    t->aidx = sf_malloc(B * a * sizeof(int32_t));
    t->acnt = sf_calloc(B, sizeof(int32_t));
    t->aval = sf_malloc(B * a * sizeof(float));
    t->agz = sf_malloc(B * a * sizeof(float));
    t->ae_row = sf_malloc(B * a * sizeof(int32_t));
    t->ae_z = sf_malloc(B * a * sizeof(float));
    t->ae_g = sf_malloc(B * a * sizeof(float));
}

/* Sorts the (row, slot) entries of B rows by latent, rows ascending within a
 * latent. Rows are split into T ranges counted in parallel; range t's entries
 * of latent j follow those of ranges < t, so the result is the serial order
 * whatever T is. */
static void bucket(sf_sae_trainer *t, int B, int kk, const int32_t *idx, const int32_t *cnt,
                   const float *z, const float *g, int32_t *off, int32_t *e_row, float *e_z,
                   float *e_g, int par) {
    const int n = t->s->n;
    const int T = omp_get_max_threads();
    if (!t->cnt_t || t->cnt_t[0] != T) {
        free(t->cnt_t);
        t->cnt_t = sf_calloc((size_t)T * n + 1, sizeof(int32_t));
        t->cnt_t[0] = T; /* header slot; counts start at +1 */
    }
    int32_t *ct = t->cnt_t + 1;
#pragma omp parallel num_threads(T) if (par)
    {
        int th = omp_get_thread_num(), nt = omp_get_num_threads();
        int r0 = (int)((int64_t)B * th / nt), r1 = (int)((int64_t)B * (th + 1) / nt);
        int32_t *c = ct + (size_t)th * n;
        memset(c, 0, (size_t)n * sizeof(int32_t));
        for (int b = r0; b < r1; b++)
            for (int s = 0; s < cnt[b]; s++)
                c[idx[(size_t)b * kk + s]]++;
#pragma omp barrier
#pragma omp single
        {
            int32_t run = 0;
            for (int j = 0; j < n; j++) {
                off[j] = run;
                for (int u = 0; u < nt; u++) {
                    int32_t v = ct[(size_t)u * n + j];
                    ct[(size_t)u * n + j] = run; /* becomes the write cursor */
                    run += v;
                }
            }
            off[n] = run;
        }
        for (int b = r0; b < r1; b++)
            for (int s = 0; s < cnt[b]; s++) {
                size_t q = (size_t)b * kk + s;
                int32_t p = c[idx[q]]++;
                e_row[p] = b;
                e_z[p] = z[q];
                e_g[p] = g[q];
            }
    }
}

/* ------------------------------------------------------------ TopK grad -- */

/* The step's settings the stages share. */
typedef struct {
    int B, par, chunk;
    int use_aux, ak; /* AuxK on this step, aux latents per row */
    int use_pf;      /* exact TopK through the int16 pre-filter */
    int ndead;
} topk_step;

/* Row r once its pre-activations pr are known (pr unused with the
 * pre-filter, which selected already): TopK, x_hat, the row stats, the AuxK
 * selection and residual r = e_hat - e, gx = dL/dx_hat = 2/B (x_hat - x),
 * and dL/dz at the k slots. */
static void topk_row(sf_sae_trainer *t, const topk_step *st, const float *x, int r,
                     const float *pr) {
    const sf_sae *s = t->s;
    const int d = s->d, n = s->n, k = s->k, ak = st->ak;
    const float gscale = 2.0f / (float)st->B;
    int32_t *ix = t->idx + (size_t)r * k;
    float *z = t->val + (size_t)r * k, *gz = t->gz + (size_t)r * k;
    int c = st->use_pf ? t->cnt[r] : (t->cnt[r] = sae_topk_relu(pr, s->b_enc, n, k, NULL, ix, z));
    const float *xr = x + (size_t)r * d;
    float *gxr = t->gx + (size_t)r * d;
    sae_decode_row(s->W_decT, s->b_dec, d, ix, z, c, gxr); /* x_hat */
    double *rs = t->rowst + (size_t)r * ST_N, l1 = 0;
    sae_row_stats(gxr, xr, d, rs + ST_SQERR); /* ST_SQERR, ST_X2, ST_XXH, ST_XH2 */
    for (int u = 0; u < c; u++)
        l1 += z[u];
    if (st->use_aux) {
        /* r = e_hat - e, with e = x - x_hat and e_hat = W_dec z_aux */
        int32_t *aix = t->aidx + (size_t)r * ak;
        float *az = t->aval + (size_t)r * ak;
        int ac = st->use_pf ? t->acnt[r]
                            : (t->acnt[r] = sae_topk_relu(pr, s->b_enc, n, ak, t->dead, aix, az));
        float *rr = t->r + (size_t)r * d;
        sae_decode_row(s->W_decT, NULL, d, aix, az, ac, rr);
#pragma omp simd
        for (int q = 0; q < d; q++)
            rr[q] += gxr[q] - xr[q];
    }
#pragma omp simd
    for (int q = 0; q < d; q++)
        gxr[q] = gscale * (gxr[q] - xr[q]);
    for (int u = 0; u < c; u++)
        gz[u] = sae_dot(s->W_decT + (size_t)ix[u] * d, gxr, d);
    rs[ST_L1] = l1;
}

/* Per-thread pre-activation buffers live as long as the trainer: freshly
 * mapped pages would cost a page fault per 4 KiB every step. */
static void reserve_pre(sf_sae_trainer *t, int chunk) {
    const int T = omp_get_max_threads(), n = t->s->n;
    if (t->n_pre >= T && t->pre_rows >= chunk) return;
    for (int i = 0; i < t->n_pre; i++)
        sf_free_aligned(t->pre[i]);
    free(t->pre);
    t->pre = sf_calloc((size_t)T, sizeof(float *));
    for (int i = 0; i < T; i++)
        t->pre[i] = sf_malloc_aligned((size_t)chunk * n * sizeof(float));
    t->n_pre = T;
    t->pre_rows = chunk;
}

/* Stage A, per row chunk: xc = x - b, the encoder GEMM (or the int16
 * pre-filter's exact selection), then topk_row for each row while its
 * pre-activations are in cache. */
static int topk_encode(sf_sae_trainer *t, const topk_step *st, const float *x) {
    sf_sae *s = t->s;
    const int d = s->d, k = s->k, ak = st->ak, B = st->B, chunk = st->chunk, use_aux = st->use_aux;
    const int nchunks = (B + chunk - 1) / chunk, n = s->n;
    int64_t ncand = 0;
    int bad_row = -1;
    double gemm_time = 0;
    reserve_pre(t, chunk);
#pragma omp parallel reduction(+ : gemm_time, ncand) if (st->par)
    {
        float *pre = t->pre[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
        for (int ci = 0; ci < nchunks; ci++) {
            int r0 = ci * chunk, m = B - r0 < chunk ? B - r0 : chunk;
            int64_t bad = sae_center_rows(s, x + (size_t)r0 * d, m, t->xc + (size_t)r0 * d);
            if (bad >= 0) {
#pragma omp critical(sae_train_bad)
                if (bad_row < 0 || r0 + bad < bad_row) bad_row = r0 + (int)bad;
            }
            double tg = sf_now();
            if (st->use_pf) {
                sae_pf_thread *h = &t->pf->th[omp_get_thread_num()];
                sae_pf_gemm(t->pf, h, t->xc + (size_t)r0 * d, m, (int32_t *)pre);
                gemm_time += sf_now() - tg;
                sae_pf_aux ax = {t->dead, ak, use_aux ? t->aidx + (size_t)r0 * ak : NULL,
                                 use_aux ? t->acnt + r0 : NULL,
                                 use_aux ? t->aval + (size_t)r0 * ak : NULL};
                sae_pf_select_chunk(t->pf, h, s, (const int32_t *)pre, m, t->xc + (size_t)r0 * d, k,
                                    t->idx + (size_t)r0 * k, t->val + (size_t)r0 * k, t->cnt + r0,
                                    use_aux ? &ax : NULL, &ncand);
            } else {
                sae_encoder_gemm(s, t->xc + (size_t)r0 * d, m, pre);
                gemm_time += sf_now() - tg;
            }
            for (int r = r0; r < r0 + m; r++)
                topk_row(t, st, x, r, pre + (size_t)(r - r0) * n);
        }
    }
    t->tm.gemm += gemm_time / (double)omp_get_max_threads();
    if (st->use_pf) t->tm.pf_rows += B, t->tm.pf_cands += ncand;
    if (bad_row >= 0) return sf_error("batch row %d: NaN or Inf in input", bad_row);
    return 0;
}

/* Stage B: column sums of gx (fixed row order per column) and the AuxK loss:
 * aux = coef sum_b ||r_b||^2 / sum_b ||e_b - mean e||^2, its gradient
 * dL/de_hat in t->r and dL/dz_aux at the aux slots. Returns the aux loss;
 * *sq_tot = sum_b ||x_hat - x||^2. */
static double topk_auxk(sf_sae_trainer *t, const topk_step *st, double *sq_tot) {
    const sf_sae *s = t->s;
    const sf_sae_train_opts *o = &t->o;
    const int d = s->d, B = st->B, ak = st->ak;
    sae_colsum(t->gx, B, d, t->colsum, st->par);
    double sq = 0;
    for (int b = 0; b < B; b++)
        sq += t->rowst[(size_t)b * ST_N + ST_SQERR];
    *sq_tot = sq;
    if (!st->use_aux) return 0;
    /* sum_b ||e_b - mean e||^2 = sum_b ||e_b||^2 - B ||mean e||^2, and
     * mean e = -(1/B) sum_b diff_b = -colsum(gx) / 2. */
    double r2 = 0;
    for (int b = 0; b < B; b++) {
        const float *rr = t->r + (size_t)b * d;
        double a = 0;
#pragma omp simd reduction(+ : a)
        for (int q = 0; q < d; q++)
            a += (double)rr[q] * rr[q];
        r2 += a;
    }
    /* Under MPI the normaliser is the global batch's (R ranks x B rows):
     * sum sq, r2 and the colsums over ranks. Each rank's colsum(gx) carries
     * its own 1/B, so the global mean e is -(sum_r colsum_r) / (2R). The
     * aux gradient is scaled by R because dist_reduce averages the ranks'
     * gradients (the main loss is a mean over rows, the aux loss is not). */
    const int R = sf_dist_size();
    double me2 = 0, Bg = B, gscale = 1;
    if (R > 1) {
        double *red = sf_malloc(((size_t)d + 2) * sizeof(double));
        for (int q = 0; q < d; q++)
            red[q] = t->colsum[q];
        red[d] = sq, red[d + 1] = r2;
        if (sf_dist_allreduce_sum_f64(red, (size_t)d + 2)) sf_dist_abort(1, sf_errmsg());
        for (int q = 0; q < d; q++)
            me2 += 0.25 * (red[q] / R) * (red[q] / R);
        sq = red[d], r2 = red[d + 1], Bg = (double)B * R, gscale = R;
        free(red);
    } else {
        for (int q = 0; q < d; q++)
            me2 += 0.25 * t->colsum[q] * t->colsum[q];
    }
    double D = sq - Bg * me2;
    if (!(D > 0 && isfinite(D) && isfinite(r2))) {
        for (int b = 0; b < B; b++)
            t->acnt[b] = 0;
        return 0;
    }
    const float sc = (float)(gscale * 2.0 * o->auxk_coef / D);
#pragma omp parallel for schedule(static) if (st->par)
    for (int b = 0; b < B; b++) {
        float *rr = t->r + (size_t)b * d;
#pragma omp simd
        for (int q = 0; q < d; q++)
            rr[q] *= sc; /* -> dL_aux/de_hat */
        const int32_t *aix = t->aidx + (size_t)b * ak;
        float *ag = t->agz + (size_t)b * ak;
        for (int u = 0; u < t->acnt[b]; u++)
            ag[u] = sae_dot(s->W_decT + (size_t)aix[u] * d, rr, d);
    }
    return o->auxk_coef * r2 / D;
}

/* Stage D, per latent from its bucketed entries: the encoder and decoder
 * gradient rows (sae_latent_grad_rows, main then aux entries), the encoder
 * bias, and per block of LBLK latents the part of gb_dec: b enters through
 * xc = x - b, so d pre / d b = -W_enc (main path only). */
static void topk_latent_rows(sf_sae_trainer *t, const topk_step *st) {
    sf_sae *s = t->s;
    const int d = s->d, n = s->n, T = omp_get_max_threads(), use_aux = st->use_aux;
    float *gWe = t->gr[0], *gbe = t->gr[1], *gWd = t->gr[2];
    const int nblk = (n + LBLK - 1) / LBLK;
    /* Each latent's two gradient rows are summed in a per-thread buffer (L1)
     * and then written out once; for large matrices with streaming stores, so
     * the write does not first read the old row from memory (Adam reads it
     * next, from memory either way). */
    const int dpad = (d + 15) / 16 * 16;
    const int stream = (size_t)n * d >= t->stream_min;
    if (t->rowbuf_T < T) {
        sf_free_aligned(t->rowbuf);
        t->rowbuf = sf_malloc_aligned((size_t)T * 2 * dpad * sizeof(float));
        t->rowbuf_T = T;
    }
#pragma omp parallel if (st->par)
    {
        float *const rbuf = t->rowbuf + (size_t)omp_get_thread_num() * 2 * dpad;
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            float *part = t->gb_part + (size_t)blk * d;
            memset(part, 0, (size_t)d * sizeof(float));
            int j1 = (blk + 1) * LBLK < n ? (blk + 1) * LBLK : n;
            for (int j = blk * LBLK; j < j1; j++) {
                int e0 = t->off[j], e1 = t->off[j + 1];
                int a0 = use_aux ? t->aoff[j] : 0, a1 = use_aux ? t->aoff[j + 1] : 0;
                if (e0 == e1 && a0 == a1) {
                    if (t->has_grad[j]) { /* keep the buffer exact: stale row -> zero */
                        memset(rbuf, 0, (size_t)d * sizeof(float));
                        sae_store_row(gWe + (size_t)j * d, rbuf, d, stream);
                        sae_store_row(gWd + (size_t)j * d, rbuf, d, stream);
                    }
                    t->has_grad[j] = 0;
                    t->lat_ss[j] = 0;
                    continue;
                }
                t->has_grad[j] = 1;
                float *restrict ge = rbuf, *restrict gd = rbuf + dpad;
                memset(ge, 0, (size_t)d * sizeof(float));
                memset(gd, 0, (size_t)d * sizeof(float));
                const float sg = sae_latent_grad_rows(ge, gd, d, t->xc, t->gx, t->e_row + e0,
                                                      t->e_z + e0, t->e_g + e0, e1 - e0);
                const float sga = use_aux
                                      ? sae_latent_grad_rows(ge, gd, d, t->xc, t->r, t->ae_row + a0,
                                                             t->ae_z + a0, t->ae_g + a0, a1 - a0)
                                      : 0.0f;
                gbe[j] = sg + sga;
                const float *we = s->W_enc + (size_t)j * d;
#pragma omp simd
                for (int q = 0; q < d; q++)
                    part[q] += sg * we[q];
                t->lat_ss[j] = sae_latent_rows_done(
                    ge, gd, s->W_decT + (size_t)j * d, t->o.normalise, d, gWe + (size_t)j * d,
                    gWd + (size_t)j * d, stream, (double)gbe[j] * gbe[j]);
            }
        }
        sae_store_fence();
    }
    for (int j = 0; j < n; j++)
        if (!t->has_grad[j]) gbe[j] = 0;
}

/* Stage E: gb_dec = colsum(gx) - sum of the blocks' parts; the squared
 * global gradient norm. */
static void topk_bdec(sf_sae_trainer *t, const topk_step *st) {
    const int d = t->s->d, n = t->s->n, nblk = (n + LBLK - 1) / LBLK;
    float *gbd = t->gr[3];
    double gss = 0;
    for (int q = 0; q < d; q++) {
        double v = t->colsum[q];
        for (int blk = 0; blk < nblk; blk++)
            v -= t->gb_part[(size_t)blk * d + q];
        gbd[q] = (float)v;
        gss += v * v;
    }
    for (int j = 0; j < n; j++)
        gss += t->lat_ss[j];
    t->grad_ss = gss;
    (void)st;
}

static void topk_metrics(const sf_sae_trainer *t, const topk_step *st, double sq_tot,
                         double aux_loss, sf_sae_metrics *met) {
    const int n = t->s->n, B = st->B;
    memset(met, 0, sizeof *met);
    double x2_tot = 0, l1_tot = 0, cos_tot = 0;
    for (int b = 0; b < B; b++) {
        const double *rs = t->rowst + (size_t)b * ST_N;
        x2_tot += rs[ST_X2];
        l1_tot += rs[ST_L1];
        double den = sqrt(rs[ST_X2] * rs[ST_XH2]);
        cos_tot += den > 0 ? rs[ST_XXH] / den : 0;
    }
    int64_t l0 = 0;
    int surv = 0;
    for (int j = 0; j < n; j++) {
        int c = t->off[j + 1] - t->off[j];
        l0 += c;
        surv += c > 0;
        double dens = (double)c / B;
        double lg = log10(dens + 1e-6);
        int bin = (int)floor((lg + 6.0) / 0.5);
        if (bin < 0) bin = 0;
        if (bin >= SF_SAE_HIST_BINS) bin = SF_SAE_HIST_BINS - 1;
        met->hist[bin]++;
    }
    met->l2 = sq_tot / B;
    met->auxk = aux_loss;
    met->loss = met->l2 + aux_loss;
    met->l2_normalised = x2_tot > 0 ? sq_tot / x2_tot : 0;
    met->l1 = l1_tot / B;
    met->l0 = (double)l0 / B;
    met->cossim = cos_tot / B;
    met->alive = met->l0 / n;
    met->survival = (double)surv / n;
    met->dead = (double)st->ndead / n;
    met->grad_norm = sqrt(t->grad_ss);
}

/* The TopK step (Gao et al. 2024; sae_train.h), as stages. */
static int topk_grad(sf_sae_trainer *t, const float *x, int B, sf_sae_metrics *met) {
    sf_sae *s = t->s;
    const int d = s->d, n = s->n, k = s->k;
    const sf_sae_train_opts *o = &t->o;
    topk_step st = {.B = B};
    /* Dead latents (bodycount rule) decide whether AuxK runs this step. */
    for (int j = 0; j < n; j++) {
        t->dead[j] = t->since[j] >= o->bodycount;
        st.ndead += t->dead[j];
    }
    st.use_aux = o->auxk_coef > 0 && o->aux_k > 0 && st.ndead > 0;
    /* Small problems run on one thread: a barrier on a busy machine can cost
     * more than the work (results are the same either way). */
    st.par = sae_parallel_worth((size_t)B * n * d);
    st.ak = st.use_aux ? (o->aux_k < st.ndead ? o->aux_k : st.ndead) : 0;
    st.chunk = sae_chunk_rows(B, n);
    if (st.use_aux) ensure_aux(t);
    /* The exact TopK (and AuxK) through an int16 pre-filter (prefilter.c)
     * replaces the F32 encoder GEMM. Inside a training step, the last AdamW
     * has already quantised the W_enc it wrote (nothing else touched it
     * since: resampling clears pf_fresh). A gradient called on its own never
     * trusts that. */
    if (sae_pf_wanted(s, st.ak)) {
        if (t->pf_in_step && t->pf_fresh && t->pf_stamp == t->steps && t->pf &&
            t->pf->max_rows >= st.chunk && t->pf->nthreads >= omp_get_max_threads())
            st.use_pf = 1;
        else
            st.use_pf = sae_pf_prepare(&t->pf, s, st.chunk, omp_get_max_threads()) == 0;
    }
    t->pf_fresh = 0;
    t->pf_last = st.use_pf;

    double t0 = sf_now();
    if (topk_encode(t, &st, x)) return -1; /* A: encode, select, decode, dL/dz */
    double t1 = sf_now();
    t->tm.encode += t1 - t0;
    double sq_tot;
    const double aux_loss = topk_auxk(t, &st, &sq_tot); /* B: colsums, AuxK */
    double t2 = sf_now();
    t->tm.aux += t2 - t1;
    /* C: entries bucketed by latent */
    bucket(t, B, k, t->idx, t->cnt, t->val, t->gz, t->off, t->e_row, t->e_z, t->e_g, st.par);
    if (st.use_aux)
        bucket(t, B, st.ak, t->aidx, t->acnt, t->aval, t->agz, t->aoff, t->ae_row, t->ae_z, t->ae_g,
               st.par);
    topk_latent_rows(t, &st); /* D: per-latent gradient rows */
    topk_bdec(t, &st);        /* E: decoder bias, gradient norm */
    t->tm.backward += sf_now() - t2;
    if (met) topk_metrics(t, &st, sq_tot, aux_loss, met);
    return 0;
}

int sf_sae_trainer_grad(sf_sae_trainer *t, const float *x, int B, sf_sae_metrics *m) {
    if (B <= 0 || B > t->max_batch)
        return sf_error("batch of %d rows, trainer sized for 1..%d", B, t->max_batch);
    if (t->s->input_scale > 0 && t->s->input_scale != 1.0f) {
        /* --normalize_input: train on x * scale (folded back on save, sae.c) */
        if (!t->xs) t->xs = sf_malloc_aligned((size_t)t->max_batch * t->s->d * sizeof(float));
        const float sc = t->s->input_scale;
        for (size_t i = 0; i < (size_t)B * t->s->d; i++)
            t->xs[i] = sc * x[i];
        x = t->xs;
    }
    switch (t->s->arch) {
    case SF_SAE_TOPK:
        return topk_grad(t, x, B, m);
    default: {
        sae_train_io io = {t->s,   &t->o,    t->gr,       t->m1,    t->m2,  t->has_grad,
                           t->off, t->since, &t->grad_ss, t->steps, &t->tm, t->stream_min};
        return sae_arch_grad(t->arch, &io, x, B, m);
    }
    }
}

/* ----------------------------------------------------- shared: the update -- */

/* torch's AdamW update of one span (its single-tensor order of operations;
 * no FMA contraction under -std=c11). g == NULL: zero gradient - moments
 * decay, parameters still move. */
static inline void adam_span_c(float *restrict p, float *restrict m, float *restrict v,
                               const float *restrict g, size_t len, float cs, float b1, float b2,
                               float decay, float step, float inv_bc2s, float eps) {
    if (g) {
#pragma omp simd
        for (size_t i = 0; i < len; i++) {
            float gi = cs * g[i];
            float mi = m[i] + (1.0f - b1) * (gi - m[i]); /* torch lerp */
            float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_bc2s + eps);
        }
    } else {
#pragma omp simd
        for (size_t i = 0; i < len; i++) {
            float mi = m[i] - (1.0f - b1) * m[i];
            float vi = b2 * v[i];
            m[i] = mi;
            v[i] = vi;
            p[i] = p[i] * decay - step * mi / (sqrtf(vi) * inv_bc2s + eps);
        }
    }
}

#ifdef __AVX512F__
/* The same arithmetic, operation for operation (so the same bits), with
 * streaming stores: Adam reads and rewrites every parameter and both moments
 * each step, far more than the caches hold, and a normal store first reads
 * the line it overwrites - 40% of Adam's memory traffic. Needs 64-byte
 * aligned spans whose length is a multiple of 16; the caller fences. */
static inline void adam_span_nt(float *p, float *m, float *v, const float *g, size_t len, float cs,
                                float b1, float b2, float decay, float step, float inv_bc2s,
                                float eps, int keep_p) {
    const __m512 vcs = _mm512_set1_ps(cs), c1 = _mm512_set1_ps(1.0f - b1), vb2 = _mm512_set1_ps(b2),
                 c2 = _mm512_set1_ps(1.0f - b2), vdec = _mm512_set1_ps(decay),
                 vst = _mm512_set1_ps(step), vbc = _mm512_set1_ps(inv_bc2s),
                 veps = _mm512_set1_ps(eps);
    for (size_t i = 0; i < len; i += 16) {
        __m512 mo = _mm512_load_ps(m + i), mi, vi;
        if (g) {
            __m512 gi = _mm512_mul_ps(vcs, _mm512_load_ps(g + i));
            mi = _mm512_add_ps(mo, _mm512_mul_ps(c1, _mm512_sub_ps(gi, mo)));
            vi = _mm512_add_ps(_mm512_mul_ps(vb2, _mm512_load_ps(v + i)),
                               _mm512_mul_ps(_mm512_mul_ps(c2, gi), gi));
        } else {
            mi = _mm512_sub_ps(mo, _mm512_mul_ps(c1, mo));
            vi = _mm512_mul_ps(vb2, _mm512_load_ps(v + i));
        }
        __m512 den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), vbc), veps);
        __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_load_ps(p + i), vdec),
                                  _mm512_div_ps(_mm512_mul_ps(vst, mi), den));
        _mm512_stream_ps(m + i, mi);
        _mm512_stream_ps(v + i, vi);
        if (keep_p) /* read again right away (the pre-filter's quantiser) */
            _mm512_store_ps(p + i, pi);
        else
            _mm512_stream_ps(p + i, pi);
    }
}
#endif

static inline void adam_span(float *restrict p, float *restrict m, float *restrict v,
                             const float *restrict g, size_t len, float cs, float b1, float b2,
                             float decay, float step, float inv_bc2s, float eps, int stream,
                             int keep_p) {
#ifdef __AVX512F__
    if (stream && len % 16 == 0 && ((uintptr_t)p | (uintptr_t)m | (uintptr_t)v) % 64 == 0 &&
        (!g || (uintptr_t)g % 64 == 0)) {
        adam_span_nt(p, m, v, g, len, cs, b1, b2, decay, step, inv_bc2s, eps, keep_p);
        return;
    }
#endif
    (void)stream, (void)keep_p;
    adam_span_c(p, m, v, g, len, cs, b1, b2, decay, step, inv_bc2s, eps);
}

static double lr_at(const sf_sae_train_opts *o, int64_t step) {
    /* transformers' get_constant_schedule_with_warmup, stepped after each
     * optimiser step: step t (0-based) uses lr * min(1, t / warmup). */
    if (o->lr_warmup_steps > 0 && step < o->lr_warmup_steps)
        return o->lr * (double)step / (double)o->lr_warmup_steps;
    return o->lr;
}

/* Data parallel (docs/mpi.md): every rank computed the gradient of the mean
 * loss over its B rows of the global batch R*B. The global gradient is the
 * mean of the ranks' gradients: sum them (MPI_Allreduce) and scale by 1/R.
 * Latents with no gradient row on a rank have an exact zero row there (see
 * topk_latent_rows), so summing whole buffers is right and has_grad is the OR
 * over ranks. The clipping norm is recomputed from the reduced gradient, and
 * the firing flags and batch-mean metrics are combined, so AdamW, the
 * dead-latent counters and AuxK's dead set are identical on every rank. */
static int dist_reduce(sf_sae_trainer *t, sf_sae_metrics *m) {
    sf_sae *s = t->s;
    const int R = sf_dist_size(), n = s->n;
    const float inv = 1.0f / (float)R;
    double gss = 0;
    for (int i = 0; i < s->n_params; i++) {
        const size_t N = s->params[i].numel;
        float *g = t->gr[i];
        if (sf_dist_allreduce_sum_f32(g, N)) return -1;
        double ss = 0;
#pragma omp parallel for simd reduction(+ : ss) if (N > (1 << 16))
        for (size_t q = 0; q < N; q++) {
            g[q] *= inv;
            ss += (double)g[q] * g[q];
        }
        gss += ss;
    }
    if (sf_dist_allreduce_max_u8(t->has_grad, (size_t)n) ||
        sf_dist_allreduce_max_u8(t->fired, (size_t)n))
        return -1;
    t->grad_ss = gss;
    /* batch means average over equal shares; survival becomes the mean of the
     * ranks' fractions (a lower bound of the global one) */
    double v[10] = {m->loss,   m->l2,    m->l2_normalised, m->l1,   m->l0,
                    m->cossim, m->alive, m->survival,      m->auxk, 0};
    if (sf_dist_allreduce_sum_f64(v, 10)) return -1;
    m->loss = v[0] / R, m->l2 = v[1] / R, m->l2_normalised = v[2] / R, m->l1 = v[3] / R;
    m->l0 = v[4] / R, m->cossim = v[5] / R, m->alive = v[6] / R, m->survival = v[7] / R;
    m->auxk = v[8] / R;
    m->grad_norm = sqrt(gss);
    return 0;
}

int sf_sae_trainer_step(sf_sae_trainer *t, const float *x, int B, sf_sae_metrics *m) {
    sf_sae_metrics local;
    if (!m) m = &local;
    t->pf_in_step = 1;
    int grc = sf_sae_trainer_grad(t, x, B, m);
    t->pf_in_step = 0;
    if (grc) return -1;
    double t0 = sf_now();
    for (int j = 0; j < t->s->n; j++)
        t->fired[j] = t->off[j + 1] > t->off[j];
    if (sf_dist_size() > 1) {
        if (dist_reduce(t, m)) return -1;
        t->tm.comm += sf_now() - t0;
    }
    sf_sae *s = t->s;
    const sf_sae_train_opts *o = &t->o;
    const double gnorm = sqrt(t->grad_ss);
    if (!isfinite(gnorm)) return sf_error("step %lld: gradient is not finite", (long long)t->steps);
    /* torch clip_grad_norm_: scale by max / (norm + 1e-6) when that is < 1 */
    float cs = 1.0f;
    if (o->clip > 0) {
        double c = o->clip / (gnorm + 1e-6);
        if (c < 1.0) cs = (float)c;
    }
    const double lr = lr_at(o, t->steps);
    const int64_t tstep = t->steps + 1;
    const double bc1 = 1.0 - pow(o->beta1, (double)tstep), bc2 = 1.0 - pow(o->beta2, (double)tstep);
    const float step = (float)(lr / bc1), inv_bc2s = (float)(1.0 / sqrt(bc2));
    const float decay = (float)(1.0 - lr * o->wd), b1 = (float)o->beta1, b2 = (float)o->beta2,
                eps = (float)o->eps;
    const int n = s->n, dp = t->dec_param, normalise = o->normalise;
    const int par = sae_parallel_worth((size_t)n * s->d * 4);
    /* When the pre-filter ran, re-quantise W_enc for the next step here, one
     * 32-latent panel at a time while its new rows are in cache (so W_enc's
     * rows are stored normally, not streamed past the cache). */
    const int fuse = t->pf_last && t->pf && t->enc_param >= 0;
    int pf_bad = 0;
#pragma omp parallel if (par) reduction(| : pf_bad)
    {
#pragma omp for schedule(static, SF_I16_NR)
        for (int j = 0; j < n; j++) {
            const int hg = t->has_grad[j];
            for (int i = 0; i < s->n_params; i++) {
                const sf_sae_param *p = &s->params[i];
                if (!p->per_latent) continue;
                size_t w = p->numel / (size_t)n, o0 = (size_t)j * w;
                adam_span(p->data + o0, t->m1[i] + o0, t->m2[i] + o0, hg ? t->gr[i] + o0 : NULL, w,
                          cs, b1, b2, decay, step, inv_bc2s, eps,
                          p->numel >= t->stream_min && !(normalise && i == dp),
                          fuse && i == t->enc_param);
            }
            if (fuse && (j % SF_I16_NR == SF_I16_NR - 1 || j == n - 1))
                pf_bad |=
                    sae_pf_quant_panel(t->pf, s, j / SF_I16_NR, t->pf->th[omp_get_thread_num()].q);
            if (normalise && dp >= 0) {
                size_t w = s->params[dp].numel / (size_t)n;
                float *row = s->params[dp].data + (size_t)j * w;
                double ss = 0;
#pragma omp simd reduction(+ : ss)
                for (size_t q = 0; q < w; q++)
                    ss += (double)row[q] * row[q];
                if (ss > 0) {
                    float inv = (float)(1.0 / sqrt(ss));
                    for (size_t q = 0; q < w; q++)
                        row[q] *= inv;
                }
            }
        }
#ifdef __AVX512F__
        _mm_sfence(); /* streaming stores visible before the barrier below */
#endif
    }
    for (int i = 0; i < s->n_params; i++) {
        const sf_sae_param *p = &s->params[i];
        if (p->per_latent) continue;
        adam_span(p->data, t->m1[i], t->m2[i], t->gr[i], p->numel, cs, b1, b2, decay, step,
                  inv_bc2s, eps, 0, 0);
    }
    /* dead-latent counters: samples since each latent last fired (in the
     * global batch: fired was OR-ed over ranks by dist_reduce) */
    const int64_t Bg = (int64_t)B * sf_dist_size();
    for (int j = 0; j < n; j++) {
        if (t->fired[j])
            t->since[j] = 0;
        else
            t->since[j] += Bg;
    }
    int64_t nd = 0;
    for (int j = 0; j < n; j++)
        nd += t->since[j] >= o->bodycount;
    m->dead = (double)nd / n;
    m->lr = lr;
    t->steps++;
    t->pf_fresh = fuse && !pf_bad;
    t->pf_stamp = t->steps;
    /* batchtopk threshold EMA; dead-latent resampling (arch_batchtopk.c, resample.c) */
    sae_train_io io = {s,      o,        t->gr,       t->m1,    t->m2,  t->has_grad,
                       t->off, t->since, &t->grad_ss, t->steps, &t->tm, t->stream_min};
    if (t->arch) sae_arch_after_step(t->arch, &io);
    if (o->resample_every > 0 && t->steps % o->resample_every == 0)
        t->pf_fresh = 0; /* resampling rewrites W_enc rows */
    if (o->resample_every > 0 && t->steps % o->resample_every == 0 && t->data &&
        o->resample_pool > 0) {
        if (sae_resample_pool(&io, t->data, o->resample_pool)) return -1;
    } else if (o->resample_every > 0 && t->steps % o->resample_every == 0) {
        const float *xin = (s->input_scale > 0 && s->input_scale != 1.0f) ? t->xs : x;
        if (sae_resample(&io, xin, t->arch ? sae_arch_residual(t->arch) : t->gx, B)) return -1;
    }
    t->tm.adam += sf_now() - t0;
    t->tm.steps++;
    return 0;
}

/* ------------------------------------------------------ state (resume) -- */

/* Everything the next step reads besides the batch (docs/sae.md, "Resume").
 * The parameters are the F32 values as trained: a checkpoint may hold them
 * folded (--normalize_input) or in BF16, which would not continue bit for
 * bit. The gradient buffers need no saving: a fresh trainer's are zero with
 * has_grad 0, which is what every step leaves for latents without entries,
 * and the int16 pre-filter is re-quantised from the weights by the same
 * function AdamW's fused pass calls. Floats go to the metadata as C99 hex. */
#define STATE_FORMAT "saeflow-trainer-state-1"

static void meta_i64(sf_st_writer *w, const char *k, int64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%lld", (long long)v);
    sf_stw_meta(w, k, b);
}
static void meta_f(sf_st_writer *w, const char *k, double v) {
    char b[64];
    snprintf(b, sizeof b, "%a", v);
    sf_stw_meta(w, k, b);
}

int sf_sae_trainer_state_add(sf_sae_trainer *t, sf_st_writer *w) {
    const sf_sae *s = t->s;
    char name[160];
    for (int i = 0; i < s->n_params; i++) {
        const sf_sae_param *p = &s->params[i];
        const int64_t sh[1] = {(int64_t)p->numel};
        snprintf(name, sizeof name, "param.%s", p->name);
        if (sf_stw_add(w, name, SF_DT_F32, 1, sh, p->data)) return -1;
        snprintf(name, sizeof name, "adam_m.%s", p->name);
        if (sf_stw_add(w, name, SF_DT_F32, 1, sh, t->m1[i])) return -1;
        snprintf(name, sizeof name, "adam_v.%s", p->name);
        if (sf_stw_add(w, name, SF_DT_F32, 1, sh, t->m2[i])) return -1;
    }
    const int64_t shn[1] = {s->n};
    if (sf_stw_add(w, "since_fired", SF_DT_I64, 1, shn, t->since)) return -1;
    sf_stw_meta(w, "trainer_format", STATE_FORMAT);
    sf_stw_meta(w, "trainer_arch", sf_sae_arch_name(s->arch));
    meta_i64(w, "trainer_d", s->d);
    meta_i64(w, "trainer_n", s->n);
    meta_i64(w, "trainer_steps", t->steps);
    meta_f(w, "trainer_threshold", s->threshold);
    meta_f(w, "trainer_input_scale", s->input_scale);
    if (t->arch) { /* BatchTopK's search hint, the sparse/dense route guess */
        meta_f(w, "trainer_last_min", t->arch->last_min);
        meta_i64(w, "trainer_have_min", t->arch->have_min);
        meta_i64(w, "trainer_pred_sparse", t->arch->pred_sparse);
    }
    if (s->config) {
        char *cfg = cJSON_PrintUnformatted(s->config);
        sf_stw_meta(w, "trainer_config", cfg ? cfg : "{}");
        free(cfg);
    }
    return 0;
}

static int state_num(const sf_st *f, const char *key, int required, double *v) {
    const char *m = sf_st_meta(f, key);
    if (!m) return required ? sf_error("%s: metadata \"%s\" missing", f->path, key) : 1;
    char *end;
    *v = strtod(m, &end);
    if (end == m || *end) return sf_error("%s: metadata \"%s\": bad number '%s'", f->path, key, m);
    return 0;
}

int sf_sae_trainer_state_load(sf_sae_trainer *t, const sf_st *f) {
    sf_sae *s = t->s;
    const char *fmt = sf_st_meta(f, "trainer_format"), *arch = sf_st_meta(f, "trainer_arch");
    if (!fmt || strcmp(fmt, STATE_FORMAT))
        return sf_error("%s: not a trainer state (metadata trainer_format '%s', want '%s')",
                        f->path, fmt ? fmt : "(none)", STATE_FORMAT);
    double d = 0, n = 0, steps = 0, thr = 0, isc = 0, v = 0;
    if (state_num(f, "trainer_d", 1, &d) || state_num(f, "trainer_n", 1, &n) ||
        state_num(f, "trainer_steps", 1, &steps) || state_num(f, "trainer_threshold", 1, &thr) ||
        state_num(f, "trainer_input_scale", 1, &isc))
        return -1;
    if (!arch || strcmp(arch, sf_sae_arch_name(s->arch)) || d != s->d || n != s->n)
        return sf_error("%s: state of a %s SAE %.0f x %.0f, the model is %s %d x %d", f->path,
                        arch ? arch : "?", d, n, sf_sae_arch_name(s->arch), s->d, s->n);
    if (!(steps >= 0)) return sf_error("%s: trainer_steps %g", f->path, steps);
    char name[160];
    for (int i = 0; i < s->n_params; i++) {
        const sf_sae_param *p = &s->params[i];
        const int64_t sh[1] = {(int64_t)p->numel};
        const char *pre[3] = {"param", "adam_m", "adam_v"};
        float *dst[3] = {p->data, t->m1[i], t->m2[i]};
        for (int u = 0; u < 3; u++) {
            snprintf(name, sizeof name, "%s.%s", pre[u], p->name);
            const sf_tensor_info *ti = sf_st_find(f, name);
            if (!ti || ti->dtype != SF_DT_F32)
                return sf_error("%s: no F32 tensor '%s'", f->path, name);
            if (sf_st_read_f32(f, name, 1, sh, dst[u])) return -1;
        }
    }
    const sf_tensor_info *ts = sf_st_find(f, "since_fired");
    if (!ts || ts->dtype != SF_DT_I64 || ts->ndim != 1 || ts->shape[0] != s->n)
        return sf_error("%s: no I64 tensor 'since_fired' of %d entries", f->path, s->n);
    memcpy(t->since, ts->data, (size_t)s->n * sizeof(int64_t));
    for (int j = 0; j < s->n; j++)
        if (t->since[j] < 0) return sf_error("%s: since_fired[%d] is negative", f->path, j);
    t->steps = (int64_t)steps;
    s->threshold = (float)thr;
    s->input_scale = (float)isc;
    if (t->arch) {
        if (state_num(f, "trainer_last_min", 0, &v) == 0) t->arch->last_min = (float)v;
        if (state_num(f, "trainer_have_min", 0, &v) == 0) t->arch->have_min = v != 0;
        if (state_num(f, "trainer_pred_sparse", 0, &v) == 0) t->arch->pred_sparse = v != 0;
    }
    const char *cfg = sf_st_meta(f, "trainer_config");
    if (cfg) {
        cJSON *j = cJSON_Parse(cfg);
        if (!j) return sf_error("%s: metadata trainer_config is not JSON", f->path);
        if (s->config) cJSON_Delete(s->config);
        s->config = j;
    }
    /* a fresh step: no gradient rows held, the pre-filter re-quantised */
    for (int i = 0; i < s->n_params; i++)
        memset(t->gr[i], 0, s->params[i].numel * sizeof(float));
    memset(t->has_grad, 0, (size_t)s->n);
    t->pf_fresh = 0;
    return 0;
}
