/* Synthetic ground-truth data and SAE evaluation (FVU, L0, MMCS). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae_internal.h"
#include "saeflow/sae_eval.h"

void sf_synth_opts_default(sf_synth_opts *o) {
    o->d = 64;
    o->n_true = 256;
    o->samples = 32768;
    o->active = 5;
    o->alpha = 0.5;
    o->noise = 0.01;
    o->seed = 0;
}

int sf_sae_synth(const sf_synth_opts *o, const char *path, const char *key, const char *dict_key) {
    if (o->d <= 0 || o->n_true <= 0 || o->samples <= 0)
        return sf_error("synth: d, n_true and samples must be positive");
    if (!(o->active > 0) || o->active > o->n_true)
        return sf_error("synth: active must be in (0, n_true]");
    if (!(o->alpha >= 0) || !(o->noise >= 0))
        return sf_error("synth: alpha and noise must be >= 0");
    const int d = o->d, nt = o->n_true;
    const int64_t N = o->samples;
    size_t xs;
    if (sf_mul_size((size_t)N, (size_t)d, &xs) || xs > ((size_t)1 << 34))
        return sf_error("synth: %lld x %d is too large", (long long)N, d);
    sf_rng rng;
    sf_rng_seed(&rng, o->seed);
    /* dictionary: Gaussian rows, unit norm */
    float *dict = sf_malloc((size_t)nt * d * sizeof(float));
    for (int i = 0; i < nt; i++) {
        float *f = dict + (size_t)i * d;
        double ss = 0;
        for (int q = 0; q < d; q++) {
            f[q] = sf_rng_normal(&rng);
            ss += (double)f[q] * f[q];
        }
        float inv = (float)(1.0 / sqrt(ss));
        for (int q = 0; q < d; q++)
            f[q] *= inv;
    }
    /* feature probabilities p_i ~ (i+1)^-alpha, scaled to `active` on average
     * (capped at 1; the excess is not redistributed) */
    double *p = sf_malloc((size_t)nt * sizeof(double)), wsum = 0;
    for (int i = 0; i < nt; i++)
        wsum += p[i] = pow(i + 1.0, -o->alpha);
    for (int i = 0; i < nt; i++) {
        p[i] = o->active * p[i] / wsum;
        if (p[i] > 1) p[i] = 1;
    }
    float *x = sf_malloc(xs * sizeof(float));
    sf_rng base = rng;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < N; r++) {
        sf_rng rr; /* one stream per row: same data for any thread count */
        sf_rng_split(&base, (uint64_t)r, &rr);
        float *xr = x + (size_t)r * d;
        for (int q = 0; q < d; q++)
            xr[q] = (float)o->noise * sf_rng_normal(&rr);
        for (int i = 0; i < nt; i++) {
            if (sf_rng_uniform(&rr) >= p[i]) continue;
            float c = (float)(0.5 + sf_rng_uniform(&rr));
            const float *f = dict + (size_t)i * d;
            for (int q = 0; q < d; q++)
                xr[q] += c * f[q];
        }
    }
    sf_st_writer *w = sf_stw_new();
    int64_t xshape[2] = {N, d}, dshape[2] = {nt, d};
    char meta[256];
    int rc = sf_stw_add(w, key, SF_DT_F32, 2, xshape, x);
    if (!rc) rc = sf_stw_add(w, dict_key, SF_DT_F32, 2, dshape, dict);
    if (!rc) {
        snprintf(meta, sizeof meta,
                 "{\"d\": %d, \"n_true\": %d, \"samples\": %lld, \"active\": %g, \"alpha\": %g, "
                 "\"noise\": %g, \"seed\": %llu}",
                 d, nt, (long long)N, o->active, o->alpha, o->noise, (unsigned long long)o->seed);
        sf_stw_meta(w, "saeflow_synth", meta);
        rc = sf_stw_write(w, path);
    }
    sf_stw_free(w);
    free(x);
    free(dict);
    free(p);
    return rc;
}

double sf_sae_mmcs(const sf_sae *s, const float *dict, int n_true, double *recovered,
                   float *per_feature) {
    const int d = s->d, n = s->n;
    float *dn = sf_malloc((size_t)n_true * d * sizeof(float));
    float *wn = sf_malloc((size_t)n * d * sizeof(float));
    /* unit rows of both (decoder columns = rows of W_decT) */
    for (int pass = 0; pass < 2; pass++) {
        const float *src = pass ? s->W_decT : dict;
        float *dst = pass ? wn : dn;
        int rows = pass ? n : n_true;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            double ss = 0;
            for (int q = 0; q < d; q++)
                ss += (double)src[(size_t)i * d + q] * src[(size_t)i * d + q];
            float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
            for (int q = 0; q < d; q++)
                dst[(size_t)i * d + q] = src[(size_t)i * d + q] * inv;
        }
    }
    float *best = sf_malloc((size_t)n_true * sizeof(float));
    const int ch = 64;
