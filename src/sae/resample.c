/* Dead-latent resampling (Anthropic, "Towards Monosemanticity", 2023), model
 * copies, and the folds on save and load: the input normalisation, and the
 * decoder column norms of standard and gated SAEs (docs/architectures.md). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/sae_arch.h"

/* Resampling: the dead latents (since >= bodycount) get, one each, an input
 * row drawn with probability proportional to its squared reconstruction
 * error; decoder column = that input (minus b_dec), unit norm; encoder row =
 * the same direction scaled to 0.2 x the mean encoder-row norm of the alive
 * latents; encoder bias 0; Adam moments of all their rows zeroed; their
 * dead counters restart. The rows come from a pool: `pool` rows sampled from
 * the data (sae_resample_pool, as the paper), or the current batch. */

static int count_dead(const sae_train_io *io) {
    int ndead = 0;
    for (int j = 0; j < io->s->n; j++)
        ndead += io->since[j] >= io->o->bodycount;
    return ndead;
}

static double alive_encoder_norm(const sae_train_io *io) {
    const sf_sae *s = io->s;
    double sum = 0;
    int nalive = 0;
    for (int j = 0; j < s->n; j++) {
        if (io->since[j] >= io->o->bodycount) continue;
        double ss = 0;
        for (int q = 0; q < s->d; q++)
            ss += (double)s->W_enc[(size_t)j * s->d + q] * s->W_enc[(size_t)j * s->d + q];
        sum += sqrt(ss);
        nalive++;
    }
    return nalive ? sum / nalive : 1.0;
}

/* Index drawn with probability proportional to the increments of cum[0..m)
 * (cumulative squared errors, total tot); uniform when all are zero. */
