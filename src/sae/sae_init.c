/* A fresh SAE from a spec (sf_sae_build: the one path `train` and `sweep`
 * take), the architecture options it applies, and the data-driven init:
 * decoder bias from the data (mean / geometric median) and the input
 * normalisation to average norm sqrt(d). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/arch_internal.h"
#include "sae/sae_internal.h"
#include "saeflow/sae_arch.h"

int sf_sae_set_jumpthreshold(sf_sae *s, double thr) {
    if (s->arch != SF_SAE_JUMPRELU) return sf_error("jumpthreshold applies to arch jumprelu");
    if (!(thr > 0) || !isfinite(thr)) return sf_error("jumpthreshold must be > 0");
    for (int j = 0; j < s->n; j++)
        s->logthres[j] = (float)log(thr);
    return 0;
}

/* ---------------------------------------------------- data-driven init -- */

/* Up to `rows` rows spread evenly over the data, times s->input_scale. */
static float *sample_rows(const sf_sae *s, const sf_sae_data *D, int64_t rows, int64_t *m) {
    if (rows <= 0 || rows > D->N) rows = D->N;
    int64_t *idx = sf_malloc((size_t)rows * sizeof(int64_t));
    for (int64_t i = 0; i < rows; i++)
        idx[i] = (int64_t)((double)i * D->N / rows);
    float *x = sf_malloc((size_t)rows * D->d * sizeof(float));
    if (sf_sae_data_gather(D, idx, rows, x)) {
        free(idx);
        free(x);
        return NULL;
    }
    free(idx);
    if (s->input_scale > 0)
        for (size_t i = 0; i < (size_t)rows * D->d; i++)
            x[i] *= s->input_scale;
    *m = rows;
    return x;
}

int sf_sae_set_input_norm(sf_sae *s, const sf_sae_data *D, int64_t rows) {
    if (D->d != s->d)
        return sf_error("data width %d does not match the SAE's features %d", D->d, s->d);
    s->input_scale = 0;
    int64_t m;
    float *x = sample_rows(s, D, rows, &m);
    if (!x) return -1;
    double tot = 0;
    for (int64_t b = 0; b < m; b++) {
        double ss = 0;
        for (int q = 0; q < s->d; q++)
            ss += (double)x[(size_t)b * s->d + q] * x[(size_t)b * s->d + q];
        tot += sqrt(ss);
    }
    free(x);
    double mean = tot / (double)m;
    if (!(mean > 0)) return sf_error("input normalisation: the sampled rows are all zero");
    s->input_scale = (float)(sqrt((double)s->d) / mean);
    sf_sae_config_set_number(s, "input_scale", s->input_scale);
    sf_sae_config_set_string(s, "normalize_activations", "fixed_norm_sqrt_d");
    return 0;
}

int sf_sae_init_bias(sf_sae *s, const sf_sae_data *D, const char *mode, int64_t rows) {
    if (D->d != s->d)
        return sf_error("data width %d does not match the SAE's features %d", D->d, s->d);
    int med;
    if (!strcmp(mode, "mean"))
        med = 0;
    else if (!strcmp(mode, "median") || !strcmp(mode, "geometric_median"))
        med = 1;
    else
        return sf_error("b_dec_init: unknown mode '%s' (mean, median, zero)", mode);
    int64_t m;
    float *x = sample_rows(s, D, rows, &m);
    if (!x) return -1;
    const int d = s->d;
    double *g = sf_calloc((size_t)d, sizeof(double)), *nx = sf_calloc((size_t)d, sizeof(double));
    for (int64_t b = 0; b < m; b++)
        for (int q = 0; q < d; q++)
            g[q] += x[(size_t)b * d + q];
    for (int q = 0; q < d; q++)
        g[q] /= (double)m;
    if (med) {
        /* Weiszfeld: g <- sum_b x_b / ||x_b - g|| / sum_b 1 / ||x_b - g|| */
        for (int it = 0; it < 100; it++) {
            double wsum = 0;
            memset(nx, 0, (size_t)d * sizeof(double));
            for (int64_t b = 0; b < m; b++) {
                const float *xr = x + (size_t)b * d;
                double dist = 0;
                for (int q = 0; q < d; q++)
                    dist += (xr[q] - g[q]) * (xr[q] - g[q]);
                dist = sqrt(dist);
                if (dist < 1e-12) continue; /* a sample on the estimate: skip it */
                double w = 1.0 / dist;
                wsum += w;
                for (int q = 0; q < d; q++)
                    nx[q] += w * xr[q];
            }
            if (!(wsum > 0)) break;
            double move = 0;
            for (int q = 0; q < d; q++) {
                nx[q] /= wsum;
                move += (nx[q] - g[q]) * (nx[q] - g[q]);
                g[q] = nx[q];
            }
            if (sqrt(move) < 1e-6) break;
        }
    }
    for (int q = 0; q < d; q++)
        s->b_dec[q] = (float)g[q];
    sf_sae_config_set_string(s, "b_dec_init", med ? "geometric_median" : "mean");
    free(g);
    free(nx);
    free(x);
    return 0;
}