#pragma omp parallel
    {
        float *cs = sf_malloc((size_t)ch * n * sizeof(float));
#pragma omp for schedule(dynamic, 1)
        for (int i0 = 0; i0 < n_true; i0 += ch) {
            int m = n_true - i0 < ch ? n_true - i0 : ch;
            /* cs (m, n) = dn[i0..] (m, d) . wn^T */
            sae_sgemm(0, 1, m, n, d, 1.0f, dn + (size_t)i0 * d, d, wn, d, 0.0f, cs, n);
            for (int i = 0; i < m; i++) {
                float b = -2.0f;
                for (int j = 0; j < n; j++)
                    b = cs[(size_t)i * n + j] > b ? cs[(size_t)i * n + j] : b;
                best[i0 + i] = b;
            }
        }
        free(cs);
    }
    double sum = 0;
    int rec = 0;
    for (int i = 0; i < n_true; i++) {
        sum += best[i];
        rec += best[i] > 0.9f;
        if (per_feature) per_feature[i] = best[i];
    }
    if (recovered) *recovered = n_true ? (double)rec / n_true : 0;
    free(best);
    free(dn);
    free(wn);
    return n_true ? sum / n_true : 0;
}

int sf_sae_evaluate(const sf_sae *s, const sf_sae_data *D, int64_t max_rows, const float *dict,
                    int n_true, sf_sae_eval_result *r) {
    memset(r, 0, sizeof *r);
    if (D->d != s->d)
        return sf_error("data width %d (tensor '%s' in %s) does not match the SAE's features %d",
                        D->d, D->key, D->files[0].path, s->d);
    const int d = s->d, n = s->n;
    const int64_t N = (max_rows > 0 && max_rows < D->N) ? max_rows : D->N;
    const int64_t chunk = sae_code_chunk_rows(s);
    float *x = sf_malloc((size_t)chunk * d * sizeof(float));
    float *xh = sf_malloc((size_t)chunk * d * sizeof(float));
    double *colsum = sf_calloc((size_t)d, sizeof(double));
    uint8_t *fired = sf_calloc((size_t)n, 1);
    sf_sae_codes c;
    sf_sae_codes_alloc(&c, chunk, s->k);
    double sq = 0, x2 = 0, l0 = 0;
    int rc = 0;
    sf_sae_encoder *enc = sf_sae_encoder_new(s);
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
        int64_t m = N - r0 < chunk ? N - r0 : chunk;
        c.B = m;
        if (sf_sae_data_range(D, r0, m, x) || sf_sae_encoder_run(enc, x, m, &c)) {
            rc = -1;
            break;
        }
        sf_sae_decode(s, &c, xh);
        for (int64_t b = 0; b < m; b++) {
            const float *xr = x + (size_t)b * d, *hr = xh + (size_t)b * d;
            for (int q = 0; q < d; q++) {
                double df = (double)hr[q] - xr[q];
                sq += df * df;
                x2 += (double)xr[q] * xr[q];
                colsum[q] += xr[q];
            }
            l0 += c.cnt[b];
            for (int u = 0; u < c.cnt[b]; u++)
                fired[c.idx[(size_t)b * s->k + u]] = 1;
        }
    }
    if (!rc) {
        double mean2 = 0;
        for (int q = 0; q < d; q++)
            mean2 += (colsum[q] / N) * (colsum[q] / N);
        double var = x2 - (double)N * mean2;
        int nf = 0;
        for (int j = 0; j < n; j++)
            nf += fired[j];
        r->rows = N;
        r->mse = sq / N;
        r->fvu = var > 0 ? sq / var : NAN;
        r->l0 = l0 / N;
        r->dead = 1.0 - (double)nf / n;
        r->mmcs = r->recovered = NAN;
        if (dict) r->mmcs = sf_sae_mmcs(s, dict, n_true, &r->recovered, NULL);
    }
    sf_sae_encoder_free(enc);
    sf_sae_codes_free(&c);
    free(x);
    free(xh);
    free(colsum);
    free(fired);
    return rc;
}