static int64_t draw(sf_rng *r, const double *cum, int64_t m, double tot) {
    if (!(tot > 0)) return (int64_t)sf_rng_below(r, (uint64_t)m);
    double u = sf_rng_uniform(r) * tot;
    int64_t lo = 0, hi = m - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (cum[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void reinit_latent(const sae_train_io *io, int j, const float *xrow, double alive_norm) {
    sf_sae *s = io->s;
    const int n = s->n, d = s->d;
    float *wd = s->W_decT + (size_t)j * d, *we = s->W_enc + (size_t)j * d;
    double ss = 0;
    for (int q = 0; q < d; q++) {
        wd[q] = xrow[q] - s->b_dec[q];
        ss += (double)wd[q] * wd[q];
    }
    if (!(ss > 0)) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int q = 0; q < d; q++) {
        wd[q] *= inv;
        we[q] = (float)(0.2 * alive_norm) * wd[q];
    }
    for (int i = 0; i < s->n_params; i++) {
        const sf_sae_param *p = &s->params[i];
        if (!p->per_latent) continue;
        size_t w = p->numel / (size_t)n;
        memset(io->m1[i] + (size_t)j * w, 0, w * sizeof(float));
        memset(io->m2[i] + (size_t)j * w, 0, w * sizeof(float));
        if (p->data == s->b_enc || p->data == s->b_mag || p->data == s->r_mag)
            memset(p->data + (size_t)j * w, 0, w * sizeof(float));
    }
    io->since[j] = 0;
}

static void seed_for_step(const sae_train_io *io, sf_rng *r) {
    sf_rng_seed(r, 0x7265736d706c65ull + (uint64_t)io->steps);
}

int sae_resample(const sae_train_io *io, const float *x, const float *resid, int B) {
    const sf_sae *s = io->s;
    const int n = s->n, d = s->d;
    if (!count_dead(io)) return 0;
    double *cum = sf_malloc((size_t)B * sizeof(double)), tot = 0;
    for (int b = 0; b < B; b++) {
        double e = 0;
        for (int q = 0; q < d; q++)
            e += (double)resid[(size_t)b * d + q] * resid[(size_t)b * d + q];
        tot += e;
        cum[b] = tot;
    }
    const double alive_norm = alive_encoder_norm(io);
    sf_rng r;
    seed_for_step(io, &r);
    for (int j = 0; j < n; j++)
        if (io->since[j] >= io->o->bodycount)
            reinit_latent(io, j, x + (size_t)draw(&r, cum, B, tot) * d, alive_norm);
    free(cum);
    return 0;
}

int sae_resample_pool(const sae_train_io *io, const sf_sae_data *D, int64_t pool) {
    const sf_sae *s = io->s;
    const int n = s->n, d = s->d;
    if (!count_dead(io)) return 0;
    if (D->d != d)
        return sf_error("resampling: data width %d does not match the SAE's features %d", D->d, d);
    const int64_t M = pool < D->N ? pool : D->N;
    sf_rng r;
    seed_for_step(io, &r);
    int64_t *rows = sf_malloc((size_t)M * sizeof(int64_t));
    for (int64_t i = 0; i < M; i++)
        rows[i] = (int64_t)sf_rng_below(&r, (uint64_t)D->N);
    /* squared reconstruction error of each pool row under the current model
     * (inputs scaled as the trainer sees them), chunk by chunk */
    const int64_t chunk = sae_code_chunk_rows(s);
    const float sc = s->input_scale > 0 ? s->input_scale : 1.0f;
    double *cum = sf_malloc((size_t)M * sizeof(double)), tot = 0;
    float *x = sf_malloc((size_t)chunk * d * sizeof(float)),
          *xh = sf_malloc((size_t)chunk * d * sizeof(float));
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, chunk, s->k);
    int rc = 0;
    for (int64_t r0 = 0; r0 < M && !rc; r0 += chunk) {
        const int64_t m = M - r0 < chunk ? M - r0 : chunk;
        c.B = m;
        if (sf_sae_data_gather(D, rows + r0, m, x)) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < (size_t)m * d; i++)
            x[i] *= sc;
        if (sf_sae_encode(s, x, m, &c)) {
            rc = -1;
            break;
        }
        sf_sae_decode(s, &c, xh);
        for (int64_t b = 0; b < m; b++) {
            double e = 0;
            for (int q = 0; q < d; q++) {
                double df = (double)xh[(size_t)b * d + q] - x[(size_t)b * d + q];
                e += df * df;
            }
            tot += e;
            cum[r0 + b] = tot;
        }
    }
    if (!rc) {
        const double alive_norm = alive_encoder_norm(io);
        for (int j = 0; j < n && !rc; j++) {
            if (io->since[j] < io->o->bodycount) continue;
            const int64_t row = rows[draw(&r, cum, M, tot)];
            if (sf_sae_data_gather(D, &row, 1, x)) {
                rc = -1;
                break;
            }
            for (int q = 0; q < d; q++)
                x[q] *= sc;
            reinit_latent(io, j, x, alive_norm);
        }
    }
    sf_sae_codes_free(&c);
    free(x);
    free(xh);
    free(cum);
    free(rows);
    return rc ? sf_error_prefix("resampling dead latents") : 0;
}

/* ---------------------------------------------------------------- copies -- */

int sae_copy(sf_sae *dst, const sf_sae *src) {
    /* same shapes through the normal allocation path, then the data */
    memset(dst, 0, sizeof *dst);
    dst->arch = src->arch;
    dst->d = src->d;
    dst->n = src->n;
    dst->k = src->k;
    dst->k_sel = src->k_sel;
    dst->batch_select = src->batch_select;
    dst->n_groups = src->n_groups;
    memcpy(dst->groups, src->groups, sizeof dst->groups);
    dst->threshold = src->threshold;
    if (sf_sae_init(dst, src->arch, src->d, src->n,
                    src->arch == SF_SAE_TOPK ? src->k : (src->k_sel ? src->k_sel : src->k), 0))
        return -1;
    dst->k = src->k;
    dst->batch_select = src->batch_select;
    dst->n_groups = src->n_groups;
    memcpy(dst->groups, src->groups, sizeof dst->groups);
    dst->threshold = src->threshold;
    for (int i = 0; i < src->n_params; i++)
        memcpy(dst->params[i].data, src->params[i].data, src->params[i].numel * sizeof(float));
    if (dst->config) cJSON_Delete(dst->config);
    dst->config = src->config ? cJSON_Duplicate(src->config, 1) : NULL;
    dst->save_half = src->save_half;
    return 0;
}