/* ------------------------------------------------------------- the spec -- */

void sf_sae_spec_default(sf_sae_spec *sp) {
    memset(sp, 0, sizeof *sp);
    sp->arch = SF_SAE_TOPK;
}

static int uses_lmbda(sf_sae_arch a) {
    return a == SF_SAE_STANDARD || a == SF_SAE_GATED || a == SF_SAE_JUMPRELU;
}

int sf_sae_spec_check(const sf_sae_spec *sp, const sf_sae_train_opts *o) {
    if ((unsigned)sp->arch >= SF_SAE_ARCH_COUNT)
        return sf_error("arch %d is not an SAE architecture", (int)sp->arch);
    const char *mb = sp->matryoshka_base;
    if (mb && strcmp(mb, "topk") && strcmp(mb, "batchtopk"))
        return sf_error("matryoshka_base must be topk or batchtopk");
    const char *bi = sp->b_dec_init;
    if (bi && strcmp(bi, "zero") && strcmp(bi, "mean") && strcmp(bi, "median"))
        return sf_error("b_dec_init must be zero, mean or median");
    if ((sp->groups || (mb && strcmp(mb, "topk"))) && sp->arch != SF_SAE_MATRYOSHKA)
        return sf_error("groups and matryoshka_base need arch matryoshka");
    if (o && o->ghost_grads && sp->arch != SF_SAE_STANDARD)
        return sf_error("ghost_grads applies to arch standard");
    if (sp->jumpthreshold != 0 && sp->arch != SF_SAE_JUMPRELU)
        return sf_error("jumpthreshold applies to arch jumprelu");
    if (sp->jumpthreshold < 0 || !isfinite(sp->jumpthreshold))
        return sf_error("jumpthreshold must be > 0");
    return 0;
}

static double spec_jumpthreshold(const sf_sae_spec *sp) {
    return sp->jumpthreshold > 0 ? sp->jumpthreshold : 0.001;
}

void sf_sae_record_train(sf_sae *s, const sf_sae_spec *sp, const sf_sae_train_opts *o) {
    if (uses_lmbda(s->arch)) {
        sf_sae_config_set_number(s, "lmbda", o->lmbda);
        sf_sae_config_set_number(s, "lmbda_warmup_steps", (double)o->lmbda_warmup_steps);
    }
    if (s->arch == SF_SAE_JUMPRELU) {
        sf_sae_config_set_number(s, "bandwidth", o->bandwidth);
        sf_sae_config_set_number(s, "jumpthreshold", spec_jumpthreshold(sp));
    }
    if (o->ghost_grads) sf_sae_config_set_number(s, "ghost_grads", 1);
    if (o->resample_every) sf_sae_config_set_number(s, "resample_every", (double)o->resample_every);
}

int sf_sae_build(sf_sae *s, const sf_sae_spec *sp, const sf_sae_data *D,
                 const sf_sae_train_opts *o) {
    memset(s, 0, sizeof *s);
    if (sf_sae_spec_check(sp, o)) return -1;
    const char *bi = sp->b_dec_init ? sp->b_dec_init : "zero";
    if ((strcmp(bi, "zero") || sp->normalize_input) && !D)
        return sf_error("b_dec_init and normalize_input need data");
    if (sf_sae_init(s, sp->arch, sp->d, sp->n, sp->k, sp->seed)) return -1;
    int rc = 0;
    if (sp->arch == SF_SAE_MATRYOSHKA) {
        int ge[SF_SAE_MAX_GROUPS], ng = 0;
        const int bsel = sp->matryoshka_base && !strcmp(sp->matryoshka_base, "batchtopk");
        rc = (sp->groups && sf_sae_parse_groups(sp->groups, s->n, ge, &ng)) ||
             sf_sae_set_matryoshka(s, bsel, sp->groups ? ge : NULL, ng);
    }
    if (!rc && sp->arch == SF_SAE_JUMPRELU)
        rc = sf_sae_set_jumpthreshold(s, spec_jumpthreshold(sp));
    if (!rc && sp->normalize_input) rc = sf_sae_set_input_norm(s, D, 8192);
    if (!rc && strcmp(bi, "zero")) rc = sf_sae_init_bias(s, D, bi, 8192);
    if (rc) {
        sf_sae_free(s);
        return -1;
    }
    /* the settings, in the order the configs have always had them */
    if (o) sf_sae_record_train(s, sp, o);
    sf_sae_config_set_string(s, "b_dec_init", !strcmp(bi, "median") ? "geometric_median" : bi);
    sf_sae_config_set_number(s, "normalize_input", sp->normalize_input);
    return 0;
}