/* ------------------------------------------------------------- folding -- */

/* Within this of 1, ||w_j||^2 counts as unit: a column divided by its norm
 * in F32 lands within ~2.4e-7 of it, so folding twice is folding once (a
 * reloaded checkpoint keeps its bits), and the reference's factor ||w_j||
 * on such a column is 1 to 5e-7, F32 rounding of a code. */
#define SAE_UNIT_TOL 1e-6

static int folds_norms(const sf_sae *s) {
    return s->arch == SF_SAE_STANDARD || s->arch == SF_SAE_GATED;
}

static double col_ss(const sf_sae *s, int j) {
    const float *w = s->W_decT + (size_t)j * s->d;
    double ss = 0;
    for (int q = 0; q < s->d; q++)
        ss += (double)w[q] * w[q];
    return ss;
}

static int norms_need_fold(const sf_sae *s) {
    if (!folds_norms(s)) return 0;
    for (int j = 0; j < s->n; j++) {
        const double ss = col_ss(s, j);
        if (ss > 0 && fabs(ss - 1.0) > SAE_UNIT_TOL) return 1;
    }
    return 0;
}

void sae_fold_norms(sf_sae *s, int zero_too) {
    const int d = s->d;
#pragma omp parallel for schedule(static) if (sae_parallel_worth((size_t)s->n * d * 4))
    for (int j = 0; j < s->n; j++) {
        const double ss = col_ss(s, j);
        if (ss > 0 && fabs(ss - 1.0) <= SAE_UNIT_TOL) continue;
        if (ss == 0 && !zero_too) continue;
        const double c = sqrt(ss);
        float *we = s->W_enc + (size_t)j * d, *wd = s->W_decT + (size_t)j * d;
        for (int q = 0; q < d; q++) {
            we[q] = (float)(we[q] * c);
            if (c > 0) wd[q] = (float)(wd[q] / c);
        }
        s->b_enc[j] = (float)(s->b_enc[j] * c);
        /* gated: the gate keeps its sign; c pi_mag = exp(r_mag) (c W) xc + c mag_bias */
        if (s->b_mag) s->b_mag[j] = (float)(s->b_mag[j] * c);
    }
}

void sf_sae_fold_decoder_norms(sf_sae *s) {
    if (folds_norms(s)) sae_fold_norms(s, 0);
}

int sae_needs_fold(const sf_sae *s) {
    return (s->input_scale > 0 && s->input_scale != 1.0f) || norms_need_fold(s);
}

int sae_folded_copy(sf_sae *f, const sf_sae *s) {
    /* Trained on c x: pre = W (c x - b) = (c W)(x - b / c); x_hat = (W_dec z + b) / c.
     * So W_enc *= c, W_dec /= c, b_dec /= c; biases inside the encoder and
     * thresholds act on the same pre-activations and stay. */
    if (sae_copy(f, s)) return -1;
    if (s->input_scale > 0 && s->input_scale != 1.0f) {
        const float c = s->input_scale, ic = 1.0f / c;
        const size_t nd = (size_t)s->n * s->d;
        for (size_t i = 0; i < nd; i++) {
            f->W_enc[i] *= c;
            f->W_decT[i] *= ic;
        }
        for (int q = 0; q < s->d; q++)
            f->b_dec[q] *= ic;
    }
    f->input_scale = 0;
    sf_sae_fold_decoder_norms(f);
    return 0;
}
